"""The memory directory on disk: one folder per namespace holding the Markdown truth.

```
<root>/<namespace>/MEMORY.md            curated facts, beliefs and summaries (owner and agent)
<root>/<namespace>/log/2023-05-08.md    dated logs: episodes, observations, and anything untrusted
<root>/<namespace>/.holdfast/trust.jsonl    the trust ledger (id -> trust class), apart from prose
<root>/<namespace>/.holdfast/entities.json  entity merges and splits made by hand or by the API
<root>/<namespace>/.holdfast/lock           an advisory lock serialising writers across processes
```

Appends and rewrites hold the namespace lock and are flushed to disk before the index is touched,
so a crash never leaves an indexed item that is not in a file.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from holdfast.errors import InvalidInput
from holdfast.memory.items import Kind, MemoryItem, Trust
from holdfast.memory.markdown import render_item

NAMESPACE_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
CURATED = "MEMORY.md"


def check_namespace(namespace: str) -> str:
    """Namespaces are plain lowercase names (they become directory names)."""
    if not isinstance(namespace, str) or not NAMESPACE_RE.match(namespace) or ".." in namespace:
        raise InvalidInput(
            f"bad namespace {namespace!r}: use 1-64 characters of a-z, 0-9, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return namespace


class NamespaceDir:
    """The files of one namespace."""

    def __init__(self, root: Path, namespace: str) -> None:
        self.root = root
        self.namespace = check_namespace(namespace)
        self.path = root / namespace
        self.meta = self.path / ".holdfast"

    def ensure(self) -> None:
        self.meta.mkdir(parents=True, exist_ok=True)

    @contextmanager
    def lock(self) -> Iterator[None]:
        """An exclusive advisory lock across threads and processes for this namespace."""
        self.ensure()
        fd = os.open(self.meta / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def rel(self, path: Path) -> str:
        text, root = str(path), str(self.root)
        if text.startswith(root + os.sep) and os.sep == "/":
            return text[len(root) + 1 :]
        return path.relative_to(self.root).as_posix()

    def abs(self, rel: str) -> Path:
        return self.root / rel

    def file_for(self, item: MemoryItem) -> Path:
        """Curated kinds from owner or agent go to MEMORY.md; everything else to the dated log.
        Derived items have a file per subject: observations under ``observations/``, mental
        models under ``models/`` (where the owner reads and edits them)."""
        if "derived" in item.tags:
            subject = next((t[6:] for t in item.tags if t.startswith("about:")), "")
            folder = "models" if item.kind is Kind.SUMMARY else "observations"
            return self.path / folder / f"{slug(subject)}.md"
        curated = item.kind in (Kind.FACT, Kind.BELIEF, Kind.SUMMARY) and item.trust in (
            Trust.OWNER,
            Trust.AGENT,
        )
        if curated:
            return self.path / CURATED
        return self.path / "log" / f"{item.mention_time.date().isoformat()}.md"

    def markdown_files(self) -> list[Path]:
        """Every ``*.md`` file of the namespace outside ``.holdfast`` (one directory walk: recall
        calls this on every search to notice hand edits)."""
        if not self.path.exists():
            return []
        out: list[Path] = []
        for folder, dirs, files in os.walk(self.path):
            dirs[:] = [d for d in dirs if d != ".holdfast"]
            base = Path(folder)
            out.extend(base / f for f in files if f.endswith(".md"))
        return sorted(out)

    def markdown_stats(self) -> dict[str, tuple[int, int] | None]:
        """(size, mtime in ns) of every file :meth:`markdown_files` lists, by path relative to
        the root (None when it vanished between listing and stat): one ``scandir`` walk, the
        cheap half of the check recall makes on every search."""
        out: dict[str, tuple[int, int] | None] = {}
        if not self.path.exists():
            return out
        prefix = self.namespace + "/"
        stack = [(str(self.path), prefix)]
        while stack:
            folder, rel = stack.pop()
            try:
                entries = list(os.scandir(folder))
            except (FileNotFoundError, NotADirectoryError):
                continue
            for entry in entries:
                if entry.is_dir():
                    if entry.name != ".holdfast" and not entry.is_symlink():
                        stack.append((entry.path, rel + entry.name + "/"))
                elif entry.name.endswith(".md"):
                    try:
                        st = entry.stat()
                    except FileNotFoundError:
                        out[rel + entry.name] = None
                        continue
                    out[rel + entry.name] = (st.st_size, st.st_mtime_ns)
        return out

    def append(
        self, path: Path, items: list[MemoryItem], known: tuple[int, int] | None = None
    ) -> tuple[list[int], int]:
        """Append ``items`` to ``path`` in one write and one fsync (hold the lock). Returns the
        1-based heading line of each and the file's new line count. ``known`` is the (size, line
        count) the index recorded: when the size still matches, the file is not re-read."""
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a+b") as fh:
            size = fh.seek(0, os.SEEK_END)
            prefix = b""
            if size == 0:
                prefix = f"# Memory · {self.namespace} · {path.stem}\n\n".encode()
                lines = 0
            else:
                if known is not None and known[0] == size:
                    lines = known[1]
                    fh.seek(max(0, size - 2))
                    tail = fh.read()
                else:
                    fh.seek(0)
                    data = fh.read()
                    lines, tail = data.count(b"\n"), data[-2:]
                if not tail.endswith(b"\n"):
                    prefix = b"\n\n"
                elif not tail.endswith(b"\n\n"):
                    prefix = b"\n"
            lines += prefix.count(b"\n")
            chunks = [prefix]
            heads = []
            for item in items:
                section = render_item(item).encode("utf-8")
                heads.append(lines + 1)
                lines += section.count(b"\n")
                chunks.append(section)
            fh.write(b"".join(chunks))
            fh.flush()
            os.fsync(fh.fileno())
        return heads, lines

    def write_atomic(self, path: Path, text: str) -> None:
        """Replace a file's content atomically (temp file, fsync, rename). Hold the lock."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as fh:
            fh.write(text.encode("utf-8"))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    # ----- the trust ledger
    def trust_ledger(self) -> dict[str, Trust]:
        ledger: dict[str, Trust] = {}
        path = self.meta / "trust.jsonl"
        if not path.exists():
            return ledger
        for raw in path.read_bytes().split(b"\n"):
            try:
                rec = json.loads(raw)
                if rec["trust"] is None:
                    ledger.pop(str(rec["id"]), None)
                else:
                    ledger[str(rec["id"])] = Trust(rec["trust"])
            except (ValueError, KeyError, TypeError):
                continue
        return ledger

    def record_trust(self, entries: list[tuple[str, Trust]]) -> None:
        """Append (id, trust) records durably; written before the items they vouch for."""
        self.ensure()
        with open(self.meta / "trust.jsonl", "a", encoding="utf-8") as fh:
            fh.write("".join(json.dumps({"id": i, "trust": t.value}) + "\n" for i, t in entries))
            fh.flush()
            os.fsync(fh.fileno())

    def revoke_trust(self, item_ids: list[str]) -> None:
        """Withdraw the records of items whose write failed after their trust was recorded, so
        a section later added by hand with one of those ids is not vouched for."""
        self.ensure()
        with open(self.meta / "trust.jsonl", "a", encoding="utf-8") as fh:
            fh.write("".join(json.dumps({"id": i, "trust": None}) + "\n" for i in item_ids))
            fh.flush()
            os.fsync(fh.fileno())

    def purge_trust(self, item_id: str) -> None:
        ledger = self.trust_ledger()
        ledger.pop(item_id, None)
        text = "".join(json.dumps({"id": k, "trust": v.value}) + "\n" for k, v in ledger.items())
        self.write_atomic(self.meta / "trust.jsonl", text)

    # ----- entity decisions
    def rules_version(self) -> float:
        """Changes whenever the entity rules change (the rules file's mtime)."""
        path = self.meta / "entities.json"
        return path.stat().st_mtime if path.exists() else 0.0

    def entity_rules(self) -> dict[str, list[list[str]]]:
        path = self.meta / "entities.json"
        if not path.exists():
            return {"merges": [], "splits": []}
        try:
            data = json.loads(path.read_text("utf-8"))
        except ValueError as exc:
            raise InvalidInput(f"{path} is not valid JSON: {exc}") from exc
        return {"merges": list(data.get("merges", [])), "splits": list(data.get("splits", []))}

    def save_entity_rules(self, rules: dict[str, list[list[str]]]) -> None:
        self.write_atomic(self.meta / "entities.json", json.dumps(rules, indent=2) + "\n")


def slug(subject: str) -> str:
    """A file name for a subject: lower-case letters, digits and dashes, with a short hash so
    two subjects never share a file ("Alice Chen" -> ``alice-chen-1f3a9c``)."""
    base = re.sub(r"[^a-z0-9]+", "-", subject.casefold()).strip("-")[:60] or "subject"
    return f"{base}-{hashlib.sha1(subject.encode('utf-8')).hexdigest()[:6]}"


def file_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
