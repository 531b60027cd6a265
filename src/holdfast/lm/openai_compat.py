"""One transport for every OpenAI-compatible endpoint, over the official ``openai`` SDK.

:class:`OpenAICompatLM` sends ``POST /chat/completions`` through ``AsyncOpenAI`` (its auth,
headers and error types) with the SDK's own retries off: Holdfast retries itself (see
:mod:`holdfast.lm.retry`) so that it can honour ``Retry-After``, release its concurrency slot while
it backs off, and say what went wrong at the end. The HTTP pool is sized for hundreds of calls in
flight with keep-alive; a per-endpoint limiter (:mod:`holdfast.lm.limiter`) bounds them. Cancelling
the awaiting task closes the HTTP request.

Which HTTP path a call takes (:func:`choose_http_path`): a plain ``http://`` endpoint (vLLM,
SGLang, Ollama, llama.cpp, LM Studio) goes through the direct client (:mod:`holdfast.lm.direct`)
by default, which writes the request itself and costs a fifth of the SDK's CPU per call; an
``https://`` endpoint, ``lean_http=False`` (the standard ``httpx`` pool: environment proxies, its
TLS stack) and ``direct_http=False`` use the SDK. Both paths share the retries, the limiter, the
timeouts, the typed errors, streaming and the call log.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Protocol

from holdfast.errors import ConfigError
from holdfast.lm._portal import LoopThread
from holdfast.lm.base import BaseLM, CallParams, T, attempt_estimate
from holdfast.lm.capabilities import is_tools_unsupported, is_unparsed_output
from holdfast.lm.errors import (
    ContextOverflow,
    MalformedResponse,
    MissingAPIKey,
    ProviderAuthError,
    ProviderRejected,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
    StreamError,
    ToolsUnsupported,
    excerpt,
    is_context_overflow,
    overflow_figures,
)
from holdfast.lm.limiter import EndpointLimiter, endpoint_limiter
from holdfast.lm.openai_wire import ChunkAssembler, parse_completion, request_body
from holdfast.lm.prices import DEFAULT_PRICES, Price, PriceTable
from holdfast.lm.providers import ProviderSpec, parse_model_name
from holdfast.lm.record import CallRecorder
from holdfast.lm.retry import RetryPolicy, parse_retry_after, should_retry_status
from holdfast.lm.stream import Delta, SSEEvent, sse_events
from holdfast.lm.types import ZERO_USAGE, Completion, Message, attach_usage, failed_usage

if TYPE_CHECKING:
    from collections.abc import Coroutine


KEYLESS = "not-needed"


def is_loopback(url: str) -> bool:
    """Whether ``url`` points at this machine (127.0.0.0/8, ::1, localhost).

    A model server on loopback (llama.cpp, vLLM, Ollama, LM Studio started by the user) needs no
    API key whatever the provider prefix says, so ``OPENAI_BASE_URL=http://127.0.0.1:8000/v1``
    with ``openai:<model>`` works without ``OPENAI_API_KEY``.
    """
    import ipaddress
    from urllib.parse import urlsplit

    try:
        host = urlsplit(url).hostname
    except ValueError:
        return False
    if not host:
        return False
    if host.lower() == "localhost" or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def choose_http_path(url: str, *, direct_http: bool | None, lean_http: bool = True) -> str:
    """``"direct"`` or ``"sdk"``: the HTTP path of an OpenAI-compatible endpoint at ``url``.

    ``direct_http=None`` (the default) picks the direct client wherever it can serve the request:
    a plain ``http://`` base URL with the lean transport on. ``https://`` stays on the SDK (its TLS
    stack and certificate handling), and so does ``lean_http=False``, which asks for the standard
    ``httpx`` pool and with it the proxy variables (``HTTP_PROXY``, ``NO_PROXY``) it honours.
    ``True`` forces the direct client (a ``ConfigError`` for anything but ``http://``); ``False``
    forces the SDK.
    """
    from urllib.parse import urlsplit

    plain = urlsplit(url).scheme == "http"
    if direct_http is None:
        return "direct" if plain and lean_http else "sdk"
    if direct_http and not plain:
        raise ConfigError(
            f"direct_http=True needs a plain http:// base URL, not {url!r}; leave direct_http "
            "unset to use the SDK for https:// endpoints"
        )
    return "direct" if direct_http else "sdk"


class StreamEvents(Protocol):
    """Parses one wire's server-sent events into deltas, then the assembled completion."""

    def feed(self, event: SSEEvent) -> list[Delta]: ...

    def ended(self) -> bool: ...

    def completion(self) -> Completion: ...


_UNSET: Any = object()


class OpenAICompatLM(BaseLM):
    """A model behind any OpenAI-compatible chat-completions endpoint."""

    chat_path = "/chat/completions"

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        max_concurrency: int | None = None,
        retry: RetryPolicy | None = None,
        timeout: float = 120.0,
        connect_timeout: float = 10.0,
        prices: PriceTable = DEFAULT_PRICES,
        price: Price | None = _UNSET,
        call_log: CallRecorder | None = None,
        extra_body: dict[str, Any] | None = None,
        spec: ProviderSpec | None = None,
        lean_http: bool = True,
        direct_http: bool | None = None,
    ) -> None:
        parsed_spec, self.model_id = parse_model_name(model)
        self.spec = spec or parsed_spec
        url = (base_url or self.spec.base_url).rstrip("/")
        if price is _UNSET:
            price = prices.lookup(self.spec.name, self.model_id)
        super().__init__(model, price=price, call_log=call_log, base_url=url)
        if not api_key and self.spec.needs_key and not is_loopback(url):
            raise MissingAPIKey(
                f"{self.spec.name} needs an API key for {model} at {url}: set "
                f"{self.spec.key_env} (get_lm and the command line read it from the environment) "
                "or pass api_key=...; a server on this machine (a loopback base URL) needs none",
                env_var=self.spec.key_env,
            )
        self.api_key = api_key or KEYLESS
        self.retry = retry or RetryPolicy()
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.extra_body = dict(extra_body or {})
        self.lean_http = lean_http
        self.http_path = choose_http_path(url, direct_http=direct_http, lean_http=lean_http)
        self.direct_http = self.http_path == "direct"
        self.limiter: EndpointLimiter = endpoint_limiter(
            url, max_concurrency, default=self.spec.max_concurrency
        )
        self._clients: dict[asyncio.AbstractEventLoop, Any] = {}
        self._portal = LoopThread(f"holdfast-lm-{self.spec.name}")

    @property
    def url(self) -> str:
        assert self.base_url is not None
        return self.base_url

    def _prepare(self) -> None:
        self._client()

    def _client(self) -> Any:
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            for stale in [lp for lp in self._clients if lp.is_closed()]:
                del self._clients[stale]
            client = self._clients[loop] = self._new_client()
        return client

    def _new_client(self) -> Any:
        if self.direct_http:
            from holdfast.lm.direct import DirectChatClient

            return DirectChatClient(self.url, self.api_key, connect_timeout=self.connect_timeout)
        import openai

        httpx = _httpx_module()
        pool = max(512, 2 * self.limiter.limit)
        make_http = (
            getattr(openai, "DefaultAsyncHttpx2Client", None) or openai.DefaultAsyncHttpxClient
        )
        http_client = make_http(
            limits=httpx.Limits(
                max_connections=pool, max_keepalive_connections=pool, keepalive_expiry=60.0
            ),
            timeout=httpx.Timeout(self.timeout, connect=self.connect_timeout),
            mounts=self._mounts(),
        )
        return openai.AsyncOpenAI(
            base_url=self.url, api_key=self.api_key, max_retries=0, http_client=http_client
        )

    def _mounts(self) -> dict[str, Any] | None:
        """Plain-HTTP endpoints go through the lean keep-alive transport (see transport.py)."""
        if not (self.lean_http and self.url.startswith("http://")):
            return None
        try:
            from holdfast.lm.transport import LeanHTTP1Transport
        except ImportError:  # an openai SDK older than the httpx2 series: standard pool only
            return None

        return {"http://": LeanHTTP1Transport()}

    async def _acall(self, messages: list[Message], params: CallParams) -> tuple[Completion, int]:
        timeout = params.timeout if params.timeout is not None else self.timeout
        client = self._client()
        attempt = 0
        # Attempts that timed out or were cancelled in flight may still be billed: their
        # estimated tokens ride on the reply's usage, or on the error when the call fails.
        lost = ZERO_USAGE
        sending = False
        epoch: int | None = None
        spare = 0  # 429s the limiter answered by halving: retried without using up an attempt
        try:
            while True:
                attempt += 1
                try:
                    async with self.limiter.slot() as epoch:
                        sending = True
                        # a deadline for the whole attempt: a server that trickles bytes
                        # cannot hold it
                        async with asyncio.timeout(timeout):
                            completion = await self._send(client, messages, params, timeout)
                        sending = False
                    self.limiter.succeeded()
                    if lost.calls:
                        completion = replace(completion, usage=completion.usage + lost)
                    return completion, attempt
                except Exception as exc:
                    if sending and _is_timeout(exc, self._sdk()):
                        lost = lost + attempt_estimate(messages, params)
                    sending = False
                    spare += self._absorbed_429(exc, epoch)
                    try:
                        wait = self._classify(exc, attempt, timeout, spare=spare)
                    except BaseException as final:
                        spent = failed_usage(final)
                        total = lost if spent is None else lost + spent
                        if total.calls:
                            attach_usage(final, total)
                        raise
                await asyncio.sleep(wait)
        except asyncio.CancelledError as exc:
            if sending:
                lost = lost + attempt_estimate(messages, params)
            if lost.calls:
                attach_usage(exc, lost)
            raise

    async def _astream(
        self, messages: list[Message], params: CallParams
    ) -> AsyncGenerator[Delta | tuple[Completion, int], None]:
        """One streamed call: retried like any call until its first delta, never after it."""
        timeout = params.timeout if params.timeout is not None else self.timeout
        client = self._client()
        body, new_events = self._stream_request(messages, params)
        attempt = 0
        spare = 0
        while True:
            attempt += 1
            started = False
            epoch: int | None = None
            try:
                async with (
                    self.limiter.slot() as epoch,
                    self._open_stream(client, body, timeout) as chunks,
                ):
                    events = new_events()
                    async for event in sse_events(chunks):
                        for delta in events.feed(event):
                            started = True
                            yield delta
                    if not events.ended():
                        raise ProviderUnavailable(
                            f"{self.url}{self.chat_path} ended the stream before the reply was "
                            "complete",
                            attempts=attempt,
                            url=self.url,
                        )
                    completion = events.completion()
            except Exception as exc:
                # after the first delta a retry would repeat text the reader already has
                spare += self._absorbed_429(exc, epoch)
                wait = self._classify(exc, attempt, timeout, final=started, spare=spare)
            else:
                self.limiter.succeeded()
                # the connection is back in the pool and the slot free before the reader resumes
                yield completion, attempt
                return
            await asyncio.sleep(wait)

    def _stream_request(
        self, messages: list[Message], params: CallParams
    ) -> tuple[dict[str, Any], Callable[[], StreamEvents]]:
        """The body of a streamed call, and a factory of its event parser (one per attempt)."""
        body = request_body(
            self.model_id,
            messages,
            params,
            max_tokens_param=self.spec.max_tokens_param,
            extra=self.extra_body,
            stream=True,
        )
        return body, lambda: _OpenAIEvents(ChunkAssembler(body, url=self.url))

    @asynccontextmanager
    async def _open_stream(
        self, client: Any, body: dict[str, Any], timeout: float
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        """The body of a streamed POST as it arrives; leaving the block closes the request."""
        if self.direct_http:
            async with client.stream_json(self.chat_path, body, timeout) as chunks:
                yield chunks
            return
        httpx = _httpx_module()
        response = await client.post(
            self.chat_path,
            cast_to=httpx.Response,
            body=body,
            options={"timeout": httpx.Timeout(timeout, connect=min(timeout, self.connect_timeout))},
            stream=True,
        )
        try:
            yield response.aiter_bytes()
        finally:
            await response.aclose()

    async def _send(
        self, client: Any, messages: list[Message], params: CallParams, timeout: float
    ) -> Completion:
        """One HTTP attempt: build the body, post it, parse the reply."""
        body = request_body(
            self.model_id,
            messages,
            params,
            max_tokens_param=self.spec.max_tokens_param,
            extra=self.extra_body,
        )
        raw = await self._post(client, self.chat_path, body, timeout)
        return parse_completion(raw, body, url=self.url)

    async def _post(self, client: Any, path: str, body: dict[str, Any], timeout: float) -> bytes:
        if self.direct_http:
            data: bytes = await client.post_json(path, body, timeout)
            return data
        httpx = _httpx_module()
        response = await client.post(
            path,
            cast_to=httpx.Response,
            body=body,
            options={"timeout": httpx.Timeout(timeout, connect=min(timeout, self.connect_timeout))},
        )
        raw: bytes = await response.aread()
        return raw

    def _sdk(self) -> Any:
        """The SDK module whose exception types this client raises."""
        import openai

        return openai

    def _classify(
        self,
        exc: Exception,
        attempt: int,
        timeout: float,
        *,
        final: bool = False,
        spare: int = 0,
    ) -> float:
        """The wait before retrying ``exc``, or raise the typed error it ends in.

        ``final`` raises even a retryable failure (a stream that broke after its first delta).
        ``spare`` of the ``attempt`` attempts do not count against the retry policy (429s the
        endpoint's limiter answered by slowing down, see :meth:`_absorbed_429`).
        """
        sdk = self._sdk()
        httpx = _httpx_module()
        policy = self.retry
        counted = attempt - spare
        last = final or counted >= policy.max_attempts
        url = f"{self.url}{self.chat_path}"
        reply = self._reply_of(exc)
        if reply is not None:
            status, headers, text = reply
            body = excerpt(text)
            if is_unparsed_output(status, text):
                # each retry is a whole new generation (minutes on a slow local server)
                raise MalformedResponse(
                    f"{url} could not parse the model's output in its chat format (HTTP "
                    f"{status}); a model too weak for the tool-call format produces this",
                    body=text,
                    url=url,
                    status=status,
                    attempts=attempt,
                ) from None
            if not should_retry_status(status) or is_tools_unsupported(status, text):
                # llama.cpp refuses tools with HTTP 500: no retry can change its template
                raise self._rejected(status, body, attempt, full_text=text) from None
            retry_after = parse_retry_after(headers)
            if retry_after is not None and retry_after > policy.max_retry_after:
                raise RateLimited(
                    f"{url} asked to wait {retry_after:.0f} s (Retry-After) before retrying, "
                    f"longer than max_retry_after={policy.max_retry_after:.0f} s",
                    attempts=attempt,
                    url=url,
                    status=status,
                    retry_after=retry_after,
                ) from None
            if last:
                cls = RateLimited if status == 429 else ProviderUnavailable
                what = "kept rate-limiting" if status == 429 else "kept failing"
                raise cls(
                    f"{url} {what} (HTTP {status}) after {attempt} attempts: {body}",
                    attempts=attempt,
                    url=url,
                    status=status,
                ) from None
            return policy.delay(counted, retry_after)
        if isinstance(exc, (sdk.APITimeoutError, httpx.TimeoutException, TimeoutError)):
            if last:
                raise ProviderTimeout(
                    f"{url} did not answer within {timeout:g} s, {attempt} attempts",
                    attempts=attempt,
                    url=url,
                    timeout=timeout,
                ) from None
            return policy.delay(counted, None)
        if isinstance(exc, (sdk.APIConnectionError, httpx.TransportError)):
            if last:
                cause = exc.__cause__ or exc if isinstance(exc, sdk.APIConnectionError) else exc
                raise ProviderUnavailable(
                    f"could not reach {self.url} after {attempt} attempts: "
                    f"{type(cause).__name__}: {cause}",
                    attempts=attempt,
                    url=self.url,
                ) from None
            return policy.delay(counted, None)
        raise exc

    def _reply_of(self, exc: Exception) -> tuple[int, Any, str] | None:
        """The status, headers and body text of an HTTP error reply, on either path."""
        from holdfast.lm.direct import DirectStatusError

        sdk = self._sdk()
        if isinstance(exc, sdk.APIStatusError):
            return exc.status_code, exc.response.headers, exc.response.text
        if isinstance(exc, DirectStatusError):
            return exc.status, exc.headers, exc.text
        if isinstance(exc, StreamError):
            return exc.status, {}, exc.text
        return None

    def _absorbed_429(self, exc: Exception, epoch: int | None) -> bool:
        """Slow the endpoint down on a 429; whether the retry should not use up an attempt.

        The endpoint's limiter halves the calls it lets in (once per epoch, see
        :meth:`EndpointLimiter.throttle`). An attempt rejected while other calls were in flight,
        under a limit that has now been halved, was turned away for the crowd, not for itself:
        its retry is free while the limit is above one, so a wide fan-out spends its halvings,
        not its retries, finding what the server takes. A call alone, or at a limit of one,
        counts every 429, and a server that keeps refusing still ends in ``RateLimited``.
        """
        reply = self._reply_of(exc)
        if reply is None or reply[0] != 429:
            return False
        self.limiter.throttle(epoch)
        limiter = self.limiter
        # a call alone counts every 429: only one turned away among others rides free
        return epoch != limiter.epoch and limiter.active > 0 and limiter.current > 1

    def _rejected(self, status: int, body: str, attempts: int, *, full_text: str = "") -> Exception:
        url = f"{self.url}{self.chat_path}"
        if is_context_overflow(status, full_text or body):
            prompt_tokens, window = overflow_figures(full_text or body)
            return ContextOverflow(
                f"{url} rejected the prompt as longer than the model's context window "
                f"(HTTP {status}): {body}",
                prompt_tokens=prompt_tokens,
                context_window=window,
                status=status,
                url=url,
                attempts=attempts,
            )
        if is_tools_unsupported(status, full_text or body):
            return ToolsUnsupported(
                f"{url} refused the tools (HTTP {status}): {body}; the model's chat template "
                "or the server has no tool support (llama.cpp: start llama-server with --jinja; "
                "Ollama: a model tagged 'tools'; vLLM: --enable-auto-tool-choice "
                "--tool-call-parser ...)",
                status=status,
                url=url,
                attempts=attempts,
            )
        if status in (401, 403):
            return ProviderAuthError(
                f"{url} refused the API key (HTTP {status}): {body}; check the key "
                f"(the command line reads {self.spec.key_env})",
                status=status,
                url=url,
                attempts=attempts,
            )
        if status == 404:
            return ProviderRejected(
                f"{url} answered HTTP 404 for model {self.model_id!r}: {body}; check the model "
                "name and the base URL",
                status=status,
                url=url,
                attempts=attempts,
            )
        return ProviderRejected(
            f"{url} rejected the request (HTTP {status}): {body}",
            status=status,
            url=url,
            attempts=attempts,
        )

    def _run_sync(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._portal.run(coro)

    def _stream_portal(self) -> tuple[LoopThread, bool]:
        return self._portal, False

    async def aclose(self) -> None:
        """Close this LM's HTTP clients on every loop it used, and its sync loop thread."""
        current = asyncio.get_running_loop()
        clients, self._clients = self._clients, {}
        for loop, client in clients.items():
            if loop is current:
                await client.close()
            elif not loop.is_closed() and loop.is_running():
                future = asyncio.run_coroutine_threadsafe(client.close(), loop)
                try:
                    await asyncio.wait_for(asyncio.wrap_future(future), 5)
                except (TimeoutError, RuntimeError):
                    pass
        if self._portal.loop is not current:
            self._portal.stop()

    def close(self) -> None:
        if self._portal.loop is not None:
            self._portal.run(self.aclose())
            self._portal.stop()
        elif self._clients:
            from holdfast.lm.base import run_sync

            run_sync(self.aclose())


class _OpenAIEvents:
    """Server-sent events of a chat-completions stream, fed to a :class:`ChunkAssembler`."""

    def __init__(self, assembler: ChunkAssembler) -> None:
        self.assembler = assembler

    def feed(self, event: SSEEvent) -> list[Delta]:
        if event.event == "error":
            raise StreamError.from_event(_loads_or_text(event.data), url=self.assembler.url)
        return self.assembler.feed(event.data)

    def ended(self) -> bool:
        return self.assembler.saw_done or self.assembler.finish_reason is not None

    def completion(self) -> Completion:
        return self.assembler.completion()


def _loads_or_text(data: str) -> Any:
    import json

    try:
        value = json.loads(data)
    except ValueError:
        return {"message": data}
    return value.get("error", value) if isinstance(value, dict) else {"message": data}


def _is_timeout(exc: BaseException, sdk: Any) -> bool:
    """Whether ``exc`` is a request that was sent and then timed out (not a connect timeout)."""
    httpx = _httpx_module()
    cause = exc.__cause__ if isinstance(exc, sdk.APITimeoutError) else exc
    if isinstance(cause, (httpx.ConnectTimeout, httpx.PoolTimeout)):
        return False
    return isinstance(exc, (TimeoutError, sdk.APITimeoutError, httpx.TimeoutException))


def _httpx_module() -> Any:
    """The HTTP library under the ``openai`` SDK (``httpx2`` from its 3.x series, required)."""
    import httpx2

    return httpx2
