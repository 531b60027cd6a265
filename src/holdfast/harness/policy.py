"""Fail-closed permission gates: which tool calls a task may make, must ask about, or may not.

A policy is an ordered list of rules; the first rule that matches a call decides it::

    {"rules": [
        {"tool": "file.write", "paths": ["out/**"], "action": "allow"},
        {"tool": "shell", "commands": ["pytest *", "git status"], "action": "allow"},
        {"tool": "shell", "action": "ask"},
        {"tool": "*", "action": "deny"}
    ]}

``paths`` match the call's ``path`` argument, relative to the workspace (``*`` stays inside one
directory, ``**`` crosses directories); a path that leaves the workspace matches no rule. ``commands``
match the call's ``command`` argument as a whole; a command with shell control operators (``;``,
``|``, ``&``, backticks, ``$(``, redirections, newlines) never matches an ``allow`` rule. A
side-effecting call that no rule matches is denied; so is every call when the policy itself is
missing a required part or cannot be read.
"""

from __future__ import annotations

import fnmatch
import posixpath
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from holdfast.errors import InvalidInput

ACTIONS = ("allow", "ask", "deny")
_SHELL_CONTROL = re.compile(r"[;&|`\n\r<>]|\$\(")


@dataclass(frozen=True)
class Rule:
    """One policy rule: a tool name (or glob), optional path or command patterns, an action."""

    tool: str
    action: str
    paths: tuple[str, ...] = ()
    commands: tuple[str, ...] = ()


@dataclass(frozen=True)
class Decision:
    """What the gate decided for one call, and why (shown to people and kept in receipts)."""

    action: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"action": self.action, "reason": self.reason}


@dataclass(frozen=True)
class Policy:
    """An ordered rule list; build one with :meth:`parse`, which checks every field."""

    rules: tuple[Rule, ...] = ()
    invalid: str | None = None

    @classmethod
    def parse(cls, raw: Any, *, known_tools: Collection[str] | None = None) -> Policy:
        """Validate a policy given as JSON data; raises :class:`InvalidInput` naming the problem."""
        if raw is None:
            return cls()
        if not isinstance(raw, Mapping):
            raise InvalidInput("a policy must be a JSON object with a 'rules' list")
        extra = set(raw) - {"rules"}
        if extra:
            raise InvalidInput(f"unknown policy field(s): {', '.join(sorted(extra))}")
        rules_raw = raw.get("rules", [])
        if not isinstance(rules_raw, list):
            raise InvalidInput("policy 'rules' must be a list")
        rules: list[Rule] = []
        for i, r in enumerate(rules_raw):
            where = f"policy rule {i + 1}"
            if not isinstance(r, Mapping):
                raise InvalidInput(f"{where} must be an object")
            extra = set(r) - {"tool", "action", "paths", "commands"}
            if extra:
                raise InvalidInput(f"{where} has unknown field(s): {', '.join(sorted(extra))}")
            tool, action = r.get("tool"), r.get("action")
            if not isinstance(tool, str) or not tool:
                raise InvalidInput(f"{where} needs a 'tool' name")
            if action not in ACTIONS:
                raise InvalidInput(f"{where} 'action' must be one of {', '.join(ACTIONS)}")
            if known_tools is not None and not _is_glob(tool) and tool not in known_tools:
                raise InvalidInput(
                    f"{where} names the unknown tool {tool!r}; known tools: "
                    f"{', '.join(sorted(known_tools)) or '(none)'}"
                )
            paths = _patterns(r.get("paths"), where, "paths")
            commands = _patterns(r.get("commands"), where, "commands")
            rules.append(Rule(tool, str(action), paths, commands))
        return cls(tuple(rules))

    @classmethod
    def broken(cls, why: str) -> Policy:
        """A policy that could not be read: it denies everything."""
        return cls((), invalid=why)

    def to_dict(self) -> dict[str, Any]:
        out: list[dict[str, Any]] = []
        for r in self.rules:
            d: dict[str, Any] = {"tool": r.tool, "action": r.action}
            if r.paths:
                d["paths"] = list(r.paths)
            if r.commands:
                d["commands"] = list(r.commands)
            out.append(d)
        return {"rules": out}

    def decide(self, tool: str, args: Mapping[str, Any], *, effect: bool = True) -> Decision:
        """The gate: the first matching rule's action; unmatched side effects are denied."""
        if self.invalid is not None:
            return Decision("deny", f"the task's policy cannot be used ({self.invalid})")
        for i, rule in enumerate(self.rules):
            if not fnmatch.fnmatchcase(tool, rule.tool):
                continue
            if rule.paths and not _match_path(args.get("path"), rule.paths):
                continue
            if rule.commands and not _match_command(
                args.get("command"), rule.commands, rule.action
            ):
                continue
            return Decision(rule.action, f"policy rule {i + 1} ({rule.tool} -> {rule.action})")
        if effect:
            return Decision("deny", f"no policy rule allows the side-effecting tool {tool!r}")
        return Decision("allow", f"{tool!r} has no side effects")


def _is_glob(name: str) -> bool:
    return any(c in name for c in "*?[")


def _patterns(raw: Any, where: str, field: str) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(p, str) and p for p in raw):
        raise InvalidInput(f"{where} '{field}' must be a list of non-empty strings")
    return tuple(raw)


def _match_path(raw: Any, patterns: tuple[str, ...]) -> bool:
    if not isinstance(raw, str) or not raw or raw.startswith("/") or "\x00" in raw:
        return False
    norm = posixpath.normpath(raw.replace("\\", "/"))
    if norm == ".." or norm.startswith("../"):
        return False
    return any(_glob_regex(p).fullmatch(norm) for p in patterns)


def _match_command(raw: Any, patterns: tuple[str, ...], action: str) -> bool:
    if not isinstance(raw, str) or not raw.strip():
        return False
    if action == "allow" and _SHELL_CONTROL.search(raw):
        return False
    cmd = " ".join(raw.split())
    return any(fnmatch.fnmatchcase(cmd, p) for p in patterns)


@lru_cache(maxsize=256)
def _glob_regex(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
            continue
        if pattern.startswith("**", i):
            out += ".*"
            i += 2
            continue
        out += "[^/]*" if c == "*" else "[^/]" if c == "?" else re.escape(c)
        i += 1
    return re.compile(out)
