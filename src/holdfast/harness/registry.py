"""Task kinds: the runners a worker can run, and the tools each one declares.

A kind maps a name (``scripted``, ``agent``...) to a runner, a callable that takes a
:class:`~holdfast.harness.context.StepContext` and returns the task's JSON result. A kind declares
its tools so that policies can be checked at submission (naming an unknown tool is an error) and
so that ``ctx.step`` knows whether a tool has side effects and whether it is idempotent.

Other packages add kinds with :meth:`Registry.register`, lazily by ``"module:attr"`` path, or
through the ``holdfast.task_kinds`` entry-point group.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from holdfast.errors import ConfigError, InvalidInput

if TYPE_CHECKING:
    from holdfast.harness.context import StepContext

Runner = Callable[["StepContext"], Any]


@dataclass(frozen=True)
class ToolSpec:
    """A tool a kind may call through ``ctx.step``."""

    effect: bool = True
    idempotent: bool = False
    description: str = ""


@dataclass(frozen=True)
class TaskKind:
    """A runnable kind of task."""

    name: str
    run: Runner
    tools: Mapping[str, ToolSpec] = field(default_factory=dict)
    description: str = ""
    validate: Callable[[dict[str, Any]], None] | None = None
    """Checks a task's ``input`` at submission; raises ``InvalidInput`` naming the problem."""


class Registry:
    """Task kinds by name. ``default_registry()`` holds the installed plug-ins."""

    def __init__(self) -> None:
        self._kinds: dict[str, TaskKind] = {}
        self._lazy: dict[str, str] = {}

    def register(self, kind: TaskKind) -> TaskKind:
        self._kinds[kind.name] = kind
        self._lazy.pop(kind.name, None)
        return kind

    def register_lazy(self, name: str, target: str) -> None:
        """Register ``name`` as the :class:`TaskKind` at ``"module:attr"``, imported on first use."""
        if ":" not in target:
            raise ConfigError(f"a lazy task kind needs 'module:attr', got {target!r}")
        self._lazy[name] = target

    def load(self, target: str) -> None:
        """Import ``"module:attr"`` naming a TaskKind, a callable returning one, or a tuple or
        list of them (``holdfast.testing.kinds:KINDS``), and add it."""
        obj = _import(target)
        if isinstance(obj, tuple | list) and obj and all(isinstance(k, TaskKind) for k in obj):
            for kind in obj:
                self.register(kind)
            return
        self.register(_as_kind(obj, target))

    def names(self) -> list[str]:
        return sorted(set(self._kinds) | set(self._lazy))

    def get(self, name: str) -> TaskKind:
        if name in self._kinds:
            return self._kinds[name]
        if name in self._lazy:
            return self.register(_resolve(self._lazy[name]))
        raise InvalidInput(
            f"unknown task kind {name!r}; known kinds: {', '.join(self.names()) or '(none)'}"
        )

    def __contains__(self, name: object) -> bool:
        return name in self._kinds or name in self._lazy


def _import(target: str) -> Any:
    module_name, _, attr = target.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(f"cannot load the task kind {target!r}: {exc}") from exc


def _resolve(target: str) -> TaskKind:
    return _as_kind(_import(target), target)


def _as_kind(obj: Any, target: str) -> TaskKind:
    if not isinstance(obj, TaskKind) and callable(obj):
        obj = obj()
    if not isinstance(obj, TaskKind):
        raise ConfigError(f"{target!r} is not a holdfast.harness.TaskKind")
    return obj


def default_registry(extra: list[str] | tuple[str, ...] = ()) -> Registry:
    """Plug-ins from the ``holdfast.task_kinds`` entry points (``agent``), then ``extra``
    (``"module:attr"`` each). The test kinds (``noop``, ``scripted``, ``fail``) are not in it: they
    live in :mod:`holdfast.testing.kinds` and are loaded by name (``--load
    holdfast.testing.kinds:SCRIPTED``), so no production worker runs them by accident."""
    from importlib.metadata import entry_points

    reg = Registry()
    for ep in entry_points(group="holdfast.task_kinds"):
        reg.register_lazy(ep.name, ep.value)
    for target in extra:
        reg.load(target)
    return reg
