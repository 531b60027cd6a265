"""JSON-schema structured output: the ``response_format`` to send, and parsing the reply."""

from __future__ import annotations

import json
import re
from typing import Any

from holdfast.errors import InvalidInput
from holdfast.lm.types import Completion


def json_schema_format(
    schema: dict[str, Any] | type, *, name: str | None = None, strict: bool = True
) -> dict[str, Any]:
    """The ``response_format`` asking for JSON matching ``schema`` (a dict or a pydantic model)."""
    if isinstance(schema, type):
        model_json_schema = getattr(schema, "model_json_schema", None)
        if model_json_schema is None:
            raise InvalidInput(
                f"{schema.__name__} is not a pydantic model; pass a JSON schema dict"
            )
        name = name or schema.__name__
        schema = model_json_schema()
    if not isinstance(schema, dict):
        raise InvalidInput(
            f"schema must be a dict or a pydantic model, got {type(schema).__name__}"
        )
    safe = re.sub(r"[^A-Za-z0-9_-]", "_", name or str(schema.get("title") or "output"))[:64]
    return {
        "type": "json_schema",
        "json_schema": {"name": safe, "schema": schema, "strict": strict},
    }


def parse_json_reply(completion: Completion) -> Any:
    """The reply's text as JSON (tolerating a Markdown code fence); InvalidInput if it is not."""
    text = completion.text.strip()
    fenced = re.fullmatch(r"```(?:json)?\s*(.*?)\s*```", text, re.DOTALL)
    if fenced:
        text = fenced.group(1)
    try:
        return json.loads(text)
    except ValueError as exc:
        raise InvalidInput(
            f"the model's reply is not JSON ({exc}): {completion.text[:300]!r}"
        ) from None
