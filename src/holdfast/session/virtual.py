"""Virtual sessions: one stable task identity across many physical model sessions.

A :class:`VirtualSession` (id ``vsession-...``) owns a working set and a sequence of physical
sessions numbered by a continuation index (key ``vsession-...:cont-N``). The prompt of every turn is

1. the system prompt;
2. the seed of the current physical session: the original request (first session) or a
   continuation note with cited recall from knowledge memory and the last few turns of the previous
   session verbatim (later sessions);
3. the transcript of the current physical session, tool results carrying short ids (``r12``), pruned
   ones replaced by the note the agent left;
4. the working set, rendered fresh on every turn within its budget.

Everything in it comes from the store, so a worker that resumes after a crash rebuilds the same
bytes. Roll-over is decided before each call from the calibrated token estimate (or a turn count),
after a memory flush, and is one store transaction; the default never summarises anything.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from holdfast.config import holdfast_home
from holdfast.errors import InvalidInput, ModelFacingError
from holdfast.lm.types import Message, Usage
from holdfast.session.policy import (
    FlushItem,
    HeuristicMemoryPolicy,
    MemoryPolicy,
    PruneCandidate,
    RolloverPolicy,
)
from holdfast.session.render import ContextWindowTooSmall, render_working_set, write_overflow
from holdfast.session.seed import (
    RecallHit,
    continuation_note,
    pruned_text,
    recall_text,
    turn_groups,
)
from holdfast.session.store import Entry, SQLSessionStore
from holdfast.session.tokens import TokenMeter, estimate_messages_tokens, estimate_text_tokens
from holdfast.session.working_set import WorkingSet

RecallFn = Callable[[list[str]], Sequence[RecallHit]]
FlushFn = Callable[[list[FlushItem]], None]


@dataclass(frozen=True)
class TurnPlan:
    """What :meth:`VirtualSession.begin_turn` decided: the messages to send and their estimate."""

    turn: int
    messages: list[Message]
    estimate: int
    rolled_over: bool
    pruned: tuple[str, ...]
    last_in_session: bool = False


class VirtualSession:
    """A task's continuity memory; see the module docstring. Create with :meth:`create`."""

    def __init__(
        self,
        store: SQLSessionStore,
        vsession_id: str,
        *,
        memory_policy: MemoryPolicy | None = None,
        recall: RecallFn | None = None,
        flush: FlushFn | None = None,
    ) -> None:
        row = store.load_virtual(vsession_id)
        self.store = store
        self.id = vsession_id
        self.task_id = row.task_id
        self.system_prompt = row.system_prompt
        cfg = row.config
        self.request: str = cfg["request"]
        self.policy = RolloverPolicy(**cfg["policy"])
        # No state_dir recorded means "under the Holdfast home of whichever worker runs it", so
        # a worker on another machine writes its overflow file under its own home.
        self.state_dir = (
            Path(cfg["state_dir"])
            if cfg.get("state_dir")
            else holdfast_home() / "sessions" / vsession_id
        )
        self.max_result_tokens: int = cfg["max_result_tokens"]
        self.memory_policy: MemoryPolicy = memory_policy or HeuristicMemoryPolicy()
        self.recall_fn = recall
        self.flush_fn = flush
        self.working_set = WorkingSet.replay(store.load_ops(vsession_id), sink=self._persist_op)
        self._load_state()

    def _load_state(self) -> None:
        row = self.store.load_virtual(self.id)
        self.continuation = row.continuation
        self.turn = row.turn
        self.flushed = row.flushed
        self._next_result = row.next_result
        phys = self.store.physical(self.id, self.continuation)[0]
        self.session_start_turn = phys.start_turn
        self._entries: list[Entry] = list(phys.seed)
        self._seed_len = len(phys.seed)
        self._entries.extend(
            (m, rid) for _, m, rid in self.store.messages(self.id, self.continuation)
        )
        self._pruned = self.store.pruned_notes(self.id)
        self.meter = TokenMeter()
        for t in self.store.turns(self.id)[-8:]:
            if t["input_tokens"]:
                self.meter.observe(t["estimate_tokens"], t["input_tokens"])

    # -- creation -------------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        store: SQLSessionStore,
        *,
        request: str,
        system_prompt: str,
        policy: RolloverPolicy | None = None,
        task_id: str | None = None,
        state_dir: Path | None = None,
        max_result_tokens: int | None = None,
        vsession_id: str | None = None,
        memory_policy: MemoryPolicy | None = None,
        recall: RecallFn | None = None,
        flush: FlushFn | None = None,
    ) -> VirtualSession:
        """Start a virtual session for ``request`` (the user's task text) and its first session."""
        if not request.strip():
            raise InvalidInput("the task request is empty")
        policy = policy or RolloverPolicy()
        vid = vsession_id or f"vsession-{uuid.uuid4().hex[:16]}"
        cap = max_result_tokens or max(256, policy.context_window // 8)
        config = {
            "request": request,
            "policy": asdict(policy),
            "state_dir": str(state_dir) if state_dir is not None else None,
            "max_result_tokens": cap,
        }
        seed: list[Entry] = [({"role": "user", "content": request}, None)]
        fixed = estimate_messages_tokens([{"role": "system", "content": system_prompt}, seed[0][0]])
        if fixed + policy.working_set_budget > policy.limit_tokens:
            raise ContextWindowTooSmall(
                f"the system prompt and request (about {fixed} tokens) plus the working-set budget "
                f"({policy.working_set_budget}) exceed the roll-over limit of {policy.limit_tokens} "
                f"tokens ({policy.threshold:.0%} of a {policy.context_window}-token window)",
                budget_tokens=policy.limit_tokens,
                needed_tokens=fixed + policy.working_set_budget,
            )
        store.create_virtual(
            vid, task_id=task_id, system_prompt=system_prompt, config=config, seed=seed
        )
        return cls(store, vid, memory_policy=memory_policy, recall=recall, flush=flush)

    @property
    def physical_key(self) -> str:
        return f"{self.id}:cont-{self.continuation}"

    @property
    def turns_in_session(self) -> int:
        return self.turn - self.session_start_turn

    @property
    def overflow_path(self) -> Path:
        return self.state_dir / "working-set-overflow.md"

    def _persist_op(self, op: dict[str, Any]) -> None:
        self.store.append_op(self.id, op)

    # -- the prompt -----------------------------------------------------------------------------

    def render_working_set_block(self) -> str:
        rendered = render_working_set(
            self.working_set,
            self.policy.working_set_budget,
            header=(
                f"## Working set of {self.id} at turn {self.turn + 1}, session "
                f"{self.continuation} (kept by Holdfast; authoritative)"
            ),
            overflow_path=self.overflow_path,
        )
        if rendered.overflow_ids:
            write_overflow(self.overflow_path, rendered, self.id)
        return rendered.text

    def build_prompt(self) -> list[Message]:
        """The exact messages the next model call sends (a pure function of the stored state)."""
        msgs: list[Message] = [{"role": "system", "content": self.system_prompt}]
        for message, rid in self._entries:
            if rid is not None and rid in self._pruned:
                message = {**message, "content": pruned_text(rid, self._pruned[rid])}
            msgs.append(message)
        msgs.append({"role": "user", "content": self.render_working_set_block()})
        return msgs

    def estimate(self, messages: list[Message], tools: list[dict[str, Any]] | None = None) -> int:
        return self.meter.calibrated(estimate_messages_tokens(messages, tools))

    def begin_turn(
        self, tools: list[dict[str, Any]] | None = None, *, notice: str | None = None
    ) -> TurnPlan:
        """Prune, roll over if due, and return the prompt of the next turn with its estimate.

        With ``notice``, a roll-over that is due is put off by one turn: the notice is added to
        the transcript first (once per physical session) so that the model can write what it
        still needs into the working set before its session ends. The default never does.
        """
        messages = self.build_prompt()
        estimate = self.estimate(messages, tools)
        pruned = self._auto_prune(estimate)
        if pruned:
            messages = self.build_prompt()
            estimate = self.estimate(messages, tools)
        rolled = False
        over_tokens = estimate > self.policy.limit_tokens
        over_turns = (
            self.policy.max_turns is not None and self.turns_in_session >= self.policy.max_turns
        )
        due = (over_tokens or over_turns) and self.turns_in_session > 0
        state = self._notice_state(notice) if due and notice else "answered"
        room = estimate + estimate_text_tokens(notice or "") + 8 <= self.policy.context_window
        if state != "answered" and notice and room:
            if state == "absent":
                self.add_user_message(notice)
                messages = self.build_prompt()
                estimate = self.estimate(messages, tools)
            return TurnPlan(self.turn + 1, messages, estimate, False, pruned, True)
        if due:
            reason = (
                f"prompt estimate {estimate} > limit {self.policy.limit_tokens} tokens"
                if over_tokens
                else f"turn limit {self.policy.max_turns} reached"
            )
            self.roll_over(reason, tools)
            rolled = True
            messages = self.build_prompt()
            estimate = self.estimate(messages, tools)
        if estimate > self.policy.context_window:
            raise ContextWindowTooSmall(
                f"the next prompt needs about {estimate} tokens but the context window is "
                f"{self.policy.context_window}",
                budget_tokens=self.policy.context_window,
                needed_tokens=estimate,
            )
        return TurnPlan(self.turn + 1, messages, estimate, rolled, pruned)

    # -- recording a turn -----------------------------------------------------------------------

    def record_assistant(self, message: Message, *, estimate: int, usage: Usage | None) -> int:
        """Append the model's reply and the turn's token accounting; returns the turn number."""
        turn = self.turn + 1
        self.store.append_message(self.id, self.continuation, turn, message)
        self.store.record_turn(
            self.id, turn, self.continuation, estimate, usage.to_dict() if usage else None
        )
        self._entries.append((message, None))
        self.turn = turn
        if usage is not None and usage.input_tokens:
            self.meter.observe(estimate, usage.input_tokens)
        return turn

    def record_tool_result(self, tool_call_id: str, tool: str, content: str) -> str:
        """Append a tool result under a fresh short id; over-long text is shown in part with a
        pointer, the whole kept in the store. Returns the id (``r12``)."""
        rid = f"r{self._next_result}"
        shown = content
        total = estimate_text_tokens(content)
        if total > self.max_result_tokens:
            cut = self.max_result_tokens * 4
            shown = (
                f"{content[:cut]}\n[{rid} truncated: showing {cut} of {len(content)} characters; "
                f'context_recall("{rid}", offset={cut}) reads on]'
            )
        message = {"role": "tool", "tool_call_id": tool_call_id, "content": f"[{rid}] {shown}"}
        self.store.append_message(
            self.id, self.continuation, self.turn, message, result=(rid, tool, content)
        )
        self._entries.append((message, rid))
        self._next_result += 1
        return rid

    def add_user_message(self, text: str) -> None:
        """A message from a person (a steering command) between turns."""
        message = {"role": "user", "content": text}
        self.store.append_message(self.id, self.continuation, self.turn, message)
        self._entries.append((message, None))

    def unanswered_tool_calls(self) -> list[tuple[int, dict[str, Any]]]:
        """(position, call) for the tool calls of the last reply that have no result yet."""
        for pos in range(len(self._entries) - 1, -1, -1):
            message = self._entries[pos][0]
            if message.get("role") == "assistant":
                answered = {
                    m.get("tool_call_id")
                    for m, _ in self._entries[pos + 1 :]
                    if m.get("role") == "tool"
                }
                calls = list(message.get("tool_calls") or ())
                return [(i, c) for i, c in enumerate(calls) if c["id"] not in answered]
        return []

    def pending_tool_calls(self) -> list[dict[str, Any]]:
        """Tool calls of the last assistant message that have no result yet (after a crash)."""
        return [c for _, c in self.unanswered_tool_calls()]

    # -- context actions ------------------------------------------------------------------------

    def prune(self, result_ids: Sequence[str], note: str) -> list[str]:
        """Replace results in the live context by ``note``; the full text stays recallable."""
        if not note.strip():
            raise ModelFacingError("context_prune needs a note saying what the results held")
        ids = [r for r in dict.fromkeys(result_ids)]
        found = self.store.prune(self.id, ids, note.strip())
        missing = sorted(set(ids) - set(found))
        if missing:
            raise ModelFacingError(f"no tool results with ids {', '.join(missing)}")
        self._pruned.update(dict.fromkeys(found, note.strip()))
        return found

    def recall(self, item_id: str, offset: int = 0, limit_chars: int | None = None) -> str:
        """The full text of a tool result (``r12``) or a working-set item (``c1``, ``p7`` ...)."""
        result = self.store.result(self.id, item_id)
        if result is not None:
            text = result[1]
        else:
            found = self.working_set.item_text(item_id)
            if found is None:
                raise ModelFacingError(f"nothing has the id {item_id!r}")
            text = found
        limit = limit_chars or self.max_result_tokens * 4 - 200
        page = text[offset : offset + limit]
        if offset + limit < len(text):
            page += f'\n[more: context_recall("{item_id}", offset={offset + limit})]'
        return page

    def _notice_state(self, notice: str) -> str:
        """``absent``, ``pending`` (given, the model has not replied yet) or ``answered``, in
        this physical session (a notice carried over in the seed does not count)."""
        for pos in range(len(self._entries) - 1, self._seed_len - 1, -1):
            m = self._entries[pos][0]
            if m.get("role") == "user" and m.get("content") == notice:
                later = self._entries[pos + 1 :]
                return (
                    "answered" if any(e[0].get("role") == "assistant" for e in later) else "pending"
                )
        return "absent"

    def _auto_prune(self, size: int) -> tuple[str, ...]:
        candidates: list[PruneCandidate] = []
        meta = self.store.result_meta(self.id, [rid for _, rid in self._entries if rid])
        for _, rid in self._entries:
            if rid is None or rid in self._pruned or rid not in meta:
                continue
            tool, turn, chars = meta[rid]
            candidates.append(PruneCandidate(rid, self.turn - turn, (chars + 3) // 4, tool))
        if not candidates:
            return ()
        chosen = self.memory_policy.select_prune(
            candidates, prompt_tokens=size, limit=self.policy.limit_tokens
        )
        if not chosen:
            return ()
        by_id = {c.result_id: c for c in candidates}
        for rid in chosen:
            c = by_id[rid]
            note = f"auto-pruned {c.tool} output of turn {self.turn - c.age_turns}"
            self.store.prune(self.id, [rid], note)
            self._pruned[rid] = note
        return tuple(chosen)

    # -- roll-over ------------------------------------------------------------------------------

    def flush_memory(self, reason: str) -> list[FlushItem]:
        """Write the policy's durable facts to knowledge memory (idempotent by key)."""
        if self.flush_fn is None or not self.memory_policy.should_flush(
            reason=reason, turns_in_session=self.turns_in_session
        ):
            return []
        items = self.memory_policy.select_flush(self.working_set, self.flushed)
        if items:
            self.flush_fn(items)
            self.flushed = self.store.add_flushed(self.id, [i.key for i in items])
        return items

    def roll_over(self, reason: str, tools: list[dict[str, Any]] | None = None) -> int:
        """End this physical session and start the next under the same id; returns its index."""
        flush_note = ""
        try:
            self.flush_memory("rollover")
        except Exception as exc:  # knowledge memory is fail-open; the roll-over goes on
            flush_note = (
                f"\nThe memory flush before this roll-over failed ({exc}); it will be retried."
            )
        recall = self._recall_block()
        groups = turn_groups(self._entries)
        budget = self.policy.limit_tokens // 2
        keep = min(self.policy.keep_last_turns, len(groups))
        while True:
            carried = [e for g in groups[len(groups) - keep :] for e in g] if keep else []
            omitted = len(groups) - keep
            note = continuation_note(
                self.id, self.continuation + 1, self.turn, reason, self.request, keep, omitted
            )
            note += recall + flush_note
            seed: list[Entry] = [({"role": "user", "content": note}, None), *carried]
            probe = [{"role": "system", "content": self.system_prompt}]
            probe += [m for m, _ in seed]
            probe.append({"role": "user", "content": self.render_working_set_block()})
            size = self.estimate(probe, tools)
            if size <= budget or keep == 0:
                break
            keep -= 1
        if size > self.policy.limit_tokens:
            raise ContextWindowTooSmall(
                f"a fresh session needs about {size} tokens (system prompt, request, working set "
                f"and recall) but the roll-over limit is {self.policy.limit_tokens} tokens",
                budget_tokens=self.policy.limit_tokens,
                needed_tokens=size,
            )
        self.store.roll_over(
            self.id, from_cont=self.continuation, reason=reason, seed=seed, start_turn=self.turn
        )
        self._load_state()
        return self.continuation

    def _recall_block(self) -> str:
        if self.recall_fn is None:
            return ""
        queries = self.memory_policy.recall_queries(self.working_set)
        if not queries:
            return ""
        try:
            hits = list(self.recall_fn(queries))
        except Exception as exc:  # fail-open: say so, go on
            return f"\nKnowledge memory could not be searched ({exc}); continuing without recall."
        return recall_text(hits, self.policy.recall_budget)


def dumps_prompt(messages: list[Message]) -> str:
    """A prompt as it goes on the wire (key order kept), for byte-for-byte comparison and display."""
    return json.dumps(messages, ensure_ascii=False)
