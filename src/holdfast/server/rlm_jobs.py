"""RLM jobs run by the server: the REST jobs API and the OpenAI-compatible endpoint share them.

A :class:`JobManager` runs each job as a task on the server's event loop (an RLM is async: its
model calls, box and sub-calls all wait without holding a thread), at most ``max_jobs`` at once.
It resolves model names, checks budgets against the server's caps, traces every job in the
store, and hands each job's trace events to its live watchers (bounded queues: a slow watcher is
dropped, never waited for). Cancelling a job (a client that disconnects, ``POST .../cancel``)
trips the engine's cancellation, which stops the running cell and cancels in-flight sub-calls.

A job runs in this process, but its record is in the store (:mod:`holdfast.server.job_store`):
after a restart its status, result or error still answer, and a job whose server went away before
it finished is reported ``interrupted``. Its trace is in the store too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from holdfast.errors import Cancelled, HoldfastError, InvalidInput, UserError
from holdfast.server.hub import Event
from holdfast.server.job_store import HEARTBEAT_S, JobStore
from holdfast.server.settings import ModelSpec, RLMCaps, ServerSettings
from holdfast.server.tokens import Principal

log = logging.getLogger("holdfast.server.rlm")

TERMINAL = frozenset({"ok", "budget_exceeded", "cancelled", "error", "interrupted"})
MAX_EVENTS = 20_000


class ModelNotFound(UserError):
    """The requested model name is neither configured on the server nor an ``rlm:`` name."""

    code = "model_not_found"


@dataclass
class JobSpec:
    """What to run: the query, its inputs, and the settings that make it an RLM job."""

    query: str
    inputs: dict[str, Any]
    model: str
    spec: ModelSpec
    budget: Any  # holdfast.rlm.Budget
    signature: Any = None
    mode: str = "auto"
    root_max_tokens: int | None = 4_096
    via: str = "api"


@dataclass
class Job:
    """One job: its state, its result, and the events its watchers read."""

    id: str
    spec: JobSpec
    principal: Principal
    status: str = "queued"
    trace_id: str | None = None
    result: Any = None  # holdfast.rlm.RLMResult
    error: dict[str, Any] | None = None
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    ended_at: float | None = None
    events: list[Event] = field(default_factory=list)
    cancel: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    watchers: list[asyncio.Queue[Event | None]] = field(default_factory=list)
    progress: dict[str, Any] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status,
            "model": self.spec.model,
            "query": self.spec.query[:2000],
            "trace_id": self.trace_id,
            "principal": self.principal.name,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "progress": dict(self.progress),
            "result": None if self.result is None else self.result.to_dict(),
            "error": self.error,
        }


@dataclass
class StoredJob:
    """A job known only from its record: run by an earlier or another server process."""

    record: dict[str, Any]
    cancel: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    watchers: list[asyncio.Queue[Event | None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.finished:
            self.done.set()

    @property
    def id(self) -> str:
        return str(self.record["id"])

    @property
    def status(self) -> str:
        return str(self.record["status"])

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL

    @property
    def events(self) -> list[Event]:
        end = {"status": self.status, "trace_id": self.record["trace_id"]}
        return [Event(1, "end", end)] if self.finished else []

    def to_dict(self) -> dict[str, Any]:
        return dict(self.record)


class JobManager:
    """Runs RLM jobs on the server's loop; see the module docstring."""

    def __init__(
        self,
        settings: ServerSettings,
        traces: Any,
        calls: Any,
        *,
        sandbox: Any = None,
        queue_size: int = 1_000,
        store: JobStore | None = None,
    ) -> None:
        from holdfast.sandbox.types import SandboxPolicy

        self.settings = settings
        self.traces = traces
        self.calls = calls
        self.sandbox: Any = sandbox or SandboxPolicy(isolation=settings.isolation)  # type: ignore[arg-type]
        self.queue_size = queue_size
        self.jobs: dict[str, Job] = {}
        self._slots: asyncio.Semaphore | None = None
        self.keep_finished = 500
        backend = getattr(traces, "backend", None)
        self.store = store if store is not None else (JobStore(backend) if backend else None)
        self._beat: asyncio.Task[None] | None = None
        self._closing = False
        self._writer: ThreadPoolExecutor | None = None

    # -- names and budgets --------------------------------------------------------------------

    def model_names(self) -> list[str]:
        return sorted(self.settings.models)

    def resolve(self, name: str) -> ModelSpec:
        """The model spec for a requested name: configured, or ``rlm:<provider>:<model>``."""
        spec = self.settings.models.get(name)
        if spec is not None:
            return spec
        if name.startswith("rlm:") and self.settings.generic_models:
            root = name[len("rlm:") :]
            if root.count(":") >= 1 and all(root.split(":", 1)):
                return ModelSpec(root=root)
        known = ", ".join(self.model_names()) or "none configured"
        generic = " or rlm:<provider>:<model>" if self.settings.generic_models else ""
        raise ModelNotFound(
            f"the model {name!r} does not exist on this server; use one of: {known}{generic}",
            model=name,
        )

    def caps_for(self, spec: ModelSpec) -> RLMCaps:
        return spec.caps or self.settings.caps

    def budget(self, spec: ModelSpec, asked: Mapping[str, Any] | None) -> Any:
        """A :class:`holdfast.rlm.Budget` from the request, refused above the server's caps."""
        from holdfast.rlm import Budget

        caps = self.caps_for(spec)
        asked = dict(asked or {})
        unknown = sorted(set(asked) - set(RLMCaps.BUDGET_FIELDS))
        if unknown:
            raise InvalidInput(
                f"unknown budget fields {unknown}; known: {', '.join(RLMCaps.BUDGET_FIELDS)}"
            )
        values: dict[str, Any] = {}
        for name in RLMCaps.BUDGET_FIELDS:
            cap = getattr(caps, name)
            value = asked.get(name)
            if value is None:
                values[name] = cap
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise InvalidInput(f"budget.{name} must be a number")
            if value != value or value in (float("inf"), float("-inf")):
                raise InvalidInput(f"budget.{name} must be a finite number")
            if cap is not None and value > cap:
                raise InvalidInput(
                    f"budget.{name} = {value} is above this server's cap of {cap}",
                    field=name,
                    cap=cap,
                )
            integer = name in ("max_iterations", "max_sub_calls", "max_depth")
            integer = integer or name in ("max_root_tokens", "max_sub_tokens")
            values[name] = int(value) if integer else float(value)
        return Budget(**values)

    def check_inputs(self, spec: ModelSpec, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """Request inputs to RLM inputs: text, JSON (``{"json": ...}``), or a server file or
        folder (``{"path": ...}``) inside the server's ``--input-root`` folders only."""
        caps = self.caps_for(spec)
        out: dict[str, Any] = {}
        total = 0
        for name, value in inputs.items():
            if not name.isidentifier() or name.startswith("_"):
                raise InvalidInput(f"input name {name!r} must be a Python identifier")
            if isinstance(value, str):
                out[name] = value
                total += len(value.encode("utf-8", "surrogatepass"))
            elif isinstance(value, dict) and set(value) == {"json"}:
                out[name] = value["json"]
                total += len(repr(value["json"]))
            elif isinstance(value, dict) and set(value) == {"path"}:
                out[name] = self._allowed_path(str(value["path"]))
            else:
                raise InvalidInput(
                    f"input {name!r} must be a string, {{'json': value}} or {{'path': '...'}}"
                )
            if total > caps.max_input_bytes:
                raise InvalidInput(
                    f"the inputs are larger than this server's cap of {caps.max_input_bytes} bytes"
                )
        return out

    def _allowed_path(self, raw: str) -> Path:
        roots = [r.resolve() for r in self.settings.input_roots]
        if not roots:
            raise InvalidInput(
                "this server reads no files for RLM jobs (start it with --input-root DIR); "
                "send the text itself"
            )
        path = Path(raw).expanduser().resolve()
        if not any(path == r or r in path.parents for r in roots):
            raise InvalidInput(f"{raw!r} is outside the folders this server may read")
        if not path.exists():
            raise InvalidInput(f"{raw!r} does not exist")
        return path

    # -- running --------------------------------------------------------------------------------

    def submit(self, spec: JobSpec, principal: Principal) -> Job:
        job = Job(id="job-" + secrets.token_hex(10), spec=spec, principal=principal)
        self.jobs[job.id] = job
        self._forget_old()
        self._save(job)
        job.task = asyncio.create_task(self._run(job))
        if self.store is not None and (self._beat is None or self._beat.done()):
            self._beat = asyncio.create_task(self._heartbeat())
        return job

    def get(self, job_id: str) -> Job | StoredJob:
        job = self.jobs.get(job_id)
        if job is not None:
            return job
        record = self.store.get(job_id) if self.store is not None else None
        if record is None:
            raise JobNotFound(f"no RLM job {job_id!r} (see /api/v1/rlm/jobs)")
        return StoredJob(record)

    def recent(self, limit: int = 100) -> list[dict[str, Any]]:
        """This process's jobs and the stored ones of earlier or other servers, newest first."""
        mine = {j.id: j.to_dict() for j in self.jobs.values()}
        stored = self.store.recent(limit) if self.store is not None else []
        merged = list(mine.values()) + [r for r in stored if r["id"] not in mine]
        return sorted(merged, key=lambda j: -float(j["created_at"]))[:limit]

    def cancel(self, job_id: str) -> Job | StoredJob:
        job = self.get(job_id)
        if isinstance(job, StoredJob) and not job.finished:
            server = job.record.get("server") or {}
            raise JobNotFound(
                f"the RLM job {job_id!r} runs in another server process (pid "
                f"{server.get('pid')} on {server.get('host')}): cancel it there"
            )
        job.cancel.set()
        return job

    def _save(self, job: Job) -> None:
        """Write the job's record on the manager's one writer thread: in order, and never
        holding the event loop while the disk is slow."""
        if self.store is None:
            return
        if self._writer is None:
            self._writer = ThreadPoolExecutor(1, thread_name_prefix="holdfast-jobs")
        record, via, store = job.to_dict(), job.spec.via, self.store

        def write() -> None:
            try:
                store.save(record, via=via)
            except HoldfastError as exc:  # the record is a convenience; the job goes on
                log.warning("could not record RLM job %s: %s", record["id"], exc)

        self._writer.submit(write)

    async def _heartbeat(self) -> None:
        """Refresh the records of running jobs (progress and heartbeat) while any runs."""
        while any(not j.finished for j in self.jobs.values()):
            await asyncio.sleep(HEARTBEAT_S)
            for job in [j for j in self.jobs.values() if not j.finished]:
                self._save(job)

    async def wait(self, job: Job) -> Job:
        await job.done.wait()
        return job

    async def close(self) -> None:
        self._closing = True
        if self._beat is not None:
            self._beat.cancel()
        for job in list(self.jobs.values()):
            job.cancel.set()
        tasks = [j.task for j in self.jobs.values() if j.task is not None and not j.task.done()]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(BaseException):
                await t
        if self._writer is not None:  # every record written before the server goes
            writer, self._writer = self._writer, None
            await asyncio.to_thread(writer.shutdown, True)

    def _forget_old(self) -> None:
        """Keep the newest ``keep_finished`` finished jobs in memory (their traces stay)."""
        finished = sorted(
            (j for j in self.jobs.values() if j.finished), key=lambda j: j.ended_at or 0
        )
        for j in finished[: max(0, len(finished) - self.keep_finished)]:
            self.jobs.pop(j.id, None)

    def _build(self, job: Job) -> tuple[Any, list[Any]]:
        """The RLM for a job, and the models it opened (closed after the job)."""
        from holdfast.rlm import RLM

        s = job.spec
        opened: list[Any] = []

        def lm(value: Any) -> Any:
            if not isinstance(value, str):
                return value
            from holdfast.lm import get_lm

            built = get_lm(value, call_log=self.calls)
            opened.append(built)
            return built

        root = lm(s.spec.root)
        sub = lm(s.spec.sub) if s.spec.sub is not None else None
        caps = self.caps_for(s.spec)
        rlm = RLM(
            root,
            sub,
            sandbox=self.sandbox,
            budget=s.budget,
            signature=s.signature,
            mode=s.mode,  # type: ignore[arg-type]
            root_max_tokens=s.root_max_tokens,
            store=self.traces,
            max_input_bytes=caps.max_input_bytes,
            on_event=lambda trace_id, kind, data: self._observe(job, trace_id, kind, data),
            on_budget="return",
        )
        rlm.trace_meta = {"job_id": job.id, "principal": job.principal.actor, "via": s.via}
        return rlm, opened

    async def _run(self, job: Job) -> None:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.settings.max_jobs)
        rlm = None
        opened: list[Any] = []
        try:
            async with self._slots:
                if job.cancel.is_set():
                    raise Cancelled("the RLM job was cancelled before it started")
                job.status = "running"
                job.started_at = time.time()
                self._save(job)
                self._emit(job, "status", {"status": "running"})
                rlm, opened = self._build(job)
                result = await rlm.arun(job.spec.query, cancel=job.cancel, **job.spec.inputs)
                job.result = result
                job.trace_id = result.trace_id
                job.status = result.status
                if result.error:
                    job.error = {"code": "budget_exceeded", **result.error}
        except Cancelled as exc:
            job.trace_id = job.trace_id or exc.details.get("trace_id")
            if self._closing:
                self._interrupted(job)
            else:
                job.status = "cancelled"
                job.error = exc.to_dict()
        except asyncio.CancelledError:
            self._interrupted(job)
            raise
        except HoldfastError as exc:
            job.status = "error"
            job.error = exc.to_dict()
        except Exception as exc:  # a bug: say so, keep the server up
            log.exception("RLM job %s failed", job.id)
            job.status = "error"
            job.error = {"code": "internal_error", "message": f"{type(exc).__name__}: {exc}"}
        finally:
            job.ended_at = time.time()
            self._save(job)
            if rlm is not None:
                for built in opened:
                    closer = getattr(built, "aclose", None)
                    if closer is not None:
                        with contextlib.suppress(Exception):
                            await closer()
            self._emit(job, "end", {"status": job.status, "trace_id": job.trace_id})
            for q in list(job.watchers):
                _offer(q, None)
            job.done.set()

    @staticmethod
    def _interrupted(job: Job) -> None:
        job.status = "interrupted"
        job.error = {
            "code": "interrupted",
            "message": "the RLM job was interrupted: the server stopped while it ran; it will "
            "not be resumed (its trace shows what it did; submit it again to re-run)",
        }

    # -- events ---------------------------------------------------------------------------------

    def _observe(self, job: Job, trace_id: str, kind: str, data: dict[str, Any]) -> None:
        if job.trace_id is None and kind == "run_start" and not data.get("parent"):
            job.trace_id = trace_id
        p = job.progress
        if kind == "iteration":
            p["iteration"] = data.get("iteration", p.get("iteration", 0))
        if kind == "sub_call":
            p["sub_calls"] = p.get("sub_calls", 0) + 1
        if kind in ("root_call", "sub_call", "direct_call"):
            usage = data.get("usage") or {}
            p["tokens"] = (
                p.get("tokens", 0)
                + int(usage.get("input_tokens", 0))
                + int(usage.get("output_tokens", 0))
            )
            p["usd"] = round(p.get("usd", 0.0) + float(usage.get("cost_usd", 0.0)), 8)
        self._emit(job, kind, {"trace_id": trace_id, **data})

    def _emit(self, job: Job, kind: str, data: dict[str, Any]) -> None:
        event = Event(len(job.events) + 1, kind, data)
        if len(job.events) < MAX_EVENTS:
            job.events.append(event)
        for q in list(job.watchers):
            if not _offer(q, event):
                job.watchers.remove(q)

    async def watch(self, job: Job | StoredJob, after: int = 0) -> AsyncIterator[Event]:
        """The job's events after ``after``, then live ones until it ends."""
        queue: asyncio.Queue[Event | None] = asyncio.Queue(self.queue_size)
        job.watchers.append(queue)
        last = after
        try:
            for event in list(job.events):
                if event.pos > last:
                    last = event.pos
                    yield event
            if job.finished or isinstance(job, StoredJob):
                return  # a stored job's live events are in its trace: /rlm/traces/{id}/events
            while True:
                try:
                    item = await asyncio.wait_for(queue.get(), 15.0)
                except TimeoutError:
                    yield Event(last, "ping", {})
                    continue
                if item is None:
                    if queue not in job.watchers and not job.finished:
                        yield Event(last, "overflow", {"resume_after": last})
                    return
                if item.pos > last:
                    last = item.pos
                    yield item
        finally:
            with contextlib.suppress(ValueError):
                job.watchers.remove(queue)


class JobNotFound(UserError):
    """No job of that id in this server process."""

    code = "not_found"


def _offer(queue: asyncio.Queue[Event | None], item: Event | None) -> bool:
    """Put without waiting; a full queue means the watcher is too slow: end its stream."""
    try:
        queue.put_nowait(item)
        return True
    except asyncio.QueueFull:
        with contextlib.suppress(asyncio.QueueEmpty):
            while True:
                queue.get_nowait()
        queue.put_nowait(None)
        return False
