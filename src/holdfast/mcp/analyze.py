"""``analyze`` over MCP: one bounded RLM job over files, folders or text a client names.

The job runs on its own thread with its own event loop (``RLM.run``), so the MCP server's loop
stays free to answer other calls, and a cancellation from the client reaches the job as a
``threading.Event`` that the engine checks within a fraction of a second: the job then stops its
cells and in-flight sub-calls and cleans up on its own loop, instead of being torn down halfway by
a cancelled scope. Progress events from the engine's tracer are forwarded to the client as MCP
progress notifications.

Budgets: each limit the client asks for is clipped to the server's :class:`AnalyzeCaps`; the
result says which were clipped.
"""

from __future__ import annotations

import asyncio
import math
import re
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from holdfast.errors import ConfigError, InvalidInput
from holdfast.mcp.paths import Confined, confine
from holdfast.mcp.settings import MCPSettings

Progress = Callable[[float, float | None, str], Awaitable[None]]

_NAME_CHARS = re.compile(r"[^a-z0-9_]+")
CANCEL_GRACE_S = 10.0


@dataclass(frozen=True)
class AnalyzeRequest:
    """What a client asked for (already schema-checked by the SDK)."""

    question: str
    paths: tuple[str, ...] = ()
    text: str | None = None
    signature: str | None = None
    max_seconds: float | None = None
    max_usd: float | None = None
    max_tokens: int | None = None
    max_iterations: int | None = None
    max_sub_calls: int | None = None


def input_names(confined: list[Confined]) -> list[str]:
    """A distinct Python identifier per input, from its file or folder name."""
    names: list[str] = []
    for item in confined:
        base = _NAME_CHARS.sub("_", item.path.name.lower()).strip("_") or item.kind
        if base[0].isdigit() or base in ("text", "query", "answer"):
            base = f"{item.kind}_{base}"
        name, n = base, 2
        while name in names:
            name, n = f"{base}_{n}", n + 1
        names.append(name)
    return names


def _clip(asked: float | int | None, cap: float | int | None, what: str, clipped: list[str]) -> Any:
    if asked is None:
        return cap
    if isinstance(asked, bool) or not math.isfinite(float(asked)) or asked <= 0:
        raise InvalidInput(f"{what} must be a positive finite number")
    if cap is not None and asked > cap:
        clipped.append(what)
        return cap
    return asked


def build_budget(req: AnalyzeRequest, settings: MCPSettings) -> tuple[Any, list[str]]:
    """The RLM budget for ``req``: what was asked for, never more than the server's caps."""
    from holdfast.rlm import Budget

    caps = settings.caps
    clipped: list[str] = []
    tokens = int(_clip(req.max_tokens, caps.max_tokens, "max_tokens", clipped))
    budget = Budget(
        max_iterations=int(
            _clip(req.max_iterations, caps.max_iterations, "max_iterations", clipped)
        ),
        max_wall_s=float(_clip(req.max_seconds, caps.max_wall_s, "max_seconds", clipped)),
        max_root_tokens=tokens,
        max_sub_tokens=tokens,
        max_sub_calls=int(_clip(req.max_sub_calls, caps.max_sub_calls, "max_sub_calls", clipped)),
        max_usd=_clip(req.max_usd, caps.max_usd, "max_usd", clipped),
    )
    return budget, clipped


def prepare(req: AnalyzeRequest, settings: MCPSettings) -> dict[str, Any]:
    """The job's named inputs: confined real paths, and the text if any."""
    if not req.question.strip():
        raise InvalidInput("the question must not be empty")
    if not req.paths and not req.text:
        raise InvalidInput("name at least one path inside the workspace roots, or pass text")
    caps = settings.caps
    confined = [
        confine(p, settings.roots, max_files=caps.max_files, max_bytes=caps.max_input_bytes)
        for p in req.paths
    ]
    total = sum(c.size for c in confined) + len((req.text or "").encode("utf-8"))
    if total > caps.max_input_bytes:
        raise InvalidInput(
            f"the inputs hold {total:,} bytes, over this server's cap of {caps.max_input_bytes:,}"
        )
    inputs: dict[str, Any] = dict(
        zip(input_names(confined), (c.path for c in confined), strict=True)
    )
    if req.text:
        inputs["text"] = req.text
    return inputs


async def run_analyze(
    req: AnalyzeRequest,
    settings: MCPSettings,
    *,
    progress: Progress | None = None,
    trace_db: Path | None = None,
) -> dict[str, Any]:
    """Run the job and return its answer, status, usage, budget and trace id as JSON data."""
    if not settings.model:
        raise ConfigError(
            "analyze needs a model: start the MCP server with --model provider:model "
            "(or set HOLDFAST_MODEL)"
        )
    inputs = prepare(req, settings)
    budget, clipped = build_budget(req, settings)
    loop = asyncio.get_running_loop()
    events: asyncio.Queue[tuple[float, str]] = asyncio.Queue()
    cancel = threading.Event()
    limit = float(budget.max_iterations)

    def observe(trace_id: str, kind: str, data: dict[str, Any]) -> None:
        if kind == "iteration" and data.get("depth", 0) == 0:
            turn = float(data.get("turn", 0))
            raw = data.get("budget")
            b: dict[str, Any] = raw if isinstance(raw, dict) else {}
            note = f"turn {int(turn)}: {b.get('sub_calls', 0)} sub-calls, ${b.get('usd', 0.0):.4f}"
            loop.call_soon_threadsafe(events.put_nowait, (turn, note))

    def job() -> Any:
        from holdfast.rlm import RLM

        store = _trace_store(trace_db)
        try:
            rlm = RLM(
                settings.model or "",
                settings.sub_model,
                budget=budget,
                signature=req.signature,
                store=store,
                on_event=observe,
                on_budget="return",
                max_input_bytes=settings.caps.max_input_bytes,
            )
            return rlm.run(req.question, cancel=cancel, **inputs)
        finally:
            store.close()

    task = loop.run_in_executor(None, job)
    try:
        while not task.done():
            getter = asyncio.ensure_future(events.get())
            done, _ = await asyncio.wait({task, getter}, return_when=asyncio.FIRST_COMPLETED)
            if getter in done:
                turn, note = getter.result()
                if progress is not None:
                    await progress(turn, limit, note)
            else:
                getter.cancel()
        result = task.result()
    except asyncio.CancelledError:
        cancel.set()
        # the job's own Cancelled error is expected now: retrieve it so it is not logged as lost
        task.add_done_callback(lambda f: f.cancelled() or f.exception())
        # let the job stop and clean up on its own loop (it checks the event several times a
        # second); shielded, since the caller's scope stays cancelled while we wait
        with anyio.CancelScope(shield=True), anyio.move_on_after(CANCEL_GRACE_S):
            await asyncio.wait({task})
        raise
    out: dict[str, Any] = result.to_dict()
    out["budget"] = {
        "max_seconds": budget.max_wall_s,
        "max_usd": budget.max_usd,
        "max_tokens": budget.max_root_tokens,
        "max_iterations": budget.max_iterations,
        "max_sub_calls": budget.max_sub_calls,
        "clipped_to_server_caps": clipped,
    }
    out["inputs"] = {
        name: str(value) if isinstance(value, Path) else "text" for name, value in inputs.items()
    }
    return out


def _trace_store(path: Path | None) -> Any:
    from holdfast.config import default_db_path
    from holdfast.rlm.store import RLMTraceStore
    from holdfast.store.sqlite import SQLiteDB

    return RLMTraceStore(SQLiteDB(path or default_db_path()))
