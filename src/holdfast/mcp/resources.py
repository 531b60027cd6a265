"""MCP resources: memory items and namespaces, RLM traces and task receipts, readable by URI.

``holdfast://memory`` lists the server's namespace; ``holdfast://memory/{item_id}`` is one item
with its citation; ``holdfast://rlm/trace/{trace_id}`` is a job's tree of runs and events;
``holdfast://task/{task_id}/receipts`` is a task's receipt chain with its verify result (only when
task tools are on). Bodies are JSON text: data for the client to show, never markup.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from holdfast.errors import HoldfastError, InvalidInput
from holdfast.mcp.services import Services
from holdfast.mcp.settings import MCPSettings

if TYPE_CHECKING:
    from mcp.server import MCPServer

MAX_LISTED = 1_000


def _resource_error(exc: HoldfastError) -> Exception:
    from mcp.server.mcpserver.exceptions import ResourceError

    return ResourceError(f"{exc.message} (code: {exc.code})")


def add_resources(server: MCPServer, svc: Services, settings: MCPSettings) -> None:
    from holdfast.mcp.server import as_json

    ns = settings.namespace

    @server.resource(
        "holdfast://memory",
        name="memory",
        description=f"The memory namespace {ns!r}: its statistics and up to {MAX_LISTED} items.",
        mime_type="application/json",
    )
    async def namespace_listing() -> str:
        def read(store: Any) -> dict[str, Any]:
            items = store.export(ns)
            return {
                "namespace": ns,
                "stats": store.stats(ns),
                "items": [_listed(i) for i in items[:MAX_LISTED]],
                "truncated": len(items) > MAX_LISTED,
            }

        try:
            return as_json(await svc.memory(read))
        except HoldfastError as exc:
            raise _resource_error(exc) from None

    @server.resource(
        "holdfast://memory/{item_id}",
        name="memory-item",
        description="One memory item with its trust, provenance and citation.",
        mime_type="application/json",
    )
    async def memory_item(item_id: str) -> str:
        def read(store: Any) -> dict[str, Any]:
            item = store.get(item_id, namespace=ns)
            return {"item": item.to_dict(), "citation": store.citation(item_id)}

        try:
            return as_json(await svc.memory(read))
        except HoldfastError as exc:
            raise _resource_error(exc) from None

    @server.resource(
        "holdfast://rlm/trace/{trace_id}",
        name="rlm-trace",
        description="An RLM job's runs (root and children) and their events.",
        mime_type="application/json",
    )
    async def rlm_trace(trace_id: str) -> str:
        try:
            return as_json(_read_trace(trace_id))
        except HoldfastError as exc:
            raise _resource_error(exc) from None

    if settings.tasks:

        @server.resource(
            "holdfast://task/{task_id}/receipts",
            name="task-receipts",
            description="A task's hash-chained receipts and whether the chain verifies.",
            mime_type="application/json",
        )
        async def task_receipts(task_id: str) -> str:
            try:
                with svc.harness() as h:
                    receipts = [dataclasses.asdict(r) for r in h.receipts(task_id)]
                    verified = h.verify(task_id)
                    return as_json(
                        {"task": task_id, "verify": _verify_dict(verified), "receipts": receipts}
                    )
            except HoldfastError as exc:
                raise _resource_error(exc) from None


def _listed(record: dict[str, Any]) -> dict[str, Any]:
    keep = ("id", "text", "kind", "trust", "status", "mention_time", "entities", "untrusted")
    return {k: record[k] for k in keep if k in record}


def _verify_dict(result: Any) -> dict[str, Any]:
    to_dict = getattr(result, "to_dict", None)
    if callable(to_dict):
        out: dict[str, Any] = to_dict()
        return out
    return {"ok": bool(getattr(result, "ok", False)), "detail": str(result)}


def _read_trace(trace_id: str) -> dict[str, Any]:
    from holdfast.config import default_db_path
    from holdfast.rlm.store import RLMTraceStore

    path = default_db_path()
    if not path.exists():
        raise InvalidInput(f"no RLM trace {trace_id!r}: there is no Holdfast store yet")
    store = RLMTraceStore(path)
    try:
        run = store.get_run(trace_id)
        if run is None:
            raise InvalidInput(f"no RLM trace {trace_id!r}")
        return {
            "trace_id": trace_id,
            "runs": [r.to_dict() for r in store.tree(trace_id)],
            "events": [e.to_dict() for e in store.events(trace_id)],
        }
    finally:
        store.close()
