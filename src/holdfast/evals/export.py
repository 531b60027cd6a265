"""Trajectory export for trainers: OpenAI fine-tuning JSONL, TRL rows, and memory operations.

- ``openai``: one JSON object per line, ``{"messages": [...], "tools": [...]}``, the chat format
  of OpenAI's supervised fine-tuning (system, user, assistant with ``tool_calls``, and ``tool``
  messages). Calls whose prompts extend each other (an RLM's turns) are merged into one
  conversation; calls whose prompt was rebuilt (an agent turn ends with the freshly rendered
  working set; a roll-over starts a new physical session) are rows of their own, each the exact
  prompt that was sent plus the reply.
- ``trl``: the same conversations as ``{"messages": [...], "tools": [...], "reward": r, ...}``,
  the conversational format TRL's trainers read, with the eval's reward, the scorer's details,
  the task and run ids, and, where the provider returned them, the completion's token ids and
  log-probabilities per assistant message (``completion_logprobs``, ``completion_token_ids``,
  ``prompt_token_ids``).
- ``memory-ops``: for agent trajectories, one line per memory operation (add, update, delete,
  search, get, context_pack, prune, recall, flush) with its arguments, its outcome and the turn,
  which is what memory-policy training reads.

Export from an eval run (``holdfast eval export RUN``: every task, with its reward) or from one
trace (``holdfast trace export ID``: an RLM trace id, or an agent task id; reward absent).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from holdfast.errors import InvalidInput
from holdfast.evals.store import EvalStore, RunRow, TaskResult

FORMATS = ("openai", "trl", "memory-ops")
MEMORY_TOOLS = {
    "memory_add": "add",
    "memory_update": "update",
    "memory_delete": "delete",
    "memory_search": "search",
    "memory_get": "get",
    "context_pack": "context_pack",
    "context_prune": "prune",
    "context_recall": "recall",
}
_ROLES = {"root", "agent", "plain", "answer"}


def assistant_message(reply: dict[str, Any]) -> dict[str, Any]:
    msg: dict[str, Any] = {"role": "assistant", "content": reply.get("text") or None}
    if reply.get("tool_calls"):
        msg["tool_calls"] = reply["tool_calls"]
    if msg["content"] is None and "tool_calls" not in msg:
        msg["content"] = ""
    return msg


def clean_message(m: dict[str, Any]) -> dict[str, Any]:
    """A message with only the keys the chat format defines."""
    role = m.get("role")
    out: dict[str, Any] = {"role": role, "content": m.get("content")}
    if role == "assistant" and m.get("tool_calls"):
        out["tool_calls"] = [
            {
                "id": c["id"],
                "type": "function",
                "function": {
                    "name": c["function"]["name"],
                    "arguments": c["function"]["arguments"],
                },
            }
            for c in m["tool_calls"]
        ]
    if role == "tool":
        out["tool_call_id"] = m.get("tool_call_id")
        out["content"] = str(m.get("content") or "")
    if out["content"] is None and role != "assistant":
        out["content"] = ""
    return out


def conversations(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Merge calls whose prompts extend each other into conversations (see the module docstring).

    Each conversation: ``messages``, ``tools``, and per assistant message its recorded token data.
    """
    convs: list[dict[str, Any]] = []
    for call in calls:
        if call.get("role") not in _ROLES or "reply" not in call:
            continue
        prompt = [clean_message(m) for m in call.get("messages") or []]
        reply = call["reply"]
        tokens = {
            k: reply[k] for k in ("logprobs", "token_ids", "prompt_token_ids") if reply.get(k)
        }
        last = convs[-1] if convs else None
        if (
            last is not None
            and last["tools"] == (call.get("tools") or [])
            and prompt[: len(last["messages"])] == last["messages"]
        ):
            last["messages"] = [*prompt, clean_message(assistant_message(reply))]
            last["token_data"].append(tokens)
        else:
            convs.append(
                {
                    "messages": [*prompt, clean_message(assistant_message(reply))],
                    "tools": call.get("tools") or [],
                    "token_data": [tokens],
                }
            )
    return convs


def openai_row(conv: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {"messages": conv["messages"]}
    if conv["tools"]:
        row["tools"] = conv["tools"]
        row["parallel_tool_calls"] = True
    return row


def trl_row(conv: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {"messages": conv["messages"]}
    if conv["tools"]:
        row["tools"] = conv["tools"]
    row.update(meta)
    data = conv["token_data"]
    if any(d.get("logprobs") for d in data):
        row["completion_logprobs"] = [d.get("logprobs") for d in data]
    if any(d.get("token_ids") for d in data):
        row["completion_token_ids"] = [d.get("token_ids") for d in data]
    if any(d.get("prompt_token_ids") for d in data):
        row["prompt_token_ids"] = [d.get("prompt_token_ids") for d in data]
    return row


def result_meta(run: RunRow, result: TaskResult) -> dict[str, Any]:
    return {
        "reward": 0.0 if result.score is None else float(result.score),
        "task_id": result.task_id,
        "run_id": run.run_id,
        "suite": run.suite,
        "mode": run.mode,
        "model": run.model,
        "scripted": run.scripted,
        "status": result.status,
        "scorer": result.scorer,
        "score_details": result.details.get("score", {}),
        "gold": result.gold,
        "answer": result.answer,
        "trace_id": result.trace_id,
    }


def export_run(
    store: EvalStore, run_id: str, fmt: str, *, db_path: Any = None, include_unscored: bool = False
) -> Iterator[dict[str, Any]]:
    """Rows of ``fmt`` for every task of an eval run (tasks that were not scored, such as a
    baseline that did not fit, are skipped unless ``include_unscored``)."""
    if fmt not in FORMATS:
        raise InvalidInput(f"the export format is one of {', '.join(FORMATS)}, not {fmt!r}")
    run = store.get_run(run_id)
    for result, calls in store.iter_results(run.run_id):
        if result.score is None and not include_unscored:
            continue
        if fmt == "memory-ops":
            tasks = result.details.get("tasks") or (
                [result.harness_task] if result.harness_task else []
            )
            for task in tasks if run.mode == "agent" else []:
                for op in memory_ops(db_path, str(task)):
                    yield {
                        **op,
                        "reward": result.score,
                        "run_id": run.run_id,
                        "eval_task": result.task_id,
                    }
            continue
        for conv in conversations(calls):
            yield openai_row(conv) if fmt == "openai" else trl_row(conv, result_meta(run, result))


# -- traces that are not eval runs -------------------------------------------------------------


def rlm_trace_calls(db_path: Any, trace_id: str) -> list[dict[str, Any]]:
    """The root calls of an RLM trace, rebuilt as recorded calls (messages, reply)."""
    from holdfast.rlm.store import RLMTraceStore

    traces = RLMTraceStore(_path(db_path))
    run = traces.find_run(trace_id)
    if run is None:
        raise InvalidInput(f"no RLM trace {trace_id!r} (see `holdfast rlm trace`)")
    history: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    events = traces.events(run.trace_id)
    traces.backend.close()
    for ev in events:
        if ev.kind not in ("root_call", "direct_call") or "reply" not in ev.data:
            continue
        history.extend(ev.data.get("messages") or [])
        calls.append({"role": "root", "messages": list(history), "reply": ev.data["reply"]})
        history.append({"role": "assistant", "content": ev.data["reply"].get("text", "")})
    return calls


def agent_trace_calls(db_path: Any, task_id: str) -> list[dict[str, Any]]:
    """An agent task's physical sessions as conversations: each session's seed and transcript,
    ending with that session's last reply (the working-set block of each turn is not stored per
    turn, so it is left out here; eval runs export the exact prompts instead)."""
    sessions = _sessions(db_path, task_id)
    calls = []
    for messages, _turns in sessions:
        last_assistant = max(
            (i for i, m in enumerate(messages) if m.get("role") == "assistant"), default=-1
        )
        if last_assistant < 0:
            continue
        reply = messages[last_assistant]
        calls.append(
            {
                "role": "agent",
                "messages": messages[:last_assistant],
                "reply": {
                    "text": reply.get("content") or "",
                    "tool_calls": reply.get("tool_calls") or [],
                },
            }
        )
    return calls


def _path(db_path: Any) -> Any:
    if db_path is not None:
        return db_path
    from holdfast.config import default_db_path

    return default_db_path()


def session_messages(
    db_path: Any, task_id: str
) -> tuple[str, list[list[tuple[int, dict[str, Any]]]], dict[str, str], list[list[dict[str, Any]]]]:
    """An agent task's virtual session id, each physical session's ``(turn, message)``
    transcript, the pruned-result notes, and each session's seed messages."""
    from holdfast.session import open_session_store

    store = open_session_store(_path(db_path))
    try:
        vid = store.find_by_task(task_id)
        if vid is None:
            raise InvalidInput(f"no agent session for task {task_id!r}")
        row = store.load_virtual(vid)
        transcripts, seeds = [], []
        for cont in range(row.continuation + 1):
            seeds.append([m for m, _ in store.physical(vid, cont)[0].seed])
            transcripts.append([(turn, m) for turn, m, _rid in store.messages(vid, cont)])
        return vid, transcripts, store.pruned_notes(vid), seeds
    finally:
        store.close()


def _sessions(db_path: Any, task_id: str) -> list[tuple[list[dict[str, Any]], list[int]]]:
    _, transcripts, _, seeds = session_messages(db_path, task_id)
    return [
        (seed + [m for _, m in transcript], [t for t, _ in transcript])
        for seed, transcript in zip(seeds, transcripts, strict=True)
    ]


def memory_ops(db_path: Any, task_id: str) -> Iterator[dict[str, Any]]:
    """Every memory operation of an agent task, with its outcome, in order."""
    vid, transcripts, pruned, _ = session_messages(db_path, task_id)
    pending: dict[str, tuple[int, str, Any]] = {}
    for cont, transcript in enumerate(transcripts):
        for turn, m in transcript:
            for c in m.get("tool_calls") or []:
                name = c["function"]["name"]
                if name in MEMORY_TOOLS:
                    pending[c["id"]] = (turn, name, _json(c["function"].get("arguments")))
            if m.get("role") == "tool" and m.get("tool_call_id") in pending:
                turn_no, name, args = pending.pop(m["tool_call_id"])
                content = str(m.get("content") or "")
                body = content.split("] ", 1)[1] if content.startswith("[r") else content
                outcome = _json(body)
                ok = not (
                    body.startswith(("error:", "denied:"))
                    or (isinstance(outcome, dict) and "error" in outcome)
                )
                yield {
                    "task": task_id,
                    "vsession": vid,
                    "continuation": cont,
                    "turn": turn_no,
                    "op": MEMORY_TOOLS[name],
                    "tool": name,
                    "args": args,
                    "outcome": outcome,
                    "ok": ok,
                }
    for note_id, note in sorted(pruned.items()):
        if note.startswith("auto-pruned"):
            yield {
                "task": task_id,
                "vsession": vid,
                "op": "prune",
                "tool": "auto",
                "args": {"ids": [note_id]},
                "outcome": note,
                "ok": True,
            }
    yield from _flushes(db_path, task_id)


def _flushes(db_path: Any, task_id: str) -> Iterator[dict[str, Any]]:
    from holdfast.harness import Harness

    h = Harness.open(_path(db_path))
    try:
        for step in h.steps(task_id):
            if step.tool == "memory.flush":
                yield {
                    "task": task_id,
                    "op": "flush",
                    "tool": "memory.flush",
                    "step": step.name,
                    "outcome": step.result,
                    "ok": step.status == "done",
                }
    finally:
        h.close()


def _json(text: Any) -> Any:
    if not isinstance(text, str):
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


def export_trace(db_path: Any, trace_or_task: str, fmt: str) -> Iterator[dict[str, Any]]:
    """Rows for one RLM trace (``rlm-...``) or one agent task."""
    if fmt not in FORMATS:
        raise InvalidInput(f"the export format is one of {', '.join(FORMATS)}, not {fmt!r}")
    if fmt == "memory-ops":
        yield from memory_ops(db_path, trace_or_task)
        return
    if trace_or_task.startswith("rlm-"):
        calls = rlm_trace_calls(db_path, trace_or_task)
    else:
        calls = agent_trace_calls(db_path, trace_or_task)
    meta = {"trace": trace_or_task}
    for conv in conversations(calls):
        yield openai_row(conv) if fmt == "openai" else trl_row(conv, meta)
