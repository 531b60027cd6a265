"""Verifying a task: its receipt chain, the chain head, the task row and steps, and anchors.

What is checked, receipt by receipt: the sequence numbers run 1, 2, 3 ... with no gap; each body
re-hashes to its stored hash, is canonical JSON (so no two parsers can read it differently), has
exactly the receipt fields with the right types, names this task and its own position, and chains
to the previous hash; the first receipt is ``submitted``. With a key, every receipt's signature
must be present and valid. Then the checkpointed head (sequence, hash, and with a key its own
signature over a head-only message) must name the last receipt. Then the task row and steps must
say what the chain says: the final status, the stored result and error (committed in the
terminal receipt), the checkpoint state (its SHA-256 in the last ``checkpoint`` receipt), the spec
(its SHA-256 in ``submitted``), and every step's status, tool and result (a step row with no
receipt, or a receipted step with no row, is tampering: a resumed task would replay it). Every
steering command and approval decision a worker acted on must have been sent by a receipt (else
it was injected), and a task is only leased from ``queued``.
:class:`ChainFollower` lets a worker keep checking a chain as it grows.

An :class:`Anchor` is a chain head exported outside the database (``holdfast receipts export``),
signed when a key is configured; verifying against it also catches what no check inside the
database can: a chain cut back to an earlier state with the head moved to match, or a consistent
rewrite by someone with write access but no key.

Everything read from the store is treated as hostile input: a value of the wrong type, a body that
is not JSON or not UTF-8, a missing field, each is reported as the first bad receipt, never raised.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from holdfast.errors import InvalidInput, RuntimeFailure
from holdfast.harness.receipts import (
    GENESIS,
    canonical_json,
    head_digest,
    receipt_hash,
    sha256_json,
)
from holdfast.harness.rows import TASK_STATUSES, TERMINAL_STATUSES, ReceiptRow
from holdfast.harness.signing import Signer

ANCHOR_FORMAT = "holdfast.receipts.anchor/1"
_BODY_FIELDS = frozenset(
    {"task", "seq", "ts", "kind", "step", "actor", "payload", "prev", "status"}
)
_ANCHOR_FIELDS = frozenset({"format", "task", "seq", "hash", "status", "exported_at"})


@dataclass(frozen=True)
class TaskRecord:
    """A task row as the verifier reads it: JSON columns as stored text, parsed here."""

    id: str
    status: Any
    spec: Any
    result: Any
    error: Any
    checkpoint: Any
    head_seq: Any
    head_hash: Any
    head_sig: Any
    kind: Any = None
    usage: Any = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> TaskRecord:
        return cls(
            kind=row.get("kind"),
            usage=row.get("usage"),
            id=row["id"],
            status=row["status"],
            spec=row["spec"],
            result=row["result"],
            error=row["error"],
            checkpoint=row["checkpoint"],
            head_seq=row["head_seq"],
            head_hash=row["head_hash"],
            head_sig=row["head_sig"],
        )


@dataclass(frozen=True)
class StepRecord:
    """A step row as the verifier reads it."""

    name: Any
    status: Any
    tool: Any
    result: Any

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> StepRecord:
        return cls(row["name"], row["status"], row["tool"], row["result"])


@dataclass(frozen=True)
class Anchor:
    """A chain head kept outside the database: the task, its receipt count and head hash, its
    status then, and (with a key) a signature over all of them."""

    task: str
    seq: int
    hash: str
    status: str
    exported_at: float
    key_id: str | None = None
    sig: str | None = None

    def digest(self) -> str:
        return sha256_json(
            {
                "type": ANCHOR_FORMAT,
                "task": self.task,
                "seq": self.seq,
                "hash": self.hash,
                "status": self.status,
                "exported_at": self.exported_at,
            }
        )

    def signed_by(self, signer: Signer) -> Anchor:
        return Anchor(
            self.task,
            self.seq,
            self.hash,
            self.status,
            self.exported_at,
            signer.key_id,
            signer.sign(self.digest()),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": ANCHOR_FORMAT,
            "task": self.task,
            "seq": self.seq,
            "hash": self.hash,
            "status": self.status,
            "exported_at": self.exported_at,
            "key_id": self.key_id,
            "sig": self.sig,
        }

    @classmethod
    def from_dict(cls, raw: Any, where: str = "the anchor") -> Anchor:
        """Parse an exported anchor; anything malformed is an :class:`InvalidInput`."""
        if not isinstance(raw, dict) or raw.get("format") != ANCHOR_FORMAT:
            raise InvalidInput(f"{where} is not a Holdfast receipt anchor ({ANCHOR_FORMAT})")
        missing = _ANCHOR_FIELDS - set(raw)
        if missing:
            raise InvalidInput(f"{where} lacks {', '.join(sorted(missing))}")
        task, seq, digest, status, at = (
            raw["task"],
            raw["seq"],
            raw["hash"],
            raw["status"],
            raw["exported_at"],
        )
        key_id, sig = raw.get("key_id"), raw.get("sig")
        if (
            not isinstance(task, str)
            or not task
            or not _is_int(seq)
            or seq < 1
            or not isinstance(digest, str)
            or status not in TASK_STATUSES
            or not _is_number(at)
            or not (key_id is None or isinstance(key_id, str))
            or not (sig is None or isinstance(sig, str))
        ):
            raise InvalidInput(f"{where} has a field of the wrong type")
        return cls(task, seq, digest, status, float(at), key_id, sig)


def read_anchors(text: str, source: str = "the anchor file") -> list[Anchor]:
    """Anchors from a file written by ``holdfast receipts export`` (JSON lines or one object)."""
    anchors: list[Anchor] = []
    stripped = text.strip()
    if not stripped:
        raise InvalidInput(f"{source} is empty")
    lines = [stripped] if stripped.startswith("{") and "\n" not in stripped else text.splitlines()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line, parse_constant=_reject_constant)
        except (ValueError, RecursionError) as exc:
            raise InvalidInput(f"{source} line {n} is not JSON: {exc}") from exc
        anchors.append(Anchor.from_dict(raw, f"{source} line {n}"))
    return anchors


@dataclass(frozen=True)
class VerifyResult:
    """The outcome of checking a task: ``ok``, how many receipts, and the first bad one."""

    ok: bool
    count: int
    head_hash: str
    bad_seq: int | None = None
    reason: str = ""
    signed: int = 0
    key_id: str | None = None
    status: str | None = None
    anchors: int = 0
    checks: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "count": self.count,
            "head_hash": self.head_hash,
            "bad_seq": self.bad_seq,
            "reason": self.reason,
            "signed": self.signed,
            "key_id": self.key_id,
            "status": self.status,
            "anchors": self.anchors,
            "checks": list(self.checks),
        }


class _Broken(Exception):
    def __init__(self, seq: int | None, reason: str) -> None:
        super().__init__(reason)
        self.seq = seq
        self.reason = reason


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return (_is_int(v) or isinstance(v, float)) and math.isfinite(v)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


class ReceiptsBroken(RuntimeFailure):
    """A task's receipts do not verify, so a worker refuses to act on what is stored for it."""

    code = "receipts_broken"


@dataclass
class _Sent:
    """A steering command or an approval decision as its receipt recorded it."""

    kind: str
    text: Any
    seq: int
    step: Any = None
    by: Any = None
    expires: float | None = None
    used: bool = False


@dataclass
class _StepFacts:
    state: str
    seq: int
    tool: Any = None
    result_sha256: Any = None


class _Chain:
    """Consumes a task's receipts in order, keeping only what the later checks need."""

    def __init__(self, task_id: str, signer: Signer | None, anchors: Sequence[Anchor]) -> None:
        self.task_id = task_id
        self.signer = signer
        self.prev = GENESIS
        self.count = 0
        self.signed = 0
        self.status: str | None = None
        self.spec_sha256: Any = None
        self.terminal: tuple[int, dict[str, Any]] | None = None
        self.checkpoint: tuple[int, Any] | None = None
        self.steps: dict[str, _StepFacts] = {}
        self.want = {a.seq for a in anchors}
        self.seen: dict[int, str] = {}
        self.kind: Any = None
        self.usage: tuple[int, dict[str, Any]] | None = None
        # steering and decisions by the row id their receipt names (None: written before
        # receipts named it; matched by content, oldest first)
        self.steers: dict[Any, _Sent] = {}
        self.old_steers: list[_Sent] = []
        self.decisions: dict[Any, _Sent] = {}
        self.old_decisions: list[_Sent] = []

    def feed(self, r: ReceiptRow) -> None:
        expected = self.count + 1
        seq = r.seq
        if not _is_int(seq):
            raise _Broken(expected, f"receipt {expected} has no integer sequence number ({seq!r})")
        if seq != expected:
            why = "missing" if seq > expected else "out of order or duplicated"
            raise _Broken(expected, f"receipt {expected} is {why} (found {seq} next)")
        if r.task_id != self.task_id:
            raise _Broken(seq, f"receipt {seq} is stored under another task")
        body = r.body
        if not isinstance(body, str):
            raise _Broken(seq, f"receipt {seq}'s body is not text")
        try:
            digest = receipt_hash(body)
        except UnicodeError:
            raise _Broken(seq, f"receipt {seq}'s body is not valid UTF-8") from None
        if digest != r.hash:
            raise _Broken(seq, f"receipt {seq} was edited: its body does not match its hash")
        data = self._parse(seq, body)
        if data["task"] != self.task_id or data["seq"] != seq:
            raise _Broken(seq, f"receipt {seq} belongs to another task or position")
        if data["prev"] != self.prev:
            raise _Broken(seq, f"receipt {seq} does not chain to receipt {seq - 1}")
        if seq == 1 and data["kind"] != "submitted":
            raise _Broken(1, f"receipt 1 is {data['kind']!r}, not the task's submission")
        if self.signer is not None:
            sig = r.sig
            what = f"receipt {seq} ({_describe(data)})"
            if sig is None:
                raise _Broken(seq, f"{what} is not signed: it was written without the key")
            if not isinstance(sig, str) or not self.signer.verify(digest, sig):
                raise _Broken(seq, f"{what} has an invalid signature")
            self.signed += 1
        self._note(seq, data)
        if seq in self.want:
            self.seen[seq] = digest
        self.prev = digest
        self.count = seq

    def _parse(self, seq: int, body: str) -> dict[str, Any]:
        try:
            data = json.loads(body, parse_constant=_reject_constant)
        except (ValueError, RecursionError):
            raise _Broken(seq, f"receipt {seq} is not valid JSON") from None
        if not isinstance(data, dict):
            raise _Broken(seq, f"receipt {seq} is not a JSON object")
        missing = _BODY_FIELDS - set(data)
        if missing:
            raise _Broken(seq, f"receipt {seq} lacks the field(s) {', '.join(sorted(missing))}")
        extra = set(data) - _BODY_FIELDS
        if extra:
            raise _Broken(seq, f"receipt {seq} has unknown field(s) {', '.join(sorted(extra))}")
        wrong = [
            name
            for name, ok in (
                ("task", isinstance(data["task"], str)),
                ("seq", _is_int(data["seq"])),
                ("ts", _is_number(data["ts"])),
                ("kind", isinstance(data["kind"], str) and bool(data["kind"])),
                ("step", data["step"] is None or isinstance(data["step"], str)),
                ("actor", isinstance(data["actor"], str)),
                ("payload", isinstance(data["payload"], dict)),
                ("prev", isinstance(data["prev"], str)),
                ("status", data["status"] in TASK_STATUSES),
            )
            if not ok
        ]
        if wrong:
            raise _Broken(seq, f"receipt {seq} has a bad value in {', '.join(wrong)}")
        try:
            canonical = canonical_json(data) == body
        except (ValueError, TypeError):
            canonical = False
        if not canonical:
            raise _Broken(seq, f"receipt {seq} is not in canonical form")
        return data

    def _note(self, seq: int, data: dict[str, Any]) -> None:
        kind, payload, step = data["kind"], data["payload"], data["step"]
        if isinstance(payload.get("usage"), dict) and data["actor"] == "harness":
            self.usage = (seq, payload["usage"])
        was_terminal = self.status in TERMINAL_STATUSES
        if was_terminal and data["status"] != self.status:
            raise _Broken(seq, f"receipt {seq} changes the status of a task that had ended")
        if kind == "leased" and self.status != "queued":
            raise _Broken(
                seq,
                f"receipt {seq} leases the task while receipt {seq - 1} left it {self.status!r}: "
                "its status was changed without a receipt",
            )
        self.status = data["status"]
        if self.status in TERMINAL_STATUSES and not was_terminal:
            self.terminal = (seq, payload)
        if kind == "submitted":
            if seq != 1:
                raise _Broken(seq, f"receipt {seq} is a second submission")
            self.spec_sha256 = payload.get("spec_sha256")
            self.kind = payload.get("kind")
        elif kind == "checkpoint":
            self.checkpoint = (seq, payload.get("state_sha256"))
        else:
            self._note_command(seq, kind, payload, step, data["ts"])
        if step is None:
            return
        state = _step_state(kind, payload)
        if state is None:
            return
        facts = self.steps.get(step)
        if facts is None:
            if kind != "intent":
                raise _Broken(seq, f"receipt {seq} records step {step!r} before its intent")
            facts = self.steps[step] = _StepFacts(state, seq, payload.get("tool"))
        facts.state, facts.seq = state, seq
        if state == "done":
            facts.result_sha256 = payload.get("result_sha256")

    def _note_command(
        self, seq: int, kind: str, payload: dict[str, Any], step: Any, ts: float
    ) -> None:
        """Steering and approvals: each one a worker acted on must have been sent by a receipt
        (a row written straight into the database is injected, and a worker refuses it)."""
        if kind == "steer":
            sent = _Sent(str(payload.get("kind")), payload.get("message"), seq, by=None)
            sid = payload.get("steering_id")
            if sid is None:
                self.old_steers.append(sent)
            else:
                self.steers[sid] = sent
        elif kind == "approval":
            ttl: Any = payload.get("ttl_s")
            sent = _Sent(
                str(payload.get("decision")),
                None,
                seq,
                step=step,
                by=payload.get("by"),
                expires=ts + float(ttl) if _is_number(ttl) else None,
            )
            aid = payload.get("approval_id")
            if aid is None:
                self.old_decisions.append(sent)
            else:
                self.decisions[aid] = sent
        elif kind == "steering_delivered":
            self._use_steer(seq, payload.get("id"), "message", payload.get("message"))
        elif kind in ("paused", "cancelled") and payload.get("steering_id") is not None:
            wanted = "pause" if kind == "paused" else "stop"
            self._use_steer(seq, payload.get("steering_id"), wanted, None)
        elif kind == "approval_used":
            self._use_decision(seq, payload, step)

    def _use_steer(self, seq: int, sid: Any, kind: str, message: Any) -> None:
        sent = self.steers.get(sid) if _is_int(sid) else None
        if sent is None:
            sent = next(
                (
                    s
                    for s in self.old_steers
                    if not s.used and s.kind == kind and (message is None or s.text == message)
                ),
                None,
            )
        if sent is None or sent.kind != kind or (message is not None and sent.text != message):
            raise _Broken(
                seq,
                f"receipt {seq} acts on steering {sid!r} ({kind}) that no steer receipt sent: "
                "injected steering",
            )
        if sent.used:
            raise _Broken(seq, f"receipt {seq} acts on steering {sid!r} a second time")
        sent.used = True

    def _use_decision(self, seq: int, payload: dict[str, Any], step: Any) -> None:
        aid, decision = payload.get("approval_id"), payload.get("decision")
        sent = self.decisions.get(aid) if _is_int(aid) else None
        if sent is None and aid is None:
            sent = next(
                (
                    s
                    for s in self.old_decisions
                    if not s.used and s.step == step and s.kind == decision
                ),
                None,
            )
        if sent is None or sent.used or sent.step != step or sent.kind != decision:
            raise _Broken(
                seq,
                f"receipt {seq} uses a decision ({decision!r} on step {step!r}) that no approval "
                "receipt gave: injected approval",
            )
        sent.used = True


def _describe(data: dict[str, Any]) -> str:
    """A receipt in a few words, for messages: its kind and who wrote it."""
    what = f"{data['kind']!r}"
    if data["step"] is not None:
        what += f" of step {data['step']!r}"
    return f"{what} by {data['actor']!r}"


def _step_state(kind: str, payload: dict[str, Any]) -> str | None:
    """The step status a receipt of ``kind`` leaves behind (None: it does not change it)."""
    if kind == "intent":
        return "intent"
    if kind == "gate":
        return "started" if payload.get("action") == "allow" else "denied"
    if kind == "result":
        return "done" if payload.get("ok") is True else "failed"
    if kind == "reconcile":
        return "denied" if payload.get("action") == "denied" else "started"
    return None


def _loads_column(text: Any, what: str, seq: int | None) -> Any:
    if text is None:
        return None
    if not isinstance(text, str):
        raise _Broken(seq, f"the task's stored {what} is not text")
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise _Broken(seq, f"the task's stored {what} is not valid JSON") from None


def _sha(value: Any, what: str, seq: int | None) -> str:
    try:
        return sha256_json(value)
    except (ValueError, TypeError):
        raise _Broken(seq, f"the task's stored {what} cannot be hashed") from None


def _check_head(
    chain: _Chain, head_seq: Any, head_hash: Any, head_sig: Any, check_head_sig: bool
) -> None:
    count = chain.count
    if head_seq is not None:
        if not _is_int(head_seq):
            raise _Broken(None, f"the checkpointed head is not a receipt number ({head_seq!r})")
        if head_seq != count:
            what = "were cut off the end" if head_seq > count else "were added past the head"
            raise _Broken(
                min(head_seq, count) + 1,
                f"the checkpointed head is receipt {head_seq} but the log has {count}: "
                f"receipts {what}",
            )
    if head_hash is not None and head_hash != chain.prev:
        raise _Broken(count, f"receipt {count} differs from the checkpointed head")
    if chain.signer is not None and check_head_sig:
        if head_sig is None:
            raise _Broken(count, "the checkpointed head is not signed")
        digest = head_digest(chain.task_id, count, chain.prev)
        if not isinstance(head_sig, str) or not chain.signer.verify(digest, head_sig):
            raise _Broken(count, "the checkpointed head's signature is invalid")


def _check_anchors(chain: _Chain, anchors: Sequence[Anchor]) -> None:
    for a in anchors:
        when = f"the anchor exported at {a.exported_at:.0f}"
        if chain.signer is not None:
            if a.sig is None:
                raise _Broken(None, f"{when} (receipt {a.seq}) is not signed")
            if not chain.signer.verify(a.digest(), a.sig):
                raise _Broken(None, f"{when} (receipt {a.seq}) has an invalid signature")
        if a.task != chain.task_id:
            raise _Broken(None, f"{when} is for task {a.task!r}, not {chain.task_id!r}")
        if chain.count < a.seq:
            raise _Broken(
                chain.count + 1,
                f"{when} covers {a.seq} receipts but the log has {chain.count}: receipts were "
                "cut off and the head moved to match",
            )
        if chain.seen.get(a.seq) != a.hash:
            raise _Broken(a.seq, f"receipt {a.seq} differs from {when}: the chain was rewritten")
        if a.status in TERMINAL_STATUSES and chain.count > a.seq:
            raise _Broken(
                a.seq + 1,
                f"{when} shows the task ended ({a.status}) at receipt {a.seq}, yet the log goes "
                f"on to {chain.count}",
            )


def _consume(chain: _Chain, receipts: Iterable[ReceiptRow]) -> None:
    for r in receipts:
        chain.feed(r)
    if chain.count == 0:
        raise _Broken(1, "the task has no receipts (receipt 1, its submission, is missing)")


def _result(chain: _Chain, broken: _Broken | None, anchors: int) -> VerifyResult:
    common: dict[str, Any] = {
        "signed": chain.signed,
        "key_id": chain.signer.key_id if chain.signer is not None else None,
        "status": chain.status,
        "anchors": anchors,
    }
    if broken is not None:
        return VerifyResult(False, chain.count, chain.prev, broken.seq, broken.reason, **common)
    return VerifyResult(True, chain.count, chain.prev, None, "", **common)


def _need_signer(signer: Signer | None, require_signatures: bool) -> None:
    if require_signatures and signer is None:
        raise InvalidInput(
            "requiring signatures needs the key to check them: pass --key FILE or configure "
            "HOLDFAST_RECEIPT_KEY (an Ed25519 public key is enough)"
        )


def verify_chain(
    task_id: str,
    receipts: Iterable[ReceiptRow],
    *,
    head_seq: int | None = None,
    head_hash: str | None = None,
    head_sig: str | None = None,
    signer: Signer | None = None,
    require_signatures: bool = False,
    anchors: Sequence[Anchor] = (),
) -> VerifyResult:
    """Check receipts in order against each other, the checkpointed head and ``anchors``.

    With a ``signer`` every receipt, the head (when ``head_seq`` is given) and every anchor must
    carry a valid signature; ``require_signatures`` without a signer is an error. The failure
    names the first bad receipt (its sequence number) and why.
    """
    _need_signer(signer, require_signatures)
    chain = _Chain(task_id, signer, anchors)
    try:
        _consume(chain, receipts)
        _check_head(chain, head_seq, head_hash, head_sig, check_head_sig=head_seq is not None)
        _check_anchors(chain, anchors)
    except _Broken as broken:
        return _result(chain, broken, len(anchors))
    return _result(chain, None, len(anchors))


def verify_task(
    task: TaskRecord,
    receipts: Iterable[ReceiptRow],
    steps: Iterable[StepRecord],
    *,
    signer: Signer | None = None,
    require_signatures: bool = False,
    anchors: Sequence[Anchor] = (),
    follower: ChainFollower | None = None,
) -> VerifyResult:
    """Check a task's chain, head and anchors, then its row and steps against the chain.

    ``follower`` (a fresh one, for the same task and key) keeps the verified chain so a worker
    can go on checking the receipts appended after this snapshot."""
    _need_signer(signer, require_signatures)
    if follower is not None:
        if follower.count or follower.task_id != task.id or follower.signer is not signer:
            raise ValueError("verify_task needs a fresh follower of the same task and key")
        chain = follower._chain
        chain.want = {a.seq for a in anchors}
    else:
        chain = _Chain(task.id, signer, anchors)
    try:
        _consume(chain, receipts)
        _check_head(chain, task.head_seq, task.head_hash, task.head_sig, check_head_sig=True)
        _check_anchors(chain, anchors)
        _check_row(chain, task)
        _check_steps(chain, steps)
    except _Broken as broken:
        return _result(chain, broken, len(anchors))
    return _result(chain, None, len(anchors))


class ChainFollower:
    """One task's chain as a worker sees it: verified once from a snapshot (see
    :func:`verify_task`), then followed receipt by receipt as it grows, so that steering and
    approval rows can be checked against the (signed) receipts that sent them."""

    def __init__(self, task_id: str, signer: Signer | None) -> None:
        self.task_id = task_id
        self.signer = signer
        self._chain = _Chain(task_id, signer, ())
        self.broken: str | None = None

    @property
    def count(self) -> int:
        return self._chain.count

    def feed(self, receipts: Iterable[ReceiptRow]) -> str | None:
        """Check receipts that continue the chain; the reason it broke (for good), or None."""
        if self.broken is None:
            try:
                for r in receipts:
                    self._chain.feed(r)
            except _Broken as exc:
                self.broken = exc.reason
        return self.broken

    def steering_sent(self, steering_id: int, kind: str, message: str) -> str | None:
        """Why the steering row ``steering_id`` was not sent by a receipt (None: it was)."""
        if self.broken is not None:
            return f"the task's receipts do not verify: {self.broken}"
        sent = self._chain.steers.get(steering_id)
        if sent is None:
            return f"no steer receipt sent steering {steering_id}: it was written into the store"
        if sent.kind != kind or (kind == "message" and sent.text != message):
            return f"steering {steering_id} differs from its steer receipt ({sent.seq})"
        if sent.used:
            return f"steering {steering_id} was already acted on (receipt {sent.seq})"
        return None

    def decision_given(
        self, approval_id: int, step: str, decision: Any, by: Any, expires_at: Any
    ) -> str | None:
        """Why the decision row ``approval_id`` was not given by a receipt (None: it was)."""
        if self.broken is not None:
            return f"the task's receipts do not verify: {self.broken}"
        sent = self._chain.decisions.get(approval_id)
        if sent is None:
            return f"no approval receipt gave decision {approval_id}: it was written into the store"
        if sent.step != step or sent.kind != decision or sent.by != by:
            return f"decision {approval_id} differs from its approval receipt ({sent.seq})"
        if sent.expires is not None and (
            not _is_number(expires_at) or expires_at > sent.expires + 0.001
        ):
            return f"decision {approval_id} has a later expiry than its receipt ({sent.seq}) gave"
        if sent.used:
            return f"decision {approval_id} was already used"
        return None


def _check_row(chain: _Chain, task: TaskRecord) -> None:
    last = chain.count
    if task.status != chain.status:
        raise _Broken(
            last, f"the task's status is {task.status!r} but receipt {last} says {chain.status!r}"
        )
    if task.kind is not None and chain.kind is not None and task.kind != chain.kind:
        raise _Broken(1, "the task's stored kind does not match its submission receipt (1)")
    spec = _loads_column(task.spec, "spec", 1)
    if chain.spec_sha256 != _sha(spec, "spec", 1):
        raise _Broken(1, "the task's stored spec does not match its submission receipt (1)")
    result = _loads_column(task.result, "result", chain.terminal[0] if chain.terminal else None)
    error = _loads_column(task.error, "error", chain.terminal[0] if chain.terminal else None)
    if chain.terminal is None:
        if result is not None or error is not None:
            raise _Broken(None, "the task has a stored result or error but never ended")
    else:
        seq, payload = chain.terminal
        committed = payload.get("result_sha256")
        if committed is None and result is not None:
            raise _Broken(seq, f"the task's stored result is not the one receipt {seq} recorded")
        if committed is not None and committed != _sha(result, "result", seq):
            raise _Broken(seq, f"the task's stored result does not match receipt {seq}")
        if _sha(error, "error", seq) != _sha(payload.get("error"), "error", seq):
            raise _Broken(seq, f"the task's stored error does not match receipt {seq}")
    if chain.usage is not None and task.usage is not None:
        _check_usage(chain.usage, _loads_column(task.usage, "usage", chain.usage[0]))
    state = _loads_column(task.checkpoint, "checkpoint", None)
    if chain.checkpoint is None:
        if state is not None:
            raise _Broken(None, "the task has checkpoint state but no checkpoint receipt")
    elif chain.checkpoint[1] != _sha(state, "checkpoint", chain.checkpoint[0]):
        seq = chain.checkpoint[0]
        raise _Broken(seq, f"the task's checkpoint state does not match receipt {seq}")


def _check_usage(receipted: tuple[int, dict[str, Any]], stored: Any) -> None:
    """Spending only grows: the stored usage must be at least what the last receipt recorded
    (a reset would give the task its budget again)."""
    seq, then = receipted
    for name, value in sorted(then.items()):
        if not _is_number(value):
            continue
        now = stored.get(name) if isinstance(stored, dict) else None
        if not _is_number(now) or now < value - 1e-6:
            raise _Broken(
                seq,
                f"the task's stored usage ({name}={now!r}) is below what receipt {seq} recorded "
                f"({value!r}): its spending was reset",
            )


def _check_steps(chain: _Chain, steps: Iterable[StepRecord]) -> None:
    seen: set[str] = set()
    for s in steps:
        name = s.name
        facts = chain.steps.get(name) if isinstance(name, str) else None
        if facts is None:
            raise _Broken(None, f"step {name!r} is stored but no receipt records it")
        seen.add(name)
        if s.status != facts.state:
            raise _Broken(
                facts.seq,
                f"step {name!r} is stored as {s.status!r} but receipt {facts.seq} left it "
                f"{facts.state!r}",
            )
        if s.tool != facts.tool:
            raise _Broken(facts.seq, f"step {name!r} is stored for another tool than its intent")
        if facts.state == "done":
            where = f"result of step {name!r}"
            value = _loads_column(s.result, where, facts.seq)
            if facts.result_sha256 != _sha(value, where, facts.seq):
                raise _Broken(
                    facts.seq,
                    f"the stored result of step {name!r} does not match receipt {facts.seq}",
                )
    lost = sorted(set(chain.steps) - seen)
    if lost:
        facts = chain.steps[lost[0]]
        raise _Broken(
            facts.seq,
            f"step {lost[0]!r} has receipts but its stored record is gone (a resumed task "
            "would run it again)",
        )
