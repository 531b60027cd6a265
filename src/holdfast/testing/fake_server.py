"""A real OpenAI-compatible HTTP server on 127.0.0.1, for exercising real client code offline.

:class:`FakeOpenAIServer` runs an asyncio server in a background thread (its own event loop), with
a deep accept backlog and HTTP/1.1 keep-alive, so hundreds of concurrent connections never queue
behind ``listen()``. It speaks ``POST /v1/chat/completions`` (plain JSON and ``stream=true``
server-sent events), Anthropic's ``POST /v1/messages`` (both too), ``POST /v1/embeddings``
(deterministic hashed bag-of-words vectors) and ``GET /v1/models``.

Replies come from a script (a list of str / Completion / raw dict bodies / :class:`Fault`),
or a function of the parsed request body (sync or async, run on the server's loop), else the
``default_reply`` (by default an echo of the last user message). :meth:`inject` puts faults or
replies in front of the script for the next requests. Every request is recorded (``requests``
holds the JSON bodies, ``request_log`` the full records), and ``max_in_flight``,
``connections_opened`` and ``disconnects`` let tests observe concurrency limits, keep-alive and
cancelled requests.

Run ``python -m holdfast.testing --latency 0.2`` to serve from a separate process.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import inspect
import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from holdfast.lm.types import Completion
from holdfast.testing.fake_http import json_response, read_request, sse_response
from holdfast.testing.fake_wire import (
    Fault,
    anthropic_body,
    anthropic_stream_events,
    completion_body,
    embeddings_body,
    error_body,
    llamacpp_chat_refusal,
    llamacpp_embedding_refusal,
    shape_reply,
    stream_chunks,
)

ServerReply = str | Completion | dict[str, Any] | Fault
Handler = Callable[[dict[str, Any]], Any]

_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    429: "Too Many Requests",
}
_DROP = object()


@dataclass(frozen=True)
class RequestRecord:
    """One HTTP request the server received."""

    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any] | None
    received_at: float = field(default_factory=time.monotonic)


class FakeOpenAIServer:
    """A local OpenAI-compatible server with scripted replies and injectable faults."""

    def __init__(
        self,
        replies: Sequence[ServerReply] | Handler | None = None,
        *,
        latency: float = 0.0,
        default_reply: str | None = None,
        embedding_dim: int = 64,
        stream_interval: float = 0.0,
        api_key: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        backlog: int = 4096,
        n_ctx: int | None = None,
        tools: str = "supported",
        embedding_batch: int | None = None,
        gather: int | None = None,
        gather_timeout_s: float = 10.0,
    ) -> None:
        if tools not in ("supported", "refused", "ignored"):
            raise ValueError(f"tools must be supported, refused or ignored, not {tools!r}")
        self._handler: Handler | None = replies if callable(replies) else None
        self._script: collections.deque[ServerReply] = collections.deque(
            [] if replies is None or callable(replies) else list(replies)
        )
        self._injected: collections.deque[ServerReply] = collections.deque()
        self.latency = latency
        self.default_reply = default_reply
        self.embedding_dim = embedding_dim
        self.stream_interval = stream_interval
        self.stream_parts_sent = 0
        self.api_key = api_key
        self.host = host
        self.port = port
        self.backlog = backlog
        # llama.cpp's behaviours, as its server answers them: a prompt of n_ctx tokens or more
        # is refused with HTTP 400; tools are refused (no --jinja: HTTP 500) or silently not
        # shown to the model (a template without tool support, reported by GET /props); an
        # embeddings input longer than the physical batch is refused with HTTP 500.
        self.n_ctx = n_ctx
        self.tools = tools
        self.embedding_batch = embedding_batch
        # with ``gather``, each chat reply waits until that many are in flight together (or
        # ``gather_timeout_s`` passed): a client's concurrency is then measured, not raced
        self.gather = gather
        self.gather_timeout_s = gather_timeout_s
        self._gathered: asyncio.Event | None = None
        self.request_log: list[RequestRecord] = []
        self.disconnects: list[float] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.connections_opened = 0
        self.handler_errors: list[BaseException] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.AbstractServer | None = None
        self._conns: set[asyncio.Task[None]] = set()
        self._stopping: asyncio.Event | None = None

    # -- public surface ---------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """The OpenAI base URL, ``http://127.0.0.1:<port>/v1``."""
        return f"http://{self.host}:{self.port}/v1"

    @property
    def requests(self) -> list[dict[str, Any]]:
        """The JSON bodies of every POST request received, in arrival order."""
        return [r.body for r in list(self.request_log) if r.body is not None]

    def inject(self, *items: ServerReply) -> None:
        """Serve ``items`` (faults or replies) to the next requests, before the script."""
        with self._lock:
            self._injected.extend(items)

    def reset_stats(self) -> None:
        """Forget recorded requests, disconnects and the in-flight high-water mark."""
        with self._lock:
            self.request_log.clear()
            self.disconnects.clear()
            self.max_in_flight = self.in_flight

    def start(self) -> FakeOpenAIServer:
        """Start serving in a background thread; returns once the port is bound."""
        if self._thread is not None:
            return self
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._bind())
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name="fake-openai-server", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            self._thread.join()
            self._thread = None
            raise failure[0]
        return self

    def stop(self) -> None:
        """Stop serving: close every connection (pending requests are abandoned) and join."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        self._thread = None
        self._loop = None

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> FakeOpenAIServer:
        return await asyncio.to_thread(self.start)

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.stop)

    # -- server internals -------------------------------------------------------------------

    async def _bind(self) -> None:
        self._stopping = asyncio.Event()
        self._server = await asyncio.start_server(
            self._connection, self.host, self.port, backlog=self.backlog, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def _shutdown(self) -> None:
        assert self._stopping is not None
        self._stopping.set()
        if self._server is not None:
            self._server.close()
        for task in list(self._conns):
            task.cancel()
        await asyncio.gather(*self._conns, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        self.connections_opened += 1
        buf = bytearray()
        try:
            while True:
                request = await read_request(reader, buf)
                if request is None:
                    return
                method, path, headers, raw = request
                work = asyncio.ensure_future(self._respond(method, path, headers, raw))
                watch: asyncio.Future[bytes] | None = asyncio.ensure_future(reader.read(65536))
                try:
                    while not work.done():
                        waiting = {work} if watch is None else {work, watch}
                        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                        if watch is not None and watch.done() and not work.done():
                            data = watch.result()
                            watch = None
                            if not data:
                                self.disconnects.append(time.monotonic())
                                return
                            buf += data
                finally:
                    if not work.done():
                        work.cancel()
                    if watch is not None:
                        watch.cancel()
                        await asyncio.wait([watch])
                        if not watch.cancelled() and watch.exception() is None:
                            buf += watch.result()
                response = work.result()
                if response is _DROP:
                    return
                if isinstance(response, _Paced):
                    if not await self._paced(reader, writer, buf, response):
                        return
                    continue
                for part in response:
                    writer.write(part)
                await writer.drain()
                if headers.get("connection", "").lower() == "close":
                    return
        except (ConnectionError, ValueError, asyncio.IncompleteReadError, asyncio.CancelledError):
            return
        finally:
            self._conns.discard(task)
            writer.close()

    async def _paced(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        buf: bytearray,
        response: _Paced,
    ) -> bool:
        """Write a streamed response part by part; False when the client went away meanwhile."""
        watch = asyncio.ensure_future(reader.read(65536))
        try:
            for i, part in enumerate(response.parts):
                if i:
                    await asyncio.wait({watch}, timeout=response.interval)
                    if watch.done():
                        data = b"" if watch.exception() is not None else watch.result()
                        if not data:
                            self.disconnects.append(time.monotonic())
                            return False
                        buf += data
                        watch = asyncio.ensure_future(reader.read(65536))
                try:
                    writer.write(part)
                    await writer.drain()
                except ConnectionError:
                    self.disconnects.append(time.monotonic())
                    return False
                self.stream_parts_sent += 1
            return True
        finally:
            if not watch.done():
                watch.cancel()
                await asyncio.wait([watch])
            elif not watch.cancelled() and watch.exception() is None:
                buf += watch.result()

    async def _respond(self, method: str, path: str, headers: dict[str, str], raw: bytes) -> Any:
        body: dict[str, Any] | None = None
        bad_json = False
        if raw:
            try:
                parsed = json.loads(raw)
                body = parsed if isinstance(parsed, dict) else {"_": parsed}
            except ValueError:
                bad_json = True
        self.request_log.append(RequestRecord(method, path, headers, body))
        route = path.split("?", 1)[0].rstrip("/")
        if self.api_key is not None and headers.get("authorization") != f"Bearer {self.api_key}":
            return json_response(401, error_body("invalid api key", "invalid_api_key"))
        if bad_json:
            return json_response(400, error_body("request body is not JSON", "invalid_json"))
        if method == "GET" and route.endswith("/models"):
            model = {"id": "fake-model", "object": "model", "created": 0, "owned_by": "holdfast"}
            return json_response(200, json.dumps({"object": "list", "data": [model]}))
        if method == "GET" and route.endswith("/props"):
            caps = {"supports_tools": self.tools == "supported"}
            caps["supports_tool_calls"] = caps["supports_tools"]
            return json_response(200, json.dumps({"chat_template_caps": caps}))
        if method == "POST" and route.endswith("/embeddings"):
            too_long = llamacpp_embedding_refusal(body or {}, self.embedding_batch)
            if too_long is not None:
                return json_response(500, too_long)
            return json_response(200, json.dumps(embeddings_body(body or {}, self.embedding_dim)))
        if method == "POST" and route.endswith("/chat/completions"):
            refused = llamacpp_chat_refusal(body or {}, self.n_ctx, self.tools)
            if refused is not None:
                return json_response(*refused)
            if self.tools == "ignored" and body:
                body = {k: v for k, v in body.items() if k not in ("tools", "tool_choice")}
            return await self._chat(body or {})
        if method == "POST" and route.endswith("/v1/messages"):
            return await self._chat(body or {}, wire="anthropic")
        return json_response(404, error_body(f"no route {method} {path}", "not_found"))

    async def _chat(self, body: dict[str, Any], wire: str = "openai") -> Any:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            gathered = self.gather is not None and self.in_flight >= self.gather
        try:
            if self.gather is not None:
                if self._gathered is None:
                    self._gathered = asyncio.Event()
                if gathered:
                    self._gathered.set()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._gathered.wait(), self.gather_timeout_s)
            if self.latency > 0:
                await asyncio.sleep(self.latency)
            item = await self._next_reply(body)
            if isinstance(item, Fault):
                return await self._fault(item)
            if isinstance(item, dict):
                return json_response(200, json.dumps(item))
            completion = shape_reply(item, body)
            if wire == "anthropic":
                if body.get("stream"):
                    events = anthropic_stream_events(completion, body)
                    return self._pace(sse_response(events, named=True, done=False))
                return json_response(200, json.dumps(anthropic_body(completion, body)))
            if body.get("stream"):
                return self._pace(sse_response(stream_chunks(completion, body)))
            return json_response(200, json.dumps(completion_body(completion, body)))
        finally:
            with self._lock:
                self.in_flight -= 1

    def _pace(self, parts: list[bytes]) -> Any:
        return _Paced(parts, self.stream_interval) if self.stream_interval > 0 else parts

    async def _next_reply(self, body: dict[str, Any]) -> ServerReply:
        with self._lock:
            if self._injected:
                return self._injected.popleft()
            if self._script:
                return self._script.popleft()
        if self._handler is not None:
            try:
                out = self._handler(body)
                if inspect.isawaitable(out):
                    out = await out
            except Exception as exc:
                self.handler_errors.append(exc)
                return Fault.status(500, f"the reply function raised {type(exc).__name__}: {exc}")
            if not isinstance(out, (str, Completion, dict, Fault)):
                return Fault.status(500, f"handler returned {type(out).__name__}")
            return out
        if self.default_reply is not None:
            return self.default_reply
        return "echo: " + _last_user_text(body)

    async def _fault(self, fault: Fault) -> Any:
        if fault.kind == "status":
            extra = {} if fault.retry_after is None else {"retry-after": f"{fault.retry_after:g}"}
            return json_response(fault.http_status, fault.body, extra)
        if fault.kind == "malformed":
            return json_response(200, fault.body)
        if fault.kind == "sse":
            return self._pace(sse_response(list(fault.events), done=fault.done))
        if fault.kind == "hang":
            assert self._stopping is not None
            if fault.seconds is None:
                await self._stopping.wait()
            else:
                await asyncio.sleep(fault.seconds)
        return _DROP


@dataclass(frozen=True)
class _Paced:
    parts: list[bytes]
    interval: float


def _last_user_text(body: dict[str, Any]) -> str:
    for msg in reversed(body.get("messages") or []):
        if isinstance(msg, dict) and msg.get("role") == "user":
            content = msg.get("content")
            if isinstance(content, list):
                return "".join(p.get("text", "") for p in content if isinstance(p, dict))
            return content if isinstance(content, str) else json.dumps(content)
    return ""


def main(argv: list[str] | None = None) -> None:
    """Serve from this process until interrupted; prints the base URL on the first line."""
    parser = argparse.ArgumentParser(description="A local fake OpenAI-compatible server.")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per chat reply")
    parser.add_argument("--reply", default=None, help="fixed reply text (default: echo)")
    args = parser.parse_args(argv)
    server = FakeOpenAIServer(latency=args.latency, default_reply=args.reply, port=args.port)
    with server:
        print(server.base_url, flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
