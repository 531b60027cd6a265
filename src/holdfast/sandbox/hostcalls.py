"""Serving host calls from a box: name lookup, argument checks, running sync or async functions.

A :class:`HostFunctionSpec` schema describes the keyword arguments as a JSON-schema object
(``{"type": "object", "properties": {...}, "required": [...]}``). Positional arguments in the box
are bound to the property names in order, so ``llm_query("hi")`` and ``llm_query(prompt="hi")``
arrive the same. The validator covers the subset of JSON schema a tool signature needs: ``type``,
``properties``, ``required``, ``additionalProperties``, ``items``, ``enum``, ``minimum``,
``maximum``, ``minLength``, ``maxLength``, ``minItems`` and ``maxItems``.
"""

from __future__ import annotations

import inspect
import json
from typing import Any

from holdfast.sandbox.types import HostFunctionSpec

_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
    "null": (type(None),),
}


class HostCallRefused(Exception):
    """A call from the box that the host will not run; the message goes back to the box."""


def param_names(spec: HostFunctionSpec) -> list[str]:
    """The order in which positional arguments bind to the schema's properties."""
    props = spec.schema.get("properties") if isinstance(spec.schema, dict) else None
    return [str(k) for k in props] if isinstance(props, dict) else []


def validate(schema: Any, value: Any, where: str = "arguments") -> list[str]:
    """Problems with ``value`` against ``schema`` (an empty list when it conforms)."""
    if not isinstance(schema, dict) or not schema:
        return []
    problems: list[str] = []
    kind = schema.get("type")
    if kind is not None:
        kinds = kind if isinstance(kind, list) else [kind]
        if not any(_is_type(value, k) for k in kinds):
            return [f"{where}: expected {'/'.join(map(str, kinds))}, got {type(value).__name__}"]
    if "enum" in schema and value not in schema["enum"]:
        problems.append(f"{where}: {value!r} is not one of {schema['enum']!r}")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            problems.append(f"{where}: {value} is below {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            problems.append(f"{where}: {value} is above {schema['maximum']}")
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            problems.append(f"{where}: shorter than {schema['minLength']}")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            problems.append(f"{where}: longer than {schema['maxLength']}")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            problems.append(f"{where}: fewer than {schema['minItems']} items")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            problems.append(f"{where}: more than {schema['maxItems']} items")
        items = schema.get("items")
        if isinstance(items, dict):
            for i, item in enumerate(value):
                problems += validate(items, item, f"{where}[{i}]")
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        for key in schema.get("required") or []:
            if key not in value:
                problems.append(f"{where}: missing required {key!r}")
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            if key in props:
                problems += validate(props[key], item, f"{where}.{key}")
            elif extra is False:
                problems.append(f"{where}: unexpected {key!r}")
            elif isinstance(extra, dict):
                problems += validate(extra, item, f"{where}.{key}")
    return problems


def _is_type(value: Any, kind: str) -> bool:
    if kind in ("integer", "number") and isinstance(value, bool):
        return False
    if kind == "integer" and isinstance(value, float):
        return value.is_integer()
    return isinstance(value, _TYPES.get(kind, (object,)))


def check_call(
    specs: dict[str, HostFunctionSpec], name: str, args: list[Any], kwargs: dict[str, Any]
) -> HostFunctionSpec:
    """The spec a call from a box may run, after checking its arguments; raises HostCallRefused."""
    spec = specs.get(name)
    if spec is None:
        raise HostCallRefused(f"{name!r} is not a declared host function")
    if spec.schema:
        problems = validate(spec.schema, kwargs)
        if args:
            problems.append(f"{name}() takes keyword arguments only (got {len(args)} positional)")
        if problems:
            raise HostCallRefused(f"bad arguments to {name}(): " + "; ".join(problems[:5]))
    return spec


async def run_host_call(
    specs: dict[str, HostFunctionSpec], name: str, args: list[Any], kwargs: dict[str, Any]
) -> Any:
    """Runs one call from a box and returns its JSON-safe result; raises HostCallRefused."""
    spec = check_call(specs, name, args, kwargs)
    try:
        result = spec.fn(*args, **kwargs)
        if inspect.isawaitable(result):
            result = await result
    except HostCallRefused:
        raise
    except Exception as exc:
        raise HostCallRefused(f"{name}() failed: {type(exc).__name__}: {exc}") from exc
    try:
        json.dumps(result, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise HostCallRefused(f"{name}() returned a value that is not JSON-safe: {exc}") from None
    return result
