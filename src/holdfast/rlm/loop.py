"""One RLM run: a box with the inputs loaded, and the loop that drives it.

The loop reads top to bottom: ask the root model for one turn, run the first code block, feed the
output back (cut head and tail), until ``SUBMIT`` (or ``answer["ready"]``) yields an answer that
fits the signature or a budget ends. Budgets are checked in one place (the tracker) and a tripped
budget interrupts a running cell at once (:meth:`Run.guarded`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from holdfast.lm.errors import EmptyResponse
from holdfast.lm.types import Completion, Message
from holdfast.rlm.budget import BudgetTrip
from holdfast.rlm.errors import PreludeFailed
from holdfast.rlm.inputs import JobInput, spill_path
from holdfast.rlm.parse import STOP, extract_code, truncate_middle
from holdfast.rlm.prelude import prelude_with_dirs
from holdfast.rlm.prompts import FINAL_TURN, build_feedback, build_first_turn, build_system_prompt
from holdfast.rlm.signature import Signature, SubmitError
from holdfast.sandbox.types import CellError, CellResult, HostFunctionSpec, Sandbox

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
    _host_calls: int = 0
    _waiting_since: float | None = None
    _waited: float = 0.0
    _host_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

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
        empty = 0
        for turn in range(1, max_it + 1):
            self.iteration = turn
            completion = await self.root_turn(messages, turn, logged)
            code: str | None = None
            output, note, cell, answer = "", None, None, None
            if completion.text.strip():
                empty = 0
                logged = len(messages) + 1
                block = extract_code(completion.text)
                sent = completion.text
                if block.unclosed and block.code is not None:
                    sent = sent.rstrip() + "\n```"
                messages.append({"role": "assistant", "content": sent})
                code, note = block.code, block.note
                if code is not None:
                    cell = await self.execute(code)
                    output = self.format_cell(cell)
                self.last_output = output[-2000:]
                answer = self.submitted
                if code is not None and "answer" in code:
                    self.answer_touched = True
                if answer is None and code is not None and self.answer_touched:
                    answer, compat_note = await self.check_answer_var()
                    note = compat_note or note
            else:
                # What a reasoning model returns when thinking used up max_tokens: charged, told,
                # asked again (a bounded number of times) instead of losing the run's work.
                logged = len(messages)
                empty += 1
                reason = _empty_reason(completion, job.root_max_tokens)
                if empty > job.budget.max_empty_replies:
                    raise BudgetTrip(
                        "empty_replies",
                        f"the root model returned {empty} empty replies in a row{reason}",
                    )
                note = EMPTY_REPLY_NOTE.format(reason=reason)
            job.tracer.event(
                self.trace_id,
                "iteration",
                {
                    "turn": turn,
                    "code": code,
                    "output": output,
                    "note": note,
                    "cell_s": round(cell.duration_s, 4) if cell else None,
                    "timed_out": bool(cell and cell.timed_out),
                    "submitted": answer is not None,
                    "empty_reply": empty or None,
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

    async def root_turn(self, messages: list[Message], turn: int, logged: int) -> Completion:
        """One call of the root model; an empty reply comes back as a completion with no text."""
        job = self.job
        try:
            completion: Completion = await self.guarded(
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
        except EmptyResponse as exc:
            reason = exc.details.get("finish_reason")
            return Completion(text="", finish_reason=reason if isinstance(reason, str) else None)
        return completion

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
        tracker = self.job.tracker
        if task.done() and not (task.cancelled() and tracker.trip is not None):
            try:
                return task.result()
            except TimeoutError:
                tracker.check()
                raise
        task.cancel()
        self.job.broker.cancel_all()
        with contextlib.suppress(BaseException):
            await task
        if tracker.trip is not None:  # set before the waiter wakes (and before calls are cut)
            raise tracker.trip
        raise trip.result()

    async def execute(self, code: str) -> CellResult:
        assert self.sandbox is not None
        limit = self.job.cell_timeout_s or self.sandbox.policy.cell_timeout_s
        result: CellResult = await self.guarded(self.timed_cell(code, limit))
        if result.timed_out or (result.error is not None and result.error.type == "SandboxDied"):
            # The box restarted with its JSON-safe variables: define the REPL functions again.
            await self.guarded(self.sandbox.execute(self.prelude_code, timeout=30))
        return result

    async def timed_cell(self, code: str, limit: float) -> CellResult:
        """Run a cell under its time limit, not counting the time it waits for host calls.

        A cell that waits for sub-calls on a slow server is not running away; only its own time
        counts against ``limit``. The wall-time budget still bounds the whole cell.
        """
        assert self.sandbox is not None
        remaining = self.job.tracker.remaining_s()
        # The box's own deadline is only a backstop: the clock below decides.
        backstop = (remaining if remaining is not None else limit * 1000) + 5.0
        started = _now()
        waited_before = self.waited_s(started)
        task = asyncio.ensure_future(self.sandbox.execute(code, timeout=backstop))
        try:
            while True:
                now = _now()
                own = (now - started) - (self.waited_s(now) - waited_before)
                if own >= limit:
                    break
                done, _ = await asyncio.wait({task}, timeout=limit - own)
                if done:
                    return task.result()
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            return CellResult(
                error=CellError(
                    "TimeoutError",
                    f"the cell ran past its {limit:g} s time limit (time spent waiting for "
                    "sub-calls not counted) and was stopped; the REPL was restarted from its "
                    "last snapshot of JSON-safe variables",
                    "",
                ),
                duration_s=_now() - started,
                timed_out=True,
            )
        finally:
            if not task.done():
                task.cancel()

    # ----- time a cell spends waiting on the host -------------------------------------------

    def waiting(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn`` (a REPL function run on the host) with the cell's wait for it clocked."""
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                self._enter_host()
                try:
                    return await fn(*args, **kwargs)
                finally:
                    self._leave_host()

            return run_async

        @functools.wraps(fn)
        def run_sync(*args: Any, **kwargs: Any) -> Any:
            self._enter_host()
            try:
                return fn(*args, **kwargs)
            finally:
                self._leave_host()

        return run_sync

    def _enter_host(self) -> None:
        with self._host_lock:
            if self._host_calls == 0:
                self._waiting_since = _now()
            self._host_calls += 1

    def _leave_host(self) -> None:
        with self._host_lock:
            self._host_calls = max(0, self._host_calls - 1)
            if self._host_calls == 0 and self._waiting_since is not None:
                self._waited += _now() - self._waiting_since
                self._waiting_since = None

    def waited_s(self, now: float) -> float:
        """Seconds this run's cells spent waiting on host calls, up to ``now`` (monotonic)."""
        with self._host_lock:
            since = self._waiting_since
            ongoing = 0.0 if since is None else max(0.0, now - since)
            return self._waited + ongoing

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
            raise PreludeFailed(
                f"the REPL could not be set up (its prelude failed: {detail})",
                trace_id=self.trace_id,
            )

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


EMPTY_REPLY_NOTE = (
    "[Holdfast] Your last reply was empty{reason}. Reply with a short thought and exactly one "
    "```python block (think less before writing the code)."
)


def _empty_reason(completion: Completion, max_tokens: int | None) -> str:
    if completion.finish_reason == "length":
        limit = f" of {max_tokens:,}" if max_tokens else ""
        return (
            f" (finish_reason=length: it hit the max_tokens limit{limit}, which reasoning may "
            "have used up)"
        )
    if completion.finish_reason:
        return f" (finish_reason={completion.finish_reason})"
    return ""


def _now() -> float:
    return time.monotonic()


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
