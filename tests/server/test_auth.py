"""Bearer tokens: hashed storage, constant-time checks, scopes, revocation, the front door."""

from __future__ import annotations

import sqlite3
import string
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from tests.server.conftest import BASE

from holdfast.errors import InvalidInput
from holdfast.server import ServerSettings, Services, TokenStore, create_app, mount_protected
from holdfast.server.gate import principal_of
from holdfast.server.tokens import Unauthorized


def test_tokens_are_stored_hashed_and_revocable(services: Services) -> None:
    tokens = services.tokens
    assert tokens is not None
    info, secret = tokens.create("bob", scopes=["read"])
    assert secret.startswith(f"hft_{info.id}_")
    conn = sqlite3.connect(services.home_db)
    rows = conn.execute("SELECT * FROM server_tokens").fetchall()
    # The secret part is url-safe base64 and may itself hold "_": cut at the known prefix.
    secret_part = secret[len(f"hft_{info.id}_") :]
    assert len(secret_part) == 43
    assert rows and all(secret not in str(r) and secret_part not in str(r) for r in rows)
    principal = tokens.authenticate(secret)
    assert principal.name == "bob" and principal.scopes == frozenset({"read"})
    assert principal.actor == "api:bob"
    tokens.revoke(info.id)
    with pytest.raises(Unauthorized):
        tokens.authenticate(secret)
    assert [t.id for t in tokens.list()] == []
    assert [t.id for t in tokens.list(include_revoked=True)] == [info.id]


def test_expired_tokens_are_refused(services: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    tokens = services.tokens
    assert tokens is not None
    _, secret = tokens.create("carol", ttl_s=60)
    assert tokens.authenticate(secret).name == "carol"
    real = time.time
    monkeypatch.setattr("holdfast.server.tokens.time.time", lambda: real() + 61)
    with pytest.raises(Unauthorized):
        tokens.authenticate(secret)


def test_bad_token_names_and_scopes(services: Services) -> None:
    tokens = services.tokens
    assert tokens is not None
    for bad in ("", "has space", "x" * 65, "<script>"):
        with pytest.raises(InvalidInput):
            tokens.create(bad)
    with pytest.raises(InvalidInput):
        tokens.create("dave", scopes=["admin"])
    with pytest.raises(InvalidInput):
        tokens.revoke("nobody")


@hsettings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.one_of(
        st.text(max_size=80),
        st.text(alphabet=string.ascii_letters + string.digits + "_-", min_size=43, max_size=43).map(
            lambda s: "hft_0123456789abcdef_" + s
        ),
    )
)
def test_no_made_up_token_authenticates(services: Services, candidate: str) -> None:
    tokens = services.tokens
    assert tokens is not None
    with pytest.raises(Unauthorized) as exc:
        tokens.authenticate(candidate)
    assert exc.value.message == "invalid, revoked or expired bearer token"


def test_every_api_request_needs_a_valid_token(app: FastAPI, services: Services) -> None:
    with TestClient(app, base_url=BASE) as c:
        r = c.get("/api/v1/tasks")
        assert r.status_code == 401
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert r.json()["error"]["code"] == "unauthorized"
        assert c.get("/api/v1/tasks", headers={"Authorization": "Basic abc"}).status_code == 401
        assert c.get("/api/v1/openapi.json").status_code == 401
        assert c.get("/healthz").status_code == 200
        tokens = services.tokens
        assert tokens is not None
        info, secret = tokens.create("erin")
        ok = {"Authorization": f"Bearer {secret}"}
        assert c.get("/api/v1/tasks", headers=ok).status_code == 200
        tokens.revoke(info.id)
        assert c.get("/api/v1/tasks", headers=ok).status_code == 401


def test_scopes(app: FastAPI, services: Services) -> None:
    tokens = services.tokens
    assert tokens is not None
    _, reader = tokens.create("reader", scopes=["read"])
    _, rlm_only = tokens.create("client", scopes=["rlm"])
    with TestClient(app, base_url=BASE) as c:
        as_reader = {"Authorization": f"Bearer {reader}"}
        assert c.get("/api/v1/tasks", headers=as_reader).status_code == 200
        r = c.post("/api/v1/tasks", json={"kind": "noop"}, headers=as_reader)
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
        r = c.post("/api/v1/memory/items", json={"text": "x"}, headers=as_reader)
        assert r.status_code == 403
        as_client = {"Authorization": f"Bearer {rlm_only}"}
        assert c.get("/api/v1/rlm/traces", headers=as_client).status_code == 200
        assert c.get("/api/v1/tasks", headers=as_client).status_code == 403
        assert c.get("/api/v1/rlm/traces", headers=as_reader).status_code == 200


def test_host_header_must_name_this_server(app: FastAPI, token: str) -> None:
    """DNS rebinding: a page on evil.example pointed at 127.0.0.1 sends Host: evil.example."""
    auth = {"Authorization": f"Bearer {token}"}
    with TestClient(app, base_url="http://evil.example:8765") as c:
        r = c.get("/api/v1/tasks", headers=auth)
        assert r.status_code == 421
        assert c.get("/console/").status_code == 421
    for host in ("http://localhost:8765", "http://127.0.0.1", "http://[::1]:8765"):
        with TestClient(app, base_url=host) as c:
            assert c.get("/api/v1/tasks", headers=auth).status_code == 200, host


def test_body_cap(services: Services, token: str) -> None:
    settings = ServerSettings(max_body_bytes=4096)
    app = create_app(settings, services=services)
    auth = {"Authorization": f"Bearer {token}"}
    with TestClient(app, base_url=BASE, headers=auth) as c:
        r = c.post("/api/v1/memory/items", json={"text": "x" * 5000})
        assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"

        def chunks() -> Iterator[bytes]:  # no Content-Length: the cap applies as the body arrives
            for _ in range(10):
                yield b"x" * 1000

        r = c.post(
            "/api/v1/memory/items", content=chunks(), headers={"content-type": "application/json"}
        )
        assert r.status_code == 413


def test_no_auth_only_on_loopback() -> None:
    assert ServerSettings(auth=False, host="127.0.0.1").auth is False
    assert ServerSettings(auth=False, host="::1").auth is False
    for host in ("0.0.0.0", "192.168.1.5", "::", "example.com"):
        with pytest.raises(InvalidInput, match="without auth"):
            ServerSettings(auth=False, host=host)


def test_mounted_apps_share_the_bearer_auth(services: Services, token: str) -> None:
    """What the MCP server will do: mount an ASGI app under the same tokens."""
    seen: list[str] = []

    async def inner(scope, receive, send):  # type: ignore[no-untyped-def]
        seen.append(principal_of(scope).name)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"inner"})

    app = create_app(ServerSettings(), services=services)
    mount_protected(app, "/mcp", inner)
    with TestClient(app, base_url=BASE) as c:
        assert c.post("/mcp/", json={}).status_code == 401
        r = c.post("/mcp/", json={}, headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200 and r.text == "inner"
    assert seen == ["alice"]


def test_serve_refuses_to_start_without_a_token(holdfast_home: Path) -> None:
    from click.testing import CliRunner

    from holdfast.cli.main import cli

    result = CliRunner().invoke(cli, ["serve", "--port", "0"])
    assert result.exit_code != 0
    assert "no active bearer token" in str(result.exception)
    result = CliRunner().invoke(cli, ["serve", "--no-auth", "--host", "0.0.0.0"])
    assert "without auth" in str(result.exception)


def test_token_cli_round_trip(holdfast_home: Path) -> None:
    import json

    from click.testing import CliRunner

    from holdfast.cli.main import cli

    runner = CliRunner()
    out = runner.invoke(cli, ["token", "create", "ci-bot", "--scope", "read", "--json"])
    assert out.exit_code == 0, out.output
    made = json.loads(out.output)
    assert made["token"].startswith("hft_") and made["scopes"] == ["read"]
    listed = json.loads(runner.invoke(cli, ["token", "list", "--json"]).output)
    assert [t["id"] for t in listed] == [made["id"]] and "token" not in listed[0]
    assert runner.invoke(cli, ["token", "revoke", made["id"]]).exit_code == 0
    store = TokenStore.for_store(
        __import__("holdfast.harness", fromlist=["open_store"]).open_store()
    )
    with pytest.raises(Unauthorized):
        store.authenticate(made["token"])


@pytest.mark.postgres
def test_tokens_on_the_postgresql_control_plane(pg_cluster) -> None:  # type: ignore[no-untyped-def]
    url = pg_cluster.create_database("server_tokens")
    tokens = TokenStore.open(url)
    try:
        info, secret = tokens.create("pg-user", scopes=["read", "rlm"])
        assert tokens.authenticate(secret).scopes == frozenset({"read", "rlm"})
        again = TokenStore.open(url)  # a second server over the same database
        try:
            assert again.authenticate(secret).name == "pg-user"
            again.revoke("pg-user")
        finally:
            again.close()
        with pytest.raises(Unauthorized):
            tokens.authenticate(secret)
        assert tokens.list(include_revoked=True)[0].id == info.id
    finally:
        tokens.close()


def test_accepted_connections_send_without_nagle_delay() -> None:
    """A kept-alive client's requests took ~44 ms each (Nagle waiting on the delayed ACK)
    because asyncio skips TCP_NODELAY for a socket made with proto 0."""
    import socket as _socket

    from holdfast.server.run import bind

    listener = bind(ServerSettings(port=0))
    try:
        with _socket.create_connection(listener.getsockname()[:2]):
            conn, _ = listener.accept()
            with conn:
                assert conn.getsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY) != 0
    finally:
        listener.close()
