"""Shared boxes for the sandbox tests: one long-lived box per isolation level, reused by tests
whose cells do not kill it (a box starts in tens of milliseconds, but hundreds add up)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from holdfast.sandbox import HostFunctionSpec, SandboxPolicy, SyncSandbox, open_sync_sandbox
from holdfast.sandbox.unshare_launch import unshare_available

# The namespace level is built by bubblewrap, or by util-linux unshare as root; the attack suite
# runs at both (the unshare run is forced by SandboxPolicy(backend="unshare") where bubblewrap is
# installed too).
BACKENDS = ["bwrap", "unshare"] if unshare_available() else ["bwrap"]


def _echo(value: object) -> object:
    return value


async def _add(a: int, b: int) -> int:
    return a + b


def shared_functions() -> list[HostFunctionSpec]:
    schema = {
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
        "required": ["a", "b"],
        "additionalProperties": False,
    }
    return [HostFunctionSpec("echo", _echo), HostFunctionSpec("add", _add, schema)]


@pytest.fixture(scope="module", params=["namespace", "process"])
def shared_box(request: pytest.FixtureRequest) -> Iterator[SyncSandbox]:
    box = open_sync_sandbox(
        SandboxPolicy(isolation=request.param, cell_timeout_s=20, max_output_bytes=4000),
        shared_functions(),
    )
    yield box
    box.shutdown()


@pytest.fixture(scope="module")
def ns_box() -> Iterator[SyncSandbox]:
    box = open_sync_sandbox(SandboxPolicy(cell_timeout_s=20), shared_functions())
    yield box
    box.shutdown()
