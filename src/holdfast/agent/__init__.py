"""The long-task agent: a tool-calling model inside a virtual session, on a harness task.

Register the kind with a harness and submit tasks of kind ``agent``::

    h = Harness.open()
    h.registry.register(agent_kind())
    h.submit({"kind": "agent", "goal": "...", "workspace": "repo",
              "input": {"model": "openai:gpt-5-mini"}, "policy": DEFAULT_POLICY})

User tools come from typed functions through :func:`tool`.
"""

from holdfast.agent.analyze import RLMAnalyzer
from holdfast.agent.env import AnalysisResult, Analyzer, MemoryAccess, ToolEnv
from holdfast.agent.kind import (
    ALL_BUILTINS,
    DEFAULT_POLICY,
    agent_kind,
    default_analyzer,
    default_lm,
    default_memory,
)
from holdfast.agent.loop import Agent
from holdfast.agent.memory import StoreMemory
from holdfast.agent.settings import AgentSettings
from holdfast.agent.tools import Tool, ToolBox, make_tool, tool
from holdfast.agent.workspace import Workspace

__all__ = [
    "ALL_BUILTINS",
    "DEFAULT_POLICY",
    "Agent",
    "AgentSettings",
    "AnalysisResult",
    "Analyzer",
    "MemoryAccess",
    "RLMAnalyzer",
    "StoreMemory",
    "Tool",
    "ToolBox",
    "ToolEnv",
    "Workspace",
    "agent_kind",
    "default_analyzer",
    "default_lm",
    "default_memory",
    "make_tool",
    "tool",
]
