"""The offline demo (item 8 of the issue) runs end to end with its scripted models."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from holdfast.agent.demo import run_agent_demo


@pytest.mark.sandbox
def test_the_scripted_demo_runs_the_whole_main_job() -> None:
    buf = io.StringIO()
    summary = run_agent_demo(console=Console(file=buf, width=200), embedder="none")
    text = buf.getvalue()
    assert summary["status"] == "succeeded", text
    assert summary["rollovers"] >= 3
    assert summary["receipts_ok"] and summary["report"]
    assert summary["trace_id"], "the RLM job's trace id was kept as a finding"
    assert "SCRIPTED demo model" in text
    assert "approval requested" in text
    assert "CARD_DECLINED" in text.split("# Failed payments")[1], "the report carries the analysis"
    assert f"holdfast rlm trace {summary['trace_id']}" in text
