"""Rendering the working set into a bounded prompt block, with nothing dropped silently.

The block has a token budget. The *core* of the working set (goal, status, completion criteria,
constraints, live decisions, open blockers, next step) always goes in whole: if it does not fit,
:class:`ContextWindowTooSmall` names the budget and the size needed, because a prompt without its
constraints is exactly the silent loss this layer exists to prevent. The rest (progress, tracked
files, findings, resolved blockers, superseded decisions) goes in newest first while it fits; what
does not fit is written to an overflow file and the block ends with a pointer naming the file and
every id that lives there, each readable again with ``context_recall(id)``.

Rendering is a pure function of the working set and the budget, so a resumed worker rebuilds the
same bytes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from holdfast.errors import UserError
from holdfast.session.tokens import estimate_text_tokens
from holdfast.session.working_set import WorkingSet


class ContextWindowTooSmall(UserError):
    """The model's context window cannot hold the working set's core (or the seed of a session)."""

    code = "context_window_too_small"


@dataclass(frozen=True)
class RenderedWorkingSet:
    """A rendered block: its text, token estimate, and what went to the overflow file."""

    text: str
    tokens: int
    overflow_ids: tuple[str, ...]
    overflow_text: str


def _optional_lines(ws: WorkingSet) -> list[tuple[str, str, str]]:
    """(section, id, line) for every optional item, in the order they are given room."""
    out: list[tuple[str, str, str]] = []
    for p in reversed(list(ws.progress.values())):
        out.append(("Progress", p.id, f"- [{p.id}] {p.text}"))
    files = sorted(ws.files.values(), key=lambda f: f.v, reverse=True)
    for f in files:
        note = f" ({f.note})" if f.note else ""
        out.append(("Tracked files", f"file:{f.path}", f"- {f.path} [{f.action}]{note}"))
    for k in reversed(list(ws.findings.values())):
        cite = "".join(
            [
                f"; trace {k.trace_id}" if k.trace_id else "",
                f"; source {k.source}" if k.source else "",
            ]
        )
        out.append(
            ("Findings", k.id, f"- [{k.id}] {k.text}{' (' + cite[2:] + ')' if cite else ''}")
        )
    for b in reversed([b for b in ws.blockers.values() if b.resolved]):
        out.append(("Resolved blockers", b.id, f"- [{b.id}] {b.text} -> {b.resolution}"))
    for d in reversed([d for d in ws.decisions.values() if not d.live]):
        out.append(
            ("Superseded decisions", d.id, f"- [{d.id}] {d.text} (superseded by {d.superseded_by})")
        )
    return out


_SECTION_ORDER = (
    "Progress",
    "Tracked files",
    "Findings",
    "Resolved blockers",
    "Superseded decisions",
)


def core_lines(ws: WorkingSet, header: str) -> list[str]:
    """The part of the block that is never moved out: goal, constraints, live decisions, blockers."""
    lines = [header, f"Goal [{ws.status}]: {ws.goal or '(not set)'}"]
    if ws.criteria:
        lines.append("Completion criteria:")
        lines.extend(f"- {c}" for c in ws.criteria)
    if ws.constraints:
        lines.append("Constraints (always hold):")
        lines.extend(f"- [{c.id}] {c.text}" for c in ws.constraints.values())
    live = ws.live_decisions()
    if live:
        lines.append("Decisions in force:")
        for d in live:
            sup = f" (supersedes {', '.join(d.supersedes)})" if d.supersedes else ""
            lines.append(f"- [{d.id}] {d.text}; why: {d.rationale}{sup}")
    blockers = ws.open_blockers()
    if blockers:
        lines.append("Open blockers:")
        lines.extend(f"- [{b.id}] {b.text}" for b in blockers)
    if ws.next_step:
        lines.append(f"Next step: {ws.next_step}")
    return lines


def render_working_set(
    ws: WorkingSet,
    budget_tokens: int,
    *,
    header: str = "## Working set",
    overflow_path: Path | None = None,
) -> RenderedWorkingSet:
    """Render ``ws`` within ``budget_tokens``; see the module docstring for what goes where."""
    core = "\n".join(core_lines(ws, f"{header} (version {ws.version})"))
    core_tokens = estimate_text_tokens(core)
    if core_tokens > budget_tokens:
        raise ContextWindowTooSmall(
            f"the working set's goal, constraints, decisions and blockers need about {core_tokens} "
            f"tokens but its budget is {budget_tokens} tokens; use a model with a larger context "
            "window or raise RolloverPolicy.working_set_share",
            budget_tokens=budget_tokens,
            needed_tokens=core_tokens,
        )
    optional = _optional_lines(ws)

    def size(keep: int) -> int:
        return estimate_text_tokens(
            _assemble(core, optional[:keep], optional[keep:], overflow_path)
        )

    # the largest number of optional items that fits (size grows with it: a shown line is
    # always longer than its id in the overflow pointer)
    lo, hi = 0, len(optional)
    if size(hi) > budget_tokens:
        hi -= 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if size(mid) <= budget_tokens:
                lo = mid
            else:
                hi = mid - 1
    else:
        lo = hi
    keep = lo
    shown, moved = optional[:keep], optional[keep:]
    text = _assemble(core, shown, moved, overflow_path)
    tokens = estimate_text_tokens(text)
    if tokens > budget_tokens:
        raise ContextWindowTooSmall(
            f"the working set needs about {tokens} tokens with every optional item moved to the "
            f"overflow file, but its budget is {budget_tokens} tokens",
            budget_tokens=budget_tokens,
            needed_tokens=tokens,
        )
    overflow_text = "\n".join(line for _, _, line in moved)
    return RenderedWorkingSet(
        text=text,
        tokens=tokens,
        overflow_ids=tuple(item_id for _, item_id, _ in moved),
        overflow_text=overflow_text,
    )


def _assemble(
    core: str,
    shown: Sequence[tuple[str, str, str]],
    moved: Sequence[tuple[str, str, str]],
    overflow_path: Path | None,
) -> str:
    parts = [core]
    for section in _SECTION_ORDER:
        lines = [line for sec, _, line in shown if sec == section]
        if lines:
            if section == "Progress":
                lines.reverse()
            parts.append(f"{section}:\n" + "\n".join(lines))
    if moved:
        ids = ", ".join(_compress_ids([item_id for _, item_id, _ in moved]))
        where = f" in {overflow_path}" if overflow_path else ""
        parts.append(
            f"Overflow: {len(moved)} older items are not shown here; they are kept{where} "
            f"(ids: {ids}); context_recall(id) reads one back."
        )
    return "\n".join(parts)


def _compress_ids(ids: list[str]) -> list[str]:
    """``p1, p2, p3, p9`` -> ``p1-p3, p9``: keeps the pointer short for long runs of ids."""
    out: list[str] = []
    run: list[tuple[str, int]] = []

    def flush() -> None:
        if not run:
            return
        if len(run) > 2:
            out.append(f"{run[0][0]}{run[0][1]}-{run[-1][0]}{run[-1][1]}")
        else:
            out.extend(f"{p}{n}" for p, n in run)
        run.clear()

    for item_id in sorted(ids, key=_id_key):
        prefix, num = _split_id(item_id)
        if num is not None and run and run[-1][0] == prefix and run[-1][1] == num - 1:
            run.append((prefix, num))
            continue
        flush()
        if num is None:
            out.append(item_id)
        else:
            run.append((prefix, num))
    flush()
    return out


def _split_id(item_id: str) -> tuple[str, int | None]:
    prefix = item_id.rstrip("0123456789")
    digits = item_id[len(prefix) :]
    if prefix and digits and ":" not in item_id:
        return prefix, int(digits)
    return item_id, None


def _id_key(item_id: str) -> tuple[str, int]:
    prefix, num = _split_id(item_id)
    return (prefix, -1 if num is None else num)


def write_overflow(path: Path, rendered: RenderedWorkingSet, vsession_id: str) -> bool:
    """Write the overflow file atomically when its content changed; True when written."""
    body = (
        f"# Working-set overflow for {vsession_id}\n\n"
        "Items of the working set that did not fit the prompt budget. Nothing here was deleted.\n\n"
        f"{rendered.overflow_text}\n"
    )
    try:
        if path.exists() and path.read_text(encoding="utf-8") == body:
            return False
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(body, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        raise UserError(f"cannot write the working-set overflow file {path}: {exc}") from exc
    return True
