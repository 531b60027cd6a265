"""Confining the paths an MCP client names to the workspace roots the server was started with.

A client (a coding agent, possibly steered by text it read) names files and folders for
``analyze``. Each name is resolved with every symbolic link followed, and the real path must lie
inside one of the roots; a folder is accepted only when nothing inside it links out of the roots.
Only regular files and folders are accepted (never a FIFO, socket or device, which could block a
read or reach the host). The resolved real paths are what the job reads, so a link inside the
roots that points out of them is refused here rather than followed later.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from holdfast.errors import InvalidInput


class PathRefused(InvalidInput):
    """A path outside the server's roots, or one that is not a regular file or folder."""

    code = "path_refused"


@dataclass(frozen=True)
class Confined:
    """A client-named path after resolution: the real path, its kind and its size in bytes."""

    name: str
    path: Path
    kind: str
    size: int
    files: int


def _inside(real: Path, roots: tuple[Path, ...]) -> bool:
    return any(real == root or real.is_relative_to(root) for root in roots)


def confine(raw: object, roots: tuple[Path, ...], *, max_files: int, max_bytes: int) -> Confined:
    """Resolve ``raw`` (absolute, or relative to the first root) to a real path inside ``roots``."""
    if not isinstance(raw, str) or not raw.strip():
        raise InvalidInput("a path must be a non-empty string")
    if "\x00" in raw:
        raise PathRefused("a path must not contain NUL characters")
    given = Path(raw).expanduser()
    candidate = given if given.is_absolute() else roots[0] / given
    try:
        real = candidate.resolve(strict=True)
    except FileNotFoundError:
        raise InvalidInput(f"no such file or folder: {raw!r}") from None
    except (OSError, RuntimeError) as exc:
        raise InvalidInput(f"cannot resolve {raw!r}: {exc}") from None
    if not _inside(real, roots):
        raise PathRefused(
            f"{raw!r} is outside the workspace roots this server may read "
            f"({', '.join(str(r) for r in roots)})"
        )
    mode = real.stat().st_mode
    if stat.S_ISREG(mode):
        size = real.stat().st_size
        if size > max_bytes:
            raise InvalidInput(
                f"{raw!r} is {size:,} bytes, over this server's cap of {max_bytes:,}"
            )
        return Confined(raw, real, "file", size, 1)
    if not stat.S_ISDIR(mode):
        raise PathRefused(f"{raw!r} is not a regular file or folder")
    files, size = _scan_dir(raw, real, roots, max_files=max_files, max_bytes=max_bytes)
    return Confined(raw, real, "dir", size, files)


def _scan_dir(
    raw: str, top: Path, roots: tuple[Path, ...], *, max_files: int, max_bytes: int
) -> tuple[int, int]:
    files = 0
    size = 0
    for dirpath, dirnames, filenames in os.walk(top, followlinks=False):
        for name in dirnames + filenames:
            full = Path(dirpath) / name
            if full.is_symlink():
                try:
                    target = full.resolve(strict=True)
                except (OSError, RuntimeError):
                    continue  # a dangling link reads nothing
                if not _inside(target, roots):
                    raise PathRefused(
                        f"{raw!r} contains {str(full.relative_to(top))!r}, a link to a path "
                        "outside the workspace roots"
                    )
        for name in filenames:
            full = Path(dirpath) / name
            try:
                st = full.lstat()
            except OSError:
                continue
            if not stat.S_ISREG(st.st_mode):
                continue
            files += 1
            size += st.st_size
            if files > max_files:
                raise InvalidInput(f"{raw!r} has over {max_files:,} files, this server's cap")
            if size > max_bytes:
                raise InvalidInput(f"{raw!r} holds over {max_bytes:,} bytes, this server's cap")
    return files, size
