"""Continuity memory: virtual sessions, the working set, token accounting and roll-over.

A long task keeps one :class:`VirtualSession` across any number of physical model sessions. Its
:class:`WorkingSet` is kept on every turn and rendered, within a budget, into every prompt; when the
prompt nears the :class:`RolloverPolicy` limit a fresh physical session starts under the same id,
seeded with the working set, cited recall and the last few turns verbatim, never with a summary of a
summary.
"""

from holdfast.session.policy import (
    FlushItem,
    HeuristicMemoryPolicy,
    MemoryPolicy,
    PruneCandidate,
    RolloverPolicy,
)
from holdfast.session.render import (
    ContextWindowTooSmall,
    RenderedWorkingSet,
    render_working_set,
    write_overflow,
)
from holdfast.session.seed import RecallHit
from holdfast.session.storage import open_session_store
from holdfast.session.store import SessionStore, SQLSessionStore, StaleSessionWrite
from holdfast.session.tokens import (
    TokenMeter,
    estimate_message_tokens,
    estimate_messages_tokens,
    estimate_text_tokens,
)
from holdfast.session.virtual import TurnPlan, VirtualSession, dumps_prompt
from holdfast.session.working_set import (
    Blocker,
    Constraint,
    Decision,
    Finding,
    ProgressEntry,
    TrackedFile,
    WorkingSet,
)

__all__ = [
    "Blocker",
    "Constraint",
    "ContextWindowTooSmall",
    "Decision",
    "Finding",
    "FlushItem",
    "HeuristicMemoryPolicy",
    "MemoryPolicy",
    "ProgressEntry",
    "PruneCandidate",
    "RecallHit",
    "RenderedWorkingSet",
    "RolloverPolicy",
    "SQLSessionStore",
    "SessionStore",
    "StaleSessionWrite",
    "TokenMeter",
    "TrackedFile",
    "TurnPlan",
    "VirtualSession",
    "WorkingSet",
    "dumps_prompt",
    "estimate_message_tokens",
    "estimate_messages_tokens",
    "estimate_text_tokens",
    "open_session_store",
    "render_working_set",
    "write_overflow",
]
