"""``holdfast memory``: add, search, show, edit, forget, trust, promote, reindex, entities, stats,
export, import.

The memory directory is ``<holdfast home>/memory`` (``--root`` to change it); the embedder comes
from ``--embedder`` or ``HOLDFAST_MEMORY_EMBEDDER`` (``local`` by default, ``none`` for
keyword-only, ``openai:<model>@<base_url>`` for an endpoint). Items added here are owner-trusted:
a person typed them. Every command that prints data takes ``--json``; text output escapes
control characters (stored text is data, never terminal commands). Bad input (a time that is
not ISO-8601, bytes that are not UTF-8, an unknown id) is a one-line error with exit code 2.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from holdfast.display import dumps, escape_control
from holdfast.errors import InvalidInput


def _remote(ctx: click.Context) -> Any:
    """The client of the configured server (``--server`` / ``HOLDFAST_SERVER``), or None."""
    obj = ctx.find_object(dict) or {}
    if obj.get("no_server"):
        return None
    if "remote" not in obj:
        from holdfast.server.client import client_from

        obj["remote"] = client_from(obj.get("server"), obj.get("token"), os.environ)
        if obj["remote"] is not None and (obj.get("root") or obj.get("embedder")):
            raise click.UsageError(
                "--root and --embedder choose a local memory directory; with a server "
                "(--server / HOLDFAST_SERVER) the server's is used: pass --no-server to work locally"
            )
    return obj["remote"]


def _store(ctx: click.Context) -> Any:
    from holdfast.config import database_url
    from holdfast.memory import MemoryConfig, open_memory
    from holdfast.store.urls import is_postgres

    obj = ctx.find_object(dict)
    if obj is None:
        obj = ctx.ensure_object(dict)
    if _remote(ctx) is not None:
        raise click.UsageError(
            f"'holdfast memory {ctx.info_name}' works on the memory directory itself, not "
            "through a server: pass --no-server (or unset HOLDFAST_SERVER) to run it locally"
        )
    if "store" not in obj:
        root = obj.get("root")
        embedder = obj.get("embedder") or os.environ.get("HOLDFAST_MEMORY_EMBEDDER") or "local"
        url = database_url(obj.get("database_url"))
        if url and is_postgres(url) and root:
            raise click.UsageError(
                "--root names a Markdown memory directory, but with a PostgreSQL database "
                "(--database-url / HOLDFAST_DATABASE_URL) memory is the database's: use "
                "'export --markdown DIR' and 'import --markdown DIR' to work on files"
            )
        obj["store"] = open_memory(
            MemoryConfig(root=Path(root) if root else None, embedder=embedder), database_url=url
        )
        ctx.call_on_close(obj["store"].close)
    return obj["store"]


def _emit(data: Any, as_json: bool, text: str) -> None:
    # memory items are user, model and document text: shown as data, never acted on
    click.echo(dumps(data, indent=2, ensure_ascii=False) if as_json else escape_control(text))


def _decode(raw: bytes, where: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise InvalidInput(
            f"{where} is not valid UTF-8: byte 0x{raw[exc.start]:02x} at offset {exc.start} "
            f"(line {line}); re-encode it as UTF-8"
        ) from None


def _stdin_bytes() -> bytes:
    buffer = getattr(sys.stdin, "buffer", None)
    if buffer is not None:
        data: bytes = buffer.read()
        return data
    return sys.stdin.read().encode("utf-8", "surrogateescape")


def _read_text(text: str) -> str:
    if text == "-":
        return _decode(_stdin_bytes(), "standard input")
    return text


if TYPE_CHECKING:
    _ParamType = click.ParamType[Any]
else:  # click before 8.2 has no generic ParamType
    _ParamType = click.ParamType


class IsoTime(_ParamType):
    """An ISO-8601 date or time; anything else is a usage error (exit 2) naming the value."""

    name = "ISO-TIME"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        from holdfast.memory.items import BadTime, parse_time

        try:
            return parse_time(
                value, param.name.replace("_", "-") if param and param.name else "time"
            )
        except BadTime as exc:
            self.fail(exc.message, param, ctx)


ISO = IsoTime()
json_opt = click.option("--json", "as_json", is_flag=True, help="Print JSON.")
ns_opt = click.option("--namespace", "-n", default="default", show_default=True, help="Namespace.")


@click.group()
@click.option("--root", type=click.Path(file_okay=False), help="Memory directory.")
@click.option("--embedder", help="local | none | openai:<model>@<base_url>.")
@click.option(
    "--server",
    help="A running 'holdfast serve' (default: $HOLDFAST_SERVER): add, search, show and forget "
    "go through it and its warm embedder.",
)
@click.option("--token", help="The server's bearer token (default: $HOLDFAST_TOKEN).")
@click.option("--no-server", is_flag=True, help="Work on the local directory even if one is set.")
@click.option(
    "--database-url",
    help="A postgresql:// control plane (default: $HOLDFAST_DATABASE_URL): memory is then the "
    "database's, shared by every worker; otherwise the Markdown files under --root.",
)
@click.pass_context
def memory(
    ctx: click.Context,
    root: str | None,
    embedder: str | None,
    server: str | None,
    token: str | None,
    no_server: bool,
    database_url: str | None,
) -> None:
    """Knowledge memory: Markdown files as the truth (or, under a PostgreSQL control plane,
    the database), hybrid recall over them."""
    ctx.obj = {
        "root": root,
        "embedder": embedder,
        "server": server,
        "token": token,
        "no_server": no_server,
        "database_url": database_url,
    }


def _write_message(res: dict[str, Any]) -> str:
    """A write's status in words, from its JSON form (a local write's or a server's answer)."""
    status = res["status"]
    if status in ("duplicate", "near_duplicate"):
        what = "the same text as" if status == "duplicate" else "the same claim as"
        msg = (
            f"not stored: {what} {res['duplicate_of']} ({res['citation']}): "
            f"{res['item']['text'][:200]}\n(pass --no-dedup to store it anyway)"
        )
    else:
        msg = f"{status} {res['item']['id']}"
    if res.get("redacted"):
        msg += f"; redacted: {', '.join(sorted(set(res['redacted'])))}"
    return msg


def _iso(value: Any) -> str | None:
    return None if value is None else str(value.isoformat())


@memory.command()
@click.argument("text")
@ns_opt
@click.option("--kind", default="fact", show_default=True)
@click.option("--entity", "entities", multiple=True, help="An entity it is about (repeatable).")
@click.option("--tag", "tags", multiple=True, help="A tag (repeatable).")
@click.option("--trust", default="owner", show_default=True)
@click.option("--mention-time", type=ISO, help="ISO time it was said (default: now).")
@click.option("--source-url", help="Where it came from.")
@click.option(
    "--no-dedup", is_flag=True, help="Store it even if an item with the same text exists."
)
@json_opt
@click.pass_context
def add(
    ctx: click.Context,
    text: str,
    namespace: str,
    kind: str,
    entities: tuple[str, ...],
    tags: tuple[str, ...],
    trust: str,
    mention_time: Any,
    source_url: str | None,
    no_dedup: bool,
    as_json: bool,
) -> None:
    """Remember TEXT ('-' reads standard input)."""
    source = {"url": source_url} if source_url else None
    remote = _remote(ctx)
    if remote is not None:
        data = remote.request("POST", "/api/v1/memory/items", {
            "text": _read_text(text), "namespace": namespace, "kind": kind,
            "entities": list(entities), "tags": list(tags), "trust": trust,
            "mention_time": _iso(mention_time), "source": source, "dedup": not no_dedup,
        })  # fmt: skip
    else:
        data = _store(ctx).add(
            _read_text(text), namespace=namespace, kind=kind, entities=entities, tags=tags,
            trust=trust, mention_time=mention_time, source=source, dedup=not no_dedup,
        ).to_dict()  # fmt: skip
    from holdfast.cli.memory_knowledge import write_report

    _emit(data, as_json, write_report(data))


@memory.command()
@click.argument("query")
@ns_opt
@click.option("--limit", "-k", default=10, show_default=True, type=click.IntRange(1, 1000))
@click.option("--entity", help="Only items about this entity (aliases included).")
@click.option("--as-of", type=ISO, help="Recall what was known and valid at this ISO time.")
@click.option("--after", type=ISO, help="Only events on or after this ISO date.")
@click.option("--before", type=ISO, help="Only events on or before this ISO date.")
@click.option("--kind", "kinds", multiple=True)
@click.option("--arms", default="keyword,dense,entity,time", show_default=True)
@click.option("--history", is_flag=True, help="Include superseded items.")
@click.option(
    "--observations-first",
    is_flag=True,
    help="Observations and mental models first (see `holdfast memory evidence ID`).",
)
@json_opt
@click.pass_context
def search(
    ctx: click.Context,
    query: str,
    namespace: str,
    limit: int,
    entity: str | None,
    as_of: Any,
    after: Any,
    before: Any,
    kinds: tuple[str, ...],
    arms: str,
    history: bool,
    observations_first: bool,
    as_json: bool,
) -> None:
    """Recall items for QUERY, best first, with citations."""
    remote = _remote(ctx)
    if remote is not None:
        found = remote.request("POST", "/api/v1/memory/search", {
            "query": query, "namespace": namespace, "limit": limit, "entity": entity,
            "as_of": _iso(as_of), "after": _iso(after), "before": _iso(before),
            "kinds": list(kinds), "arms": [a for a in arms.split(",") if a], "history": history,
            "observations_first": observations_first,
        })  # fmt: skip
        rows = [(h["score"], h.pop("rendered")) for h in found]
    else:
        hits = _store(ctx).search(
            query, namespace=namespace, limit=limit, entity=entity, as_of=as_of,
            time_range=(after, before) if (after or before) else None, kinds=kinds or None,
            arms=[a for a in arms.split(",") if a], include_history=history,
            observations_first=observations_first,
        )  # fmt: skip
        found = [h.to_dict() for h in hits]
        rows = [(h.score, h.render()) for h in hits]
    text = "\n\n".join(f"{n}. ({score:.4f}) {shown}" for n, (score, shown) in enumerate(rows, 1))
    _emit(found, as_json, text or "no results")


@memory.command()
@click.argument("item_id")
@ns_opt
@json_opt
@click.pass_context
def show(ctx: click.Context, item_id: str, namespace: str, as_json: bool) -> None:
    """Show one item with its metadata and file citation."""
    from holdfast.server.client import path_part

    remote = _remote(ctx)
    if remote is not None:
        path = f"/api/v1/memory/items/{path_part(item_id)}"
        data = remote.request("GET", path, params={"namespace": namespace})
    else:
        store = _store(ctx)
        item = store.get(item_id, namespace=namespace)
        data = item.to_dict() | {"citation": store.citation(item_id, namespace=namespace)}
    text = "\n".join(
        f"{k}: {v}" for k, v in data.items() if k != "text" and v not in (None, [], {})
    )
    _emit(data, as_json, text + "\n\n" + data["text"])


@memory.command()
@click.argument("item_id")
@ns_opt
@click.option(
    "--text", "new_text", help="The new text ('-' reads standard input); opens $EDITOR if absent."
)
@click.option(
    "--supersede", is_flag=True, help="Keep the old version in history instead of editing in place."
)
@json_opt
@click.pass_context
def edit(
    ctx: click.Context,
    item_id: str,
    namespace: str,
    new_text: str | None,
    supersede: bool,
    as_json: bool,
) -> None:
    """Change an item's text (its trust never changes: use 'trust' or 'promote')."""
    store = _store(ctx)
    old = store.get(item_id, namespace=namespace)
    text = _read_text(new_text) if new_text is not None else click.edit(old.text)
    if text is None or text.strip() == old.text.strip():
        _emit({"status": "unchanged", "id": item_id}, as_json, "unchanged")
        return
    if supersede:
        res = store.supersede(item_id, text, namespace=namespace, trust="owner")
        _emit(
            {"status": "superseded", "id": res.item.id, "old_id": item_id},
            as_json,
            f"superseded by {res.item.id}",
        )
    else:
        item = store.update(item_id, namespace=namespace, text=text)
        _emit({"status": "updated", "id": item.id}, as_json, f"updated {item.id}")


@memory.command()
@click.argument("item_id")
@ns_opt
@click.option("--purge", is_flag=True, help="Erase from files, trust ledger and index for real.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation of a purge.")
@json_opt
@click.pass_context
def forget(
    ctx: click.Context, item_id: str, namespace: str, purge: bool, yes: bool, as_json: bool
) -> None:
    """Tombstone an item (or erase it with --purge)."""
    if purge and not yes and not click.confirm(f"erase {item_id} everywhere?", default=False):
        raise click.Abort()
    from holdfast.server.client import path_part

    remote = _remote(ctx)
    if remote is not None:
        path = f"/api/v1/memory/items/{path_part(item_id)}"
        remote.request("DELETE", path, params={"namespace": namespace, "purge": str(purge).lower()})
    else:
        _store(ctx).delete(item_id, namespace=namespace, purge=purge)
    status = "purged" if purge else "deleted"
    _emit({"status": status, "id": item_id}, as_json, f"{status} {item_id}")


@memory.command()
@click.argument("item_id")
@click.argument("level", type=click.Choice(["owner", "agent", "tool", "untrusted"]))
@ns_opt
@json_opt
@click.pass_context
def trust(ctx: click.Context, item_id: str, level: str, namespace: str, as_json: bool) -> None:
    """Set an item's trust class (an owner decision: vouch for a hand-added item, or demote)."""
    item = _store(ctx).set_trust(item_id, level, namespace=namespace)
    _emit({"id": item.id, "trust": item.trust.value}, as_json, f"{item.id}: {item.trust.value}")


@memory.command()
@click.argument("item_id")
@ns_opt
@json_opt
@click.pass_context
def promote(ctx: click.Context, item_id: str, namespace: str, as_json: bool) -> None:
    """Move an item into curated MEMORY.md as owner-trusted."""
    store = _store(ctx)
    item = store.promote(item_id, namespace=namespace)
    cite = store.citation(item.id, namespace=namespace)
    _emit(
        {"id": item.id, "trust": item.trust.value, "citation": cite},
        as_json,
        f"promoted {item.id} ({cite})",
    )


@memory.command()
@ns_opt
@click.option("--reembed", is_flag=True, help="Recompute every vector (after a model change).")
@json_opt
@click.pass_context
def reindex(ctx: click.Context, namespace: str, reembed: bool, as_json: bool) -> None:
    """Rebuild the namespace's index from its Markdown files."""
    from rich.progress import Progress

    store = _store(ctx)
    with Progress(transient=True, disable=as_json) as bar:
        task = bar.add_task("embedding", total=None)
        report = store.reindex(namespace, reembed=reembed, progress=lambda n: bar.advance(task, n))
    lines = [f"files {report.files_read}, items {report.items_indexed}"]
    lines += [f"  {i}" for i in report.issues]
    _emit(report.to_dict(), as_json, "\n".join(lines))


@memory.command()
@ns_opt
@click.option(
    "--merge", "merge", multiple=True, help="Merge names into one entity (repeat; first names it)."
)
@click.option("--split", "split", nargs=2, help="ALIAS CANONICAL: stop linking the alias.")
@json_opt
@click.pass_context
def entities(
    ctx: click.Context,
    namespace: str,
    merge: tuple[str, ...],
    split: tuple[str, str] | None,
    as_json: bool,
) -> None:
    """List entities and their aliases; merge or split them."""
    store = _store(ctx)
    if merge:
        store.merge_entities(list(merge), namespace=namespace)
    if split:
        store.split_entity(split[0], split[1], namespace=namespace)
    ents = store.entities(namespace)
    text = "\n".join(f"{k}" + (f" = {', '.join(v)}" if v else "") for k, v in ents.items())
    _emit(ents, as_json, text or "no entities")


@memory.command()
@ns_opt
@json_opt
@click.pass_context
def stats(ctx: click.Context, namespace: str, as_json: bool) -> None:
    """Counts by kind and trust, vectors, files and issues (bad sections, items without a trust
    record, ids another namespace also holds)."""
    store = _store(ctx)
    data = store.stats(namespace)
    data["issue_list"] = [i.to_dict() for i in store.issues(namespace)]
    text = "\n".join(f"{k}: {v}" for k, v in data.items() if k != "issue_list")
    text += "".join(f"\n  {i['path']}:{i['line']}: {i['message']}" for i in data["issue_list"])
    _emit(data, as_json, text)


@memory.command(name="export")
@ns_opt
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="File (default: stdout).")
@click.option(
    "--markdown",
    "markdown_dir",
    type=click.Path(file_okay=False),
    help="Write the namespace as Markdown files (and trust ledger) under DIR/<namespace>/.",
)
@click.pass_context
def export_cmd(
    ctx: click.Context, namespace: str, output: str | None, markdown_dir: str | None
) -> None:
    """Write every item of the namespace as JSON lines, or with --markdown as the Markdown
    files an embedded memory reads (the human-editable form)."""
    if markdown_dir:
        if output:
            raise click.UsageError("--markdown writes a folder; leave out --output")
        n = _store(ctx).export_markdown(Path(markdown_dir), namespace)
        click.echo(escape_control(f"exported {n} item(s) to {Path(markdown_dir) / namespace}"))
        return
    records = list(_store(ctx).export(namespace))
    if output:
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        Path(output).write_text(text, "utf-8")
    else:
        click.echo("".join(dumps(r, ensure_ascii=False) + "\n" for r in records), nl=False)


@memory.command(name="import")
@click.argument("source", type=click.Path(allow_dash=True))
@ns_opt
@click.option(
    "--trust",
    "trust_cap",
    type=click.Choice(["owner", "agent", "tool", "untrusted"]),
    help="Import at most this trusted (default: trust as exported).",
)
@click.option("--skip-bad", is_flag=True, help="Import the good lines even if some are bad.")
@click.option(
    "--markdown",
    is_flag=True,
    help="SOURCE is a namespace folder of Markdown files (as 'export --markdown' writes).",
)
@json_opt
@click.pass_context
def import_cmd(
    ctx: click.Context,
    source: str,
    namespace: str,
    trust_cap: str | None,
    skip_bad: bool,
    markdown: bool,
    as_json: bool,
) -> None:
    """Import JSON lines written by export ('-' reads standard input), or with --markdown a
    namespace folder of Markdown files.

    Importing is idempotent: records whose id or content the namespace already holds are
    skipped and listed. A bad line is reported with its number; with any bad line nothing is
    imported (exit 2) unless --skip-bad.
    """
    if markdown:
        report = _store(ctx).import_markdown(
            Path(source), namespace=namespace, trust=trust_cap, skip_bad=skip_bad
        )
    elif Path(source).is_dir():
        raise InvalidInput(f"{source} is a folder: pass --markdown to import Markdown files")
    elif source == "-":
        raw = _stdin_bytes()
    else:
        try:
            raw = Path(source).read_bytes()
        except OSError as exc:
            raise InvalidInput(f"cannot read {source}: {exc.strerror}") from None
    if not markdown:
        report = _store(ctx).import_items(
            raw.split(b"\n"), namespace=namespace, trust=trust_cap, skip_bad=skip_bad
        )
    data = report.to_dict()
    lines = [
        f"imported {len(report.imported)}, skipped {len(report.skipped)}, "
        f"renamed {len(report.renamed)}, bad lines {len(report.errors)}"
    ]
    lines += [f"  line {n}: skipped {i}: {r}" for n, i, r in report.skipped]
    lines += [
        f"  line {n}: {a} is held by another namespace; imported as {b}"
        for n, a, b in report.renamed
    ]
    lines += [f"  {m}" if markdown else f"  {source}:{n}: {m}" for n, m in report.errors]
    if report.errors and not skip_bad:
        lines[0] = (
            f"nothing imported: {len(report.errors)} bad line(s) (--skip-bad imports the rest)"
        )
    _emit(data, as_json, "\n".join(lines))
    if report.errors:
        ctx.exit(2)


# The knowledge-hierarchy commands (belief, observe, observations, evidence, model, resolve)
# register themselves on the group above.
from holdfast.cli import memory_knowledge as _knowledge  # noqa: E402,F401
