"""Model access: one small async-first ``LM`` protocol over OpenAI-format messages.

Importing this package is cheap: the ``openai`` and ``anthropic`` SDKs load only when a client
for them is built.
"""

from holdfast.lm.base import BaseLM, CallParams, apply_stop, run_sync, validate_messages
from holdfast.lm.prices import DEFAULT_PRICES, FREE, Price, PriceTable
from holdfast.lm.record import CallRecord, CallRecorder, completion_from_dict, completion_to_dict
from holdfast.lm.tokens import estimate_message_tokens, estimate_tokens, estimate_tools_tokens
from holdfast.lm.types import LM, ZERO_USAGE, Completion, Message, ToolCall, Usage

__all__ = [
    "DEFAULT_PRICES",
    "FREE",
    "LM",
    "ZERO_USAGE",
    "BaseLM",
    "CallParams",
    "CallRecord",
    "CallRecorder",
    "Completion",
    "Message",
    "Price",
    "PriceTable",
    "ToolCall",
    "Usage",
    "apply_stop",
    "completion_from_dict",
    "completion_to_dict",
    "estimate_message_tokens",
    "estimate_tokens",
    "estimate_tools_tokens",
    "run_sync",
    "validate_messages",
]
