"""RLM jobs outlive the server that ran them: finished ones keep their result, unfinished ones
are reported interrupted (after a clean stop, and after the server process is killed)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tests.server.conftest import BASE
from tests.server.rlm_helpers import SlowSub, counting_root, echo_sub, looping_root

from holdfast.memory import MemoryConfig, MemoryStore, NoEmbedder
from holdfast.server import ModelSpec, ServerSettings, Services, create_app
from holdfast.testing import FakeOpenAIServer

LOG = "INFO ok\n" * 50 + "ERROR boom\n" * 7


def _settings(slow: SlowSub) -> ServerSettings:
    return ServerSettings(
        isolation="process",
        models={
            "counter": ModelSpec(root=counting_root(), sub=echo_sub(), mode="rlm"),
            "looper": ModelSpec(root=looping_root(), sub=slow.lm(), mode="rlm"),
        },
    )


def _server(settings: ServerSettings) -> tuple[Services, str]:
    svc = Services.open(settings)
    svc.memory_factory = lambda: MemoryStore(MemoryConfig(), embedder=NoEmbedder(warn=False))
    _, token = svc.tokens.create("bob")  # type: ignore[union-attr]
    return svc, token


def _client(svc: Services, settings: ServerSettings, token: str) -> TestClient:
    app = create_app(settings, services=svc)
    return TestClient(app, base_url=BASE, headers={"Authorization": f"Bearer {token}"})


@pytest.fixture
def slow() -> Iterator[SlowSub]:
    yield SlowSub(30.0)


def test_jobs_answer_after_a_restart(holdfast_home: Path, slow: SlowSub) -> None:
    settings = _settings(slow)
    svc, token = _server(settings)
    try:
        with _client(svc, settings, token) as c:
            done = c.post(
                "/api/v1/rlm/jobs",
                json={"query": "How many errors?", "model": "counter", "inputs": {"context": LOG}},
            ).json()
            done = c.get(f"/api/v1/rlm/jobs/{done['id']}/result", params={"wait_s": 60}).json()
            assert done["status"] == "ok"
            running = c.post(
                "/api/v1/rlm/jobs",
                json={"query": "q", "model": "looper", "inputs": {"context": LOG}},
            ).json()
            deadline = time.monotonic() + 30
            while slow.started < 4 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert slow.started == 4
        # the server stopped (its lifespan ended) while the looper was mid-call
    finally:
        svc.close()

    svc, token = _server(settings)  # a new server over the same home
    try:
        with _client(svc, settings, token) as c:
            again = c.get(f"/api/v1/rlm/jobs/{done['id']}").json()
            assert again["status"] == "ok"
            assert again["result"]["answer"] == done["result"]["answer"]
            assert again["trace_id"] == done["trace_id"]
            lost = c.get(f"/api/v1/rlm/jobs/{running['id']}/result", params={"wait_s": 0}).json()
            assert lost["status"] == "interrupted", lost
            assert lost["error"]["code"] == "interrupted"
            assert "will not be resumed" in lost["error"]["message"]
            assert lost["trace_id"] and lost["principal"] == "bob"
            # its trace up to the stop is still readable
            assert c.get(f"/api/v1/rlm/traces/{lost['trace_id']}").status_code == 200
            listed = {j["id"]: j["status"] for j in c.get("/api/v1/rlm/jobs").json()}
            assert listed[done["id"]] == "ok" and listed[running["id"]] == "interrupted"
            # a stored, finished job: cancel is a no-op, events end at once
            assert c.post(f"/api/v1/rlm/jobs/{running['id']}/cancel").json()["status"] == (
                "interrupted"
            )
            events = c.get(f"/api/v1/rlm/jobs/{running['id']}/events").text
            assert "event: end" in events
            assert c.get("/api/v1/rlm/jobs/job-nope").status_code == 404
    finally:
        svc.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str, token: str | None = None) -> Any:
    req = urllib.request.Request(url)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def test_jobs_of_a_killed_server_are_reported_interrupted(
    holdfast_home: Path, tmp_path: Path
) -> None:
    """SIGKILL: no clean-up runs, the record says 'running'; the next reader sees the process is
    gone and reports the job interrupted."""
    with FakeOpenAIServer(latency=120.0, default_reply="never sent") as fake:
        port = _free_port()
        env = dict(
            os.environ,
            HOLDFAST_HOME=str(holdfast_home),
            OPENAI_BASE_URL=fake.base_url,
            OPENAI_API_KEY="test-key",
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", "holdfast.cli.main", "serve", "--no-auth", "--port", str(port),
             "--embedder", "none", "--isolation", "process", "--log-level", "warning"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 90
            while True:
                try:
                    _get(f"{url}/api/v1/rlm/jobs")
                    break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise AssertionError(proc.stderr.read() if proc.stderr else "") from None
                    time.sleep(0.2)
            body = json.dumps(
                {"query": "q", "model": "rlm:openai:gpt-5-mini", "inputs": {"context": LOG},
                 "mode": "rlm"}
            ).encode()  # fmt: skip
            req = urllib.request.Request(
                f"{url}/api/v1/rlm/jobs", data=body, headers={"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(req, timeout=10) as resp:
                job = json.loads(resp.read())
            deadline = time.monotonic() + 60
            while (seen := _get(f"{url}/api/v1/rlm/jobs/{job['id']}"))["status"] != "running":
                assert seen["status"] == "queued" and time.monotonic() < deadline, seen
                time.sleep(0.05)
            while not fake.requests:  # the root call is in flight
                assert time.monotonic() < deadline
                time.sleep(0.05)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
            if proc.stderr:
                proc.stderr.close()

    settings = ServerSettings(isolation="process")
    svc, token = _server(settings)
    try:
        with _client(svc, settings, token) as c:
            lost = c.get(f"/api/v1/rlm/jobs/{job['id']}").json()
    finally:
        svc.close()
    assert lost["status"] == "interrupted", lost
    assert f"pid {proc.pid}" in lost["error"]["message"]
    assert lost["server"]["pid"] == proc.pid
