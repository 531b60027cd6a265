"""The agent's workspace: a directory it may list, read, search, write and patch.

Every path is resolved inside the workspace root (``..`` and symlinks that lead out are refused),
writes are atomic (temporary file and rename), and a workspace that is missing or read-only is
reported clearly at start instead of failing on the first write.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import tempfile
import threading
from pathlib import Path
from typing import Any

from holdfast.errors import InvalidInput, ModelFacingError

_UMASK_LOCK = threading.Lock()

MAX_READ_LINES = 400
SKIP_DIRS = {".git", ".venv", "node_modules", "__pycache__", ".mypy_cache", ".ruff_cache"}


class Workspace:
    """A directory the agent works in."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        path = Path(root).expanduser()
        if not path.is_dir():
            raise InvalidInput(f"the workspace {path} does not exist or is not a directory")
        self.root = path.resolve()
        self.writable = os.access(self.root, os.W_OK)

    def resolve(self, rel: str) -> Path:
        """The absolute path of ``rel`` inside the workspace; refuses paths that leave it."""
        if not isinstance(rel, str) or not rel.strip():
            raise ModelFacingError("a path is required")
        target = (self.root / rel).resolve()
        if target != self.root and not target.is_relative_to(self.root):
            raise ModelFacingError(f"the path {rel!r} leaves the workspace")
        return target

    def rel(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix() or "."

    def list(self, path: str = ".", pattern: str = "*", limit: int = 200) -> dict[str, Any]:
        base = self.resolve(path)
        if not base.is_dir():
            raise ModelFacingError(f"{path!r} is not a directory")
        files: list[str] = []
        total = 0
        for p in sorted(base.rglob(pattern)):
            if any(part in SKIP_DIRS for part in p.relative_to(self.root).parts):
                continue
            if p.is_file():
                total += 1
                if len(files) < limit:
                    files.append(f"{self.rel(p)} ({p.stat().st_size} bytes)")
        return {"files": files, "total": total, "shown": len(files)}

    def read(self, path: str, start_line: int = 1, max_lines: int = MAX_READ_LINES) -> str:
        target = self.resolve(path)
        if not target.is_file():
            raise ModelFacingError(f"no file {path!r} in the workspace")
        try:
            lines = target.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError as exc:
            raise ModelFacingError(f"cannot read {path!r}: {exc.strerror}") from exc
        start = max(1, start_line)
        chunk = lines[start - 1 : start - 1 + max(1, min(max_lines, MAX_READ_LINES))]
        body = "\n".join(f"{start + i:>5}  {line}" for i, line in enumerate(chunk))
        end = start + len(chunk) - 1
        more = f"\n[lines {start}-{end} of {len(lines)}; read on with start_line={end + 1}]"
        return body + (more if end < len(lines) else "")

    def search(
        self, query: str, path: str = ".", regex: bool = False, limit: int = 50
    ) -> dict[str, Any]:
        base = self.resolve(path)
        try:
            pattern = re.compile(query if regex else re.escape(query), re.IGNORECASE)
        except re.error as exc:
            raise ModelFacingError(f"bad regular expression: {exc}") from exc
        hits: list[str] = []
        files = [base] if base.is_file() else sorted(base.rglob("*"))
        for p in files:
            if not p.is_file() or any(part in SKIP_DIRS for part in p.relative_to(self.root).parts):
                continue
            try:
                text = p.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                continue
            for n, line in enumerate(text.splitlines(), 1):
                if pattern.search(line):
                    hits.append(f"{self.rel(p)}:{n}: {line.strip()[:200]}")
                    if len(hits) >= limit:
                        return {"hits": hits, "truncated": True}
        return {"hits": hits, "truncated": False}

    def write(self, path: str, content: str) -> dict[str, Any]:
        target = self.resolve(path)
        if not self.writable:
            raise ModelFacingError(f"the workspace {self.root} is read-only; nothing was written")
        try:
            replace_text(target, content)
        except OSError as exc:
            raise ModelFacingError(f"cannot write {path!r}: {exc.strerror}") from exc
        return {"path": self.rel(target), "bytes": len(content.encode())}

    def patch(self, path: str, old: str, new: str) -> dict[str, Any]:
        """Replace the one occurrence of ``old`` by ``new`` (ambiguous or missing: an error)."""
        target = self.resolve(path)
        if not target.is_file():
            raise ModelFacingError(f"no file {path!r} in the workspace")
        text = target.read_text(encoding="utf-8")
        count = text.count(old) if old else 0
        if count != 1:
            raise ModelFacingError(
                f"patch needs `old` to occur exactly once in {path!r}; it occurs {count} times"
            )
        self.write(path, text.replace(old, new, 1))
        return {"path": self.rel(target), "replaced": 1}


def current_umask() -> int:
    """The process's umask, read without changing it (``os.umask`` sets it, for every thread)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def replace_text(target: Path, content: str) -> None:
    """Write ``target`` atomically (a temporary file beside it, then a rename), keeping an
    existing file's permission bits and giving a new one ``0o666`` less the umask, as ``open``
    would (a temporary file is created ``0o600``, which the rename would otherwise keep)."""
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        mode = 0o666 & ~current_umask()
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".holdfast-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(content)
            os.fchmod(fh.fileno(), mode)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
