"""Fixtures for the server tests: the app over a fresh Holdfast home, tokens, clients, and a live
uvicorn server on a free loopback port."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from holdfast.memory import MemoryConfig, MemoryStore, NoEmbedder
from holdfast.server import ServerSettings, Services, create_app
from holdfast.server.run import ServerThread

BASE = "http://127.0.0.1:8765"


@pytest.fixture
def settings() -> ServerSettings:
    return ServerSettings(
        poll_s=0.05,
        port=0,
        isolation="process",
        load=("holdfast.testing.kinds:SCRIPTED", "holdfast.testing.kinds:NOOP"),
    )


@pytest.fixture
def services(settings: ServerSettings, holdfast_home: Path) -> Iterator[Services]:
    svc = Services.open(settings)
    svc.memory_factory = lambda: MemoryStore(MemoryConfig(), embedder=NoEmbedder(warn=False))
    yield svc
    svc.close()


@pytest.fixture
def token(services: Services) -> str:
    _, secret = services.tokens.create("alice")  # type: ignore[union-attr]
    return secret


@pytest.fixture
def app(settings: ServerSettings, services: Services) -> FastAPI:
    return create_app(settings, services=services)


@pytest.fixture
def client(app: FastAPI, token: str) -> Iterator[TestClient]:
    with TestClient(app, base_url=BASE, headers={"Authorization": f"Bearer {token}"}) as c:
        yield c


@pytest.fixture
def live(app: FastAPI, settings: ServerSettings) -> Iterator[ServerThread]:
    with ServerThread(app, settings) as server:
        yield server


def scripted_spec(workspace: Path, *, ask: bool = False, wait_s: float = 0.0) -> dict[str, Any]:
    steps: list[dict[str, Any]] = [
        {"tool": "counter.add", "args": {"counter": "orders", "amount": 1}}
    ]
    if wait_s:
        steps.append({"tool": "wait", "args": {"seconds": wait_s}})
    steps.append({"tool": "file.write", "args": {"path": "out/report.txt", "text": "done"}})
    return {
        "kind": "scripted",
        "goal": "test task",
        "workspace": str(workspace),
        "input": {"ledger": str(workspace / "effects.db"), "steps": steps},
        "policy": {
            "rules": [
                {"tool": "counter.add", "action": "allow"},
                {"tool": "wait", "action": "allow"},
                {"tool": "file.write", "paths": ["out/**"], "action": "ask" if ask else "allow"},
            ]
        },
    }


def with_settings(settings: ServerSettings, **changes: Any) -> ServerSettings:
    return replace(settings, **changes)
