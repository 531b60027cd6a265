"""Versioned schema migrations, per component, for both backends.

Each component (``harness``, ``session``, ``calllog``, ``rlm_traces``, the memory index...) owns
a list of migrations; ``migrations[i]`` is version ``i + 1``. A migration is a SQL script, or a
function of the :class:`~holdfast.store.Dialect` returning one, so a schema is written once with
the dialect's column types. The versions applied are rows of ``schema_migrations``. Migrations are
append-only: never edit one that has shipped, add a new one.

Opening an up-to-date database only reads (no write lock, so a damaged file can still be read);
otherwise the missing versions are applied in one write transaction, under PostgreSQL's advisory
lock or SQLite's write lock, so processes starting together apply each version exactly once. A
database newer than the code is refused with a message to upgrade.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from holdfast.errors import ConfigError
from holdfast.store.backend import Backend, Dialect
from holdfast.store.sqlite import SQLiteDB

Migration = str | Callable[[Dialect], str]

_MIGRATE_LOCK = 7_373_000

_DDL = (
    "CREATE TABLE IF NOT EXISTS schema_migrations (component TEXT NOT NULL, "
    "version INTEGER NOT NULL, applied_at {float} NOT NULL, PRIMARY KEY (component, version))"
)


def migrate(backend: Backend | SQLiteDB, component: str, migrations: Sequence[Migration]) -> int:
    """Bring ``component``'s schema to ``len(migrations)``; returns that version."""
    if isinstance(backend, SQLiteDB):
        from holdfast.store.sqlite_backend import SQLiteBackend

        backend = SQLiteBackend(db=backend)
    target = len(migrations)
    current = _applied(backend, component)
    if current is not None and current >= target:
        _refuse_newer(backend, component, current, target)
        return target
    with backend.transaction() as h:
        backend.advisory_lock(h, _MIGRATE_LOCK)
        backend.run(h, _DDL.format(float=backend.dialect.float))
        row = backend.one(
            h,
            "SELECT COALESCE(MAX(version), 0) AS v FROM schema_migrations WHERE component = ?",
            (component,),
        )
        current = int(row["v"]) if row else 0
        _refuse_newer(backend, component, current, target)
        for version in range(current + 1, target + 1):
            step = migrations[version - 1]
            script = step(backend.dialect) if callable(step) else step
            backend.run_script(h, script)
            backend.run(
                h,
                "INSERT INTO schema_migrations (component, version, applied_at) VALUES (?, ?, ?)",
                (component, version, backend.now(h)),
            )
    return target


def schema_version(backend: Backend, component: str) -> int:
    """The version of ``component`` the database holds (0 when it has none)."""
    return _applied(backend, component) or 0


def _applied(backend: Backend, component: str) -> int | None:
    """The applied version, read without a write lock; None when there is no migrations table."""
    if not backend.has_table("schema_migrations"):
        return None
    row = backend.query_one(
        "SELECT COALESCE(MAX(version), 0) AS v FROM schema_migrations WHERE component = ?",
        (component,),
    )
    return int(row["v"]) if row else 0


def _refuse_newer(backend: Backend, component: str, current: int, target: int) -> None:
    if current > target:
        raise ConfigError(
            f"the store {backend.url} has {component} schema version {current}, newer than this "
            f"Holdfast knows ({target}); upgrade Holdfast",
            component=component,
        )
