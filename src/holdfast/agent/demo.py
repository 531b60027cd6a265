"""The offline end-to-end demo: one long task through every part of Holdfast.

In a temporary workspace holding a few megabytes of payment logs, an agent task (a harness task of
kind ``agent``) sets its goal, constraints and decisions, recalls what knowledge memory knows,
dispatches an RLM job over the whole log corpus, stores what it learned, reads source files until
its small context window forces several roll-overs, asks a person before writing its report (the
demo grants the approval through the harness API), and finishes. Then it prints how to inspect
the receipts, the RLM trace, the working set and the memory.

Without a model the agent and the RLM root are *scripted* fakes (labelled as such); with
``model="provider:model"`` the same task runs on a real model.
"""

from __future__ import annotations

import json
import random
import re
import tempfile
from pathlib import Path
from typing import Any

from holdfast.lm.types import LM, Completion, Message, ToolCall

GOAL = (
    "Find the main causes of failed payments in logs/ (several megabytes: use analyze, do not "
    "read them whole), check how src/ handles them, store what you learn in knowledge memory, "
    "and write REPORT.md with the causes and a recommendation. Never modify anything in logs/."
)
NAMESPACE = "demo"
CODES = [
    "CARD_DECLINED",
    "INSUFFICIENT_FUNDS",
    "GATEWAY_TIMEOUT",
    "FRAUD_SUSPECTED",
    "EXPIRED_CARD",
]
_HEADER = re.compile(r"at turn (\d+), session (\d+)")
READ_TURNS = range(7, 25)


def make_workspace(root: Path, *, files: int = 6, lines_per_file: int = 9000) -> Path:
    """A deterministic workspace: ``logs/`` (about 3 MB) and ``src/`` (payment modules)."""
    rng = random.Random(7)
    logs = root / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    weights = [40, 25, 20, 10, 5]
    for f in range(files):
        out: list[str] = []
        for i in range(lines_per_file):
            stamp = f"2026-11-{f + 10:02d}T{i // 400 % 24:02d}:{i // 7 % 60:02d}:{i % 60:02d}Z"
            if rng.random() < 0.12:
                code = rng.choices(CODES, weights)[0]
                out.append(
                    f"{stamp} ERROR payment failed code={code} order={rng.randrange(10**8)} amount={rng.randrange(1, 900)}.00"
                )
            else:
                out.append(
                    f"{stamp} INFO payment ok order={rng.randrange(10**8)} amount={rng.randrange(1, 900)}.00 latency_ms={rng.randrange(20, 900)}"
                )
        (logs / f"payments-{f + 1:02d}.log").write_text("\n".join(out) + "\n")
    src = root / "src"
    src.mkdir(exist_ok=True)
    for k in range(18):
        body = [f'"""Payment module {k}: retries, gateway calls and error mapping."""', ""]
        for j in range(30):
            body.append(
                f"def handle_{k}_{j}(order):  # retries up to {1 + (k + j) % 3} times on {CODES[(k + j) % 5]}"
            )
            body.append(f"    return gateway.charge(order, timeout_s={5 + j % 10})")
        (src / f"payments_{k:02d}.py").write_text("\n".join(body) + "\n")
    return root


def _turn(messages: list[Message]) -> int:
    found = _HEADER.search(str(messages[-1].get("content")))
    return int(found.group(1)) if found else 1


def _last_answer(messages: list[Message]) -> str:
    """The analysis answer: from the working set's finding (it survives roll-overs), else the
    latest analyze result in the transcript."""
    found = re.search(r"\[f1\] [^\n]*? -> ([^\n]*?) \(trace", str(messages[-1].get("content")))
    if found:
        return found.group(1)
    for m in reversed(messages):
        if m.get("role") == "tool" and '"answer"' in str(m.get("content")):
            body = str(m["content"]).split(" ", 1)[1]
            try:
                return str(json.loads(body).get("answer"))
            except json.JSONDecodeError:
                return body[:300]
    return "(no analysis yet)"


def scripted_agent(messages: list[Message], **_: Any) -> Completion:
    """The demo's scripted agent: a fixed plan keyed by the turn number in the working set."""
    t = _turn(messages)
    calls: list[tuple[str, dict[str, Any]]]
    if t == 1:
        calls = [
            (
                "set_goal",
                {
                    "goal": "Explain failed payments and write REPORT.md",
                    "criteria": ["causes ranked with counts", "REPORT.md written"],
                },
            )
        ]
    elif t == 2:
        calls = [
            ("add_constraint", {"text": "Never modify anything in logs/"}),
            (
                "record_decision",
                {
                    "text": "Analyze logs/ with an RLM job, not by reading files",
                    "rationale": "several megabytes do not fit the context window",
                },
            ),
        ]
    elif t == 3:
        calls = [("memory_search", {"query": "payment failures retries runbook"})]
    elif t == 4:
        calls = [("list_files", {"path": "logs"})]
    elif t == 5:
        calls = [
            (
                "analyze",
                {
                    "question": "Count failed payments by error code, most frequent first",
                    "paths": ["logs"],
                },
            )
        ]
    elif t == 6:
        calls = [
            (
                "memory_add",
                {
                    "text": f"Failed payments in the demo logs by code: {_last_answer(messages)}",
                    "kind": "observation",
                },
            )
        ]
    elif t in READ_TURNS:
        k = t - READ_TURNS.start
        calls = [("read_file", {"path": f"src/payments_{k:02d}.py"})]
        if k % 3 == 2:
            calls.append(
                (
                    "record_progress",
                    {"text": f"reviewed src/payments_{k - 2:02d}..{k:02d}.py retry handling"},
                )
            )
    elif t == READ_TURNS.stop:
        calls = [
            (
                "record_decision",
                {
                    "text": "Recommend capping retries on CARD_DECLINED at one",
                    "rationale": "declines do not succeed on retry; the code retries up to 3 times",
                },
            )
        ]
    elif t == READ_TURNS.stop + 1:
        report = (
            "# Failed payments\n\n"
            + f"Causes by count: {_last_answer(messages)}.\n\nRecommendation: stop retrying CARD_DECLINED more than once.\n"
        )
        calls = [("write_file", {"path": "REPORT.md", "content": report})]
    elif t == READ_TURNS.stop + 2:
        calls = [("record_progress", {"text": "REPORT.md written"})]
    else:
        calls = [
            (
                "finish",
                {"result": f"REPORT.md written; failed payments by code: {_last_answer(messages)}"},
            )
        ]
    return Completion(
        text=f"(scripted demo agent, turn {t})",
        tool_calls=tuple(
            ToolCall(f"call_{t}_{i}", n, json.dumps(a)) for i, (n, a) in enumerate(calls)
        ),
    )


_RLM_CODE = [
    "import collections, re\ncounts = collections.Counter()\nfor path in source:\n"
    "    counts.update(re.findall(r'payment failed code=(\\w+)', source.read(path)))\n"
    "print(len(source), 'files;', counts.most_common())",
    "SUBMIT(answer=', '.join(f'{code} {n}' for code, n in counts.most_common()))",
]


def scripted_rlm_root(messages: list[Message], **_: Any) -> str:
    """The demo's scripted RLM root model: two code cells that count error codes in the corpus."""
    step = sum(1 for m in messages if m.get("role") == "assistant")
    return f"Counting error codes.\n```python\n{_RLM_CODE[min(step, 1)]}\n```"


def run_agent_demo(
    model: str | None = None, *, console: Any = None, embedder: str = "local"
) -> dict[str, Any]:
    """Run the demo task to its end; returns a summary (task id, virtual session, roll-overs...).

    ``embedder`` is the knowledge-memory embedder (``local``: the bundled sentence-transformers
    model; ``none``: keyword recall only)."""
    from holdfast.agent.settings import AgentSettings
    from holdfast.display import console as safe_console
    from holdfast.display import styled, text
    from holdfast.harness import Harness
    from holdfast.testing import FunctionLM

    out = console or safe_console()  # markup off: the model's words are printed as data
    workdir = make_workspace(Path(tempfile.mkdtemp(prefix="holdfast-demo-")))
    size = sum(p.stat().st_size for p in (workdir / "logs").iterdir())
    if model is None:
        out.print(
            styled(
                ("model:", "bold"),
                " a SCRIPTED demo model (no real model is called; pass a model to use one)",
            )
        )
        agent_lm: LM = FunctionLM(scripted_agent, model="scripted:demo-agent")
        rlm_root: LM | str = FunctionLM(scripted_rlm_root, model="scripted:demo-rlm-root")
    else:
        from holdfast.agent.kind import default_lm

        out.print(styled(("model:", "bold"), " ", model))
        agent_lm = default_lm(AgentSettings(model=model))
        rlm_root = agent_lm
    out.print(text(f"workspace: {workdir} ({size / 1e6:.1f} MB of logs)"))
    memory_store = _memory_store(out, embedder)
    memory_store.add(
        "Runbook: payment retries are capped at 3 attempts per order.",
        namespace=NAMESPACE,
        kind="fact",
        trust="owner",
    )
    events: list[dict[str, Any]] = []

    def on_event(event: dict[str, Any]) -> None:
        events.append(event)
        if event.get("type") == "turn":
            roll = "  roll-over" if event.get("rolled_over") else ""
            out.print(
                styled(
                    f"turn {event['turn']:>3}  session {event['continuation']}  prompt "
                    f"{event['prompt_tokens']:>6,} tok  {', '.join(map(str, event['tools']))}",
                    (roll, "bold"),
                )
            )

    kind = demo_kind(agent_lm, rlm_root, memory_store, on_event)
    h = Harness.open()
    h.registry.register(kind)
    try:
        task = h.submit(demo_spec(workdir, model), by="demo")
        out.print(text(f"task {task.id} submitted"))
        h.run_until_idle()
        row = h.get(task.id)
        while row.status == "waiting_approval" and row.waiting:
            step = str(row.waiting.get("step"))
            out.print(
                styled(
                    ("approval requested", "bold"),
                    f" for step {step} ({row.waiting.get('tool')}); the demo grants it as "
                    "'demo-operator'",
                )
            )
            h.approve(task.id, step, by="demo-operator")
            h.run_until_idle()
            row = h.get(task.id)
        verified = h.verify(task.id)
    finally:
        h.close()
    result = row.result if isinstance(row.result, dict) else {}
    findings = (result.get("working_set") or {}).get("findings") or []
    trace_id = findings[0].get("trace_id") if findings else None
    rollovers = sum(1 for e in events if e.get("rolled_over"))
    out.print(styled("\n", (row.status, "bold"), f": {result.get('result', row.error)}"))
    out.print(
        text(
            f"{result.get('turns')} turns, {rollovers} roll-overs under one virtual session "
            f"{result.get('vsession')}; receipts verify: {verified.ok} ({verified.count} receipts)"
        )
    )
    if (workdir / "REPORT.md").exists():
        out.print(text((workdir / "REPORT.md").read_text()))
    out.print(text("Inspect it:"))
    out.print(text(f"  holdfast receipts verify {task.id}"))
    out.print(text(f"  holdfast task working-set {task.id}"))
    if trace_id:
        out.print(text(f"  holdfast rlm trace {trace_id}"))
    out.print(text(f"  holdfast memory search 'failed payments' --namespace {NAMESPACE}"))
    return {
        "task": task.id,
        "status": row.status,
        "vsession": result.get("vsession"),
        "turns": result.get("turns"),
        "rollovers": rollovers,
        "trace_id": trace_id,
        "receipts_ok": verified.ok,
        "workspace": str(workdir),
        "report": (workdir / "REPORT.md").exists(),
    }


def demo_kind(
    agent_lm: LM,
    rlm_root: LM | str,
    memory_store: Any,
    on_event: Any = None,
    *,
    db_path: Path | None = None,
) -> Any:
    """The ``agent`` task kind the demo runs: its model, RLM analyzer and memory namespace."""
    from holdfast.agent.analyze import RLMAnalyzer
    from holdfast.agent.kind import agent_kind
    from holdfast.agent.memory import StoreMemory
    from holdfast.config import default_db_path
    from holdfast.store import SQLiteDB

    return agent_kind(
        lm_factory=lambda s: agent_lm,
        memory_factory=lambda s, task_id, vid: StoreMemory(
            memory_store, namespace=NAMESPACE, task_id=task_id, session_id=vid
        ),
        analyzer_factory=lambda s, lm: RLMAnalyzer(
            rlm_root, db=SQLiteDB(db_path or default_db_path()), mode="rlm"
        ),
        on_event=on_event,
    )


def demo_spec(workdir: Path, model: str | None = None) -> dict[str, Any]:
    """The demo task: its goal, workspace, window and the policy that asks before REPORT.md."""
    return {
        "kind": "agent",
        "goal": GOAL,
        "workspace": str(workdir),
        "input": {
            "model": model or "scripted:demo-agent",
            "context_window": 12000 if model is None else 24000,
            "memory_namespace": NAMESPACE,
            "max_turns": 120,
        },
        "policy": {
            "rules": [
                {"tool": "file.write", "paths": ["REPORT.md"], "action": "ask"},
                {"tool": "file.write", "paths": ["logs/**"], "action": "deny"},
                {"tool": "file.patch", "paths": ["logs/**"], "action": "deny"},
                {"tool": "file.write", "paths": ["**"], "action": "allow"},
                {"tool": "file.patch", "paths": ["**"], "action": "allow"},
                {"tool": "memory.*", "action": "allow"},
            ]
        },
    }


def _memory_store(out: Any, embedder: str) -> Any:
    """Knowledge memory with the given embedder, or keyword-only if it cannot load."""
    from holdfast.display import escape_control
    from holdfast.errors import HoldfastError
    from holdfast.memory import MemoryConfig, MemoryStore

    try:
        store = MemoryStore(MemoryConfig(embedder=embedder))
        store.embedder.embed(["warm up"])
        return store
    except (HoldfastError, ImportError, OSError) as exc:
        out.print(
            escape_control(
                f"memory: the local embedding model is unavailable ({exc}); keyword recall only"
            )
        )
        return MemoryStore(MemoryConfig(embedder="none"))
