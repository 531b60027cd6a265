"""A fake in-process box for the RLM tests that do not need isolation (NOT a sandbox).

Code runs with ``exec`` in a worker thread; host functions are called back on the event loop.
It implements the Sandbox protocol so the engine's loop, broker and budgets can be tested fast;
tests of isolation, killing cells and real loading use the real box.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from holdfast.sandbox.types import CellError, CellResult, HostFunctionSpec, SandboxPolicy


class HostCallError(Exception):
    pass


class FakeBox:
    def __init__(self, policy: SandboxPolicy | None = None) -> None:
        self.policy = policy or SandboxPolicy(isolation="process")
        self.specs: dict[str, HostFunctionSpec] = {}
        self.globals: dict[str, Any] = {"__name__": "__main__", "HostCallError": HostCallError}
        self.loop: asyncio.AbstractEventLoop | None = None
        self.started = False
        self.closed = False
        self.cells: list[str] = []
        self._lock = threading.Lock()

    def register(self, spec: HostFunctionSpec) -> None:
        self.specs[spec.name] = spec

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        for name, spec in self.specs.items():
            self.globals[name] = self._proxy(spec)
        self.started = True

    def _proxy(self, spec: HostFunctionSpec) -> Any:
        params = list((spec.schema or {}).get("properties", {}))

        def call(*args: Any, **kwargs: Any) -> Any:
            kwargs.update(zip(params, args, strict=False))
            json.dumps(kwargs)

            async def run() -> Any:
                out = spec.fn(**kwargs)
                if asyncio.iscoroutine(out):
                    out = await out
                return out

            assert self.loop is not None
            fut = asyncio.run_coroutine_threadsafe(run(), self.loop)
            try:
                return json.loads(json.dumps(fut.result()))
            except Exception as exc:
                raise HostCallError(f"{spec.name}() failed: {type(exc).__name__}: {exc}") from None

        return call

    async def execute(self, code: str, timeout: float | None = None) -> CellResult:
        self.cells.append(code)
        out = io.StringIO()
        t0 = time.perf_counter()

        def work() -> CellError | None:
            with self._lock, contextlib.redirect_stdout(out):
                try:
                    exec(compile(code, "<cell>", "exec"), self.globals)
                except BaseException as exc:
                    return CellError(type(exc).__name__, str(exc), traceback.format_exc(limit=2))
            return None

        try:
            err = await asyncio.wait_for(asyncio.to_thread(work), timeout)
        except TimeoutError:
            return CellResult(
                stdout=out.getvalue(), timed_out=True, duration_s=time.perf_counter() - t0
            )
        return CellResult(stdout=out.getvalue(), error=err, duration_s=time.perf_counter() - t0)

    async def load(self, name: str, value: Any = None, *, path: str | Path | None = None) -> None:
        if path is not None:
            value = Path(path).read_text("utf-8", "replace")
        self.globals[name] = value

    async def get(self, name: str) -> Any:
        if name not in self.globals:
            raise KeyError(name)
        return json.loads(json.dumps(self.globals[name]))

    async def set(self, name: str, value: Any) -> None:
        self.globals[name] = value

    async def snapshot(self) -> dict[str, Any]:
        return {}

    async def shutdown(self) -> None:
        self.closed = True


def fake_box_factory(boxes: list[FakeBox] | None = None) -> Any:
    def factory(policy: SandboxPolicy) -> FakeBox:
        box = FakeBox(policy)
        if boxes is not None:
            boxes.append(box)
        return box

    return factory
