"""``/api/v1/tasks``, ``/api/v1/approvals``: the control plane over HTTP.

Every change goes through :class:`holdfast.harness.Harness` with the token's principal as the
actor, so it is receipted exactly as the CLI's own commands are (``submitted``, ``steer``,
``approval`` receipts naming ``api:<principal>``).
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from holdfast.errors import InvalidInput
from holdfast.server.deps import last_event_id, principal, services, sse_response
from holdfast.server.hub import Event
from holdfast.server.services import Services
from holdfast.server.tokens import Principal

router = APIRouter(prefix="/api/v1", tags=["tasks"])

TaskStatus = Literal[
    "queued", "running", "paused", "waiting_approval", "succeeded", "failed", "cancelled"
]

# receipt kinds -> the SSE event type a watcher sees
EVENT_TYPES = {
    "agent_turn": "turn",
    "session_rollover": "rollover",
    "session_started": "session",
    "session_resumed": "session",
    "approval_requested": "approval_requested",
    "approval": "approval",
    "approval_used": "approval",
    "steer": "steer",
    "steering_delivered": "steer",
    "succeeded": "status",
    "failed": "status",
    "cancelled": "status",
    "paused": "status",
    "released": "status",
    "leased": "status",
    "lease_expired": "status",
}


class TaskSubmit(BaseModel):
    """A task spec, as ``holdfast task submit --spec`` takes it."""

    model_config = ConfigDict(extra="forbid")
    kind: str
    goal: str = ""
    workspace: str | None = None
    input: dict[str, Any] = Field(default_factory=dict)
    policy: dict[str, Any] = Field(default_factory=dict)
    budget: dict[str, Any] = Field(default_factory=dict)
    queue: str | None = None
    priority: int | None = None
    max_attempts: int | None = None
    idempotency_key: str | None = None


class SteerRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    message: str = Field(min_length=1, max_length=100_000)


class DecisionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    step: str = Field(min_length=1, max_length=500)
    ttl_s: float = Field(3600.0, gt=0, le=30 * 86400)


def task_json(row: Any) -> dict[str, Any]:
    """A task row for clients: everything but the lease token (a worker's fencing secret)."""
    data: dict[str, Any] = row.to_dict()
    data.pop("lease_token", None)
    data["terminal"] = row.terminal
    data["goal"] = (row.spec or {}).get("goal", "")
    return data


def receipt_json(r: Any) -> dict[str, Any]:
    body = r.data()
    return {
        "seq": r.seq,
        "hash": r.hash,
        "sig": r.sig,
        "key_id": r.key_id,
        "kind": body.get("kind"),
        "step": body.get("step"),
        "actor": body.get("actor"),
        "ts": body.get("ts"),
        "prev": body.get("prev"),
        "payload": body.get("payload"),
        "body": r.body,
    }


@router.get("/tasks", summary="List tasks, newest first")
def list_tasks(
    status: TaskStatus | None = None,
    queue: str | None = None,
    limit: int = Query(100, ge=1, le=1000),
    svc: Services = Depends(services),
) -> list[dict[str, Any]]:
    return [task_json(r) for r in svc.harness.list_tasks(status=status, queue=queue, limit=limit)]


@router.post("/tasks", status_code=201, summary="Submit a task")
def submit_task(
    spec: TaskSubmit, svc: Services = Depends(services), who: Principal = Depends(principal)
) -> dict[str, Any]:
    data = {k: v for k, v in spec.model_dump().items() if v not in (None, {}, "")}
    data["kind"] = spec.kind
    return task_json(svc.harness.submit(data, by=who.actor))


@router.get("/tasks/{task_id}", summary="A task with its steps and approvals")
def show_task(task_id: str, svc: Services = Depends(services)) -> dict[str, Any]:
    h = svc.harness
    out = task_json(h.get(task_id))
    out["steps"] = [s.__dict__ for s in h.steps(task_id)]
    out["approvals"] = [a.__dict__ for a in h.approvals(task_id)]
    return out


def _steer(svc: Services, who: Principal, task_id: str, kind: str, message: str = "") -> Any:
    outcome = svc.harness.steer(task_id, kind, message, by=who.actor)
    return {
        "task": task_id,
        "command": kind,
        "outcome": outcome,
        "status": svc.harness.get(task_id).status,
    }


@router.post("/tasks/{task_id}/steer", summary="Send a steering message")
def steer(
    task_id: str,
    req: SteerRequest,
    svc: Services = Depends(services),
    who: Principal = Depends(principal),
) -> dict[str, Any]:
    if not req.message.strip():
        raise InvalidInput("a steering message cannot be blank")
    result: dict[str, Any] = _steer(svc, who, task_id, "message", req.message)
    return result


@router.post("/tasks/{task_id}/approve", summary="Let a waiting step run once")
def approve(
    task_id: str,
    req: DecisionRequest,
    svc: Services = Depends(services),
    who: Principal = Depends(principal),
) -> dict[str, Any]:
    row = svc.harness.approve(task_id, req.step, by=who.actor, ttl_s=req.ttl_s)
    return dict(row.__dict__)


@router.post("/tasks/{task_id}/deny", summary="Refuse a waiting step")
def deny(
    task_id: str,
    req: DecisionRequest,
    svc: Services = Depends(services),
    who: Principal = Depends(principal),
) -> dict[str, Any]:
    row = svc.harness.deny(task_id, req.step, by=who.actor, ttl_s=req.ttl_s)
    return dict(row.__dict__)


@router.post("/tasks/{task_id}/{command}", summary="Stop, pause or resume a task")
def command(
    task_id: str,
    command: Literal["stop", "pause", "resume"],
    svc: Services = Depends(services),
    who: Principal = Depends(principal),
) -> dict[str, Any]:
    """``stop`` and ``pause`` apply at once to a task that is not running, else at its next
    step boundary (a stop also cancels its in-flight model calls); ``resume`` queues a paused
    task again."""
    result: dict[str, Any] = _steer(svc, who, task_id, command)
    return result


@router.get("/approvals", summary="Steps waiting for a person, across tasks")
def pending_approvals(
    limit: int = Query(200, ge=1, le=1000), svc: Services = Depends(services)
) -> list[dict[str, Any]]:
    return _pending(svc, limit)


def _pending(svc: Services, limit: int = 200) -> list[dict[str, Any]]:
    out = []
    for row in svc.harness.list_tasks(status="waiting_approval", limit=limit):
        waiting = row.waiting or {}
        out.append(
            {
                "task": row.id,
                "kind": row.kind,
                "goal": (row.spec or {}).get("goal", ""),
                "step": waiting.get("step"),
                "tool": waiting.get("tool"),
                "purpose": waiting.get("purpose"),
                "message": waiting.get("message"),
                "waiting": waiting,
                "updated_at": row.updated_at,
            }
        )
    return out


# -- receipts ----------------------------------------------------------------------------------


@router.get("/tasks/{task_id}/receipts", tags=["receipts"], summary="A task's receipt chain")
def receipts(
    task_id: str,
    after: int = Query(0, ge=0),
    limit: int = Query(1000, ge=1, le=10_000),
    svc: Services = Depends(services),
) -> list[dict[str, Any]]:
    return [receipt_json(r) for r in svc.harness.receipts(task_id, after_seq=after, limit=limit)]


@router.get(
    "/tasks/{task_id}/receipts/verify", tags=["receipts"], summary="Verify the receipt chain"
)
def verify(
    task_id: str, require_signatures: bool = False, svc: Services = Depends(services)
) -> JSONResponse:
    """``ok`` false (HTTP 200 still) names the first bad receipt; the CLI exits 3 on it."""
    result = svc.harness.verify(task_id, require_signatures=require_signatures)
    return JSONResponse({"task": task_id, **result.to_dict()})


# -- continuity memory -------------------------------------------------------------------------


def vsession_for(svc: Services, task_id: str) -> str:
    svc.harness.get(task_id)
    vid = svc.sessions.find_by_task(task_id)
    if vid is None:
        raise InvalidInput(
            f"task {task_id} has no virtual session (it is not an agent task, "
            "or it has not started)"
        )
    return vid


@router.get("/tasks/{task_id}/working-set", tags=["sessions"], summary="The task's working set")
def working_set(
    task_id: str,
    version: int | None = Query(None, ge=0, description="The state after this many operations"),
    svc: Services = Depends(services),
) -> dict[str, Any]:
    from holdfast.session import WorkingSet

    vid = vsession_for(svc, task_id)
    store = svc.sessions
    ops = store.load_ops(vid)
    upto = len(ops) if version is None else min(version, len(ops))
    state = WorkingSet.replay(ops[:upto])
    row = store.load_virtual(vid)
    turns = store.turns(vid)
    return {
        "task": task_id,
        "vsession": vid,
        "version": upto,
        "versions": len(ops),
        "working_set": state.to_dict(),
        "continuation": row.continuation,
        "turns": row.turn,
        "status": row.status,
        "sessions": [
            {
                "cont": p.cont,
                "start_turn": p.start_turn,
                "started_at": p.started_at,
                "ended_at": p.ended_at,
                "end_reason": p.end_reason,
            }
            for p in store.physical(vid)
        ],
        "usage": {
            "input_tokens": sum(t["input_tokens"] or 0 for t in turns),
            "output_tokens": sum(t["output_tokens"] or 0 for t in turns),
            "cost_usd": round(sum(t["cost_usd"] or 0.0 for t in turns), 6),
        },
    }


@router.get("/tasks/{task_id}/working-set/ops", tags=["sessions"], summary="Working-set versions")
def working_set_ops(
    task_id: str,
    after: int = Query(0, ge=0),
    limit: int = Query(500, ge=1, le=5000),
    svc: Services = Depends(services),
) -> list[dict[str, Any]]:
    vid = vsession_for(svc, task_id)
    ops = svc.sessions.load_ops(vid)
    return [{"version": n, "op": op} for n, op in enumerate(ops, 1)][after : after + limit]


@router.get("/tasks/{task_id}/turns", tags=["sessions"], summary="The agent's turns")
def turns(
    task_id: str,
    after: int = Query(0, ge=0, description="Only turns after this turn number"),
    limit: int = Query(100, ge=1, le=1000),
    svc: Services = Depends(services),
) -> list[dict[str, Any]]:
    """Each turn's token accounting with the assistant's reply and tool calls (from the
    transcript of the physical session the turn ran in)."""
    vid = vsession_for(svc, task_id)
    store = svc.sessions
    rows = [t for t in store.turns(vid) if t["turn"] > after][:limit]
    replies: dict[int, list[dict[str, Any]]] = {}
    for cont in sorted({int(t["cont"]) for t in rows}):
        for turn, message, result_id in store.messages(vid, cont):
            if turn in {t["turn"] for t in rows}:
                entry = {
                    "role": message.get("role"),
                    "content": message.get("content"),
                    "tool_calls": message.get("tool_calls"),
                    "result_id": result_id,
                }
                replies.setdefault(turn, []).append(entry)
    return [{**t, "messages": replies.get(int(t["turn"]), [])} for t in rows]


# -- live events -------------------------------------------------------------------------------


def task_stream(svc: Services, task_id: str, after: int) -> Any:
    h = svc.harness
    h.get(task_id)

    def to_events(rows: list[Any]) -> list[Event]:
        out = []
        for r in rows:
            data = receipt_json(r)
            data.pop("body", None)
            out.append(Event(r.seq, EVENT_TYPES.get(str(data["kind"]), "receipt"), data))
        return out

    batch = svc.hub.batch_limit

    def poll(position: int) -> tuple[list[Event], int, bool]:
        rows = h.receipts(task_id, after_seq=position, limit=batch)
        events = to_events(rows)
        position = rows[-1].seq if rows else position
        finished = len(rows) < batch and h.get(task_id).terminal
        return events, position, finished

    def head() -> int:
        return h.get(task_id).head_seq

    async def history(start: int) -> list[Event]:
        import anyio

        rows = await anyio.to_thread.run_sync(lambda: h.receipts(task_id, after_seq=start))
        return to_events(rows)

    return svc.hub.watch_batches(("task", task_id), poll, head, history, after)


@router.get(
    "/tasks/{task_id}/events",
    summary="Live task events (server-sent events)",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
def task_events(
    task_id: str,
    request: Request,
    after: int | None = Query(None, ge=0, description="Resume after this receipt number"),
    svc: Services = Depends(services),
) -> StreamingResponse:
    """Every receipt of the task as it is written, typed: ``turn`` (an agent turn), ``rollover``,
    ``approval_requested``, ``approval``, ``steer``, ``status``, ``session``, else ``receipt``;
    the event id is the receipt's sequence number, so ``Last-Event-ID`` resumes. The stream ends
    with an ``end`` event once the task is finished, or an ``overflow`` event if this client fell
    too far behind (reconnect to resume)."""
    return sse_response(task_stream(svc, task_id, last_event_id(request, after)))


@router.get(
    "/approvals/events",
    summary="Live approval requests (server-sent events)",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
def approval_events(svc: Services = Depends(services)) -> StreamingResponse:
    """An ``approvals`` event with the whole pending list whenever it changes."""
    return sse_response(approvals_stream(svc))


def approvals_stream(svc: Services) -> Any:
    # one shared topic: every watcher of the approvals queue is fed by the same poll
    state: dict[str, Any] = svc.hub.state.setdefault("approvals", {"last": None, "n": 0})

    def key(pending: list[dict[str, Any]]) -> list[tuple[Any, Any]]:
        return [(p["task"], p["step"]) for p in pending]

    def poll(position: int) -> tuple[list[Event], int, bool]:
        pending = _pending(svc)
        if key(pending) == state["last"]:
            return [], state["n"], False
        state["last"] = key(pending)
        state["n"] += 1
        return [Event(state["n"], "approvals", {"pending": pending})], state["n"], False

    def head() -> int:
        state["last"] = key(_pending(svc))
        return int(state["n"])

    async def history(start: int) -> list[Event]:
        import anyio

        pending = await anyio.to_thread.run_sync(_pending, svc)
        return [Event(int(state["n"]), "approvals", {"pending": pending})]

    return svc.hub.watch(("approvals",), poll, head, history, -1)
