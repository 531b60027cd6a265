"""Fakes shipped with Holdfast for offline tests: scripted models and a local OpenAI-compatible server.

``ScriptedLM`` and ``FunctionLM`` stand in for a model above the provider adapter;
``FakeOpenAIServer`` is a real HTTP server on 127.0.0.1 for exercising the real client code.
"""

from holdfast.testing.scripted import (
    FunctionLM,
    RecordedCall,
    ScriptedLM,
    ScriptExhausted,
    reply,
    tool_call,
)

__all__ = [
    "FunctionLM",
    "RecordedCall",
    "ScriptExhausted",
    "ScriptedLM",
    "reply",
    "tool_call",
]
