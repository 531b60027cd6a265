"""Typed errors of model access, sorted by who can fix them (see ``holdfast.errors``).

User-fixable (subclasses of :class:`~holdfast.errors.UserError`): an unknown provider, a missing
key, a missing optional extra, a request the provider rejects (400/404/422) or refuses (401/403).
Runtime (subclasses of :class:`~holdfast.errors.RuntimeFailure`): rate limits, outages, timeouts
and unreachable endpoints (retryable; raised after the retries ran out), malformed or empty
replies (carrying an excerpt of the body). Every error names the endpoint and the attempts made.
"""

from __future__ import annotations

from typing import Any

from holdfast.errors import ConfigError, RetryableFailure, RuntimeFailure, UserError

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
    """The model returned neither text nor tool calls."""

    code = "empty_response"
