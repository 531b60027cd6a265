"""The LoCoMo runner: question answering over knowledge memory, on any file in LoCoMo's schema.

LoCoMo (Maharana et al., "Evaluating Very Long-Term Conversational Memory of LLM Agents", ACL
2024) is a list of items, each with ``conversation`` (``session_N`` lists of turns with
``speaker``, ``dia_id`` and ``text``, and ``session_N_date_time``) and ``qa`` (``question``,
``answer`` or, for category 5, ``adversarial_answer``, ``evidence`` turn ids, ``category``).

Each conversation a chosen question belongs to is written into its own knowledge-memory namespace
(one episode per turn, the session date as mention time, the turn id as a tag); each question is
a recall query whose top ``k`` hits go, cited, to the answering model. Scored per question:
LoCoMo's token F1 of the answer (category 5 asks for a refusal: 1 when the answer says the
conversation does not mention it), and the evidence recall@k of the retrieval. The data is read
where it lies and never copied (the development split's licence is CC BY-NC 4.0).
"""

from __future__ import annotations

import json
import random
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from holdfast.errors import InvalidInput
from holdfast.evals.recording import RecordingLM
from holdfast.evals.scorers import Score, token_f1
from holdfast.evals.store import EvalStore, TaskResult
from holdfast.evals.suites import Suite
from holdfast.lm.types import LM, Message

CATEGORIES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop", 5: "adversarial"}
REFUSAL = re.compile(r"not mentioned|no information|not (?:stated|discussed|say)|unknown", re.I)
K = 10


def load_locomo(path: Path) -> list[dict[str, Any]]:
    """Read and check a LoCoMo-schema file; a clear error names what is wrong."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InvalidInput(f"cannot read the LoCoMo file {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise InvalidInput(f"the LoCoMo file {path} is not JSON: {exc}") from None
    if not isinstance(data, list) or not data:
        raise InvalidInput(f"{path}: a LoCoMo file is a non-empty list of conversations")
    for i, item in enumerate(data):
        if not isinstance(item, dict) or not isinstance(item.get("conversation"), dict):
            raise InvalidInput(f"{path}: item {i} has no 'conversation' object")
        if not isinstance(item.get("qa"), list):
            raise InvalidInput(f"{path}: item {i} has no 'qa' list")
        for j, qa in enumerate(item["qa"]):
            if not isinstance(qa, dict) or not isinstance(qa.get("question"), str):
                raise InvalidInput(f"{path}: item {i}, question {j} has no 'question' text")
            evidence = qa.get("evidence", [])
            if not isinstance(evidence, list):
                raise InvalidInput(f"{path}: item {i}, question {j}: 'evidence' is not a list")
        for key, turns in item["conversation"].items():
            if re.fullmatch(r"session_\d+", key) and not (
                isinstance(turns, list) and all(isinstance(t, dict) for t in turns)
            ):
                raise InvalidInput(f"{path}: item {i}: {key} is not a list of turns")
    return data


def sessions(conv: dict[str, Any]) -> list[tuple[str, list[dict[str, Any]]]]:
    c = conv["conversation"]
    keys = sorted(
        (k for k in c if re.fullmatch(r"session_\d+", k) and isinstance(c[k], list)),
        key=lambda k: int(k.split("_")[1]),
    )
    return [(str(c.get(f"{k}_date_time") or ""), c[k]) for k in keys]


def _mention(raw: str) -> str | None:
    import dateparser

    parsed = dateparser.parse(raw, languages=["en"], settings={"RETURN_AS_TIMEZONE_AWARE": False})
    return parsed.isoformat() + "+00:00" if parsed else None


def ingest(store: Any, conv: dict[str, Any], namespace: str) -> int:
    entries = []
    for date_raw, turns in sessions(conv):
        mention = _mention(date_raw) if date_raw else None
        for t in turns:
            text = str(t.get("text") or "")
            if t.get("blip_caption"):
                text += f" [shares a photo: {t['blip_caption']}]"
            if not text.strip():
                continue
            fields: dict[str, Any] = {
                "namespace": namespace,
                "kind": "episode",
                "source": {"speaker": str(t.get("speaker") or "")},
                "tags": [f"dia:{t.get('dia_id')}"],
            }
            if mention:
                fields["mention_time"] = mention
            entries.append((f"{t.get('speaker')}: {text}", fields))
    store.add_many(entries)
    return len(entries)


def answer_prompt(question: str, memories: list[tuple[str, str]]) -> list[Message]:
    lines = "\n".join(f"- ({when}) {text}" for when, text in memories) or "(none)"
    return [
        {
            "role": "system",
            "content": "You answer questions about a long conversation from the memories you are "
            "given. Answer with a short phrase. If the memories do not say, answer 'not mentioned'.",
        },
        {"role": "user", "content": f"Memories:\n{lines}\n\nQuestion: {question}\nAnswer:"},
    ]


def scripted_answer(messages: list[Message], **_: Any) -> str:
    """The scripted answerer: the text of the first memory it was given (the top recall hit),
    its date for a 'when' question; labelled scripted. An extractive floor, not a model."""
    prompt = str(messages[-1].get("content") or "")
    first = re.search(r"^- \(([^)]*)\) [^:]+: (.*)$", prompt, re.M)
    if first is None:
        return "not mentioned"
    if re.search(r"Question: when\b", prompt, re.I):
        return first.group(1)[:10]
    return first.group(2)[:200]


def score_qa(qa: dict[str, Any], answer: str) -> Score:
    if int(qa.get("category") or 0) == 5:
        ok = bool(REFUSAL.search(answer))
        return Score(1.0 if ok else 0.0, "refusal", {"answer": answer[:300]})
    return token_f1(qa.get("answer", ""), answer)


def run_locomo(config: Any, suite: Suite, db_path: str | Path, progress: Any) -> str:
    from holdfast.evals.runner import RunLog, _close, _new_run, _usage_of, make_lm
    from holdfast.memory import MemoryConfig, MemoryStore

    path = Path(config.params.get("data") or _default_data())
    data = load_locomo(path)
    questions = [(ci, qi) for ci, item in enumerate(data) for qi in range(len(item["qa"]))]
    random.Random(config.seed).shuffle(questions)
    chosen = questions[: min(config.n, len(questions))]
    store = EvalStore(db_path)
    if config.scripted:
        from holdfast.testing import FunctionLM

        inner: LM = FunctionLM(scripted_answer, model="scripted:locomo-answerer")
    else:
        inner = make_lm(config.model, config)
    lm = RecordingLM(inner, "answer")
    run_id = _new_run(store, config, suite, "memory", lm.model, None)
    work = Path(tempfile.mkdtemp(prefix=f"holdfast-{run_id}-"))
    memory = MemoryStore(MemoryConfig(root=work / "memory", embedder=config.embedder))
    log = RunLog(store, run_id, progress)
    ingested: set[int] = set()
    try:
        for n, (ci, qi) in enumerate(chosen):
            item, qa = data[ci], data[ci]["qa"][qi]
            sample = str(item.get("sample_id") or f"conv{ci}")
            task_id = f"locomo-{sample}-q{qi}"
            log.starting(task_id, n, len(chosen))
            ns = re.sub(r"[^A-Za-z0-9_-]", "-", f"locomo-{sample}")
            if ci not in ingested:
                ingest(memory, item, ns)
                ingested.add(ci)
            lm.sink = []
            started = time.monotonic()
            hits = memory.search(str(qa["question"]), namespace=ns, limit=K)
            found = [next((t[4:] for t in h.item.tags if t.startswith("dia:")), "") for h in hits]
            evidence = [str(e) for e in qa.get("evidence") or []]
            recall = sum(1 for e in evidence if e in found) / len(evidence) if evidence else None
            memories = [(h.item.mention_time.date().isoformat(), h.item.text) for h in hits]
            reply = lm.complete(answer_prompt(str(qa["question"]), memories), max_tokens=100)
            score = score_qa(qa, reply.text)
            tin, tout, usd = _usage_of(lm.sink)
            result = TaskResult(
                task_id,
                "ok",
                score.value,
                input_tokens=tin,
                output_tokens=tout,
                usd=round(usd, 6),
                wall_s=round(time.monotonic() - started, 6),
                iterations=1,
                answer=reply.text,
                gold=qa.get("answer", qa.get("adversarial_answer")),
                scorer=score.scorer,
                details={"score": score.details, "recall_at_10": recall, "retrieved": found},
                question=str(qa["question"]),
                meta={
                    "category": CATEGORIES.get(int(qa.get("category") or 0), "?"),
                    "evidence": evidence,
                },
            )
            log.add(result, list(lm.sink), n, len(chosen))
            recalls = [
                r.details["recall_at_10"]
                for r in log.results
                if r.details.get("recall_at_10") is not None
            ]
            log.extra["recall_at_10"] = round(sum(recalls) / len(recalls), 4) if recalls else None
    except BaseException:
        log.status = "interrupted"
        raise
    finally:
        log.extra["data"] = str(path)
        log.finish()
        memory.close()
        _close(inner)
        store.close()
        shutil.rmtree(work, ignore_errors=True)
    return run_id


def _default_data() -> Path:
    import os

    env = os.environ.get("HOLDFAST_LOCOMO")
    if env:
        return Path(env)
    raise InvalidInput(
        "the locomo suite needs its data file: --data PATH (LoCoMo schema) or $HOLDFAST_LOCOMO"
    )
