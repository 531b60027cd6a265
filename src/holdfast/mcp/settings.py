"""What an MCP server may touch and spend: its roots, its namespace, its model and its caps.

One :class:`MCPSettings` is built at the edge (``holdfast mcp``'s options, then ``HOLDFAST_*``
variables) and never read from the environment again. The server is confined to it: every path a
client names must resolve inside ``roots``, memory is read and written in one ``namespace``, and
every budget a client asks for is clipped to the caps in :class:`AnalyzeCaps`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from holdfast.errors import ConfigError
from holdfast.memory.files import check_namespace

_NAMESPACE_CHARS = re.compile(r"[^a-z0-9_-]+")


@dataclass(frozen=True)
class AnalyzeCaps:
    """Server-side ceilings for one ``analyze`` call; a client can ask for less, never more."""

    max_wall_s: float = 300.0
    max_usd: float | None = None
    max_tokens: int = 2_000_000
    max_iterations: int = 30
    max_sub_calls: int = 500
    max_input_bytes: int = 256 * 1024 * 1024
    max_files: int = 10_000

    def __post_init__(self) -> None:
        for name in ("max_wall_s", "max_tokens", "max_iterations", "max_sub_calls"):
            value = getattr(self, name)
            if not _positive(value):
                raise ConfigError(f"the analyze cap {name} must be a positive finite number")
        if self.max_usd is not None and not _positive(self.max_usd):
            raise ConfigError("the analyze cap max_usd must be a positive finite number or unset")


@dataclass(frozen=True)
class MCPSettings:
    """Everything one MCP server is allowed to do."""

    roots: tuple[Path, ...]
    namespace: str
    model: str | None = None
    sub_model: str | None = None
    memory_root: Path | None = None
    embedder: str = "local"
    database_url: str | None = None
    caps: AnalyzeCaps = field(default_factory=AnalyzeCaps)
    tasks: bool = False
    allow_purge: bool = False

    def __post_init__(self) -> None:
        if not self.roots:
            raise ConfigError("an MCP server needs at least one workspace root (--root DIR)")
        resolved = []
        for root in self.roots:
            path = Path(root).expanduser().resolve()
            if not path.is_dir():
                raise ConfigError(f"the workspace root {str(root)!r} is not a directory")
            resolved.append(path)
        object.__setattr__(self, "roots", tuple(resolved))
        check_namespace(self.namespace)


def default_namespace(roots: tuple[Path, ...] | list[Path]) -> str:
    """The namespace a project uses when none is given: ``project-<first root's folder name>``.

    Two coding agents started in the same project folder therefore share one namespace, and
    different projects never see each other's memories unless a namespace is named on purpose.
    """
    if not roots:
        return "default"
    name = Path(roots[0]).expanduser().resolve().name.lower()
    slug = _NAMESPACE_CHARS.sub("-", name).strip("-_")[:48] or "root"
    return f"project-{slug}"


def _positive(value: float | int) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0
