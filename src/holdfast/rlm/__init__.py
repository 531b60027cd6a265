"""Reasoning memory: the Recursive Language Model engine.

The input lives as variables in a sandboxed, persistent Python REPL; the root model sees only
metadata and drives the REPL with code, calling sub-models from that code (in parallel, and
recursively through child runs); the answer is submitted typed, and every step is traced.
"""

from holdfast.rlm.broker import Broker, BrokerLimits, SubCallError
from holdfast.rlm.budget import Budget, BudgetTracker
from holdfast.rlm.engine import DIRECT_THRESHOLD_CHARS, RLM
from holdfast.rlm.parse import CodeBlock, extract_code, truncate_middle
from holdfast.rlm.result import RLMResult, RLMUsage
from holdfast.rlm.signature import Field, Signature, parse_signature
from holdfast.rlm.trace import MemoryCache, StoreCache, call_key

__all__ = [
    "DIRECT_THRESHOLD_CHARS",
    "RLM",
    "Broker",
    "BrokerLimits",
    "Budget",
    "BudgetTracker",
    "CodeBlock",
    "Field",
    "MemoryCache",
    "RLMResult",
    "RLMUsage",
    "Signature",
    "StoreCache",
    "SubCallError",
    "call_key",
    "extract_code",
    "parse_signature",
    "truncate_middle",
]
