"""The router: small inputs get one direct model call instead of the loop.

RLMs do worse than the plain model on short inputs, so below a threshold (about 50,000
characters) ``mode="auto"`` inlines the inputs into one prompt and asks for the outputs as JSON.
A direct reply that does not fit the signature falls back to the loop in ``auto`` mode.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel

from holdfast.errors import InvalidInput, RuntimeFailure
from holdfast.lm.errors import EmptyResponse
from holdfast.rlm.budget import BudgetTrip
from holdfast.rlm.inputs import JobInput, inline_text
from holdfast.rlm.job import parse_json_reply
from holdfast.rlm.prompts import direct_prompt
from holdfast.rlm.signature import Signature, SubmitError, outputs_to_jsonable

if TYPE_CHECKING:
    from holdfast.rlm.job import Job
    from holdfast.rlm.loop import Run


class DirectAnswerInvalid(RuntimeFailure):
    """A direct reply that does not fit the signature."""

    code = "direct_answer_invalid"


def choose_mode(mode: str, items: list[JobInput], threshold_chars: int) -> Literal["rlm", "direct"]:
    """``rlm`` or ``direct`` for these inputs under ``mode`` (auto, rlm, direct)."""
    if mode == "rlm":
        return "rlm"
    inlinable = all(
        i.kind in ("text", "json") or (i.kind == "file" and not i.binary) for i in items
    )
    if mode == "direct":
        if not inlinable:
            raise InvalidInput("mode='direct' needs text or JSON inputs (not bytes or directories)")
        return "direct"
    small = sum(i.size for i in items) < threshold_chars
    return "direct" if small and inlinable else "rlm"


def parse_direct(sig: Signature, text: str) -> BaseModel:
    """The outputs from a direct reply: its JSON object, or the whole text for one str output."""
    try:
        data = parse_json_reply(text)
        if not isinstance(data, dict):
            raise SubmitError("the reply is not a JSON object")
        return sig.validate(sig.coerce_submission([], data))
    except Exception as exc:
        if len(sig.outputs) == 1 and sig.outputs[0].type_text == "str":
            return sig.validate({sig.outputs[0].name: text.strip()})
        raise DirectAnswerInvalid(f"the direct answer does not fit {sig}: {exc}") from None


async def answer_directly(job: Job, run: Run, max_tokens: int | None) -> BaseModel:
    """One model call with the inputs inlined, traced as a one-iteration run."""
    run.mode = "direct"
    if job.start_run is not None:
        job.start_run(run)
    status = "error"
    result: dict[str, Any] = {}
    try:
        prompt = direct_prompt(run.query, inline_text(run.inputs) or "", run.signature)
        run.iteration = 1
        completion = await run.guarded(
            job.broker.call(
                job.root_lm,
                [{"role": "user", "content": prompt}],
                trace_id=run.trace_id,
                iteration=1,
                depth=0,
                kind="root_call",
                max_tokens=max_tokens,
                log_messages=[
                    {"role": "user", "content": f"<{len(prompt):,} chars: inputs inlined>"}
                ],
            )
        )
        answer = parse_direct(run.signature, completion.text)
        status, result = "ok", {"outputs": outputs_to_jsonable(answer)}
        return answer
    except EmptyResponse as exc:
        result = {"error": exc.message}
        raise DirectAnswerInvalid(f"the direct answer was empty: {exc.message}") from None
    except BudgetTrip as trip:
        status = "cancelled" if trip.limit == "cancelled" else "budget_exceeded"
        result = {"limit": trip.limit, "message": trip.message}
        raise
    except asyncio.CancelledError:
        status = "cancelled"
        raise
    except DirectAnswerInvalid as exc:
        result = {"error": exc.message}
        raise
    finally:
        result.update(iterations=1, mode="direct")
        if job.finish_run is not None:
            job.finish_run(run, status, result)
