"""The agent's built-in tools: working set, context actions, workspace files, memory, analyze,
finish.

Each one runs inside the harness step contract (the loop calls it through ``ctx.step``), so every
call leaves intent and result receipts. Working-set changes are tagged with the step's idempotency
key, so a call replayed after a crash finds its earlier operation instead of applying it twice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from holdfast.agent.env import JobAllowance, ToolEnv
from holdfast.agent.tools import Tool, schema_tool, tool
from holdfast.errors import ModelFacingError


def _ws(env: ToolEnv, change: Any) -> dict[str, Any]:
    """Apply one keyed working-set change (or report the one already applied under this key)."""
    vs = env.session
    prior = vs.store.op_by_key(vs.id, env.key)
    if prior is not None:
        return {"ok": True, "id": prior["args"].get("id"), "version": prior["v"], "replayed": True}
    ws = env.keyed().working_set
    try:
        item_id = change(ws)
    finally:
        ws.op_key = None
    out: dict[str, Any] = {"ok": True, "version": ws.version}
    if isinstance(item_id, str):
        out["id"] = item_id
    return out


def _track(env: ToolEnv, path: str, action: str) -> None:
    _ws(env, lambda ws: ws.track_file(path, action))


# -- working set -----------------------------------------------------------------------------


@tool(effect=False, idempotent=True, harness_name="ws.set_goal")
def set_goal(env: ToolEnv, goal: str, criteria: list[str] | None = None) -> dict[str, Any]:
    """Set the task's goal and, optionally, the criteria that say when it is done."""
    return _ws(env, lambda ws: ws.set_goal(goal, criteria))


@tool(effect=False, idempotent=True, harness_name="ws.set_status")
def set_goal_status(env: ToolEnv, status: str) -> dict[str, Any]:
    """Set the goal's status: active, done, blocked or abandoned."""
    return _ws(env, lambda ws: ws.set_status(status))


@tool(effect=False, idempotent=True, harness_name="ws.add_constraint")
def add_constraint(env: ToolEnv, text: str) -> dict[str, Any]:
    """Record a constraint that must hold for the rest of the task (it is never dropped)."""
    return _ws(env, lambda ws: ws.add_constraint(text))


@tool(effect=False, idempotent=True, harness_name="ws.record_decision")
def record_decision(
    env: ToolEnv, text: str, rationale: str, supersedes: list[str] | None = None
) -> dict[str, Any]:
    """Record a decision and why; name earlier decision ids in `supersedes` to replace them."""
    return _ws(env, lambda ws: ws.record_decision(text, rationale, supersedes))


@tool(effect=False, idempotent=True, harness_name="ws.track_file")
def track_file(env: ToolEnv, path: str, action: str, note: str = "") -> dict[str, Any]:
    """Track a file that matters to the task (files you read or write are tracked for you)."""
    return _ws(env, lambda ws: ws.track_file(path, action, note))


@tool(effect=False, idempotent=True, harness_name="ws.add_blocker")
def add_blocker(env: ToolEnv, text: str) -> dict[str, Any]:
    """Record something that blocks progress."""
    return _ws(env, lambda ws: ws.add_blocker(text))


@tool(effect=False, idempotent=True, harness_name="ws.resolve_blocker")
def resolve_blocker(env: ToolEnv, blocker_id: str, resolution: str) -> dict[str, Any]:
    """Mark a blocker resolved, saying how."""
    return _ws(env, lambda ws: ws.resolve_blocker(blocker_id, resolution))


@tool(effect=False, idempotent=True, harness_name="ws.record_progress")
def record_progress(env: ToolEnv, text: str) -> dict[str, Any]:
    """Record finished work, in one line."""
    return _ws(env, lambda ws: ws.record_progress(text))


@tool(effect=False, idempotent=True, harness_name="ws.set_next_step")
def set_next_step(env: ToolEnv, text: str) -> dict[str, Any]:
    """Say what you will do next."""
    return _ws(env, lambda ws: ws.set_next_step(text))


# -- context actions -------------------------------------------------------------------------


@tool(effect=False, idempotent=True, harness_name="context.prune")
def context_prune(env: ToolEnv, ids: list[str], note: str) -> dict[str, Any]:
    """Drop tool results you no longer need from the context, leaving `note` in their place.
    The full text stays readable with context_recall."""
    return {"pruned": env.session.prune(ids, note)}


@tool(effect=False, idempotent=True, harness_name="context.recall")
def context_recall(env: ToolEnv, id: str, offset: int = 0) -> str:
    """Read back a tool result (r12) or a working-set item (c1, d2, p7...) in full."""
    return env.session.recall(id, offset=offset)


# -- workspace files -------------------------------------------------------------------------


def _workspace(env: ToolEnv) -> Any:
    if env.workspace is None:
        raise ModelFacingError("this task has no workspace")
    return env.workspace


@tool(effect=False, idempotent=True, harness_name="file.list")
def list_files(
    env: ToolEnv, path: str = ".", pattern: str = "*", limit: int = 200
) -> dict[str, Any]:
    """List files under a workspace directory (recursive; `pattern` is a glob)."""
    return dict(_workspace(env).list(path, pattern, limit))


@tool(effect=False, idempotent=True, harness_name="file.read")
def read_file(env: ToolEnv, path: str, start_line: int = 1, max_lines: int = 400) -> str:
    """Read a workspace file, with line numbers."""
    text = str(_workspace(env).read(path, start_line, max_lines))
    _track(env, path, "read")
    return text


@tool(effect=False, idempotent=True, harness_name="file.search")
def search_files(
    env: ToolEnv, query: str, path: str = ".", regex: bool = False, limit: int = 50
) -> dict[str, Any]:
    """Search workspace files for a string (or a regular expression)."""
    return dict(_workspace(env).search(query, path, regex, limit))


@tool(effect=True, idempotent=True, harness_name="file.write")
def write_file(env: ToolEnv, path: str, content: str) -> dict[str, Any]:
    """Write a whole workspace file (gated by the task's permission policy)."""
    out = dict(_workspace(env).write(path, content))
    _track(env, path, "write")
    return out


@tool(effect=True, idempotent=False, harness_name="file.patch")
def patch_file(env: ToolEnv, path: str, old: str, new: str) -> dict[str, Any]:
    """Replace the single occurrence of `old` with `new` in a workspace file (gated)."""
    out = dict(_workspace(env).patch(path, old, new))
    _track(env, path, "patch")
    return out


# -- knowledge memory: the memory package's own tools, each run as a harness step ------------

_MEMORY_EFFECTS = {
    "memory_add": (True, True),
    "memory_update": (True, False),
    "memory_delete": (True, True),
    "memory_search": (False, True),
    "memory_get": (False, True),
    "context_pack": (False, True),
    "memory_believe": (True, False),
    "memory_evidence": (True, False),
    "memory_beliefs": (False, True),
    "memory_resolve": (True, True),
    "memory_evidence_of": (False, True),
    "memory_model": (True, True),
}


def _memory_call(name: str) -> Any:
    def call(env: ToolEnv, **args: Any) -> dict[str, Any]:
        if env.memory is None:
            raise ModelFacingError("knowledge memory is not enabled for this task")
        return env.memory.dispatch(name, args)

    return call


def memory_tools() -> tuple[Tool, ...]:
    """``holdfast.memory``'s agent tools (add, update, delete, search, get, context pack)."""
    from holdfast.memory.tools import MemoryTools

    out: list[Tool] = []
    for schema in MemoryTools.schemas():
        name = schema["function"]["name"]
        effect, idempotent = _MEMORY_EFFECTS.get(name, (True, False))
        harness = "memory." + name.removeprefix("memory_")
        out.append(
            schema_tool(
                schema,
                _memory_call(name),
                effect=effect,
                idempotent=idempotent,
                harness_name=harness,
            )
        )
    return tuple(out)


# -- analyze and finish ----------------------------------------------------------------------


@tool(effect=False, idempotent=True, harness_name="rlm.analyze")
def analyze(
    env: ToolEnv,
    question: str,
    paths: list[str] | None = None,
    text: str | None = None,
    signature: str | None = None,
) -> dict[str, Any]:
    """Answer a question over large files or text with a reasoning job (an RLM run); the answer
    is kept in the working set as a finding with its trace id."""
    vs = env.session
    prior = vs.store.op_by_key(vs.id, env.key)
    if prior is not None:
        a = prior["args"]
        return {"finding": a["id"], "answer": a["text"], "trace_id": a.get("trace_id")}
    if env.analyzer is None:
        raise ModelFacingError("analyze is not available for this task (no analysis model)")
    inputs: dict[str, Any] = {}
    if text:
        inputs["text"] = text
    for i, p in enumerate(paths or ()):
        target: Path = _workspace(env).resolve(p)
        if not target.exists():
            raise ModelFacingError(f"no file or directory {p!r} in the workspace")
        inputs[f"source_{i}" if len(paths or ()) > 1 else "source"] = target
    if not inputs:
        raise ModelFacingError("analyze needs `paths` or `text` to work on")
    ctx = env.ctx
    allowance = None
    if ctx is not None:
        left = ctx.budget.remaining()
        tokens_left = left["tokens"]
        allowance = JobAllowance(
            cancel=ctx.cancel,
            wall_s=left["wall_s"],
            usd=left["usd"],
            tokens=None if tokens_left is None else int(tokens_left),
            spend=lambda tokens, usd: ctx.spend(tokens=tokens, usd=usd),
        )
    result = env.analyzer.analyze(question, inputs, signature, allowance=allowance)
    if ctx is not None and not result.charged and (result.tokens or result.cost_usd):
        ctx.spend(tokens=result.tokens, usd=result.cost_usd)
    answer = result.answer if isinstance(result.answer, str) else _short_json(result.answer)
    finding = f"{question} -> {answer}"
    fid = _ws(
        env,
        lambda ws: ws.add_finding(
            finding, trace_id=result.trace_id, source=",".join(paths or ["text"])
        ),
    ).get("id")
    return {
        "finding": fid,
        "answer": result.answer,
        "trace_id": result.trace_id,
        "status": result.status,
    }


@tool(effect=False, idempotent=True, harness_name="finish")
def finish(env: ToolEnv, result: str) -> dict[str, Any]:
    """Finish the task with its final result (a report for the person who asked)."""
    _ws(env, lambda ws: ws.set_status("done"))
    return {"finished": True, "result": result}


def _short_json(value: Any) -> str:
    import json

    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 2000 else text[:2000] + "..."


WORKING_SET_TOOLS: tuple[Tool, ...] = (
    set_goal,
    set_goal_status,
    add_constraint,
    record_decision,
    track_file,
    add_blocker,
    resolve_blocker,
    record_progress,
    set_next_step,
)
CONTEXT_TOOLS: tuple[Tool, ...] = (context_prune, context_recall)
FILE_TOOLS: tuple[Tool, ...] = (list_files, read_file, search_files, write_file, patch_file)
ANALYZE_TOOLS: tuple[Tool, ...] = (analyze,)
FINISH_TOOL: Tool = finish
