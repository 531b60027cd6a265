"""``/api/v1/calls``: the model call log, with the exact messages of every call."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query

from holdfast.errors import InvalidInput
from holdfast.server.deps import services
from holdfast.server.services import Services

router = APIRouter(prefix="/api/v1/calls", tags=["calls"])


class CallNotFound(InvalidInput):
    code = "not_found"


@router.get("", summary="Recorded model calls, newest first")
def recent(
    limit: int = Query(50, ge=1, le=1000),
    model: str | None = None,
    task_id: str | None = None,
    trace_id: str | None = None,
    errors: bool = False,
    messages: bool = Query(False, description="Include each call's exact messages"),
    svc: Services = Depends(services),
) -> list[dict[str, Any]]:
    rows = svc.calls.recent(
        limit, model=model, task_id=task_id, trace_id=trace_id, errors_only=errors
    )
    out = []
    for r in rows:
        data = r.to_dict()
        if not messages:
            data.pop("messages", None)
        out.append(data)
    return out


@router.get("/totals", summary="Summed usage of the matching calls")
def totals(
    model: str | None = None,
    task_id: str | None = None,
    trace_id: str | None = None,
    svc: Services = Depends(services),
) -> dict[str, Any]:
    usage = svc.calls.totals(model=model, task_id=task_id, trace_id=trace_id)
    return dict(usage.to_dict())


@router.get("/{call_id}", summary="One call: exact messages, parameters, reply or error")
def get_call(call_id: str, svc: Services = Depends(services)) -> dict[str, Any]:
    record = svc.calls.get(call_id)
    if record is None:
        raise CallNotFound(f"no recorded model call {call_id!r}")
    return dict(record.to_dict())
