"""Writing a workspace file (the agent's ``write_file``, the ``file.write`` step) keeps an
existing file's mode and gives a new file what the umask allows, never the temporary file's
0600."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from holdfast.agent.workspace import Workspace, current_umask, replace_text
from holdfast.harness import Harness
from holdfast.testing.kinds import kinds_registry


@pytest.fixture
def umask_027() -> Iterator[None]:
    old = os.umask(0o027)
    try:
        yield
    finally:
        os.umask(old)


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_the_umask_is_read_without_changing_it(umask_027: None) -> None:
    assert current_umask() == 0o027
    assert current_umask() == 0o027


@pytest.mark.parametrize("existing", [0o755, 0o644, 0o600, 0o640])
def test_write_keeps_an_existing_files_mode(tmp_path: Path, existing: int) -> None:
    target = tmp_path / "run.sh"
    target.write_text("old")
    target.chmod(existing)
    Workspace(tmp_path).write("run.sh", "new")
    assert target.read_text() == "new" and mode(target) == existing


def test_a_new_file_honours_the_umask(tmp_path: Path, umask_027: None) -> None:
    Workspace(tmp_path).write("sub/new.txt", "x")
    assert mode(tmp_path / "sub" / "new.txt") == 0o640
    patched = tmp_path / "p.txt"
    patched.write_text("a b")
    patched.chmod(0o664)
    Workspace(tmp_path).patch("p.txt", "a", "c")
    assert mode(patched) == 0o664 and patched.read_text() == "c b"


def test_no_temporary_file_is_left_when_the_write_fails(tmp_path: Path) -> None:
    root = tmp_path / "root"
    target = root / "d"
    target.mkdir(parents=True)  # a directory where a file was expected: the rename fails
    with pytest.raises(OSError):
        replace_text(target, "x")
    assert sorted(p.name for p in root.iterdir()) == ["d"]


def test_the_file_write_step_keeps_modes(tmp_path: Path, umask_027: None) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "tool.sh").write_text("#!/bin/sh\n")
    (ws / "tool.sh").chmod(0o750)
    with Harness.open(tmp_path / "h.db", registry=kinds_registry()) as h:
        t = h.submit(
            {
                "kind": "scripted",
                "workspace": str(ws),
                "input": {
                    "steps": [
                        {"tool": "file.write", "args": {"path": "tool.sh", "text": "echo\n"}},
                        {"tool": "file.write", "args": {"path": "out/new.txt", "text": "n"}},
                    ]
                },
                "policy": {"rules": [{"tool": "*", "action": "allow"}]},
            }
        )
        h.run_until_idle()
        assert h.get(t.id).status == "succeeded"
    assert mode(ws / "tool.sh") == 0o750 and (ws / "tool.sh").read_text() == "echo\n"
    assert mode(ws / "out" / "new.txt") == 0o640
