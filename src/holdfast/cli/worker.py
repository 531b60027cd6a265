"""``holdfast worker``: lease and run tasks until stopped (SIGTERM: finish the step, release)."""

from __future__ import annotations

import logging
import time
from typing import Any

import click

from holdfast.cli.options import NON_NEGATIVE, POSITIVE
from holdfast.cli.task import db_option, open_harness
from holdfast.display import escape_control

log = logging.getLogger("holdfast.cli.worker")


@click.command()
@click.option("--concurrency", "-c", type=int, default=1, show_default=True)
@click.option("--queue", "queues", multiple=True, help="Only these queues (repeatable).")
@click.option("--lease-ttl", type=POSITIVE, default=30.0, show_default=True, help="Seconds.")
@click.option("--heartbeat", type=POSITIVE, default=None, help="Seconds (default: lease-ttl / 3).")
@click.option("--poll", type=POSITIVE, default=0.5, show_default=True, help="Idle poll, seconds.")
@click.option("--exit-when-idle", is_flag=True, help="Exit once no task is ready.")
@click.option("--max-tasks", type=int, default=None, help="Exit after running this many.")
@click.option(
    "--prefetch",
    type=int,
    default=4,
    show_default=True,
    help="Tasks one lease may take while work waits and tasks end quickly (1: off).",
)
@click.option(
    "--queue-limit", multiple=True, metavar="QUEUE=N", help="Cap running tasks (* = all)."
)
@click.option("--load", multiple=True, metavar="MODULE:ATTR", help="Register a task kind.")
@click.option(
    "--sign-key",
    type=click.Path(),
    default=None,
    help="Sign receipts with this key (default: HOLDFAST_RECEIPT_KEY, else <home>/receipt.key).",
)
@click.option(
    "--wait-for-store",
    type=NON_NEGATIVE,
    default=60.0,
    show_default=True,
    help="Seconds to wait for an unreachable store at start-up (0: fail at once).",
)
@click.option("--log-level", default="INFO", show_default=True)
@db_option
def worker(
    concurrency: int,
    queues: tuple[str, ...],
    lease_ttl: float,
    heartbeat: float | None,
    poll: float,
    exit_when_idle: bool,
    max_tasks: int | None,
    prefetch: int,
    queue_limit: tuple[str, ...],
    load: tuple[str, ...],
    sign_key: str | None,
    wait_for_store: float,
    log_level: str,
    database_url: str | None,
) -> None:
    """Run a worker that leases tasks, heartbeats, and runs them."""
    from holdfast.errors import InvalidInput
    from holdfast.harness import WorkerSettings, load_signer
    from holdfast.harness.signing import require_signing

    if concurrency < 1 or lease_ttl <= 0 or poll <= 0:
        raise InvalidInput("--concurrency, --lease-ttl and --poll must be positive")
    if heartbeat is not None and not 0 < heartbeat < lease_ttl:
        raise InvalidInput("--heartbeat must be positive and shorter than --lease-ttl")
    handler = logging.StreamHandler()
    # log lines quote task errors and store messages: escaped so they cannot act on a terminal
    handler.setFormatter(SafeFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=log_level.upper(), handlers=[handler])
    signer = load_signer(sign_key) if sign_key else None
    with _open_waiting(database_url, load, signer, wait_for_store) as h:
        require_signing(h.signer)  # a public-only key would fail at the first receipt
        for item in queue_limit:
            name, _, n = item.partition("=")
            if not name or not n.isdigit():
                raise InvalidInput(f"--queue-limit takes QUEUE=N, got {item!r}")
            h.store.set_queue_limit(name, int(n))
        settings = WorkerSettings(
            concurrency=concurrency,
            queues=queues or None,
            lease_ttl_s=lease_ttl,
            heartbeat_s=heartbeat,
            poll_s=poll,
            exit_when_idle=exit_when_idle,
            max_tasks=max_tasks,
            prefetch=prefetch,
        )
        w = h.worker(settings)
        click.echo(escape_control(f"worker {w.id} on {h.store.url}"), err=True)
        n = w.run()
    click.echo(escape_control(f"worker {w.id} stopped after {n} task(s)"), err=True)


class SafeFormatter(logging.Formatter):
    """A formatter whose output (message and traceback) has its control characters escaped."""

    def format(self, record: logging.LogRecord) -> str:
        return escape_control(super().format(record))


def _open_waiting(url: str | None, load: tuple[str, ...], signer: Any, wait_s: float) -> Any:
    """Open the store, waiting out an outage (a database restarting) for up to ``wait_s``."""
    from holdfast.errors import RetryableFailure

    deadline = time.monotonic() + wait_s
    delay = 0.2
    while True:
        try:
            return open_harness(url, load, signer=signer)
        except RetryableFailure as exc:
            if time.monotonic() + delay > deadline:
                raise
            log.warning("store unavailable at start-up, retrying: %s", exc.message)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
