"""The scripted long task of the forced-roll-over proof, shared by the in-process test and the
worker subprocess of the SIGKILL variant.

The scripted model is a pure function of the request it receives: it reads the turn number from
the working-set header Holdfast puts at the end of every prompt, so a resumed worker that asks for
the same turn again gets the same reply.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from holdfast.lm.types import Completion, ToolCall

TURNS = 205
CONSTRAINT = "CONSTRAINT-ALPHA: never call the payments API from a migration script"
DECISION = "DECISION-BETA: port every module with the batch ledger adapter"
HEADER = re.compile(r"Working set of (vsession-[0-9a-f]+) at turn (\d+), session (\d+)")
SETTINGS: dict[str, Any] = {
    "context_window": 8000,
    "keep_last_turns": 2,
    "max_turns": 400,
}


def make_workspace(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for k in range(20):
        lines = [f"def function_{k}_{i}(ledger):  # module {k} line {i}" for i in range(40)]
        (root / f"module_{k:02d}.py").write_text("\n".join(lines) + "\n")
    return root


def header_of(body: dict[str, Any]) -> tuple[str, int, int]:
    """(virtual id, turn, continuation) read from the last message of a request."""
    found = HEADER.search(str(body["messages"][-1]["content"]))
    assert found is not None, "every prompt ends with the working set"
    return found.group(1), int(found.group(2)), int(found.group(3))


def _call(turn: int, i: int, name: str, args: str) -> ToolCall:
    return ToolCall(id=f"call_{turn}_{i}", name=name, arguments=args)


def reply_for(body: dict[str, Any]) -> Completion:
    """The scripted agent's move at the turn this request is for."""
    import json

    _, turn, _ = header_of(body)
    calls: list[tuple[str, dict[str, Any]]]
    if turn == 1:
        calls = [("set_goal", {"goal": "Port the 20 modules", "criteria": ["all ported"]})]
    elif turn == 3:
        calls = [
            ("add_constraint", {"text": CONSTRAINT}),
            ("record_decision", {"text": DECISION, "rationale": "fewer round trips"}),
        ]
    elif turn >= TURNS:
        calls = [("finish", {"result": f"ported 20 modules in {turn} turns"})]
    elif turn % 25 == 0:
        calls = [
            ("record_decision", {"text": f"checkpoint decision at turn {turn}", "rationale": "r"}),
            ("record_progress", {"text": f"milestone at turn {turn}"}),
        ]
    elif turn % 2 == 0:
        calls = [("read_file", {"path": f"module_{turn % 20:02d}.py"})]
    else:
        calls = [("record_progress", {"text": f"ported part {turn} of module {turn % 20}"})]
    return Completion(
        text=f"turn {turn}",
        tool_calls=tuple(_call(turn, i, n, json.dumps(a)) for i, (n, a) in enumerate(calls)),
    )
