"""MCP mounted in ``holdfast serve``: the server's bearer tokens guard it, and it shares the
server's knowledge memory (one store, one warm embedder)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from fastapi import FastAPI

from holdfast.server import ServerSettings, Services
from holdfast.server.run import ServerThread

pytest.importorskip("mcp")


def _client(url: str, http: Any) -> Any:
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    return Client(streamable_http_client(url, http_client=http))


@pytest.fixture
def mounted(app: FastAPI, services: Services, tmp_path: Path) -> FastAPI:
    from holdfast.mcp import MCPSettings
    from holdfast.mcp.http import mount_in_server

    root = tmp_path / "shop"
    root.mkdir()
    mount_in_server(
        app,
        MCPSettings(roots=(root,), namespace="project-shop", embedder="none"),
        memory_session=services.memory_session,
    )
    return app


def test_mcp_in_serve_uses_the_servers_tokens_and_memory(
    mounted: FastAPI, settings: ServerSettings, services: Services, token: str
) -> None:
    _, reader = services.tokens.create("reader", scopes=("read",))  # type: ignore[union-attr]
    with ServerThread(mounted, settings) as live:
        url = f"{live.url}/mcp"
        body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
        assert httpx.post(url, json=body, timeout=10).status_code == 401
        denied = httpx.post(
            url, json=body, headers={"Authorization": f"Bearer {reader}"}, timeout=10
        )
        assert denied.status_code == 403

        async def go() -> str:
            import httpx2

            headers = {"Authorization": f"Bearer {token}"}
            async with (
                httpx2.AsyncClient(headers=headers, timeout=60) as http,
                _client(url, http) as client,
            ):
                tools = {t.name for t in (await client.list_tools()).tools}
                assert {"memory_add", "analyze"} <= tools
                result = await client.call_tool(
                    "memory_add", {"text": "The shop ships on Mondays."}
                )
                assert not result.is_error
                data: dict[str, Any] = result.structured_content or {}
                return str(data["id"])

        item_id = anyio.run(go)
        got = httpx.get(
            f"{live.url}/api/v1/memory/items/{item_id}",
            params={"namespace": "project-shop"},
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
    assert got.status_code == 200, got.text
    assert got.json()["trust"] == "agent"
