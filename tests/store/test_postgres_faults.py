"""PostgreSQL faults: a wrong password or an unknown database fails at once, a server that does
not answer is retried, and no password is ever printed, in messages, tracebacks, JSON or logs."""

from __future__ import annotations

import itertools
import json
import os
import pickle
import re
import subprocess
import sys
import time
import traceback
from urllib.parse import quote

import pytest

from holdfast.errors import HoldfastError
from holdfast.harness import Harness
from holdfast.store import StoreRejected, StoreUnavailable
from holdfast.testing.postgres import PostgresCluster

SECRET = "S3cret/p@ss:w0rd"  # characters that must be percent-encoded in a URL


def _forms(secret: str) -> list[str]:
    return [secret, quote(secret, safe="")]


def _everything_shown(exc: BaseException) -> str:
    """Every text a person or a log could get from this error."""
    parts = [str(exc), repr(exc), "".join(traceback.format_exception(exc))]
    if isinstance(exc, HoldfastError):
        parts.append(json.dumps(exc.to_dict()))
    parts.append(repr(pickle.loads(pickle.dumps(exc)).__dict__))
    seen = exc.__cause__ or exc.__context__
    while seen is not None:
        parts.append(repr(seen))
        seen = seen.__cause__ or seen.__context__
    return "\n".join(parts)


def _holdfast(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "holdfast.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "HOLDFAST_DATABASE_URL": ""},
    )


_n = itertools.count(1)


@pytest.fixture
def password_url(pg_cluster: PostgresCluster) -> str:
    n = next(_n)
    pg_cluster.create_database(f"pwdb{n}")
    return pg_cluster.add_password_user(f"alice{n}", SECRET, database=f"pwdb{n}")


@pytest.mark.postgres
def test_the_right_password_works_and_is_never_shown(password_url: str) -> None:
    with Harness.open(password_url) as h:
        assert h.store.url.startswith("postgresql://alice")
        assert not any(f in h.store.url for f in _forms(SECRET))
        assert h.list_tasks() == []
    out = _holdfast("worker", "--exit-when-idle", "--database-url", password_url)
    assert out.returncode == 0, out.stderr
    assert "worker " in out.stderr and not any(f in out.stderr for f in _forms(SECRET))


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (
            lambda u: u.replace(quote(SECRET, safe=""), quote("Wr0ng-" + SECRET, safe="")),
            "password",
        ),
        (lambda u: re.sub(r"/pwdb\d+\?", "/no_such_db?", u), "does not exist"),
        (lambda u: re.sub(r"alice\d+", "mallory", u), "mallory"),
    ],
    ids=["wrong password", "unknown database", "unknown user"],
)
def test_a_refused_login_fails_at_once_not_like_an_outage(
    password_url: str, change: object, reason: str
) -> None:
    bad = change(password_url)  # type: ignore[operator]
    start = time.monotonic()
    with pytest.raises(StoreRejected, match=reason) as info:
        Harness.open(bad)
    assert time.monotonic() - start < 5
    assert not info.value.retryable
    shown = _everything_shown(info.value)
    assert not any(f in shown for f in [*_forms(SECRET), *_forms("Wr0ng-" + SECRET)]), shown
    # a worker told to wait 60 s for an unreachable store gives up at once on a refusal
    start = time.monotonic()
    out = _holdfast("worker", "--wait-for-store", "60", "--database-url", bad)
    assert time.monotonic() - start < 30
    assert out.returncode == 2 and "refused the connection" in out.stderr, out.stderr
    assert not any(f in out.stderr + out.stdout for f in _forms(SECRET)), out.stderr


@pytest.mark.postgres
def test_a_server_that_is_down_is_still_retryable(pg_cluster: PostgresCluster) -> None:
    url = f"postgresql://alice:{quote(SECRET, safe='')}@/pwdb?host={pg_cluster.root}/nowhere"
    with pytest.raises(StoreUnavailable, match="cannot reach PostgreSQL") as info:
        Harness.open(url)
    assert info.value.retryable
    assert not any(f in _everything_shown(info.value) for f in _forms(SECRET))


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u:Secret@[::1/db",
        "postgresql://u:Secret@127.0.0.1:port/db",
        "postgresql://u@127.0.0.1/db?password=Secret&bad option",
        "postgresql://u:Secret@127.0.0.1/db?sslmode=nonsense",
    ],
)
def test_a_malformed_url_never_shows_its_password(url: str) -> None:
    with pytest.raises(HoldfastError) as info:
        Harness.open(url)
    assert "Secret" not in _everything_shown(info.value)
    out = _holdfast("task", "list", "--database-url", url)
    assert out.returncode in (1, 2)
    assert "Secret" not in out.stderr + out.stdout, out.stderr
