"""A job: the tree of runs that answers one query, and the REPL functions they call.

Everything a job shares across its depths lives here: the budget tracker, the broker (one
concurrency limit for all depths), the tracer, the models, the user's tools. Each run gets the REPL
functions bound to itself (``llm_query``, ``llm_batch``, ``rlm_query``, ``predict``, ``SUBMIT``,
reading a directory input); ``rlm_query`` starts a child run with its own box, one level deeper.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from holdfast.errors import HoldfastError
from holdfast.lm.types import LM, Message
from holdfast.rlm.broker import Broker, SubCallError
from holdfast.rlm.budget import Budget, BudgetTracker, BudgetTrip, SubCallsUsedUp
from holdfast.rlm.inputs import prepare_inputs, read_dir_file, scan_file
from holdfast.rlm.loop import Run
from holdfast.rlm.signature import (
    Signature,
    SubmitError,
    format_validation_error,
    outputs_to_jsonable,
    parse_signature,
)
from holdfast.rlm.trace import Tracer
from holdfast.sandbox.types import HostFunctionSpec, Sandbox

_JSON_OBJECT = re.compile(r"\{.*\}", re.S)


@dataclass
class Job:
    """State shared by every run of one job tree."""

    root_lm: LM
    sub_lm: LM
    models: dict[str, LM]
    budget: Budget
    tracker: BudgetTracker
    broker: Broker
    tracer: Tracer
    open_sandbox: Callable[[], Sandbox]
    max_depth: int
    tools: list[HostFunctionSpec] = field(default_factory=list)
    output_cap: int = 8_000
    root_max_tokens: int | None = 4_096
    sub_max_tokens: int | None = 4_096
    cell_timeout_s: float | None = None
    system_prompt: str | None = None
    max_input_bytes: int = 1 << 30
    start_run: Callable[[Run], None] | None = None
    finish_run: Callable[[Run, str, dict[str, Any]], None] | None = None
    heartbeat: Callable[[], None] | None = None

    # ----- REPL functions bound to one run ----------------------------------------------------

    def functions_for(self, run: Run) -> dict[str, tuple[Callable[..., Any], list[str]]]:
        async def llm_query(prompt: Any, model: Any = None, schema: Any = None) -> Any:
            return await self.sub_query(run, prompt, model, schema)

        async def llm_batch(prompts: Any, model: Any = None, schema: Any = None) -> list[Any]:
            if not isinstance(prompts, list):
                raise SubCallError("llm_batch takes a list of prompt strings")
            left = self.tracker.sub_calls_left()
            if left is not None and len(prompts) > left:
                limit = self.budget.max_sub_calls
                raise SubCallError(
                    f"llm_batch got {len(prompts):,} prompts, but only {left:,} sub-calls are "
                    f"left in this job's budget of {limit:,}; no call was made. Send at most "
                    f"{left:,} prompts (put more text in each), or SUBMIT from what you have."
                )

            async def one(p: Any) -> Any:
                try:
                    return await self.sub_query(run, p, model, schema)
                except (SubCallError, BudgetTrip) as exc:
                    return {"error": str(exc)}

            return list(await asyncio.gather(*(one(p) for p in prompts)))

        async def rlm_query(prompt: Any, inputs: Any = None) -> Any:
            return await self.child(run, prompt, inputs or {})

        async def predict(signature: Any, inputs: Any = None) -> dict[str, Any]:
            return await self.predict(run, signature, inputs or {})

        def submit(args: Any = None, fields: Any = None) -> str:
            try:
                values = run.signature.coerce_submission(list(args or []), dict(fields or {}))
                run.partial = values
                run.submitted = run.signature.validate(values)
            except SubmitError as exc:
                self.tracer.event(
                    run.trace_id,
                    "submit",
                    {"ok": False, "error": str(exc)},
                    iteration=run.iteration,
                )
                raise SubCallError(f"SUBMIT was not accepted: {exc}") from None
            self.tracer.event(
                run.trace_id, "submit", {"ok": True, "via": "SUBMIT"}, iteration=run.iteration
            )
            return "accepted"

        def read_input(name: Any, path: Any, offset: Any = 0, length: Any = 4_000_000) -> str:
            item = next((i for i in run.inputs if i.name == name and i.kind == "dir"), None)
            if item is None:
                raise SubCallError(f"{name!r} is not a directory input")
            try:
                return read_dir_file(item, str(path), int(offset), int(length))
            except (ValueError, OSError) as exc:
                raise SubCallError(str(exc)) from None

        fns: dict[str, tuple[Callable[..., Any], list[str]]] = {
            "llm_query": (llm_query, ["prompt", "model", "schema"]),
            "llm_batch": (llm_batch, ["prompts", "model", "schema"]),
            "rlm_query": (rlm_query, ["prompt", "inputs"]),
            "predict": (predict, ["signature", "inputs"]),
            "submit": (submit, ["args", "fields"]),
            "read_input": (read_input, ["name", "path", "offset", "length"]),
        }
        return {name: (run.waiting(fn), params) for name, (fn, params) in fns.items()}

    # ----- sub-calls --------------------------------------------------------------------------

    def pick_model(self, model: Any) -> LM:
        if model is None:
            return self.sub_lm
        lm = self.models.get(str(model))
        if lm is None:
            raise SubCallError(f"unknown model {model!r}; available: {sorted(self.models)}")
        return lm

    async def sub_query(self, run: Run, prompt: Any, model: Any, schema: Any) -> Any:
        if not isinstance(prompt, str):
            raise SubCallError(f"a prompt must be a str, not {type(prompt).__name__}")
        lm = self.pick_model(model)
        response_format = None
        validator: Signature | None = None
        if schema is not None:
            if isinstance(schema, str):
                validator = parse_signature_safe("-> " + schema if "->" not in schema else schema)
                json_schema = validator.json_schema()
            elif isinstance(schema, dict):
                json_schema = schema
            else:
                raise SubCallError(
                    "schema must be a JSON schema dict or a string like 'a: int, b: str'"
                )
            response_format = {
                "type": "json_schema",
                "json_schema": {"name": "output", "schema": json_schema},
            }
        messages: list[Message] = [{"role": "user", "content": prompt}]
        completion = await self.broker.call(
            lm,
            messages,
            trace_id=run.trace_id,
            iteration=run.iteration,
            depth=run.depth + 1,
            response_format=response_format,
            max_tokens=self.sub_max_tokens,
        )
        if schema is None:
            return completion.text
        data = parse_json_reply(completion.text)
        if validator is not None:
            try:
                return outputs_to_jsonable(validator.model.model_validate(data))
            except ValidationError as exc:
                raise SubCallError(format_validation_error(exc, validator)) from None
        return data

    async def predict(self, run: Run, signature: Any, inputs: dict[str, Any]) -> dict[str, Any]:
        sig = parse_signature_safe(str(signature))
        missing = [f.name for f in sig.inputs if f.name not in inputs]
        if missing:
            raise SubCallError(f"predict({sig}) is missing inputs {missing}")
        body = "\n\n".join(
            f"<{k}>\n{v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)}\n</{k}>"
            for k, v in inputs.items()
        )
        outs = ", ".join(f'"{f.name}": <{f.type_text}>' for f in sig.outputs)
        prompt = (
            f"{body}\n\nFrom the inputs above, produce the outputs as a JSON object {{{outs}}}."
        )
        messages: list[Message] = [{"role": "user", "content": prompt}]
        response_format = {
            "type": "json_schema",
            "json_schema": {"name": "output", "schema": sig.json_schema()},
        }
        last_error = ""
        for _ in range(2):
            completion = await self.broker.call(
                self.sub_lm,
                messages,
                trace_id=run.trace_id,
                iteration=run.iteration,
                depth=run.depth + 1,
                response_format=response_format,
                max_tokens=self.sub_max_tokens,
            )
            try:
                return outputs_to_jsonable(
                    sig.model.model_validate(parse_json_reply(completion.text))
                )
            except (ValidationError, SubCallError) as exc:
                last_error = (
                    format_validation_error(exc, sig)
                    if isinstance(exc, ValidationError)
                    else str(exc)
                )
                messages = [
                    *messages,
                    {"role": "assistant", "content": completion.text},
                    {
                        "role": "user",
                        "content": f"That did not fit: {last_error}\nReply with the JSON object only.",
                    },
                ]
        raise SubCallError(f"predict could not get valid outputs: {last_error}")

    async def child(self, parent: Run, prompt: Any, inputs: dict[str, Any]) -> Any:
        if parent.depth + 1 > self.max_depth:
            raise SubCallError(
                f"rlm_query is not available at depth {parent.depth}: the depth limit is "
                f"{self.max_depth}. Use llm_query or llm_batch instead."
            )
        if not isinstance(prompt, str) or not prompt.strip():
            raise SubCallError("rlm_query needs a non-empty prompt string")
        if not isinstance(inputs, dict):
            raise SubCallError("rlm_query takes its inputs as keyword arguments")
        # The child's query goes into its root model's prompt (and its trace): the same size
        # guard as any sub-call, before anything is stored; big text belongs in its inputs.
        try:
            self.broker.check_prompt(
                self.root_lm, prompt, self.root_max_tokens, what="the rlm_query prompt"
            )
        except SubCallError as exc:
            raise SubCallError(
                f"{exc.message} Or pass the text as an input, which stays in the child's REPL: "
                "rlm_query('what to do with text', text=big_text)."
            ) from None
        try:
            items = prepare_inputs(inputs, max_input_bytes=self.max_input_bytes)
        except HoldfastError as exc:
            raise SubCallError(exc.message) from None
        try:
            self.tracker.take_sub_call()
        except SubCallsUsedUp as exc:
            raise SubCallError(f"rlm_query refused: {exc}") from None
        except BudgetTrip as trip:
            raise SubCallError(f"rlm_query refused: {trip.message}") from None
        run = Run(
            job=self,
            query=prompt,
            inputs=items,
            signature=parse_signature(None, strict=parent.signature.strict),
            depth=parent.depth + 1,
            parent_id=parent.trace_id,
        )
        answer = await self.execute_run(run)
        if isinstance(answer, BudgetTrip):
            raise SubCallError(f"the child run ended without an answer: {answer.message}")
        return outputs_to_jsonable(answer)["answer"]

    async def execute_run(self, run: Run) -> BaseModel | BudgetTrip:
        """Open the run's box, loop, close; a child's own iteration limit comes back as a value."""
        if self.start_run is not None:
            self.start_run(run)
        status = "error"
        result: dict[str, Any] = {}
        try:
            for item in run.inputs:
                scan_file(item, self.max_input_bytes)
            await run.open_box()
            answer = await run.loop()
            status, result = "ok", {"outputs": outputs_to_jsonable(answer)}
            return answer
        except BudgetTrip as trip:
            status = "cancelled" if trip.limit == "cancelled" else "budget_exceeded"
            result = {
                "limit": trip.limit,
                "message": trip.message,
                "partial": _jsonable(run.partial),
            }
            if run.depth > 0 and trip is not self.tracker.trip:
                return trip
            raise
        except asyncio.CancelledError:
            status = "cancelled"
            raise
        except BaseException as exc:
            result = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
            raise
        finally:
            await run.close_box()
            result.update(iterations=run.iteration, budget=self.tracker.snapshot())
            if self.finish_run is not None:
                self.finish_run(run, status, result)


def parse_signature_safe(text: str) -> Signature:
    try:
        return parse_signature(text)
    except HoldfastError as exc:
        raise SubCallError(exc.message) from None


def parse_json_reply(text: str) -> Any:
    """The JSON object in a model reply (bare, fenced, or amid prose)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        m = _JSON_OBJECT.search(text)
        if m is not None:
            try:
                return json.loads(m.group(0))
            except json.JSONDecodeError:
                pass
    raise SubCallError(f"the sub-model did not reply with JSON: {text[:200]!r}")


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return repr(value)[:2000]
