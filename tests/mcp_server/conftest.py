"""Fixtures for the MCP suite: a workspace, a scripted model server, and server parameters.

The MCP server always runs as a real subprocess (``holdfast mcp serve``) and is driven by the
official SDK's client, over stdio or streamable HTTP. The "model" behind ``analyze`` is a
FakeOpenAIServer whose replies are real Python that runs in the real sandbox over the inputs.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from holdfast.testing import FakeOpenAIServer

from .helpers import ERRORS_PER_FILE, ModelScript

pytest.importorskip("mcp")


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    (root / "logs" / "sub").mkdir(parents=True)
    for rel, n in ERRORS_PER_FILE.items():
        lines = [f"2026-11-30 ERROR svc failure {i}" for i in range(n)]
        lines += [f"2026-11-30 INFO svc fine {i}" for i in range(10)]
        (root / "logs" / rel).write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture
def script() -> ModelScript:
    return ModelScript()


@pytest.fixture
def model_server(script: ModelScript) -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(script) as server:
        yield server


@pytest.fixture
def server_env(holdfast_home: Path, model_server: FakeOpenAIServer) -> dict[str, str]:
    return {
        "HOLDFAST_HOME": str(holdfast_home),
        "HOLDFAST_MEMORY_EMBEDDER": "none",
        "OPENAI_BASE_URL": model_server.base_url,
        "OPENAI_API_KEY": "test-key",
        "PATH": os.environ.get("PATH", ""),
        "PYTHONWARNINGS": "ignore",
    }
