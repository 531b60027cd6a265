"""A run whose process ends (SIGKILL, SIGTERM) is not left ``running`` forever in the store.

Real processes are started and killed: a library job under SIGKILL or an unhandled SIGTERM is
marked ``interrupted`` the next time the store is read; ``holdfast rlm ask`` turns SIGTERM into a
clean cancellation (recorded as ``cancelled``, exit status 143).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from holdfast.rlm.store import RLMTraceStore
from holdfast.store.liveness import ProcessId, process_alive, this_process
from holdfast.store.sqlite import SQLiteDB
from holdfast.testing import FakeOpenAIServer
from holdfast.testing.fake_wire import Fault
from holdfast.testing.postgres import PostgresCluster

from .helpers import code

JOB = textwrap.dedent(
    """
    import asyncio, sys
    from holdfast.rlm import RLM
    from holdfast.sandbox.types import SandboxPolicy
    from holdfast.rlm.store import RLMTraceStore
    from holdfast.store.sqlite import SQLiteDB
    from holdfast.testing import FunctionLM
    from holdfast.testing.fake_sandbox import FakeSandbox

    async def hang(messages, **kw):
        print("calling", flush=True)
        await asyncio.Event().wait()

    store = RLMTraceStore(sys.argv[1])
    RLM(FunctionLM(hang, model="fake:hang"), mode="rlm", store=store,
        sandbox=lambda p: FakeSandbox(SandboxPolicy(isolation="process"))).run(
        "q", context="word " * 1000)
    """
)


def _start_job(db: Path | str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", JOB, str(db)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "calling", "the job reached its model call"
    return proc


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM])
def test_a_run_whose_process_died_is_marked_interrupted(tmp_path: Path, signum: int) -> None:
    db = tmp_path / "traces.db"
    proc = _start_job(db)
    store = RLMTraceStore(SQLiteDB(db))
    (running,) = store.recent_runs()
    assert running.status == "running", "alive and running"
    proc.send_signal(signum)
    proc.communicate(timeout=10)
    (after,) = store.recent_runs()
    assert after.status == "interrupted"
    assert after.result is not None and f"pid {proc.pid}" in after.result["error"]
    assert store.get_run(after.trace_id).status == "interrupted"  # type: ignore[union-attr]
    fresh = RLMTraceStore(SQLiteDB(db)).get_run(after.trace_id)
    assert fresh is not None and fresh.status == "interrupted", "written to the store"


@pytest.mark.postgres
def test_a_killed_run_is_marked_interrupted_on_postgresql(pg_cluster: PostgresCluster) -> None:
    url = pg_cluster.create_database("rlm_liveness")
    proc = _start_job(url)
    store = RLMTraceStore(url)
    try:
        (running,) = store.recent_runs()
        assert running.status == "running"
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=10)
        (after,) = store.recent_runs()
        assert after.status == "interrupted"
        store.heartbeat([after.trace_id])  # a late beat cannot bring it back
        assert store.get_run(after.trace_id).status == "interrupted"  # type: ignore[union-attr]
    finally:
        store.close()


def test_liveness_tells_a_reused_pid_and_a_live_process_apart() -> None:
    me = this_process()
    assert process_alive(me) is True
    assert process_alive(ProcessId(me.host, me.pid, me.start.rsplit(":", 1)[0] + ":1")) is False
    assert process_alive(ProcessId("some-other-host", me.pid, me.start)) is None
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    assert process_alive(ProcessId(me.host, dead.pid, "")) is False


def test_another_hosts_run_is_judged_by_its_heartbeat(tmp_path: Path) -> None:
    store = RLMTraceStore(SQLiteDB(tmp_path / "t.db"))
    store.start_run(
        "rlm-elsewhere", parent_id=None, root_id="rlm-elsewhere", depth=0, query="q",
        model="m", sub_model=None, mode="rlm", meta={},
    )  # fmt: skip
    db = store.db.connection()
    db.execute("UPDATE rlm_runs SET host = 'far-away' WHERE trace_id = 'rlm-elsewhere'")
    assert store.get_run("rlm-elsewhere").status == "running"  # type: ignore[union-attr]
    db.execute("UPDATE rlm_runs SET heartbeat_at = heartbeat_at - 3600")
    row = store.get_run("rlm-elsewhere")
    assert row is not None and row.status == "interrupted"
    assert "no heartbeat from far-away" in (row.result or {})["error"]


def _ask(server: FakeOpenAIServer, home: Path, *extra: str) -> subprocess.Popen[str]:
    big = home / "big.txt"
    big.write_text("some words here\n" * 5000)
    env = {**os.environ, "HOLDFAST_HOME": str(home), "OPENAI_API_KEY": "sk-test"}
    return subprocess.Popen(
        [sys.executable, "-m", "holdfast.cli.main", "rlm", "ask", "what?", "-i", str(big),
         "--model", "vllm:root", "--base-url", server.base_url, "--isolation", "process",
         "--mode", "rlm", "--quiet", *extra],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


@pytest.mark.sandbox
def test_sigterm_cancels_rlm_ask_cleanly(tmp_path: Path, holdfast_home: Path) -> None:
    with FakeOpenAIServer([Fault.hang()]) as server:
        proc = _ask(server, holdfast_home)
        deadline = time.monotonic() + 30
        while not server.requests and time.monotonic() < deadline:
            time.sleep(0.02)
        assert server.requests, "the root call was sent"
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        took = time.monotonic() - sent
        deadline = time.monotonic() + 5
        while not server.disconnects and time.monotonic() < deadline:
            time.sleep(0.02)
    assert proc.returncode == 143, (out, err)
    assert "cancelled" in err and "Traceback" not in err
    assert took < 5, took
    assert server.disconnects, "the in-flight request was closed"
    store = RLMTraceStore(SQLiteDB(holdfast_home / "holdfast.db"))
    (run,) = store.recent_runs()
    assert run.status == "cancelled"


@pytest.mark.sandbox
def test_rlm_ask_wall_limit_is_a_budget_stop_not_a_timeout_error(holdfast_home: Path) -> None:
    with FakeOpenAIServer([Fault.hang()]) as server:
        proc = _ask(server, holdfast_home, "--max-wall", "1.5")
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 3, (out, err)
    assert "TimeoutError" not in err and "Traceback" not in err
    assert "wall-time budget" in out


def _options_handler(body: dict[str, Any]) -> str:
    if body["model"] == "sub":
        return "sub"
    turns = sum(1 for m in body["messages"] if m["role"] == "assistant")
    return code("print(llm_query('x'))") if turns == 0 else code("SUBMIT('done')")


@pytest.mark.sandbox
def test_rlm_ask_sends_the_output_limits_and_timeouts_it_is_given(holdfast_home: Path) -> None:
    with FakeOpenAIServer(_options_handler) as server:
        proc = _ask(
            server,
            holdfast_home,
            "--sub-model", "vllm:sub",
            "--max-output-tokens", "1234",
            "--sub-max-output-tokens", "321",
            "--call-timeout", "45",
            "--cell-timeout", "20",
        )  # fmt: skip
        out, err = proc.communicate(timeout=60)
        bodies = server.requests
    assert proc.returncode == 0, (out, err)
    limit = {b["model"]: b.get("max_tokens", b.get("max_completion_tokens")) for b in bodies}
    assert limit == {"root": 1234, "sub": 321}
    store = RLMTraceStore(SQLiteDB(holdfast_home / "holdfast.db"))
    (run,) = store.recent_runs()
    assert run.meta["call_timeout_s"] == 45 and run.meta["cell_timeout_s"] == 20


@pytest.mark.sandbox
def test_rlm_ask_refuses_a_usd_budget_over_an_unpriced_model(holdfast_home: Path) -> None:
    with FakeOpenAIServer(_options_handler) as server:
        local = _ask(server, holdfast_home, "--max-usd", "0.5")
        out, err = local.communicate(timeout=60)
        assert local.returncode == 0, "a local server's model is priced: free"
        unknown = ["--model", "openai:house-model", "--max-usd", "0.5"]
        refused = _ask(server, holdfast_home, *unknown)
        out, err = refused.communicate(timeout=60)
        assert refused.returncode == 2, (out, err)
        assert "openai:house-model" in err and "--price" in err and "--unpriced" in err
        sent = len(server.requests)
        priced = _ask(server, holdfast_home, *unknown, "--price", "openai:house-model=0.5,1.5")
        out, err = priced.communicate(timeout=60)
        assert priced.returncode == 0, (out, err)
        assert len(server.requests) > sent
