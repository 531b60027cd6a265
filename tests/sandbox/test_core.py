"""The sandbox contract on a real box, at both isolation levels: cells, output, errors, values."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.sandbox.conftest import BACKENDS

from holdfast.sandbox import SandboxError, SandboxPolicy, SyncSandbox, open_sync_sandbox

pytestmark = pytest.mark.sandbox


def test_variables_persist_and_last_expression_is_echoed(shared_box: SyncSandbox) -> None:
    r1 = shared_box.execute("persist_x = 20\nprint('set', persist_x)")
    assert r1.ok and r1.stdout == "set 20\n" and r1.value_repr is None
    r2 = shared_box.execute("persist_x + 1")
    assert r2.ok and r2.value_repr == "21"
    assert shared_box.get("persist_x") == 20


def test_stderr_and_fd_level_output_are_captured_per_cell(shared_box: SyncSandbox) -> None:
    r = shared_box.execute(
        "import os, sys\nprint('to err', file=sys.stderr)\nos.write(1, b'raw fd\\n')\n"
        "os.system('echo from a child')"
    )
    assert r.ok, r.error
    assert "to err" in r.stderr
    assert "raw fd" in r.stdout and "from a child" in r.stdout
    assert shared_box.execute("print('next')").stdout == "next\n"


def test_syntax_error_is_a_cell_result(shared_box: SyncSandbox) -> None:
    r = shared_box.execute("def broken(:\n  pass")
    assert r.error is not None and r.error.type == "SyntaxError"
    assert "line 1" in r.error.traceback
    assert shared_box.execute("1 + 1").value_repr == "2"


def test_exception_has_a_traceback_of_the_cell_only(shared_box: SyncSandbox) -> None:
    r = shared_box.execute("def f():\n    raise ValueError('bad value')\nf()")
    assert r.error is not None and r.error.type == "ValueError"
    assert r.error.message == "bad value"
    assert 'File "<cell>", line 2, in f' in r.error.traceback
    assert "_worker" not in r.error.traceback


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        ("raise KeyboardInterrupt", "KeyboardInterrupt"),
        ("raise SystemExit(4)", "SystemExit"),
        ("import sys; sys.exit('bye')", "SystemExit"),
        ("exit()", "SystemExit"),
    ],
)
def test_interrupts_and_exits_leave_the_box_usable(
    shared_box: SyncSandbox, code: str, kind: str
) -> None:
    r = shared_box.execute(code)
    assert r.error is not None and r.error.type == kind
    assert "still running" in r.error.message
    assert shared_box.execute("'alive'").value_repr == "'alive'"


def test_non_utf8_and_binary_output_is_replaced_not_fatal(shared_box: SyncSandbox) -> None:
    r = shared_box.execute(
        "import os, sys\nos.write(1, bytes(range(256)))\nprint('\\udcff surrogate')\n"
        "_ = sys.stdout.write('ok')"
    )
    assert r.ok, r.error
    assert "\ufffd" in r.stdout and r.stdout.endswith("ok")
    r.stdout.encode("utf-8")  # always valid text


def test_output_cap_keeps_head_and_tail_with_a_marker(shared_box: SyncSandbox) -> None:
    r = shared_box.execute("for i in range(20000): print('line', i)")
    assert r.ok and r.stdout_truncated
    assert r.stdout.startswith("line 0\n")
    assert r.stdout.rstrip().endswith("line 19999")
    assert "bytes of output omitted" in r.stdout
    assert len(r.stdout.encode()) < 4000 + 200


def test_set_get_snapshot_and_restore_values(shared_box: SyncSandbox) -> None:
    shared_box.set("cfg", {"k": [1, 2.5, "x", None, True]})
    assert shared_box.execute("cfg['k'][1] * 2").value_repr == "5.0"
    shared_box.execute("import re\nsnap_fn = lambda: 1\nsnap_val = {'a': 1}")
    snap = shared_box.snapshot()
    assert snap["snap_val"] == {"a": 1} and snap["cfg"]["k"][0] == 1
    assert "re" not in snap and "snap_fn" not in snap
    with pytest.raises(SandboxError, match="not JSON-safe"):
        shared_box.get("snap_fn")
    with pytest.raises(SandboxError, match="NameError"):
        shared_box.get("never_defined")


def test_load_value_and_files_as_text_and_bytes(shared_box: SyncSandbox, tmp_path: Path) -> None:
    shared_box.load("question", {"q": "how many?"})
    text_file = tmp_path / "evidence.txt"
    text_file.write_text("alpha\nbeta\ngamma é\n", encoding="utf-8")
    shared_box.load("doc", path=text_file)
    r = shared_box.execute("(type(doc).__name__, doc.count('\\n'), doc.split()[-1], question['q'])")
    assert r.value_repr == "('str', 3, 'é', 'how many?')"
    raw = tmp_path / "blob.bin"
    raw.write_bytes(b"\x00\xff" * 1000)
    shared_box.load("blob", path=raw, mode="bytes")
    r = shared_box.execute("(type(blob).__name__, len(blob), blob[:2])")
    assert r.value_repr == "('mmap', 2000, b'\\x00\\xff')"
    assert "doc" not in shared_box.snapshot()  # inputs are re-loaded, never snapshotted


@pytest.mark.parametrize(
    "level", [("process", "auto")] + [("namespace", backend) for backend in BACKENDS]
)
def test_a_bytes_input_larger_than_the_box_file_limit_loads(
    tmp_path: Path, level: tuple[str, str]
) -> None:
    """The box's file-size limit bounds what the box writes, not the inputs the host gives it."""
    raw = tmp_path / "big.bin"
    raw.write_bytes(bytes(range(256)) * (3 * 4096))  # 3 MB
    policy = SandboxPolicy(
        isolation=level[0],  # type: ignore[arg-type]
        backend=level[1],  # type: ignore[arg-type]
        max_file_mb=1,
        cell_timeout_s=20,
    )
    box = open_sync_sandbox(policy)
    try:
        box.load("blob", path=raw, mode="bytes")
        r = box.execute("(len(blob), blob[255], blob[-1], blob[256])")
        assert r.error is None, r.error
        assert r.value_repr == f"({3 << 20}, 255, 255, 0)"
        r = box.execute("blob[0] = 1")
        assert r.error is not None and r.error.type == "TypeError"
        r = box.execute("open('x', 'wb').write(b'a' * (2 << 20))")  # the limit still holds
        assert r.error is not None and "File too large" in r.error.message
    finally:
        box.shutdown()
