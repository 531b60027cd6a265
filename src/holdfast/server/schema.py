"""A request's ``response_format`` JSON schema as the typed signature an RLM submits against.

The schema becomes a pydantic model (objects become nested models, ``enum`` a ``Literal``,
``anyOf`` a union, ``$defs``/``$ref`` are followed, string, number and array bounds become field
constraints), so ``SUBMIT(...)`` is validated against it and a wrong type goes back to the root
model as a turn to fix, exactly as with a signature written by hand. Keywords that cannot be
enforced this way (``allOf``, ``not``, ``if``, ``patternProperties``, recursive ``$ref``) are
refused with a message instead of being silently ignored.
"""

from __future__ import annotations

import keyword
import re
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, create_model

from holdfast.errors import InvalidInput

_UNSUPPORTED = ("allOf", "not", "if", "then", "else", "patternProperties", "dependentSchemas")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_BOUNDS = {
    "minLength": "min_length",
    "maxLength": "max_length",
    "pattern": "pattern",
    "minimum": "ge",
    "maximum": "le",
    "exclusiveMinimum": "gt",
    "exclusiveMaximum": "lt",
    "minItems": "min_length",
    "maxItems": "max_length",
}
MAX_DEPTH = 16


def model_from_schema(schema: Any, name: str = "Output") -> type[BaseModel]:
    """A pydantic model for an object schema (the root must be an object with properties)."""
    if not isinstance(schema, dict):
        raise InvalidInput("response_format.json_schema.schema must be a JSON object")
    root = _Converter(schema)
    resolved = root.resolve(schema)
    if resolved.get("type", "object") != "object" or not isinstance(
        resolved.get("properties"), dict
    ):
        raise InvalidInput(
            "response_format's schema must describe an object with properties (as OpenAI "
            "requires); wrap other values in an object"
        )
    if not resolved["properties"]:
        raise InvalidInput("response_format's schema has no properties")
    return root.model(resolved, _safe_name(name), 0)


class _Converter:
    def __init__(self, root: dict[str, Any]) -> None:
        self.root = root
        self.defs: dict[str, Any] = {**root.get("definitions", {}), **root.get("$defs", {})}
        self.active: list[str] = []
        self.models = 0

    def resolve(self, node: dict[str, Any]) -> dict[str, Any]:
        ref = node.get("$ref")
        if ref is None:
            return node
        if not isinstance(ref, str) or not ref.startswith(("#/$defs/", "#/definitions/")):
            raise InvalidInput(f"only local $ref to #/$defs/... is supported, not {ref!r}")
        key = ref.rsplit("/", 1)[1]
        if key in self.active:
            raise InvalidInput(f"the schema refers to {key!r} recursively, which is not supported")
        target = self.defs.get(key)
        if not isinstance(target, dict):
            raise InvalidInput(f"the schema's $ref {ref!r} names nothing in $defs")
        return target

    def annotation(self, node: Any, hint: str, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise InvalidInput(f"the schema nests deeper than {MAX_DEPTH} levels")
        if node is True or node == {}:
            return Any
        if not isinstance(node, dict):
            raise InvalidInput(f"a schema node must be an object, got {node!r}"[:200])
        for word in _UNSUPPORTED:
            if word in node:
                raise InvalidInput(f"the schema keyword {word!r} is not supported")
        ref = node.get("$ref")
        if ref is not None:
            key = str(ref).rsplit("/", 1)[-1]
            target = self.resolve(node)
            self.active.append(key)
            try:
                return self.annotation(target, key, depth + 1)
            finally:
                self.active.pop()
        if "enum" in node:
            values = node["enum"]
            if not isinstance(values, list) or not values:
                raise InvalidInput("an enum must be a non-empty list")
            return Literal[tuple(values)]
        if "const" in node:
            return Literal[node["const"]]
        for key in ("anyOf", "oneOf"):
            if key in node:
                options = [self.annotation(o, hint, depth + 1) for o in node[key]]
                if not options:
                    raise InvalidInput(f"{key} must list at least one schema")
                return options[0] if len(options) == 1 else Union[tuple(options)]  # noqa: UP007
        kind = node.get("type")
        if isinstance(kind, list):
            options = [self.annotation({**node, "type": k}, hint, depth + 1) for k in kind]
            return options[0] if len(options) == 1 else Union[tuple(options)]  # noqa: UP007
        if kind == "string":
            return str
        if kind == "integer":
            return int
        if kind == "number":
            return float
        if kind == "boolean":
            return bool
        if kind == "null":
            return type(None)
        if kind == "array":
            items = node.get("items", {})
            return list[self.annotation(items, hint + "Item", depth + 1)]  # type: ignore[misc]
        if kind == "object" or "properties" in node:
            if isinstance(node.get("properties"), dict) and node["properties"]:
                return self.model(node, _safe_name(hint), depth + 1)
            extra = node.get("additionalProperties", True)
            value = Any if extra in (True, None) else self.annotation(extra, hint, depth + 1)
            return dict[str, value]  # type: ignore[valid-type]
        if kind is None:
            return Any
        raise InvalidInput(f"unknown schema type {kind!r}")

    def model(self, node: dict[str, Any], name: str, depth: int) -> type[BaseModel]:
        self.models += 1
        if self.models > 200:
            raise InvalidInput("the schema defines more than 200 objects")
        props: dict[str, Any] = node["properties"]
        required = set(node.get("required", []))
        fields: dict[str, Any] = {}
        for prop, sub in props.items():
            if not _NAME.match(prop) or keyword.iskeyword(prop) or prop.startswith("model_"):
                raise InvalidInput(
                    f"the property name {prop!r} cannot be a submitted field (use letters, "
                    "digits and _)"
                )
            ann = self.annotation(sub, name + prop.title().replace("_", ""), depth)
            constraints = {
                _BOUNDS[k]: v
                for k, v in (sub if isinstance(sub, dict) else {}).items()
                if k in _BOUNDS
            }
            description = sub.get("description", "") if isinstance(sub, dict) else ""
            if prop in required:
                fields[prop] = (ann, Field(..., description=description, **constraints))
            else:
                fields[prop] = (
                    Optional[ann],  # noqa: UP045
                    Field(None, description=description, **constraints),
                )
        config = ConfigDict(
            extra="forbid" if node.get("additionalProperties") is False else "ignore"
        )
        model: type[BaseModel] = create_model(name, __config__=config, **fields)
        return model


def _safe_name(text: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9_]", "_", text) or "Output"
    return cleaned if cleaned[0].isalpha() else "M" + cleaned
