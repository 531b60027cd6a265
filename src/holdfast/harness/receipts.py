"""Tamper-evident receipts: an append-only, hash-chained, signed log per task.

Each receipt's body is canonical JSON (sorted keys, no spaces, UTF-8) holding the task id, its
sequence number, the time, the kind of event, the step, the actor, a payload, the task's status
after the event and the hash of the previous receipt; its hash is the SHA-256 of that body. The
chain head (last sequence number, hash and a signature over both) is checkpointed on the task
row. With a signing key (see :mod:`holdfast.harness.signing`) every receipt hash and every head
is signed, so rewriting any of it needs the key. :mod:`holdfast.harness.verify` checks a chain,
the task row and its steps against each other, and against anchors exported outside the database.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from typing import Any

from holdfast.harness.rows import Draft, SealedReceipt
from holdfast.harness.signing import (
    Ed25519Signer,
    HMACSigner,
    Signer,
    configured_signer,
    load_signer,
)

__all__ = [
    "GENESIS",
    "Ed25519Signer",
    "HMACSigner",
    "ReceiptSealer",
    "Signer",
    "canonical_json",
    "configured_signer",
    "head_digest",
    "load_signer",
    "receipt_hash",
    "sha256_json",
]

GENESIS = ""
HEAD_TYPE = "holdfast.receipts.head/1"
_SURROGATE = re.compile("[\ud800-\udfff]")


def canonical_json(value: Any) -> str:
    """The one serialisation that is hashed: sorted keys, compact, no NaN, always UTF-8 encodable
    (a lone surrogate in a string is written as its ``\\uXXXX`` escape, as JSON allows)."""
    text = json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    if _SURROGATE.search(text):
        text = _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
    return text


def receipt_hash(body: str) -> str:
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


def sha256_json(value: Any) -> str:
    """The SHA-256 of ``value``'s canonical JSON (how results, states and specs are committed)."""
    return hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()


def head_digest(task_id: str, seq: int, head_hash: str) -> str:
    """What a head checkpoint's signature covers: a message no receipt body can equal, so a
    receipt's own signature can never be replayed as the signature of a (truncated) head."""
    return sha256_json({"type": HEAD_TYPE, "task": task_id, "seq": seq, "hash": head_hash})


class ReceiptSealer:
    """Builds chained receipts for the store (the store's ``Sealer``)."""

    def __init__(self, signer: Signer | None = None) -> None:
        self.signer = signer
        self._local = threading.local()

    def forget(self) -> None:
        """Drop this thread's record of its last sealed receipt (a new task starts on it)."""
        self._local.last = None

    def last_sealed(self, task_id: str) -> tuple[int, str] | None:
        """The sequence number and hash of the last receipt of ``task_id`` this thread sealed
        (a worker's own latest write, once the transaction that sealed it committed)."""
        last = getattr(self._local, "last", None)
        return None if last is None or last[0] != task_id else (last[1], last[2])

    @property
    def key_id(self) -> str | None:
        return None if self.signer is None else self.signer.key_id

    def seal(
        self,
        task_id: str,
        seq: int,
        prev_hash: str,
        ts: float,
        draft: Draft,
        status: str,
    ) -> SealedReceipt:
        """The receipt ``seq`` of ``task_id`` after ``prev_hash``; ``status`` is the task's
        status once the event is applied (committed in the same transaction)."""
        body = canonical_json(
            {
                "task": task_id,
                "seq": seq,
                "ts": round(ts, 6),
                "kind": draft.kind,
                "step": draft.step,
                "actor": draft.actor,
                "payload": draft.payload,
                "prev": prev_hash,
                "status": status,
            }
        )
        digest = receipt_hash(body)
        self._local.last = (task_id, seq, digest)
        if self.signer is None:
            return SealedReceipt(seq, body, digest)
        return SealedReceipt(
            seq,
            body,
            digest,
            self.signer.sign(digest),
            self.signer.key_id,
            self.signer.sign(head_digest(task_id, seq, digest)),
        )
