"""Task tools over MCP (off unless the server is started with ``--tasks``).

A client can queue a long agent task in a workspace inside the server's roots, read its status and
working set, send it a steering message, and stop it. Tasks are run by ``holdfast worker``; this
server only talks to the control plane. Every state change is receipted with the principal
``mcp``, exactly as the CLI's are with ``cli``.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field

from holdfast.errors import ConfigError, HoldfastError, InvalidInput
from holdfast.mcp.paths import confine
from holdfast.mcp.services import Services

if TYPE_CHECKING:
    from mcp.server import MCPServer

PRINCIPAL = "mcp"
TaskId = Annotated[str, Field(min_length=1, max_length=200, description="A task id.")]


def add_task_tools(server: MCPServer, svc: Services) -> None:
    from holdfast.mcp.server import _tool_error

    @server.tool(
        name="task_submit",
        description=(
            "Queue a long task for Holdfast's agent (run by `holdfast worker`). The workspace must "
            "be a folder inside the server's roots (default: the first root). Returns the task id."
        ),
    )
    async def task_submit(
        goal: Annotated[
            str, Field(min_length=1, max_length=20_000, description="What to achieve.")
        ],
        workspace: Annotated[str | None, Field(description="A folder inside the roots.")] = None,
        max_turns: Annotated[int | None, Field(ge=1, le=100_000)] = None,
        max_usd: Annotated[float | None, Field(gt=0, description="The task's USD budget.")] = None,
        max_hours: Annotated[float | None, Field(gt=0, le=24 * 30)] = None,
    ) -> dict[str, Any]:
        try:
            spec = _agent_spec(svc, goal, workspace, max_turns, max_usd, max_hours)
            with svc.harness() as h:
                row = h.submit(spec, by=PRINCIPAL)
            return {"task": row.id, "status": row.status}
        except HoldfastError as exc:
            raise _tool_error(exc) from None

    @server.tool(name="task_status", description="A task's status, result and budget use.")
    async def task_status(task_id: TaskId) -> dict[str, Any]:
        try:
            with svc.harness() as h:
                row = h.get(task_id)
                return {
                    "task": row.to_dict(),
                    "approvals": [dataclasses.asdict(a) for a in h.approvals(task_id)],
                }
        except HoldfastError as exc:
            raise _tool_error(exc) from None

    @server.tool(
        name="task_working_set",
        description=(
            "A task's working set: goal, constraints, decisions, blockers, progress, files and "
            "findings, with its physical sessions."
        ),
    )
    async def task_working_set(task_id: TaskId) -> dict[str, Any]:
        try:
            return _working_set(svc, task_id)
        except HoldfastError as exc:
            raise _tool_error(exc) from None

    @server.tool(
        name="task_steer",
        description="Send a message to a running task; the agent reads it at its next turn.",
    )
    async def task_steer(
        task_id: TaskId, message: Annotated[str, Field(min_length=1, max_length=20_000)]
    ) -> dict[str, Any]:
        try:
            with svc.harness() as h:
                command = h.steer(task_id, "message", message, by=PRINCIPAL)
            return {"task": task_id, "command": command}
        except HoldfastError as exc:
            raise _tool_error(exc) from None

    @server.tool(name="task_stop", description="Stop a task (its in-flight work is cancelled).")
    async def task_stop(task_id: TaskId) -> dict[str, Any]:
        try:
            with svc.harness() as h:
                command = h.stop(task_id, by=PRINCIPAL)
            return {"task": task_id, "command": command}
        except HoldfastError as exc:
            raise _tool_error(exc) from None


def _agent_spec(
    svc: Services,
    goal: str,
    workspace: str | None,
    max_turns: int | None,
    max_usd: float | None,
    max_hours: float | None,
) -> dict[str, Any]:
    from holdfast.agent import DEFAULT_POLICY, AgentSettings

    settings = svc.settings
    if not settings.model:
        raise ConfigError("task_submit needs a model: start the MCP server with --model")
    place = confine(
        workspace or str(settings.roots[0]),
        settings.roots,
        max_files=settings.caps.max_files * 100,
        max_bytes=2**62,
    )
    if place.kind != "dir":
        raise InvalidInput(f"the workspace {workspace!r} is not a folder")
    fields: dict[str, Any] = {"memory_namespace": settings.namespace}
    if max_turns is not None:
        fields["max_turns"] = max_turns
    agent = AgentSettings.from_input(fields)
    spec: dict[str, Any] = {
        "kind": "agent",
        "goal": goal,
        "input": agent.to_input() | {"model": settings.model},
        "policy": DEFAULT_POLICY,
        "workspace": str(place.path),
    }
    budget: dict[str, Any] = {}
    if max_usd is not None:
        budget["usd"] = max_usd
    if max_hours is not None:
        budget["wall_s"] = max_hours * 3600.0
    if budget:
        spec["budget"] = budget
    return spec


def _working_set(svc: Services, task_id: str) -> dict[str, Any]:
    from holdfast.config import default_db_path
    from holdfast.session import VirtualSession, open_session_store

    url = svc.settings.database_url or str(default_db_path())
    store = open_session_store(url)
    try:
        vid = store.find_by_task(task_id)
        if vid is None:
            raise InvalidInput(f"no virtual session for task {task_id!r} yet")
        vs = VirtualSession(store, vid)
        phys = store.physical(vid)
        return {
            "task": task_id,
            "vsession": vid,
            "continuation": vs.continuation,
            "turns": vs.turn,
            "sessions": [
                {"cont": p.cont, "start_turn": p.start_turn, "end_reason": p.end_reason}
                for p in phys
            ],
            "working_set": vs.working_set.to_dict(),
        }
    finally:
        store.close()
