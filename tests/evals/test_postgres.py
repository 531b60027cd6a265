"""Eval runs on a PostgreSQL control plane: tasks, traces, results and exports in one database."""

from __future__ import annotations

import pytest

from holdfast.evals import EvalConfig, EvalStore, run_eval
from holdfast.evals.export import export_run
from holdfast.harness import Harness
from holdfast.rlm.store import RLMTraceStore
from holdfast.testing.postgres import PostgresCluster

pytestmark = pytest.mark.postgres


def test_eval_runs_on_postgres(pg_cluster: PostgresCluster) -> None:
    url = pg_cluster.create_database("evals")
    (rlm_run,) = run_eval(
        EvalConfig(suite="niah-multi", n=1, size=60_000, isolation="process"), db_path=url
    )
    (agent_run,) = run_eval(EvalConfig(suite="agent-knowledge", n=1), db_path=url)
    store = EvalStore(url)
    traces = RLMTraceStore(url)
    h = Harness.open(url)
    try:
        (r,) = store.results(rlm_run)
        assert r.score == 1.0 and traces.get_run(r.trace_id or "") is not None
        assert h.get(r.harness_task or "").status == "succeeded"
        (a,) = store.results(agent_run)
        assert a.score == 1.0 and h.verify(a.harness_task or "").ok
        ops = list(export_run(store, agent_run, "memory-ops", db_path=url))
        assert [o["op"] for o in ops if o["tool"] != "memory.flush"] == ["add", "search"]
        assert next(iter(export_run(store, rlm_run, "trl", db_path=url)))["reward"] == 1.0
    finally:
        h.close()
        traces.backend.close()
        store.close()
