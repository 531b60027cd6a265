"""A learned memory policy: a (small) policy model decides what to prune and what to remember.

:class:`ModelMemoryPolicy` is the second implementation of
:class:`~holdfast.session.policy.MemoryPolicy`. At each decision it sends the policy model the
candidates (working-set items that could be written to knowledge memory, tool results that could
be pruned from the live context, the task state to recall for) and asks for a JSON object in a
strict schema (sent as ``response_format`` ``json_schema`` with ``strict: true``). The reply is
checked before it is used: it must parse, match the schema exactly, and name only candidates it
was shown (a flushed item's key, a prunable result id); texts are bounded. When the policy model
fails (an error, a timeout) or answers badly, the decision falls back to
:class:`~holdfast.session.policy.HeuristicMemoryPolicy` and the fallback is recorded
(``fallbacks``, and ``on_fallback`` when given) with the decision, the reason and the reply, so a
run can report how often the learned policy was actually in charge.

When a roll-over happens is not the model's decision (``should_flush`` stays mechanical), and the
prune decision is only asked for once the prompt passes ``prune_at`` of the roll-over limit, so
the policy model is not called on every turn. A policy model that fails ``trip_after`` times in a
row (errors, not bad answers) is not asked again for the next ``cooldown`` decisions. ``memory_policy_from_config`` selects the policy
from configuration: ``"heuristic"`` (the default) or ``"model:<provider:model>"`` with an
optional ``@<base_url>``.
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from holdfast.errors import InvalidInput
from holdfast.lm.types import LM, Message
from holdfast.session.policy import FlushItem, HeuristicMemoryPolicy, MemoryPolicy, PruneCandidate
from holdfast.session.working_set import WorkingSet

log = logging.getLogger(__name__)
T = TypeVar("T")

KINDS = ("decision", "constraint", "finding", "lesson", "progress")
MAX_TEXT = 2_000

SYSTEM = """\
You are the memory policy of a long-running agent. You decide memory operations only; you never
act on the task. Reply with one JSON object that matches the schema you are given, nothing else.
Name only ids and keys from the candidates you are shown."""


class _FlushEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    key: str
    text: str = Field(min_length=1, max_length=MAX_TEXT)
    kind: Literal["decision", "constraint", "finding", "lesson", "progress"]


class _FlushReply(BaseModel):
    model_config = ConfigDict(extra="forbid")
    write: list[_FlushEntry]


class _PruneReply(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prune: list[str]


class _RecallReply(BaseModel):
    model_config = ConfigDict(extra="forbid")
    queries: list[str] = Field(max_length=4)


_UNSUPPORTED = ("minLength", "maxLength", "maxItems", "title", "default")


def _strict(node: Any) -> Any:
    """The schema as strict structured outputs accept it (limits are checked here instead)."""
    if isinstance(node, dict):
        return {k: _strict(v) for k, v in node.items() if k not in _UNSUPPORTED}
    if isinstance(node, list):
        return [_strict(v) for v in node]
    return node


def _schema(name: str, model: type[BaseModel]) -> dict[str, Any]:
    schema = _strict(model.model_json_schema())
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


@dataclass(frozen=True)
class Fallback:
    """One decision the heuristic made because the policy model could not."""

    decision: str
    reason: str
    reply: str = ""
    at: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return {
            "decision": self.decision,
            "reason": self.reason,
            "reply": self.reply[:500],
            "at": self.at,
        }


class BadPolicyReply(ValueError):
    """The policy model's reply cannot be used (unparseable, off-schema, unknown ids)."""


class ModelMemoryPolicy:
    """A :class:`MemoryPolicy` whose judgement comes from a policy model, with a recorded
    fallback to the heuristic; see the module docstring."""

    def __init__(
        self,
        lm: LM,
        *,
        fallback: MemoryPolicy | None = None,
        prune_at: float = 0.6,
        max_tokens: int = 800,
        timeout_s: float = 60.0,
        on_fallback: Callable[[Fallback], None] | None = None,
        history: int = 1000,
        trip_after: int = 3,
        cooldown: int = 20,
    ) -> None:
        if not 0.0 < prune_at <= 1.0:
            raise InvalidInput(f"prune_at must be in (0, 1], not {prune_at}")
        self.lm = lm
        self.fallback: MemoryPolicy = fallback or HeuristicMemoryPolicy()
        self.prune_at = prune_at
        self.max_tokens = max_tokens
        self.timeout_s = timeout_s
        self.on_fallback = on_fallback
        self.fallbacks: deque[Fallback] = deque(maxlen=history)
        self.decisions = 0
        self.last_prompt: list[Message] = []
        self.trip_after = trip_after
        self.cooldown = cooldown
        self._failures = 0
        self._skip = 0

    def close(self) -> None:
        """Close the policy model's connections."""
        closer = getattr(self.lm, "close", None)
        if callable(closer):
            closer()

    # -- the MemoryPolicy interface -------------------------------------------------------------

    def should_flush(self, *, reason: str, turns_in_session: int) -> bool:
        return self.fallback.should_flush(reason=reason, turns_in_session=turns_in_session)

    def select_flush(self, ws: WorkingSet, already_flushed: frozenset[str]) -> list[FlushItem]:
        candidates = {i.key: i for i in _flush_candidates(ws) if i.key not in already_flushed}
        if not candidates:
            return []
        payload = {
            "decision": "which of these working-set items to write to long-term knowledge memory "
            "(you may shorten a text; keep its meaning and its key)",
            "goal": ws.goal,
            "candidates": [
                {"key": i.key, "kind": i.kind, "text": i.text} for i in candidates.values()
            ],
        }

        def use(raw: str) -> list[FlushItem]:
            reply = _parse(_FlushReply, raw)
            out: list[FlushItem] = []
            for e in reply.write:
                if e.key not in candidates:
                    raise BadPolicyReply(f"unknown key {e.key!r}")
                if e.key in {i.key for i in out}:
                    raise BadPolicyReply(f"key {e.key!r} twice")
                out.append(FlushItem(e.key, e.text.strip(), e.kind))
            return out

        return self._decide(
            "flush",
            payload,
            _schema("memory_flush", _FlushReply),
            use,
            lambda: self.fallback.select_flush(ws, already_flushed),
        )

    def recall_queries(self, ws: WorkingSet) -> list[str]:
        payload = {
            "decision": "up to four search queries whose results from knowledge memory should seed "
            "the agent's fresh session",
            "goal": ws.goal,
            "open_blockers": [b.text for b in ws.open_blockers()],
            "next_step": ws.next_step,
            "constraints": [c.text for c in ws.constraints.values()],
        }

        def use(raw: str) -> list[str]:
            reply = _parse(_RecallReply, raw)
            queries = [q.strip() for q in reply.queries if q.strip()]
            if any(len(q) > 300 for q in queries):
                raise BadPolicyReply("a query is longer than 300 characters")
            return queries

        return self._decide(
            "recall",
            payload,
            _schema("memory_recall", _RecallReply),
            use,
            lambda: self.fallback.recall_queries(ws),
        )

    def select_prune(
        self, candidates: list[PruneCandidate], *, prompt_tokens: int, limit: int
    ) -> list[str]:
        if not candidates or prompt_tokens < self.prune_at * limit:
            return []
        known = {c.result_id for c in candidates}
        payload = {
            "decision": "which tool results to remove from the live context (they stay readable "
            "by id); keep what the next turns still need",
            "prompt_tokens": prompt_tokens,
            "limit_tokens": limit,
            "candidates": [
                {"id": c.result_id, "tool": c.tool, "age_turns": c.age_turns, "tokens": c.tokens}
                for c in candidates
            ],
        }

        def use(raw: str) -> list[str]:
            reply = _parse(_PruneReply, raw)
            unknown = [i for i in reply.prune if i not in known]
            if unknown:
                raise BadPolicyReply(f"unknown result ids {unknown[:5]}")
            return list(dict.fromkeys(reply.prune))

        return self._decide(
            "prune",
            payload,
            _schema("memory_prune", _PruneReply),
            use,
            lambda: self.fallback.select_prune(
                candidates, prompt_tokens=prompt_tokens, limit=limit
            ),
        )

    # -- one decision ---------------------------------------------------------------------------

    def _decide(
        self,
        name: str,
        payload: dict[str, Any],
        response_format: dict[str, Any],
        use: Callable[[str], T],
        heuristic: Callable[[], T],
    ) -> T:
        messages: list[Message] = [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": json.dumps(payload, ensure_ascii=False)},
        ]
        self.last_prompt = messages
        self.decisions += 1
        if self._skip > 0:
            # a policy model that failed ``trip_after`` times in a row is left alone for
            # ``cooldown`` decisions, so a dead endpoint does not slow every turn
            self._skip -= 1
            return self._fall_back(
                name, "the policy model failed repeatedly; cooling down", "", heuristic
            )
        raw = ""
        try:
            completion = self.lm.complete(
                messages,
                response_format=response_format,
                temperature=0.0,
                max_tokens=self.max_tokens,
                timeout=self.timeout_s,
                metadata={"purpose": f"memory_policy.{name}"},
            )
            raw = completion.text
            decided = use(raw)
        except (BadPolicyReply, ValidationError, ValueError) as exc:
            return self._fall_back(name, f"bad answer: {exc}", raw, heuristic)
        except Exception as exc:  # the policy model is fail-open: the heuristic decides
            self._failures += 1
            if self._failures >= self.trip_after:
                self._failures, self._skip = 0, self.cooldown
            return self._fall_back(name, f"{type(exc).__name__}: {exc}", raw, heuristic)
        self._failures = 0
        return decided

    def _fall_back(self, name: str, reason: str, raw: str, heuristic: Callable[[], T]) -> T:
        record = Fallback(name, reason[:1000], raw)
        self.fallbacks.append(record)
        log.warning(
            "memory policy model failed on %s (%s); the heuristic decides", name, reason[:200]
        )
        if self.on_fallback is not None:
            self.on_fallback(record)
        return heuristic()


def _parse(model: type[BaseModel], raw: str) -> Any:
    text = raw.strip()
    if text.startswith("```"):
        text = text.strip("`").removeprefix("json").strip()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadPolicyReply(f"not JSON ({exc.msg})") from None
    if not isinstance(data, dict):
        raise BadPolicyReply("not a JSON object")
    return model.model_validate(data, strict=True)


def _flush_candidates(ws: WorkingSet) -> list[FlushItem]:
    """What could be remembered: the heuristic's items plus progress entries."""
    items = HeuristicMemoryPolicy().select_flush(ws, frozenset())
    items.extend(
        FlushItem(f"progress:{p.id}", f"Progress: {p.text}", "progress")
        for p in ws.progress.values()
    )
    return items


def memory_policy_from_config(
    spec: str | Mapping[str, Any] | None, *, lm: LM | None = None
) -> tuple[MemoryPolicy, list[Fallback]]:
    """The memory policy named by configuration, and the list its fallbacks are appended to.

    ``None`` or ``"heuristic"``: :class:`HeuristicMemoryPolicy`. ``"model:<provider:model>"``
    (optionally ``@<base_url>``), or ``{"kind": "model", "model": ..., "base_url": ...,
    "prune_at": ...}``: :class:`ModelMemoryPolicy` over that endpoint (``lm`` overrides the
    model built from the name, for tests and scripted runs).
    """
    fallbacks: list[Fallback] = []
    if spec is None or spec == "heuristic":
        return HeuristicMemoryPolicy(), fallbacks
    if isinstance(spec, str):
        if not spec.startswith("model:"):
            raise InvalidInput(
                f"memory policy {spec!r}: use 'heuristic' or 'model:<provider:model>[@base_url]'"
            )
        name, _, url = spec[len("model:") :].partition("@")
        cfg: dict[str, Any] = {"kind": "model", "model": name, "base_url": url or None}
    else:
        cfg = dict(spec)
    if cfg.get("kind") != "model":
        raise InvalidInput("a memory policy object needs kind 'model' (or use 'heuristic')")
    extra = set(cfg) - {"kind", "model", "base_url", "prune_at", "max_tokens", "timeout_s"}
    if extra:
        raise InvalidInput(f"unknown memory policy field(s): {', '.join(sorted(extra))}")
    if lm is None:
        if not cfg.get("model"):
            raise InvalidInput("a model memory policy needs 'model' (provider:model)")
        from holdfast.lm import get_lm
        from holdfast.lm.retry import RetryPolicy

        # a decision on the agent's hot path: fail fast and let the heuristic decide
        lm = get_lm(
            str(cfg["model"]),
            base_url=cfg.get("base_url"),
            retry=RetryPolicy(max_attempts=2, base_delay=0.25, max_delay=1.0),
            timeout=float(cfg.get("timeout_s", 60.0)),
        )
    policy = ModelMemoryPolicy(
        lm,
        prune_at=float(cfg.get("prune_at", 0.6)),
        max_tokens=int(cfg.get("max_tokens", 800)),
        timeout_s=float(cfg.get("timeout_s", 60.0)),
        on_fallback=fallbacks.append,
    )
    return policy, fallbacks
