"""What an OpenAI-compatible server says about its model: tool support of its chat template.

A server whose chat template has no tool support does one of two things with a request that
offers tools: it refuses it (llama.cpp without ``--jinja``: HTTP 500 "tools param requires --jinja
flag"; Ollama: HTTP 400 "... does not support tools"; vLLM without a tool parser: HTTP 400
"'auto' tool choice requires --enable-auto-tool-choice"), or it renders the prompt without them
and returns plain text, so tool calls never come. The refusal is recognised by
:func:`is_tools_unsupported` and raised as :class:`~holdfast.lm.errors.ToolsUnsupported`; the
silent case is asked of the server where it can tell (llama.cpp's ``GET /props`` reports
``chat_template_caps``) by :func:`probe_tool_support`, which the agent uses to say why a model
made no tool call.
"""

from __future__ import annotations

import json
import re
import urllib.request
from typing import Any
from urllib.parse import urlsplit, urlunsplit

_NO_TOOLS = re.compile(
    r"tools? param requires --jinja|tool_choice param requires --jinja"
    r"|does not support tools|tools? (?:are|is) not supported|not support(?:ed)? tool"
    r"|tool choice requires --enable-auto-tool-choice",
    re.IGNORECASE,
)


# llama.cpp answers HTTP 500 when the model's output does not parse in the chat format it
# expected (a half-made tool call, say): a sampling outcome, not an outage.
_UNPARSED = re.compile(
    r"does not match the expected [\w-]+ format|failed to parse (?:the )?(?:model )?output",
    re.IGNORECASE,
)


def is_unparsed_output(status: int, body: str) -> bool:
    """Whether a 5xx says that the server could not parse what the model generated."""
    return 500 <= status < 600 and bool(_UNPARSED.search(body))


def is_tools_unsupported(status: int, body: str) -> bool:
    """Whether a rejected request's body says that the model or server cannot take tools."""
    return 400 <= status < 600 and bool(_NO_TOOLS.search(body))


def _props_url(base_url: str) -> str | None:
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    path = parts.path.rstrip("/")
    if path.endswith("/v1"):
        path = path[: -len("/v1")]
    return urlunsplit((parts.scheme, parts.netloc, path + "/props", "", ""))


def probe_tool_support(base_url: str | None, *, timeout: float = 5.0) -> bool | None:
    """Whether the server's chat template supports tools, when the server says (else None).

    Reads llama.cpp's ``GET /props`` (``chat_template_caps.supports_tools`` and
    ``supports_tool_calls``); any other server, an error or a timeout gives None (unknown). Only
    loopback and private endpoints are asked: a hosted API is never probed.
    """
    if not base_url:
        return None
    from holdfast.lm.openai_compat import is_loopback

    url = _props_url(base_url)
    if url is None or not is_loopback(url):
        return None
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            data: Any = json.loads(resp.read(1 << 20))
    except (OSError, ValueError):
        return None
    caps = data.get("chat_template_caps") if isinstance(data, dict) else None
    if not isinstance(caps, dict):
        return None
    values = [caps.get(k) for k in ("supports_tools", "supports_tool_calls")]
    known = [v for v in values if isinstance(v, bool)]
    if not known:
        return None
    return all(known)


def no_tool_calls_hint(lm: Any) -> str:
    """A sentence for an error about a model that made no tool call: why, as far as is known."""
    support = probe_tool_support(getattr(lm, "base_url", None))
    if support is False:
        return (
            "; the server reports that the model's chat template does not support tools, so "
            "the tools were never shown to it (use a tool-capable model or template; llama.cpp: "
            "--jinja with --chat-template-file)"
        )
    return (
        "; if the model never calls tools, its chat template may have no tool support (llama.cpp: "
        "start llama-server with --jinja and a tool-capable template; Ollama: a model tagged "
        "'tools'; vLLM: --enable-auto-tool-choice --tool-call-parser ...)"
    )
