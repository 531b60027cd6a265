"""``holdfast sandbox run`` and ``holdfast sandbox check`` through the real command group."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from holdfast.cli.sandbox import sandbox

pytestmark = pytest.mark.sandbox


def test_run_reads_stdin_loads_files_and_exits_zero(tmp_path: Path) -> None:
    doc = tmp_path / "doc.txt"
    doc.write_text("one two three")
    result = CliRunner().invoke(
        sandbox, ["run", "-", "--load", f"doc={doc}"], input="print('words:')\nlen(doc.split())\n"
    )
    assert result.exit_code == 0, result.output
    assert result.output == "words:\n3\n"


def test_run_exit_codes_for_errors_and_timeouts(tmp_path: Path) -> None:
    script = tmp_path / "bad.py"
    script.write_text("raise ValueError('nope')\n")
    result = CliRunner().invoke(sandbox, ["run", str(script), "--isolation", "process", "--json"])
    assert result.exit_code == 1
    payload = json.loads(result.output)
    assert payload["error"]["type"] == "ValueError"
    result = CliRunner().invoke(sandbox, ["run", "-", "--timeout", "0.5"], input="while True: pass")
    assert result.exit_code == 3


def test_run_rejects_a_malformed_load() -> None:
    result = CliRunner().invoke(sandbox, ["run", "-", "--load", "nonsense"], input="1")
    assert result.exit_code != 0
    assert "NAME=PATH" in str(result.exception)


def test_check_reports_every_feature_as_json() -> None:
    result = CliRunner().invoke(sandbox, ["check", "--json"])
    report = json.loads(result.output)
    names = {c["name"] for c in report["capabilities"]}
    assert {"bubblewrap", "seccomp", "cgroup", "process level"} <= names
    assert result.exit_code == (0 if report["namespace_ok"] else 1)


def test_run_escapes_terminal_control_sequences_from_the_box(tmp_path: Path) -> None:
    """Clear screen, window title and an OSC 52 clipboard write, on every stream and in the
    error and the value: printed visibly escaped, never sent to the terminal."""
    evil = "\x1b[2J\x1b]0;pwned\x07\x1b]52;c;aGVsbG8=\x07\x9b31m"
    code = (
        f"import sys\nprint({evil!r})\nprint({evil!r}, file=sys.stderr)\n"
        f"class Boom(Exception): pass\n"
        f"v = {evil!r}\nraise Boom({evil!r})\n"
    )
    for args in (["run", "-"], ["run", "-", "--json"]):
        result = CliRunner().invoke(sandbox, args, input=code)
        assert result.exit_code == 1, result.output
        for text in (result.output, result.stderr):
            assert "\x1b" not in text and "\x07" not in text and "\x9b" not in text
        assert "pwned" in result.output
    result = CliRunner().invoke(sandbox, ["run", "-"], input=f"{evil!r}\n")
    assert result.exit_code == 0
    assert "\x1b" not in result.output and "pwned" in result.output
