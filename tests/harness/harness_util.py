"""Helpers shared by the control-plane tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any


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
