"""The errors an RLM job ends with (besides ``BudgetExceeded`` and ``Cancelled``).

Every failure that leaves :meth:`holdfast.rlm.RLM.arun` is a :class:`~holdfast.errors.HoldfastError`
with a stable ``code`` and, once the job has started, its ``trace_id`` and ``partial`` (the last
answer attempt, the last output, the iterations and the usage so far), both as attributes and in
``details``. A failure that is not already a Holdfast error (a bug, a raw timeout from a custom
model) arrives as :class:`RLMFailed` with the original type and message.
"""

from __future__ import annotations

from holdfast.errors import RuntimeFailure


class RLMFailed(RuntimeFailure):
    """An RLM job failed for a reason that is not a budget, a cancellation or a typed error."""

    code = "rlm_failed"


class PreludeFailed(RLMFailed):
    """The REPL of a run could not be set up (its prelude cell failed or timed out)."""

    code = "rlm_prelude_failed"


class ModelCallTimeout(RLMFailed):
    """The root model did not answer within the call timeout (every attempt timed out)."""

    code = "rlm_call_timeout"
    retryable = True
