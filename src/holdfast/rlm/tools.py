"""User-declared tools: host functions the model's code may call by name from the REPL.

A tool is a plain Python callable (sync or async) run on the host, or a ready
:class:`~holdfast.sandbox.types.HostFunctionSpec`. Its arguments and result cross the box boundary
as JSON; its docstring's first line is shown to the model. Tools reason over data; side effects
belong to the harness's gated tools, not here.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

from holdfast.errors import InvalidInput
from holdfast.sandbox.types import HostFunctionSpec

RESERVED = frozenset(
    {
        "llm_query",
        "llm_batch",
        "rlm_query",
        "predict",
        "SUBMIT",
        "show_vars",
        "answer",
        "InputDir",
        "SubCallError",
        "Prediction",
        "HostCallError",
    }
)


def as_tool_specs(tools: Sequence[Callable[..., Any] | HostFunctionSpec]) -> list[HostFunctionSpec]:
    """Normalise callables and specs into specs with names the REPL does not already use."""
    specs: list[HostFunctionSpec] = []
    for tool in tools:
        spec = tool if isinstance(tool, HostFunctionSpec) else _spec_of(tool)
        if not spec.name.isidentifier() or spec.name.startswith("_") or spec.name in RESERVED:
            raise InvalidInput(f"tool name {spec.name!r} is reserved or not a valid identifier")
        if any(s.name == spec.name for s in specs):
            raise InvalidInput(f"two tools are named {spec.name!r}")
        specs.append(spec)
    return specs


def _spec_of(fn: Callable[..., Any]) -> HostFunctionSpec:
    if not callable(fn):
        raise InvalidInput(
            f"a tool must be a callable or a HostFunctionSpec, not {type(fn).__name__}"
        )
    name = getattr(fn, "__name__", "")
    doc = (inspect.getdoc(fn) or "").strip().splitlines()
    params: dict[str, Any] = {}
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        sig = None
    if sig is not None:
        for p in sig.parameters.values():
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
                params[p.name] = {}
    signature_text = f"{name}({', '.join(params)})"
    description = f"{signature_text}: {doc[0]}" if doc else signature_text
    schema = {"type": "object", "properties": params} if params else {}
    return HostFunctionSpec(name=name, fn=fn, schema=schema, description=description)
