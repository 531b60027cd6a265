"""Persistent, isolated Python workers for model-written code.

``open_sandbox(policy)`` gives a :class:`Sandbox`: a worker in new user, pid, net, ipc and uts
namespaces under bubblewrap with a seccomp filter and resource limits (``isolation="namespace"``,
the default), or a plain limited subprocess when the caller names ``isolation="process"``, which
is not a security boundary. Host functions registered by name are proxies inside the box that
send a request over a private socket and block for the answer.
"""

from __future__ import annotations

from holdfast.sandbox.box import IsolatedSandbox, SandboxInfo
from holdfast.sandbox.errors import SandboxError, SandboxFatal, SandboxUnavailable
from holdfast.sandbox.sync import SyncSandbox
from holdfast.sandbox.types import (
    CellError,
    CellResult,
    HostFunction,
    HostFunctionSpec,
    Isolation,
    Sandbox,
    SandboxPolicy,
)


def open_sandbox(
    policy: SandboxPolicy | None = None, functions: list[HostFunctionSpec] | None = None
) -> IsolatedSandbox:
    """A new, not yet started sandbox (``await box.start()`` or ``async with box``)."""
    return IsolatedSandbox(policy, functions)


def open_sync_sandbox(
    policy: SandboxPolicy | None = None, functions: list[HostFunctionSpec] | None = None
) -> SyncSandbox:
    """A blocking sandbox, started (use it as a context manager or call ``shutdown()``)."""
    box = SyncSandbox(IsolatedSandbox(policy, functions))
    try:
        box.start()
    except BaseException:
        box.shutdown()
        raise
    return box


__all__ = [
    "CellError",
    "CellResult",
    "HostFunction",
    "HostFunctionSpec",
    "IsolatedSandbox",
    "Isolation",
    "Sandbox",
    "SandboxError",
    "SandboxFatal",
    "SandboxInfo",
    "SandboxPolicy",
    "SandboxUnavailable",
    "SyncSandbox",
    "open_sandbox",
    "open_sync_sandbox",
]
