"""The sub-call broker: every model call of a job tree goes through here.

One concurrency limit is shared by every depth of recursion (a child RLM's calls queue with its
parent's), plus an optional limit per model. Before a sub-call the broker checks the prompt size
against the model's limit and refuses with a message the model can act on, instead of letting the
provider fail; it reserves the call in the budget, consults the content-addressed cache, and after
the call charges tokens and dollars (a tripped budget stops the job mid-cell). In-flight calls are
tasks the broker can cancel at once when wall time runs out or the caller cancels.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from holdfast.errors import HoldfastError, ModelFacingError
from holdfast.lm.types import LM, Completion, Message
from holdfast.rlm.budget import BudgetTracker, BudgetTrip
from holdfast.rlm.trace import CallCache, Tracer, call_key, completion_to_reply, reply_to_completion

PREVIEW = 400


class SubCallError(ModelFacingError):
    """A sub-call failed or was refused; the message is shown to the model in the box."""

    code = "sub_call_error"


@dataclass(frozen=True)
class BrokerLimits:
    """Concurrency and size limits of model calls made from code."""

    concurrency: int = 64
    per_model: dict[str, int] = field(default_factory=dict)
    max_prompt_chars: int = 400_000
    call_timeout_s: float | None = 300.0


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
    ) -> None:
        self.tracker = tracker
        self.full_prompts = full_prompts
        self.tracer = tracer
        self.limits = limits or BrokerLimits()
        self.cache = cache
        self._sem = asyncio.Semaphore(max(1, self.limits.concurrency))
        self._model_sems = {
            m: asyncio.Semaphore(max(1, n)) for m, n in self.limits.per_model.items()
        }
        self._tasks: set[asyncio.Task[Any]] = set()
        self.peak_in_flight = 0

    def prompt_limit(self, lm: LM) -> int:
        return self.limits.max_prompt_chars

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
            limit = self.prompt_limit(lm)
            if kind != "root_call" and prompt_chars > limit:
                raise SubCallError(
                    f"the prompt is {prompt_chars:,} characters; the limit for {lm.model} is "
                    f"{limit:,}. Split the text into chunks of at most {limit:,} characters and "
                    "call llm_batch over the chunks."
                )
            try:
                self.tracker.reserve_sub_call()
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
            self._charge(is_root, completion)
            record.update(reply=cached, cached=True, latency_s=0.0)
            self.tracer.event(trace_id, kind, record, iteration=iteration)
            return completion
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        t0 = time.perf_counter()
        try:
            completion = await self._limited(lm, messages, stop, response_format, max_tokens)
        except asyncio.CancelledError:
            record.update(error="cancelled", latency_s=round(time.perf_counter() - t0, 4))
            self.tracer.event(trace_id, kind, record, iteration=iteration)
            raise
        except BaseException as exc:
            if isinstance(exc, TimeoutError):
                message = f"timed out after {time.perf_counter() - t0:.2f} s"
            elif isinstance(exc, HoldfastError):
                message = exc.message
            else:
                message = f"{type(exc).__name__}: {exc}"
            record.update(error=message[:2000], latency_s=round(time.perf_counter() - t0, 4))
            self.tracer.event(trace_id, kind, record, iteration=iteration)
            if is_root or kind == "root_call":
                raise
            if isinstance(exc, TimeoutError):
                raise SubCallError(f"the sub-call to {lm.model} {message}") from None
            raise SubCallError(f"the sub-call to {lm.model} failed: {message[:500]}") from None
        finally:
            if task is not None:
                self._tasks.discard(task)
        reply = completion_to_reply(completion)
        record.update(reply=reply, latency_s=round(time.perf_counter() - t0, 4))
        if self.cache is not None:
            self.cache.put(key, lm.model, reply)
        try:
            self._charge(is_root, completion)
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
    ) -> Completion:
        model_sem = self._model_sems.get(lm.model)
        async with self._sem:
            if model_sem is not None:
                await model_sem.acquire()
            self.tracker.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.tracker.in_flight)
            try:
                timeout = self.limits.call_timeout_s
                remaining = self.tracker.remaining_s()
                if remaining is not None:
                    timeout = remaining if timeout is None else min(timeout, remaining)
                async with asyncio.timeout(timeout):
                    return await lm.acomplete(
                        messages, stop=stop, response_format=response_format, max_tokens=max_tokens
                    )
            finally:
                self.tracker.in_flight -= 1
                if model_sem is not None:
                    model_sem.release()

    def _charge(self, is_root: bool, completion: Completion) -> None:
        if is_root:
            self.tracker.charge_root(completion.usage)
        else:
            self.tracker.charge_sub(completion.usage)

    def cancel_all(self) -> int:
        """Cancel every model call in flight (wall time ran out or the job was cancelled)."""
        tasks = [t for t in self._tasks if not t.done()]
        for t in tasks:
            t.cancel()
        return len(tasks)
