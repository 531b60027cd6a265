"""A blocking wrapper around any :class:`~holdfast.sandbox.types.Sandbox`.

The wrapped sandbox lives on a private event loop in a dedicated thread, which stays alive until
:meth:`SyncSandbox.shutdown`: the box's processes are tied to the thread that started them
(``--die-with-parent``), so that thread must outlive the box.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from holdfast.sandbox.types import CellResult, HostFunctionSpec, Sandbox

T = TypeVar("T")


class SyncSandbox:
    """The same operations as the async sandbox, as plain blocking calls."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.policy = sandbox.policy
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="holdfast-sandbox", daemon=True
        )
        self._thread.start()

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        if not self._thread.is_alive():
            coro.close()
            raise RuntimeError("this SyncSandbox has been shut down")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def start(self) -> None:
        self._run(self.sandbox.start())

    def execute(self, code: str, timeout: float | None = None) -> CellResult:
        return self._run(self.sandbox.execute(code, timeout))

    def load(
        self,
        name: str,
        value: Any = None,
        *,
        path: str | Path | None = None,
        mode: str | None = None,
    ) -> None:
        """Loads an input; ``mode`` ("text" or "bytes") is passed on when the sandbox takes it."""
        extra: dict[str, Any] = {"mode": mode} if mode is not None else {}
        self._run(self.sandbox.load(name, value, path=path, **extra))

    def get(self, name: str) -> Any:
        return self._run(self.sandbox.get(name))

    def set(self, name: str, value: Any) -> None:
        self._run(self.sandbox.set(name, value))

    def snapshot(self) -> dict[str, Any]:
        return self._run(self.sandbox.snapshot())

    def restore(self, snapshot: dict[str, Any]) -> None:
        """Sets many globals at once (when the wrapped sandbox has ``restore``)."""
        restore = getattr(self.sandbox, "restore", None)
        if restore is None:
            raise NotImplementedError(f"{type(self.sandbox).__name__} has no restore()")
        self._run(restore(snapshot))

    def register(self, spec: HostFunctionSpec) -> None:
        async def _register() -> None:
            self.sandbox.register(spec)

        self._run(_register())

    def shutdown(self) -> None:
        if not self._thread.is_alive():
            return
        try:
            self._run(self.sandbox.shutdown())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()

    def __enter__(self) -> SyncSandbox:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
