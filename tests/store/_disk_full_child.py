"""The disk-full scenario of test_sqlite_faults.py, run inside its own user and mount namespaces.

It mounts a 6 MiB tmpfs, keeps the store on it, runs two worker processes on scripted tasks,
fills the disk to the last byte while they work, checks what a person and the workers see, frees
the space, and checks that every accepted task finished exactly once. Prints one JSON line.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from holdfast.harness import Harness
from holdfast.store import StoreFull
from holdfast.store.sqlite_backend import SQLiteBackend
from holdfast.testing.effects import EffectLedger
from holdfast.testing.kinds import kinds_registry

STEPS = 3


def spec(ws: Path) -> dict[str, Any]:
    steps = [
        {"tool": "counter.add", "args": {"counter": "c", "amount": i + 1}} for i in range(STEPS)
    ]
    return {
        "kind": "scripted",
        "workspace": str(ws),
        "input": {"ledger": "effects.db", "steps": steps, "step_sleep": 0.05},
        "policy": {"rules": [{"tool": "*", "action": "allow"}]},
        "max_attempts": 1000,
    }


def holdfast(*args: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "holdfast.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return {"code": out.returncode, "stderr": out.stderr[-2000:], "stdout": out.stdout[-500:]}


def fill(path: Path) -> None:
    """Write until the filesystem refuses even one more byte."""
    with open(path, "wb", buffering=0) as fh:
        for size in (1 << 16, 4096, 512, 1):
            chunk = b"\0" * size
            while True:
                try:
                    fh.write(chunk)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break


def wait(pred: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)


def main() -> int:
    base = Path(sys.argv[1])
    mnt = base / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mnt)], check=True)
    ws = base / "ws"
    ws.mkdir()
    db = mnt / "holdfast.db"
    log_path = base / "workers.log"
    os.environ["HOLDFAST_HOME"] = str(base / "home")
    report: dict[str, Any] = {}

    h = Harness.open(db, registry=kinds_registry())
    accepted = [h.submit(spec(ws)).id for _ in range(6)]
    args = [sys.executable, "-m", "holdfast.cli.main", "worker", "--database-url", str(db)]
    args += ["--load", "holdfast.testing.kinds:KINDS", "--poll", "0.05", "--concurrency", "2"]
    args += ["--lease-ttl", "5", "--heartbeat", "0.5", "--log-level", "WARNING"]
    with open(log_path, "ab") as log:
        workers = [subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log) for _ in range(2)]
    try:
        wait(lambda: h.list_tasks(status="running"), 60, "a running task")
        backend = h.store.backend
        assert isinstance(backend, SQLiteBackend)
        backend.db.connection().execute("PRAGMA wal_checkpoint(TRUNCATE)")
        filler = mnt / "filler"
        fill(filler)

        try:
            accepted.append(h.submit(spec(ws)).id)
            report["submit_error"], report["submit_code"] = "accepted while full", None
        except StoreFull as exc:
            report["submit_error"], report["submit_code"] = exc.message, exc.code
        report["cli_submit"] = holdfast(
            "task", "submit", "noop", "--load", "holdfast.testing.kinds:KINDS",
            "--database-url", str(db),
        )  # fmt: skip
        report["cli_list"] = holdfast("task", "list", "--database-url", str(db))
        time.sleep(3.0)  # the workers keep meeting the full disk
        report["workers_alive_while_full"] = [w.poll() is None for w in workers]

        filler.unlink()
        accepted += [h.submit(spec(ws)).id for _ in range(2)]
        wait(lambda: all(h.get(t).terminal for t in accepted), 150, "every task to end")
        report["workers_alive_after"] = [w.poll() is None for w in workers]

        statuses: dict[str, int] = {}
        for t in accepted:
            statuses[h.get(t).status] = statuses.get(h.get(t).status, 0) + 1
        report["statuses"] = statuses
        report["accepted"] = len(accepted)
        report["all_verify"] = all(h.verify(t).ok for t in accepted)
        ledger = EffectLedger(ws / "effects.db")
        applied = ledger.applied_keys()
        report["effects_exactly_once"] = len(applied) == len(accepted) * STEPS and ledger.value(
            "c"
        ) == len(accepted) * sum(range(1, STEPS + 1))
        ledger.close()
    finally:
        for w in workers:
            if w.poll() is None:
                w.send_signal(signal.SIGTERM)
        for w in workers:
            try:
                w.wait(30)
            except subprocess.TimeoutExpired:
                w.kill()
        h.close()
    report["worker_log"] = log_path.read_text(errors="replace")[-4000:]
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
