"""Anthropic models through the official ``anthropic`` SDK (the optional ``anthropic`` extra).

:class:`AnthropicLM` shares everything but the wire format with
:class:`~holdfast.lm.openai_compat.OpenAICompatLM`: the per-endpoint limiter, Holdfast's retries
and typed errors, per-loop clients and the sync loop thread. The SDK is imported only when the
first client is built; without it, a :class:`~holdfast.lm.errors.MissingExtra` names the extra.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from holdfast.errors import ConfigError
from holdfast.lm.anthropic_wire import (
    DEFAULT_MAX_TOKENS,
    MessageEvents,
    parse_response,
    request_body,
)
from holdfast.lm.base import CallParams
from holdfast.lm.errors import MissingExtra
from holdfast.lm.openai_compat import OpenAICompatLM, StreamEvents, _httpx_module
from holdfast.lm.types import Completion, Message


def import_anthropic() -> Any:
    """The ``anthropic`` module, or a MissingExtra error that says how to install it."""
    try:
        import anthropic
    except ImportError:
        raise MissingExtra(
            "Anthropic models need the optional 'anthropic' extra: pip install 'holdfast[anthropic]'",
            extra="anthropic",
        ) from None
    return anthropic


class AnthropicLM(OpenAICompatLM):
    """A Claude model over the Anthropic Messages API."""

    chat_path = "/v1/messages"

    def __init__(self, model: str, *, max_tokens: int = DEFAULT_MAX_TOKENS, **kwargs: Any) -> None:
        import_anthropic()
        if kwargs.pop("direct_http", False):
            raise ConfigError("direct_http serves OpenAI-compatible endpoints, not Anthropic's")
        super().__init__(model, direct_http=False, **kwargs)
        self.default_max_tokens = max_tokens

    def _sdk(self) -> Any:
        return import_anthropic()

    def _new_client(self) -> Any:
        anthropic = import_anthropic()
        httpx = _httpx_module()
        pool = max(512, 2 * self.limiter.limit)
        http_client = anthropic.DefaultAsyncHttpxClient(
            limits=httpx.Limits(
                max_connections=pool, max_keepalive_connections=pool, keepalive_expiry=60.0
            ),
            timeout=httpx.Timeout(self.timeout, connect=self.connect_timeout),
            mounts=self._mounts(),
        )
        return anthropic.AsyncAnthropic(
            base_url=self.url, api_key=self.api_key, max_retries=0, http_client=http_client
        )

    async def _send(
        self, client: Any, messages: list[Message], params: CallParams, timeout: float
    ) -> Completion:
        body, forced = request_body(
            self.model_id, messages, params, max_tokens=self.default_max_tokens
        )
        body.update(self.extra_body)
        raw = await self._post(client, self.chat_path, body, timeout)
        return parse_response(raw, url=self.url, forced_tool=forced)

    def _stream_request(
        self, messages: list[Message], params: CallParams
    ) -> tuple[dict[str, Any], Callable[[], StreamEvents]]:
        body, forced = request_body(
            self.model_id, messages, params, max_tokens=self.default_max_tokens
        )
        body.update(self.extra_body)
        body["stream"] = True
        return body, lambda: MessageEvents(url=self.url, forced_tool=forced)
