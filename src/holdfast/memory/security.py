"""Memory hygiene: secrets are redacted before anything is written, and recalled text that reads
like instructions to the agent is flagged so the caller can quote it rather than obey it.
"""

from __future__ import annotations

import re

REDACTED = "[REDACTED:{kind}]"

_SECRETS: list[tuple[str, re.Pattern[str]]] = [
    (
        "private_key",
        re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----"),
    ),
    ("openai_key", re.compile(r"\bsk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,}")),
    ("aws_key", re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")),
    ("github_token", re.compile(r"\bgh[pousr]_[A-Za-z0-9]{30,}\b")),
    ("slack_token", re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}")),
    ("google_key", re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b")),
    ("jwt", re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")),
    ("bearer", re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]{16,}")),
    ("url_password", re.compile(r"(?<=://)[^/\s:@]+:[^/\s@]+(?=@)")),
]
_ASSIGNED = re.compile(
    r"(?i)\b(?P<key>password|passwd|pwd|passphrase|secret|api[_ -]?key|access[_ -]?token|"
    r"auth[_ -]?token|token|client[_ -]?secret)(?P<sep>\s*(?:is|=|:)\s*)(?P<val>[\"']?[^\s\"',;]{4,}[\"']?)"
)


def redact(text: str) -> tuple[str, list[str]]:
    """``text`` with secrets replaced by ``[REDACTED:<kind>]``, and the kinds found."""
    found: list[str] = []
    for kind, pattern in _SECRETS:
        if pattern.search(text):
            found.append(kind)
            text = pattern.sub(REDACTED.format(kind=kind), text)

    def _assigned(m: re.Match[str]) -> str:
        if m.group("val").startswith("[REDACTED"):
            return m.group(0)
        found.append("password" if "pass" in m.group("key").lower() else "secret")
        return m.group("key") + m.group("sep") + REDACTED.format(kind="secret")

    text = _ASSIGNED.sub(_assigned, text)
    return text, found


_INSTRUCTION = re.compile(
    r"(?i)\b(?:ignore|disregard|forget|override)\s+(?:all\s+|any\s+|the\s+)?(?:previous|prior|above|earlier|your)\s+"
    r"(?:instructions?|rules?|prompts?|messages?)"
    r"|\byou\s+(?:must|should)\s+now\b"
    r"|\b(?:system|developer)\s+prompt\b"
    r"|\bnew\s+instructions?\s*:"
    r"|^\s*(?:system|assistant)\s*:"
    r"|\b(?:run|execute)\s+(?:the\s+)?(?:following\s+)?(?:command|code|shell)\b"
    r"|\b(?:send|upload|exfiltrate|email)\s+(?:the\s+|all\s+|your\s+)?(?:credentials|secrets?|api\s+keys?|passwords?|tokens?)\b"
    r"|\bdo\s+not\s+tell\s+the\s+user\b",
    re.MULTILINE,
)


def instruction_like(text: str) -> bool:
    """True when the text reads like instructions aimed at an agent (possible prompt injection)."""
    return bool(_INSTRUCTION.search(text))
