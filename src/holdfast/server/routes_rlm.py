"""``/api/v1/rlm``: RLM jobs run by the server, and every stored trace.

Jobs: submit (``202`` with the job), status, result, cancel, and a live event stream. Traces:
recent jobs, one job's tree of runs with their events, a live stream of a tree still being
written (by this server or any other process), and replay from the recorded model outputs.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, Literal

import anyio
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from holdfast.errors import InvalidInput
from holdfast.server.deps import last_event_id, principal, services, sse_response
from holdfast.server.hub import Event
from holdfast.server.rlm_jobs import JobManager, JobSpec
from holdfast.server.services import Services
from holdfast.server.tokens import Principal

router = APIRouter(prefix="/api/v1/rlm", tags=["rlm"])


class JobRequest(BaseModel):
    """An RLM job. ``model`` is a configured name or ``rlm:<provider>:<model>`` (the ``rlm:``
    prefix may be left out); ``inputs`` map REPL variable names to text, ``{"json": value}``, or
    ``{"path": ...}`` inside the server's input roots."""

    model_config = ConfigDict(extra="forbid")
    query: str = Field(min_length=1)
    model: str = Field(min_length=1)
    inputs: dict[str, Any] = Field(default_factory=dict)
    signature: str | None = Field(None, description="e.g. 'logs -> service: str, count: int'")
    budget: dict[str, Any] = Field(default_factory=dict)
    mode: Literal["auto", "rlm", "direct"] | None = None


def jobs_of(svc: Services) -> JobManager:
    jobs: JobManager = svc.jobs
    return jobs


def build_spec(jobs: JobManager, req: JobRequest) -> JobSpec:
    name = req.model
    if name not in jobs.settings.models and not name.startswith("rlm:"):
        name = "rlm:" + name
    spec = jobs.resolve(name)
    if not req.inputs:
        raise InvalidInput("an RLM job needs at least one input")
    return JobSpec(
        query=req.query,
        inputs=jobs.check_inputs(spec, req.inputs),
        model=name,
        spec=spec,
        budget=jobs.budget(spec, req.budget),
        signature=req.signature,
        mode=req.mode or spec.mode,
    )


@router.post("/jobs", status_code=202, summary="Start an RLM job")
async def submit(
    req: JobRequest, svc: Services = Depends(services), who: Principal = Depends(principal)
) -> dict[str, Any]:
    jobs = jobs_of(svc)
    spec = build_spec(jobs, req)
    if spec.signature is not None:
        from holdfast.rlm import parse_signature

        parse_signature(spec.signature)  # a bad signature is the caller's error, now
    return jobs.submit(spec, who).to_dict()


@router.get("/jobs", summary="Jobs of this server process, newest first")
async def list_jobs(svc: Services = Depends(services)) -> list[dict[str, Any]]:
    return jobs_of(svc).recent()


@router.get("/jobs/{job_id}", summary="A job's status, progress and result")
async def job_status(job_id: str, svc: Services = Depends(services)) -> dict[str, Any]:
    return jobs_of(svc).get(job_id).to_dict()


@router.get("/jobs/{job_id}/result", summary="Wait for a job and return its result")
async def job_result(
    job_id: str,
    wait_s: float = Query(30.0, ge=0, le=600, description="How long to wait for the end"),
    svc: Services = Depends(services),
) -> dict[str, Any]:
    job = jobs_of(svc).get(job_id)
    if not job.finished and wait_s > 0:
        with anyio.move_on_after(wait_s):
            await job.done.wait()
    return job.to_dict()


@router.post("/jobs/{job_id}/cancel", summary="Cancel a job and its sub-calls")
async def cancel(job_id: str, svc: Services = Depends(services)) -> dict[str, Any]:
    job = jobs_of(svc).cancel(job_id)
    with anyio.move_on_after(5.0):
        await job.done.wait()
    return job.to_dict()


@router.get(
    "/jobs/{job_id}/events",
    summary="A job's live trace events (server-sent events)",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def job_events(
    job_id: str,
    request: Request,
    after: int | None = Query(None, ge=0),
    svc: Services = Depends(services),
) -> StreamingResponse:
    """Every trace event of the job as it happens (``run_start``, ``root_call``, ``iteration``,
    ``sub_call``, ``submit``, ``run_end``, plus ``status`` and a final ``end``), numbered for
    ``Last-Event-ID``."""
    jobs = jobs_of(svc)
    job = jobs.get(job_id)
    return sse_response(jobs.watch(job, last_event_id(request, after)))


# -- stored traces -----------------------------------------------------------------------------


@router.get("/traces", summary="Recent RLM jobs (root runs), newest first")
def traces(
    limit: int = Query(50, ge=1, le=500), svc: Services = Depends(services)
) -> list[dict[str, Any]]:
    return [_run_json(r) for r in svc.traces.recent_runs(limit)]


def _run_json(run: Any) -> dict[str, Any]:
    data: dict[str, Any] = run.to_dict()
    meta = dict(data.pop("meta", None) or {})
    data["meta"] = {k: v for k, v in meta.items() if k not in ("system_prompt",)}
    data["system_prompt"] = meta.get("system_prompt")
    return data


def _find(svc: Services, trace_id: str) -> Any:
    run = svc.traces.find_run(trace_id)
    if run is None:
        raise TraceNotFound(f"no RLM trace {trace_id!r}")
    return run


@router.get("/traces/{trace_id}", summary="A trace: the tree of runs with their events")
def trace(
    trace_id: str,
    events: bool = True,
    svc: Services = Depends(services),
) -> dict[str, Any]:
    """Runs parents first (``parent_id`` links them); each with its events in order and its
    usage from the ``run_end`` event."""
    root = _find(svc, trace_id)
    runs = []
    for run in svc.traces.tree(root.trace_id):
        item = _run_json(run)
        if events:
            item["events"] = [e.to_dict() for e in svc.traces.events(run.trace_id)]
        runs.append(item)
    return {"trace_id": root.trace_id, "root_id": root.root_id, "runs": runs}


@router.get(
    "/traces/{trace_id}/events",
    summary="A trace tree's events as they are written (server-sent events)",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def trace_events(trace_id: str, svc: Services = Depends(services)) -> StreamingResponse:
    """Events of every run in the tree, by whichever process writes them; each carries its
    ``trace_id`` and ``seq``. The stream starts from the beginning of the trace and ends with
    ``end`` when the root run has finished."""
    root = await anyio.to_thread.run_sync(_find, svc, trace_id)
    return sse_response(_poll_tree(svc, root.trace_id))


async def _poll_tree(svc: Services, root_id: str) -> AsyncIterator[Event]:
    seen: dict[str, int] = {}
    n = 0
    idle = 0.0
    while True:

        def read() -> tuple[list[Any], bool]:
            fresh = []
            runs = svc.traces.tree(root_id)
            for run in runs:
                for ev in svc.traces.events(run.trace_id):
                    if ev.seq > seen.get(run.trace_id, 0):
                        fresh.append(ev)
                        seen[run.trace_id] = ev.seq
            done = bool(runs) and runs[0].status != "running"
            return fresh, done

        fresh, done = await anyio.to_thread.run_sync(read)
        fresh.sort(key=lambda e: (e.ts, e.seq))
        for ev in fresh:
            n += 1
            yield Event(n, ev.kind, ev.to_dict())
        if done:
            yield Event(n, "end", {"trace_id": root_id})
            return
        idle = 0.0 if fresh else idle + svc.settings.poll_s
        if idle >= 15.0:
            idle = 0.0
            yield Event(n, "ping", {})
        await asyncio.sleep(svc.settings.poll_s)


class ReplayRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    inputs: dict[str, Any] = Field(
        default_factory=dict,
        description="Inputs that were passed as values (traces never keep them)",
    )


@router.post("/traces/{trace_id}/replay", summary="Re-execute a job from its recorded replies")
async def replay(
    trace_id: str,
    req: ReplayRequest | None = None,
    svc: Services = Depends(services),
) -> dict[str, Any]:
    from holdfast.rlm.replay import areplay

    jobs = jobs_of(svc)
    root = await anyio.to_thread.run_sync(_find, svc, trace_id)
    given = {
        k: (v if isinstance(v, str) else v.get("json"))
        for k, v in (req.inputs if req else {}).items()
    }
    result = await areplay(root.trace_id, svc.traces, inputs=given or None, sandbox=jobs.sandbox)
    return result.to_dict()


class TraceNotFound(InvalidInput):
    code = "not_found"
