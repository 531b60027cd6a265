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
