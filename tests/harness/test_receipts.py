"""The receipt chain as pure data: sealing, signatures, and tampering by someone who can write
every stored value (bodies, hashes, signatures, the head) and compute SHA-256, but holds no key."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from holdfast.errors import ConfigError, InvalidInput
from holdfast.harness import (
    Anchor,
    Ed25519Signer,
    HMACSigner,
    ReceiptRow,
    ReceiptSealer,
    Signer,
    canonical_json,
    verify_chain,
)
from holdfast.harness.receipts import head_digest, receipt_hash
from holdfast.harness.rows import Draft
from holdfast.harness.signing import configured_signer, generate_key, load_signer

TASK = "task-0123456789abcdef"
KEYS: list[Signer] = [HMACSigner(b"a-secret-of-at-least-16"), Ed25519Signer.generate()]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@dataclass(frozen=True)
class Stored:
    """What the database holds for one task: the receipts and the checkpointed head."""

    rows: list[ReceiptRow]
    head_seq: int
    head_hash: str
    head_sig: str | None

    def verify(self, signer: Signer | None = None, **kw: Any) -> Any:
        return verify_chain(
            TASK,
            self.rows,
            head_seq=self.head_seq,
            head_hash=self.head_hash,
            head_sig=self.head_sig,
            signer=signer,
            **kw,
        )


def build(payloads: list[Any], signer: Signer | None = None) -> Stored:
    """A chain: the submission, then one receipt per payload (the task running)."""
    sealer = ReceiptSealer(signer)
    rows: list[ReceiptRow] = []
    prev, head_sig = "", None
    for i, payload in enumerate([{"spec_sha256": "0" * 64}, *payloads], 1):
        kind, status = ("submitted", "queued") if i == 1 else ("event", "running")
        s = sealer.seal(TASK, i, prev, 1000.0 + i, Draft(kind, {"v": payload}), status)
        rows.append(ReceiptRow(TASK, s.seq, s.body, s.hash, s.sig, s.key_id))
        prev, head_sig = s.hash, s.head_sig
    return Stored(rows, len(rows), prev, head_sig)


def forge(seq: int, prev: str, payload: Any, sig: str | None = None) -> ReceiptRow:
    """A receipt written by the attacker: a correct hash, and no signature or a copied one."""
    body = canonical_json(
        {
            "task": TASK,
            "seq": seq,
            "ts": 5000.0,
            "kind": "event",
            "step": None,
            "actor": "harness",
            "payload": {"v": payload},
            "prev": prev,
            "status": "running",
        }
    )
    return ReceiptRow(TASK, seq, body, receipt_hash(body), sig)


def rechain(rows: list[ReceiptRow], start: int, sigs: str) -> list[ReceiptRow]:
    """Renumber and re-hash rows from index ``start`` on so every link holds again, as a keyless
    rewriter would; ``sigs`` says what they do with the signatures: drop or keep the old ones."""
    out = list(rows[:start])
    prev = out[-1].hash if out else ""
    for i, r in enumerate(rows[start:], start + 1):
        data = json.loads(r.body)
        data.update(seq=i, prev=prev)
        body = canonical_json(data)
        out.append(ReceiptRow(TASK, i, body, receipt_hash(body), r.sig if sigs == "keep" else None))
        prev = out[-1].hash
    return out


def moved(rows: list[ReceiptRow], head_sig: str | None) -> Stored:
    return Stored(rows, len(rows), rows[-1].hash if rows else "", head_sig)


TAMPERS = (
    "edit",
    "edit_rehash",
    "rewrite_suffix",
    "delete",
    "delete_rechain",
    "insert",
    "insert_rechain",
    "swap",
    "swap_rechain",
    "truncate",
    "truncate_move_head",
    "append",
    "append_move_head",
    "drop_signature",
    "copy_signature",
    "head_sig_from_receipt",
)


def tamper(s: Stored, how: str, i: int, j: int, payload: Any, sigs: str) -> Stored:
    """One tampering of ``s`` at receipt index ``i`` (``j``: a second index); the head's
    signature, when the head moves, is dropped, kept, or copied from a stored receipt."""
    rows, n = list(s.rows), len(s.rows)
    stolen = {"drop": None, "keep": s.head_sig}.get(sigs, rows[min(j, n - 1)].sig)
    if how == "edit":
        data = json.loads(rows[i].body)
        data["payload"] = {"v": payload, "tampered": True}
        rows[i] = replace(rows[i], body=canonical_json(data))
        return replace(s, rows=rows)
    if how == "edit_rehash":
        data = json.loads(rows[i].body)
        data["payload"] = {"v": payload, "tampered": True}
        body = canonical_json(data)
        rows[i] = replace(rows[i], body=body, hash=receipt_hash(body))
        return replace(s, rows=rows)
    if how == "rewrite_suffix":  # edit receipt i, re-hash everything after it, move the head
        data = json.loads(rows[i].body)
        data["payload"] = {"v": payload, "tampered": True}
        body = canonical_json(data)
        rows[i] = replace(rows[i], body=body, hash=receipt_hash(body))
        return moved(rechain(rows, i, sigs), stolen)
    if how == "delete":
        del rows[i]
        return replace(s, rows=rows)
    if how == "delete_rechain":
        del rows[i]
        return moved(rechain(rows, i, sigs), stolen)
    if how == "insert":
        rows.insert(i, forge(i + 1, rows[i - 1].hash if i else "", payload))
        return replace(s, rows=rows)
    if how == "insert_rechain":
        rows.insert(i, forge(i + 1, "", payload, rows[j % n].sig))
        return moved(rechain(rows, i, sigs), stolen)
    if how == "swap":
        k = j if j != i else (i + 1) % n
        rows[i], rows[k] = rows[k], rows[i]
        return replace(s, rows=rows)
    if how == "swap_rechain":
        k = j if j != i else (i + 1) % n
        rows[i], rows[k] = rows[k], rows[i]
        return moved(rechain(rows, min(i, k), sigs), stolen)
    if how == "truncate":
        return replace(s, rows=rows[: max(1, i)])
    if how == "truncate_move_head":
        return moved(rows[: max(1, i)], stolen)
    if how == "append":
        return replace(s, rows=[*rows, forge(n + 1, rows[-1].hash, payload, rows[j % n].sig)])
    if how == "append_move_head":
        return moved([*rows, forge(n + 1, rows[-1].hash, payload, rows[j % n].sig)], stolen)
    if how == "drop_signature":
        rows[i] = replace(rows[i], sig=None)
        return replace(s, rows=rows)
    if how == "copy_signature":
        k = j if j != i else (i + 1) % n
        rows[i] = replace(rows[i], sig=rows[k].sig)
        return replace(s, rows=rows)
    assert how == "head_sig_from_receipt"
    return replace(s, head_sig=rows[-1].sig)


def test_intact_chain_verifies_with_and_without_a_key() -> None:
    for signer in KEYS:
        s = build([1, 2, 3, "x"], signer)
        result = s.verify(signer)
        assert result.ok and result.count == 5 and result.signed == 5 and result.bad_seq is None
        assert result.status == "running" and result.key_id == signer.key_id
        assert s.verify().ok  # the hashes alone also hold


@given(st.lists(json_values, min_size=1, max_size=12))
def test_canonical_json_is_stable_and_round_trips(values: list[object]) -> None:
    for v in values:
        text = canonical_json(v)
        assert canonical_json(json.loads(text)) == text
        text.encode("utf-8")  # always encodable, so always hashable


def test_canonical_json_escapes_lone_surrogates() -> None:
    text = canonical_json({"a": "x\ud800y"})
    assert text == '{"a":"x\\ud800y"}' and json.loads(text) == {"a": "x\ud800y"}


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    payloads=st.lists(json_values, min_size=2, max_size=10),
    how=st.sampled_from(TAMPERS),
    key=st.sampled_from(range(len(KEYS))),
    sigs=st.sampled_from(["drop", "keep", "steal"]),
    data=st.data(),
)
def test_any_single_tampering_is_detected_with_a_key(
    payloads: list[Any], how: str, key: int, sigs: str, data: st.DataObject
) -> None:
    signer = KEYS[key]
    s = build(payloads, signer)
    n = len(s.rows)
    i = data.draw(st.integers(1 if how.startswith(("insert", "truncate")) else 0, n - 1), "i")
    j = data.draw(st.integers(0, n - 1), "j")
    bad = tamper(s, how, i, j, data.draw(json_values, "payload"), sigs)
    if bad == s:  # e.g. a swap of two identical receipts: nothing changed
        return
    result = bad.verify(signer)
    assert not result.ok, (how, i, j, sigs)
    assert result.bad_seq is not None and 1 <= result.bad_seq <= n + 1
    assert result.reason


@settings(max_examples=200, deadline=None)
@given(
    payloads=st.lists(json_values, min_size=2, max_size=10),
    how=st.sampled_from(["edit", "edit_rehash", "delete", "insert", "swap", "truncate", "append"]),
    data=st.data(),
)
def test_without_a_key_a_change_that_leaves_the_head_alone_is_detected(
    payloads: list[Any], how: str, data: st.DataObject
) -> None:
    s = build(payloads)
    n = len(s.rows)
    i = data.draw(st.integers(1 if how in ("insert", "truncate") else 0, n - 1), "i")
    bad = tamper(s, how, i, data.draw(st.integers(0, n - 1), "j"), {"x": 1}, "drop")
    if bad == s:
        return
    result = bad.verify()
    assert not result.ok and result.bad_seq is not None


def test_without_a_key_a_consistent_rewrite_passes_and_only_an_anchor_catches_it() -> None:
    """What docs/harness.md promises about keyless verification, pinned down."""
    s = build(list(range(8)))
    anchor = Anchor(TASK, s.head_seq, s.head_hash, "running", 1.0)
    for how in ("rewrite_suffix", "truncate_move_head", "delete_rechain", "append_move_head"):
        bad = tamper(s, how, 4, 2, {"forged": True}, "drop")
        assert bad.verify().ok, how  # the database alone cannot tell
        caught = verify_chain(
            TASK, bad.rows, head_seq=bad.head_seq, head_hash=bad.head_hash, anchors=[anchor]
        )
        if how == "append_move_head":  # a running task may legitimately grow past its anchor
            assert caught.ok
        else:
            assert not caught.ok and "anchor" in caught.reason, how


def test_a_terminal_anchor_catches_a_forged_tail_even_without_a_key() -> None:
    s = build([1, 2])
    anchor = Anchor(TASK, s.head_seq, s.head_hash, "succeeded", 1.0)
    bad = tamper(s, "append_move_head", 0, 0, {"more": 1}, "drop")
    result = verify_chain(TASK, bad.rows, head_seq=bad.head_seq, head_hash=bad.head_hash,
                          anchors=[anchor])  # fmt: skip
    assert not result.ok and result.bad_seq == s.head_seq + 1 and "ended" in result.reason


def test_with_a_key_truncation_is_caught_by_the_head_signature() -> None:
    signer = KEYS[1]
    s = build(list(range(6)), signer)
    for sigs in ("drop", "keep", "steal"):
        bad = tamper(s, "truncate_move_head", 3, 2, None, sigs)
        result = bad.verify(signer)
        assert not result.ok and "head" in result.reason, sigs


def test_anchors_must_be_signed_when_a_key_is_used() -> None:
    signer = KEYS[0]
    s = build([1, 2, 3], signer)
    plain = Anchor(TASK, 2, s.rows[1].hash, "running", 7.0)
    assert not s.verify(signer, anchors=[plain]).ok
    signed = plain.signed_by(signer)
    assert s.verify(signer, anchors=[signed]).ok
    assert s.verify(signer, anchors=[replace(signed, seq=3, hash=s.rows[2].hash)]).ok is False
    wrong = Anchor(TASK, 2, "f" * 64, "running", 7.0).signed_by(signer)
    result = s.verify(signer, anchors=[wrong])
    assert not result.ok and result.bad_seq == 2 and "rewritten" in result.reason


def test_the_head_signature_cannot_be_a_receipt_signature() -> None:
    signer = KEYS[1]
    s = build([1], signer)
    assert s.head_sig != s.rows[-1].sig
    assert signer.verify(head_digest(TASK, s.head_seq, s.head_hash), str(s.head_sig))
    result = replace(s, head_sig=s.rows[-1].sig).verify(signer)
    assert not result.ok and "head" in result.reason


def test_a_missing_signature_is_broken_whenever_a_key_is_used() -> None:
    s = build([1, 2])
    for signer in KEYS:
        result = s.verify(signer)
        assert not result.ok and result.bad_seq == 1 and "not signed" in result.reason
    with pytest.raises(InvalidInput, match="needs the key"):
        s.verify(None, require_signatures=True)


def test_signatures_from_another_key_are_invalid() -> None:
    s = build([1, 2], KEYS[0])
    other = HMACSigner(b"another-secret-of-16+")
    result = s.verify(other)
    assert not result.ok and result.bad_seq == 1 and "invalid signature" in result.reason


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"task": "x"}', "lacks the field(s)"),
        ("[" * 100_000, "not valid JSON"),
        ('{"a": NaN}', "not valid JSON"),
    ],
)
def test_a_body_that_is_not_a_receipt_is_named_not_raised(body: str, why: str) -> None:
    s = build([1, 2, 3])
    rows = list(s.rows)
    rows[1] = replace(rows[1], body=body, hash=receipt_hash(body))
    result = replace(s, rows=rows).verify()
    assert not result.ok and result.bad_seq == 2 and why in result.reason


def test_fields_of_the_wrong_type_or_form_are_named() -> None:
    s = build([1, 2, 3])
    cases: list[tuple[dict[str, Any] | str, str]] = [
        ({"ts": "yesterday"}, "bad value in ts"),
        ({"seq": True}, "bad value in seq"),
        ({"payload": []}, "bad value in payload"),
        ({"status": "hacked"}, "bad value in status"),
        ({"extra": 1}, "unknown field"),
    ]
    for change, why in cases:
        data = json.loads(s.rows[1].body)
        data.update(change)
        body = canonical_json(data)
        rows = list(s.rows)
        rows[1] = replace(rows[1], body=body, hash=receipt_hash(body))
        result = replace(s, rows=rows).verify()
        assert not result.ok and result.bad_seq == 2 and why in result.reason, change
    spaced = json.dumps(json.loads(s.rows[1].body))  # same data, not canonical
    rows = list(s.rows)
    rows[1] = replace(rows[1], body=spaced, hash=receipt_hash(spaced))
    assert "canonical" in replace(s, rows=rows).verify().reason


def test_stored_values_of_any_type_never_raise() -> None:
    s = build([1, 2])
    hostile: list[dict[str, Any]] = [
        {"body": b"\xff\xfe"},
        {"body": "x\udcff"},
        {"hash": 42},
        {"seq": "2"},
        {"sig": "é" * 64},
        {"sig": 12},
    ]
    for change in hostile:
        rows = list(s.rows)
        rows[1] = replace(rows[1], **change)
        result = replace(s, rows=rows).verify(KEYS[0])
        assert not result.ok and result.bad_seq in (1, 2), change
    assert not replace(s, head_seq="2").verify().ok  # type: ignore[arg-type]


def test_the_first_receipt_must_be_the_submission() -> None:
    s = build([1, 2])
    result = replace(s, rows=rechain(s.rows[1:], 0, "drop")).verify()
    assert not result.ok and result.bad_seq == 1
    empty = verify_chain(TASK, [], head_seq=0, head_hash="")
    assert not empty.ok and "no receipts" in empty.reason


def test_load_signer_from_files(tmp_path: Path) -> None:
    ed = Ed25519Signer.generate()
    (tmp_path / "priv.pem").write_bytes(ed.private_pem())
    (tmp_path / "pub.pem").write_bytes(ed.public_pem())
    (tmp_path / "hmac.key").write_text("0123456789abcdef0123")
    (tmp_path / "short.key").write_text("short")
    priv, pub = load_signer(tmp_path / "priv.pem"), load_signer(tmp_path / "pub.pem")
    assert pub.verify("ab" * 32, priv.sign("ab" * 32)) and not pub.can_sign
    assert priv.key_id == pub.key_id
    with pytest.raises(ConfigError, match="public key"):
        pub.sign("ab" * 32)
    assert isinstance(load_signer(tmp_path / "hmac.key"), HMACSigner)
    with pytest.raises(ConfigError, match="shorter than 16"):
        load_signer(tmp_path / "short.key")
    with pytest.raises(ConfigError, match="cannot read"):
        load_signer(tmp_path / "missing.key")


def test_the_configured_key_comes_from_one_setting(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert configured_signer(env={"HOLDFAST_HOME": str(home)}) is None
    made = generate_key(home / "receipt.key", "ed25519")
    assert (home / "receipt.key").stat().st_mode & 0o077 == 0
    found = configured_signer(env={"HOLDFAST_HOME": str(home)})
    assert found is not None and found.key_id == made.key_id and found.can_sign
    other = generate_key(tmp_path / "other.key", "hmac")
    env = {"HOLDFAST_HOME": str(home), "HOLDFAST_RECEIPT_KEY": str(tmp_path / "other.key")}
    picked = configured_signer(env=env)
    assert picked is not None and picked.key_id == other.key_id
    with pytest.raises(ConfigError, match="cannot read"):  # configured but unreadable: fail
        configured_signer(env={"HOLDFAST_RECEIPT_KEY": str(tmp_path / "gone.key")})
    with pytest.raises(ConfigError, match="already exists"):
        generate_key(home / "receipt.key", "hmac")
