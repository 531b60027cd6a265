"""The recall path: candidate lists from each arm, rank fusion, filters, and cited hits."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from holdfast.errors import InvalidInput
from holdfast.memory.anchors import bare_range, resolve_anchor
from holdfast.memory.fusion import POOL, fuse
from holdfast.memory.items import Kind, MemoryItem, Trust, parse_time
from holdfast.memory.recall import (
    Candidates,
    Hit,
    RecallSettings,
    decay_factor,
    overlaps,
    trusted_enough,
    valid_at,
)
from holdfast.memory.security import instruction_like
from holdfast.memory.text import keyword_terms
from holdfast.memory.timeexpr import query_range

if TYPE_CHECKING:
    from holdfast.memory.store import MemoryStore

ARMS = ("keyword", "dense", "entity", "time")


def search(
    store: MemoryStore,
    query: str,
    *,
    namespace: str = "default",
    limit: int = 10,
    arms: Iterable[str] = ("keyword", "dense", "entity", "time"),
    as_of: datetime | str | None = None,
    time_range: tuple[Any, Any] | None = None,
    parse_time_range: bool = True,
    entity: str | None = None,
    kinds: Iterable[Kind | str] | None = None,
    min_trust: Trust | str | None = None,
    include_history: bool = False,
    settings: RecallSettings | None = None,
    sync: bool = True,
    observations_first: bool = False,
) -> list[Hit]:
    """The items of ``namespace`` that best answer ``query``, best first.

    ``as_of`` recalls what was known and valid then; ``time_range`` keeps items whose event time
    meets it; a range read from the query such as "before March 2024" or "on 16 June", or
    anchored to an event the namespace holds, "since the migration" (see
    :mod:`holdfast.memory.anchors`), keeps items whose event time or mention time meets it; a
    bare "last week" ranks that week's items higher without filtering; ``entity`` scopes recall
    to one entity and its aliases; ``include_history`` also returns superseded items.
    Derived items (observations and mental models) are left out unless ``kinds`` names them or
    ``observations_first`` puts them first: those recalled, and those that cite a recalled item;
    their evidence is one call away (:meth:`MemoryStore.evidence`).
    """
    settings = settings or store.config.recall
    arms = tuple(arms)
    unknown = set(arms) - set(ARMS)
    if unknown:
        raise InvalidInput(f"unknown recall arm(s) {sorted(unknown)}; use {list(ARMS)}")
    if limit < 1:
        raise InvalidInput("limit must be at least 1")
    ns = store.ns(namespace)
    if sync:
        store.indexer.sync(ns)
    as_of_t = parse_time(as_of, "as of")
    lo = hi = None
    if time_range is not None:
        lo, hi = parse_time(time_range[0], "after"), parse_time(time_range[1], "before")
    soft: tuple[Any, Any] | None = None
    # A range read from the query's own words ("in October 2023", "on 16 June", "since the
    # migration") also keeps what was said in it: a question about what someone shared or did
    # then names the day they told it as often as the day it happened, and a turn that says
    # "last week" is dated by its words, not by its session.
    read_from_query = False
    if time_range is None and parse_time_range:
        found = query_range(query, as_of_t)
        if found:
            lo, hi = found
            read_from_query = True
        else:
            anchor = resolve_anchor(store, namespace, query, as_of_t)
            if anchor is not None:
                lo, hi = anchor.range
                read_from_query = True
            else:
                soft = bare_range(query, as_of_t or datetime.now(UTC))
    # the range the time arm ranks by: the filter's, else a bare "last week" (ranks, never filters)
    window: tuple[Any, Any] | None = (lo, hi) if (lo or hi) else soft
    if "time" not in arms:
        window = None

    def meets(ev_start: float | None, ev_end: float | None, mention: float, a: Any, b: Any) -> bool:
        """Whether an item's times meet [a, b]: its event time, or for a range read from the
        query its mention time too."""
        return overlaps(ev_start, ev_end, mention, a, b) or (
            read_from_query and overlaps(None, None, mention, a, b)
        )

    kind_set = {Kind(k).value for k in kinds} if kinds else None
    trust_floor = Trust(min_trust) if min_trust else None
    depth = max(settings.depth, limit * 3)

    cands = Candidates()
    scored: dict[str, list[tuple[int, float]]] = {}
    terms = keyword_terms(query)
    keyword_job = None
    if "keyword" in arms and terms:
        weights = (settings.body_weight, settings.context_weight, settings.entity_text_weight)
        if "dense" in arms and store.embedder.dim:
            keyword_job = store.pool.submit(store.index.keyword, namespace, terms, depth, weights)
        else:
            scored["keyword"] = store.index.keyword(namespace, terms, depth, weights)
            cands.lists["keyword"] = [rid for rid, _ in scored["keyword"]]
    if "dense" in arms and store.embedder.dim and query.strip():
        qv = store.embedder.embed([query])[0]
        hits = store.vectors.search(namespace, store.embedder.name, qv, depth)
        scored["dense"] = hits
        cands.lists["dense"] = [rid for rid, _ in hits]
    if keyword_job is not None:
        scored["keyword"] = keyword_job.result()
        cands.lists = {"keyword": [rid for rid, _ in scored["keyword"]], **cands.lists}
    resolver = None
    if (("entity" in arms or entity) and store.config.extract_entities) or entity:
        resolver = store.indexer.resolver(ns)
    scope: set[int] | None = None
    scope_list: list[int] = []
    if entity and resolver is not None:
        names = resolver.names_of(entity)
        scope_list = store.index.entity_items(namespace, names, 1_000_000)
        scope = set(scope_list)
    if "entity" in arms and resolver is not None:
        names: list[str] = []  # type: ignore[no-redef]
        for key in resolver.names_in(query):
            names.extend(resolver.names_of(key))
        if names:
            cands.lists["entity"] = store.index.entity_items(namespace, sorted(set(names)), depth)
    if scope_list and not terms and not cands.lists:
        # Scoped to an entity with nothing to search for ("" or only stop words): list what
        # memory holds about the entity, newest first.
        cands.lists["entity"] = scope_list[:depth]
    if window is not None:
        a, b = window
        cands.lists["time"] = store.index.in_time_range(
            namespace,
            a.timestamp() if a else None,
            b.timestamp() if b else None,
            depth,
            mentioned=read_from_query,
        )

    if settings.fusion == "features" and scored.get("keyword") and scored.get("dense"):
        pool = list(
            dict.fromkeys(
                [r for r, _ in scored["keyword"][:POOL]] + [r for r, _ in scored["dense"][:POOL]]
            )
        )
        in_range = cands.lists.get("time", [])
        if window is not None:
            # The time arm's list is the newest ``depth`` items of the range; whether a candidate
            # meets the range is read from its own times, so a wide range marks them all.
            meta = store.index.active_meta(namespace, pool)
            in_range = [
                rid
                for rid in pool
                if (m := meta.get(rid)) is not None and meets(m[1], m[2], m[0], *window)
            ] + in_range
        fused = fuse(
            query,
            scored["keyword"],
            scored["dense"],
            cands.lists.get("entity", []),
            list(dict.fromkeys(in_range)),
            store.index.candidate_info(pool),
        )
    else:
        fused = cands.fuse(settings)
    now = as_of_t or datetime.now(UTC)

    def keep(
        part: list[tuple[int, float, dict[str, int]]],
    ) -> list[tuple[int, float, dict[str, int]]]:
        """The candidates of ``part`` recall may return (active, valid, in range, trusted)."""
        meta = store.index.active_meta(namespace, [rid for rid, _, _ in part])
        kept: list[tuple[int, float, dict[str, int]]] = []
        for rid, score, ranks in part:
            m = meta.get(rid)
            if m is None:
                continue
            mention, ev_start, ev_end, valid_to, trust = m
            if scope is not None and rid not in scope:
                continue
            if not include_history and not valid_at(mention, valid_to, as_of_t):
                continue
            if include_history and as_of_t is not None and mention > as_of_t.timestamp():
                continue
            if (lo or hi) and not meets(ev_start, ev_end, mention, lo, hi):
                continue
            if not trusted_enough(trust, trust_floor):
                continue
            if settings.decay_half_life_days:
                factor = decay_factor(
                    datetime.fromtimestamp(mention, UTC), now, settings.decay_half_life_days
                )
                # the feature fusion's scores can be negative: older is always lower
                score = score * factor if score >= 0 else score / max(factor, 1e-9)
            kept.append((rid, score, ranks))
        return kept

    if settings.decay_half_life_days or observations_first:
        kept = keep(fused)
        if settings.decay_half_life_days:
            kept.sort(key=lambda x: (-x[1], x[0]))
        if observations_first:
            return _observations_first(
                store, namespace, kept, limit, kind_set, as_of_t, include_history
            )
        return _hits(store, kept, limit, kind_set, derived=bool(kind_set))
    # The order is already final: filter the fused list a slice at a time until ``limit``
    # hits are found, instead of reading the metadata of every candidate.
    out: list[Hit] = []
    step = max(4 * limit, 64)
    for start in range(0, len(fused), step):
        part = keep(fused[start : start + step])
        out.extend(_hits(store, part, limit - len(out), kind_set, derived=bool(kind_set)))
        if len(out) >= limit:
            break
    return out


def _hits(
    store: MemoryStore,
    kept: list[tuple[int, float, dict[str, int]]],
    limit: int,
    kind_set: set[str] | None,
    *,
    derived: bool,
) -> list[Hit]:
    """The hits for ``kept``; derived items (observations, mental models) only with
    ``derived`` (recall returns evidence unless asked for observations or those kinds)."""
    out: list[Hit] = []
    batch = limit if not kind_set else limit * 4
    for start in range(0, len(kept), batch):
        part = kept[start : start + batch]
        rows = store.index.get_many([rid for rid, _, _ in part])
        for rid, score, ranks in part:
            row = rows.get(rid)
            if row is None:
                continue
            item = MemoryItem.from_dict(row.data)
            if kind_set and item.kind.value not in kind_set:
                continue
            if not derived and "derived" in item.tags:
                continue
            out.append(
                Hit(
                    item=item,
                    score=score,
                    ranks=ranks,
                    citation=store.index.citation(row),
                    untrusted=item.trust in (Trust.UNTRUSTED, Trust.TOOL),
                    instruction_like=instruction_like(item.text),
                    superseded=item.valid_to is not None,
                )
            )
            if len(out) >= limit:
                return out
    return out


DERIVED_KINDS = (Kind.OBSERVATION, Kind.SUMMARY)


def _observations_first(
    store: MemoryStore,
    namespace: str,
    kept: list[tuple[int, float, dict[str, int]]],
    limit: int,
    kind_set: set[str] | None,
    as_of: datetime | None,
    include_history: bool,
) -> list[Hit]:
    """Observations and mental models first (recalled ones, then those citing recalled items,
    each scored by its best cited hit), then the other hits, ``limit`` in all."""
    hits = _hits(store, kept, max(limit, 50), kind_set, derived=True)
    derived = [h for h in hits if h.item.kind in DERIVED_KINDS and "derived" in h.item.tags]
    others = [h for h in hits if h not in derived]
    have = {h.item.id for h in derived}
    best: dict[str, float] = {}
    for h in others:
        best[h.item.id] = max(best.get(h.item.id, 0.0), h.score)
    citing = store.index.get_many(store.index.linking(namespace, list(best)))
    extra: list[Hit] = []
    for row in citing.values():
        item = MemoryItem.from_dict(row.data)
        if item.id in have or item.kind not in DERIVED_KINDS or "derived" not in item.tags:
            continue
        if not item.active and not include_history:
            continue
        if as_of is not None and item.mention_time > as_of:
            continue
        cited = [e.ref for e in item.evidence if e.supports and e.ref in best]
        if not cited:
            continue
        extra.append(
            Hit(
                item=item,
                score=max(best[r] for r in cited),
                ranks={"cites": len(cited)},
                citation=store.index.citation(row),
                untrusted=item.trust in (Trust.UNTRUSTED, Trust.TOOL),
                instruction_like=instruction_like(item.text),
                superseded=item.valid_to is not None,
            )
        )
    extra.sort(key=lambda h: (-h.score, -h.ranks["cites"], h.item.id))
    return (derived + extra + others)[:limit]
