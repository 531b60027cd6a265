"""The benchmark scripts run end to end (slow: excluded from make test)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _load(name: str):  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_locomo_keyword_recall_beats_plain_bm25(capsys: pytest.CaptureFixture[str]) -> None:
    bench = _load("memory_locomo")
    if not bench.DEFAULT_DATA.exists():
        pytest.skip("LoCoMo dev split not available")
    assert (
        bench.main(["--embedder", "none", "--modes", "keyword", "--peers", "none", "--json"]) == 0
    )
    report = json.loads(capsys.readouterr().out)
    overall = report["modes"]["keyword"]["overall"]
    assert overall["n"] == 997
    assert overall["r@10"] > 70.0


@pytest.mark.slow
def test_scale_benchmark_small_run(capsys: pytest.CaptureFixture[str]) -> None:
    bench = _load("memory_scale")
    assert (
        bench.main(
            [
                "--items",
                "3000",
                "--embedder",
                "none",
                "--queries",
                "20",
                "--single-writes",
                "20",
                "--json",
            ]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert report["reindex_items"] == 3020 and report["recall_keyword_ms"]["p95"] > 0


def test_contradiction_benchmark_reports_both_sets(capsys: pytest.CaptureFixture[str]) -> None:
    bench = _load("memory_contradictions")
    assert bench.main(["--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    sizes = {r["set"]: r["pairs"] for r in report["sets"]}
    assert sizes == {"contradictions.jsonl": 120, "contradictions_heldout.jsonl": 40}
    for r in report["sets"]:
        assert r["tp"] + r["fp"] + r["fn"] + r["tn"] == r["pairs"]


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_locomo_fusion_beats_keyword_on_every_figure(capsys: pytest.CaptureFixture[str]) -> None:
    """The dev-split targets: hybrid turn R@10 at least 82 with R@1 and MRR at least
    keyword-only's (the real local embedding model; several minutes)."""
    bench = _load("memory_locomo")
    if not bench.DEFAULT_DATA.exists():
        pytest.skip("LoCoMo dev split not available")
    assert bench.main(["--modes", "keyword,hybrid", "--peers", "none", "--json"]) == 0
    modes = json.loads(capsys.readouterr().out)["modes"]
    hybrid, keyword = modes["hybrid"]["overall"], modes["keyword"]["overall"]
    assert hybrid["r@10"] >= 82.0
    assert hybrid["r@1"] >= keyword["r@1"] and hybrid["mrr"] >= keyword["mrr"]
