"""Three machines on a network: PostgreSQL (and the model) on one, a worker on each of two others.

The machines are Linux network namespaces joined by veth pairs (holdfast.testing.netns); every
command is the real ``holdfast`` CLI in its own process, inside its machine's namespace, with its
own empty Holdfast home and the database only over TCP. The task is submitted from the database
machine (A), its worker on machine B is killed (SIGKILL, the whole process group) while it holds
the lease and waits on the model, and the worker on machine C takes it over: the same virtual
session continues, the receipts verify from A, the memory item B wrote is recalled on C, and the
RLM trace B's ``analyze`` job made is shown on C and on A.

Needs root (network namespaces), ``ip`` (iproute2) and the PostgreSQL server binaries; it skips
without them, except under CI (``CI`` or ``HOLDFAST_REQUIRE_NETNS`` set; ``.ci/run`` sets the
latter), where a skip would hide the test, and it fails instead.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from holdfast.testing import netns
from holdfast.testing.postgres import MISSING, PostgresCluster, find_bin_dir

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from _multihost_model import FACT, HOLD_TURN, SCRIPT  # noqa: E402

HOLDFAST = [sys.executable, "-m", "holdfast.cli.main"]
PASSWORD = "multihost-secret"
LEASE_TTL = 3.0
ERRORS = 4000


def _skip_or_fail(reason: str) -> None:
    if os.environ.get("CI") or os.environ.get("HOLDFAST_REQUIRE_NETNS"):
        pytest.fail(f"the multi-host test cannot run under CI: {reason}")
    pytest.skip(reason)


def _wait(what: str, check: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.1)


def _stop(proc: subprocess.Popen[str], sig: int = signal.SIGKILL) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    if proc.stdout is not None:
        proc.stdout.close()


@pytest.fixture
def lab() -> Iterator[netns.HostLab]:
    reason = netns.unavailable()
    if reason is not None:
        _skip_or_fail(reason)
    if find_bin_dir() is None:
        _skip_or_fail(MISSING)
    with netns.HostLab(["b", "c"]) as made:
        yield made


@pytest.fixture
def cluster(lab: netns.HostLab) -> Iterator[PostgresCluster]:
    pg = PostgresCluster(
        listen_addresses=",".join(lab.hub_addresses),
        host_rules=(f"host all mh {lab.cidr} scram-sha-256",),
        netns=lab.hub,
    )
    try:
        pg.start()
        pg.create_database("multihost")
        pg.add_password_user("mh", PASSWORD, database="multihost")
        yield pg
    finally:
        pg.destroy()


class Machines:
    """The environment and commands of each machine (``a`` is the hub: PostgreSQL's)."""

    def __init__(self, lab: netns.HostLab, tmp: Path, model_port: int, key: Path) -> None:
        self.lab = lab
        self.env: dict[str, dict[str, str]] = {}
        for host, link in (("a", "b"), ("b", "b"), ("c", "c")):
            home = tmp / f"home-{host}"
            home.mkdir()
            addr = lab.hub_address(link)
            self.env[host] = {
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
                "HOLDFAST_HOME": str(home),
                "HOLDFAST_DATABASE_URL": f"postgresql://mh:{PASSWORD}@{addr}:5432/multihost",
                "HOLDFAST_RECEIPT_KEY": str(key),
                "HOLDFAST_MEMORY_EMBEDDER": "none",
                "OPENAI_BASE_URL": f"http://{addr}:{model_port}/v1",
                "OPENAI_API_KEY": "multihost",
                "LC_ALL": "C.UTF-8",
            }

    def ns(self, host: str) -> str:
        return "hub" if host == "a" else host

    def run(self, host: str, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        proc = self.lab.run(self.ns(host), [*HOLDFAST, *args], self.env[host], timeout=60)
        if ok:
            assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
        return proc

    def json(self, host: str, *args: str) -> Any:
        return json.loads(self.run(host, *args).stdout)

    def worker(self, host: str, log: Path) -> subprocess.Popen[str]:
        argv = [*HOLDFAST, "worker", "--lease-ttl", str(LEASE_TTL), "--poll", "0.2"]
        argv += ["--log-level", "WARNING"]
        with log.open("w") as out:  # the child keeps its own copy of the descriptor
            return self.lab.popen(
                self.ns(host), argv, self.env[host], stdout=out, stderr=subprocess.STDOUT
            )

    def connects(self, host: str, address: str, port: int) -> bool:
        code = (
            "import socket,sys\n"
            "try:\n"
            f"    socket.create_connection(({address!r}, {port}), timeout=2).close()\n"
            "except OSError:\n"
            "    sys.exit(1)\n"
        )
        return (
            self.lab.run(self.ns(host), [sys.executable, "-c", code], self.env[host]).returncode
            == 0
        )


def _model_server(lab: netns.HostLab, log: Path, hold: Path) -> tuple[subprocess.Popen[str], int]:
    proc = lab.popen(
        "hub",
        [sys.executable, str(HERE / "_multihost_model.py"), str(log), str(hold)],
        {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": os.pathsep.join(sys.path)},
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 20)
    if not ready:
        _stop(proc)
        raise AssertionError("the model server did not start in 20s")
    return proc, int(proc.stdout.readline())


@pytest.mark.postgres
def test_a_task_moves_between_machines_with_session_receipts_memory_and_traces(
    lab: netns.HostLab, cluster: PostgresCluster, tmp_path: Path
) -> None:
    log, hold = tmp_path / "model.jsonl", tmp_path / "held"
    model, port = _model_server(lab, log, hold)
    procs: list[subprocess.Popen[str]] = [model]
    try:
        key = tmp_path / "receipt.key"
        keygen = subprocess.run(
            [*HOLDFAST, "receipts", "keygen", "--out", str(key)],
            env={**os.environ, "HOLDFAST_HOME": str(tmp_path)},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert keygen.returncode == 0, keygen.stderr
        m = Machines(lab, tmp_path, port, key)

        # the isolation is real: B reaches PostgreSQL on its link, not on a loopback, not C
        assert m.connects("b", lab.hub_address("b"), 5432)
        assert not m.connects("b", "127.0.0.1", 5432), "B's loopback is not the database's"
        assert not m.connects("b", lab.address("c"), 5432), "B has no route to C"
        assert m.connects("c", lab.hub_address("c"), 5432)
        assert not m.connects("c", lab.hub_address("b"), 5432), "C reaches only its own link"

        ws = tmp_path / "ws"
        ws.mkdir()
        # above the size an RLM job answers with one direct call: the job runs its REPL loop
        (ws / "app.log").write_text("ok\nERROR disk full\n" * ERRORS)
        task_input = {
            "model": "openai:fake-model",
            "embedder": "none",
            "analyze_sandbox": "process",
            "memory_namespace": "default",
        }
        submitted = m.json(
            "a",
            "task",
            "submit",
            "agent",
            "--goal",
            "Port the parser",
            "--workspace",
            str(ws),
            "--input",
            json.dumps(task_input),
            "--policy",
            json.dumps({"rules": [{"tool": "*", "action": "allow"}]}),
            "--json",
        )
        task_id = submitted["id"]

        # B runs the task until it waits on the model, mid-task, holding the lease; then dies
        worker_b = m.worker("b", tmp_path / "worker-b.log")
        procs.append(worker_b)
        _wait("B to be waiting on the model", hold.exists, 30)
        held = m.json("a", "task", "show", task_id, "--json")
        assert held["status"] == "running" and held["lease_owner"], held
        owner_b = held["lease_owner"]
        _stop(worker_b)

        worker_c = m.worker("c", tmp_path / "worker-c.log")
        procs.append(worker_c)

        def finished() -> Any:
            row = m.json("a", "task", "show", task_id, "--json")
            return row if row["status"] not in ("queued", "running") else None

        row = _wait("C to finish the task", finished, 40)
        _stop(worker_c, signal.SIGTERM)
        assert row["status"] == "succeeded", (row, (tmp_path / "worker-c.log").read_text())

        receipts = [
            json.loads(line)["body"]
            for line in m.run("a", "receipts", "show", task_id, "--json").stdout.splitlines()
        ]

        def payloads(kind: str) -> list[dict[str, Any]]:
            return [r["payload"] for r in receipts if r["kind"] == kind]

        vid = payloads("session_started")[0]["vsession"]
        assert len(payloads("session_started")) == 1
        assert [p["vsession"] for p in payloads("session_resumed")] == [vid]
        assert row["result"]["vsession"] == vid and row["result"]["turns"] == len(SCRIPT)
        owners = [p["worker"] for p in payloads("leased")]
        assert owners[0] == owner_b and len(set(owners)) == 2, owners

        # each agent turn was asked once, except the one B died waiting on (C asked it again)
        asked = [json.loads(line) for line in log.read_text().splitlines()]
        turns = [a["turn"] for a in asked if a["kind"] == "agent"]
        assert turns == [0, 1, HOLD_TURN, HOLD_TURN, 3, 4], turns
        assert {a["kind"] for a in asked} == {"agent", "rlm"}, "the analyze job ran the RLM loop"

        # the receipts verify from A, with the public key alone
        verified = m.run("a", "receipts", "verify", task_id, "--key", f"{key}.pub")
        assert verified.stdout.startswith("ok:") and "signatures valid" in verified.stdout

        # the memory item B's turn wrote is recalled on C: by the task, and by C's CLI
        recall = json.dumps(asked[-1]["messages"], ensure_ascii=False)
        assert FACT in recall
        found = m.json("c", "memory", "search", "lexer", "--json")
        assert any(FACT in json.dumps(hit, ensure_ascii=False) for hit in found), found

        # the RLM trace of B's analyze job is read on C and on A
        runs = [
            json.loads(line) for line in m.run("c", "rlm", "trace", "--json").stdout.splitlines()
        ]
        assert len(runs) == 1, runs
        trace_id = runs[0]["trace_id"]
        for host in ("c", "a"):
            shown = m.run(host, "rlm", "trace", trace_id, "--json").stdout.splitlines()
            events = [json.loads(line) for line in shown if line.strip()]
            assert any(e.get("trace_id") == trace_id for e in events)
            assert str(ERRORS) in "\n".join(shown)
    finally:
        for proc in reversed(procs):
            _stop(proc)


def test_the_multi_host_test_fails_instead_of_skipping_where_it_must_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("HOLDFAST_REQUIRE_NETNS", raising=False)
    with pytest.raises(pytest.skip.Exception):
        _skip_or_fail("no namespaces here")
    for name in ("CI", "HOLDFAST_REQUIRE_NETNS"):
        with monkeypatch.context() as mp:
            mp.setenv(name, "1")
            with pytest.raises(pytest.fail.Exception, match="no namespaces here"):
                _skip_or_fail("no namespaces here")
