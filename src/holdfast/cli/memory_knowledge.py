"""``holdfast memory`` commands for the knowledge hierarchy: beliefs, observations, mental models,
evidence and resolving contradictions.

Everything works without a model; ``--model provider:name`` lets one write observations and
mental models (its text must cite the items it was shown, or the rule-built text is kept).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from holdfast.cli.memory import _emit, _read_text, _store, json_opt, memory, ns_opt
from holdfast.cli.options import finite
from holdfast.errors import InvalidInput

model_opt = click.option(
    "--model", "model_name", help="provider:model to write the text (default: by rule, no model)."
)


@contextmanager
def _lm(name: str | None) -> Iterator[Any]:
    if not name:
        yield None
        return
    from holdfast.lm import get_lm

    with get_lm(name) as lm:
        yield lm


def _subject(entity: str | None, topic: str | None) -> dict[str, Any]:
    if (entity is None) == (topic is None):
        raise click.UsageError("name one subject: --entity NAME or --topic TAG")
    return {"entity": entity, "topic": topic}


# ----- beliefs
@memory.group()
def belief() -> None:
    """Beliefs: confidence that moves with evidence; contradictions caught at write time."""


@belief.command("add")
@click.argument("text")
@ns_opt
@click.option("--confidence", type=finite(0.0, maximum=1.0), help="Starting confidence (0.5).")
@click.option("--entity", "entities", multiple=True, help="An entity it is about (repeatable).")
@click.option("--trust", default="owner", show_default=True)
@json_opt
@click.pass_context
def belief_add(
    ctx: click.Context,
    text: str,
    namespace: str,
    confidence: float | None,
    entities: tuple[str, ...],
    trust: str,
    as_json: bool,
) -> None:
    """Hold TEXT as a belief ('-' reads standard input)."""
    res = _store(ctx).add(
        _read_text(text), namespace=namespace, kind="belief", confidence=confidence,
        entities=entities, trust=trust,
    )  # fmt: skip
    data = res.to_dict()
    _emit(data, as_json, write_report(data))


def write_report(res: dict[str, Any]) -> str:
    """A write's outcome for people (from its JSON form, local or from a server): status,
    conflicts with their proposed supersede, beliefs it moved, observations refreshed."""
    from holdfast.cli.memory import _write_message

    lines = [_write_message(res)]
    confidence = res["item"].get("confidence")
    if confidence is not None and res["status"] in ("added", "updated"):
        lines[0] += f" (confidence {confidence})"
    for c in res.get("conflicts", []):
        new_id = c["proposal"]["new"]
        lines.append(
            f"contradicts {c['kind']} {c['id']} ({c['citation']}; {c['reason']}): "
            f"{c['text'][:200]}\n  proposed: holdfast memory resolve {c['id']} {new_id}"
        )
    if res.get("supports"):
        lines.append("supports belief(s): " + ", ".join(res["supports"]))
    if res.get("observations"):
        lines.append("observations refreshed: " + ", ".join(res["observations"]))
    return "\n".join(lines)


@belief.command("list")
@ns_opt
@json_opt
@click.pass_context
def belief_list(ctx: click.Context, namespace: str, as_json: bool) -> None:
    """Active beliefs, firmest first, with their evidence counts."""
    store = _store(ctx)
    items = store.beliefs(namespace=namespace)
    data = [
        {
            "id": i.id,
            "text": i.text,
            "confidence": i.confidence,
            "for": sum(1 for e in i.evidence if e.supports),
            "against": sum(1 for e in i.evidence if not e.supports),
            "trust": i.trust.value,
            "citation": store.citation(i.id, namespace=namespace),
        }
        for i in items
    ]
    text = "\n".join(
        f"{d['confidence']:.3f} {d['id']} (+{d['for']} -{d['against']}, {d['trust']}): {d['text']}"
        for d in data
    )
    _emit(data, as_json, text or "no beliefs")


@belief.command("evidence")
@click.argument("belief_id")
@click.argument("ref")
@ns_opt
@click.option("--against", is_flag=True, help="REF speaks against the belief (default: for).")
@json_opt
@click.pass_context
def belief_evidence(
    ctx: click.Context, belief_id: str, ref: str, namespace: str, against: bool, as_json: bool
) -> None:
    """Record REF (an item id or a short note) as evidence for or against BELIEF_ID."""
    item = _store(ctx).add_evidence(belief_id, ref, supports=not against, namespace=namespace)
    _emit(
        item.to_dict(),
        as_json,
        f"{item.id}: confidence {item.confidence} ({len(item.evidence)} evidence)",
    )


@memory.command()
@click.argument("old_id")
@click.argument("new_id")
@ns_opt
@json_opt
@click.pass_context
def resolve(ctx: click.Context, old_id: str, new_id: str, namespace: str, as_json: bool) -> None:
    """Accept a proposed supersede: NEW_ID replaces OLD_ID (a belief's confidence carries over)."""
    item = _store(ctx).accept_supersede(old_id, new_id, namespace=namespace)
    conf = f" (confidence {item.confidence})" if item.confidence is not None else ""
    _emit(item.to_dict(), as_json, f"{new_id} supersedes {old_id}{conf}")


# ----- observations
@memory.command()
@ns_opt
@click.option("--entity", help="Consolidate what memory holds about this entity.")
@click.option("--topic", help="Consolidate the items tagged with this topic.")
@click.option("--all", "all_entities", is_flag=True, help="Every entity with enough facts.")
@click.option("--force", is_flag=True, help="Rewrite an observation the owner vouched for.")
@model_opt
@json_opt
@click.pass_context
def observe(
    ctx: click.Context,
    namespace: str,
    entity: str | None,
    topic: str | None,
    all_entities: bool,
    force: bool,
    model_name: str | None,
    as_json: bool,
) -> None:
    """Build or refresh observations: facts about one entity or topic consolidated, cited."""
    from holdfast.memory.observations import consolidate

    store = _store(ctx)
    if all_entities:
        targets = [{"entity": e, "topic": None} for e in store.entities(namespace)]
    else:
        targets = [_subject(entity, topic)]
    results = []
    with _lm(model_name) as lm:
        for t in targets:
            results.append(
                consolidate(
                    store, namespace, entity=t["entity"], topic=t["topic"], lm=lm, force=force
                )
            )
    data = [r.to_dict() for r in results]
    text = "\n".join(
        f"{r.subject}: {r.status}"
        + (f" {r.item.id}" if r.item else "")
        + (f" ({r.note})" if r.note else "")
        for r in results
    )
    _emit(data, as_json, text or "nothing to observe")


@memory.command()
@ns_opt
@json_opt
@click.pass_context
def observations(ctx: click.Context, namespace: str, as_json: bool) -> None:
    """List the namespace's observations."""
    from holdfast.memory.observations import observations_of, subject_of

    store = _store(ctx)
    store.sync(namespace)
    items = observations_of(store, namespace)
    data = [
        {
            "id": i.id,
            "subject": subject_of(i),
            "trust": i.trust.value,
            "evidence": [e.ref for e in i.evidence],
            "text": i.text,
            "citation": store.citation(i.id, namespace=namespace),
        }
        for i in items
    ]
    text = "\n\n".join(f"{d['id']} · {d['subject']} · {d['trust']}\n{d['text']}" for d in data)
    _emit(data, as_json, text or "no observations")


@memory.command()
@click.argument("item_id")
@ns_opt
@json_opt
@click.pass_context
def evidence(ctx: click.Context, item_id: str, namespace: str, as_json: bool) -> None:
    """The items ITEM_ID cites (an observation's facts, a model's sources, a belief's evidence)."""
    rows = _store(ctx).evidence(item_id, namespace=namespace)
    data = [
        {"ref": ev.ref, "supports": ev.supports} | ({"hit": hit.to_dict()} if hit else {})
        for ev, hit in rows
    ]
    text = "\n\n".join(
        ("+" if ev.supports else "-") + " " + (hit.render() if hit else f"{ev.ref} (note or gone)")
        for ev, hit in rows
    )
    _emit(data, as_json, text or "no evidence")


# ----- mental models
@memory.group()
def model() -> None:
    """Mental models: a curated, versioned summary per entity or topic, citing items."""


def _model_text(v: Any) -> str:
    stale = f", {v.stale} newer items" if v.stale else ""
    return str(
        f"{v.item.id} · version {v.version} · {v.item.trust.value} · {v.citation}{stale}\n"
        + v.item.text
    )


@model.command("show")
@ns_opt
@click.option("--entity")
@click.option("--topic")
@click.option("--history", "show_history", is_flag=True, help="Every version, oldest first.")
@json_opt
@click.pass_context
def model_show(
    ctx: click.Context,
    namespace: str,
    entity: str | None,
    topic: str | None,
    show_history: bool,
    as_json: bool,
) -> None:
    """Show the current version of a mental model (or its history)."""
    from holdfast.memory import models

    store = _store(ctx)
    subj = _subject(entity, topic)
    if show_history:
        store.sync(namespace)
        name = (
            store.indexer.resolver(store.ns(namespace)).canonical(entity)
            if entity
            else f"topic {topic}"
        )
        items = models.history(store, namespace, name)
        data = [i.to_dict() for i in items]
        text = "\n\n".join(
            f"{i.id} · {i.mention_time.isoformat()} · {i.trust.value}"
            + (" · current" if i.active else "")
            + "\n"
            + i.text
            for i in items
        )
        _emit(data, as_json, text or "no model")
        return
    v = models.current(store, namespace, **subj)
    if v is None:
        raise InvalidInput("no mental model yet; write one with `holdfast memory model update`")
    _emit(v.to_dict(), as_json, _model_text(v))


@model.command("update")
@ns_opt
@click.option("--entity")
@click.option("--topic")
@click.option("--force", is_flag=True, help="Replace an owner-edited version.")
@model_opt
@json_opt
@click.pass_context
def model_update(
    ctx: click.Context,
    namespace: str,
    entity: str | None,
    topic: str | None,
    force: bool,
    model_name: str | None,
    as_json: bool,
) -> None:
    """Write a new version from the observation, beliefs and latest facts."""
    from holdfast.memory import models

    with _lm(model_name) as lm:
        v = models.update_model(
            _store(ctx), namespace, **_subject(entity, topic), lm=lm, force=force
        )
    _emit(v.to_dict(), as_json, _model_text(v))


@model.command("edit")
@ns_opt
@click.option("--entity")
@click.option("--topic")
@click.option("--text", "text", required=True, help="The new text ('-' reads standard input).")
@json_opt
@click.pass_context
def model_edit(
    ctx: click.Context,
    namespace: str,
    entity: str | None,
    topic: str | None,
    text: str,
    as_json: bool,
) -> None:
    """Store your own text as a new, owner-trusted version (cite items as [m-...])."""
    from holdfast.memory import models

    v = models.edit_model(_store(ctx), _read_text(text), namespace, **_subject(entity, topic))
    _emit(v.to_dict(), as_json, _model_text(v))
