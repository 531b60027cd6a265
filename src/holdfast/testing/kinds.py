"""Task kinds for tests, fault tests and benchmarks: ``noop``, ``scripted`` and ``fail``.

They are not in any worker's default registry; register them explicitly
(``registry.register(SCRIPTED)``, ``Harness.open(registry=test_registry())``) or load them by name
(``holdfast worker --load holdfast.testing.kinds:SCRIPTED``).

A ``scripted`` task runs a fixed list of steps, each a tool call through ``ctx.step``::

    {"kind": "scripted",
     "input": {"ledger": "effects.db", "step_sleep": 0.01,
               "steps": [{"tool": "counter.add", "args": {"counter": "orders", "amount": 1}},
                         {"tool": "file.write", "args": {"path": "out/a.txt", "text": "hi"}},
                         {"tool": "wait", "args": {"seconds": 0.5}}]},
     "policy": {"rules": [{"tool": "*", "action": "allow"}]}}

``counter.add`` bumps a counter in an :class:`~holdfast.testing.effects.EffectLedger`
once per idempotency key; ``counter.add_unkeyed`` bumps it on every call (not idempotent);
``file.write`` writes a workspace file atomically; ``wait`` sleeps (observing ``stop``);
``fail`` raises. Relative paths resolve against the task's workspace.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from holdfast.agent.workspace import replace_text
from holdfast.errors import InvalidInput
from holdfast.harness.context import StepContext
from holdfast.harness.registry import Registry, TaskKind, ToolSpec
from holdfast.testing.effects import EffectLedger

SCRIPTED_TOOLS = {
    "counter.add": ToolSpec(effect=True, idempotent=True, description="add to a counted ledger"),
    "counter.add_unkeyed": ToolSpec(effect=True, idempotent=False, description="add, not keyed"),
    "file.write": ToolSpec(effect=True, idempotent=True, description="write a workspace file"),
    "wait": ToolSpec(effect=False, description="sleep, waking on stop"),
    "fail": ToolSpec(effect=False, description="raise an error (for tests)"),
}
_ARGS = {
    "counter.add": {"counter", "amount"},
    "counter.add_unkeyed": {"counter", "amount"},
    "file.write": {"path", "text"},
    "wait": {"seconds"},
    "fail": {"message"},
}


def run_noop(ctx: StepContext) -> Any:
    """Finish at once: the smallest unit of queue work."""
    return {"ok": True}


def run_fail(ctx: StepContext) -> Any:
    """Raise at once, with ``input.message``: the smallest failing task."""
    raise RuntimeError(str(ctx.input.get("message", "the fail task kind always fails")))


def validate_scripted(inp: dict[str, Any]) -> None:
    """Check a scripted task's input: a list of known tools with the arguments each one takes."""
    steps = inp.get("steps")
    if not isinstance(steps, list) or not steps:
        raise InvalidInput("a scripted task needs input.steps: a non-empty list of steps")
    extra = set(inp) - {"steps", "ledger", "step_sleep"}
    if extra:
        raise InvalidInput(f"unknown scripted input field(s): {', '.join(sorted(extra))}")
    names: set[str] = set()
    for i, st in enumerate(steps):
        where = f"input.steps[{i}]"
        if not isinstance(st, dict) or st.get("tool") not in SCRIPTED_TOOLS:
            raise InvalidInput(
                f"{where} needs a 'tool', one of {', '.join(sorted(SCRIPTED_TOOLS))}"
            )
        args = st.get("args", {})
        if not isinstance(args, dict) or set(args) - _ARGS[st["tool"]]:
            raise InvalidInput(
                f"{where} ({st['tool']}) takes the args {', '.join(sorted(_ARGS[st['tool']]))}"
            )
        name = _step_name(i, st)
        if name in names:
            raise InvalidInput(f"{where}: the step name {name!r} is used twice")
        names.add(name)
        if st["tool"].startswith("counter.") and not isinstance(inp.get("ledger"), str):
            raise InvalidInput(f"{where} uses a counter: input.ledger must name the ledger file")
    sleep = inp.get("step_sleep", 0)
    if isinstance(sleep, bool) or not isinstance(sleep, (int, float)) or sleep < 0:
        raise InvalidInput("input.step_sleep must be a number of seconds >= 0")


def _step_name(i: int, st: dict[str, Any]) -> str:
    return str(st.get("name") or f"{i + 1:03d}-{st['tool']}")


def _resolve(ctx: StepContext, path: str) -> Path:
    p = Path(path)
    if not p.is_absolute() and ctx.workspace:
        p = Path(ctx.workspace) / p
    return p


def run_scripted(ctx: StepContext) -> Any:
    """Run the steps in order, checkpointing after each; resumes after the last checkpoint."""
    inp = ctx.input
    steps: list[dict[str, Any]] = inp["steps"]
    sleep = float(inp.get("step_sleep", 0))
    state = ctx.state or {"next": 0, "results": [], "messages": []}
    ledger = EffectLedger(_resolve(ctx, inp["ledger"])) if "ledger" in inp else None
    try:
        for i in range(int(state["next"]), len(steps)):
            new = ctx.steering()
            if new:
                state = {**state, "messages": state["messages"] + new}
                ctx.checkpoint(state)
            st = steps[i]
            tool, args = st["tool"], dict(st.get("args", {}))

            def effect(key: str, tool: str = tool, args: dict[str, Any] = args) -> Any:
                if sleep:
                    ctx.cancel.sleep(sleep)
                return _apply(ctx, ledger, tool, args, key)

            result = ctx.step(_step_name(i, st), tool, args, effect)
            state = {**state, "next": i + 1, "results": [*state["results"], result]}
            ctx.checkpoint(state)
    finally:
        if ledger is not None:
            ledger.close()
    return {"steps": len(steps), "results": state["results"], "messages": state["messages"]}


def _apply(
    ctx: StepContext, ledger: EffectLedger | None, tool: str, args: dict[str, Any], key: str
) -> Any:
    if tool == "counter.add":
        assert ledger is not None
        return ledger.add(str(args["counter"]), int(args.get("amount", 1)), key)
    if tool == "counter.add_unkeyed":
        assert ledger is not None
        return ledger.add_unkeyed(str(args["counter"]), int(args.get("amount", 1)))
    if tool == "file.write":
        target = _resolve(ctx, str(args["path"]))
        replace_text(target, str(args.get("text", "")))
        return {"path": str(args["path"]), "bytes": len(str(args.get("text", "")).encode())}
    if tool == "wait":
        ctx.cancel.sleep(float(args.get("seconds", 0)))
        return {"waited": float(args.get("seconds", 0))}
    raise RuntimeError(str(args.get("message", "scripted failure")))


NOOP = TaskKind("noop", run_noop, description="does nothing; for queue benchmarks")
SCRIPTED = TaskKind(
    "scripted",
    run_scripted,
    tools=SCRIPTED_TOOLS,
    description="a fixed list of tool steps with counted side effects",
    validate=validate_scripted,
)
FAIL = TaskKind("fail", run_fail, description="raises input.message; for failure-path tests")
KINDS = (NOOP, SCRIPTED, FAIL)


def kinds_registry(*extra: TaskKind) -> Registry:
    """A registry of the test kinds (and ``extra``), without the installed plug-ins."""
    reg = Registry()
    for kind in (*KINDS, *extra):
        reg.register(kind)
    return reg
