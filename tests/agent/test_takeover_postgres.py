"""An agent task on a PostgreSQL control plane moves to another machine with its session intact."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from holdfast.agent import agent_kind
from holdfast.cli.run import working_set
from holdfast.harness import Harness
from holdfast.lm import get_lm
from holdfast.lm.types import Completion
from holdfast.testing import FakeOpenAIServer, reply, tool_call
from holdfast.testing.postgres import PostgresCluster

from .helpers import submit

CONSTRAINT = "CONSTRAINT-KEEP-VENDOR-UNTOUCHED"


def _machine(url: str, home: Path, server: FakeOpenAIServer, mp: pytest.MonkeyPatch) -> Harness:
    """A worker as on its own machine: its own Holdfast home, the shared database."""
    home.mkdir()
    mp.setenv("HOLDFAST_HOME", str(home))
    h = Harness.open(url)
    h.registry.register(
        agent_kind(
            lm_factory=lambda s: get_lm("openai:fake-model", base_url=server.base_url, api_key="k"),
            memory_factory=None,
            analyzer_factory=None,
        )
    )
    return h


def _payloads(h: Harness, task_id: str, kind: str) -> list[dict[str, Any]]:
    return [r.data()["payload"] for r in h.receipts(task_id) if r.data()["kind"] == kind]


@pytest.mark.postgres
def test_a_paused_task_resumes_on_another_machine_with_its_working_set(
    pg_cluster: PostgresCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = pg_cluster.create_database("takeover")
    script = [
        reply("", tool_call("add_constraint", {"text": CONSTRAINT})),
        reply("", tool_call("record_progress", {"text": "surveyed the modules"})),
        reply("", tool_call("record_progress", {"text": "ported the lexer"})),
        reply("", tool_call("finish", {"result": "ported"})),
    ]
    # the pause is sent while the third request is in flight: either its reply lands first and
    # its tool call meets the pause at the step boundary, or the pause cancels the call in
    # flight and the other machine asks that turn again; the reply depends on the turn asked
    # (how many assistant turns the conversation holds), not on how many requests came before
    pause_at = 3
    machine_a: list[Harness] = []

    def handler(body: dict[str, Any]) -> Completion:
        if len(server.requests) == pause_at:
            machine_a[0].pause(task_id)
        done = sum(1 for m in body["messages"] if m.get("role") == "assistant")
        return script[done]

    with FakeOpenAIServer(handler) as server:
        h_a = _machine(url, tmp_path / "home-a", server, monkeypatch)
        machine_a.append(h_a)
        task_id = submit(h_a, "Port the parser", None).id
        h_a.run_until_idle()
        assert h_a.get(task_id).status == "paused"
        assert len(server.requests) == pause_at
        vid = _payloads(h_a, task_id, "session_started")[0]["vsession"]
        h_a.close()

        h_b = _machine(url, tmp_path / "home-b", server, monkeypatch)
        try:
            h_b.resume(task_id)
            h_b.run_until_idle()
            row = h_b.get(task_id)
            assert row.status == "succeeded", row.error
            asked_again = len(server.requests) - len(script)
            assert asked_again in (0, 1), len(server.requests)
            after = json.dumps(server.requests[pause_at]["messages"], ensure_ascii=False)
            assert CONSTRAINT in after and "surveyed the modules" in after
            assert len(_payloads(h_b, task_id, "session_started")) == 1
            assert [p["vsession"] for p in _payloads(h_b, task_id, "session_resumed")] == [vid]
            assert row.result is not None and row.result["vsession"] == vid
            assert row.result["turns"] == len(script)
            assert [c["text"] for c in row.result["working_set"]["constraints"]] == [CONSTRAINT]
            assert h_b.verify(task_id).ok
        finally:
            h_b.close()
    assert not (tmp_path / "home-b" / "holdfast.db").exists(), "the session was kept locally"

    shown = CliRunner().invoke(
        working_set, [task_id, "--database-url", url, "--json"], catch_exceptions=False
    )
    assert shown.exit_code == 0, shown.output
    data = json.loads(shown.stdout)
    assert data["working_set"]["constraints"][0]["text"] == CONSTRAINT and data["turns"] == 4
