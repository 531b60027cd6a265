"""The prompts of the RLM loop: the system prompt, the first user turn, and each feedback turn.

All text the root model reads is built here, so ``--show-prompt`` and the trace show exactly what
was sent. Users may pass their own system prompt; it is formatted with the same fields.
"""

from __future__ import annotations

from typing import Any

from holdfast.rlm.inputs import JobInput
from holdfast.rlm.signature import Signature

SYSTEM_PROMPT = """\
You answer a query by writing Python code in a persistent REPL. The query's inputs are already
loaded as variables in the REPL; you see only their description, never their content, so you must
read them with code. Variables you create persist between turns.

Each turn, reply with a short thought and then exactly ONE code block fenced as ```python ... ```.
The block runs and you get its printed output (cut to {output_cap:,} characters, head and tail) in
the next turn. Only the first block of a reply runs, and nothing you write after it is read: never
write the output yourself, wait for it.

Functions available in the REPL:
- llm_query(prompt, model=None, schema=None) -> str (or a dict when schema is given, as a JSON
  schema or like "answer: str, score: float"): ask a sub-model; it sees only the prompt you pass,
  at most {max_prompt_chars:,} characters.
- llm_batch(prompts, model=None, schema=None) -> list: many llm_query calls in parallel, results in
  the same order; a failed item comes back as a SubCallError string (check isinstance).
- rlm_query(prompt, **inputs) -> answer: a child run like you, with its own REPL over the inputs
  you pass; for sub-problems that are themselves too big for one prompt.{depth_note}
- predict("question, passage -> answer: str, confidence: float", question=..., passage=...) ->
  an object with the typed fields: a typed sub-call.
- show_vars(): list your variables.
- SUBMIT({submit_args}): submit the final answer; it is checked against the types and you are told
  if it does not fit. For compatibility, setting answer = {{"content": ..., "ready": True}} also
  submits.{tools_note}

Strategy: probe first (sizes, a few lines, the structure); filter and split with plain Python
before calling sub-models; put plenty of text in each sub-call prompt and use llm_batch over
chunks rather than many tiny calls; keep intermediate results in variables; verify the answer
against the data before you SUBMIT. The turn counter shows how many turns are left.
"""

FINAL_TURN = (
    "This is your final turn: the budget is nearly used up. Call SUBMIT now with your best "
    "answer from what you have found so far."
)


def build_system_prompt(
    *,
    signature: Signature,
    output_cap: int,
    max_prompt_chars: int,
    depth: int,
    max_depth: int,
    tools: list[tuple[str, str]],
    template: str | None = None,
) -> str:
    """The system prompt, from the default template or the user's own."""
    if depth >= max_depth:
        depth_note = " (Not available here: the depth limit is reached; use llm_query.)"
    else:
        depth_note = f" Depth {depth} of at most {max_depth}."
    tools_note = ""
    if tools:
        listed = "\n".join(f"- {name}: {doc}" for name, doc in tools)
        tools_note = "\n\nTools declared for this job:\n" + listed
    fields = {
        "output_cap": output_cap,
        "max_prompt_chars": max_prompt_chars,
        "depth_note": depth_note,
        "submit_args": signature.describe_outputs(),
        "tools_note": tools_note,
    }
    return (template or SYSTEM_PROMPT).format(**fields)


def build_first_turn(
    query: str, inputs: list[JobInput], signature: Signature, max_iterations: int
) -> str:
    described = "\n".join(i.describe() for i in inputs) or "(no inputs)"
    outs = ", ".join(f"{f.name}: {f.type_text}" for f in signature.outputs)
    return (
        f"Query: {query}\n\n"
        f"Inputs (variables in the REPL):\n{described}\n\n"
        f"Expected outputs: {outs}\n"
        f"[turn 1 of {max_iterations}] Start by probing the inputs."
    )


def build_feedback(
    *,
    output: str,
    note: str | None,
    turn: int,
    max_iterations: int,
    budget: dict[str, Any],
    final: bool,
) -> str:
    """The user turn that follows a code cell: its output, any note, the counter and budget."""
    parts = []
    if note:
        parts.append(note)
    parts.append(f"Output:\n{output}" if output else "Output: (nothing printed)")
    status = (
        f"[turn {turn} of {max_iterations} · sub-calls {budget.get('sub_calls', 0)} · tokens "
        f"root {budget.get('root_tokens', 0):,} sub {budget.get('sub_tokens', 0):,} · "
        f"${budget.get('usd', 0.0):.4f} · {budget.get('elapsed_s', 0.0):.1f} s]"
    )
    parts.append(status)
    if final:
        parts.append(FINAL_TURN)
    return "\n\n".join(parts)


def direct_prompt(query: str, inline: str, signature: Signature) -> str:
    """The single prompt of a direct (non-RLM) answer to a small input."""
    outs = ", ".join(f'"{f.name}": <{f.type_text}>' for f in signature.outputs)
    return (
        f"{inline}\n\nQuery: {query}\n\nReply with only a JSON object {{{outs}}} and nothing else."
    )
