"""Scripted models for smoke runs: honest policies, labelled as scripted in every report.

A scripted policy stands in for a model the way a careful person would drive the REPL: it reads
the query it was sent, writes code that searches the input, reads the printed output of that
code in the next turn and submits what it found there. It never opens the generator's files,
sidecars or gold answers; everything it knows comes from the messages of the call, so when the
engine loses or truncates something, the scripted run fails like a model would. Its scores say
that the whole path (generation, engine, box, broker, scorer, store, report) works, not how well
any model reasons; reports mark such runs ``scripted``.

Each policy is a function of the messages, for :class:`holdfast.testing.FunctionLM`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from holdfast.lm.types import Message

Policy = Callable[..., str]

_QUERY = re.compile(r"Query: (.*?)\n\nInputs", re.S)


def _query(messages: list[Message]) -> str:
    for m in messages:
        if m.get("role") == "user":
            found = _QUERY.search(str(m.get("content") or ""))
            if found:
                return found.group(1)
    return ""


def _step(messages: list[Message]) -> int:
    return sum(1 for m in messages if m.get("role") == "assistant")


def _last_output(messages: list[Message]) -> str:
    for m in reversed(messages):
        if m.get("role") == "user":
            text = str(m.get("content") or "")
            _, _, out = text.partition("Output:\n")
            return out.rsplit("\n\n[turn ", 1)[0]
    return ""


def _cell(thought: str, code: str) -> str:
    return f"{thought}\n```python\n{code.strip()}\n```\n"


def _submit(field: str, value: Any) -> str:
    return _cell("Submitting what the search found.", f"SUBMIT({field}={json.dumps(value)})")


def niah_root(messages: list[Message], **_: Any) -> str:
    """Greps the haystack for the asked vault (or every vault) and submits the printed code."""
    query, step = _query(messages), _step(messages)
    key = re.search(r"vault ([A-Z]+-\d+)", query)
    if step == 0:
        if key:
            pattern = rf"[^\n]*\bvault {re.escape(key.group(1))}\b[^\n]*"
        else:
            pattern = r"[^\n]*access code for vault[^\n]*"
        return _cell(
            "I search the input for the sentences about the vault(s) instead of reading it.",
            f"import re\nhits = re.findall({pattern!r}, context)\n"
            "print(len(hits), 'matching lines')\nprint('\\n'.join(hits[:100]))",
        )
    found = dict(re.findall(r"vault ([A-Z]+-\d+) is ([A-Z0-9-]+)\.", _last_output(messages)))
    if key:
        return _submit("code", found.get(key.group(1), "not found"))
    return _submit("codes", found)


_KEYWORDS = {
    "billing": ("charged", "refund", "invoice", "bill", "fee", "payment", "statement", "debited"),
    "shipping": ("parcel", "delivery", "courier", "package", "tracking", "dispatched", "depot"),
    "account": ("log in", "password", "email", "username", "sign in", "profile", "locked"),
    "product": ("stopped working", "broke", "flickers", "dimmer", "leaks", "zipper", "screen"),
    "praise": ("thanks", "great", "lovely", "kind", "happy", "recommend", "wonderful"),
}


def topic_sub_model(messages: list[Message], **_: Any) -> str:
    """The scripted sub-model of the aggregation suite: labels each numbered message by keywords
    (its own list, not the generator's phrases), one ``<n> <topic>`` line per message."""
    prompt = str(messages[-1].get("content") or "")
    lines = []
    for n, text in re.findall(r"^(\d+)\t(.*)$", prompt, re.M):
        low = text.lower()
        label = next((t for t, words in _KEYWORDS.items() if any(w in low for w in words)), "other")
        lines.append(f"{n} {label}")
    return "\n".join(lines) or "none"


_CLASSIFY = """\
import re
lines = [l for l in records.splitlines() if ' :: ' in l]
msgs = [l.split(' :: ', 1)[1] for l in lines]
head = ('Label the topic of each numbered customer message as one of: billing, shipping, '
        'account, product, praise. Reply with one line per message: <number> <topic>.\\n')
size = 400
prompts = [head + '\\n'.join(f'{i}\\t{m}' for i, m in enumerate(msgs[s:s + size], s))
           for s in range(0, len(msgs), size)]
replies = llm_batch(prompts)
labels = {}
for r in replies:
    if isinstance(r, SubCallError):
        continue
    for n, t in re.findall(r'^(\\d+)\\s+(\\w+)', r, re.M):
        labels[int(n)] = t.lower()
fields = [dict(re.findall(r'(\\w+)=(\\S+)', l.split(' :: ', 1)[0])) for l in lines]
print(len(lines), 'records,', len(prompts), 'sub-calls,', len(labels), 'labelled')
"""


def oolong_root(messages: list[Message], **_: Any) -> str:
    """Labels every record with sub-model calls in chunks, then aggregates in Python."""
    query, step = _query(messages), _step(messages)
    if step == 0:
        return _cell(
            "First the shape of the records.",
            "lines = records.splitlines()\nprint(len(lines), 'lines')\nprint('\\n'.join(lines[:3]))",
        )
    count = re.search(r"How many records are about (\w+)", query)
    group = re.search(r"total amount of the records about (\w+)", query)
    pair = re.search(r"record about (\w+) and at least one record about (\w+)", query)
    if step == 1:
        if count:
            tail = f"result = sum(1 for t in labels.values() if t == {count.group(1)!r})"
        elif group:
            tail = (
                "totals = {}\nfor i, f in enumerate(fields):\n"
                f"    if labels.get(i) == {group.group(1)!r}:\n"
                "        totals[f['city']] = totals.get(f['city'], 0.0) + float(f['amount'])\n"
                "result = {c: round(v, 2) for c, v in sorted(totals.items())}"
            )
        elif pair:
            a, b = pair.group(1), pair.group(2)
            tail = (
                "seen = {}\nfor i, f in enumerate(fields):\n"
                "    seen.setdefault(f['user'], set()).add(labels.get(i))\n"
                f"both = sorted(u for u, ts in seen.items() if {a!r} in ts and {b!r} in ts)\n"
                "result = [[x, y] for i, x in enumerate(both) for y in both[i + 1:]]"
            )
        else:
            tail = "result = None"
        return _cell(
            "I label the messages with the sub-model in chunks, then aggregate in Python.",
            _CLASSIFY + tail + "\nprint(repr(result)[:3000])",
        )
    name = "count" if count else "totals" if group else "pairs"
    return _cell("The aggregate is computed; submitting it.", f"SUBMIT({name}=result)")


_SEARCH = """\
hits = []
for path, size in docs.files:
    text = docs.read(path)
    if {name!r} in text:
        hits.append((path, text[:400]))
for path, text in hits[:40]:
    print('==', path)
    print(text)
"""


def multihop_root(messages: list[Message], **_: Any) -> str:
    """Follows the chain one file at a time: person -> company -> city (-> country), reading
    each link from the outputs printed so far (friends and rivals are mentioned too)."""
    query, step = _query(messages), _step(messages)
    person = re.search(r"company that (.+?) works for", query)
    want_country = query.startswith("In which country")
    seen = "\n".join(_outputs(messages))
    if person is None:
        return _submit("answer", "unknown")
    company = re.search(rf"{re.escape(person.group(1))} works for ([^.\n]+?) as ", seen)
    city = company and re.search(rf"{re.escape(company.group(1))} is headquartered in (\w+)", seen)
    country = city and re.search(rf"{re.escape(city.group(1))} is a city in (\w+)", seen)
    if step == 0:
        return _cell("I look for the person's file.", _SEARCH.format(name=person.group(1)))
    if company is None:
        return _submit("answer", "unknown")
    if city is None:
        if step >= 4:
            return _submit("answer", "unknown")
        return _cell(
            "Now the company's file.", _SEARCH.format(name=company.group(1) + " is headquartered")
        )
    if not want_country:
        return _submit("answer", city.group(1))
    if country is None:
        if step >= 4:
            return _submit("answer", "unknown")
        return _cell("Now the city's file.", _SEARCH.format(name=city.group(1) + " is a city"))
    return _submit("answer", country.group(1))


def _outputs(messages: list[Message]) -> list[str]:
    out = []
    for m in messages[2:]:
        if m.get("role") == "user":
            text = str(m.get("content") or "")
            out.append(text.partition("Output:\n")[2].rsplit("\n\n[turn ", 1)[0])
    return out


RLM_POLICIES: dict[str, tuple[Policy, Policy | None]] = {
    "niah-single": (niah_root, None),
    "niah-multi": (niah_root, None),
    "oolong": (oolong_root, topic_sub_model),
    "multihop": (multihop_root, None),
}


def plain_answer(messages: list[Message], **_: Any) -> str:
    """The scripted stand-in for the plain-model baseline: it is sent the whole input inline and
    searches that text with the same rules as the RLM policies (no sub-model), replying JSON."""
    text = str(messages[-1].get("content") or "")
    query = text.rsplit("Query: ", 1)[-1]
    key = re.search(r"vault ([A-Z]+-\d+)", query)
    found = dict(re.findall(r"vault ([A-Z]+-\d+) is ([A-Z0-9-]+)\.", text))
    if "access code" in query:
        return json.dumps(
            {"code": found.get(key.group(1), "not found")} if key else {"codes": found}
        )
    if " :: " in text:
        return json.dumps(_aggregate_inline(text, query))
    person = re.search(r"company that (.+?) works for", query)
    if person:
        company = re.search(rf"{re.escape(person.group(1))} works for ([^.\n]+?) as ", text)
        city = company and re.search(
            rf"{re.escape(company.group(1))} is headquartered in (\w+)", text
        )
        if not city:
            return json.dumps({"answer": "unknown"})
        if query.startswith("In which country"):
            country = re.search(rf"{city.group(1)} is a city in (\w+)", text)
            return json.dumps({"answer": country.group(1) if country else "unknown"})
        return json.dumps({"answer": city.group(1)})
    return json.dumps({"answer": "unknown"})


def _label(message: str) -> str:
    low = message.lower()
    return next((t for t, words in _KEYWORDS.items() if any(w in low for w in words)), "other")


def _aggregate_inline(text: str, query: str) -> dict[str, Any]:
    """The plain baseline's aggregation: label each inline record with the same keyword rule
    the scripted sub-model uses, then count, total or pair as the query asks."""
    rows = []
    for line in text.splitlines():
        head, sep, message = line.partition(" :: ")
        if sep:
            rows.append((dict(re.findall(r"(\w+)=(\S+)", head)), _label(message)))
    count = re.search(r"How many records are about (\w+)", query)
    if count:
        return {"count": sum(1 for _, t in rows if t == count.group(1))}
    group = re.search(r"total amount of the records about (\w+)", query)
    if group:
        totals: dict[str, float] = {}
        for f, t in rows:
            if t == group.group(1):
                totals[f["city"]] = totals.get(f["city"], 0.0) + float(f["amount"])
        return {"totals": {c: round(v, 2) for c, v in sorted(totals.items())}}
    pair = re.search(r"record about (\w+) and at least one record about (\w+)", query)
    if pair:
        seen: dict[str, set[str]] = {}
        for f, t in rows:
            seen.setdefault(f["user"], set()).add(t)
        both = sorted(u for u, ts in seen.items() if pair.group(1) in ts and pair.group(2) in ts)
        return {"pairs": [[x, y] for i, x in enumerate(both) for y in both[i + 1 :]]}
    return {"answer": "unknown"}
