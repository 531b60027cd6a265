"""Typed errors of model access, sorted by who can fix them (see ``holdfast.errors``).

User-fixable (subclasses of :class:`~holdfast.errors.UserError`): an unknown provider, a missing
key, a missing optional extra, a request the provider rejects (400/404/422) or refuses (401/403).
Runtime (subclasses of :class:`~holdfast.errors.RuntimeFailure`): rate limits, outages, timeouts
and unreachable endpoints (retryable; raised after the retries ran out), malformed or empty
replies (carrying an excerpt of the body). Every error names the endpoint and the attempts made.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from holdfast.errors import ConfigError, RetryableFailure, RuntimeFailure, UserError

if TYPE_CHECKING:
    from holdfast.lm.types import Usage

EXCERPT_CHARS = 500


def excerpt(body: str | bytes | None, limit: int = EXCERPT_CHARS) -> str:
    """The first ``limit`` characters of a response body, for error messages."""
    if body is None:
        return ""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    return text if len(text) <= limit else text[:limit] + f"... [{len(text) - limit} more chars]"


class UnknownProvider(ConfigError):
    """The ``provider:model`` name names no known provider."""

    code = "unknown_provider"


class MissingAPIKey(ConfigError):
    """The provider needs an API key and none was given."""

    code = "missing_api_key"


class MissingExtra(ConfigError):
    """An optional dependency is not installed; the message names the extra to install."""

    code = "missing_extra"


class ProviderRejected(UserError):
    """The provider refused the request as given (HTTP 400, 404, 422): not retried."""

    code = "provider_rejected"


class ContextOverflow(ProviderRejected):
    """The prompt (plus the requested output) is longer than the model's context window.

    Raised for an HTTP 400/413/422 whose body says so in any known server's words (see
    :func:`is_context_overflow`); ``prompt_tokens`` and ``context_window`` are the server's
    figures when it gave them. Shrinking the prompt, not retrying it, is the fix.
    """

    code = "context_overflow"

    def __init__(
        self,
        message: str,
        *,
        prompt_tokens: int | None = None,
        context_window: int | None = None,
        **details: Any,
    ) -> None:
        super().__init__(
            message, prompt_tokens=prompt_tokens, context_window=context_window, **details
        )
        self.prompt_tokens = prompt_tokens
        self.context_window = context_window


class ToolsUnsupported(ProviderRejected):
    """The server refused a request that offers tools: the model's chat template (or the server's
    configuration) has no tool support. Not retried; the message says what to change."""

    code = "tools_unsupported"


class ProviderAuthError(ConfigError):
    """The provider refused the credentials (HTTP 401, 403): not retried."""

    code = "provider_auth"


class ProviderUnavailable(RetryableFailure):
    """The endpoint could not be reached, or kept failing (5xx), after every retry."""

    code = "provider_unavailable"

    def __init__(self, message: str, *, attempts: int = 1, **details: Any) -> None:
        super().__init__(message, attempts=attempts, **details)
        self.attempts = attempts


class RateLimited(ProviderUnavailable):
    """The provider kept answering 429 after every retry (or asked for too long a wait)."""

    code = "rate_limited"


class ProviderTimeout(ProviderUnavailable):
    """The provider did not answer within the per-call timeout, after every retry."""

    code = "provider_timeout"


class MalformedResponse(RuntimeFailure):
    """The provider answered with something that is not a valid reply; carries a body excerpt."""

    code = "malformed_response"

    def __init__(self, message: str, *, body: str | bytes | None = None, **details: Any) -> None:
        self.body_excerpt = excerpt(body)
        super().__init__(
            f"{message}; body starts: {self.body_excerpt!r}" if body is not None else message,
            body_excerpt=self.body_excerpt,
            **details,
        )


class EmptyResponse(MalformedResponse):
    """The model returned neither text nor tool calls.

    ``usage`` is what the server reported for the call (the tokens were spent all the same), so
    budgets can charge it.
    """

    code = "empty_response"

    def __init__(
        self, message: str, *, body: str | bytes | None = None, usage: Any = None, **details: Any
    ) -> None:
        super().__init__(message, body=body, usage=usage, **details)
        self.usage: Usage | None = None
        if isinstance(usage, dict):
            from holdfast.lm.record import usage_from_dict

            self.usage = usage_from_dict(usage)


class StreamError(Exception):
    """An ``error`` event inside a stream that had started with HTTP 200 (classified by the LM)."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"stream error (HTTP {status} equivalent): {text[:200]}")
        self.status = status
        self.text = text

    @classmethod
    def from_event(cls, error: Any, *, url: str) -> StreamError:
        status = 500
        if isinstance(error, dict):
            for key in ("code", "status", "status_code"):
                value = error.get(key)
                if isinstance(value, int) and 400 <= value < 600:
                    status = value
                    break
            else:
                kind = str(error.get("type") or error.get("code") or "")
                if "invalid_request" in kind or "exceed" in kind or "context" in kind:
                    status = 400
        return cls(status, json.dumps({"error": error}, ensure_ascii=False, default=str))


# How each server family words "the prompt does not fit" (checked against the body of a 4xx):
# OpenAI / vLLM / SGLang / Groq / DeepSeek / Mistral / OpenRouter ("maximum context length is N
# tokens", code context_length_exceeded); llama.cpp ("request (N tokens) exceeds the available
# context size (M tokens)", type exceed_context_size_error); Ollama ("input length exceeds the
# context length"); LM Studio ("context length ... overflow"); Anthropic ("prompt is too long:
# N tokens > M maximum"); TGI and Together ("inputs tokens + max_new_tokens must be <= N").
_OVERFLOW = re.compile(
    r"context_length_exceeded|exceed_context_size|context.{0,20}(length|window|limit|size)"
    r"|prompt is too long|too many tokens|max_new_tokens. must be <="
    r"|(exceeds|greater than|longer than|overflows).{0,40}context",
    re.IGNORECASE,
)
_FIGURES = (
    # llama.cpp: request (12031 tokens) exceeds the available context size (8192 tokens)
    (
        re.compile(r"request \((\d+) tokens\) exceeds the available context size \((\d+) tokens"),
        1,
        2,
    ),
    # Anthropic: prompt is too long: 210000 tokens > 200000 maximum
    (re.compile(r"prompt is too long: (\d+) tokens > (\d+)"), 1, 2),
    # OpenAI / vLLM: maximum context length is 2048 tokens. However, you requested 2100 tokens
    (
        re.compile(
            r"maximum context length is (\d+) tokens.{0,80}?(?:requested|resulted in) (\d+) tokens",
            re.IGNORECASE | re.DOTALL,
        ),
        2,
        1,
    ),
)


def is_context_overflow(status: int, body: str) -> bool:
    """Whether a rejected request's body says that the prompt is longer than the window."""
    return status in (400, 413, 422) and bool(_OVERFLOW.search(body))


def overflow_figures(body: str) -> tuple[int | None, int | None]:
    """(prompt tokens, context window) from a context-overflow error body, where stated."""
    for pattern, prompt_group, window_group in _FIGURES:
        m = pattern.search(body)
        if m:
            return int(m.group(prompt_group)), int(m.group(window_group))
    return None, None
