"""A simulated 300-turn task run three ways: full history, rolling summary, virtual sessions.

Every turn the scripted agent calls a tool whose deterministic output is about 2,000 tokens. Fifty
items (25 constraints, 25 decisions) are planted along the way, each with a unique marker. The same
turns are replayed against three context strategies:

* full history: every message is resent every turn (no limit applied, to show the growth);
* rolling summary: when the prompt passes the threshold of the window, the history is replaced by
  a summary made by a deterministic lossy summariser (first sentence of each message, the summary
  capped at a fixed size keeping the most recent lines); the next summary summarises the summary;
* virtual sessions: Holdfast's :class:`VirtualSession` with its real SQLite store; planted items go
  into the working set through the same calls the agent's working-set tools make.

Printed: total and peak prompt tokens (Holdfast's estimate, about four characters per token, the
same counter for all three), number of roll-overs or summaries, retention of the 50 items in the
prompt of the last turn, and the session bookkeeping time per turn. Usage:
``python benchmarks/session_rollover.py [--turns 300] [--window 32000] [--json]``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from holdfast.lm.types import Message, Usage
from holdfast.session import (
    RolloverPolicy,
    SessionStore,
    VirtualSession,
    estimate_messages_tokens,
    estimate_text_tokens,
)
from holdfast.store import SQLiteDB

SYSTEM = (
    "You are a software agent working through a long migration. Use tools; respect constraints."
)
REQUEST = "Migrate the 300 modules of the legacy billing system to the new ledger API."
WORDS = [
    "ledger",
    "invoice",
    "account",
    "balance",
    "module",
    "migrate",
    "schema",
    "column",
    "index",
    "query",
    "tax",
    "rate",
    "row",
]


@dataclass(frozen=True)
class Step:
    turn: int
    kind: str  # "read" | "constraint" | "decision"
    arg: str
    output: str


def planted_text(k: int) -> tuple[str, str]:
    marker = f"PLANTED-{k:02d}-{hashlib.sha1(str(k).encode()).hexdigest()[:6]}"
    if k % 2 == 0:
        return "constraint", f"{marker}: module group {k} must keep its public function names"
    return "decision", f"{marker}: port group {k} with the batch adapter"


def tool_output(turn: int, tokens: int = 2000) -> str:
    digest = hashlib.sha256(f"turn-{turn}".encode()).digest()
    words: list[str] = []
    i = 0
    while estimate_text_tokens(" ".join(words)) < tokens:
        b = digest[i % len(digest)] ^ (i * 31 % 251)
        words.append(f"{WORDS[b % len(WORDS)]}{b}")
        i += 1
        if i % 12 == 0:
            words[-1] += "."
    return f"Contents of module_{turn:03d}.py. " + " ".join(words)


def script(turns: int) -> Iterator[Step]:
    plant_turns = {3 + k * ((turns - 10) // 50): k for k in range(50)}
    for t in range(1, turns + 1):
        if t in plant_turns:
            kind, text = planted_text(plant_turns[t])
            yield Step(t, kind, text, f"recorded {kind}")
        else:
            yield Step(t, "read", f"module_{t:03d}.py", tool_output(t))


def assistant_message(step: Step) -> Message:
    name = {"read": "read_file", "constraint": "add_constraint", "decision": "record_decision"}[
        step.kind
    ]
    args = {"path": step.arg} if step.kind == "read" else {"text": step.arg}
    if step.kind == "decision":
        args["rationale"] = "the adapter already handles batching"
    call = {
        "id": f"call_{step.turn}",
        "type": "function",
        "function": {"name": name, "arguments": json.dumps(args)},
    }
    return {
        "role": "assistant",
        "content": f"Turn {step.turn}: next I use {name}.",
        "tool_calls": [call],
    }


def markers() -> list[str]:
    return [planted_text(k)[1].split(":")[0] for k in range(50)]


@dataclass
class Result:
    name: str
    total: int = 0
    peak: int = 0
    resets: int = 0
    retention: float = 0.0
    overhead_ms: float = 0.0

    def add(self, tokens: int) -> None:
        self.total += tokens
        self.peak = max(self.peak, tokens)


def retention(prompt: list[Message]) -> float:
    text = json.dumps(prompt)
    return sum(m in text for m in markers()) / 50


def run_full(turns: int) -> Result:
    res = Result("full history")
    history: list[Message] = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": REQUEST},
    ]
    prompt = history
    for step in script(turns):
        prompt = history
        res.add(estimate_messages_tokens(prompt))
        history.append(assistant_message(step))
        history.append(
            {"role": "tool", "tool_call_id": f"call_{step.turn}", "content": step.output}
        )
    res.retention = retention(prompt)
    return res


def summarise(lines: list[str], budget_tokens: int) -> str:
    """Deterministic and lossy: keep the most recent first sentences that fit the budget."""
    kept: list[str] = []
    used = 0
    for line in reversed(lines):
        cost = estimate_text_tokens(line) + 1
        if used + cost > budget_tokens:
            break
        kept.append(line)
        used += cost
    return "\n".join(reversed(kept))


def first_sentence(message: Message) -> str:
    text = message.get("content") or ""
    for call in message.get("tool_calls") or ():
        text += " " + call["function"]["arguments"]
    return text.split(". ")[0][:160]


def run_summary(turns: int, window: int, threshold: float, summary_tokens: int) -> Result:
    res = Result("rolling summary")
    base: list[Message] = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": REQUEST},
    ]
    summary_lines: list[str] = []
    recent: list[Message] = []
    prompt: list[Message] = []
    for step in script(turns):
        prompt = (
            base
            + (
                [{"role": "user", "content": "Summary so far:\n" + "\n".join(summary_lines)}]
                if summary_lines
                else []
            )
            + recent
        )
        if estimate_messages_tokens(prompt) > window * threshold:
            summary = summarise(summary_lines + [first_sentence(m) for m in recent], summary_tokens)
            summary_lines = summary.split("\n")
            recent = []
            res.resets += 1
            prompt = [*base, {"role": "user", "content": "Summary so far:\n" + summary}]
        res.add(estimate_messages_tokens(prompt))
        recent.append(assistant_message(step))
        recent.append({"role": "tool", "tool_call_id": f"call_{step.turn}", "content": step.output})
    res.retention = retention(prompt)
    return res


def run_virtual(turns: int, window: int, threshold: float, home: Path) -> Result:
    res = Result("virtual sessions")
    store = SessionStore(SQLiteDB(home / "bench.db"))
    vs = VirtualSession.create(
        store,
        request=REQUEST,
        system_prompt=SYSTEM,
        policy=RolloverPolicy(context_window=window, threshold=threshold, keep_last_turns=3),
        state_dir=home / "state",
    )
    vs.working_set.set_goal(REQUEST, criteria=["every module ported", "tests green"])
    spent = 0.0
    prompt: list[Message] = []
    for step in script(turns):
        started = time.perf_counter()
        plan = vs.begin_turn()
        spent += time.perf_counter() - started
        prompt = plan.messages
        res.add(plan.estimate)
        res.resets += plan.rolled_over
        started = time.perf_counter()
        vs.record_assistant(
            assistant_message(step), estimate=plan.estimate, usage=Usage(input_tokens=plan.estimate)
        )
        if step.kind == "constraint":
            vs.working_set.add_constraint(step.arg)
        elif step.kind == "decision":
            vs.working_set.record_decision(step.arg, "the adapter already handles batching")
        else:
            vs.working_set.record_progress(f"read {step.arg}")
            vs.working_set.track_file(step.arg, "read")
        vs.record_tool_result(f"call_{step.turn}", "tool", step.output)
        spent += time.perf_counter() - started
    res.retention = retention(prompt)
    res.overhead_ms = spent / turns * 1000
    store.db.close()
    return res


def run_agent(turns: int, window: int, home: Path) -> dict[str, Any]:
    """The agent loop end to end: a scripted model behind a local OpenAI-compatible server."""
    import os
    import re

    os.environ["HOLDFAST_HOME"] = str(home)
    from holdfast.agent import DEFAULT_POLICY, agent_kind
    from holdfast.harness import Harness
    from holdfast.lm import get_lm
    from holdfast.lm.types import Completion, ToolCall
    from holdfast.testing import FakeOpenAIServer

    header = re.compile(r"at turn (\d+), session (\d+)")
    ws = home / "ws"
    ws.mkdir()
    for k in range(20):
        lines = [f"def function_{k}_{i}(ledger):  # module {k} line {i}" for i in range(40)]
        (ws / f"module_{k:02d}.py").write_text("\n".join(lines) + "\n")

    def reply(body: dict[str, Any]) -> Completion:
        found = header.search(str(body["messages"][-1]["content"]))
        t = int(found.group(1)) if found else 1
        if t >= turns:
            name, args = "finish", {"result": "done"}
        elif t % 2:
            name, args = "record_progress", {"text": f"step {t}"}
        else:
            name, args = "read_file", {"path": f"module_{t % 20:02d}.py"}
        return Completion(text="", tool_calls=(ToolCall(f"c{t}", name, json.dumps(args)),))

    with FakeOpenAIServer(reply) as server:
        lm = get_lm("openai:bench", base_url=server.base_url, api_key="bench")
        h = Harness.open(home / "holdfast.db")
        h.registry.register(
            agent_kind(lm_factory=lambda s: lm, memory_factory=None, analyzer_factory=None)
        )
        task = h.submit(
            {
                "kind": "agent",
                "goal": "Port the modules",
                "workspace": str(ws),
                "input": {
                    "model": "openai:bench",
                    "context_window": window,
                    "max_turns": turns + 5,
                },
                "policy": DEFAULT_POLICY,
            }
        )
        started = time.perf_counter()
        h.run_until_idle()
        wall = time.perf_counter() - started
        row = h.get(task.id)
        conts = [
            int(m.group(2))
            for b in server.requests
            if (m := header.search(str(b["messages"][-1]["content"])))
        ]
        receipts = len(h.receipts(task.id))
        h.close()
    return {
        "status": row.status,
        "turns": len(server.requests),
        "rollovers": conts[-1],
        "receipts": receipts,
        "wall_s": round(wall, 2),
        "ms_per_turn": round(wall / max(1, len(server.requests)) * 1000, 1),
    }


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--turns", type=int, default=300)
    ap.add_argument("--window", type=int, default=32_000)
    ap.add_argument("--threshold", type=float, default=0.7)
    ap.add_argument("--summary-tokens", type=int, default=1500)
    ap.add_argument("--json", action="store_true")
    ap.add_argument(
        "--agent",
        action="store_true",
        help="also time the agent loop end to end (205 turns, 8,000-token window, local server)",
    )
    args = ap.parse_args(argv)
    if args.agent:
        with tempfile.TemporaryDirectory() as tmp:
            figures = run_agent(205, 8000, Path(tmp))
        print("agent loop:", json.dumps(figures))
    with tempfile.TemporaryDirectory() as tmp:
        results = [
            run_full(args.turns),
            run_summary(args.turns, args.window, args.threshold, args.summary_tokens),
            run_virtual(args.turns, args.window, args.threshold, Path(tmp)),
        ]
    full_total = results[0].total
    if args.json:
        print(json.dumps([r.__dict__ for r in results], indent=2))
        return 0
    print(
        f"{args.turns} turns, ~2,000-token tool outputs, 50 planted items, window {args.window}, threshold {args.threshold}"
    )
    print(
        f"{'strategy':18} {'total prompt tok':>17} {'vs full':>8} {'peak/turn':>10} {'resets':>7} {'retention':>10} {'ms/turn':>8}"
    )
    for r in results:
        ratio = f"{full_total / r.total:.1f}x" if r.total else "-"
        ms = f"{r.overhead_ms:.2f}" if r.overhead_ms else "-"
        print(
            f"{r.name:18} {r.total:>17,} {ratio:>8} {r.peak:>10,} {r.resets:>7} {r.retention:>9.0%} {ms:>8}"
        )
    virtual = results[2]
    ok = (
        virtual.retention == 1.0
        and full_total >= 10 * virtual.total
        and virtual.peak <= args.window
    )
    print(
        "targets (peak bounded, total >= 10x lower than full history, retention 100 %):",
        "met" if ok else "NOT met",
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
