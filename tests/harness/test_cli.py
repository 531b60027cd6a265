"""The task, receipts, worker, approve and deny commands, end to end on the SQLite store."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from harness_util import LOAD_KINDS

from holdfast.cli.main import cli
from holdfast.harness import Ed25519Signer


def run(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)


def test_submit_work_approve_and_verify_signed_receipts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    key = tmp_path / "receipts.pem"
    signer = Ed25519Signer.generate()
    key.write_bytes(signer.private_pem())
    key.chmod(0o600)
    # one setting for every writer: the CLI's submit and approve sign like the worker does
    monkeypatch.setenv("HOLDFAST_RECEIPT_KEY", str(key))
    (tmp_path / "pub.pem").write_bytes(signer.public_pem())
    spec = {
        "kind": "scripted",
        "goal": "count twice",
        "workspace": str(ws),
        "input": {
            "ledger": "fx.db",
            "steps": [
                {"tool": "counter.add", "args": {"counter": "c"}},
                {"tool": "counter.add_unkeyed", "args": {"counter": "c"}},
            ],
        },
        "policy": {
            "rules": [
                {"tool": "counter.add", "action": "allow"},
                {"tool": "counter.add_unkeyed", "action": "ask"},
            ]
        },
    }
    tid = run("task", "submit", *LOAD_KINDS, "--spec", "-", input=json.dumps(spec)).output.strip()
    assert tid.startswith("task-")
    worker = [
        "worker",
        *LOAD_KINDS,
        "--exit-when-idle",
        "--poll",
        "0.05",
        "--log-level",
        "ERROR",
    ]
    run(*worker)
    shown = run("task", "show", tid, "--json")
    data = json.loads(shown.output)
    assert data["status"] == "waiting_approval"
    step = data["waiting"]["step"]
    assert "approve" in run("task", "show", tid).output
    assert "approved" in run("approve", tid, step, "--by", "ann").output
    run(*worker)
    assert json.loads(run("task", "show", tid, "--json").output)["status"] == "succeeded"
    listed = json.loads(run("task", "list", "--json", "--status", "succeeded").output)
    assert [t["id"] for t in listed] == [tid]
    logs = run("task", "logs", tid).output
    assert "approval_requested" in logs and "succeeded" in logs
    lines = run("receipts", "show", tid, "--json").output.splitlines()
    assert json.loads(lines[0])["body"]["kind"] == "submitted"
    ok = run("receipts", "verify", tid, "--key", str(tmp_path / "pub.pem"), "--json")
    result = json.loads(ok.output)
    assert result["ok"] and result["signed"] == result["count"] >= 5
    strict = run("receipts", "verify", tid, "--require-signatures", "--json")
    assert json.loads(strict.output)["ok"]


def test_steering_commands(tmp_path: Path) -> None:
    tid = run("task", "submit", "noop", *LOAD_KINDS).output.strip()
    assert "applied" in run("task", "pause", tid).output
    assert "applied" in run("task", "resume", tid).output
    assert "sent" in run("task", "steer", tid, "look at the logs").output
    out = json.loads(run("task", "stop", tid, "--json").output)
    assert out == {"task": tid, "command": "stop", "outcome": "applied", "status": "cancelled"}


def test_exit_codes_for_bad_input_and_broken_chains(tmp_path: Path) -> None:
    def holdfast(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "holdfast.cli.main", *args],
            capture_output=True,
            text=True,
            timeout=60,
        )

    bad = holdfast("task", "submit", "scripted", *LOAD_KINDS, "--input", "{not json")
    assert bad.returncode == 2 and "--input is not valid JSON" in bad.stderr
    missing = holdfast("receipts", "verify", "task-nope")
    assert missing.returncode == 2 and "no task 'task-nope'" in missing.stderr
    tid = holdfast("task", "submit", "noop", *LOAD_KINDS).stdout.strip()
    assert holdfast("receipts", "verify", tid).returncode == 0
    deny = holdfast("deny", tid, "some-step")
    assert deny.returncode == 2 and "has no step 'some-step' waiting" in deny.stderr
