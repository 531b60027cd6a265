"""``/api/v1/memory``: knowledge memory over HTTP, with the server's warm embedder.

Writes record who made them: an item added through the API has ``source.tool =
"api:<principal>"`` (unless the caller names another source), beside the trust class the caller
asks for (``agent`` when it names none; only a ``write`` token can write at all).
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field

from holdfast.server.deps import principal, services
from holdfast.server.services import Services
from holdfast.server.tokens import Principal

router = APIRouter(prefix="/api/v1/memory", tags=["memory"])

Kind = Literal["episode", "fact", "observation", "belief", "summary"]
TrustClass = Literal["owner", "agent", "tool", "untrusted"]
Arm = Literal["keyword", "dense", "entity", "time"]
ARMS: tuple[Arm, ...] = ("keyword", "dense", "entity", "time")


class MemoryAdd(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(min_length=1)
    namespace: str = "default"
    kind: Kind = "fact"
    trust: TrustClass = "agent"
    entities: list[str] = Field(default_factory=list)
    mention_time: str | None = None
    source: dict[str, Any] | None = None
    confidence: float | None = Field(None, ge=0, le=1)
    tags: list[str] = Field(default_factory=list)
    dedup: bool = Field(
        True, description="Refuse an item whose text or claim is already stored (as the CLI does)."
    )


class MemoryUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(min_length=1)
    namespace: str = "default"
    supersede: bool = Field(
        False, description="Keep the old version in history instead of editing in place."
    )


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    query: str = Field(min_length=1)
    namespace: str = "default"
    limit: int = Field(10, ge=1, le=200)
    entity: str | None = None
    as_of: str | None = None
    after: str | None = None
    before: str | None = None
    kinds: list[Kind] = Field(default_factory=list)
    arms: list[Arm] = Field(default_factory=lambda: list(ARMS))
    min_trust: TrustClass | None = None
    history: bool = False
    observations_first: bool = False  # observations first, their evidence items after them


class PackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    query: str = Field(min_length=1)
    namespace: str = "default"
    budget: int = Field(1000, ge=1, le=200_000)


def _source(req_source: dict[str, Any] | None, who: Principal) -> dict[str, Any]:
    source = dict(req_source or {})
    source.setdefault("tool", who.actor)
    return source


@router.post("/items", status_code=201, summary="Remember something")
def add(
    req: MemoryAdd, svc: Services = Depends(services), who: Principal = Depends(principal)
) -> dict[str, Any]:
    with svc.memory_session() as store:
        res = store.add(
            req.text,
            namespace=req.namespace,
            kind=req.kind,
            trust=req.trust,
            entities=req.entities,
            mention_time=req.mention_time,
            source=_source(req.source, who),
            confidence=req.confidence,
            tags=req.tags,
            dedup=req.dedup,
        )
        return dict(res.to_dict())


def _search(svc: Services, req: SearchRequest) -> list[dict[str, Any]]:
    with svc.memory_session() as store:
        hits = store.search(
            req.query,
            namespace=req.namespace,
            limit=req.limit,
            entity=req.entity,
            as_of=req.as_of,
            time_range=(req.after, req.before) if (req.after or req.before) else None,
            kinds=req.kinds or None,
            arms=req.arms,
            min_trust=req.min_trust,
            include_history=req.history,
            observations_first=req.observations_first,
        )
        return [h.to_dict() | {"rendered": h.render()} for h in hits]


@router.post("/search", summary="Recall items, best first, with citations and trust marks")
def search(req: SearchRequest, svc: Services = Depends(services)) -> list[dict[str, Any]]:
    return _search(svc, req)


@router.get("/search", summary="Recall (query-string form)")
def search_get(
    q: str = Query(min_length=1),
    namespace: str = "default",
    limit: int = Query(10, ge=1, le=200),
    entity: str | None = None,
    history: bool = False,
    svc: Services = Depends(services),
) -> list[dict[str, Any]]:
    req = SearchRequest(query=q, namespace=namespace, limit=limit, entity=entity, history=history)
    return _search(svc, req)


@router.get("/items", summary="Items of a namespace, oldest first")
def list_items(
    namespace: str = "default",
    offset: int = Query(0, ge=0),
    limit: int = Query(100, ge=1, le=1000),
    svc: Services = Depends(services),
) -> dict[str, Any]:
    with svc.memory_session() as store:
        rows = store.export(namespace)
    return {"namespace": namespace, "total": len(rows), "items": rows[offset : offset + limit]}


@router.get("/items/{item_id}", summary="One item with its citation")
def get_item(
    item_id: str, namespace: str | None = None, svc: Services = Depends(services)
) -> dict[str, Any]:
    with svc.memory_session() as store:
        item = store.get(item_id, namespace=namespace)
        return dict(item.to_dict()) | {"citation": store.citation(item_id)}


@router.get("/items/{item_id}/history", summary="Every version of a belief, oldest first")
def history(
    item_id: str, namespace: str | None = None, svc: Services = Depends(services)
) -> list[dict[str, Any]]:
    """The chain of items linked by ``supersedes`` / ``superseded_by`` through this one."""
    with svc.memory_session() as store:
        first = store.get(item_id, namespace=namespace)
        seen = {first.id}
        back = [first]
        while back[0].supersedes and back[0].supersedes[0] not in seen and len(seen) < 1000:
            older = store.get(back[0].supersedes[0], namespace=first.namespace)
            seen.add(older.id)
            back.insert(0, older)
        chain = back
        while chain[-1].superseded_by and chain[-1].superseded_by not in seen and len(seen) < 1000:
            newer = store.get(chain[-1].superseded_by, namespace=first.namespace)
            seen.add(newer.id)
            chain.append(newer)
        return [dict(i.to_dict()) | {"citation": store.citation(i.id)} for i in chain]


@router.patch("/items/{item_id}", summary="Change an item's text (in place or superseding)")
def update(
    item_id: str,
    req: MemoryUpdate,
    svc: Services = Depends(services),
    who: Principal = Depends(principal),
) -> dict[str, Any]:
    with svc.memory_session() as store:
        old = store.get(item_id, namespace=req.namespace)
        if req.supersede:
            res = store.supersede(
                item_id,
                req.text,
                namespace=req.namespace,
                trust=old.trust.value,
                source=_source(None, who),
            )
            return {
                "status": "superseded",
                "id": res.item.id,
                "old_id": item_id,
                "item": res.item.to_dict(),
            }
        item = store.update(item_id, namespace=req.namespace, text=req.text)
        return {"status": "updated", "id": item.id, "item": item.to_dict()}


@router.delete("/items/{item_id}", summary="Tombstone an item (or erase it with purge)")
def delete(
    item_id: str,
    namespace: str = "default",
    purge: bool = False,
    svc: Services = Depends(services),
) -> dict[str, Any]:
    with svc.memory_session() as store:
        store.delete(item_id, namespace=namespace, purge=purge)
    return {"status": "purged" if purge else "deleted", "id": item_id}


@router.post("/context-pack", summary="Recall packed into a token budget")
def pack(req: PackRequest, svc: Services = Depends(services)) -> dict[str, Any]:
    from holdfast.memory import context_pack

    with svc.memory_session() as store:
        result = context_pack(store, req.query, budget=req.budget, namespace=req.namespace)
        return dict(result.to_dict())


@router.get("/entities", summary="Entities of a namespace and their aliases")
def entities(namespace: str = "default", svc: Services = Depends(services)) -> dict[str, Any]:
    with svc.memory_session() as store:
        return {"namespace": namespace, "entities": store.entities(namespace)}


@router.get("/namespaces", summary="Namespaces and their counts")
def namespaces(svc: Services = Depends(services)) -> list[dict[str, Any]]:
    with svc.memory_session() as store:
        return [dict(store.stats(ns)) for ns in store.namespaces()]


@router.get("/stats", summary="Counts by kind and trust, vectors, parse issues")
def stats(namespace: str = "default", svc: Services = Depends(services)) -> dict[str, Any]:
    with svc.memory_session() as store:
        data = dict(store.stats(namespace))
        data["issue_list"] = [i.to_dict() for i in store.issues(namespace)]
        return data
