"""Helpers shared by the control-plane tests."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from holdfast.harness import Harness
from holdfast.testing.kinds import kinds_registry

LOAD_KINDS = ("--load", "holdfast.testing.kinds:KINDS")
"""The command-line option that gives a worker (or ``task submit``) the test kinds."""


def open_harness(url: str | os.PathLike[str], **kwargs: Any) -> Harness:
    """``Harness.open`` with the test kinds (noop, scripted, fail) registered."""
    return Harness.open(url, registry=kinds_registry(), **kwargs)


def scripted(
    workspace: Path,
    steps: list[dict[str, Any]],
    *,
    rules: list[dict[str, Any]] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A scripted task spec whose counters live in ``<workspace>/effects.db``."""
    return {
        "kind": "scripted",
        "workspace": str(workspace),
        "input": {"ledger": "effects.db", "steps": steps},
        "policy": {"rules": rules if rules is not None else [{"tool": "*", "action": "allow"}]},
        **extra,
    }
