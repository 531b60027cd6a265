from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from holdfast.harness import (
    Ed25519Signer,
    HMACSigner,
    ReceiptRow,
    ReceiptSealer,
    canonical_json,
    verify_chain,
)
from holdfast.harness.receipts import load_signer
from holdfast.harness.rows import Draft

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def build(n: int, signer: object = None, payloads: list[object] | None = None) -> list[ReceiptRow]:
    sealer = ReceiptSealer(signer)  # type: ignore[arg-type]
    rows: list[ReceiptRow] = []
    prev = ""
    for i in range(1, n + 1):
        payload = {"v": payloads[i - 1]} if payloads else {"i": i}
        s = sealer.seal("t1", i, prev, 1000.0 + i, Draft("event", payload, step=f"s{i}"))
        rows.append(ReceiptRow("t1", s.seq, s.body, s.hash, s.sig, s.key_id))
        prev = s.hash
    return rows


def head(rows: list[ReceiptRow]) -> dict[str, object]:
    return {"head_seq": len(rows), "head_hash": rows[-1].hash if rows else ""}


def test_intact_chain_verifies() -> None:
    rows = build(20)
    result = verify_chain("t1", rows, **head(rows))  # type: ignore[arg-type]
    assert result.ok and result.count == 20 and result.bad_seq is None


@given(st.lists(json_values, min_size=1, max_size=12))
def test_canonical_json_is_stable_and_round_trips(values: list[object]) -> None:
    for v in values:
        text = canonical_json(v)
        assert canonical_json(json.loads(text)) == text


@settings(max_examples=60, deadline=None)
@given(st.lists(json_values, min_size=2, max_size=15), st.data())
def test_any_edit_reorder_or_truncation_is_named(
    payloads: list[object], data: st.DataObject
) -> None:
    rows = build(len(payloads), payloads=payloads)
    h = head(rows)
    mode = data.draw(st.sampled_from(["edit", "swap", "truncate", "drop", "rehash"]))
    i = data.draw(st.integers(0, len(rows) - 1))
    bad = list(rows)
    if mode == "edit":
        body = json.loads(rows[i].body)
        body["payload"] = {"tampered": True}
        bad[i] = ReceiptRow("t1", rows[i].seq, canonical_json(body), rows[i].hash)
        expect = i + 1
    elif mode == "rehash":  # edit the body and recompute its own hash: the next link breaks
        body = json.loads(rows[i].body)
        body["payload"] = {"tampered": True}
        text = canonical_json(body)
        from holdfast.harness.receipts import receipt_hash

        bad[i] = ReceiptRow("t1", rows[i].seq, text, receipt_hash(text))
        expect = i + 2 if i + 1 < len(rows) else i + 1
    elif mode == "swap":
        j = (i + 1) % len(rows)
        bad[i], bad[j] = bad[j], bad[i]
        expect = min(i, j) + 1
    elif mode == "truncate":
        bad = rows[:i]
        expect = i + 1
    else:
        del bad[i]
        expect = i + 1
    result = verify_chain("t1", bad, **h)  # type: ignore[arg-type]
    assert not result.ok
    assert result.bad_seq == expect, result.reason


def test_hmac_and_ed25519_signatures(tmp_path: object) -> None:
    for signer in (HMACSigner(b"a-secret-of-at-least-16"), Ed25519Signer.generate()):
        rows = build(5, signer)
        assert verify_chain("t1", rows, signer=signer, **head(rows)).signed == 5  # type: ignore[arg-type]
        other = (
            HMACSigner(b"another-secret-of-16+")
            if isinstance(signer, HMACSigner)
            else Ed25519Signer.generate()
        )
        result = verify_chain("t1", rows, signer=other, **head(rows))  # type: ignore[arg-type]
        assert not result.ok and result.bad_seq == 1 and "signature" in result.reason


def test_unsigned_receipts_fail_when_signatures_are_required() -> None:
    rows = build(3)
    signer = HMACSigner(b"a-secret-of-at-least-16")
    assert verify_chain("t1", rows, signer=signer).ok
    result = verify_chain("t1", rows, signer=signer, require_signatures=True)
    assert not result.ok and result.bad_seq == 1


def test_load_signer_from_files(tmp_path: object) -> None:
    from pathlib import Path

    base = Path(str(tmp_path))
    ed = Ed25519Signer.generate()
    (base / "priv.pem").write_bytes(ed.private_pem())
    (base / "pub.pem").write_bytes(ed.public_pem())
    (base / "hmac.key").write_text("0123456789abcdef0123")
    (base / "short.key").write_text("short")
    priv, pub = load_signer(base / "priv.pem"), load_signer(base / "pub.pem")
    assert pub.verify("ab" * 32, priv.sign("ab" * 32))
    assert isinstance(load_signer(base / "hmac.key"), HMACSigner)
    import pytest

    from holdfast.errors import ConfigError

    with pytest.raises(ConfigError, match="shorter than 16"):
        load_signer(base / "short.key")
    with pytest.raises(ConfigError, match="cannot read"):
        load_signer(base / "missing.key")
