"""What a fresh physical session starts from, besides the working set: the continuation note,
cited recall from knowledge memory, and the last turns of the previous session verbatim."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from holdfast.session.tokens import estimate_text_tokens

Entry = tuple[dict[str, Any], str | None]


@dataclass(frozen=True)
class RecallHit:
    """A piece of knowledge memory recalled into a fresh session, with its citation."""

    text: str
    citation: str


def recall_text(hits: Sequence[RecallHit], budget_tokens: int) -> str:
    """The recall block within its budget; hits left out are counted, not dropped silently."""
    lines: list[str] = []
    used = 0
    for hit in hits:
        line = f"- {hit.text} (source: {hit.citation})"
        cost = estimate_text_tokens(line)
        if used + cost > budget_tokens:
            lines.append(f"- ... {len(hits) - len(lines)} more hits not shown (recall budget)")
            break
        lines.append(line)
        used += cost
    if not lines:
        return ""
    return "\nRecalled from knowledge memory (cite the source when you rely on one):\n" + "\n".join(
        lines
    )


def pruned_text(rid: str, note: str) -> str:
    """What stands in the prompt for a pruned tool result."""
    return f'[{rid} pruned] {note} (full text: context_recall("{rid}"))'


def turn_groups(entries: list[Entry]) -> list[list[Entry]]:
    """Split a session's entries into turns (an assistant message and what follows it)."""
    groups: list[list[Entry]] = []
    for entry in entries:
        if entry[0].get("role") == "assistant":
            groups.append([entry])
        elif groups:
            groups[-1].append(entry)
    return groups


def continuation_note(
    vsession_id: str,
    continuation: int,
    after_turn: int,
    reason: str,
    request: str,
    keep: int,
    omitted: int,
) -> str:
    """The first message of a continued session: where it is, why, and what follows."""
    lines = [
        f"This task continues in a fresh session: {vsession_id}, continuation {continuation}, "
        f"after turn {after_turn}. The previous session ended: {reason}.",
        "The original request was:",
        request,
        "The working set at the end of this prompt is the authoritative state of the task: goal, "
        "constraints, decisions in force, blockers, progress and next step.",
    ]
    if keep:
        lines.append(f"The last {keep} turns of the previous session follow verbatim.")
    if omitted:
        lines.append(
            f"{omitted} earlier turns of the previous session are not repeated; their tool results "
            "stay readable with context_recall(id)."
        )
    return "\n".join(lines)
