"""Inputs of an RLM job: checked, described by metadata only, and loaded into the box once.

The root model never sees an input's payload: it sees its name, type, size, structure (list
lengths, keys, a file tree, line counts) and a short preview, and reaches the data through code.
Files are handed to the box as descriptors (no copy through the protocol); in-memory text above a
small size is spilled to a private temporary file first for the same reason. A directory is listed;
its files are read on demand through a host function confined to that directory.
"""

from __future__ import annotations

import codecs
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from holdfast.errors import InvalidInput

Kind = Literal["text", "bytes", "json", "file", "dir"]

DEFAULT_MAX_INPUT_BYTES = 1 << 30
PREVIEW_CHARS = 240
_SPILL_BYTES = 1 << 20
_MAX_LISTED = 200
_MAX_DIR_FILES = 100_000


@dataclass
class JobInput:
    """One named input: its kind, where its data is, and its size."""

    name: str
    kind: Kind
    value: Any = None
    path: Path | None = None
    size: int = 0
    lines: int | None = None
    binary: bool = False
    files: list[tuple[str, int]] = field(default_factory=list)
    origin: str = "value"

    def describe(self) -> str:
        """Metadata for the prompt: type, size, structure and a short preview, never the payload."""
        return describe_input(self)

    def source(self) -> dict[str, Any]:
        """What the trace records about the input (enough to replay, never the payload)."""
        out: dict[str, Any] = {"name": self.name, "kind": self.kind, "size": self.size}
        if self.origin != "value" and self.path is not None:
            out["path"] = str(self.path)
        return out


def prepare_inputs(
    inputs: dict[str, Any], *, max_input_bytes: int = DEFAULT_MAX_INPUT_BYTES
) -> list[JobInput]:
    """Check and classify every input; raise :class:`InvalidInput` with a clear message if bad."""
    prepared: list[JobInput] = []
    total = 0
    for name, value in inputs.items():
        if not name.isidentifier() or name.startswith("_"):
            raise InvalidInput(
                f"input name {name!r} must be a Python identifier not starting with '_'"
            )
        item = _classify(name, value)
        total += item.size
        if total > max_input_bytes:
            raise InvalidInput(
                f"the inputs total {total:,} bytes, over the limit of {max_input_bytes:,} bytes "
                f"(input {name!r}); split the job or raise max_input_bytes",
                input=name,
                size=total,
            )
        prepared.append(item)
    return prepared


def _classify(name: str, value: Any) -> JobInput:
    if isinstance(value, os.PathLike):
        return _classify_path(name, Path(value))
    if isinstance(value, str):
        if not value:
            raise InvalidInput(f"input {name!r} is empty")
        return JobInput(name, "text", value=value, size=len(value), lines=value.count("\n") + 1)
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        if not data:
            raise InvalidInput(f"input {name!r} is empty")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return JobInput(name, "bytes", value=data, size=len(data), binary=True)
        return JobInput(name, "text", value=text, size=len(text), lines=text.count("\n") + 1)
    if isinstance(value, (list, tuple, dict)):
        try:
            encoded = json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"input {name!r} is not JSON-like data: {exc}") from None
        return JobInput(name, "json", value=json.loads(encoded), size=len(encoded))
    if isinstance(value, (int, float, bool)) or value is None:
        try:
            return JobInput(name, "json", value=value, size=len(json.dumps(value, allow_nan=False)))
        except ValueError:
            raise InvalidInput(f"input {name!r} is {value!r}, which is not a JSON number") from None
    raise InvalidInput(
        f"input {name!r} is a {type(value).__name__}; pass str, bytes, a list or dict, or a "
        "pathlib.Path to a file or directory"
    )


def _classify_path(name: str, path: Path) -> JobInput:
    try:
        st = path.stat()
    except OSError as exc:
        raise InvalidInput(f"input {name!r}: cannot read {path}: {exc.strerror}") from None
    if path.is_dir():
        files = _list_dir(name, path)
        size = sum(s for _, s in files)
        return JobInput(name, "dir", path=path.resolve(), size=size, files=files, origin="path")
    if st.st_size == 0:
        raise InvalidInput(f"input {name!r}: the file {path} is empty")
    return JobInput(name, "file", path=path.resolve(), size=st.st_size, origin="path")


def scan_file(item: JobInput, max_input_bytes: int) -> None:
    """Count lines and check UTF-8 in bounded memory (a file is streamed, never held whole)."""
    if item.kind != "file" or item.path is None or item.lines is not None:
        return
    if item.size > max_input_bytes:
        raise InvalidInput(f"input {item.name!r} is {item.size:,} bytes, over {max_input_bytes:,}")
    decoder = codecs.getincrementaldecoder("utf-8")()
    lines = 0
    binary = False
    with item.path.open("rb") as fh:
        while chunk := fh.read(8 << 20):
            lines += chunk.count(b"\n")
            if binary or (chunk.isascii() and not decoder.getstate()[0]):
                continue
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError:
                binary = True
        if not binary:
            try:
                decoder.decode(b"", final=True)
            except UnicodeDecodeError:
                binary = True
    item.binary = binary
    item.lines = lines + 1


def _list_dir(name: str, root: Path) -> list[tuple[str, int]]:
    files: list[tuple[str, int]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for fn in sorted(filenames):
            full = Path(dirpath) / fn
            if full.is_symlink() or not full.is_file():
                continue
            files.append((str(full.relative_to(root)), full.stat().st_size))
            if len(files) > _MAX_DIR_FILES:
                raise InvalidInput(
                    f"input {name!r}: the directory {root} has over {_MAX_DIR_FILES:,} files"
                )
    if not files:
        raise InvalidInput(f"input {name!r}: the directory {root} has no files")
    return files


def read_dir_file(item: JobInput, relpath: str, offset: int = 0, length: int = 4 << 20) -> str:
    """Read part of a file of a directory input; refuses any path outside that directory."""
    if item.kind != "dir" or item.path is None:
        raise ValueError(f"{item.name} is not a directory input")
    target = (item.path / relpath).resolve()
    if item.path not in target.parents or not target.is_file():
        raise ValueError(f"{relpath!r} is not a file of the input {item.name!r}")
    length = max(0, min(int(length), 8 << 20))
    with target.open("rb") as fh:
        fh.seek(max(0, int(offset)))
        data = fh.read(length)
    return data.decode("utf-8", "replace")


def spill_path(item: JobInput, tmpdir: Path) -> Path | None:
    """A file holding an in-memory input, so the box reads it by descriptor, not through messages.

    Bytes always spill (they are not JSON); text and JSON data spill from 1 MiB (JSON as its text,
    decoded once inside the box).
    """
    if item.kind not in ("text", "bytes", "json"):
        return None
    if item.kind != "bytes" and item.size < _SPILL_BYTES:
        return None
    fd, name = tempfile.mkstemp(prefix=f"input-{item.name}-", dir=tmpdir)
    with os.fdopen(fd, "wb") as fh:
        if item.kind == "json":
            fh.write(json.dumps(item.value, ensure_ascii=False).encode("utf-8"))
        elif isinstance(item.value, str):
            fh.write(item.value.encode("utf-8"))
        else:
            fh.write(item.value)
    return Path(name)


def _preview_text(text: str) -> str:
    head = text[:PREVIEW_CHARS]
    more = "..." if len(text) > PREVIEW_CHARS else ""
    return json.dumps(head, ensure_ascii=False) + more


def _file_preview(path: Path, binary: bool) -> str:
    with path.open("rb") as fh:
        head = fh.read(PREVIEW_CHARS * 4)
    if binary:
        return repr(head[:64]) + "..."
    return _preview_text(head.decode("utf-8", "replace"))


def _json_structure(value: Any, depth: int = 0) -> str:
    if isinstance(value, list):
        if not value:
            return "list (empty)"
        kinds = sorted({type(v).__name__ for v in value[:1000]})
        inner = _json_structure(value[0], depth + 1) if depth < 2 else type(value[0]).__name__
        return f"list of {len(value):,} items (types: {', '.join(kinds)}); first item: {inner}"
    if isinstance(value, dict):
        keys = list(value)[:20]
        parts = [f"{k!r}: {type(value[k]).__name__}" for k in keys]
        more = f", ... {len(value) - 20} more keys" if len(value) > 20 else ""
        return f"dict with {len(value):,} keys {{{', '.join(parts)}{more}}}"
    text = json.dumps(value, ensure_ascii=False)
    return text[:80] + ("..." if len(text) > 80 else "")


def describe_input(item: JobInput) -> str:
    """The metadata line(s) the root model sees for one input."""
    if item.kind == "text":
        return (
            f"- `{item.name}`: str, {item.size:,} chars, {item.lines:,} lines. "
            f"Preview: {_preview_text(item.value)}"
        )
    if item.kind == "bytes":
        return (
            f"- `{item.name}`: bytes, {item.size:,} bytes, not valid UTF-8 text. "
            f"Preview: {bytes(item.value[:64])!r}..."
        )
    if item.kind == "json":
        return f"- `{item.name}`: {_json_structure(item.value)} ({item.size:,} chars as JSON)"
    if item.kind == "file":
        assert item.path is not None
        if item.binary:
            return (
                f"- `{item.name}`: bytes (read-only mmap), {item.size:,} bytes from the file "
                f"{item.path.name}, not valid UTF-8. Preview: {_file_preview(item.path, True)}"
            )
        return (
            f"- `{item.name}`: str, {item.size:,} bytes of UTF-8 text, {item.lines or 0:,} lines, "
            f"from the file {item.path.name}. Preview: {_file_preview(item.path, False)}"
        )
    shown = item.files[:_MAX_LISTED]
    tree = "\n".join(f"    {p} ({s:,} bytes)" for p, s in shown)
    more = (
        f"\n    ... {len(item.files) - len(shown)} more files"
        if len(item.files) > len(shown)
        else ""
    )
    return (
        f"- `{item.name}`: directory {item.path.name if item.path else ''} with "
        f"{len(item.files):,} files, {item.size:,} bytes in all. `{item.name}.files` lists "
        f"(path, size) pairs; `{item.name}.read(path, offset=0, length=4_000_000)` returns text.\n"
        f"{tree}{more}"
    )


def inline_text(items: list[JobInput]) -> str | None:
    """All inputs as prompt text for a direct call, or None when one cannot be inlined."""
    parts: list[str] = []
    for item in items:
        if item.kind == "text":
            body = item.value
        elif item.kind == "json":
            body = json.dumps(item.value, ensure_ascii=False, indent=1)
        elif item.kind == "file" and item.path is not None and not item.binary:
            body = item.path.read_text("utf-8")
        else:
            return None
        parts.append(f"<{item.name}>\n{body}\n</{item.name}>")
    return "\n\n".join(parts)
