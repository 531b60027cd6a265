"""RLM jobs over HTTP: submit, wait, trace, replay, budgets against the server's caps, cancel."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from tests.server.conftest import BASE
from tests.server.rlm_helpers import SlowSub, counting_root, echo_sub, looping_root

from holdfast.server import ModelSpec, RLMCaps, ServerSettings, Services, create_app

LOG = "INFO ok\n" * 50 + "ERROR boom\n" * 7


@pytest.fixture
def slow() -> SlowSub:
    return SlowSub(30.0)


@pytest.fixture
def rlm_app(services: Services, tmp_path: Path, slow: SlowSub) -> FastAPI:
    settings = ServerSettings(
        isolation="process",
        input_roots=(tmp_path / "inputs",),
        caps=RLMCaps(max_iterations=10, max_usd=1.0),
        models={
            "counter": ModelSpec(root=counting_root(), sub=echo_sub(), mode="rlm"),
            "looper": ModelSpec(root=looping_root(), sub=slow.lm(), mode="rlm"),
        },
    )
    (tmp_path / "inputs").mkdir()
    return create_app(settings, services=services)


@pytest.fixture
def rc(rlm_app: FastAPI, token: str) -> Iterator[TestClient]:
    with TestClient(rlm_app, base_url=BASE, headers={"Authorization": f"Bearer {token}"}) as c:
        yield c


def test_job_runs_and_its_trace_is_served(rc: TestClient) -> None:
    r = rc.post(
        "/api/v1/rlm/jobs",
        json={"query": "How many errors?", "model": "counter", "inputs": {"context": LOG}},
    )
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["status"] in ("queued", "running")
    done = rc.get(f"/api/v1/rlm/jobs/{job['id']}/result", params={"wait_s": 60}).json()
    assert done["status"] == "ok", done
    assert done["result"]["answer"] == "7 errors (a count of errors)"
    assert done["result"]["sub_calls"] == 1
    trace_id = done["trace_id"]
    tree = rc.get(f"/api/v1/rlm/traces/{trace_id}").json()
    kinds = [e["kind"] for e in tree["runs"][0]["events"]]
    assert kinds[0] == "run_start" and "iteration" in kinds and "sub_call" in kinds
    assert tree["runs"][0]["meta"]["principal"] == "api:alice"
    assert LOG not in str(tree)  # inputs are never traced
    assert [t["trace_id"] for t in rc.get("/api/v1/rlm/traces").json()] == [trace_id]

    replayed = rc.post(f"/api/v1/rlm/traces/{trace_id}/replay", json={"inputs": {"context": LOG}})
    assert replayed.status_code == 200, replayed.text
    assert replayed.json()["same_answer"] is True


def test_budget_caps_are_refused_not_shrunk(rc: TestClient) -> None:
    r = rc.post(
        "/api/v1/rlm/jobs",
        json={
            "query": "q",
            "model": "counter",
            "inputs": {"context": LOG},
            "budget": {"max_usd": 5},
        },
    )
    assert r.status_code == 400
    assert "cap of 1.0" in r.json()["error"]["message"]
    r = rc.post(
        "/api/v1/rlm/jobs",
        json={
            "query": "q",
            "model": "counter",
            "inputs": {"context": LOG},
            "budget": {"max_wallclock": 5},
        },
    )
    assert r.status_code == 400 and "unknown budget fields" in r.json()["error"]["message"]
    r = rc.post(
        "/api/v1/rlm/jobs", json={"query": "q", "model": "nobody", "inputs": {"context": LOG}}
    )
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"


def test_out_of_budget_job_ends_with_its_partial_result(rc: TestClient) -> None:
    r = rc.post(
        "/api/v1/rlm/jobs",
        json={
            "query": "q",
            "model": "counter",
            "inputs": {"context": LOG},
            "budget": {"max_iterations": 1},
        },
    )
    done = rc.get(f"/api/v1/rlm/jobs/{r.json()['id']}/result", params={"wait_s": 60}).json()
    assert done["status"] == "budget_exceeded"
    assert done["error"]["limit"] == "iterations"


def test_cancel_stops_the_job_and_its_sub_calls(rc: TestClient, slow: SlowSub) -> None:
    job = rc.post(
        "/api/v1/rlm/jobs", json={"query": "q", "model": "looper", "inputs": {"context": LOG}}
    ).json()
    deadline = time.monotonic() + 30
    while slow.started < 4 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert slow.started == 4
    t0 = time.monotonic()
    cancelled = rc.post(f"/api/v1/rlm/jobs/{job['id']}/cancel").json()
    assert cancelled["status"] == "cancelled"
    assert time.monotonic() - t0 < 3
    assert slow.cancelled == 4 and slow.finished == 0


def test_paths_only_inside_the_input_roots(rc: TestClient, tmp_path: Path) -> None:
    (tmp_path / "inputs" / "app.log").write_text(LOG)
    (tmp_path / "secret.txt").write_text("ERROR " * 3)
    ok = rc.post(
        "/api/v1/rlm/jobs",
        json={
            "query": "q",
            "model": "counter",
            "inputs": {"context": {"path": str(tmp_path / "inputs" / "app.log")}},
        },
    )
    assert ok.status_code == 202
    done = rc.get(f"/api/v1/rlm/jobs/{ok.json()['id']}/result", params={"wait_s": 60}).json()
    assert done["result"]["answer"].startswith("7 errors")
    for bad in (
        str(tmp_path / "secret.txt"),
        str(tmp_path / "inputs" / ".." / "secret.txt"),
        "/etc/passwd",
    ):
        r = rc.post(
            "/api/v1/rlm/jobs",
            json={"query": "q", "model": "counter", "inputs": {"context": {"path": bad}}},
        )
        assert r.status_code == 400, bad
        assert "outside" in r.json()["error"]["message"]


def test_no_file_access_without_input_roots(client: TestClient) -> None:
    r = client.post(
        "/api/v1/rlm/jobs",
        json={
            "query": "q",
            "model": "rlm:openai:gpt-x",
            "inputs": {"context": {"path": "/etc/passwd"}},
        },
    )
    assert r.status_code == 400 and "--input-root" in r.json()["error"]["message"]
