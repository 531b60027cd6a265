"""Agent tools: a decorator that turns a typed Python function into an OpenAI tool.

::

    @tool(effect=True, idempotent=True)
    def deploy(service: str, replicas: int = 1) -> str:
        \"\"\"Deploy a service to staging.\"\"\"

The JSON schema of the parameters comes from the type hints (through pydantic), the description
from the docstring. Arguments the model sends are validated against the same model; a bad call
becomes a :class:`~holdfast.errors.ModelFacingError` whose message goes back to the model.

A tool whose first parameter is annotated :class:`ToolEnv` receives the agent's environment (the
virtual session, the workspace, the harness step context) and that parameter stays out of the
schema. ``effect`` and ``idempotent`` tell the harness's step contract how to gate and reconcile
the call; ``harness_name`` is the name permission policies match (``user.<name>`` by default).
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, get_type_hints, overload

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from holdfast.errors import InvalidInput, ModelFacingError

if TYPE_CHECKING:
    from holdfast.agent.env import ToolEnv

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True)
class Tool:
    """A tool the model can call, with its schema and how the harness treats it."""

    name: str
    description: str
    parameters: dict[str, Any]
    fn: Callable[..., Any]
    model: type[BaseModel] | None
    effect: bool = True
    idempotent: bool = False
    harness_name: str = ""
    takes_env: bool = False
    tracks_path: str | None = field(default=None)

    def schema(self) -> dict[str, Any]:
        """The OpenAI ``tools`` entry."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }

    def parse(self, raw: str) -> dict[str, Any]:
        """Validate the model's raw JSON arguments; errors are worded for the model."""
        try:
            data = json.loads(raw or "{}")
        except json.JSONDecodeError as exc:
            raise ModelFacingError(
                f"the arguments of {self.name} are not valid JSON ({exc.msg} at {exc.pos}); "
                f"send an object matching its schema"
            ) from exc
        if not isinstance(data, dict):
            raise ModelFacingError(f"the arguments of {self.name} must be a JSON object")
        if self.model is None:
            return data
        try:
            parsed = self.model.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}"
                for e in exc.errors()
            )
            raise ModelFacingError(f"bad arguments for {self.name}: {problems}") from exc
        return parsed.model_dump()

    def call(self, env: ToolEnv | None, args: dict[str, Any]) -> Any:
        if self.takes_env:
            return self.fn(env, **args)
        return self.fn(**args)


@overload
def tool(fn: Callable[..., Any], /) -> Tool: ...


@overload
def tool(
    fn: None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    effect: bool = True,
    idempotent: bool = False,
    harness_name: str | None = None,
    tracks_path: str | None = None,
) -> Callable[[Callable[..., Any]], Tool]: ...


def tool(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    effect: bool = True,
    idempotent: bool = False,
    harness_name: str | None = None,
    tracks_path: str | None = None,
) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Make a :class:`Tool` from a typed function (usable bare or with arguments)."""

    def build(f: Callable[..., Any]) -> Tool:
        return make_tool(
            f,
            name=name,
            description=description,
            effect=effect,
            idempotent=idempotent,
            harness_name=harness_name,
            tracks_path=tracks_path,
        )

    return build(fn) if fn is not None else build


def make_tool(
    f: Callable[..., Any],
    *,
    name: str | None = None,
    description: str | None = None,
    effect: bool = True,
    idempotent: bool = False,
    harness_name: str | None = None,
    tracks_path: str | None = None,
) -> Tool:
    tool_name = name or f.__name__
    if not _NAME.match(tool_name):
        raise InvalidInput(f"tool name {tool_name!r} must match {_NAME.pattern}")
    hints = get_type_hints(f)
    params = list(inspect.signature(f).parameters.values())
    takes_env = bool(params) and _is_env(hints.get(params[0].name))
    if takes_env:
        params = params[1:]
    fields: dict[str, Any] = {}
    for p in params:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise InvalidInput(
                f"tool {tool_name}: *args and **kwargs cannot be described to a model"
            )
        if p.name not in hints:
            raise InvalidInput(f"tool {tool_name}: parameter {p.name!r} needs a type hint")
        default = ... if p.default is inspect.Parameter.empty else p.default
        fields[p.name] = (hints[p.name], default)
    model = create_model(f"{tool_name}_args", __config__=ConfigDict(extra="forbid"), **fields)
    schema = _clean(model.model_json_schema())
    doc = inspect.getdoc(f) or ""
    text = description or doc.split("\n\n")[0].replace("\n", " ").strip() or tool_name
    return Tool(
        name=tool_name,
        description=text,
        parameters=schema,
        fn=f,
        model=model,
        effect=effect,
        idempotent=idempotent,
        harness_name=harness_name or f"user.{tool_name}",
        takes_env=takes_env,
        tracks_path=tracks_path,
    )


def schema_tool(
    schema: dict[str, Any],
    fn: Callable[..., Any],
    *,
    effect: bool,
    idempotent: bool,
    harness_name: str,
) -> Tool:
    """A tool from an existing OpenAI function schema; ``fn(env, **args)`` validates for itself."""
    spec = schema["function"]
    return Tool(
        name=spec["name"],
        description=spec.get("description", spec["name"]),
        parameters=spec.get("parameters", {"type": "object", "properties": {}}),
        fn=fn,
        model=None,
        effect=effect,
        idempotent=idempotent,
        harness_name=harness_name,
        takes_env=True,
    )


def _is_env(hint: Any) -> bool:
    from holdfast.agent.env import ToolEnv

    return hint is ToolEnv


def _clean(schema: dict[str, Any]) -> dict[str, Any]:
    """Drop pydantic's titles; models do not need them and they cost tokens."""
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "title":
            continue
        if isinstance(value, dict):
            value = {k: _clean(v) if isinstance(v, dict) else v for k, v in value.items()}
            if key != "properties":
                value = _clean(value)
        out[key] = value
    if out.get("type") == "object":
        out.setdefault("properties", {})
    return out


class ToolBox:
    """The tools of one agent, by name, with unique names enforced."""

    def __init__(self, tools: Iterable[Tool] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        for t in tools:
            self.add(t)

    def add(self, t: Tool) -> None:
        if t.name in self._tools:
            raise InvalidInput(f"two tools are named {t.name!r}")
        self._tools[t.name] = t

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def names(self) -> list[str]:
        return list(self._tools)

    def schemas(self) -> list[dict[str, Any]]:
        return [t.schema() for t in self._tools.values()]

    def __iter__(self) -> Any:
        return iter(self._tools.values())
