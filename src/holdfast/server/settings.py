"""The server's settings: where it listens, how it authenticates, and the caps it enforces.

Everything is a frozen dataclass built by the command line (``holdfast serve``) or by a program
that embeds the app (``create_app(ServerSettings(...))``); nothing here reads the environment.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from holdfast.errors import InvalidInput

DEFAULT_PORT = 8765


@dataclass(frozen=True)
class RLMCaps:
    """The most any one RLM request may ask for; also the budget of a request that names none.

    A request that asks for more than a cap is refused (HTTP 400 naming the cap) rather than
    silently cut down, so a client never gets a smaller budget than it believes it has.
    """

    max_iterations: int = 30
    max_wall_s: float = 900.0
    max_usd: float | None = 2.0
    max_sub_calls: int = 2_000
    max_root_tokens: int | None = None
    max_sub_tokens: int | None = None
    max_depth: int = 1
    max_input_bytes: int = 256 * 1024 * 1024

    BUDGET_FIELDS = (
        "max_iterations",
        "max_wall_s",
        "max_usd",
        "max_sub_calls",
        "max_root_tokens",
        "max_sub_tokens",
        "max_depth",
    )

    @classmethod
    def parse(cls, items: Mapping[str, str]) -> RLMCaps:
        """From ``KEY=VALUE`` pairs given on the command line (``none`` lifts a cap)."""
        known = {f.name: f for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, raw in items.items():
            if key not in known:
                raise InvalidInput(f"unknown RLM cap {key!r}; known: {', '.join(sorted(known))}")
            if raw.strip().lower() == "none":
                if key in ("max_iterations", "max_wall_s", "max_sub_calls", "max_depth"):
                    raise InvalidInput(f"the cap {key} cannot be lifted")
                values[key] = None
                continue
            try:
                number = float(raw)
            except ValueError as exc:
                raise InvalidInput(f"the cap {key} takes a number, not {raw!r}") from exc
            integer = key in ("max_iterations", "max_sub_calls", "max_depth", "max_input_bytes")
            integer = integer or key in ("max_root_tokens", "max_sub_tokens")
            values[key] = int(number) if integer else number
        return replace(cls(), **values)


@dataclass(frozen=True)
class ModelSpec:
    """A model name served by ``/v1/chat/completions`` and RLM jobs.

    ``root`` and ``sub`` are ``provider:model`` names (or LM objects, for programs and tests);
    ``caps`` overrides the server's caps for this name; ``mode`` is the RLM router mode.
    """

    root: Any
    sub: Any = None
    caps: RLMCaps | None = None
    mode: str = "auto"
    description: str = ""


@dataclass(frozen=True)
class ServerSettings:
    """How ``holdfast serve`` runs.

    ``auth`` off is only allowed on a loopback address. ``allowed_hosts`` are the Host header
    values accepted besides the loopback names (a defence against DNS rebinding, where a web page
    makes a victim's browser talk to a server on 127.0.0.1 under a foreign name).
    """

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    auth: bool = True
    database_url: str | None = None
    home: Path | None = None
    memory_root: Path | None = None
    embedder: str = "local"
    sign_key: Path | None = None
    caps: RLMCaps = field(default_factory=RLMCaps)
    models: Mapping[str, ModelSpec] = field(default_factory=dict)
    generic_models: bool = True
    input_roots: tuple[Path, ...] = ()
    allowed_hosts: tuple[str, ...] = ()
    max_body_bytes: int = 64 * 1024 * 1024
    sse_queue: int = 1_000
    poll_s: float = 0.25
    max_jobs: int = 4
    isolation: str = "namespace"
    console: bool = True
    session_ttl_s: float = 12 * 3600.0
    load: tuple[str, ...] = ()
    """Task kinds (``module:attr``) the server accepts besides the entry points' ones."""

    def __post_init__(self) -> None:
        if not self.auth and not is_loopback(self.host):
            raise InvalidInput(
                f"refusing to serve {self.host} without auth: only a loopback address "
                "(127.0.0.1, ::1, localhost) may run with --no-auth; create a token with "
                "'holdfast token create NAME' instead"
            )
        if not 0 <= self.port < 65536:
            raise InvalidInput(f"the port must be between 0 and 65535, not {self.port}")
        if self.max_body_bytes < 1024:
            raise InvalidInput("max_body_bytes must be at least 1024")
        if self.sse_queue < 1 or self.poll_s <= 0 or self.max_jobs < 1:
            raise InvalidInput("sse_queue, poll_s and max_jobs must be positive")
        if self.isolation not in ("namespace", "process"):
            raise InvalidInput("isolation must be 'namespace' or 'process'")

    def host_names(self) -> tuple[str, ...]:
        """Host header names this server answers to (ports are checked separately)."""
        names = {"127.0.0.1", "localhost", "[::1]", "::1", *self.allowed_hosts}
        if not is_loopback(self.host) and self.host not in ("0.0.0.0", "::"):
            names.add(self.host)
        return tuple(sorted(names))


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
