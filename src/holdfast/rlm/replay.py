"""Replaying a stored job: the same code re-executed from the recorded model outputs.

Every model call of a job is recorded with a content key (see :func:`holdfast.rlm.trace.call_key`)
and its reply. Replay rebuilds the job's settings from the trace, fills a cache with those
replies, and runs the job again in a fresh box with models that can only answer from that cache:
the code runs for real, the models do not. If the code does something different (the inputs
changed, or it depends on time or randomness) a call misses the cache and replay stops with a
clear :class:`ReplayDiverged` error instead of reaching a real model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from holdfast.errors import InvalidInput, RuntimeFailure
from holdfast.lm.base import BaseLM, CallParams
from holdfast.lm.types import Completion, Message
from holdfast.rlm.broker import BrokerLimits
from holdfast.rlm.budget import Budget
from holdfast.rlm.engine import RLM, SandboxFactory
from holdfast.rlm.result import RLMResult
from holdfast.rlm.store import RLMTraceStore
from holdfast.rlm.trace import MemoryCache
from holdfast.sandbox.types import HostFunctionSpec, SandboxPolicy


class ReplayDiverged(RuntimeFailure):
    """The replayed job made a model call that the trace has no reply for."""

    code = "replay_diverged"


class ReplayLM(BaseLM):
    """A model that has no answers of its own: every call it receives is a divergence."""

    def __init__(self, model: str) -> None:
        super().__init__(model, price=None)

    async def _acall(self, messages: list[Message], params: CallParams) -> tuple[Completion, int]:
        last = str(messages[-1].get("content") or "")[:200]
        raise ReplayDiverged(
            f"replay diverged: the job made a call to {self.model} that the trace did not record "
            f"(last message starts {last!r}); the inputs or the code's behaviour changed",
            model=self.model,
        )


@dataclass(frozen=True)
class Replay:
    """A replayed job and how it compares with the original."""

    result: RLMResult
    original_trace_id: str
    original_outputs: dict[str, Any] | None
    replies_recorded: int
    replies_used: int

    @property
    def same_answer(self) -> bool:
        return self.original_outputs == self.result.outputs

    def to_dict(self) -> dict[str, Any]:
        return {
            "original_trace_id": self.original_trace_id,
            "replay": self.result.to_dict(),
            "same_answer": self.same_answer,
            "replies_recorded": self.replies_recorded,
            "replies_used": self.replies_used,
        }


async def areplay(
    trace_id: str,
    store: RLMTraceStore,
    *,
    inputs: dict[str, Any] | None = None,
    sandbox: SandboxPolicy | SandboxFactory | None = None,
    tools: Sequence[Callable[..., Any] | HostFunctionSpec] = (),
    signature: Any = None,
) -> Replay:
    """Re-execute the job ``trace_id`` from its recorded model outputs."""
    run = store.find_run(trace_id)
    if run is None:
        raise InvalidInput(f"no RLM trace {trace_id!r} in {store.db.path}")
    if run.parent_id is not None:
        raise InvalidInput(f"{run.trace_id} is a child run; replay its root {run.root_id}")
    meta = run.meta
    given = dict(inputs or {})
    for source in meta.get("inputs", []):
        name = source["name"]
        if name in given:
            continue
        if "path" not in source:
            raise InvalidInput(
                f"the input {name!r} was passed as a value, which traces never store; pass it again"
            )
        path = Path(source["path"])
        if not path.exists():
            raise InvalidInput(f"the input {name!r} was read from {path}, which no longer exists")
        given[name] = path
    cache = MemoryCache({key: reply for key, _model, reply in store.iter_replies(run.trace_id)})
    recorded = len(cache.entries)
    models = list(meta.get("models") or [run.model])
    root = ReplayLM(run.model)
    sub = ReplayLM(run.sub_model or run.model)
    budget_fields = dict(meta.get("budget") or {})
    rlm = RLM(
        root,
        sub,
        sandbox=sandbox,
        budget=Budget(**budget_fields) if budget_fields else None,
        max_depth=meta.get("max_depth"),
        signature=signature if signature is not None else meta.get("signature"),
        tools=tools,
        mode="direct" if run.mode == "direct" else "rlm",
        limits=BrokerLimits(max_prompt_chars=int(meta.get("max_prompt_chars", 400_000))),
        output_cap=int(meta.get("output_cap", 8_000)),
        root_max_tokens=meta.get("root_max_tokens", 4_096),
        system_prompt=meta.get("system_template"),
        cache=cache,
        store=store,
        extra_models=[ReplayLM(m) for m in models if m not in (root.model, sub.model)],
    )
    rlm.trace_meta = {"replay_of": run.trace_id}
    result = await rlm.arun(run.query, **given)
    outputs = (run.result or {}).get("outputs")
    return Replay(result, run.trace_id, outputs, recorded, cache.hits)


def replay(trace_id: str, store: RLMTraceStore, **kwargs: Any) -> Replay:
    """The blocking form of :func:`areplay`."""
    from holdfast.lm.base import run_sync

    return run_sync(areplay(trace_id, store, **kwargs))
