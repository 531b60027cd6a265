"""Model access: one small async-first ``LM`` protocol over OpenAI-format messages.

Importing this package is cheap: the ``openai`` and ``anthropic`` SDKs load only when a client
for them is built.
"""

from holdfast.lm.anthropic_lm import AnthropicLM
from holdfast.lm.base import BaseLM, CallParams, apply_stop, run_sync, validate_messages
from holdfast.lm.calllog import CallLog
from holdfast.lm.errors import (
    ContextOverflow,
    EmptyResponse,
    MalformedResponse,
    MissingAPIKey,
    MissingExtra,
    ProviderAuthError,
    ProviderRejected,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
    ToolsUnsupported,
    UnknownProvider,
)
from holdfast.lm.factory import get_lm, resolve_endpoint
from holdfast.lm.limiter import EndpointLimiter, endpoint_limiter
from holdfast.lm.openai_compat import OpenAICompatLM
from holdfast.lm.prices import DEFAULT_PRICES, FREE, Price, PriceTable
from holdfast.lm.providers import PROVIDERS, ProviderSpec, parse_model_name
from holdfast.lm.record import CallRecord, CallRecorder, completion_from_dict, completion_to_dict
from holdfast.lm.retry import NO_RETRY, RetryPolicy
from holdfast.lm.stream import (
    LMStream,
    StreamDone,
    StreamEvent,
    SyncLMStream,
    TextDelta,
    ToolCallDelta,
)
from holdfast.lm.structured import json_schema_format, parse_json_reply
from holdfast.lm.tokens import estimate_message_tokens, estimate_tokens, estimate_tools_tokens
from holdfast.lm.types import LM, ZERO_USAGE, Completion, Message, ToolCall, Usage

__all__ = [
    "DEFAULT_PRICES",
    "FREE",
    "LM",
    "NO_RETRY",
    "PROVIDERS",
    "ZERO_USAGE",
    "AnthropicLM",
    "BaseLM",
    "CallLog",
    "CallParams",
    "CallRecord",
    "CallRecorder",
    "Completion",
    "ContextOverflow",
    "EmptyResponse",
    "EndpointLimiter",
    "LMStream",
    "MalformedResponse",
    "Message",
    "MissingAPIKey",
    "MissingExtra",
    "OpenAICompatLM",
    "Price",
    "PriceTable",
    "ProviderAuthError",
    "ProviderRejected",
    "ProviderSpec",
    "ProviderTimeout",
    "ProviderUnavailable",
    "RateLimited",
    "RetryPolicy",
    "StreamDone",
    "StreamEvent",
    "SyncLMStream",
    "TextDelta",
    "ToolCall",
    "ToolCallDelta",
    "ToolsUnsupported",
    "UnknownProvider",
    "Usage",
    "apply_stop",
    "completion_from_dict",
    "completion_to_dict",
    "endpoint_limiter",
    "estimate_message_tokens",
    "estimate_tokens",
    "estimate_tools_tokens",
    "get_lm",
    "json_schema_format",
    "parse_json_reply",
    "parse_model_name",
    "resolve_endpoint",
    "run_sync",
    "validate_messages",
]
