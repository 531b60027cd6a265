"""The agent's model calls: cut off by the task's stop, pause or budget, and always charged.

Every turn's call runs on one event loop of the task (so connections are reused) under the
task's cancellation token: when a person stops or pauses the task, its lease is lost or its
wall-clock budget runs out, the call is cancelled as an asyncio task, which closes its HTTP
request, within a fraction of a second. Each call sends ``max_tokens`` and the per-attempt
timeout from the task's settings, and never outlives the task's remaining wall time.

What a call costs is charged to the task whatever its outcome: the reply's usage, else what the
model layer attached to the failure (an empty reply, attempts that timed out), else, for a call
cut off in flight, an estimate (the prompt's estimated tokens plus ``max_tokens``), named as such
in a ``model_call_cut_off`` receipt.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from holdfast.errors import BudgetExceeded, Cancelled, HoldfastError
from holdfast.harness.cancel import cut_off
from holdfast.lm._portal import LoopThread
from holdfast.lm.base import CallParams, attempt_estimate
from holdfast.lm.types import LM, Completion, Message, Usage, failed_usage

if TYPE_CHECKING:
    from holdfast.agent.settings import AgentSettings
    from holdfast.harness import StepContext
    from holdfast.rlm.pricing import JobPricing


class ModelCalls:
    """Makes the model calls of one attempt at an agent task."""

    def __init__(
        self, lm: LM, settings: AgentSettings, ctx: StepContext, pricing: JobPricing
    ) -> None:
        self.lm = lm
        self.settings = settings
        self.ctx = ctx
        self.pricing = pricing
        self._loop = LoopThread("holdfast-agent-calls")

    def priced(self, usage: Usage) -> Usage:
        """``usage`` with the task's prices (its own, or the estimate it opted in to)."""
        return self.pricing.cost(self.lm, usage)

    def complete(self, messages: list[Message], tools: list[dict[str, Any]]) -> Completion:
        """One turn's call; raises what ended it (a stop or pause as the harness's interrupt)."""
        ctx = self.ctx
        ctx.boundary()
        left = ctx.budget.remaining()["wall_s"]
        max_tokens = self.settings.max_output_tokens

        async def call() -> Completion:
            async with asyncio.timeout(left):
                return await ctx.cancel.guard(
                    _unless_draining(
                        ctx,
                        self.lm.acomplete(
                            messages,
                            tools=tools,
                            max_tokens=max_tokens,
                            timeout=self.settings.call_timeout_s,
                            metadata={"task_id": ctx.task_id, "kind": "agent_turn"},
                        ),
                    )
                )

        try:
            return self._loop.run(call())
        except _Drained as exc:  # the worker is shutting down: give the task back now
            self._cut_off(exc, messages, tools, "the worker is shutting down")
            ctx.boundary()
            raise
        except Cancelled as exc:
            self._cut_off(exc, messages, tools, ctx.cancel.reason or "cancelled")
            ctx.stop_here()
        except TimeoutError as exc:  # the task's wall time ran out during the call
            self._cut_off(exc, messages, tools, "the task's wall-clock budget ran out")
            ctx.boundary()
            raise BudgetExceeded(
                "the task's wall_s budget ran out during a model call",
                limit="wall_s",
                partial=ctx.state,
                trace_id=ctx.task_id,
                used=ctx.budget.used(),
            ) from None
        except HoldfastError as exc:
            lost = failed_usage(exc)
            if lost is not None:  # an empty reply, attempts that timed out: they cost too
                usage = self.priced(lost)
                ctx.spend(tokens=usage.total_tokens, usd=usage.cost_usd, save_every_s=0)
            raise

    def _cut_off(
        self, exc: BaseException, messages: list[Message], tools: list[dict[str, Any]], why: str
    ) -> None:
        lost = failed_usage(exc)
        if lost is None:
            lost = attempt_estimate(
                messages, CallParams(tools=tools, max_tokens=self.settings.max_output_tokens)
            )
        usage = self.priced(lost)
        self.ctx.spend(tokens=usage.total_tokens, usd=usage.cost_usd, save_every_s=0)
        with contextlib.suppress(Exception):  # the lease may be gone: the usage is saved anyway
            self.ctx.receipt(
                "model_call_cut_off",
                {
                    "reason": why,
                    "input_tokens": usage.input_tokens,
                    "output_tokens": usage.output_tokens,
                    "estimated_tokens": usage.estimated_tokens,
                    "usd": usage.cost_usd,
                },
            )

    def close(self) -> None:
        """Close the model's connections on this loop, then the loop."""
        closer = getattr(self.lm, "aclose", None)
        if callable(closer) and self._loop.loop is not None:
            with contextlib.suppress(Exception):
                self._loop.run(closer())
        self._loop.stop()


class _Drained(Cancelled):
    """A model call cut off because the worker is shutting down."""


async def _unless_draining(ctx: StepContext, call: Awaitable[Completion]) -> Completion:
    """``call``, cut off when the worker starts shutting down (checked every 0.1 s)."""
    work = asyncio.ensure_future(call)
    try:
        while True:
            done, _ = await asyncio.wait({work}, timeout=0.1)
            if done:
                return work.result()
            if ctx.draining:
                break
    except BaseException:
        work.cancel()
        raise
    drained = _Drained("the worker is shutting down")
    await cut_off(work, drained)
    raise drained
