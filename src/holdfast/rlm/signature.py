"""Typed signatures: ``"question, passage -> answer: str, confidence: float"``.

A signature names a job's inputs and its typed outputs. The RLM validates ``SUBMIT(...)`` and
``predict(...)`` results against the outputs with pydantic, so a model that submits the wrong type
gets the validation error back as a turn instead of the caller getting an untyped string.

Types are parsed by a small grammar (never ``eval``): ``str int float bool list dict any``,
``list[T]``, ``dict[str, T]``, ``T | None``, ``optional[T]`` and ``literal['a', 'b']``.
"""

from __future__ import annotations

import json
import keyword
import re
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from holdfast.errors import InvalidInput

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TOKEN = re.compile(
    r"\s*(?:(?P<str>'[^']*'|\"[^\"]*\")|(?P<name>[A-Za-z_][A-Za-z0-9_]*)|(?P<p>[\[\],|]))"
)
_SCALARS: dict[str, Any] = {
    "str": str,
    "int": int,
    "float": float,
    "bool": bool,
    "list": list[Any],
    "dict": dict[str, Any],
    "any": Any,
    "none": type(None),
}


@dataclass(frozen=True)
class Field:
    """One named field of a signature with its type text and parsed annotation."""

    name: str
    type_text: str = "str"
    annotation: Any = str
    description: str = ""


@dataclass(frozen=True)
class Signature:
    """Inputs and typed outputs of a job, with a pydantic model for the outputs."""

    inputs: tuple[Field, ...]
    outputs: tuple[Field, ...]
    text: str = ""
    model: type[BaseModel] = field(default=BaseModel, compare=False, repr=False)
    strict: bool = True
    """Submitted values must already have the declared types (``'42'``, ``True`` and ``3.0`` are
    not ints; an int is a float). ``False`` lets pydantic coerce them (its lax mode)."""

    @property
    def output_names(self) -> list[str]:
        return [f.name for f in self.outputs]

    def validate(self, values: dict[str, Any]) -> BaseModel:
        """Validate submitted outputs; raises :class:`SubmitError` with a message for the model."""
        try:
            return self.model.model_validate(values, strict=True if self.strict else None)
        except ValidationError as exc:
            raise SubmitError(format_validation_error(exc, self)) from None

    def coerce_submission(self, args: list[Any], kwargs: dict[str, Any]) -> dict[str, Any]:
        """Map ``SUBMIT(value)`` or ``SUBMIT(**fields)`` onto the output fields."""
        if args and kwargs:
            raise SubmitError(
                "SUBMIT takes either one positional value or keyword fields, not both"
            )
        if args:
            if len(args) != 1:
                raise SubmitError(f"SUBMIT got {len(args)} positional values; pass keyword fields")
            if len(self.outputs) == 1:
                return {self.outputs[0].name: args[0]}
            if isinstance(args[0], dict):
                return dict(args[0])
            raise SubmitError(
                f"this job has {len(self.outputs)} outputs; call SUBMIT({self.describe_outputs()})"
            )
        return dict(kwargs)

    def describe_outputs(self) -> str:
        return ", ".join(f"{f.name}=<{f.type_text}>" for f in self.outputs)

    def json_schema(self) -> dict[str, Any]:
        """The outputs' JSON schema (for structured-output sub-calls)."""
        return self.model.model_json_schema()

    def __str__(self) -> str:
        ins = ", ".join(f.name for f in self.inputs)
        outs = ", ".join(f"{f.name}: {f.type_text}" for f in self.outputs)
        return f"{ins} -> {outs}"


class SubmitError(ValueError):
    """A submission that does not fit the signature; its message is shown to the model."""


def format_validation_error(exc: ValidationError, sig: Signature | None = None) -> str:
    lines = []
    for err in exc.errors()[:10]:
        loc = ".".join(str(p) for p in err.get("loc", ())) or "(value)"
        got = repr(err.get("input"))
        if len(got) > 80:
            got = got[:77] + "..."
        lines.append(f"- {loc}: {err.get('msg')} (got {got})")
    head = "the submitted value does not match the expected outputs"
    if sig is not None:
        head += f" ({sig.describe_outputs()})"
    return head + ":\n" + "\n".join(lines)


def parse_type(text: str) -> Any:
    """Parse a type expression of the signature grammar into an annotation."""
    tokens = _tokenize(text)
    pos, ann = _parse_union(tokens, 0, text)
    if pos != len(tokens):
        raise InvalidInput(f"unexpected {tokens[pos][1]!r} in type {text!r}")
    return ann


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    stripped = text.rstrip()
    while pos < len(stripped):
        m = _TOKEN.match(stripped, pos)
        if m is None or m.end() == pos:
            raise InvalidInput(f"cannot read the type {text!r} at {stripped[pos:]!r}")
        kind = m.lastgroup or ""
        tokens.append((kind, m.group(kind)))
        pos = m.end()
    if not tokens:
        raise InvalidInput("empty type in signature")
    return tokens


def _parse_union(tokens: list[tuple[str, str]], pos: int, text: str) -> tuple[int, Any]:
    pos, first = _parse_atom(tokens, pos, text)
    options = [first]
    while pos < len(tokens) and tokens[pos] == ("p", "|"):
        pos, nxt = _parse_atom(tokens, pos + 1, text)
        options.append(nxt)
    if len(options) == 1:
        return pos, first
    return pos, Union[tuple(options)]  # noqa: UP007


def _expect(tokens: list[tuple[str, str]], pos: int, punct: str, text: str) -> int:
    if pos >= len(tokens) or tokens[pos] != ("p", punct):
        raise InvalidInput(f"expected {punct!r} in type {text!r}")
    return pos + 1


def _parse_atom(tokens: list[tuple[str, str]], pos: int, text: str) -> tuple[int, Any]:
    if pos >= len(tokens) or tokens[pos][0] != "name":
        raise InvalidInput(f"expected a type name in {text!r}")
    name = tokens[pos][1].lower()
    pos += 1
    if pos < len(tokens) and tokens[pos] == ("p", "["):
        pos += 1
        if name == "literal":
            values: list[str] = []
            while True:
                if pos >= len(tokens) or tokens[pos][0] != "str":
                    raise InvalidInput(f"literal[...] takes quoted strings, in {text!r}")
                values.append(tokens[pos][1][1:-1])
                pos += 1
                if pos < len(tokens) and tokens[pos] == ("p", ","):
                    pos += 1
                    continue
                break
            pos = _expect(tokens, pos, "]", text)
            return pos, Literal[tuple(values)]
        pos, inner = _parse_union(tokens, pos, text)
        if name == "list":
            return _expect(tokens, pos, "]", text), list[inner]  # type: ignore[valid-type]
        if name in ("optional",):
            return _expect(tokens, pos, "]", text), Optional[inner]  # noqa: UP045
        if name == "dict":
            pos = _expect(tokens, pos, ",", text)
            pos, val = _parse_union(tokens, pos, text)
            return _expect(tokens, pos, "]", text), dict[inner, val]  # type: ignore[valid-type]
        raise InvalidInput(f"type {name!r} takes no parameters, in {text!r}")
    if name not in _SCALARS:
        known = ", ".join(sorted(_SCALARS))
        raise InvalidInput(
            f"unknown type {name!r} in {text!r}; known types: {known}, list[T], dict[str, T], literal['a', 'b']"
        )
    return pos, _SCALARS[name]


def _split_fields(text: str) -> list[str]:
    parts: list[str] = []
    depth = 0
    buf = ""
    for ch in text:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(buf)
            buf = ""
        else:
            buf += ch
    parts.append(buf)
    return [p.strip() for p in parts]


def _parse_fields(text: str, side: str, spec: str) -> tuple[Field, ...]:
    if not text.strip():
        if side == "inputs":
            return ()
        raise InvalidInput(f"signature {spec!r} names no outputs after '->'")
    fields: list[Field] = []
    for part in _split_fields(text):
        if not part:
            raise InvalidInput(f"signature {spec!r} has an empty field in its {side}")
        name, _, type_text = part.partition(":")
        name = name.strip()
        type_text = type_text.strip() or "str"
        if not _NAME.match(name) or keyword.iskeyword(name):
            raise InvalidInput(f"{name!r} in signature {spec!r} is not a valid field name")
        if any(f.name == name for f in fields):
            raise InvalidInput(f"field {name!r} appears twice in signature {spec!r}")
        fields.append(Field(name=name, type_text=type_text, annotation=parse_type(type_text)))
    return tuple(fields)


def parse_signature(
    spec: str | Signature | type[BaseModel] | None, *, strict: bool | None = None
) -> Signature:
    """Parse ``"in1, in2 -> out: type, ..."``; a pydantic model class gives the outputs.

    ``strict`` (default True) validates submissions without coercion; see :attr:`Signature.strict`.
    A :class:`Signature` passed in keeps its own setting unless ``strict`` is given.
    """
    if spec is None:
        spec = "-> answer: str"
    if isinstance(spec, Signature):
        if strict is None or strict == spec.strict:
            return spec
        return replace(spec, strict=strict)
    strict = True if strict is None else strict
    if isinstance(spec, type) and issubclass(spec, BaseModel):
        outs = tuple(
            Field(name=n, type_text=_type_name(f.annotation), annotation=f.annotation)
            for n, f in spec.model_fields.items()
        )
        if not outs:
            raise InvalidInput(f"the output model {spec.__name__} has no fields")
        return Signature(inputs=(), outputs=outs, text=spec.__name__, model=spec, strict=strict)
    if not isinstance(spec, str):
        raise InvalidInput(
            f"a signature is a string like 'question -> answer: str', not {type(spec).__name__}"
        )
    if spec.count("->") != 1:
        raise InvalidInput(f"signature {spec!r} needs exactly one '->' between inputs and outputs")
    left, right = spec.split("->")
    inputs = _parse_fields(left, "inputs", spec)
    outputs = _parse_fields(right, "outputs", spec)
    clash = {f.name for f in inputs} & {f.name for f in outputs}
    if clash:
        raise InvalidInput(f"signature {spec!r} uses {sorted(clash)} as both input and output")
    model = create_model(  # type: ignore[call-overload]
        "Outputs",
        __config__=ConfigDict(extra="forbid"),
        **{f.name: (f.annotation, ...) for f in outputs},
    )
    return Signature(inputs=inputs, outputs=outputs, text=spec.strip(), model=model, strict=strict)


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def outputs_to_jsonable(value: BaseModel) -> dict[str, Any]:
    """The validated outputs as plain JSON data."""
    data: dict[str, Any] = json.loads(value.model_dump_json())
    return data
