"""Tamper-evident receipts: an append-only, hash-chained, optionally signed log per task.

Each receipt's body is canonical JSON (sorted keys, no spaces, UTF-8) holding the task id, its
sequence number, the time, the kind of event, the step, the actor, a payload and the hash of the
previous receipt; its hash is the SHA-256 of that body. The chain head (last sequence number, hash
and signature) is checkpointed on the task row, so editing a body, reordering receipts or cutting
the tail off all break verification. With a signer (HMAC-SHA256 or Ed25519 via ``cryptography``)
each hash is also signed, so rewriting the whole chain needs the key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from holdfast.errors import ConfigError
from holdfast.harness.rows import Draft, ReceiptRow, SealedReceipt

GENESIS = ""


def canonical_json(value: Any) -> str:
    """The one serialisation that is hashed: sorted keys, compact, no NaN."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def receipt_hash(body: str) -> str:
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


class Signer(Protocol):
    """Signs and checks receipt hashes."""

    @property
    def key_id(self) -> str: ...

    def sign(self, digest: str) -> str: ...

    def verify(self, digest: str, sig: str) -> bool: ...


@dataclass(frozen=True)
class HMACSigner:
    """HMAC-SHA256 with a shared secret: whoever verifies can also sign."""

    secret: bytes
    key_id: str = "hmac"

    def sign(self, digest: str) -> str:
        return hmac.new(self.secret, digest.encode("ascii"), hashlib.sha256).hexdigest()

    def verify(self, digest: str, sig: str) -> bool:
        return hmac.compare_digest(self.sign(digest), sig)


class Ed25519Signer:
    """Ed25519: workers sign with the private key; auditors verify with the public key alone."""

    def __init__(self, private_key: Any = None, public_key: Any = None, key_id: str = "") -> None:
        if private_key is None and public_key is None:
            raise ConfigError("an Ed25519 signer needs a private or a public key")
        self._private = private_key
        self._public = public_key if public_key is not None else private_key.public_key()
        self.key_id = key_id or "ed25519:" + self._fingerprint()

    @classmethod
    def generate(cls) -> Ed25519Signer:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        return cls(Ed25519PrivateKey.generate())

    def _fingerprint(self) -> str:
        from cryptography.hazmat.primitives import serialization

        raw = self._public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return hashlib.sha256(raw).hexdigest()[:16]

    def sign(self, digest: str) -> str:
        if self._private is None:
            raise ConfigError("this Ed25519 key is public only: it can verify, not sign")
        return str(self._private.sign(digest.encode("ascii")).hex())

    def verify(self, digest: str, sig: str) -> bool:
        from cryptography.exceptions import InvalidSignature

        try:
            self._public.verify(bytes.fromhex(sig), digest.encode("ascii"))
        except (InvalidSignature, ValueError):
            return False
        return True

    def private_pem(self) -> bytes:
        from cryptography.hazmat.primitives import serialization

        return bytes(
            self._private.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )

    def public_pem(self) -> bytes:
        from cryptography.hazmat.primitives import serialization

        return bytes(
            self._public.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )


def load_signer(path: str | Path) -> Signer:
    """A signer from a key file: a PEM Ed25519 key (private or public), else an HMAC secret."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the receipt key {p}: {exc.strerror}") from exc
    if b"-----BEGIN" in data:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import (
            Ed25519PrivateKey,
            Ed25519PublicKey,
        )

        try:
            if b"PRIVATE KEY" in data:
                key = serialization.load_pem_private_key(data, password=None)
                if isinstance(key, Ed25519PrivateKey):
                    return Ed25519Signer(key)
            else:
                pub = serialization.load_pem_public_key(data)
                if isinstance(pub, Ed25519PublicKey):
                    return Ed25519Signer(public_key=pub)
        except ValueError as exc:
            raise ConfigError(f"the receipt key {p} is not a readable PEM key: {exc}") from exc
        raise ConfigError(f"the receipt key {p} is a PEM key but not Ed25519")
    secret = data.strip()
    if len(secret) < 16:
        raise ConfigError(f"the HMAC receipt key in {p} is shorter than 16 bytes")
    return HMACSigner(secret)


class ReceiptSealer:
    """Builds chained receipts for the store (the store's ``Sealer``)."""

    def __init__(self, signer: Signer | None = None) -> None:
        self.signer = signer

    def seal(
        self, task_id: str, seq: int, prev_hash: str, ts: float, draft: Draft
    ) -> SealedReceipt:
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
            }
        )
        digest = receipt_hash(body)
        if self.signer is None:
            return SealedReceipt(seq, body, digest)
        return SealedReceipt(seq, body, digest, self.signer.sign(digest), self.signer.key_id)


@dataclass(frozen=True)
class VerifyResult:
    """The outcome of checking a chain: ``ok``, how many receipts, and the first bad one."""

    ok: bool
    count: int
    head_hash: str
    bad_seq: int | None = None
    reason: str = ""
    signed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "count": self.count,
            "head_hash": self.head_hash,
            "bad_seq": self.bad_seq,
            "reason": self.reason,
            "signed": self.signed,
        }


def verify_chain(
    task_id: str,
    receipts: Iterable[ReceiptRow],
    *,
    head_seq: int | None = None,
    head_hash: str | None = None,
    head_sig: str | None = None,
    signer: Signer | None = None,
    require_signatures: bool = False,
) -> VerifyResult:
    """Check a task's receipts in order against each other and the checkpointed head.

    The failure names the first bad receipt (its sequence number) and why.
    """
    prev = GENESIS
    expected = 1
    signed = 0

    def bad(seq: int, why: str, count: int) -> VerifyResult:
        return VerifyResult(False, count, prev, seq, why, signed)

    for r in receipts:
        if r.seq != expected:
            why = "missing" if r.seq > expected else "out of order or duplicated"
            return bad(expected, f"receipt {expected} is {why} (found {r.seq} next)", expected - 1)
        if receipt_hash(r.body) != r.hash:
            return bad(
                r.seq, f"receipt {r.seq} was edited: its body does not match its hash", r.seq - 1
            )
        try:
            data = json.loads(r.body)
        except json.JSONDecodeError:
            return bad(r.seq, f"receipt {r.seq} is not valid JSON", r.seq - 1)
        if not isinstance(data, dict) or data.get("seq") != r.seq or data.get("task") != task_id:
            return bad(r.seq, f"receipt {r.seq} belongs to another task or position", r.seq - 1)
        if data.get("prev") != prev:
            return bad(r.seq, f"receipt {r.seq} does not chain to receipt {r.seq - 1}", r.seq - 1)
        if signer is not None and (r.sig is not None or require_signatures):
            if r.sig is None or not signer.verify(r.hash, r.sig):
                return bad(r.seq, f"receipt {r.seq} has a missing or invalid signature", r.seq - 1)
            signed += 1
        prev = r.hash
        expected += 1
    count = expected - 1
    if head_seq is not None and head_seq != count:
        what = "were cut off the end" if head_seq > count else "were added past the head"
        return VerifyResult(
            False,
            count,
            prev,
            min(head_seq, count) + 1,
            f"the checkpointed head is receipt {head_seq} but the log has {count}: receipts {what}",
            signed,
        )
    if head_hash is not None and head_hash != prev:
        return VerifyResult(
            False, count, prev, count, f"receipt {count} differs from the checkpointed head", signed
        )
    if signer is not None and head_sig is not None and not signer.verify(prev, head_sig):
        return VerifyResult(False, count, prev, count, "the head's signature is invalid", signed)
    return VerifyResult(True, count, prev, None, "", signed)
