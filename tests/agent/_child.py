"""A worker process for the crash tests: runs agent tasks from a store until idle (or killed).

Usage: python _child.py DB BASE_URL MARKER [SLOW_FLUSH_AT]

With SLOW_FLUSH_AT = n, the n-th memory flush (the one before a roll-over) writes its items, then
touches MARKER and sleeps, so the parent can SIGKILL the worker in the middle of the roll-over.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from holdfast.agent import AgentSettings, StoreMemory, agent_kind
from holdfast.harness import Harness, WorkerSettings
from holdfast.lm import get_lm
from holdfast.memory import MemoryConfig, MemoryStore
from holdfast.session import FlushItem


def main(argv: list[str]) -> None:
    db, base_url, marker = argv[0], argv[1], Path(argv[2])
    slow_at = int(argv[3]) if len(argv) > 3 else 0
    flushes = {"n": 0}

    class SlowFlush(StoreMemory):
        def flush(self, items: list[FlushItem]) -> list[dict[str, Any]]:
            out = super().flush(items)
            flushes["n"] += 1
            if flushes["n"] == slow_at:
                marker.write_text("flushed")
                time.sleep(120)
            return out

    def memory(settings: AgentSettings, task_id: str, vid: str) -> StoreMemory:
        store = MemoryStore(MemoryConfig(embedder=settings.embedder))
        return SlowFlush(store, namespace="default", task_id=task_id, session_id=vid)

    h = Harness.open(db)
    h.registry.register(
        agent_kind(
            lm_factory=lambda s: get_lm("openai:fake-model", base_url=base_url, api_key="test-key"),
            memory_factory=memory,
            analyzer_factory=None,
        )
    )
    h.run_until_idle(WorkerSettings(lease_ttl_s=2.0, poll_s=0.05))


if __name__ == "__main__":
    main(sys.argv[1:])
