"""Bearer tokens for ``holdfast serve``: created, listed and revoked from the command line.

A token reads ``hft_<id>_<secret>``. The id is public (it names the token in listings, logs and
receipts); the secret is 32 random bytes. Only the SHA-256 of the whole token is stored, so the
database never holds a usable credential: a token is looked up by its id and its hash compared in
constant time (:func:`hmac.compare_digest`). A fast hash is right here (unlike for passwords)
because the secret has 256 bits of entropy: there is nothing to guess.

Tokens live in the control-plane database (SQLite or PostgreSQL), so every server over the same
store accepts the same tokens and a revocation takes effect on the next request everywhere.
"""

from __future__ import annotations

import builtins
import hashlib
import hmac
import re
import secrets
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from holdfast.errors import InvalidInput, UserError
from holdfast.store import Backend, Dialect, Migration, migrate, open_url

COMPONENT = "server_tokens"


def _v1(d: Dialect) -> str:
    return f"""
    CREATE TABLE server_tokens (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        scopes TEXT NOT NULL,
        hash TEXT NOT NULL,
        created_at {d.float} NOT NULL,
        created_by TEXT NOT NULL,
        expires_at {d.float},
        revoked_at {d.float},
        last_used_at {d.float}
    );
    CREATE INDEX server_tokens_name ON server_tokens (name);
    """


MIGRATIONS: list[Migration] = [_v1]

SCOPES = ("read", "write", "rlm")
"""``read``: every GET; ``write``: every change (implies ``read`` and ``rlm``); ``rlm``: the
OpenAI-compatible endpoint and RLM jobs only."""

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@+-]{0,63}$")
_TOKEN = re.compile(r"^hft_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")
_TOUCH_EVERY_S = 60.0


class Unauthorized(UserError):
    """No valid bearer token came with the request."""

    code = "unauthorized"


class Forbidden(UserError):
    """The token is valid but its scopes do not cover this request."""

    code = "forbidden"


@dataclass(frozen=True)
class Principal:
    """Who makes a request: a token's name and scopes (or the local user without auth)."""

    name: str
    scopes: frozenset[str]
    token_id: str | None = None

    @property
    def actor(self) -> str:
        """The actor written into receipts and approvals for this principal's requests."""
        return f"api:{self.name}"

    def allows(self, *scopes: str) -> bool:
        """True when the principal holds one of ``scopes`` (``write`` holds them all)."""
        return "write" in self.scopes or any(s in self.scopes for s in scopes)

    def require(self, *scopes: str) -> None:
        if not self.allows(*scopes):
            raise Forbidden(
                f"the token {self.token_id or self.name!r} has the scopes "
                f"{', '.join(sorted(self.scopes))}; this request needs "
                + " or ".join(repr(s) for s in scopes),
                needed=list(scopes),
            )


LOCAL = Principal("local", frozenset({"write"}))
"""The principal of every request when the server runs without auth (loopback only)."""


@dataclass(frozen=True)
class TokenInfo:
    """A stored token, without its secret."""

    id: str
    name: str
    scopes: tuple[str, ...]
    created_at: float
    created_by: str
    expires_at: float | None
    revoked_at: float | None
    last_used_at: float | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None and (
            self.expires_at is None or self.expires_at > time.time()
        )

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "scopes": list(self.scopes), "active": self.active}


def check_scopes(scopes: Sequence[str]) -> tuple[str, ...]:
    out = tuple(dict.fromkeys(s.strip() for s in scopes if s.strip()))
    bad = [s for s in out if s not in SCOPES]
    if bad or not out:
        raise InvalidInput(f"scopes must be some of {', '.join(SCOPES)}; got {list(scopes)}")
    return out


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class TokenStore:
    """Tokens in the control plane's database, over its :class:`~holdfast.store.Backend`."""

    def __init__(self, backend: Backend, *, owned: bool = False) -> None:
        self.backend = backend
        self._owned = owned
        self._touched: dict[str, float] = {}
        self._lock = threading.Lock()
        migrate(backend, COMPONENT, MIGRATIONS)

    @classmethod
    def for_store(cls, store: Any) -> TokenStore:
        """The token store in the same database as a control-plane store (sharing its
        connections; closing the token store leaves them open)."""
        backend = getattr(store, "backend", None)
        if not isinstance(backend, Backend):
            raise InvalidInput("this control-plane store has no database to keep tokens in")
        return cls(backend)

    @classmethod
    def open(cls, url: str | None = None) -> TokenStore:
        """The token store of the control plane at ``url`` (default: the Holdfast home's)."""
        return cls(open_url(url), owned=True)

    @property
    def is_sqlite(self) -> bool:
        return self.backend.dialect.name == "sqlite"

    # -- operations ---------------------------------------------------------------------------

    def create(
        self,
        name: str,
        *,
        scopes: Sequence[str] = ("write",),
        created_by: str = "cli",
        ttl_s: float | None = None,
    ) -> tuple[TokenInfo, str]:
        """A new token for principal ``name``; returns its record and the secret token text,
        which is shown once and never stored."""
        if not _NAME.match(name):
            raise InvalidInput(
                "a token name is 1 to 64 letters, digits or . _ @ + - (starting with a letter "
                f"or digit); got {name!r}"
            )
        if ttl_s is not None and not 0 < ttl_s < float("inf"):
            raise InvalidInput("a token's lifetime must be a positive number of seconds")
        scope_list = check_scopes(scopes)
        token_id = secrets.token_hex(8)
        token = f"hft_{token_id}_{secrets.token_urlsafe(32)}"
        now = time.time()
        expires = now + ttl_s if ttl_s is not None else None
        with self.backend.transaction() as h:
            self.backend.run(
                h,
                "INSERT INTO server_tokens (id, name, scopes, hash, created_at, created_by, "
                "expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (token_id, name, ",".join(scope_list), _digest(token), now, created_by, expires),
            )
        return self.get(token_id), token

    def get(self, token_id: str) -> TokenInfo:
        row = self.backend.query_one("SELECT * FROM server_tokens WHERE id = ?", (token_id,))
        if row is None:
            raise InvalidInput(f"no token {token_id!r}")
        return _info(row)

    def list(self, *, include_revoked: bool = False) -> builtins.list[TokenInfo]:
        infos = [
            _info(r) for r in self.backend.query("SELECT * FROM server_tokens ORDER BY created_at")
        ]
        return [t for t in infos if include_revoked or t.revoked_at is None]

    def revoke(self, token_or_name: str) -> builtins.list[TokenInfo]:
        """Revoke a token by id (or the whole token text), or every token of a name."""
        match = _TOKEN.match(token_or_name)
        key = match.group(1) if match else token_or_name
        now = time.time()
        with self.backend.transaction() as h:
            changed = self.backend.run(
                h,
                "UPDATE server_tokens SET revoked_at = ? "
                "WHERE (id = ? OR name = ?) AND revoked_at IS NULL",
                (now, key, key),
            )
        if not changed:
            raise InvalidInput(f"no active token with the id or name {token_or_name!r}")
        return [t for t in self.list(include_revoked=True) if t.revoked_at == now]

    def any_active(self) -> bool:
        return any(t.active for t in self.list())

    def authenticate(self, token: str) -> Principal:
        """The principal of a presented token; raises :class:`Unauthorized` otherwise.

        The same message is given for a malformed, unknown, wrong, revoked or expired token, so
        the answer reveals nothing about which tokens exist."""
        match = _TOKEN.match(token)
        # Hash even a malformed token: the time taken does not depend on what was wrong.
        presented = _digest(token)
        row = (
            self.backend.query_one("SELECT * FROM server_tokens WHERE id = ?", (match.group(1),))
            if match
            else None
        )
        stored = row["hash"] if row else _digest("hft_" + "0" * 16)
        ok = hmac.compare_digest(presented, stored) and row is not None
        if not ok or row is None:
            raise Unauthorized("invalid, revoked or expired bearer token")
        info = _info(row)
        if not info.active:
            raise Unauthorized("invalid, revoked or expired bearer token")
        self._touch(info.id)
        return Principal(info.name, frozenset(info.scopes), info.id)

    def _touch(self, token_id: str) -> None:
        """Record when a token was last used, at most once a minute (not a write per request)."""
        now = time.time()
        with self._lock:
            if now - self._touched.get(token_id, 0.0) < _TOUCH_EVERY_S:
                return
            self._touched[token_id] = now
        try:
            with self.backend.transaction() as h:
                self.backend.run(
                    h, "UPDATE server_tokens SET last_used_at = ? WHERE id = ?", (now, token_id)
                )
        except Exception:  # a busy store must not fail an authenticated request
            pass

    def close(self) -> None:
        if self._owned:
            self.backend.close()


def iter_scopes(text: str) -> Iterator[str]:
    yield from (s for s in text.split(",") if s)


def _info(row: dict[str, Any]) -> TokenInfo:
    return TokenInfo(
        id=row["id"],
        name=row["name"],
        scopes=tuple(iter_scopes(row["scopes"])),
        created_at=float(row["created_at"]),
        created_by=row["created_by"],
        expires_at=None if row["expires_at"] is None else float(row["expires_at"]),
        revoked_at=None if row["revoked_at"] is None else float(row["revoked_at"]),
        last_used_at=None if row["last_used_at"] is None else float(row["last_used_at"]),
    )
