"""The long-task agent: a tool-calling model inside a virtual session, on a harness task.

One turn: read steering, let the session prune and roll over if due, call the model with the
session's prompt, record the reply and its token usage, then run each tool call through the
harness's step contract (intent receipt, permission gate, effect, result receipt) and record its
result under a short id. The loop ends when the model calls ``finish``; a model that never does
runs out of ``max_turns`` and the task fails with a budget error carrying the working set.

Everything the next prompt depends on is in the store before the next step, so a worker that
resumes the task (after a crash, a pause, an approval) first completes the tool calls of the last
reply, then rebuilds exactly the prompt the dead worker would have sent.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from holdfast.agent import builtins
from holdfast.agent.calls import ModelCalls
from holdfast.agent.env import Analyzer, MemoryAccess, ToolEnv
from holdfast.agent.follow import FOLLOWS_TASK, follow_task
from holdfast.agent.prompts import ROLLOVER_NOTICE, SYSTEM_PROMPT
from holdfast.agent.settings import AgentSettings
from holdfast.agent.tools import Tool, ToolBox
from holdfast.agent.workspace import Workspace
from holdfast.errors import BudgetExceeded, InvalidInput, ModelFacingError
from holdfast.lm.errors import ContextOverflow, EmptyResponse, ProviderRejected
from holdfast.lm.types import LM
from holdfast.session import FlushItem, MemoryPolicy, VirtualSession, open_session_store

if TYPE_CHECKING:
    from holdfast.harness import StepContext
    from holdfast.rlm.pricing import JobPricing

Event = dict[str, Any]
LMFactory = Callable[[AgentSettings], LM]
MemoryFactory = Callable[[AgentSettings, str, str], "MemoryAccess | None"]
AnalyzerFactory = Callable[[AgentSettings, LM], "Analyzer | None"]


@dataclass
class Agent:
    """Runs agent tasks; ``agent_kind()`` wraps one as the harness task kind ``agent``."""

    lm_factory: LMFactory
    tools: Sequence[Tool] = ()
    memory_factory: MemoryFactory | None = None
    analyzer_factory: AnalyzerFactory | None = None
    memory_policy: MemoryPolicy | None = None
    db_path: Path | None = None
    on_event: Callable[[Event], None] | None = None

    def toolbox(self, settings: AgentSettings, *, memory: bool, analyze: bool) -> ToolBox:
        box = ToolBox(builtins.WORKING_SET_TOOLS + builtins.CONTEXT_TOOLS + builtins.FILE_TOOLS)
        for t in (builtins.memory_tools() if memory else ()) + (
            builtins.ANALYZE_TOOLS if analyze else ()
        ):
            box.add(t)
        for t in self.tools:
            box.add(t)
        box.add(builtins.FINISH_TOOL)
        return box

    # -- the runner ------------------------------------------------------------------------

    def run(self, ctx: StepContext) -> dict[str, Any]:
        settings = AgentSettings.from_input(ctx.input)
        workspace = Workspace(ctx.workspace) if ctx.workspace else None
        vs = self._session(ctx, settings, workspace)
        memory = self._memory(settings, ctx, vs)
        lm = self.lm_factory(settings)
        analyzer = (
            self.analyzer_factory(settings, lm)
            if settings.analyze and self.analyzer_factory
            else None
        )
        unfollow = follow_task(ctx.store.backend, lm, analyzer)  # traces, calls: task's store
        box = self.toolbox(settings, memory=memory is not None, analyze=analyzer is not None)
        run = _Run(ctx, vs, box, workspace, memory, analyzer)
        calls = ModelCalls(lm, settings, ctx, _pricing(ctx, settings, lm, analyzer))
        try:
            return self._turns(run, settings, calls)
        finally:
            calls.close()
            for resource in (lm, memory, analyzer):
                close = getattr(resource, "close", None)
                if callable(close):
                    close()
            unfollow()
            vs.store.close()

    def _turns(self, run: _Run, settings: AgentSettings, calls: ModelCalls) -> dict[str, Any]:
        """The turn loop proper (see the module docstring)."""
        ctx, vs = run.ctx, run.vs
        schemas = run.box.schemas()
        result = run.calls()
        idle = 0
        while result is None:
            for message in ctx.steering():
                vs.add_user_message(f"[message from a person, via steering] {message}")
            if vs.turn >= settings.max_turns:
                raise _out_of_turns(vs, settings)
            plan = vs.begin_turn(
                schemas, notice=ROLLOVER_NOTICE if settings.pre_rollover_turn else None
            )
            if plan.rolled_over:
                ctx.receipt(
                    "session_rollover",
                    {"vsession": vs.id, "continuation": vs.continuation, "turn": plan.turn},
                )
            try:
                completion = calls.complete(plan.messages, schemas)
            except EmptyResponse as exc:  # charged already; the model is told, like a no-tool reply
                idle += 1
                reason = exc.details.get("finish_reason")
                ctx.receipt("agent_empty_reply", {"turn": vs.turn + 1, "finish_reason": reason})
                if idle > settings.max_idle_replies:
                    raise _out_of_turns(vs, settings, idle=True) from None
                why = (
                    f" (finish_reason=length: it hit max_output_tokens={settings.max_output_tokens},"
                    " which reasoning may have used up)"
                    if reason == "length"
                    else f" (finish_reason={reason})"
                    if reason
                    else ""
                )
                vs.add_user_message(
                    f"[Holdfast] Your reply was empty{why}. Reply with a tool call (think less "
                    "first), and call finish(result) when the task is done."
                )
                continue
            except ProviderRejected as exc:
                if not _context_overflow(exc) or vs.turns_in_session == 0:
                    raise
                # the provider counts more tokens than the estimate: learn from it, roll over
                vs.meter.observe(plan.estimate, settings.context_window)
                reason = f"the provider rejected a {plan.estimate}-token prompt as too long"
                vs.roll_over(reason, schemas)
                ctx.receipt(
                    "session_rollover",
                    {
                        "vsession": vs.id,
                        "continuation": vs.continuation,
                        "reason": reason,
                        "provider": exc.message,
                    },
                )
                continue
            usage = calls.priced(completion.usage)
            turn = vs.record_assistant(completion.to_message(), estimate=plan.estimate, usage=usage)
            ctx.receipt(
                "agent_turn",
                {
                    "turn": turn,
                    "session": vs.physical_key,
                    "estimate": plan.estimate,
                    "input_tokens": usage.input_tokens,
                    "output_tokens": usage.output_tokens,
                    "estimated_tokens": usage.estimated_tokens,
                    "usd": usage.cost_usd,
                    "tools": [c.name for c in completion.tool_calls],
                },
            )
            ctx.charge(tokens=usage.input_tokens + usage.output_tokens, usd=usage.cost_usd)
            self._emit(
                type="turn",
                turn=turn,
                continuation=vs.continuation,
                vsession=vs.id,
                prompt_tokens=usage.input_tokens or plan.estimate,
                output_tokens=usage.output_tokens,
                cost_usd=usage.cost_usd,
                rolled_over=plan.rolled_over,
                tools=[c.name for c in completion.tool_calls],
            )
            if not completion.tool_calls:
                idle += 1
                if idle > settings.max_idle_replies:
                    from holdfast.lm.capabilities import no_tool_calls_hint

                    hint = no_tool_calls_hint(calls.lm)
                    raise _out_of_turns(vs, settings, idle=True, hint=hint)
                vs.add_user_message(
                    "[Holdfast] Your reply called no tool. Work through tool calls, and call "
                    "finish(result) when the task is done."
                )
                continue
            idle = 0
            result = run.calls()
        vs.flush_memory("finish")
        vs.store.set_status(vs.id, "finished")
        self._emit(type="finished", turn=vs.turn, continuation=vs.continuation, vsession=vs.id)
        return {
            "result": result,
            "vsession": vs.id,
            "turns": vs.turn,
            "continuations": vs.continuation + 1,
            "working_set": vs.working_set.to_dict(),
        }

    # -- setup -----------------------------------------------------------------------------

    def _session(
        self, ctx: StepContext, settings: AgentSettings, workspace: Workspace | None
    ) -> VirtualSession:
        # the task's own database, so a worker on another machine finds the same session
        store = open_session_store(self.db_path or ctx.store)
        vid = store.find_by_task(ctx.task_id)
        if vid is not None:
            vs = VirtualSession(store, vid, memory_policy=self.memory_policy)
            ctx.receipt(
                "session_resumed",
                {"vsession": vid, "continuation": vs.continuation, "turn": vs.turn},
            )
            return vs
        system = settings.system_prompt or SYSTEM_PROMPT
        if workspace is not None:
            system += f"\nThe workspace is {workspace.root}" + (
                "." if workspace.writable else " and it is read-only: writes will fail."
            )
        if not ctx.goal.strip():
            raise InvalidInput("an agent task needs a goal: the task spec's 'goal' is empty")
        vs = VirtualSession.create(
            store,
            request=ctx.goal,
            system_prompt=system,
            policy=settings.rollover_policy(),
            task_id=ctx.task_id,
            memory_policy=self.memory_policy,
        )
        ctx.receipt("session_started", {"vsession": vs.id, "model": settings.model})
        return vs

    def _memory(
        self, settings: AgentSettings, ctx: StepContext, vs: VirtualSession
    ) -> MemoryAccess | None:
        if settings.memory_namespace is None or self.memory_factory is None:
            return None
        try:
            if getattr(self.memory_factory, FOLLOWS_TASK, False):
                # the default: knowledge memory in the task's store when that is PostgreSQL
                factory: Any = self.memory_factory
                memory = cast(
                    "MemoryAccess | None",
                    factory(settings, ctx.task_id, vs.id, backend=ctx.store.backend),
                )
            else:
                memory = self.memory_factory(settings, ctx.task_id, vs.id)
        except Exception as exc:  # fail-open: the task goes on without knowledge memory
            vs.add_user_message(f"[Holdfast] knowledge memory is unavailable: {exc}")
            return None
        if memory is None:
            return None
        flush_to = getattr(memory, "flush", None)
        recall = getattr(memory, "recall", None)
        if callable(flush_to):
            vs.flush_fn = lambda items: _flush(ctx, vs, flush_to, items)
        if callable(recall):
            vs.recall_fn = recall
        return memory

    def _emit(self, **event: Any) -> None:
        if self.on_event is not None:
            self.on_event(event)


@dataclass
class _Run:
    """The tool-call side of one attempt at a task."""

    ctx: StepContext
    vs: VirtualSession
    box: ToolBox
    workspace: Workspace | None
    memory: MemoryAccess | None
    analyzer: Analyzer | None

    def calls(self) -> str | None:
        """Run the unanswered tool calls of the last reply; returns the result of ``finish``."""
        from holdfast.harness import PermissionDenied, StepFailed

        finished: str | None = None
        for index, call in self.vs.unanswered_tool_calls():
            name = call["function"]["name"]
            tool = self.box.get(name)
            if tool is None:
                content = (
                    f"error: there is no tool {name!r}; the tools are: "
                    f"{', '.join(self.box.names())}"
                )
                self.vs.record_tool_result(call["id"], name, content)
                continue
            try:
                args = tool.parse(call["function"].get("arguments", ""))
            except ModelFacingError as exc:
                self.vs.record_tool_result(call["id"], name, f"error: {exc.message}")
                continue
            step = f"t{self.vs.turn:05d}.{index}.{name}"
            env = ToolEnv(
                session=self.vs,
                workspace=self.workspace,
                ctx=self.ctx,
                key=f"{self.ctx.task_id}:{step}",
                turn=self.vs.turn,
                memory=self.memory,
                analyzer=self.analyzer,
            )
            try:
                out = self.ctx.step(
                    step,
                    tool.harness_name,
                    args,
                    functools.partial(_invoke, tool, env, args),
                    idempotent=tool.idempotent,
                    effect=tool.effect,
                    key=env.key,
                )
            except PermissionDenied as exc:
                content = f"denied: {exc.message}"
            except StepFailed as exc:
                err = exc.details.get("error") or {}
                content = f"error: {err.get('message', exc.message)}"
            else:
                content = out if isinstance(out, str) else json.dumps(out, ensure_ascii=False)
                if tool is builtins.FINISH_TOOL and isinstance(out, dict):
                    finished = str(out.get("result", ""))
            self.vs.record_tool_result(call["id"], name, content)
            if finished is not None:
                return finished
        return None


def _pricing(
    ctx: StepContext, settings: AgentSettings, lm: LM, analyzer: Analyzer | None
) -> JobPricing:
    """The task's prices; a dollar budget over a model of unknown price fails at start."""
    from holdfast.rlm.pricing import JobPricing

    pricing = JobPricing(
        settings.prices,
        max_usd=ctx.spec.budget.usd,
        unpriced=settings.unpriced,  # type: ignore[arg-type]
    )
    models = [lm]
    more = getattr(analyzer, "models", None)
    if callable(more):
        models += list(more())
    pricing.check(models, AGENT_REMEDY)
    return pricing


AGENT_REMEDY = (
    'Give it a price in USD per million tokens in the task\'s input: "prices": {{"{name}": '
    "[INPUT, OUTPUT]}} (holdfast run --price {name}=INPUT,OUTPUT), or count it at the highest "
    'price in the table ({estimate}) with "unpriced": "estimate" (holdfast run --unpriced '
    "estimate)."
)


_OVERFLOW = re.compile(
    r"context.{0,20}(length|window|limit)|too many tokens|prompt is too long|maximum.{0,30}tokens",
    re.IGNORECASE,
)


def _context_overflow(exc: ProviderRejected) -> bool:
    """Whether a provider's refusal says the prompt is longer than the model's window."""
    return isinstance(exc, ContextOverflow) or bool(_OVERFLOW.search(exc.message))


def _invoke(tool: Tool, env: ToolEnv, args: dict[str, Any], _key: str) -> Any:
    return tool.call(env, args)


def _flush(
    ctx: StepContext,
    vs: VirtualSession,
    flush_to: Callable[[list[FlushItem]], Any],
    items: list[FlushItem],
) -> None:
    """The memory flush before a physical session ends, as a receipted, idempotent step."""
    name = f"flush.c{vs.continuation}.t{vs.turn}"
    ctx.step(
        name,
        "memory.flush",
        {"keys": [i.key for i in items]},
        lambda _key: flush_to(items),
        idempotent=True,
        effect=True,
    )


def _out_of_turns(
    vs: VirtualSession, settings: AgentSettings, *, idle: bool = False, hint: str = ""
) -> BudgetExceeded:
    why = (
        f"the model replied {settings.max_idle_replies + 1} times in a row without calling a tool"
        if idle
        else f"the task used its {settings.max_turns} turns without calling finish"
    )
    return BudgetExceeded(
        f"{why}{hint}; the working set of {vs.id} is kept",
        limit="idle_replies" if idle else "max_turns",
        partial={"vsession": vs.id, "turns": vs.turn, "working_set": vs.working_set.to_dict()},
        trace_id=vs.id,
    )
