"""The Markdown format of memory files: one section per item, readable and editable by a person.

```
## m-18c2f0a1b2c-9f3e1a · fact
- mention: 2023-05-08T13:56:00+00:00
- event: 2022-01-01T00:00:00+00:00 .. 2022-12-31T23:59:59+00:00
- entities: Alice Chen; Berlin
- source: session=s2 turn=4

Alice Chen moved to Berlin last year.
```

A section starts at a ``## <id>`` heading, its metadata is the ``- key: value`` list right below
it, and its body runs to the next heading. Body lines that would read as a heading are escaped
with a backslash on write, so stored text can never forge another item or its metadata. Trust is
not in the file at all: it lives in the namespace's trust ledger (see :mod:`.files`), so recalled
text cannot raise its own trust. A section that does not parse is reported with its file and line
and skipped; the rest of the file is still read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from holdfast.memory.items import (
    Kind,
    MemoryItem,
    Source,
    Status,
    parse_evidence,
    parse_time,
)

HEADING = re.compile(r"^## (?P<id>m-[0-9A-Za-z_-]+)(?:\s+·\s+(?P<kind>[a-z]+))?\s*$")
META = re.compile(r"^- (?P<key>[a-z][a-z-]*):\s?(?P<value>.*)$")
_ESCAPED = re.compile(r"^(\\*)##")
KNOWN_KEYS = {
    "mention",
    "event",
    "valid-to",
    "entities",
    "source",
    "confidence",
    "evidence",
    "supersedes",
    "superseded-by",
    "status",
    "tags",
}


@dataclass(frozen=True)
class ParseIssue:
    """A problem found while reading a memory file, with where it is."""

    path: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"

    def to_dict(self) -> dict[str, object]:
        return {"path": self.path, "line": self.line, "message": self.message}


@dataclass(frozen=True)
class Section:
    """An item as found in a file, with the 1-based lines its section spans."""

    item: MemoryItem
    start: int
    end: int
    body_line: int


def escape_body(text: str) -> str:
    return "\n".join(("\\" + line if _ESCAPED.match(line) else line) for line in text.split("\n"))


def unescape_body(text: str) -> str:
    out = []
    for line in text.split("\n"):
        m = _ESCAPED.match(line)
        out.append(line[1:] if m and m.group(1) else line)
    return "\n".join(out)


def render_item(item: MemoryItem) -> str:
    """The Markdown section for ``item`` (ending with one blank line)."""
    lines = [f"## {item.id} · {item.kind.value}", f"- mention: {item.mention_time.isoformat()}"]
    if item.event_start or item.event_end:
        start = item.event_start.isoformat() if item.event_start else ""
        end = item.event_end.isoformat() if item.event_end else ""
        lines.append(f"- event: {start} .. {end}")
    if item.valid_to:
        lines.append(f"- valid-to: {item.valid_to.isoformat()}")
    if item.entities:
        lines.append("- entities: " + "; ".join(item.entities))
    src = item.source.to_dict()
    if src:
        lines.append("- source: " + " ".join(f"{k}={_quote(str(v))}" for k, v in src.items()))
    if item.confidence is not None:
        lines.append(f"- confidence: {item.confidence:.3f}")
    if item.evidence:
        lines.append("- evidence: " + ", ".join(e.render() for e in item.evidence))
    if item.supersedes:
        lines.append("- supersedes: " + ", ".join(item.supersedes))
    if item.superseded_by:
        lines.append(f"- superseded-by: {item.superseded_by}")
    if item.status is not Status.ACTIVE:
        lines.append(f"- status: {item.status.value}")
    if item.tags:
        lines.append("- tags: " + ", ".join(item.tags))
    lines.append("")
    lines.append(escape_body(item.text))
    lines.append("")
    return "\n".join(lines) + "\n"


def _quote(value: str) -> str:
    if re.search(r'[\s"=]', value) or not value:
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return value


_PAIR = re.compile(r'(?P<k>[a-z]+)=(?:"(?P<q>(?:[^"\\]|\\.)*)"|(?P<v>\S+))')


def _parse_source(value: str) -> Source:
    data: dict[str, str] = {}
    pos = 0
    value = value.strip()
    while pos < len(value):
        m = _PAIR.match(value, pos)
        if not m:
            raise ValueError(f"cannot read source {value!r}: expected key=value pairs")
        raw = m.group("q")
        data[m.group("k")] = re.sub(r"\\(.)", r"\1", raw) if raw is not None else m.group("v")
        pos = m.end()
        while pos < len(value) and value[pos] == " ":
            pos += 1
    unknown = set(data) - set(Source.__dataclass_fields__)
    if unknown:
        raise ValueError(f"unknown source field(s): {', '.join(sorted(unknown))}")
    return Source.from_dict(data)


def _parse_range(value: str) -> tuple[datetime | None, datetime | None]:
    if ".." in value:
        a, b = value.split("..", 1)
        return parse_time(a.strip()), parse_time(b.strip())
    t = parse_time(value.strip())
    return t, t


def parse_file(text: str, path: str, namespace: str) -> tuple[list[Section], list[ParseIssue]]:
    """Read every item section from a memory file's text; bad sections become issues."""
    lines = text.split("\n")
    sections: list[Section] = []
    issues: list[ParseIssue] = []
    starts = [i for i, line in enumerate(lines) if line.startswith("## ")]
    for n, start in enumerate(starts):
        end = starts[n + 1] if n + 1 < len(starts) else len(lines)
        try:
            sections.append(_parse_section(lines, start, end, path, namespace))
        except _SectionError as exc:
            issues.append(ParseIssue(path, exc.line + 1, exc.message))
    return sections, issues


class _SectionError(Exception):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


def _parse_section(lines: list[str], start: int, end: int, path: str, ns: str) -> Section:
    head = HEADING.match(lines[start])
    if not head:
        raise _SectionError(
            start, f"not an item heading (expected '## m-<id> · <kind>'): {lines[start][:80]!r}"
        )
    try:
        kind = Kind(head.group("kind") or "fact")
    except ValueError:
        raise _SectionError(
            start,
            f"unknown kind {head.group('kind')!r}; use one of {', '.join(k.value for k in Kind)}",
        ) from None
    fields: dict[str, object] = {"kind": kind}
    i = start + 1
    while i < end and lines[i].strip():
        m = META.match(lines[i])
        if not m:
            break
        key, value = m.group("key"), m.group("value").strip()
        if key not in KNOWN_KEYS:
            raise _SectionError(i, f"unknown metadata key {key!r}")
        try:
            _apply(fields, key, value)
        except ValueError as exc:
            raise _SectionError(i, f"bad {key}: {exc}") from None
        i += 1
    while i < end and not lines[i].strip():
        i += 1
    body_line = i
    body = "\n".join(lines[i:end]).strip("\n")
    if not body.strip():
        raise _SectionError(start, f"item {head.group('id')} has no text")
    if "mention_time" not in fields:
        raise _SectionError(start, f"item {head.group('id')} has no '- mention:' time")
    item = MemoryItem(id=head.group("id"), text=unescape_body(body), namespace=ns, **fields)  # type: ignore[arg-type]
    last = end
    while last > start + 1 and not lines[last - 1].strip():
        last -= 1
    return Section(item=item, start=start + 1, end=last, body_line=body_line + 1)


def _split_list(value: str, sep: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in value.split(sep) if p.strip())


def _apply(fields: dict[str, object], key: str, value: str) -> None:
    if key == "mention":
        fields["mention_time"] = parse_time(value)
    elif key == "event":
        fields["event_start"], fields["event_end"] = _parse_range(value)
    elif key == "valid-to":
        fields["valid_to"] = parse_time(value)
    elif key == "entities":
        fields["entities"] = _split_list(value, ";")
    elif key == "source":
        fields["source"] = _parse_source(value)
    elif key == "confidence":
        c = float(value)
        if not 0.0 <= c <= 1.0:
            raise ValueError("confidence must be between 0 and 1")
        fields["confidence"] = c
    elif key == "evidence":
        fields["evidence"] = tuple(parse_evidence(p) for p in _split_list(value, ","))
    elif key == "supersedes":
        fields["supersedes"] = _split_list(value, ",")
    elif key == "superseded-by":
        fields["superseded_by"] = value or None
    elif key == "status":
        fields["status"] = Status(value)
    elif key == "tags":
        fields["tags"] = _split_list(value, ",")
