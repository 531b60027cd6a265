"""Input classification and metadata: the payload never reaches the description."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from holdfast.errors import InvalidInput
from holdfast.rlm.inputs import prepare_inputs, read_dir_file, scan_file


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=60)
@given(st.binary(min_size=1, max_size=3000), st.integers(min_value=1, max_value=64))
def test_scan_matches_a_full_decode(tmp_path: Path, data: bytes, chunk_kib: int) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    item = prepare_inputs({"x": path})[0]
    scan_file(item, 1 << 30)
    try:
        data.decode("utf-8")
        valid = True
    except UnicodeDecodeError:
        valid = False
    assert item.binary is (not valid)
    assert item.lines == data.count(b"\n") + 1


def test_descriptions_hold_metadata_not_payload(tmp_path: Path) -> None:
    secret = "needle-" + "z" * 10_000
    records = [{"id": i, "body": secret} for i in range(500)]
    items = prepare_inputs({"text": "head " + secret, "rows": records, "raw": b"\xff\x00" * 500})
    text, rows, raw = (i.describe() for i in items)
    assert "str" in text and "chars" in text and len(text) < 600
    assert "list of 500 items" in rows and "'id': int" in rows and secret not in rows
    assert "bytes" in raw and "not valid UTF-8" in raw


def test_directory_listing_and_confined_reads(tmp_path: Path) -> None:
    root = tmp_path / "d"
    root.mkdir()
    (root / "a.txt").write_text("hello world")
    (root / ".hidden").mkdir()
    (root / ".hidden" / "x").write_text("no")
    (tmp_path / "outside").write_text("secret")
    (root / "link").symlink_to(tmp_path / "outside")
    item = prepare_inputs({"docs": root})[0]
    assert item.files == [("a.txt", 11)]
    assert read_dir_file(item, "a.txt", 6, 5) == "world"
    for bad in ("../outside", "link", "/etc/passwd", ".hidden/../../outside"):
        with pytest.raises(ValueError):
            read_dir_file(item, bad)


@pytest.mark.parametrize("value", ["", b"", [1, object()], float("nan"), 3j])
def test_bad_values(value: object) -> None:
    with pytest.raises(InvalidInput):
        prepare_inputs({"x": value})


def test_total_size_limit() -> None:
    with pytest.raises(InvalidInput, match="over the limit"):
        prepare_inputs({"a": "x" * 600, "b": "y" * 600}, max_input_bytes=1000)
