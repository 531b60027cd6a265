"""The CLI against a running server: ``holdfast memory --server URL`` (or ``HOLDFAST_SERVER``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from holdfast.cli.main import main
from holdfast.server.client import ServerClient, _parse_response
from holdfast.server.run import ServerThread


def _run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """``holdfast ARGS`` through the real entry point (its error handling and exit codes)."""
    runner = CliRunner()
    with runner.isolation(env=env) as streams:
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        out, err = streams[0].getvalue(), streams[1].getvalue()
    return code, out.decode(), err.decode()


def test_add_and_search_go_through_the_server(
    live: ServerThread, token: str, holdfast_home: Path
) -> None:
    env = {"HOLDFAST_SERVER": live.url, "HOLDFAST_TOKEN": token}
    code, out, _ = _run("memory", "add", "The deploy key rotates every Friday", "--json", env=env)
    assert code == 0, out
    added = json.loads(out)
    assert added["status"] == "added"
    item = added["item"]
    # the CLI's trust (a person typed it) and the token's principal as the writer
    assert item["trust"] == "owner"
    assert item["source"]["tool"] == "api:alice"

    code, out, _ = _run("memory", "search", "deploy key", env=env)
    assert code == 0
    assert out.startswith("1. (") and "The deploy key rotates every Friday" in out

    code, out, _ = _run("memory", "search", "deploy key", "--json", env=env)
    hits = json.loads(out)
    assert [h["id"] for h in hits] == [added["id"]] and "rendered" not in hits[0]

    # the same text again is refused as a duplicate, unless --no-dedup
    code, out, _ = _run("memory", "add", "The deploy key rotates every Friday", env=env)
    assert code == 0 and out.startswith("not stored: the same text as")
    code, out, _ = _run(
        "memory", "add", "The deploy key rotates every Friday", "--no-dedup", "--json", env=env
    )
    assert json.loads(out)["status"] == "added"

    code, out, _ = _run("memory", "--server", live.url, "--token", token, "show", added["id"])
    assert code == 0 and out.rstrip().endswith("The deploy key rotates every Friday")

    code, out, _ = _run("memory", "forget", added["id"], "--json", env=env)
    assert json.loads(out) == {"status": "deleted", "id": added["id"]}
    code, out, _ = _run("memory", "search", "Friday", "--json", env=env)
    assert added["id"] not in [h["id"] for h in json.loads(out)]


def test_server_errors_keep_their_codes_and_exit_codes(live: ServerThread, token: str) -> None:
    env = {"HOLDFAST_SERVER": live.url, "HOLDFAST_TOKEN": "hft_0000000000000000_wrong"}
    code, _, err = _run("memory", "search", "anything", env=env)
    assert code == 2 and "refused the token (unauthorized)" in err

    env["HOLDFAST_TOKEN"] = token
    code, _, err = _run("memory", "show", "no-such-item", env=env)
    assert code == 2 and "error:" in err

    # a command the API does not route refuses rather than quietly using a local directory
    code, _, err = _run("memory", "stats", env=env)
    assert code == 2 and "--no-server" in err
    code, _, err = _run("memory", "--root", "/tmp/x", "search", "q", env=env)
    assert code == 2 and "--root" in err


def test_an_unreachable_server_is_named(holdfast_home: Path) -> None:
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"HOLDFAST_SERVER": f"http://127.0.0.1:{port}"}
    code, _, err = _run("memory", "search", "q", env=env)
    assert code == 1
    assert "server_unreachable" in err and f"127.0.0.1:{port}" in err


def test_no_server_works_locally_even_when_one_is_set(holdfast_home: Path) -> None:
    env = {"HOLDFAST_SERVER": "http://127.0.0.1:9", "HOLDFAST_MEMORY_EMBEDDER": "none"}
    code, out, _ = _run("memory", "--no-server", "add", "local only", "--json", env=env)
    assert code == 0 and json.loads(out)["status"] == "added"


def test_the_client_path_never_imports_the_heavy_stack(live: ServerThread, token: str) -> None:
    """What a `holdfast memory search` against a server loads: no FastAPI, no torch, no numpy,
    no httpx, no sentence-transformers (each of those is tens to thousands of milliseconds)."""
    code = (
        "import sys\n"
        "from holdfast.cli.main import main\n"
        "try:\n"
        "    main(['memory', 'search', 'anything', '--json'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = ['fastapi', 'starlette', 'torch', 'numpy', 'httpx', 'sentence_transformers',\n"
        "         'pydantic', 'rich', 'http.client']\n"
        "print('LOADED', [m for m in heavy if m in sys.modules])\n"
    )
    env = dict(os.environ, HOLDFAST_SERVER=live.url, HOLDFAST_TOKEN=token)
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.splitlines()
    assert json.loads(out[0]) == []  # an empty namespace: the request really went through
    assert out[-1] == "LOADED []"


@given(
    body=st.binary(max_size=300),
    status=st.integers(200, 599),
    chunk=st.integers(1, 64),
    how=st.sampled_from(["length", "chunked", "close"]),
)
def test_responses_parse_in_every_framing(body: bytes, status: int, chunk: int, how: str) -> None:
    head = f"HTTP/1.1 {status} Whatever\r\nServer: x\r\n"
    if how == "length":
        raw = (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body + b"trailing"
    elif how == "chunked":
        parts = [body[i : i + chunk] for i in range(0, len(body), chunk)]
        framed = b"".join(f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in parts)
        raw = (head + "Transfer-Encoding: chunked\r\n\r\n").encode() + framed + b"0\r\n\r\n"
    else:
        raw = (head + "\r\n").encode() + body
    assert _parse_response(raw) == (status, body)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"HTTP/1.1 200 OK\r\n",
        b"garbage\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nab",
    ],
)
def test_a_broken_response_is_an_error_not_a_result(raw: bytes) -> None:
    with pytest.raises(ValueError):
        _parse_response(raw)


def test_a_url_that_is_not_http_is_a_config_error() -> None:
    from holdfast.errors import ConfigError

    with pytest.raises(ConfigError, match="http"):
        ServerClient("ftp://example.org")
