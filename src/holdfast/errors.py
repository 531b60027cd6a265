"""Holdfast's error types.

Errors are sorted by who can fix them (STYLE.md):

* the model: fed back into a loop as text (a bad code cell, a failed validation); these are not
  exceptions that escape to the user, see :class:`ModelFacingError`;
* the user: bad configuration or input, with a message that says what to do (:class:`UserError`);
* the runtime: an outage, a lost lease, a dead sandbox (:class:`RuntimeFailure`), typed and marked
  retryable or not, with any partial result attached.

Every error is plain data: it has a stable ``code``, pickles, and serialises to JSON with
:meth:`HoldfastError.to_dict`.
"""

from __future__ import annotations

from typing import Any, ClassVar


def _rebuild(cls: type[HoldfastError], message: str, fields: dict[str, Any]) -> HoldfastError:
    err = cls.__new__(cls)
    Exception.__init__(err, message)
    err.message = message
    err.__dict__.update(fields)
    return err


class HoldfastError(Exception):
    """Base class of every error Holdfast raises on purpose."""

    code: ClassVar[str] = "holdfast_error"
    retryable: ClassVar[bool] = False
    trace_id: str | None = None
    """The trace of the job that failed, when a job was under way (set by the engine)."""
    partial: Any = None
    """What the failed work had produced so far, when there was something (set by the engine)."""

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = details

    def __reduce__(self) -> tuple[Any, ...]:
        fields = {k: v for k, v in self.__dict__.items() if k != "message"}
        return (_rebuild, (type(self), self.message, fields))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe description: code, message, retryable and details."""
        out: dict[str, Any] = {
            "code": self.code,
            "type": type(self).__name__,
            "message": self.message,
            "retryable": self.retryable,
        }
        if self.details:
            out["details"] = _json_safe(self.details)
        return out

    def __str__(self) -> str:
        return self.message


class UserError(HoldfastError):
    """Bad configuration or input: the message says what to change."""

    code = "user_error"


class ConfigError(UserError):
    """A setting is missing or invalid (unknown provider, missing key, bad URL...)."""

    code = "config_error"


class InvalidInput(UserError):
    """An input (file, argument, task spec) cannot be used as given."""

    code = "invalid_input"


class RuntimeFailure(HoldfastError):
    """Something outside the user's input failed: a provider, the store, a worker."""

    code = "runtime_failure"


class RetryableFailure(RuntimeFailure):
    """A runtime failure that may succeed if tried again later."""

    code = "retryable_failure"
    retryable = True


class BudgetExceeded(HoldfastError):
    """A budget or limit ran out. Carries the partial result and the trace reference."""

    code = "budget_exceeded"

    def __init__(
        self,
        message: str,
        *,
        limit: str,
        partial: Any = None,
        trace_id: str | None = None,
        **details: Any,
    ) -> None:
        super().__init__(message, limit=limit, trace_id=trace_id, **details)
        self.limit = limit
        self.partial = partial
        self.trace_id = trace_id

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["partial"] = _json_safe(self.partial)
        return out


class Cancelled(HoldfastError):
    """Work was stopped on request (a steering command or the caller's cancellation)."""

    code = "cancelled"


class ModelFacingError(HoldfastError):
    """An error meant to be shown to the model as text so that it can correct itself."""

    code = "model_facing_error"


def _json_safe(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_json_safe(v) for v in value]
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict):
        return _json_safe(to_dict())
    return repr(value)
