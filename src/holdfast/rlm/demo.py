"""The offline RLM demo: a multi-megabyte log corpus, a real box, the real broker, a typed answer.

Without a model name the root model is SCRIPTED: a fixed list of replies whose code blocks are real
Python that runs in the box over the generated corpus (probe, filter with regular expressions,
fan out chunks with ``llm_batch``, aggregate, ``SUBMIT``). The sub-model is a scripted function
that reads the chunk it is sent and reports the most frequent error code in it. Nothing reaches a
network. With a model name (``provider:model``) that model drives the same job instead.
"""

from __future__ import annotations

import random
import re
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from holdfast.lm.types import Message
from holdfast.rlm.budget import Budget
from holdfast.rlm.engine import RLM
from holdfast.rlm.result import RLMResult

QUESTION = (
    "Which service logged the most ERROR lines, how many, which three error codes are most common "
    "across all services, and what is the likely root cause?"
)
SIGNATURE = "logs -> service: str, error_count: int, top_codes: list[str], summary: str"
SERVICES = ["auth", "billing", "search", "gateway", "storage", "mailer"]
CODES = ["E101", "E202", "E303", "E404", "E505", "E606", "E707"]

SCRIPTED_ROOT = [
    "First I probe the size and the shape of the log lines.\n```python\n"
    "lines = logs.splitlines()\nprint(len(logs), 'chars,', len(lines), 'lines')\nprint(lines[:3])\n```\n",
    "Lines look like '<time> <LEVEL> <service> <message>'. I filter ERROR lines with a regex in Python, "
    "before any sub-call.\n```python\nimport re\nfrom collections import Counter\n"
    "pat = re.compile(r'^\\S+ ERROR (\\w+) (.*)$')\nerrors = [m.groups() for m in map(pat.match, lines) if m]\n"
    "per_service = Counter(s for s, _ in errors)\nprint(len(errors), 'errors'); print(per_service.most_common())\n```\n",
    "Now I send the error messages to the sub-model in fat chunks, in parallel.\n```python\n"
    "msgs = [m for _, m in errors]\nsize = 4000\n"
    "chunks = ['\\n'.join(msgs[i:i + size]) for i in range(0, len(msgs), size)]\n"
    "replies = llm_batch(['Which error code is most frequent in these log messages? Reply CODE COUNT.\\n' + c "
    "for c in chunks])\nprint(len(chunks), 'chunks'); print(replies[:3])\n```\n",
    "I verify the sub-model's claims against an exact count before submitting.\n```python\n"
    "codes = Counter(re.findall(r'\\bE\\d{3}\\b', '\\n'.join(msgs)))\n"
    "claimed = Counter(r.split()[0] for r in replies if not isinstance(r, SubCallError))\n"
    "print(codes.most_common(4)); print(claimed.most_common(3))\n```\n",
    "The counts agree. Submitting the typed answer.\n```python\n"
    "top = [c for c, _ in codes.most_common(3)]\nservice, n = per_service.most_common(1)[0]\n"
    "SUBMIT(service=service, error_count=n, top_codes=top,\n"
    "       summary=f'{service} fails most ({n} errors), mostly {top[0]}: upstream timeouts after the deploy.')\n```\n",
]


def generate_corpus(path: Path, *, target_bytes: int = 6_000_000, seed: int = 7) -> dict[str, Any]:
    """Write a synthetic log of about ``target_bytes``; returns the true answer for checking."""
    rng = random.Random(seed)
    weights = {"auth": 1, "billing": 2, "search": 1, "gateway": 5, "storage": 2, "mailer": 1}
    code_weights = [9, 3, 2, 6, 1, 4, 1]
    errors: Counter[str] = Counter()
    codes: Counter[str] = Counter()
    written = 0
    t = 1_700_000_000
    with path.open("w", encoding="utf-8") as fh:
        while written < target_bytes:
            t += rng.randint(0, 3)
            service = rng.choices(SERVICES, [weights[s] for s in SERVICES])[0]
            if rng.random() < 0.08:
                code = rng.choices(CODES, code_weights)[0]
                line = f"{t} ERROR {service} {code} request {rng.randint(1, 10**6)} failed: upstream timeout\n"
                errors[service] += 1
                codes[code] += 1
            else:
                line = f"{t} INFO {service} handled request {rng.randint(1, 10**6)} in {rng.randint(1, 900)} ms\n"
            fh.write(line)
            written += len(line)
    service, count = errors.most_common(1)[0]
    return {
        "service": service,
        "error_count": count,
        "top_codes": [c for c, _ in codes.most_common(3)],
    }


def scripted_sub_model(messages: list[Message], **_: Any) -> str:
    """The scripted sub-model: counts error codes in the chunk it was sent."""
    found = Counter(re.findall(r"\bE\d{3}\b", str(messages[-1].get("content") or "")))
    if not found:
        return "NONE 0"
    code, n = found.most_common(1)[0]
    return f"{code} {n}"


def run_rlm_demo(
    model: str | None = None, *, console: Any = None, workdir: str | Path | None = None
) -> RLMResult:
    """Run the demo job and print the answer, the usage and how to view the trace."""
    from holdfast.display import console as safe_console
    from holdfast.display import dumps, styled, text
    from holdfast.sandbox.types import SandboxPolicy
    from holdfast.testing import FunctionLM, ScriptedLM

    console = console or safe_console()
    base = (
        Path(workdir)
        if workdir is not None
        else Path(tempfile.mkdtemp(prefix="holdfast-rlm-demo-"))
    )
    base.mkdir(parents=True, exist_ok=True)
    corpus = base / "service-logs.txt"
    truth = generate_corpus(corpus)
    size = corpus.stat().st_size
    console.rule(text("RLM demo: reasoning over a log corpus", "bold"))
    console.print(text(f"corpus: {corpus} ({size / 1e6:.1f} MB, never shown to the root model)"))
    console.print(text(f"question: {QUESTION}"))
    root: Any
    sub: Any
    if model:
        root, sub = model, model
        console.print(text(f"root and sub-model: {model}"))
    else:
        root = ScriptedLM(SCRIPTED_ROOT, model="scripted:demo-root")
        sub = FunctionLM(scripted_sub_model, model="scripted:demo-sub")
        console.print(
            text(
                "root model: SCRIPTED (fixed replies whose code really runs in the box); "
                "sub-model: SCRIPTED (a function that counts codes in each chunk)",
                "yellow",
            )
        )
    policy = SandboxPolicy()
    from holdfast.sandbox.check import diagnose

    if not diagnose().namespace_ok:
        # bubblewrap missing and not root (or user namespaces blocked): `holdfast sandbox check`
        # names the remedy. The demo goes on, loudly, with the plain-subprocess level.
        policy = SandboxPolicy(isolation="process")
        console.print(
            text(
                "namespaces unavailable (see `holdfast sandbox check`): using the weaker "
                "'process' isolation, which is not a security boundary",
                "red",
            )
        )
    turns: list[int] = []

    def show(trace_id: str, kind: str, data: dict[str, Any]) -> None:
        if kind == "iteration":
            turns.append(1)
            code = (data.get("code") or "").strip().splitlines()
            b = data.get("budget", {})
            console.print(
                styled(
                    (f"turn {data.get('turn')}", "cyan"),
                    f" ({len(code)} lines of code, cell {data.get('cell_s') or 0:.2f} s, "
                    f"{b.get('sub_calls', 0)} sub-calls so far)",
                )
            )

    rlm = RLM(
        root,
        sub,
        sandbox=policy,
        budget=Budget(max_iterations=12, max_wall_s=600),
        signature=SIGNATURE,
        mode="rlm",
        on_event=show,
    )
    result = rlm.run(QUESTION, logs=corpus)
    console.rule(text("answer", "bold"))
    console.print(text(dumps(result.outputs, indent=2, ensure_ascii=False, default=str)))
    ok = all(result.outputs.get(k) == v for k, v in truth.items())
    console.print(
        text(f"checked against the generator's ground truth: {'correct' if ok else 'WRONG'}")
    )
    u = result.usage
    console.print(
        text(
            f"usage: {result.iterations} iterations · {result.sub_calls} sub-calls · root "
            f"{u.root.total_tokens:,} tokens · sub {u.sub.total_tokens:,} tokens · "
            f"${u.usd:.4f} · {result.elapsed_s:.1f} s"
        )
    )
    console.print(
        styled(
            "trace: ",
            (f"holdfast rlm trace {result.trace_id}", "bold"),
            f"   replay: holdfast rlm replay {result.trace_id}",
        )
    )
    return result
