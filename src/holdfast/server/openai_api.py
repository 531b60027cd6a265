"""``/v1/chat/completions`` and ``/v1/models``: an RLM that looks like a model from outside.

Every OpenAI-compatible client can call an RLM by name: ``rlm:<provider>:<model>`` (the root
model; sub-calls use it too) or a name configured on the server (``--model NAME=ROOT,SUB``).

How a request becomes a job:

* **The question and the bulk.** The conversation's text becomes the REPL input ``context``;
  the root model sees its metadata (size, a short preview) and the question, never the bulk.
  The question is ``holdfast.query`` when given; else the last user message when it is short
  (at most 4,000 characters) and earlier messages carry the material; else a fixed request to
  answer the last user message, which the root then reads from ``context``. Short system
  messages are shown to the root as instructions.
* **Typed answers.** ``response_format`` ``json_schema`` becomes the SUBMIT signature (see
  :mod:`holdfast.server.schema`); the reply's content is the submitted object as JSON.
  ``json_object`` submits any object; plain text submits a string.
* **Budgets** come from ``holdfast.budget`` (extra body fields), checked against the server's
  caps; ``max_completion_tokens`` (or ``max_tokens``) limits each root-model reply.
* **Usage** is the root model's tokens plus every sub-call's, with the cost in USD.
* **Out of budget**: the reply carries the partial answer, ``finish_reason: "length"`` and
  ``holdfast.status = "budget_exceeded"`` with the limit that ran out.
* **Streaming** (``stream: true``): progress chunks while the job runs (``delta.reasoning_content``
  lines and a ``holdfast`` event object), then the answer in standard chunks, then usage when
  ``stream_options.include_usage`` is set, then ``[DONE]``.
* **Disconnects**: a client that goes away cancels the job: the running cell stops and every
  sub-call in flight is cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from holdfast.errors import InvalidInput
from holdfast.server.deps import SSE_HEADERS, principal, services
from holdfast.server.rlm_jobs import Job, JobManager, JobSpec
from holdfast.server.schema import model_from_schema
from holdfast.server.services import Services
from holdfast.server.tokens import Principal

router = APIRouter(prefix="/v1", tags=["openai"])

QUERY_MAX_CHARS = 4_000
SYSTEM_MAX_CHARS = 4_000
GENERIC_QUERY = (
    "The request is the conversation in `context`. Its last user message says what to do (it "
    "may be long: read its end first, e.g. print(context[-2000:]) or the last message's "
    "content), and the rest is the material to work from. Do what it asks and submit the answer."
)


class HoldfastOptions(BaseModel):
    """Extra body fields under ``holdfast`` (``extra_body={"holdfast": {...}}`` in the SDK)."""

    model_config = ConfigDict(extra="forbid")
    query: str | None = Field(default=None, description="The question for the root model")
    budget: dict[str, Any] = Field(default_factory=dict)
    mode: str | None = Field(default=None, description="auto, rlm or direct")


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str
    messages: list[dict[str, Any]] = Field(min_length=1)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    n: int | None = None
    tools: list[Any] | None = None
    holdfast: HoldfastOptions = Field(default_factory=lambda: HoldfastOptions())


def _text(message: dict[str, Any], n: int) -> str:
    content = message.get("content")
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text":
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise InvalidInput(f"messages[{n}]: only text content is supported, not {kind!r}")
            parts.append(str(part.get("text", "")))
        return "".join(parts)
    raise InvalidInput(f"messages[{n}].content must be a string or a list of text parts")


def split_request(messages: list[dict[str, Any]], query: str | None) -> tuple[str, Any]:
    """(the root model's question, the ``context`` input) for a conversation."""
    turns: list[dict[str, str]] = []
    for n, m in enumerate(messages):
        role = m.get("role")
        if role not in ("system", "developer", "user", "assistant", "tool"):
            raise InvalidInput(f"messages[{n}].role {role!r} is not a chat role")
        turns.append({"role": str(role), "content": _text(m, n)})
    system = [t["content"] for t in turns if t["role"] in ("system", "developer")]
    instructions = "\n\n".join(system)
    if instructions and len(instructions) <= SYSTEM_MAX_CHARS:
        # short system messages are instructions for the root model, not material
        turns = [t for t in turns if t["role"] not in ("system", "developer")]
    else:
        instructions = ""
    if not turns:
        raise InvalidInput("the request has no user message")
    if query is None:
        last, rest = turns[-1], turns[:-1]
        if last["role"] == "user" and rest and len(last["content"]) <= QUERY_MAX_CHARS:
            query, body = last["content"], rest
        else:
            query, body = GENERIC_QUERY, turns
    else:
        body = turns
    if instructions:
        query = f"{query}\n\nInstructions from the caller's system message:\n{instructions}"
    if not query.strip():
        raise InvalidInput("the request has no question: its last message is empty")
    if len(body) == 1:
        context: Any = body[0]["content"]
    else:
        context = body
    if not body or (isinstance(context, str) and not context):
        raise InvalidInput("the request carries no material for the RLM (its messages are empty)")
    return query, context


def signature_for(response_format: dict[str, Any] | None) -> tuple[Any, str]:
    """(the SUBMIT signature, how to render the outputs: ``text`` or ``json``)."""
    if not response_format or response_format.get("type") in (None, "text"):
        return None, "text"
    kind = response_format.get("type")
    if kind == "json_object":
        return "-> answer: dict", "json_answer"
    if kind == "json_schema":
        spec = response_format.get("json_schema") or {}
        if not isinstance(spec, dict) or "schema" not in spec:
            raise InvalidInput("response_format.json_schema needs a 'schema'")
        return model_from_schema(spec["schema"], str(spec.get("name") or "Output")), "json"
    raise InvalidInput(f"response_format type {kind!r} is not supported")


def build_job(jobs: JobManager, req: ChatRequest) -> tuple[JobSpec, str]:
    if req.n not in (None, 1):
        raise InvalidInput("n must be 1: an RLM gives one answer")
    if req.tools:
        raise InvalidInput("tools are not supported by the RLM endpoint")
    spec = jobs.resolve(req.model)
    query, context = split_request(req.messages, req.holdfast.query)
    signature, render = signature_for(req.response_format)
    mode = req.holdfast.mode or spec.mode
    if mode not in ("auto", "rlm", "direct"):
        raise InvalidInput("holdfast.mode must be auto, rlm or direct")
    value = context if isinstance(context, str) else {"json": context}
    inputs = jobs.check_inputs(spec, {"context": value})
    job = JobSpec(
        query=query,
        inputs=inputs,
        model=req.model,
        spec=spec,
        budget=jobs.budget(spec, req.holdfast.budget),
        signature=signature,
        mode=mode,
        root_max_tokens=req.max_completion_tokens or req.max_tokens or 4_096,
        via="openai",
    )
    return job, render


# -- replies -----------------------------------------------------------------------------------


def content_of(job: Job, render: str) -> str | None:
    result = job.result
    if result is None:
        return None
    if result.status == "ok":
        if render == "json":
            return json.dumps(result.outputs, ensure_ascii=False)
        if render == "json_answer":
            return json.dumps(result.outputs.get("answer"), ensure_ascii=False)
        answer = result.outputs.get("answer", result.answer)
        return answer if isinstance(answer, str) else json.dumps(answer, ensure_ascii=False)
    partial = result.answer
    if partial is None:
        return None
    return (
        partial
        if isinstance(partial, str)
        else json.dumps(partial, ensure_ascii=False, default=str)
    )


def usage_of(job: Job) -> dict[str, Any]:
    result = job.result
    if result is None:
        return {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    u = result.usage
    total = u.total
    return {
        "prompt_tokens": total.input_tokens,
        "completion_tokens": total.output_tokens,
        "total_tokens": total.input_tokens + total.output_tokens,
        "prompt_tokens_details": {"cached_tokens": total.cached_tokens},
        "cost_usd": round(u.usd, 8),
        "holdfast": {
            "root": u.root.to_dict(),
            "sub": u.sub.to_dict(),
            "sub_calls": result.sub_calls,
        },
    }


def finish_reason(job: Job) -> str:
    return "stop" if job.status == "ok" else "length"


def holdfast_of(job: Job) -> dict[str, Any]:
    out: dict[str, Any] = {"job_id": job.id, "trace_id": job.trace_id, "status": job.status}
    result = job.result
    if result is not None:
        out.update(
            iterations=result.iterations,
            sub_calls=result.sub_calls,
            mode=result.mode,
            elapsed_s=round(result.elapsed_s, 3),
        )
        if result.error:
            out["limit"] = result.error.get("limit")
            out["message"] = result.error.get("message")
            out["partial"] = result.error.get("partial")
    return out


def completion_json(job: Job, render: str, model: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-" + job.id.removeprefix("job-"),
        "object": "chat.completion",
        "created": int(job.created_at),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content_of(job, render)},
                "finish_reason": finish_reason(job),
                "logprobs": None,
            }
        ],
        "usage": usage_of(job),
        "system_fingerprint": None,
        "holdfast": holdfast_of(job),
    }


def failure(job: Job) -> JSONResponse:
    err = dict(job.error or {"code": "internal_error", "message": "the RLM job failed"})
    err.setdefault("type", "rlm_error")
    err.setdefault("param", None)
    err["trace_id"] = job.trace_id
    status = 503 if err.get("retryable") else 502 if err.get("code") != "internal_error" else 500
    if err.get("code") in ("invalid_input", "config_error", "user_error"):
        status = 400
    return JSONResponse({"error": err}, status_code=status)


async def _disconnected(request: Request) -> None:
    """Return when the client goes away (the body has been read already)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


# -- routes ------------------------------------------------------------------------------------


@router.get("/models", summary="The model names this server answers with an RLM")
def models(svc: Services = Depends(services)) -> dict[str, Any]:
    jobs: JobManager = svc.jobs
    data = [
        {
            "id": name,
            "object": "model",
            "created": 0,
            "owned_by": "holdfast",
            "description": spec.description or f"RLM over {_label(spec.root)}",
        }
        for name, spec in sorted(jobs.settings.models.items())
    ]
    return {"object": "list", "data": data}


def _label(value: Any) -> str:
    return value if isinstance(value, str) else str(getattr(value, "model", type(value).__name__))


@router.post("/chat/completions", summary="Answer a chat request with an RLM", response_model=None)
async def chat_completions(
    req: ChatRequest,
    request: Request,
    svc: Services = Depends(services),
    who: Principal = Depends(principal),
) -> Response:
    jobs: JobManager = svc.jobs
    spec, render = build_job(jobs, req)
    job = jobs.submit(spec, who)
    if req.stream:
        include_usage = bool((req.stream_options or {}).get("include_usage"))
        return StreamingResponse(
            _stream(jobs, job, render, req.model, include_usage, request),
            media_type="text/event-stream",
            headers=SSE_HEADERS,
        )
    done = asyncio.create_task(job.done.wait())
    gone = asyncio.create_task(_disconnected(request))
    try:
        await asyncio.wait({done, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in (done, gone):
            t.cancel()
    if not job.done.is_set():  # the client went away: stop the job and its sub-calls
        jobs.cancel(job.id)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(job.done.wait(), 10)
        return Response(status_code=499)
    if job.status in ("ok", "budget_exceeded"):
        return JSONResponse(completion_json(job, render, req.model))
    return failure(job)


def _chunk(
    job: Job, model: str, delta: dict[str, Any], finish: str | None = None, **extra: Any
) -> bytes:
    body = {
        "id": "chatcmpl-" + job.id.removeprefix("job-"),
        "object": "chat.completion.chunk",
        "created": int(job.created_at),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
        **extra,
    }
    return b"data: " + json.dumps(body, ensure_ascii=False).encode() + b"\n\n"


def progress_line(kind: str, data: dict[str, Any]) -> str | None:
    """One short line of progress for a trace event (never the input, never model output)."""
    budget = data.get("budget") or {}
    if kind == "run_start" and not data.get("parent"):
        return "RLM started: the input is in the REPL, the root model is exploring it"
    if kind == "run_start":
        return f"child RLM started at depth {data.get('depth')}"
    if kind == "iteration":
        lines = len(str(data.get("code") or "").splitlines())
        cell = data.get("cell_s")
        took = f" in {cell:.2f} s" if isinstance(cell, int | float) else ""
        return (
            f"turn {data.get('turn')}: ran {lines} line(s) of code{took}; "
            f"{budget.get('sub_calls', 0)} sub-call(s), ${float(budget.get('usd', 0.0)):.4f} so far"
        )
    if kind == "submit":
        return "answer submitted" if data.get("ok") else "submission rejected; retrying"
    return None


async def _stream(
    jobs: JobManager, job: Job, render: str, model: str, include_usage: bool, request: Request
) -> AsyncIterator[bytes]:
    gone = asyncio.create_task(_disconnected(request))
    gone.add_done_callback(lambda t: jobs.cancel(job.id) if not t.cancelled() else None)
    try:
        yield _chunk(job, model, {"role": "assistant", "content": ""})
        async for event in jobs.watch(job):
            if event.type == "ping":
                yield b": keep-alive\n\n"
                continue
            if event.type == "end":
                break
            line = progress_line(event.type, event.data)
            if line is not None:
                info = {"event": event.type, "trace_id": event.data.get("trace_id")}
                yield _chunk(job, model, {"reasoning_content": line + "\n"}, holdfast=info)
        await job.done.wait()
        if job.status not in ("ok", "budget_exceeded"):
            err = dict(job.error or {})
            err.setdefault("type", "rlm_error")
            yield b"data: " + json.dumps({"error": err}).encode() + b"\n\n"
            yield b"data: [DONE]\n\n"
            return
        content = content_of(job, render)
        if content:
            yield _chunk(job, model, {"content": content})
        yield _chunk(job, model, {}, finish_reason(job), holdfast=holdfast_of(job))
        if include_usage:
            body = {
                "id": "chatcmpl-" + job.id.removeprefix("job-"),
                "object": "chat.completion.chunk",
                "created": int(job.created_at),
                "model": model,
                "choices": [],
                "usage": usage_of(job),
            }
            yield b"data: " + json.dumps(body).encode() + b"\n\n"
        yield b"data: [DONE]\n\n"
    finally:
        gone.cancel()
        if not job.finished:  # the stream was closed before the end: stop the job
            jobs.cancel(job.id)
