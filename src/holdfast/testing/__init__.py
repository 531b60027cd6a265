"""Fakes shipped with Holdfast for offline tests: scripted models and a local OpenAI-compatible server.

``ScriptedLM`` and ``FunctionLM`` stand in for a model above the provider adapter;
``FakeOpenAIServer`` is a real HTTP server on 127.0.0.1 for exercising the real client code;
``FakeSandbox`` runs cells in-process (no isolation) for tests above the sandbox layer;
``FakeClock`` is a clock for stores that moves only when a test advances it. The test task kinds
(``noop``, ``scripted``, ``fail``) are in :mod:`holdfast.testing.kinds`.
"""

from holdfast.testing.clock import FakeClock
from holdfast.testing.fake_sandbox import FakeSandbox
from holdfast.testing.fake_server import FakeOpenAIServer, RequestRecord
from holdfast.testing.fake_wire import Fault, embed_text
from holdfast.testing.scripted import (
    FunctionLM,
    RecordedCall,
    ScriptedLM,
    ScriptExhausted,
    reply,
    tool_call,
)

__all__ = [
    "FakeClock",
    "FakeOpenAIServer",
    "FakeSandbox",
    "Fault",
    "FunctionLM",
    "RecordedCall",
    "RequestRecord",
    "ScriptExhausted",
    "ScriptedLM",
    "embed_text",
    "reply",
    "tool_call",
]
