"""The control plane over HTTP: submit, inspect, steer, approve, receipts, errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tests.server.conftest import scripted_spec

from holdfast.harness import WorkerSettings
from holdfast.server import ServerSettings, Services

FAST = WorkerSettings(poll_s=0.01, lease_ttl_s=5)


def test_submit_approve_and_finish_receipted_with_the_principal(
    client: TestClient, services: Services, tmp_path: Path
) -> None:
    r = client.post("/api/v1/tasks", json=scripted_spec(tmp_path, ask=True))
    assert r.status_code == 201, r.text
    task = r.json()
    assert task["status"] == "queued" and "lease_token" not in task
    services.harness.run_until_idle(FAST)

    shown = client.get(f"/api/v1/tasks/{task['id']}").json()
    assert shown["status"] == "waiting_approval"
    step = shown["waiting"]["step"]
    pending = client.get("/api/v1/approvals").json()
    assert [(p["task"], p["step"]) for p in pending] == [(task["id"], step)]

    r = client.post(f"/api/v1/tasks/{task['id']}/approve", json={"step": step, "ttl_s": 60})
    assert r.status_code == 200, r.text
    assert r.json()["decided_by"] == "api:alice"
    services.harness.run_until_idle(FAST)
    assert client.get(f"/api/v1/tasks/{task['id']}").json()["status"] == "succeeded"
    assert (tmp_path / "out" / "report.txt").read_text() == "done"

    receipts = client.get(f"/api/v1/tasks/{task['id']}/receipts").json()
    actors = {r["kind"]: r["actor"] for r in receipts}
    assert actors["submitted"] == "api:alice"
    assert actors["approval"] == "api:alice"
    assert [r["seq"] for r in receipts] == list(range(1, len(receipts) + 1))
    verified = client.get(f"/api/v1/tasks/{task['id']}/receipts/verify").json()
    assert verified["ok"] is True and verified["count"] == len(receipts)
    tail = client.get(f"/api/v1/tasks/{task['id']}/receipts", params={"after": 3}).json()
    assert tail[0]["seq"] == 4


def test_deny_makes_the_step_fail(client: TestClient, services: Services, tmp_path: Path) -> None:
    task = client.post("/api/v1/tasks", json=scripted_spec(tmp_path, ask=True)).json()
    services.harness.run_until_idle(FAST)
    step = client.get(f"/api/v1/tasks/{task['id']}").json()["waiting"]["step"]
    assert client.post(f"/api/v1/tasks/{task['id']}/deny", json={"step": step}).status_code == 200
    services.harness.run_until_idle(FAST)
    final = client.get(f"/api/v1/tasks/{task['id']}").json()
    assert final["status"] == "failed"
    assert not (tmp_path / "out" / "report.txt").exists()


def test_steering_commands(client: TestClient, services: Services, tmp_path: Path) -> None:
    task = client.post("/api/v1/tasks", json=scripted_spec(tmp_path)).json()
    tid = task["id"]
    r = client.post(f"/api/v1/tasks/{tid}/steer", json={"message": "focus on the EU region"})
    assert r.json()["outcome"] == "queued"
    assert client.post(f"/api/v1/tasks/{tid}/pause").json()["status"] == "paused"
    assert client.post(f"/api/v1/tasks/{tid}/resume").json()["status"] == "queued"
    assert client.post(f"/api/v1/tasks/{tid}/stop").json()["status"] == "cancelled"
    kinds = [r["kind"] for r in client.get(f"/api/v1/tasks/{tid}/receipts").json()]
    assert kinds.count("steer") == 4
    listed = client.get("/api/v1/tasks", params={"status": "cancelled"}).json()
    assert [t["id"] for t in listed] == [tid]


def test_errors_are_json_with_the_library_codes(client: TestClient, tmp_path: Path) -> None:
    r = client.get("/api/v1/tasks/t-nope")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "task_not_found"
    r = client.post("/api/v1/tasks", json={"kind": "no-such-kind"})
    assert r.status_code == 400 and r.json()["error"]["code"] in ("invalid_input", "user_error")
    r = client.post("/api/v1/tasks", json={"kind": "noop", "surprise": 1})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_input"
    assert "surprise" in r.json()["error"]["message"]
    r = client.post("/api/v1/tasks/t-nope/steer", json={"message": "   "})
    assert r.status_code in (400, 404)
    r = client.get("/api/v1/tasks", params={"status": "bogus"})
    assert r.status_code == 422
    r = client.get("/api/v1/nowhere")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    done = client.post("/api/v1/tasks", json={"kind": "noop"}).json()
    r = client.post(f"/api/v1/tasks/{done['id']}/approve", json={"step": "nothing"})
    assert r.status_code in (400, 409)
    assert r.json()["error"]["code"] in ("task_state", "invalid_input")


def test_working_set_requires_an_agent_task(client: TestClient) -> None:
    task = client.post("/api/v1/tasks", json={"kind": "noop"}).json()
    r = client.get(f"/api/v1/tasks/{task['id']}/working-set")
    assert r.status_code == 400
    assert "virtual session" in r.json()["error"]["message"]


def test_openapi_schema_lists_the_api(client: TestClient) -> None:
    schema = client.get("/api/v1/openapi.json").json()
    paths = schema["paths"]
    for path in (
        "/api/v1/tasks",
        "/api/v1/tasks/{task_id}/approve",
        "/api/v1/tasks/{task_id}/receipts/verify",
        "/api/v1/tasks/{task_id}/events",
        "/api/v1/memory/search",
        "/api/v1/rlm/jobs",
        "/api/v1/rlm/traces/{trace_id}",
        "/api/v1/calls",
    ):
        assert path in paths, path
    assert schema["info"]["title"] == "Holdfast"


def test_receipts_written_through_the_api_are_signed_with_the_servers_key(
    holdfast_home: Path, tmp_path: Path
) -> None:
    from tests.server.conftest import BASE

    from holdfast.harness import load_signer
    from holdfast.server import ServerSettings, create_app

    key = tmp_path / "hmac.key"
    key.write_bytes(b"0123456789abcdef-secret")
    settings = ServerSettings(sign_key=key, load=("holdfast.testing.kinds:NOOP",))
    svc = Services.open(settings)
    try:
        _, token = svc.tokens.create("signer")  # type: ignore[union-attr]
        app = create_app(settings, services=svc)
        with TestClient(app, base_url=BASE, headers={"Authorization": f"Bearer {token}"}) as c:
            task = c.post("/api/v1/tasks", json={"kind": "noop"}).json()
            c.post(f"/api/v1/tasks/{task['id']}/steer", json={"message": "hello"})
            receipts = c.get(f"/api/v1/tasks/{task['id']}/receipts").json()
            assert receipts and all(r["sig"] for r in receipts)
            ok = c.get(
                f"/api/v1/tasks/{task['id']}/receipts/verify",
                params={"require_signatures": True},
            ).json()
            assert ok["ok"] is True
        from holdfast.harness import Harness

        with Harness.open(svc.home_db) as h:
            assert h.verify(task["id"], signer=load_signer(str(key)), require_signatures=True).ok
            other = tmp_path / "other.key"
            other.write_bytes(b"another-secret-of-16+")
            assert not h.verify(task["id"], signer=load_signer(str(other))).ok
    finally:
        svc.close()


def _steer_and_verify(settings: ServerSettings) -> tuple[str, list[dict[str, Any]], Path]:
    from tests.server.conftest import BASE

    from holdfast.server import create_app

    svc = Services.open(settings)
    try:
        _, token = svc.tokens.create("signer")  # type: ignore[union-attr]
        app = create_app(settings, services=svc)
        with TestClient(app, base_url=BASE, headers={"Authorization": f"Bearer {token}"}) as c:
            task = c.post("/api/v1/tasks", json={"kind": "noop"}).json()
            c.post(f"/api/v1/tasks/{task['id']}/steer", json={"message": "hello"})
            c.post(f"/api/v1/tasks/{task['id']}/pause")
            receipts = c.get(f"/api/v1/tasks/{task['id']}/receipts").json()
        return task["id"], receipts, svc.home_db
    finally:
        svc.close()


@pytest.mark.parametrize("where", ["env", "home"])
def test_the_api_signs_with_the_key_the_cli_and_worker_use(
    where: str, holdfast_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No --sign-key: the server finds the configured key (HOLDFAST_RECEIPT_KEY, else the home's
    receipt.key) exactly as the CLI and the worker do, so every receipt it writes is signed and a
    verify that requires signatures passes with that key."""
    from holdfast.harness import Harness, configured_signer, generate_key

    key = tmp_path / "env.key" if where == "env" else holdfast_home / "receipt.key"
    generate_key(key, "ed25519")
    if where == "env":
        monkeypatch.setenv("HOLDFAST_RECEIPT_KEY", str(key))
    else:
        monkeypatch.delenv("HOLDFAST_RECEIPT_KEY", raising=False)
    task_id, receipts, db = _steer_and_verify(ServerSettings(load=("holdfast.testing.kinds:NOOP",)))
    kinds = [r["kind"] for r in receipts]
    assert receipts and all(r["sig"] for r in receipts), kinds
    signer = configured_signer()
    assert signer is not None
    assert any(r.get("actor") == "api:signer" for r in receipts)
    with Harness.open(db, signer=signer) as h:
        assert h.verify(task_id, require_signatures=True).ok


def test_the_server_refuses_a_public_only_configured_key(
    holdfast_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from holdfast.errors import ConfigError
    from holdfast.harness import generate_key

    key = tmp_path / "ed.key"
    generate_key(key, "ed25519")
    monkeypatch.setenv("HOLDFAST_RECEIPT_KEY", f"{key}.pub")
    with pytest.raises(ConfigError, match="public key"):
        Services.open(ServerSettings(load=("holdfast.testing.kinds:NOOP",)))
