"""An in-process stand-in for a sandbox, for tests of the layers above it.

THIS IS NOT A SANDBOX AND PROVIDES NO ISOLATION WHATSOEVER: cells run with ``exec`` in the test
process, with full access to its memory, files, network and credentials. Use it only to test code
that drives a :class:`~holdfast.sandbox.types.Sandbox` (the RLM loop, the agent tools) with code
you wrote yourself; never with model-written code.

It follows the contract closely enough for those tests: globals persist across cells, ``print``
output is captured per cell (through a ``print`` placed in the cell's globals, so the process-wide
``sys.stdout`` is never swapped), the last expression is echoed, host functions (sync or async)
are callable by name from cells, JSON-safe ``get/set/snapshot`` work, and a cell past its timeout
is reported as timed out (its thread cannot be killed and is abandoned).
"""

from __future__ import annotations

import ast
import asyncio
import builtins
import contextlib
import inspect
import io
import json
import time
import traceback
from pathlib import Path
from typing import Any

from holdfast.sandbox.types import CellError, CellResult, HostFunctionSpec, SandboxPolicy


class FakeSandbox:
    """A :class:`~holdfast.sandbox.types.Sandbox` that runs cells in this process. No isolation."""

    def __init__(
        self, policy: SandboxPolicy | None = None, functions: list[HostFunctionSpec] | None = None
    ) -> None:
        self.policy = policy or SandboxPolicy(isolation="process")
        self.globals: dict[str, Any] = {"__name__": "__main__", "__builtins__": builtins}
        self.specs: dict[str, HostFunctionSpec] = {}
        self.inputs: set[str] = set()
        self.cells: list[str] = []
        self.started = False
        self._loop: asyncio.AbstractEventLoop | None = None
        for spec in functions or []:
            self.register(spec)

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.started = True

    def register(self, spec: HostFunctionSpec) -> None:
        self.specs[spec.name] = spec
        self.globals[spec.name] = self._proxy(spec)

    def _proxy(self, spec: HostFunctionSpec) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            result = spec.fn(*args, **kwargs)
            if inspect.isawaitable(result):
                assert self._loop is not None

                async def _await() -> Any:
                    return await result

                result = asyncio.run_coroutine_threadsafe(_await(), self._loop).result()
            json.dumps(result)
            return result

        call.__name__ = spec.name
        return call

    async def execute(self, code: str, timeout: float | None = None) -> CellResult:
        if not self.started:
            raise RuntimeError("FakeSandbox.start() was not awaited")
        self.cells.append(code)
        limit = timeout if timeout is not None else self.policy.cell_timeout_s
        started = time.perf_counter()
        try:
            return await asyncio.wait_for(asyncio.to_thread(self._run, code), limit)
        except TimeoutError:
            return CellResult(
                error=CellError("TimeoutError", f"the cell ran past its {limit:g} s limit", ""),
                duration_s=time.perf_counter() - started,
                timed_out=True,
            )

    def _run(self, code: str) -> CellResult:
        out, err = io.StringIO(), io.StringIO()

        def _print(*args: Any, file: Any = None, **kwargs: Any) -> None:
            target = err if file is not None and file is not out else out
            builtins.print(*args, file=target, **kwargs)

        self.globals["print"] = _print
        started = time.perf_counter()
        error = None
        value_repr = None
        try:
            tree = ast.parse(code, "<cell>", "exec")
            tail = tree.body[-1] if tree.body else None
            last = None
            if self.policy.echo_last_expression and isinstance(tail, ast.Expr):
                tree.body.pop()
                last = ast.Expression(tail.value)
            exec(compile(tree, "<cell>", "exec"), self.globals)
            if last is not None:
                value = eval(compile(last, "<cell>", "eval"), self.globals)
                value_repr = None if value is None else repr(value)
        except BaseException as exc:
            error = CellError(type(exc).__name__, str(exc), traceback.format_exc())
        cap = self.policy.max_output_bytes
        stdout, stderr = out.getvalue(), err.getvalue()
        return CellResult(
            stdout=stdout[:cap],
            stderr=stderr[:cap],
            error=error,
            duration_s=time.perf_counter() - started,
            stdout_truncated=len(stdout) > cap,
            stderr_truncated=len(stderr) > cap,
            value_repr=value_repr,
        )

    async def load(self, name: str, value: Any = None, *, path: str | Path | None = None) -> None:
        if path is not None:
            value = Path(path).read_text(encoding="utf-8", errors="replace")
        self.globals[name] = value
        self.inputs.add(name)

    async def get(self, name: str) -> Any:
        value = self.globals[name]
        json.dumps(value)
        return value

    async def set(self, name: str, value: Any) -> None:
        json.dumps(value)
        self.globals[name] = value

    async def snapshot(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in self.globals.items():
            if key.startswith("__") or key in self.inputs or key in self.specs or key == "print":
                continue
            with contextlib.suppress(TypeError, ValueError):
                json.dumps(value)
                out[key] = value
        return out

    async def shutdown(self) -> None:
        self.started = False
