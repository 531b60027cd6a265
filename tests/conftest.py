"""Suite-wide fixtures: no network beyond loopback, and a throwaway Holdfast home per test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from holdfast.testing import netguard
from holdfast.testing.postgres import MISSING, PostgresCluster, find_bin_dir


def pytest_configure(config: pytest.Config) -> None:
    netguard.install()


@pytest.fixture(autouse=True)
def _no_outside_network() -> Iterator[None]:
    netguard.take_violations()
    yield
    violations = netguard.take_violations()
    if violations:
        pytest.fail("test tried to reach the network outside loopback:\n" + "\n".join(violations))


@pytest.fixture(autouse=True)
def holdfast_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own HOLDFAST_HOME; nothing touches ~/.holdfast."""
    home = tmp_path / "holdfast-home"
    home.mkdir()
    monkeypatch.setenv("HOLDFAST_HOME", str(home))
    for var in ("HOLDFAST_MODEL", "HOLDFAST_DATABASE_URL", "OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    return home


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster]:
    """One throwaway PostgreSQL server for the whole run, started on first use; each test
    creates its own database in it (skips when the server binaries are missing)."""
    if find_bin_dir() is None:
        pytest.skip(MISSING)
    cluster = PostgresCluster()
    cluster.start()
    yield cluster
    cluster.destroy()


@dataclass(frozen=True)
class CLIResult:
    code: int
    out: str
    err: str


@pytest.fixture
def holdfast_cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., CLIResult]:
    """Run ``holdfast ARGS`` through its real entry point (``holdfast.cli.main:main``), so exit
    codes and error lines are what a user sees; returns the code and captured output."""
    from holdfast.cli.main import main

    def run(*args: str) -> CLIResult:
        capsys.readouterr()
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        captured = capsys.readouterr()
        return CLIResult(code, captured.out, captured.err)

    return run
