from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from holdfast.rlm.store import RLMTraceStore
from holdfast.sandbox.types import SandboxPolicy
from holdfast.store.sqlite import SQLiteDB
from holdfast.testing.fake_sandbox import FakeSandbox


@pytest.fixture
def fake_boxes() -> list[FakeSandbox]:
    return []


@pytest.fixture
def fake_box(fake_boxes: list[FakeSandbox]) -> Callable[[SandboxPolicy], Any]:
    """A factory of in-process fake boxes (not isolation): for loop, broker and budget tests."""

    def factory(policy: SandboxPolicy) -> FakeSandbox:
        box = FakeSandbox(SandboxPolicy(isolation="process", cell_timeout_s=policy.cell_timeout_s))
        fake_boxes.append(box)
        return box

    return factory


@pytest.fixture
def store(tmp_path: Any) -> RLMTraceStore:
    return RLMTraceStore(SQLiteDB(tmp_path / "traces.db"))
