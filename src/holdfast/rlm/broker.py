"""The sub-call broker: every model call of a job tree goes through here.

One concurrency limit is shared by every depth of recursion (a child RLM's calls queue with its
parent's), plus an optional limit per model. Before a sub-call the broker checks the prompt's size
against the model's limit (its context window where known, else a fixed number of characters) and
refuses with a message the model can act on, instead of letting the provider fail. It counts the
call, reserves its estimated cost in the budget (waiting while calls in flight hold the rest),
consults the content-addressed cache, and on completion settles what the call really cost (a
tripped budget stops the job mid-cell). A call that times out, fails after the provider did work,
or is cancelled is charged too: what the model layer reports for it, else the reservation's
estimate. In-flight calls are tasks the broker can cancel at once when wall time runs out or the
caller cancels.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

from holdfast.errors import HoldfastError, ModelFacingError
from holdfast.lm.errors import ProviderTimeout
from holdfast.lm.tokens import estimate_tokens
from holdfast.lm.types import LM, ZERO_USAGE, Completion, Message, failed_usage
from holdfast.rlm.budget import BudgetTracker, BudgetTrip, SubCallsUsedUp
from holdfast.rlm.errors import ModelCallTimeout
from holdfast.rlm.pricing import JobPricing
from holdfast.rlm.trace import CallCache, Tracer, call_key, completion_to_reply, reply_to_completion

PREVIEW = 400


class SubCallError(ModelFacingError):
    """A sub-call failed or was refused; the message is shown to the model in the box."""

    code = "sub_call_error"


@dataclass(frozen=True)
class BrokerLimits:
    """Concurrency, size and time limits of model calls.

    ``call_timeout_s`` is the time one attempt of a call may take (the model layer retries a
    timed-out attempt); the job's wall-time budget bounds a call with all its attempts.
    ``context_windows`` gives models' context windows in tokens by name (a model object's own
    ``context_window`` attribute is used when it has one); a sub-call whose estimated prompt plus
    its reply's ``max_tokens`` would not fit is refused before it is sent.

    ``concurrency`` (256 by default) bounds the calls a job tree has in flight at once. It is set
    to the model layer's default for local servers because the model layer already bounds each
    endpoint on its own terms: 64 calls for a hosted provider, 256 for a server on this machine or
    network, halved whenever the server answers 429 (see :mod:`holdfast.lm.limiter`). A lower
    broker limit only throttled local servers: a batch of 1,000 sub-calls ran in 16 rounds of 64
    where the server takes 256 at once.
    """

    concurrency: int = 256
    per_model: dict[str, int] = field(default_factory=dict)
    max_prompt_chars: int = 400_000
    call_timeout_s: float | None = 600.0
    context_windows: dict[str, int] = field(default_factory=dict)


class Broker:
    """Runs model calls for a job tree under shared limits, budgets, cache and trace."""

    def __init__(
        self,
        tracker: BudgetTracker,
        tracer: Tracer,
        *,
        limits: BrokerLimits | None = None,
        cache: CallCache | None = None,
        full_prompts: bool = False,
        pricing: JobPricing | None = None,
    ) -> None:
        self.tracker = tracker
        self.full_prompts = full_prompts
        self.tracer = tracer
        self.limits = limits or BrokerLimits()
        self.cache = cache
        self.pricing = pricing or JobPricing.for_budget(tracker.budget)
        self._sem = asyncio.Semaphore(max(1, self.limits.concurrency))
        self._model_sems = {
            m: asyncio.Semaphore(max(1, n)) for m, n in self.limits.per_model.items()
        }
        self._tasks: set[asyncio.Task[Any]] = set()
        self.peak_in_flight = 0

    # ----- the prompt-size guard --------------------------------------------------------------

    def context_window(self, lm: LM) -> int | None:
        window = self.limits.context_windows.get(lm.model)
        if window is None:
            own = getattr(lm, "context_window", None)
            window = own if isinstance(own, int) and not isinstance(own, bool) else None
        return window if window and window > 0 else None

    def prompt_limit(self, lm: LM) -> int:
        """The most characters a prompt to ``lm`` may have (before its context window)."""
        return self.limits.max_prompt_chars

    def check_prompt(
        self, lm: LM, text: str, max_tokens: int | None, *, what: str = "the prompt"
    ) -> None:
        """Refuse a prompt that cannot fit, with the size to split it to; before anything is sent."""
        chars = len(text)
        limit = self.prompt_limit(lm)
        if chars > limit:
            raise SubCallError(
                f"{what} is {chars:,} characters; the limit for {lm.model} is {limit:,}. Split "
                f"the text into chunks of at most {limit:,} characters and call llm_batch over "
                "the chunks."
            )
        window = self.context_window(lm)
        if window is None:
            return
        reply = max_tokens or 0
        tokens = estimate_tokens(text)
        if tokens + reply <= window:
            return
        room = max(0, window - reply)
        per_token = chars / tokens if tokens else 4.0
        chunk = int(room * per_token * 0.9)
        raise SubCallError(
            f"{what} is about {tokens:,} tokens ({chars:,} characters); {lm.model}'s context "
            f"window is {window:,} tokens, {reply:,} of them kept for the reply. Split the text "
            f"into chunks of at most about {chunk:,} characters and call llm_batch over the "
            "chunks."
        )

    # ----- one call ---------------------------------------------------------------------------

    async def call(
        self,
        lm: LM,
        messages: list[Message],
        *,
        trace_id: str,
        iteration: int | None,
        depth: int,
        kind: str = "sub_call",
        stop: list[str] | None = None,
        response_format: dict[str, Any] | None = None,
        max_tokens: int | None = None,
        log_messages: list[Message] | None = None,
    ) -> Completion:
        """One model call. ``kind`` is ``root_call`` for a run's own turns, else a sub-call.

        ``log_messages`` is what the trace records of the prompt (for root calls: only the new
        messages); sub-calls record a preview and the size.
        """
        is_root = kind == "root_call" and depth == 0
        prompt_chars = sum(len(str(m.get("content") or "")) for m in messages)
        if not is_root:
            if kind != "root_call":
                self.check_prompt(
                    lm, "\n".join(str(m.get("content") or "") for m in messages), max_tokens
                )
            try:
                self.tracker.take_sub_call()
            except SubCallsUsedUp as exc:
                raise SubCallError(f"sub-call refused: {exc}") from None
            except BudgetTrip as trip:
                raise SubCallError(f"sub-call refused: {trip.message}") from None
        else:
            self.tracker.check()
        params: dict[str, Any] = {
            "stop": stop,
            "response_format": response_format,
            "max_tokens": max_tokens,
        }
        key = call_key(lm.model, messages, params, feedback=kind == "root_call")
        record: dict[str, Any] = {
            "key": key,
            "model": lm.model,
            "depth": depth,
            "prompt_chars": prompt_chars,
        }
        if log_messages is not None:
            record["messages"] = log_messages
        elif self.full_prompts:
            record["messages"] = messages
        else:
            last = str(messages[-1].get("content") or "")
            record["prompt_preview"] = last[:PREVIEW]
        cached = self.cache.get(key) if self.cache is not None else None
        if cached is not None:
            completion = reply_to_completion(cached)
            record.update(reply=cached, cached=True, latency_s=0.0)
            try:
                self.tracker.charge(completion.usage, root=is_root)
            finally:
                self.tracer.event(trace_id, kind, record, iteration=iteration)
            return completion
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            return await self._reserved_call(
                lm, messages, is_root, kind, stop, response_format, max_tokens, record, trace_id,
                iteration,
            )  # fmt: skip
        finally:
            if task is not None:
                self._tasks.discard(task)

    async def _reserved_call(
        self,
        lm: LM,
        messages: list[Message],
        is_root: bool,
        kind: str,
        stop: list[str] | None,
        response_format: dict[str, Any] | None,
        max_tokens: int | None,
        record: dict[str, Any],
        trace_id: str,
        iteration: int | None,
    ) -> Completion:
        tokens, usd, estimate = self.pricing.reservation(lm, messages, max_tokens)
        try:
            reservation = await self.tracker.reserve(root=is_root, tokens=tokens, usd=usd)
        except BudgetTrip as trip:
            if kind == "root_call":
                raise
            raise SubCallError(f"sub-call refused: {trip.message}") from None
        t0 = time.perf_counter()
        try:
            completion = await self._limited(
                lm, messages, stop, response_format, max_tokens, trace_id=trace_id, kind=kind
            )
        except BaseException as exc:
            cancelled = isinstance(exc, asyncio.CancelledError)
            timed_out = isinstance(exc, (TimeoutError, ProviderTimeout))
            lost = failed_usage(exc)
            if lost is not None:
                spent = self.pricing.cost(lm, lost)
            elif cancelled or timed_out or isinstance(exc, BudgetTrip):
                spent = estimate  # sent and never answered: count what it may have cost
            else:
                spent = ZERO_USAGE
            self.tracker.settle(reservation, spent, check=False)
            record.update(latency_s=round(time.perf_counter() - t0, 4))
            if spent.total_tokens:
                record["charged"] = spent.to_dict()
            if cancelled:
                record["error"] = "cancelled"
                self.tracer.event(trace_id, kind, record, iteration=iteration)
                raise
            if isinstance(exc, BudgetTrip):
                record["error"] = exc.message
                self.tracer.event(trace_id, kind, record, iteration=iteration)
                raise
            if timed_out:
                message = f"timed out after {time.perf_counter() - t0:.2f} s"
                if isinstance(exc, ProviderTimeout):
                    message += f" ({exc.message})"
            elif isinstance(exc, HoldfastError):
                message = exc.message
            else:
                message = f"{type(exc).__name__}: {exc}"
            record["error"] = message[:2000]
            self.tracer.event(trace_id, kind, record, iteration=iteration)
            if kind == "root_call":
                if isinstance(exc, TimeoutError):  # a raw timeout from a custom model
                    raise ModelCallTimeout(
                        f"the root model {lm.model} {message}", model=lm.model
                    ) from exc
                raise
            if timed_out:
                raise SubCallError(f"the sub-call to {lm.model} {message}") from None
            raise SubCallError(f"the sub-call to {lm.model} failed: {message[:500]}") from None
        usage = self.pricing.cost(lm, completion.usage)
        if usage is not completion.usage:
            completion = Completion(
                text=completion.text,
                tool_calls=completion.tool_calls,
                finish_reason=completion.finish_reason,
                usage=usage,
                model=completion.model,
                call_id=completion.call_id,
            )
        reply = completion_to_reply(completion)
        record.update(reply=reply, latency_s=round(time.perf_counter() - t0, 4))
        if self.cache is not None:
            self.cache.put(record["key"], lm.model, reply)
        try:
            self.tracker.settle(reservation, usage)
        finally:
            record["budget"] = self.tracker.snapshot()
            self.tracer.event(trace_id, kind, record, iteration=iteration)
        return completion

    async def _limited(
        self,
        lm: LM,
        messages: list[Message],
        stop: list[str] | None,
        response_format: dict[str, Any] | None,
        max_tokens: int | None,
        *,
        trace_id: str | None = None,
        kind: str = "sub_call",
    ) -> Completion:
        model_sem = self._model_sems.get(lm.model)
        async with self._sem:
            if model_sem is not None:
                await model_sem.acquire()
            self.tracker.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.tracker.in_flight)
            try:
                remaining = self.tracker.remaining_s()
                deadline = asyncio.timeout(remaining)
                try:
                    async with deadline:
                        return await lm.acomplete(
                            messages,
                            stop=stop,
                            response_format=response_format,
                            max_tokens=max_tokens,
                            timeout=self.limits.call_timeout_s,
                            # the call log files the call under its run (holdfast lm log)
                            metadata={"trace_id": trace_id, "kind": kind},
                        )
                except TimeoutError:
                    if deadline.expired():  # the job's wall time ran out, not the call's
                        self.tracker.force_trip(
                            "wall_time",
                            f"the wall-time budget of {self.tracker.budget.max_wall_s} s ran out",
                        )
                        assert self.tracker.trip is not None
                        raise self.tracker.trip from None
                    raise
            finally:
                self.tracker.in_flight -= 1
                if model_sem is not None:
                    model_sem.release()

    def cancel_all(self) -> int:
        """Cancel every model call in flight (wall time ran out or the job was cancelled)."""
        tasks = [t for t in self._tasks if not t.done()]
        for t in tasks:
            t.cancel()
        return len(tasks)

    async def drain(self, timeout: float = 2.0) -> None:
        """Wait (briefly) for cancelled calls to finish, so that their charges are in."""
        me = asyncio.current_task()
        pending = [t for t in self._tasks if not t.done() and t is not me]
        if pending:
            with contextlib.suppress(Exception):
                await asyncio.wait(pending, timeout=timeout)
