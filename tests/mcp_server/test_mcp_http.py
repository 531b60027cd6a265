"""The MCP server over streamable HTTP: bearer auth, the same tools, survival of disconnects."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from .helpers import HOLDFAST, slow_code, structured

pytestmark = pytest.mark.anyio
TOKEN = "test-token-0123456789abcdef"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def http_server(server_env: dict[str, str], workspace: Path, tmp_path: Path) -> Iterator[str]:
    port = _free_port()
    env = {**server_env, "HOLDFAST_MCP_TOKEN": TOKEN}
    log = (tmp_path / "mcp-http.log").open("wb")
    proc = subprocess.Popen(
        [
            HOLDFAST,
            "mcp",
            "serve",
            "--transport",
            "http",
            "--port",
            str(port),
            "--root",
            str(workspace),
            "--model",
            "openai:scripted-root",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    url = f"http://127.0.0.1:{port}/mcp"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "mcp-http.log").read_text()
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@contextlib.asynccontextmanager
async def _client(url: str, token: str = TOKEN) -> AsyncIterator[Any]:
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    headers = {"Authorization": f"Bearer {token}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=60) as http,
        Client(streamable_http_client(url, http_client=http)) as client,
    ):
        yield client


def test_requests_without_a_valid_token_are_refused(http_server: str) -> None:
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
        r = httpx.post(http_server, json=body, headers=headers, timeout=10)
        assert r.status_code == 401, headers
        assert r.json()["error"]["code"] == "unauthorized"


async def test_tools_over_http_with_a_token(http_server: str) -> None:
    async with _client(http_server) as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert "memory_search" in names and "analyze" in names
        added = structured(await client.call_tool("memory_add", {"text": "HTTP works too."}))
        got = structured(await client.call_tool("memory_get", {"id": added["id"]}))
        assert got["item"]["trust"] == "agent"
        out = structured(
            await client.call_tool("analyze", {"question": "count", "paths": ["logs"]})
        )
        assert out["status"] == "ok" and out["answer"] == "15"


async def test_the_server_survives_a_client_that_disconnects_mid_call(
    http_server: str, script: Any
) -> None:
    script.reply = lambda body: slow_code()
    with anyio.move_on_after(3):
        async with _client(http_server) as client:
            await client.call_tool("analyze", {"question": "slow", "paths": ["logs"]})
    script.reply = lambda body: "```python\nSUBMIT(answer='fine')\n```"
    async with _client(http_server) as client:
        out = structured(await client.call_tool("analyze", {"question": "q", "paths": ["logs"]}))
        assert out["answer"] == "fine"
        assert json.dumps(out)


async def _listed(params: Any) -> set[str]:
    from mcp import Client

    async with Client(params) as client:
        return {t.name for t in (await client.list_tools()).tools}


def test_snippets_launch_the_server_they_describe(
    workspace: Path, server_env: dict[str, str]
) -> None:
    from mcp import StdioServerParameters

    for client_name in ("claude-code", "cursor", "codex"):
        raw = subprocess.run(
            [HOLDFAST, "mcp", "config", client_name, "--root", str(workspace), "--json"],
            env=server_env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        data = json.loads(raw)
        entry = (data.get("mcpServers") or data["mcp_servers"])["holdfast"]
        assert entry["args"][-2:] == ["--root", str(workspace)]
        params = StdioServerParameters(command=entry["command"], args=entry["args"], env=server_env)
        assert "memory_search" in anyio.run(_listed, params)
    toml = subprocess.run(
        [HOLDFAST, "mcp", "config", "codex", "--root", str(workspace)],
        env=server_env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    import tomllib

    parsed = tomllib.loads(toml)
    assert parsed["mcp_servers"]["holdfast"]["args"][-1] == str(workspace)
