"""A throwaway PostgreSQL cluster for tests and benchmarks, started from the server binaries.

``PostgresCluster`` runs ``initdb`` and ``pg_ctl`` (found under ``/usr/lib/postgresql/*/bin`` or
on ``PATH``) in a fresh temporary directory, listening only on a Unix socket in that directory:
no TCP port, nothing reachable from outside. PostgreSQL refuses to run as root, so when this
process is root the server runs as the unprivileged ``nobody`` user.

    with PostgresCluster() as pg:
        url = pg.create_database("t1")       # postgresql://holdfast@/t1?host=/tmp/...

``find_bin_dir()`` returns None when the binaries are missing; tests skip with that message.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from holdfast.errors import ConfigError

SUPERUSER = "holdfast"


def find_bin_dir() -> Path | None:
    """The directory holding ``initdb`` and ``pg_ctl`` (newest version first), or None."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0,
        reverse=True,
    )
    if found:
        return Path(found[0]).parent
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path else None


MISSING = (
    "PostgreSQL server binaries (initdb, pg_ctl) were not found under /usr/lib/postgresql/*/bin "
    "or on PATH; install the 'postgresql' package (.ci/run does this)"
)


class PostgresCluster:
    """A private PostgreSQL server in a temporary directory, on a Unix socket only."""

    def __init__(
        self,
        *,
        durable: bool = False,
        max_connections: int = 200,
        synchronous_commit: bool = False,
        listen_addresses: str = "",
        host_rules: tuple[str, ...] = (),
        netns: str | None = None,
    ) -> None:
        """``durable``: ``fsync=on`` (else off, for speed). ``synchronous_commit``: a commit is
        acknowledged only once it is on disk, as on a production server (durability tests need
        it: without it a crash loses commits the client was told about).

        ``listen_addresses`` (default none: the Unix socket only) opens TCP on those addresses,
        ``host_rules`` are ``pg_hba.conf`` lines put first (e.g. ``host all app 10.0.0.0/24
        scram-sha-256``), and ``netns`` names a network namespace (``ip netns``) the server runs
        in, so its addresses are that namespace's (multi-host tests)."""
        bin_dir = find_bin_dir()
        if bin_dir is None:
            raise ConfigError(MISSING)
        self.bin_dir = bin_dir
        self.durable = durable or synchronous_commit
        self.synchronous_commit = synchronous_commit
        self.max_connections = max_connections
        self.listen_addresses = listen_addresses
        self.host_rules = host_rules
        self.netns = netns
        self.root = Path(tempfile.mkdtemp(prefix="holdfast-pg-"))
        self.data = self.root / "data"
        self.socket_dir = self.root
        self.log = self.root / "server.log"
        self._uid_gid: tuple[int, int] | None = None
        if os.geteuid() == 0:
            import pwd

            pw = pwd.getpwnam("nobody")
            self._uid_gid = (pw.pw_uid, pw.pw_gid)
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
        os.chmod(self.root, 0o700)
        self._initdb()

    def _as_server_user(self) -> Any:
        ids = self._uid_gid
        netns = self.netns
        if ids is None and netns is None:
            return None

        def demote() -> None:
            if netns is not None:
                from holdfast.testing.netns import enter_netns

                enter_netns(netns)
            if ids is None:
                return
            os.setgroups([])
            os.setgid(ids[1])
            os.setuid(ids[0])

        return demote

    def _cmd(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "LANG": "C"}
        proc = subprocess.run(
            list(args),
            env=env,
            cwd=self.root,
            preexec_fn=self._as_server_user(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check and proc.returncode != 0:
            raise ConfigError(
                f"{Path(args[0]).name} failed ({proc.returncode}): "
                f"{(proc.stderr or proc.stdout).strip()[-800:]}"
            )
        return proc

    def _initdb(self) -> None:
        self._cmd(
            str(self.bin_dir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            SUPERUSER,
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        )
        settings = [
            f"listen_addresses = '{self.listen_addresses}'",
            f"unix_socket_directories = '{self.socket_dir}'",
            f"max_connections = {self.max_connections}",
            "shared_buffers = 64MB",
            "log_min_messages = warning",
        ]
        if self.durable:
            sync = "on" if self.synchronous_commit else "off"
            settings += ["fsync = on", f"synchronous_commit = {sync}"]
        else:
            settings += ["fsync = off", "synchronous_commit = off", "full_page_writes = off"]
        with open(self.data / "postgresql.conf", "a", encoding="utf-8") as fh:
            fh.write("\n".join(settings) + "\n")
        if self.host_rules:
            hba = self.data / "pg_hba.conf"
            rules = "".join(rule + "\n" for rule in self.host_rules)
            hba.write_text(rules + hba.read_text(encoding="utf-8"), encoding="utf-8")

    def start(self) -> None:
        self._cmd(
            str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "start"
        )

    def stop(self, mode: str = "fast") -> None:
        self._cmd(
            str(self.bin_dir / "pg_ctl"),
            "-D",
            str(self.data),
            "-m",
            mode,
            "-w",
            "stop",
            check=False,
        )

    def restart(self) -> None:
        self.stop()
        self.start()

    def postmaster_pid(self) -> int | None:
        """The running server's postmaster pid (first line of ``postmaster.pid``), or None."""
        try:
            return int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@/{dbname}?host={self.socket_dir}"

    def create_database(self, name: str) -> str:
        """Create an empty database and return its URL."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def add_password_user(self, name: str, password: str, *, database: str | None = None) -> str:
        """A role that must log in with ``password`` (SCRAM), owning ``database`` if given;
        returns its URL (password included) for that database, or ``postgres``.

        Every other role keeps trust authentication on the cluster's socket."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(name), sql.Literal(password)
                )
            )
            if database is not None:
                conn.execute(
                    sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
                        sql.Identifier(database), sql.Identifier(name)
                    )
                )
            hba = self.data / "pg_hba.conf"
            rule = f'local all "{name}" scram-sha-256\n'
            hba.write_text(rule + hba.read_text(encoding="utf-8"), encoding="utf-8")
            conn.execute("SELECT pg_reload_conf()")
        self._await_password_rule(name)
        from urllib.parse import quote

        return (
            f"postgresql://{quote(name, safe='')}:{quote(password, safe='')}@/"
            f"{database or 'postgres'}?host={self.socket_dir}"
        )

    def _await_password_rule(self, name: str, timeout_s: float = 10.0) -> None:
        """The reload is asynchronous: wait until a login without the password is refused."""
        import time

        import psycopg

        deadline = time.monotonic() + timeout_s
        while True:
            try:
                psycopg.connect(
                    f"postgresql://{name}@/postgres?host={self.socket_dir}", connect_timeout=2
                ).close()
            except psycopg.OperationalError:
                return
            if time.monotonic() > deadline:
                raise ConfigError(f"the server did not start asking {name!r} for a password")
            time.sleep(0.05)

    def destroy(self) -> None:
        """Stop the server and delete its directory."""
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PostgresCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy()
