"""Terminal rendering of RLM traces (rich): the tree of runs, iterations and sub-calls with costs."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import TYPE_CHECKING, Any

from holdfast.display import console as safe_console
from holdfast.display import styled, text
from holdfast.rlm.store import EventRow, RLMTraceStore, RunRow

if TYPE_CHECKING:
    from rich.text import Text

SHOWN_SUB_CALLS = 5


def _cost(usage: dict[str, Any] | None) -> str:
    if not usage:
        return ""
    tokens = int(usage.get("input_tokens", 0)) + int(usage.get("output_tokens", 0))
    return f"{tokens:,} tok ${float(usage.get('cost_usd', 0.0)):.4f}"


def _first_line(value: str | None, width: int = 90) -> str:
    if not value:
        return ""
    line = value.strip().splitlines()[0] if value.strip() else ""
    return line if len(line) <= width else line[: width - 1] + "…"


def list_runs(runs: list[RunRow], console: Any = None) -> None:
    """A table of recent jobs."""
    from rich.table import Table

    console = console or safe_console()
    table = Table("trace id", "started", "status", "mode", "model", "query")
    for r in runs:
        started = dt.datetime.fromtimestamp(r.started_at).strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(
            *(text(v) for v in (r.trace_id, started, r.status, r.mode, r.model)),
            text(_first_line(r.query, 60)),
        )
    console.print(table)


def render_tree(
    store: RLMTraceStore, trace_id: str, *, full: bool = False, console: Any = None
) -> None:
    """Print the run tree: each run, its iterations (code, output) and sub-calls with costs."""
    from rich.tree import Tree

    console = console or safe_console()
    runs = store.tree(trace_id)
    children: dict[str, list[RunRow]] = defaultdict(list)
    for r in runs[1:]:
        if r.parent_id:
            children[r.parent_id].append(r)

    def run_label(r: RunRow) -> Text:
        res = r.result or {}
        budget = res.get("budget", {})
        took = f"{(r.ended_at - r.started_at):.1f} s" if r.ended_at else "running"
        return styled(
            (r.trace_id, "bold"),
            f" depth {r.depth} · {r.status} · {r.mode} · "
            f"{res.get('iterations', '?')} iterations · {took} · job so far: "
            f"root {budget.get('root_tokens', 0):,} tok, sub {budget.get('sub_tokens', 0):,} tok, "
            f"{budget.get('sub_calls', 0)} sub-calls, ${budget.get('usd', 0.0):.4f}\n",
            (_first_line(r.query, 120), "dim"),
        )

    def add_run(node: Any, r: RunRow) -> None:
        events = store.events(r.trace_id)
        subs: dict[int | None, list[EventRow]] = defaultdict(list)
        roots: dict[int | None, EventRow] = {}
        for ev in events:
            if ev.kind == "sub_call":
                subs[ev.iteration].append(ev)
            elif ev.kind == "root_call":
                roots[ev.iteration] = ev
        pending = sorted(children.get(r.trace_id, []), key=lambda c: c.started_at)
        for ev in events:
            if ev.kind != "iteration":
                continue
            d = ev.data
            root = roots.get(ev.iteration)
            root_cost = _cost((root.data.get("reply") or {}).get("usage")) if root else ""
            it = node.add(
                styled(
                    f"turn {d.get('turn')} · root {root_cost} · cell {d.get('cell_s') or 0:.3f} s",
                    (" timed out" if d.get("timed_out") else "", "red"),
                    (" submitted" if d.get("submitted") else "", "green"),
                )
            )
            code = str(d.get("code") or "")
            reply = str(((root.data.get("reply") or {}).get("text") or "") if root else "")
            if not code:
                # a reply with no code block is what the model said: show it, or say it was empty
                said = reply if full else _first_line(reply, 150)
                it.add(
                    styled(("reply without code: ", "yellow"), said if reply else "(empty reply)")
                )
            elif full:
                it.add(text(code, "cyan"))
                it.add(text(d.get("output") or "", "dim"))
            else:
                it.add(styled((_first_line(code), "cyan"), " …" if code.count("\n") else ""))
                if d.get("output"):
                    it.add(text(f"→ {_first_line(str(d.get('output')))}", "dim"))
            if d.get("note"):
                it.add(text(_first_line(str(d["note"])), "yellow"))
            calls = subs.get(ev.iteration, [])
            shown = calls if full else calls[:SHOWN_SUB_CALLS]
            for sc in shown:
                s = sc.data
                err = " " + _first_line(str(s.get("error")), 60) if s.get("error") else ""
                cached = " (cached)" if s.get("cached") else ""
                prompt = s.get("prompt_preview")
                it.add(
                    styled(
                        f"sub-call {s.get('model')} · "
                        f"{_cost((s.get('reply') or {}).get('usage'))} · "
                        f"{s.get('latency_s', 0):.2f} s{cached}",
                        (err, "red"),
                        " · ",
                        (_first_line(str(prompt)) if full else _first_line(prompt, 60), "dim"),
                    )
                )
            if len(calls) > len(shown):
                more = calls[len(shown) :]
                tok = sum(
                    int((c.data.get("reply") or {}).get("usage", {}).get("input_tokens", 0))
                    + int((c.data.get("reply") or {}).get("usage", {}).get("output_tokens", 0))
                    for c in more
                )
                usd = sum(
                    float((c.data.get("reply") or {}).get("usage", {}).get("cost_usd", 0.0))
                    for c in more
                )
                errors = sum(1 for c in more if c.data.get("error"))
                it.add(
                    text(f"… {len(more)} more sub-calls · {tok:,} tok ${usd:.4f} · {errors} failed")
                )
            while pending and pending[0].started_at <= ev.ts:
                child = pending.pop(0)
                add_run(it.add(run_label(child)), child)
        for child in pending:
            add_run(node.add(run_label(child)), child)
        end = next((e for e in events if e.kind == "run_end"), None)
        if end is not None and end.data.get("outputs") is not None:
            answer = str(end.data["outputs"])
            node.add(styled(("answer", "green"), " ", answer if full else _first_line(answer, 150)))
        elif end is not None and end.data.get("message"):
            node.add(text(end.data["message"], "yellow"))

    if not runs:
        console.print(text(f"no trace {trace_id}"))
        return
    tree = Tree(run_label(runs[0]))
    add_run(tree, runs[0])
    console.print(tree)
