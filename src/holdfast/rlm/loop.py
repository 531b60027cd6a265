"""One RLM run: a box with the inputs loaded, and the loop that drives it.

The loop reads top to bottom: ask the root model for one turn, run the first code block, feed the
output back (cut head and tail), until ``SUBMIT`` (or ``answer["ready"]``) yields an answer that
fits the signature or a budget ends. Budgets are checked in one place (the tracker) and a tripped
budget interrupts a running cell at once (:meth:`Run.guarded`).
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from holdfast.lm.types import Message
from holdfast.rlm.budget import BudgetTrip
from holdfast.rlm.inputs import JobInput, spill_path
from holdfast.rlm.parse import STOP, extract_code, truncate_middle
from holdfast.rlm.prelude import prelude_with_dirs
from holdfast.rlm.prompts import FINAL_TURN, build_feedback, build_first_turn, build_system_prompt
from holdfast.rlm.signature import Signature, SubmitError
from holdfast.sandbox.types import CellResult, HostFunctionSpec, Sandbox

if TYPE_CHECKING:
    from holdfast.rlm.job import Job


@dataclass
class Run:
    """The state of one run (the root or a child) of a job."""

    job: Job
    query: str
    inputs: list[JobInput]
    signature: Signature
    depth: int = 0
    parent_id: str | None = None
    trace_id: str = field(default_factory=lambda: "rlm-" + uuid.uuid4().hex[:20])
    sandbox: Sandbox | None = None
    iteration: int = 0
    submitted: BaseModel | None = None
    partial: Any = None
    last_output: str = ""
    tmpdir: tempfile.TemporaryDirectory[str] | None = None
    mode: str = "rlm"
    answer_touched: bool = False
    prelude_code: str = ""

    # ----- the loop ---------------------------------------------------------------------------

    async def loop(self) -> BaseModel:
        """Drive the root model until an answer fits the signature; raise BudgetTrip if not."""
        job = self.job
        max_it = job.budget.max_iterations
        messages: list[Message] = [
            {"role": "system", "content": self.system_prompt()},
            {
                "role": "user",
                "content": build_first_turn(self.query, self.inputs, self.signature, max_it),
            },
        ]
        if max_it == 1:
            messages[-1]["content"] += "\n\n" + FINAL_TURN
        logged = 0
        final = max_it == 1
        for turn in range(1, max_it + 1):
            self.iteration = turn
            completion = await self.guarded(
                job.broker.call(
                    job.root_lm,
                    messages,
                    trace_id=self.trace_id,
                    iteration=turn,
                    depth=self.depth,
                    kind="root_call",
                    stop=STOP,
                    max_tokens=job.root_max_tokens,
                    log_messages=messages[logged:],
                )
            )
            logged = len(messages) + 1
            block = extract_code(completion.text)
            sent = completion.text
            if block.unclosed and block.code is not None:
                sent = sent.rstrip() + "\n```"
            messages.append({"role": "assistant", "content": sent})
            output = ""
            cell: CellResult | None = None
            if block.code is not None:
                cell = await self.execute(block.code)
                output = self.format_cell(cell)
            self.last_output = output[-2000:]
            note = block.note
            answer = self.submitted
            if block.code is not None and "answer" in block.code:
                self.answer_touched = True
            if answer is None and block.code is not None and self.answer_touched:
                answer, compat_note = await self.check_answer_var()
                note = compat_note or note
            job.tracer.event(
                self.trace_id,
                "iteration",
                {
                    "turn": turn,
                    "code": block.code,
                    "output": output,
                    "note": note,
                    "cell_s": round(cell.duration_s, 4) if cell else None,
                    "timed_out": bool(cell and cell.timed_out),
                    "submitted": answer is not None,
                    "budget": job.tracker.snapshot(),
                },
                iteration=turn,
            )
            if answer is not None:
                return answer
            job.tracker.check()
            if final:
                break
            final = turn + 1 == max_it or job.tracker.near_end()
            messages.append(
                {
                    "role": "user",
                    "content": build_feedback(
                        output=output,
                        note=note,
                        turn=turn + 1,
                        max_iterations=max_it,
                        budget=job.tracker.snapshot(),
                        final=final,
                    ),
                }
            )
        if self.iteration >= max_it:
            raise BudgetTrip(
                "iterations",
                f"the run used its {self.iteration} iterations without submitting an answer",
            )
        limit = job.tracker.nearest_limit()
        raise BudgetTrip(
            limit, f"the {limit} budget is nearly used up and the final turn did not submit"
        )

    def system_prompt(self) -> str:
        job = self.job
        return build_system_prompt(
            signature=self.signature,
            output_cap=job.output_cap,
            max_prompt_chars=job.broker.limits.max_prompt_chars,
            depth=self.depth,
            max_depth=job.max_depth,
            tools=[(t.name, t.description) for t in job.tools],
            template=job.system_prompt,
        )

    async def guarded(self, awaitable: Any) -> Any:
        """Await ``awaitable`` but stop it the moment a budget trips or the job is cancelled."""
        task = asyncio.ensure_future(awaitable)
        trip = self.job.tracker.tripped_future()
        try:
            await asyncio.wait({task, trip}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            task.cancel()
            raise
        if task.done():
            try:
                return task.result()
            except TimeoutError:
                self.job.tracker.check()
                raise
        task.cancel()
        self.job.broker.cancel_all()
        with contextlib.suppress(BaseException):
            await task
        raise trip.result()

    async def execute(self, code: str) -> CellResult:
        assert self.sandbox is not None
        timeout = self.sandbox.policy.cell_timeout_s
        remaining = self.job.tracker.remaining_s()
        if remaining is not None:
            timeout = max(0.05, min(timeout, remaining))
        result: CellResult = await self.guarded(self.sandbox.execute(code, timeout=timeout))
        if result.timed_out or (result.error is not None and result.error.type == "SandboxDied"):
            # The box restarted with its JSON-safe variables: define the REPL functions again.
            await self.guarded(self.sandbox.execute(self.prelude_code, timeout=30))
        return result

    def format_cell(self, cell: CellResult) -> str:
        parts = []
        if cell.stdout:
            parts.append(cell.stdout.rstrip("\n"))
        if cell.value_repr is not None:
            parts.append(cell.value_repr)
        if cell.stderr:
            parts.append("[stderr]\n" + cell.stderr.rstrip("\n"))
        if cell.error is not None:
            parts.append(
                (cell.error.traceback or f"{cell.error.type}: {cell.error.message}").rstrip()
            )
        if cell.timed_out:
            parts.append(f"[the cell was stopped after {cell.duration_s:.1f} s: time limit]")
        if cell.fatal:
            parts.append("[the REPL died; variables were lost]")
        text, _ = truncate_middle("\n".join(parts), self.job.output_cap)
        return text

    async def check_answer_var(self) -> tuple[BaseModel | None, str | None]:
        """The compatibility path: ``answer = {"content": ..., "ready": True}`` ends the run."""
        assert self.sandbox is not None
        try:
            value = await self.sandbox.get("answer")
        except Exception:
            return None, None
        if not isinstance(value, dict) or value.get("ready") is not True:
            if isinstance(value, dict) and value.get("content") is not None:
                self.partial = value.get("content")
            return None, None
        content = value.get("content")
        try:
            fields = self.signature.coerce_submission([content], {})
            accepted = self.signature.validate(fields)
        except SubmitError as exc:
            self.partial = content
            return None, f"answer['ready'] is True but the answer was not accepted: {exc}"
        self.job.tracer.event(
            self.trace_id, "submit", {"ok": True, "via": "answer"}, iteration=self.iteration
        )
        return accepted, None

    # ----- the box ----------------------------------------------------------------------------

    async def open_box(self) -> None:
        """Start this run's box, register the REPL functions, load the inputs once."""
        job = self.job
        box = job.open_sandbox()
        for spec in self.host_functions():
            box.register(spec)
        for tool in job.tools:
            box.register(tool)
        self.sandbox = box
        await box.start()
        self.tmpdir = tempfile.TemporaryDirectory(prefix="holdfast-rlm-")
        dirs: dict[str, list[tuple[str, int]]] = {}
        decode: list[str] = []
        for item in self.inputs:
            if item.kind == "dir":
                dirs[item.name] = item.files
            elif item.kind == "file":
                assert item.path is not None
                await load_path(box, item.name, item.path, binary=item.binary)
            else:
                spilled = spill_path(item, Path(self.tmpdir.name))
                if spilled is not None:
                    await load_path(box, item.name, spilled, binary=item.kind == "bytes")
                    spilled.unlink()
                    if item.kind == "json":
                        decode.append(item.name)
                else:
                    await box.load(item.name, item.value)
        self.prelude_code = prelude_with_dirs(dirs, decode)
        prelude = await box.execute(self.prelude_code, timeout=30)
        if not prelude.ok:
            detail = prelude.error.message if prelude.error else "timed out"
            raise RuntimeError(f"the REPL prelude failed: {detail}")

    async def close_box(self) -> None:
        if self.sandbox is not None:
            with contextlib.suppress(Exception):
                await self.sandbox.shutdown()
        if self.tmpdir is not None:
            self.tmpdir.cleanup()

    def host_functions(self) -> list[HostFunctionSpec]:
        fns = self.job.functions_for(self)
        return [
            HostFunctionSpec(name=f"_hf_{name}", fn=fn, schema=_schema(params), description=name)
            for name, (fn, params) in fns.items()
        ]


def _schema(params: list[str]) -> dict[str, Any]:
    return {"type": "object", "properties": {p: {} for p in params}}


async def load_path(box: Sandbox, name: str, path: Path, *, binary: bool) -> None:
    """Load a file by descriptor; as bytes when it is not UTF-8 text (if the box supports it)."""
    if binary:
        try:
            await box.load(name, path=path, mode="bytes")  # type: ignore[call-arg]
            return
        except TypeError:
            pass
    await box.load(name, path=path)
