"""Optional model-driven extraction: a model reads a conversation and the related memories and
proposes ADD / UPDATE / DELETE / NOOP operations, which are checked and applied.

This is the only place memory calls a model, and only when asked. The checks are deterministic:
an ADD that repeats a stored item (same hash, same normalised text, or a near-duplicate) becomes
a NOOP; UPDATE and DELETE may only name items the model was shown; DELETE tombstones (never
purges); an UPDATE supersedes, so the old item stays in history.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from holdfast.errors import HoldfastError
from holdfast.lm.types import LM, Message
from holdfast.memory.items import Kind, Trust
from holdfast.memory.store import MemoryStore

SYSTEM_PROMPT = """You maintain a long-term memory. Read the conversation and the existing memories.
Propose operations that keep memory correct and non-redundant:
- ADD a new self-contained fact the conversation states (one statement each);
- UPDATE an existing memory (by id) whose content the conversation corrects, with the new text;
- DELETE an existing memory (by id) the conversation shows is wrong or withdrawn;
- NOOP for an existing memory that is still right (or when there is nothing to do).
Reply with JSON only: {"operations": [{"op": "ADD", "text": "...", "kind": "fact",
"entities": ["..."]}, {"op": "UPDATE", "id": "...", "text": "..."}, {"op": "DELETE", "id": "..."},
{"op": "NOOP", "id": "..."}]}"""

OPS = ("ADD", "UPDATE", "DELETE", "NOOP")


@dataclass
class AppliedOp:
    """One proposed operation and what became of it."""

    op: str
    id: str | None
    text: str | None
    outcome: str

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.op, "id": self.id, "text": self.text, "outcome": self.outcome}


@dataclass
class ExtractionResult:
    """The operations applied, those rejected, and the exact messages sent to the model."""

    applied: list[AppliedOp] = field(default_factory=list)
    rejected: list[AppliedOp] = field(default_factory=list)
    prompt: list[Message] = field(default_factory=list)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "applied": [a.to_dict() for a in self.applied],
            "rejected": [a.to_dict() for a in self.rejected],
            "error": self.error,
        }


def _conversation_text(conversation: str | list[Message]) -> str:
    if isinstance(conversation, str):
        return conversation
    lines = []
    for m in conversation:
        content = m.get("content")
        if isinstance(content, str) and content.strip():
            lines.append(f"{m.get('role', 'user')}: {content}")
    return "\n".join(lines)


def build_prompt(conversation: str, related: list[dict[str, Any]]) -> list[Message]:
    memories = "\n".join(f"- [{r['id']}] {r['text']}" for r in related) or "(none)"
    user = f"Existing memories:\n{memories}\n\nConversation:\n{conversation}"
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def parse_operations(text: str) -> list[dict[str, Any]]:
    """The ``operations`` list from a model reply (a JSON object, possibly inside a code fence)."""
    fence = re.search(r"```(?:json)?\s*(\{.*?\})\s*```", text, re.S)
    raw = fence.group(1) if fence else text[text.find("{") : text.rfind("}") + 1]
    data = json.loads(raw)
    ops = data.get("operations") if isinstance(data, dict) else None
    if not isinstance(ops, list):
        raise ValueError("the reply has no 'operations' list")
    return [op for op in ops if isinstance(op, dict)]


def extract(
    store: MemoryStore,
    lm: LM,
    conversation: str | list[Message],
    *,
    namespace: str = "default",
    trust: Trust = Trust.AGENT,
    source: dict[str, Any] | None = None,
    related_limit: int = 10,
) -> ExtractionResult:
    """Ask ``lm`` for memory operations about ``conversation`` and apply the valid ones."""
    text = _conversation_text(conversation)
    related = [
        {"id": h.item.id, "text": h.item.text}
        for h in store.search(
            text[-2000:], namespace=namespace, limit=related_limit, parse_time_range=False
        )
    ]
    shown = {r["id"] for r in related}
    result = ExtractionResult(prompt=build_prompt(text, related))
    try:
        reply = lm.complete(result.prompt, temperature=0.0, response_format={"type": "json_object"})
        ops = parse_operations(reply.text)
    except (ValueError, HoldfastError) as exc:
        result.error = f"extraction failed, nothing applied: {exc}"
        return result
    for raw in ops:
        op = str(raw.get("op", "")).upper()
        item_id = raw.get("id")
        body = raw.get("text")
        rec = AppliedOp(op, item_id, body, "")
        if op not in OPS:
            rec.outcome = f"unknown op {op!r}"
            result.rejected.append(rec)
            continue
        if op in ("UPDATE", "DELETE", "NOOP") and item_id is not None and item_id not in shown:
            rec.outcome = "id was not among the memories shown"
            result.rejected.append(rec)
            continue
        try:
            if op == "ADD":
                if not isinstance(body, str) or not body.strip():
                    raise ValueError("ADD needs text")
                kind = raw.get("kind") if raw.get("kind") in [k.value for k in Kind] else "fact"
                res = store.add(
                    body, namespace=namespace, kind=kind, entities=raw.get("entities") or (),
                    trust=trust, source=source,
                )  # fmt: skip
                rec.id = res.item.id
                rec.outcome = (
                    "added" if res.stored else f"noop ({res.status} of {res.duplicate_of})"
                )
            elif op == "UPDATE":
                if not item_id or not isinstance(body, str) or not body.strip():
                    raise ValueError("UPDATE needs id and text")
                new = store.supersede(
                    item_id, body, namespace=namespace, trust=trust, source=source
                )
                rec.outcome = f"superseded by {new.item.id}"
            elif op == "DELETE":
                if not item_id:
                    raise ValueError("DELETE needs an id")
                store.delete(item_id, namespace=namespace)
                rec.outcome = "tombstoned"
            else:
                rec.outcome = "noop"
        except (ValueError, HoldfastError) as exc:
            rec.outcome = str(exc)
            result.rejected.append(rec)
            continue
        result.applied.append(rec)
    return result
