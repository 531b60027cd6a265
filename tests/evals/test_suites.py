"""Every suite end to end with its scripted policy, through the CLI, the engine and the harness."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from holdfast.cli.main import cli
from holdfast.config import default_db_path
from holdfast.evals.store import EvalStore
from holdfast.harness import Harness
from holdfast.rlm.store import RLMTraceStore

LOCOMO = (
    Path(__file__).resolve().parents[3] / "shared" / "benchmarks" / "locomo" / "locomo_dev.json"
)
if not LOCOMO.exists():
    LOCOMO = Path("/work/shared/benchmarks/locomo/locomo_dev.json")


def run(*args: str) -> Any:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def eval_json(*args: str) -> list[dict[str, Any]]:
    out = run("eval", "run", *args, "--json").output
    return list(json.loads(out[out.index("[") :]))


@pytest.mark.parametrize(
    ("suite", "size"),
    [("niah-single", "150000"), ("niah-multi", "150000"), ("oolong", "300"), ("multihop", "20")],
)
def test_rlm_suites_with_baseline(suite: str, size: str, tmp_path: Path) -> None:
    runs = eval_json(
        suite,
        "--n",
        "2",
        "--size",
        size,
        "--baseline",
        "--isolation",
        "process",
        "--out",
        str(tmp_path / "reports"),
    )
    assert [r["mode"] for r in runs] == ["rlm", "plain"]
    rlm, plain = runs
    assert rlm["scripted"] and plain["scripted"]
    assert rlm["summary"]["tasks"] == 2 and rlm["summary"]["mean_score"] == 1.0
    assert plain["summary"]["scored"] == 2
    store = EvalStore(default_db_path())
    traces = RLMTraceStore(default_db_path())
    h = Harness.open(default_db_path())
    for r in store.results(rlm["run_id"]):
        assert r.status == "ok" and r.score == 1.0
        assert r.iterations >= 2 and r.input_tokens > 0
        run_row = traces.get_run(r.trace_id or "")
        assert run_row is not None and run_row.mode == "rlm"
        assert h.get(r.harness_task or "").status == "succeeded"
        assert h.verify(r.harness_task or "").ok
        calls = store.calls(rlm["run_id"], r.task_id)
        assert calls and calls[0]["role"] == "root"
    h.close()
    store.close()
    traces.backend.close()
    report = json.loads((tmp_path / "reports" / f"{rlm['run_id']}.json").read_text())
    assert report["scripted"] is True and "(scripted)" in report["label"]
    with (tmp_path / "reports" / f"{plain['run_id']}.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2 and {r["mode"] for r in rows} == {"plain"}
    assert {r["scripted"] for r in rows} == {"True"}


def test_baseline_that_does_not_fit_is_reported_honestly() -> None:
    runs = eval_json(
        "niah-single", "--n", "1", "--size", "200000", "--mode", "plain", "--context-window", "8000"
    )
    plain = runs[0]
    assert plain["summary"]["scored"] == 0
    assert plain["summary"]["statuses"] == {"does_not_fit": 1}
    text = run("eval", "report", plain["run_id"]).output
    assert "does not fit" in text
    data = json.loads(run("eval", "report", plain["run_id"], "--json").output)
    total = data["totals"][plain["run_id"]]
    assert total["mean_score"] is None and total["does_not_fit"] == 1


def test_report_side_by_side_and_csv(tmp_path: Path) -> None:
    runs = eval_json("multihop", "--n", "2", "--size", "20", "--baseline", "--isolation", "process")
    ids = [r["run_id"] for r in runs]
    data = json.loads(
        run("eval", "report", *ids, "--json", "--csv", str(tmp_path / "all.csv")).output
    )
    assert [r["run_id"] for r in data["runs"]] == ids
    assert len(data["rows"]) == 2 and all(set(row["runs"]) == set(ids) for row in data["rows"])
    with (tmp_path / "all.csv").open() as fh:
        assert len(list(csv.DictReader(fh))) == 4
    listing = json.loads(run("eval", "list", "--json").output)
    assert {r["run_id"] for r in listing} >= set(ids)


@pytest.mark.sandbox
def test_rlm_suite_in_the_namespace_box() -> None:
    runs = eval_json("niah-single", "--n", "1", "--size", "100000")
    assert runs[0]["summary"]["mean_score"] == 1.0


@pytest.mark.parametrize(
    ("suite", "size"), [("agent-constraint", "6"), ("agent-knowledge", None), ("agent-gated", None)]
)
def test_agent_suites(suite: str, size: str | None) -> None:
    args = [suite, "--n", "1"] + (["--size", size] if size else [])
    runs = eval_json(*args)
    run_row = runs[0]
    assert run_row["mode"] == "agent" and run_row["scripted"]
    assert run_row["summary"]["mean_score"] == 1.0, run_row
    store = EvalStore(default_db_path())
    (result,) = store.results(run_row["run_id"])
    h = Harness.open(default_db_path())
    assert h.verify(result.harness_task or "").ok
    h.close()
    store.close()
    if suite == "agent-constraint":
        assert result.details["rollovers"] >= 3  # the constraint survived real roll-overs
    if suite == "agent-gated":
        assert [a["decision"] for a in result.details["approvals"]] == ["approve", "deny"]


@pytest.mark.skipif(
    not LOCOMO.exists(), reason="the LoCoMo development split is not on this machine"
)
def test_locomo_runner() -> None:
    runs = eval_json("locomo", "--n", "6", "--data", str(LOCOMO))
    summary = runs[0]["summary"]
    assert summary["tasks"] == 6 and summary["recall_at_10"] is not None
    assert 0.0 <= summary["mean_score"] <= 1.0


def test_bad_input_is_a_clear_error() -> None:
    from holdfast.cli.main import main

    for args in (
        ["eval", "run", "nope"],
        ["eval", "run", "oolong", "--n", "0"],
        ["eval", "report", "eval-missing"],
    ):
        with pytest.raises(SystemExit) as exc:
            main(args)
        assert exc.value.code == 2


def test_locomo_file_schema_errors_are_clear(tmp_path: Path) -> None:
    from holdfast.errors import InvalidInput
    from holdfast.evals.locomo import load_locomo

    cases = {
        "not-json.json": "{",
        "not-list.json": "{}",
        "no-qa.json": '[{"conversation": {}}]',
        "bad-question.json": '[{"conversation": {}, "qa": [{"answer": "x"}]}]',
        "bad-session.json": '[{"conversation": {"session_1": "text"}, "qa": []}]',
    }
    for name, text in cases.items():
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(InvalidInput):
            load_locomo(path)
    good = tmp_path / "good.json"
    good.write_text(
        json.dumps(
            [
                {
                    "sample_id": "c1",
                    "conversation": {
                        "session_1_date_time": "1:56 pm on 8 May, 2023",
                        "session_1": [
                            {
                                "speaker": "Ann",
                                "dia_id": "D1:1",
                                "text": "I adopted a cat named Miso.",
                            }
                        ],
                    },
                    "qa": [
                        {
                            "question": "What is the name of Ann's cat?",
                            "answer": "Miso",
                            "evidence": ["D1:1"],
                            "category": 4,
                        }
                    ],
                }
            ]
        )
    )
    runs = eval_json("locomo", "--n", "1", "--data", str(good))
    summary = runs[0]["summary"]
    assert summary["recall_at_10"] == 1.0 and summary["tasks"] == 1


def test_an_interrupted_run_keeps_what_it_scored_and_says_so() -> None:
    from holdfast.evals import EvalConfig, run_eval

    seen: list[str] = []

    def progress(task_id: str, done: int, total: int, result: Any) -> None:
        if result is not None:
            seen.append(task_id)
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_eval(EvalConfig(suite="multihop", n=3, size=20, isolation="process"), progress=progress)
    store = EvalStore(default_db_path())
    try:
        (run,) = store.runs()
        assert run.status == "interrupted"
        assert [r.task_id for r in store.results(run.run_id)] == seen
        assert run.summary is not None and run.summary["tasks"] == 1
    finally:
        store.close()


def test_suites_listing() -> None:
    data = json.loads(run("eval", "suites", "--json").output)
    names = {s["name"] for s in data}
    assert names == {
        "niah-single",
        "niah-multi",
        "oolong",
        "multihop",
        "agent-constraint",
        "agent-knowledge",
        "agent-gated",
        "locomo",
    }
    assert all(s["measures"] for s in data)
    assert "measures" not in run("eval", "suites").output  # prose, not a dump
