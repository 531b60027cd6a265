"""The public RLM engine: ``RLM(...).arun(query, **inputs) -> RLMResult``.

An :class:`RLM` holds settings only; each call builds a job (tracker, broker, tracer) and either
answers with one direct model call (small inputs, ``mode="direct"``, or ``"auto"`` below the
threshold, since RLMs do worse than the plain model on short inputs) or runs the loop in a box.
Budget errors raise :class:`~holdfast.errors.BudgetExceeded` with the partial answer and the trace
id (or return a result with that status, ``on_budget="return"``); a cancellation signal
(``asyncio.Event`` or ``threading.Event``) stops the job within a fraction of a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal

from pydantic import BaseModel

from holdfast.errors import BudgetExceeded, Cancelled, ConfigError, HoldfastError, InvalidInput
from holdfast.lm.types import LM, Message
from holdfast.rlm.broker import Broker, BrokerLimits
from holdfast.rlm.budget import Budget, BudgetTracker, BudgetTrip
from holdfast.rlm.inputs import (
    DEFAULT_MAX_INPUT_BYTES,
    JobInput,
    prepare_inputs,
    scan_file,
)
from holdfast.rlm.job import Job
from holdfast.rlm.loop import Run
from holdfast.rlm.result import RLMResult, RLMUsage
from holdfast.rlm.router import DirectAnswerInvalid, answer_directly, choose_mode
from holdfast.rlm.signature import Signature, outputs_to_jsonable, parse_signature
from holdfast.rlm.store import RLMTraceStore
from holdfast.rlm.tools import as_tool_specs
from holdfast.rlm.trace import CallCache, MemoryCache, Observer, StoreCache, Tracer
from holdfast.sandbox.types import HostFunctionSpec, Sandbox, SandboxPolicy

Mode = Literal["auto", "rlm", "direct"]
CancelSignal = asyncio.Event | threading.Event
SandboxFactory = Callable[[SandboxPolicy], Sandbox]

DIRECT_THRESHOLD_CHARS = 50_000


def resolve_lm(model: LM | str, role: str) -> LM:
    """An LM object, or one built from a ``provider:model`` name."""
    if not isinstance(model, str):
        return model
    try:
        from holdfast.lm import get_lm
    except ImportError as exc:
        raise ConfigError(
            f"cannot build the {role} model {model!r}: model access is unavailable"
        ) from exc
    lm: LM = get_lm(model)
    return lm


def default_sandbox_factory(policy: SandboxPolicy) -> Sandbox:
    """The real box (namespace isolation unless the policy asks for ``process``)."""
    from holdfast import sandbox as sandbox_pkg

    opener = getattr(sandbox_pkg, "open_sandbox", None)
    if opener is None:
        raise ConfigError("the sandbox package provides no open_sandbox(); cannot start a box")
    box: Sandbox = opener(policy)
    return box


class RLM:
    """A Recursive Language Model engine: inputs live in a box; the root model drives it with code."""

    def __init__(
        self,
        model: LM | str,
        sub_model: LM | str | None = None,
        *,
        sandbox: SandboxPolicy | SandboxFactory | None = None,
        budget: Budget | None = None,
        max_depth: int | None = None,
        signature: str | Signature | type[BaseModel] | None = None,
        tools: Sequence[Callable[..., Any] | HostFunctionSpec] = (),
        mode: Mode = "auto",
        direct_threshold_chars: int = DIRECT_THRESHOLD_CHARS,
        limits: BrokerLimits | None = None,
        output_cap: int = 8_000,
        root_max_tokens: int | None = 4_096,
        system_prompt: str | None = None,
        cache: bool | CallCache = False,
        store: RLMTraceStore | None = None,
        trace: bool = True,
        trace_sub_prompts: bool = False,
        max_input_bytes: int = DEFAULT_MAX_INPUT_BYTES,
        on_event: Observer | None = None,
        on_budget: Literal["raise", "return"] = "raise",
        extra_models: Sequence[LM | str] = (),
    ) -> None:
        if mode not in ("auto", "rlm", "direct"):
            raise InvalidInput(f"mode must be auto, rlm or direct, not {mode!r}")
        self.root_lm = resolve_lm(model, "root")
        self.sub_lm = resolve_lm(sub_model, "sub") if sub_model is not None else self.root_lm
        self.models = {lm.model: lm for lm in (self.root_lm, self.sub_lm)}
        for extra in extra_models:
            lm = resolve_lm(extra, "extra")
            self.models[lm.model] = lm
        self.budget = budget or Budget()
        self.max_depth = self.budget.max_depth if max_depth is None else max_depth
        if self.max_depth < 0:
            raise InvalidInput("max_depth must be 0 or more")
        self.signature = parse_signature(signature)
        self.tools = as_tool_specs(tools)
        self.mode: Mode = mode
        self.direct_threshold_chars = direct_threshold_chars
        self.limits = limits or BrokerLimits()
        self.output_cap = output_cap
        self.root_max_tokens = root_max_tokens
        self.system_prompt = system_prompt
        self.max_input_bytes = max_input_bytes
        self.on_event = on_event
        self.on_budget = on_budget
        if isinstance(sandbox, SandboxPolicy) or sandbox is None:
            policy = sandbox or SandboxPolicy()
            self._sandbox_factory: Callable[[], Sandbox] = lambda: default_sandbox_factory(policy)
        else:
            factory = sandbox
            self._sandbox_factory = lambda: factory(SandboxPolicy())
        self._store = store
        self._trace = trace
        self._trace_sub_prompts = trace_sub_prompts
        self.trace_meta: dict[str, Any] = {}
        self._cache_opt = cache

    # ----- public API -------------------------------------------------------------------------

    def run(self, query: str, *, cancel: CancelSignal | None = None, **inputs: Any) -> RLMResult:
        """The blocking form of :meth:`arun`."""
        from holdfast.lm.base import run_sync

        async def go() -> RLMResult:
            try:
                return await self.arun(query, cancel=cancel, **inputs)
            finally:
                await self.aclose()

        return run_sync(go())

    async def arun(
        self, query: str, *, cancel: CancelSignal | None = None, **inputs: Any
    ) -> RLMResult:
        """Answer ``query`` over the named inputs (str, bytes, lists/dicts, Paths to files or dirs)."""
        if not isinstance(query, str) or not query.strip():
            raise InvalidInput("the query must be a non-empty string")
        items = prepare_inputs(inputs, max_input_bytes=self.max_input_bytes)
        self._check_signature_inputs(items)
        for item in items:
            scan_file(item, self.max_input_bytes)
        job = self._new_job()
        mode = choose_mode(self.mode, items, self.direct_threshold_chars)
        started = time.monotonic()
        run = Run(job=job, query=query, inputs=items, signature=self.signature)
        watchdog = asyncio.create_task(self._watch(job, cancel))
        try:
            if mode == "direct":
                try:
                    answer = await answer_directly(job, run, self.root_max_tokens)
                except DirectAnswerInvalid:
                    if self.mode == "direct":
                        raise
                    mode = "rlm"
                    run = Run(job=job, query=query, inputs=items, signature=self.signature)
            if mode == "rlm":
                outcome = await job.execute_run(run)
                if isinstance(outcome, BudgetTrip):
                    raise outcome
                answer = outcome
        except BudgetTrip as trip:
            return self._budget_outcome(job, run, trip, started, mode)
        except asyncio.CancelledError:
            if job.tracker.trip is not None and job.tracker.trip.limit == "cancelled":
                raise Cancelled(
                    "the RLM job was cancelled", trace_id=run.trace_id, partial=run.partial
                ) from None
            raise
        except HoldfastError as exc:
            # A provider outage, a dead box...: say which job, and what it had so far.
            exc.details.setdefault("trace_id", run.trace_id)
            exc.details.setdefault("partial", {"answer": run.partial, "iterations": run.iteration})
            raise
        finally:
            watchdog.cancel()
            with contextlib.suppress(BaseException):
                await watchdog
            job.tracker.close()
            job.tracer.flush()
        assert isinstance(answer, BaseModel)
        return self._result(job, run, answer, "ok", started, mode)

    async def acompletion(self, prompt: str) -> str:
        """Text in, text out: the prompt itself is the input (direct below the threshold)."""
        if self.mode != "rlm" and len(prompt) < self.direct_threshold_chars:
            completion = await self.root_lm.acomplete([{"role": "user", "content": prompt}])
            return completion.text
        result = await self.arun("Do what the text in `prompt` asks and answer it.", prompt=prompt)
        return str(result.outputs.get("answer", result.answer))

    def completion(self, prompt: str) -> str:
        """The blocking form of :meth:`acompletion`: a drop-in text-in, text-out call."""
        from holdfast.lm.base import run_sync

        async def go() -> str:
            try:
                return await self.acompletion(prompt)
            finally:
                await self.aclose()

        return run_sync(go())

    async def aclose(self) -> None:
        """Close the models' connections on this event loop (``run`` does it after each job)."""
        for lm in self.models.values():
            closer = getattr(lm, "aclose", None)
            if closer is not None:
                with contextlib.suppress(Exception):
                    await closer()

    def describe_prompt(self, query: str, **inputs: Any) -> list[Message]:
        """The exact first messages the root model would get (for ``--show-prompt``)."""
        items = prepare_inputs(inputs, max_input_bytes=self.max_input_bytes)
        for item in items:
            scan_file(item, self.max_input_bytes)
        from holdfast.rlm.prompts import build_first_turn

        job = self._new_job(store=False)
        run = Run(job=job, query=query, inputs=items, signature=self.signature)
        return [
            {"role": "system", "content": run.system_prompt()},
            {
                "role": "user",
                "content": build_first_turn(
                    query, items, self.signature, self.budget.max_iterations
                ),
            },
        ]

    # ----- internals --------------------------------------------------------------------------

    def _check_signature_inputs(self, items: list[JobInput]) -> None:
        names = {i.name for i in items}
        missing = [f.name for f in self.signature.inputs if f.name not in names]
        if missing:
            raise InvalidInput(f"the signature {self.signature} needs the inputs {missing}")

    def _new_job(self, store: bool = True) -> Job:
        tracer_store = None
        if self._trace and store:
            if self._store is None:
                from holdfast.config import default_db_path
                from holdfast.store.sqlite import SQLiteDB

                self._store = RLMTraceStore(SQLiteDB(default_db_path()))
            tracer_store = self._store
        tracer = Tracer(tracer_store, self.on_event)
        tracker = BudgetTracker(self.budget)
        cache: CallCache | None = None
        if self._cache_opt is True:
            cache = StoreCache(tracer_store) if tracer_store is not None else MemoryCache()
        elif self._cache_opt is not False:
            cache = self._cache_opt
        broker = Broker(
            tracker, tracer, limits=self.limits, cache=cache, full_prompts=self._trace_sub_prompts
        )
        root_id: list[str] = []

        def start_run(run: Run) -> None:
            if not root_id:
                root_id.append(run.trace_id)
            meta = {
                "inputs": [i.source() for i in run.inputs],
                "described": [i.describe() for i in run.inputs],
                "signature": str(run.signature),
                "budget": self.budget.__dict__,
                "max_depth": self.max_depth,
                "system_prompt": run.system_prompt(),
                "system_template": self.system_prompt,
                "output_cap": self.output_cap,
                "max_prompt_chars": self.limits.max_prompt_chars,
                "root_max_tokens": self.root_max_tokens,
                "models": sorted(self.models),
                **self.trace_meta,
            }
            if tracer_store is not None:
                tracer_store.start_run(
                    run.trace_id,
                    parent_id=run.parent_id,
                    root_id=root_id[0],
                    depth=run.depth,
                    query=run.query,
                    model=self.root_lm.model,
                    sub_model=self.sub_lm.model,
                    mode=run.mode,
                    meta=meta,
                )
            tracer.event(
                run.trace_id,
                "run_start",
                {"depth": run.depth, "parent": run.parent_id, "query": run.query[:2000]},
            )

        def finish_run(run: Run, status: str, result: dict[str, Any]) -> None:
            tracer.event(run.trace_id, "run_end", {"status": status, **result})
            if tracer_store is not None:
                tracer_store.finish_run(run.trace_id, status, result)

        return Job(
            root_lm=self.root_lm,
            sub_lm=self.sub_lm,
            models=self.models,
            budget=self.budget,
            tracker=tracker,
            broker=broker,
            tracer=tracer,
            open_sandbox=self._sandbox_factory,
            max_depth=self.max_depth,
            tools=self.tools,
            output_cap=self.output_cap,
            root_max_tokens=self.root_max_tokens,
            system_prompt=self.system_prompt,
            max_input_bytes=self.max_input_bytes,
            start_run=start_run,
            finish_run=finish_run,
        )

    async def _watch(self, job: Job, cancel: CancelSignal | None) -> None:
        """Trip the wall-time budget at its deadline and the cancellation at once when signalled."""
        tracker = job.tracker
        while tracker.trip is None:
            if cancel is not None and cancel.is_set():
                tracker.force_trip("cancelled", "the job was cancelled by its caller")
                break
            remaining = tracker.remaining_s()
            if remaining is not None and remaining <= 0:
                tracker.force_trip(
                    "wall_time", f"the wall-time budget of {self.budget.max_wall_s} s ran out"
                )
                break
            await asyncio.sleep(min(0.02, remaining if remaining is not None else 0.02))
        job.broker.cancel_all()

    def _usage(self, job: Job) -> RLMUsage:
        return RLMUsage(root=job.tracker.root_usage, sub=job.tracker.sub_usage)

    def _result(
        self, job: Job, run: Run, answer: BaseModel, status: Any, started: float, mode: Any
    ) -> RLMResult:
        outputs = outputs_to_jsonable(answer)
        value: Any = answer
        if len(run.signature.outputs) == 1:
            value = getattr(answer, run.signature.outputs[0].name)
        return RLMResult(
            answer=value,
            outputs=outputs,
            status=status,
            usage=self._usage(job),
            iterations=run.iteration,
            trace_id=run.trace_id,
            mode=mode,
            elapsed_s=time.monotonic() - started,
            sub_calls=job.tracker.sub_calls_started,
        )

    def _budget_outcome(
        self, job: Job, run: Run, trip: BudgetTrip, started: float, mode: Any
    ) -> RLMResult:
        partial = {
            "answer": run.partial,
            "last_output": run.last_output,
            "iterations": run.iteration,
            "usage": self._usage(job).to_dict(),
        }
        if trip.limit == "cancelled":
            raise Cancelled("the RLM job was cancelled", trace_id=run.trace_id, partial=partial)
        if self.on_budget == "raise":
            raise BudgetExceeded(
                f"RLM job stopped: {trip.message}",
                limit=trip.limit,
                partial=partial,
                trace_id=run.trace_id,
            )
        return RLMResult(
            answer=run.partial,
            outputs={},
            status="budget_exceeded",
            usage=self._usage(job),
            iterations=run.iteration,
            trace_id=run.trace_id,
            mode=mode,
            elapsed_s=time.monotonic() - started,
            sub_calls=job.tracker.sub_calls_started,
            error={"limit": trip.limit, "message": trip.message, "partial": partial},
        )
