"""Where Holdfast keeps its state, and the documented environment fallbacks.

Environment variables are read only when these functions are called (from the CLI or a server),
never at import time.

* ``HOLDFAST_HOME``: the Holdfast home directory (default ``~/.holdfast``), holding the SQLite store
  ``holdfast.db``, the memory directory and task state.
* ``HOLDFAST_MODEL``: the default model name, ``provider:model``.
* ``HOLDFAST_DATABASE_URL``: a ``postgresql://`` URL for the control plane (default: SQLite).
* ``HOLDFAST_RECEIPT_KEY``: the receipt signing key file (default ``<home>/receipt.key`` when it
  exists; none otherwise). See :mod:`holdfast.harness.signing`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from holdfast.errors import ConfigError

DEFAULT_DB_NAME = "holdfast.db"
RECEIPT_KEY_ENV = "HOLDFAST_RECEIPT_KEY"
RECEIPT_KEY_NAME = "receipt.key"


def holdfast_home(explicit: str | os.PathLike[str] | None = None, *, create: bool = True) -> Path:
    """The Holdfast home directory: the explicit path, else ``$HOLDFAST_HOME``, else ``~/.holdfast``."""
    raw = explicit if explicit is not None else os.environ.get("HOLDFAST_HOME")
    home = Path(raw).expanduser() if raw else Path.home() / ".holdfast"
    if create:
        try:
            home.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"cannot create the Holdfast home directory {home}: {exc.strerror}; "
                "set HOLDFAST_HOME to a writable directory",
                path=str(home),
            ) from exc
    return home


def default_db_path(home: str | os.PathLike[str] | None = None) -> Path:
    """The embedded SQLite store: ``<home>/holdfast.db``."""
    return holdfast_home(home) / DEFAULT_DB_NAME


def default_model(explicit: str | None = None) -> str | None:
    """The model to use: the explicit name, else ``$HOLDFAST_MODEL``, else None."""
    return explicit or os.environ.get("HOLDFAST_MODEL") or None


def database_url(explicit: str | None = None) -> str | None:
    """A PostgreSQL URL for the control plane, or None for the embedded SQLite store."""
    return explicit or os.environ.get("HOLDFAST_DATABASE_URL") or None


def receipt_key_path(
    explicit: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    home: str | os.PathLike[str] | None = None,
) -> Path | None:
    """The receipt signing key file: the explicit path, else ``$HOLDFAST_RECEIPT_KEY``, else
    ``<home>/receipt.key`` if that file exists, else None (receipts are not signed)."""
    if explicit is not None and str(explicit):
        return Path(explicit).expanduser()
    environ = os.environ if env is None else env
    named = environ.get(RECEIPT_KEY_ENV, "").strip()
    if named:
        return Path(named).expanduser()
    if home is None and env is not None:
        home = env.get("HOLDFAST_HOME") or str(Path.home() / ".holdfast")
    default = holdfast_home(home, create=False) / RECEIPT_KEY_NAME
    return default if default.exists() else None
