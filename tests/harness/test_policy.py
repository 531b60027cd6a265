from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from holdfast.errors import InvalidInput
from holdfast.harness import Budget, Policy, TaskSpec

POLICY = Policy.parse(
    {
        "rules": [
            {"tool": "file.write", "paths": ["out/**"], "action": "allow"},
            {"tool": "file.write", "paths": ["*.md"], "action": "ask"},
            {"tool": "shell", "commands": ["pytest *", "git status"], "action": "allow"},
            {"tool": "shell", "action": "ask"},
            {"tool": "net.*", "action": "deny"},
        ]
    },
    known_tools={"file.write", "shell", "net.get"},
)


@pytest.mark.parametrize(
    ("tool", "args", "action"),
    [
        ("file.write", {"path": "out/a/b.txt"}, "allow"),
        ("file.write", {"path": "README.md"}, "ask"),
        ("file.write", {"path": "docs/README.md"}, "deny"),
        ("file.write", {"path": "out/../../etc/passwd"}, "deny"),
        ("file.write", {"path": "/etc/passwd"}, "deny"),
        ("file.write", {}, "deny"),
        ("shell", {"command": "pytest  -q tests"}, "allow"),
        ("shell", {"command": "pytest -q; rm -rf /"}, "ask"),
        ("shell", {"command": "git status"}, "allow"),
        ("shell", {"command": "git push"}, "ask"),
        ("net.get", {"url": "x"}, "deny"),
        ("unknown.tool", {}, "deny"),
    ],
)
def test_first_matching_rule_decides_and_unmatched_effects_are_denied(
    tool: str, args: dict[str, str], action: str
) -> None:
    assert POLICY.decide(tool, args).action == action


def test_tools_without_side_effects_pass_unless_a_rule_says_otherwise() -> None:
    assert Policy().decide("read", {}, effect=False).action == "allow"
    assert Policy().decide("write", {}).action == "deny"


def test_broken_policy_denies_everything() -> None:
    p = Policy.broken("unreadable")
    assert p.decide("anything", {}, effect=False).action == "deny"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("allow", "JSON object"),
        ({"rules": {}}, "must be a list"),
        ({"rules": [{"tool": "x"}]}, "'action' must be one of"),
        ({"rules": [{"action": "allow"}]}, "needs a 'tool'"),
        ({"rules": [{"tool": "x", "action": "allow", "paths": "a"}]}, "list of non-empty"),
        ({"rules": [{"tool": "x", "action": "allow", "when": 1}]}, "unknown field"),
        ({"rules": [{"tool": "rm", "action": "allow"}]}, "unknown tool 'rm'"),
        ({"rule": []}, "unknown policy field"),
    ],
)
def test_invalid_policies_are_rejected_with_a_clear_message(raw: object, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        Policy.parse(raw, known_tools={"x", "shell"})


@given(st.text(min_size=1, max_size=40))
def test_paths_leaving_the_workspace_never_match(suffix: str) -> None:
    p = Policy.parse({"rules": [{"tool": "w", "paths": ["**"], "action": "allow"}]})
    for path in (f"../{suffix}", f"/{suffix}", f"a/../../{suffix}"):
        assert p.decide("w", {"path": path}).action == "deny"


@given(
    st.text(max_size=20),
    st.sampled_from([";", "&&", "|", "`", "$(", "\n", ">", "<"]),
    st.text(max_size=20),
)
def test_shell_control_operators_never_match_an_allow_rule(a: str, op: str, b: str) -> None:
    p = Policy.parse({"rules": [{"tool": "shell", "commands": ["*"], "action": "allow"}]})
    assert p.decide("shell", {"command": f"ls {a}{op}{b}"}).action == "deny"


@given(st.lists(st.sampled_from(["allow", "ask", "deny"]), min_size=1, max_size=5))
def test_policies_round_trip(actions: list[str]) -> None:
    raw = {"rules": [{"tool": f"t{i}", "action": a} for i, a in enumerate(actions)]}
    assert Policy.parse(raw).to_dict() == raw


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ([], "JSON object"),
        ({}, "needs a 'kind'"),
        ({"kind": "x", "colour": 1}, "unknown task spec field"),
        ({"kind": "x", "budget": {"steps": 0}}, "positive integer"),
        ({"kind": "x", "budget": {"usd": float("nan")}}, "positive number"),
        ({"kind": "x", "budget": {"tokens": True}}, "positive integer"),
        ({"kind": "x", "budget": {"hours": 1}}, "unknown budget field"),
        ({"kind": "x", "queue": "a b"}, "'queue' must match"),
        ({"kind": "x", "max_attempts": 0}, "at least 1"),
        ({"kind": "x", "input": []}, "'input' must be"),
    ],
)
def test_invalid_task_specs_name_the_problem(raw: object, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        TaskSpec.from_dict(raw)


def test_task_spec_round_trips() -> None:
    spec = TaskSpec.from_dict(
        {"kind": "k", "goal": "g", "budget": {"steps": 3, "usd": 0.5}, "priority": 2}
    )
    assert spec.budget == Budget(steps=3, usd=0.5)
    assert TaskSpec.from_dict(spec.to_dict()) == spec
