"""``holdfast serve``: the HTTP API, the OpenAI-compatible RLM endpoint and the web console.

Build the app with :func:`create_app` (or run it with ``holdfast serve``); mount other ASGI apps
under the same bearer-token auth with :func:`mount_protected`. FastAPI and uvicorn come with the
``server`` extra. The names below are imported on first use, so the CLI's client for a running
server (:mod:`holdfast.server.client`) never loads FastAPI.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from holdfast.server.app import add_lifespan, create_app, mount_protected
    from holdfast.server.gate import principal_of
    from holdfast.server.services import Services
    from holdfast.server.settings import DEFAULT_PORT, ModelSpec, RLMCaps, ServerSettings
    from holdfast.server.tokens import SCOPES, Principal, TokenInfo, TokenStore

_WHERE = {
    "add_lifespan": "app",
    "create_app": "app",
    "mount_protected": "app",
    "principal_of": "gate",
    "Services": "services",
    "DEFAULT_PORT": "settings",
    "ModelSpec": "settings",
    "RLMCaps": "settings",
    "ServerSettings": "settings",
    "SCOPES": "tokens",
    "Principal": "tokens",
    "TokenInfo": "tokens",
    "TokenStore": "tokens",
}

__all__ = [
    "DEFAULT_PORT",
    "SCOPES",
    "ModelSpec",
    "Principal",
    "RLMCaps",
    "ServerSettings",
    "Services",
    "TokenInfo",
    "TokenStore",
    "add_lifespan",
    "create_app",
    "mount_protected",
    "principal_of",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'holdfast.server' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"holdfast.server.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
