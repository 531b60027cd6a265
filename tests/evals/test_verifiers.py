"""The verifiers environment through ``vf-eval`` itself, against the local OpenAI-compatible server.

verifiers 0.4 pins ``openai<3`` and Holdfast requires ``openai>=3``, so verifiers lives in its
own environment (``make venv-verifiers`` builds ``.venv-verifiers``: verifiers and Holdfast's
code without its openai pin). ``vf-eval`` runs there; the harness program it launches runs in
this environment (``HOLDFAST_PYTHON``), and every model call goes from Holdfast's RLM loop
through verifiers' interception proxy to the fake server, whose replies come from the honest
scripted policy.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from holdfast.evals.policies import niah_root
from holdfast.testing import FakeOpenAIServer

REPO = Path(__file__).resolve().parents[2]


def verifiers_python() -> Path | None:
    given = os.environ.get("HOLDFAST_VERIFIERS_PYTHON")
    if given:
        return Path(given)
    venv = REPO / ".venv-verifiers"
    # the stamp is written once the environment is complete (`make venv-verifiers`)
    return venv / "bin" / "python" if (venv / ".holdfast-installed").exists() else None


VF = verifiers_python()
pytestmark = pytest.mark.skipif(
    VF is None, reason="no verifiers environment: run `make venv-verifiers` (see docs/evals.md)"
)


def vf_eval(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    assert VF is not None
    code = "import sys; from verifiers.v1.cli.eval.main import main; sys.argv[0] = 'vf-eval'; sys.exit(main())"
    return subprocess.run(
        [str(VF), "-c", code, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def vf_args(
    server: FakeOpenAIServer, *, suite: str, count: int, size: int | None = None
) -> list[str]:
    """vf-eval's arguments: the Holdfast taskset and harness, a subprocess runtime, the server."""
    args = [
        "holdfast-tasks",
        "--env.agent.harness.id", "holdfast-harness",
        "--env.agent.runtime.type", "subprocess",
        "--env.agent.harness.isolation", "process",
        "--env.taskset.suite", suite,
        "--env.taskset.count", str(count),
        "--client.base-url", server.base_url,
        "--client.api-key-var", "FAKE_KEY",
        "-m", "fake-model",
        "-n", str(count),
        "--no-push",
    ]  # fmt: skip
    return args + (["--env.taskset.size", str(size)] if size else [])


def env_for(home: Path) -> dict[str, str]:
    return {
        **os.environ,
        "HOLDFAST_PYTHON": sys.executable,
        "HOLDFAST_HOME": str(home),
        "FAKE_KEY": "k",
    }


def traces(cwd: Path) -> list[dict[str, Any]]:
    (path,) = list((cwd / "outputs").glob("*/traces.jsonl"))
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_vf_eval_runs_the_taskset_in_holdfasts_rlm_harness(
    tmp_path: Path, holdfast_home: Path
) -> None:
    def model(body: dict[str, Any]) -> str:
        return niah_root(body["messages"])

    with FakeOpenAIServer(model) as server:
        args = vf_args(server, suite="niah-single", count=2, size=60_000)
        res = vf_eval(args, tmp_path, env_for(holdfast_home))
        bodies = [b for b in server.requests if "messages" in b]
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    rows = traces(tmp_path)
    assert len(rows) == 2
    for row in rows:
        assert row["ok"] and not row["errors"], row["errors"]
        (trace,) = row["traces"]
        assert trace["rewards"]["correct"]["score"] == 1.0
        assert trace["metrics"]["iterations"] >= 2
        assert trace["num_input_tokens"] > 0  # verifiers' interception saw the model calls
    # Holdfast's RLM loop drove the model: its system prompt and REPL feedback reached the server
    assert len(bodies) >= 4
    assert any("persistent REPL" in str(b["messages"][0].get("content")) for b in bodies)
    # the program never saw the gold answer
    for b in bodies:
        for row in rows:
            gold = row["traces"][0]["task"]["data"]["holdfast"]["gold"]
            assert gold not in json.dumps(b["messages"][:2])


def test_vf_eval_runs_an_agent_suite_in_holdfasts_agent_loop(
    tmp_path: Path, holdfast_home: Path
) -> None:
    """agent-gated: the evaluator approves staging and denies production inside the harness
    program; the reward is the suite's score of what the task did."""
    from holdfast.evals.agent_suites import scripted_agent

    with FakeOpenAIServer(lambda body: scripted_agent(body["messages"])) as server:
        res = vf_eval(
            vf_args(server, suite="agent-gated", count=1), tmp_path, env_for(holdfast_home)
        )
        bodies = [b for b in server.requests if "messages" in b]
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    (row,) = traces(tmp_path)
    assert row["traces"][0]["rewards"]["correct"]["score"] == 1.0
    assert any(t["function"]["name"] == "deploy" for b in bodies for t in b.get("tools") or [])


def test_a_wrong_answer_gets_no_reward(tmp_path: Path, holdfast_home: Path) -> None:
    def careless(body: dict[str, Any]) -> str:
        return "I will guess.\n```python\nSUBMIT(code='AA-0000-AA')\n```\n"

    with FakeOpenAIServer(careless) as server:
        args = vf_args(server, suite="niah-single", count=1, size=60_000)
        res = vf_eval(args, tmp_path, env_for(holdfast_home))
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    (row,) = traces(tmp_path)
    assert row["traces"][0]["rewards"]["correct"]["score"] == 0.0
