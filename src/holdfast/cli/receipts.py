"""``holdfast receipts``: show, verify (exit 3 when broken), export anchors, and make a key.

The signing key is the one every writer uses (``HOLDFAST_RECEIPT_KEY``, else
``<holdfast home>/receipt.key``); ``verify --key FILE`` checks with another key (an Ed25519 public
key is enough) and ``--no-key`` checks the hashes alone. ``export`` writes each task's verified
head as a signed anchor (JSON lines) to keep outside the database; ``verify --anchor FILE`` checks
the chain against it, which catches a chain cut back or rewritten with the head moved to match.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from holdfast.cli.task import db_option, echo_json, json_option, open_harness
from holdfast.display import escape_control
from holdfast.errors import InvalidInput

EXIT_BROKEN = 3


@click.group()
def receipts() -> None:
    """Show and verify a task's hash-chained receipts; export anchors; make a signing key."""


@receipts.command()
@click.argument("task_id")
@db_option
@json_option
def show(task_id: str, database_url: str | None, as_json: bool) -> None:
    """Print every receipt with its hash (JSON lines with --json)."""
    from holdfast.cli.task import receipt_fields

    with open_harness(database_url) as h:
        rows = h.receipts(task_id)
    for r in rows:
        d = receipt_fields(r)
        if as_json:
            echo_json({"body": d, "hash": r.hash, "sig": r.sig, "key_id": r.key_id}, indent=None)
        else:
            step = f" [{d['step']}]" if d.get("step") else ""
            line = f"{r.seq:>6} {str(r.hash)[:16]} {d.get('kind')}{step} by {d.get('actor')}"
            click.echo(escape_control(line))


def _key_options(fn: Any) -> Any:
    fn = click.option(
        "--no-key", is_flag=True, help="Check hashes only, ignoring the configured key."
    )(fn)
    return click.option(
        "--key",
        "key_file",
        type=click.Path(dir_okay=False),
        default=None,
        help="Key file to check signatures with (an Ed25519 public key is enough; default: "
        "the configured HOLDFAST_RECEIPT_KEY or <home>/receipt.key).",
    )(fn)


def _signer(key_file: str | None, no_key: bool) -> Any:
    from holdfast.harness import CONFIGURED_KEY, load_signer

    if key_file and no_key:
        raise InvalidInput("--key and --no-key contradict each other")
    if no_key:
        return None
    return load_signer(key_file) if key_file else CONFIGURED_KEY


@receipts.command()
@click.argument("task_ids", nargs=-1)
@click.option("--all", "all_tasks", is_flag=True, help="Verify every task in the store.")
@_key_options
@click.option(
    "--require-signatures",
    is_flag=True,
    help="Fail unless a key is at hand to check signatures (with a key, a missing signature "
    "always fails).",
)
@click.option(
    "--anchor",
    "anchor_file",
    type=click.Path(dir_okay=False, allow_dash=True),
    default=None,
    help="Anchors written by `holdfast receipts export` ('-': standard input); with no TASK_ID, "
    "every anchored task is verified (a task gone from the store is broken).",
)
@db_option
@json_option
def verify(
    task_ids: tuple[str, ...],
    all_tasks: bool,
    key_file: str | None,
    no_key: bool,
    require_signatures: bool,
    anchor_file: str | None,
    database_url: str | None,
    as_json: bool,
) -> None:
    """Check chains, heads, task rows and steps: exit 0 when intact, 3 naming the first bad
    receipt otherwise."""
    from holdfast.harness import TaskNotFound, VerifyResult, read_anchors

    anchors = []
    if anchor_file is not None:
        anchors = read_anchors(
            _read(anchor_file), "the anchor file" if anchor_file == "-" else anchor_file
        )
    if not task_ids and not all_tasks and not anchors:
        raise InvalidInput("name a TASK_ID (or --all, or --anchor FILE)")
    signer = _signer(key_file, no_key)
    results: list[tuple[str, VerifyResult]] = []
    with open_harness(database_url) as h:
        ids = list(task_ids)
        if all_tasks:
            ids += [t.id for t in h.list_tasks(limit=10**9)]
        if not task_ids and not all_tasks:
            ids = [a.task for a in anchors]
        anchored = {a.task for a in anchors}
        for task_id in dict.fromkeys(ids):
            try:
                result = h.verify(
                    task_id,
                    signer=signer,
                    require_signatures=require_signatures,
                    anchors=anchors,
                )
            except TaskNotFound:
                if task_id not in anchored:
                    raise
                result = VerifyResult(
                    False, 0, "", None, "the task is anchored but gone from the store"
                )
            results.append((task_id, result))
    single = len(task_ids) == 1 and not all_tasks
    if as_json:
        rows = [{"task": t, **r.to_dict()} for t, r in results]
        echo_json(rows[0] if single else rows)
    else:
        for task_id, r in results:
            click.echo(_verdict(task_id, r, single), err=not r.ok)
    if not all(r.ok for _, r in results):
        sys.exit(EXIT_BROKEN)


def _verdict(task_id: str, r: Any, single: bool) -> str:
    who = "" if single else f" {task_id}"
    if r.ok:
        signed = f", {r.signed} signatures valid" if r.key_id else ", signatures not checked"
        anchored = f", {r.anchors} anchor(s) hold" if r.anchors else ""
        line = f"ok{who}: {r.count} receipts chain to head {r.head_hash[:16]}{signed}{anchored}"
    else:
        where = f" at receipt {r.bad_seq}" if r.bad_seq is not None else ""
        line = f"BROKEN{who}{where}: {r.reason}"
    return escape_control(line)


def _read(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"cannot read the anchor file {path}: {exc}") from exc


@receipts.command()
@click.argument("task_ids", nargs=-1)
@click.option("--all", "all_tasks", is_flag=True, help="Anchor every task in the store.")
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False),
    default=None,
    help="Append the anchors to this file (default: standard output).",
)
@db_option
def export(
    task_ids: tuple[str, ...], all_tasks: bool, output: str | None, database_url: str | None
) -> None:
    """Write each task's verified, signed head as an anchor (one JSON line per task) to keep
    outside the database; `verify --anchor FILE` checks against it later. Exit 3 (and no
    anchor for it) when a task does not verify."""
    import json

    if not task_ids and not all_tasks:
        raise InvalidInput("name a TASK_ID (or --all)")
    lines: list[str] = []
    broken = False
    with open_harness(database_url) as h:
        ids = list(task_ids) + ([t.id for t in h.list_tasks(limit=10**9)] if all_tasks else [])
        signed = h.signer is not None and h.signer.can_sign
        for task_id in dict.fromkeys(ids):
            result, anchor = h.export_anchor(task_id)
            if anchor is None:
                broken = True
                click.echo(_verdict(task_id, result, False), err=True)
                continue
            lines.append(json.dumps(anchor.to_dict(), sort_keys=True))
    if not signed:
        click.echo(
            "warning: no signing key, so these anchors are unsigned: keep them where the "
            "database's writers cannot change them",
            err=True,
        )
    text = "".join(line + "\n" for line in lines)
    if output is None:
        click.echo(text, nl=False)
    else:
        try:
            with open(output, "a", encoding="utf-8") as fh:
                fh.write(text)
                fh.flush()
        except OSError as exc:
            raise InvalidInput(f"cannot write {output}: {exc.strerror}") from exc
        click.echo(f"{len(lines)} anchor(s) appended to {escape_control(output)}", err=True)
    if broken:
        sys.exit(EXIT_BROKEN)


@receipts.command()
@click.option("--hmac", "use_hmac", is_flag=True, help="A shared HMAC secret instead of Ed25519.")
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    default=None,
    help="Where to write the key (default: <holdfast home>/receipt.key, which every writer "
    "then uses).",
)
def keygen(use_hmac: bool, out: str | None) -> None:
    """Create a receipt signing key (mode 0600; never over an existing file)."""
    from holdfast.config import RECEIPT_KEY_NAME, holdfast_home
    from holdfast.harness import generate_key

    path = Path(out) if out else holdfast_home() / RECEIPT_KEY_NAME
    signer = generate_key(path, "hmac" if use_hmac else "ed25519")
    shown = escape_control(str(path))
    click.echo(f"wrote {signer.key_id} to {shown}")
    if not use_hmac:
        click.echo(f"public key for auditors: {shown}.pub")
    if out:
        click.echo(f"writers use it with HOLDFAST_RECEIPT_KEY={shown}")
