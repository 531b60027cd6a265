"""``holdfast serve``: the HTTP API, the OpenAI-compatible RLM endpoint and the web console.

Build the app with :func:`create_app` (or run it with ``holdfast serve``); mount other ASGI apps
under the same bearer-token auth with :func:`mount_protected`. FastAPI and uvicorn come with the
``server`` extra.
"""

from holdfast.server.app import add_lifespan, create_app, mount_protected
from holdfast.server.gate import principal_of
from holdfast.server.services import Services
from holdfast.server.settings import DEFAULT_PORT, ModelSpec, RLMCaps, ServerSettings
from holdfast.server.tokens import SCOPES, Principal, TokenInfo, TokenStore

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
