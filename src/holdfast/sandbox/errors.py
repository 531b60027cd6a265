"""Errors raised by the sandbox layer, sorted by who can fix them."""

from __future__ import annotations

from typing import Any

from holdfast.errors import ConfigError, RuntimeFailure


class SandboxUnavailable(ConfigError):
    """The requested isolation (or seccomp) cannot be had on this machine; ``remedy`` says why."""

    code = "sandbox_unavailable"

    def __init__(self, message: str, *, remedy: str, **details: Any) -> None:
        super().__init__(f"{message}; remedy: {remedy}", remedy=remedy, **details)
        self.remedy = remedy


class SandboxFatal(RuntimeFailure):
    """The box died or broke its protocol and could not be restarted; the job must stop."""

    code = "sandbox_fatal"


class SandboxError(RuntimeFailure):
    """A request to a live box failed (a value that is not JSON-safe, an unknown name...)."""

    code = "sandbox_error"
