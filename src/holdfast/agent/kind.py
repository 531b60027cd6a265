"""The harness task kind ``agent``: the agent loop as a runner, its tools declared for policies."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from holdfast.agent import builtins
from holdfast.agent.env import Analyzer, MemoryAccess
from holdfast.agent.follow import FOLLOWS_TASK
from holdfast.agent.loop import Agent, Event
from holdfast.agent.settings import AgentSettings
from holdfast.agent.tools import Tool
from holdfast.errors import ConfigError
from holdfast.lm.types import LM
from holdfast.session import MemoryPolicy

if TYPE_CHECKING:
    from holdfast.harness import TaskKind

ALL_BUILTINS: tuple[Tool, ...] = (
    builtins.WORKING_SET_TOOLS
    + builtins.CONTEXT_TOOLS
    + builtins.FILE_TOOLS
    + builtins.memory_tools()
    + builtins.ANALYZE_TOOLS
    + (builtins.FINISH_TOOL,)
)

DEFAULT_POLICY: dict[str, Any] = {
    "rules": [
        {"tool": "file.write", "paths": ["**"], "action": "allow"},
        {"tool": "file.patch", "paths": ["**"], "action": "allow"},
        {"tool": "memory.*", "action": "allow"},
    ]
}
"""What ``holdfast run`` grants unless told otherwise: writes inside the workspace and knowledge
memory. Tools without side effects need no rule; every other side effect (a user tool declared
with ``effect=True``) is denied until a policy allows it or asks a person."""


def default_lm(settings: AgentSettings) -> LM:
    """The task's model from its settings (``provider:model`` and an optional base URL).

    Keys come from the worker's environment (``OPENAI_API_KEY``...), never from the task spec,
    which is stored and receipted."""
    if not settings.model:
        raise ConfigError("an agent task needs a model: input.model ('provider:model')")
    return model_from_settings(settings.model, settings)


def model_from_settings(name: str, settings: AgentSettings) -> LM:
    """A model by name with the task's endpoint, call timeout and any price it was given."""
    import os

    from holdfast.config import default_db_path
    from holdfast.lm import get_lm
    from holdfast.lm.calllog import CallLog
    from holdfast.rlm.pricing import as_price

    options: dict[str, Any] = {"timeout": settings.call_timeout_s}
    if name in settings.prices:
        options["price"] = as_price(settings.prices[name])
    # every turn in the call log, filed under the task id: in the task's store once the task
    # runs (holdfast.agent.follow), so it is readable from any machine
    log = CallLog(default_db_path())
    setattr(log, FOLLOWS_TASK, True)
    options["call_log"] = log
    return get_lm(name, base_url=settings.base_url, env=os.environ, **options)


def default_memory(
    settings: AgentSettings, task_id: str, vsession_id: str, *, backend: Any = None
) -> MemoryAccess | None:
    """Knowledge memory in the task's namespace: in the task's PostgreSQL database when the
    control plane is PostgreSQL (``backend``, given by the agent loop: every worker shares what
    the others learned), else in the Holdfast home's Markdown files."""
    from holdfast.agent.memory import StoreMemory
    from holdfast.memory import MemoryConfig, open_memory

    if settings.memory_namespace is None:
        return None
    store = open_memory(MemoryConfig(embedder=settings.embedder), backend=backend)
    return StoreMemory(
        store, namespace=settings.memory_namespace, task_id=task_id, session_id=vsession_id
    )


setattr(default_memory, FOLLOWS_TASK, True)  # the loop passes it the task's store


def default_analyzer(settings: AgentSettings, lm: LM) -> Analyzer | None:
    """RLM jobs on the analysis model (default: the agent's own), traced in the Holdfast store."""
    from holdfast.agent.analyze import RLMAnalyzer
    from holdfast.config import default_db_path
    from holdfast.sandbox.types import SandboxPolicy
    from holdfast.store import SQLiteDB

    model: LM = (
        model_from_settings(settings.analyze_model, settings) if settings.analyze_model else lm
    )
    analyzer = RLMAnalyzer(
        model,
        sandbox=SandboxPolicy(
            isolation=settings.analyze_sandbox,  # type: ignore[arg-type]
            cell_timeout_s=settings.cell_timeout_s,
        ),
        db=SQLiteDB(default_db_path()),
        max_output_tokens=settings.max_output_tokens,
        call_timeout_s=settings.call_timeout_s,
        cell_timeout_s=settings.cell_timeout_s,
        prices=settings.prices,
        unpriced=settings.unpriced,
    )
    setattr(analyzer, FOLLOWS_TASK, True)  # traces go to the task's store (agent.follow)
    return analyzer


def agent_kind(
    *,
    name: str = "agent",
    lm_factory: Callable[[AgentSettings], LM] = default_lm,
    tools: Sequence[Tool] = (),
    memory_factory: Callable[[AgentSettings, str, str], MemoryAccess | None]
    | None = default_memory,
    analyzer_factory: Callable[[AgentSettings, LM], Analyzer | None] | None = default_analyzer,
    memory_policy: MemoryPolicy | None = None,
    db_path: Path | None = None,
    on_event: Callable[[Event], None] | None = None,
) -> TaskKind:
    """The ``agent`` task kind, with optional user tools and replaceable services."""
    from holdfast.harness import TaskKind, ToolSpec

    agent = Agent(
        lm_factory=lm_factory,
        tools=tools,
        memory_factory=memory_factory,
        analyzer_factory=analyzer_factory,
        memory_policy=memory_policy,
        db_path=db_path,
        on_event=on_event,
    )
    specs = {
        t.harness_name: ToolSpec(
            effect=t.effect, idempotent=t.idempotent, description=t.description
        )
        for t in (*ALL_BUILTINS, *tools)
    }
    specs["memory.flush"] = ToolSpec(
        effect=True, idempotent=True, description="write working-set facts to knowledge memory"
    )
    return TaskKind(
        name,
        agent.run,
        tools=specs,
        description="a tool-calling model on a long task, in a virtual session",
        validate=lambda raw: AgentSettings.from_input(raw).check(),
    )
