"""The in-process keyword mirror ranks exactly like FTS5's bm25() over the same rows, stays in
step with writes from other connections, and the cheap file-change check still notices edits
made by hand."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from holdfast.memory import MemoryConfig, MemoryStore, NoEmbedder, index_sqlite
from holdfast.memory.fusion import has_digit
from holdfast.memory.index_sqlite import SQLiteMemoryIndex
from holdfast.store.sqlite import SQLiteDB

VOCAB = [
    "run", "running", "runs", "ran", "billing", "bills", "service", "services", "Berlin",
    "berlin", "café", "cafe", "naïve", "Straße", "T-1042", "1042", "2024", "alpha", "beta",
    "gamma", "delta", "deploy", "deployed", "deploying", "review", "reviewed", "the", "a",
    "report", "reports", "Ada", "Lovelace", "x", "yo", "über",
]  # fmt: skip
NAMESPACES = ["one", "two"]


def _put(idx: SQLiteMemoryIndex, ns: str, iid: str, body: str, ents: str, ctx: str) -> int:
    with idx.transaction() as tx:
        rid, _ = idx.upsert_item(
            tx,
            data={
                "namespace": ns,
                "id": iid,
                "kind": "fact",
                "text": body,
                "trust": "owner",
                "status": "active",
            },
            norm_hash="",
            loose_hash="",
            content_hash="",
            path=f"{ns}/MEMORY.md",
            line=1,
            times=(0.0, None, None, None),
            body=body,
            entities_text=ents,
            links=[],
        )
        if ctx:
            idx.set_context(tx, rid, ctx)
    return rid


def _same(mirror: list[tuple[int, float]], sql: list[tuple[int, float]]) -> None:
    """Equal scores in order, and the same rows wherever the order is not a tie."""
    assert len(mirror) == len(sql)
    for (_, a), (_, b) in zip(mirror, sql, strict=True):
        assert a == pytest.approx(b, rel=1e-9, abs=1e-12)
    if not sql:
        return
    last = sql[-1][1]
    above_m = {r for r, s in mirror if s > last + 1e-9}
    above_s = {r for r, s in sql if s > last + 1e-9}
    assert above_m == above_s
    if len(mirror) < 10_000:
        # rows tied with the last one may be cut differently; every other row agrees
        score_of = dict(sql)
        for rid, s in mirror:
            if rid in score_of:
                assert s == pytest.approx(score_of[rid], rel=1e-9, abs=1e-12)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "kw.db"


@pytest.fixture
def index(db_path: Path) -> Iterator[SQLiteMemoryIndex]:
    idx = SQLiteMemoryIndex(SQLiteDB(db_path))
    yield idx
    idx.close()


words = st.lists(st.sampled_from(VOCAB), min_size=0, max_size=12).map(" ".join)
ops = st.lists(
    st.tuples(
        st.sampled_from(["put", "put", "put", "delete", "context"]),
        st.sampled_from(NAMESPACES),
        st.integers(0, 14),
        words,
        st.lists(st.sampled_from(VOCAB), max_size=3).map(" ".join),
    ),
    min_size=1,
    max_size=40,
)
queries = st.lists(
    st.tuples(
        st.lists(st.sampled_from([*VOCAB, "missing"]), min_size=1, max_size=5, unique=True),
        st.sampled_from(NAMESPACES),
        st.sampled_from([1, 3, 10, 50]),
        st.sampled_from([(1.0, 0.3, 0.5), (1.0, 0.0, 0.5), (0.7, 1.0, 0.0), (1.0, 1.0, 1.0)]),
    ),
    min_size=1,
    max_size=6,
)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=ops, qs=queries)
def test_mirror_ranks_like_fts5_bm25(tmp_path: Path, ops: list[Any], qs: list[Any]) -> None:
    """Random rows in two namespaces, changed and deleted between searches: every search
    through the mirror gives the rows and scores FTS5's bm25() gives."""
    from holdfast.memory.text import keyword_terms

    path = tmp_path / f"p{abs(hash((repr(ops), repr(qs))))}.db"
    idx = SQLiteMemoryIndex(SQLiteDB(path))
    try:
        rids: dict[tuple[str, int], int] = {}
        for n, (op, ns, key, text, extra) in enumerate(ops):
            if op == "put":
                rids[(ns, key)] = _put(idx, ns, f"i{key}", text, extra, "")
            elif op == "delete" and (ns, key) in rids:
                with idx.transaction() as tx:
                    idx.delete_items(tx, ns, [rids.pop((ns, key))])
            elif op == "context" and (ns, key) in rids:
                with idx.transaction() as tx:
                    idx.set_context(tx, rids[(ns, key)], text)
            if n % 7 == 0:  # search between writes, so the overlay is exercised too
                idx.keyword(ns, ["alpha", "run"], 10, (1.0, 0.3, 0.5))
        for raw, ns, limit, weights in qs:
            terms = keyword_terms(" ".join(raw)) or ["alpha"]
            _same(
                idx.keyword(ns, terms, limit, weights), idx.keyword_sql(ns, terms, limit, weights)
            )
    finally:
        idx.close()


def test_another_connections_writes_are_seen(db_path: Path, index: SQLiteMemoryIndex) -> None:
    """A second index on the same file (another process, in effect) sees adds, edits and
    deletes at its next search, and never returns a deleted row."""
    reader = SQLiteMemoryIndex(SQLiteDB(db_path))
    try:
        a = _put(index, "one", "a", "alpha deploy billing", "", "")
        b = _put(index, "one", "b", "alpha report", "", "")
        assert {r for r, _ in reader.keyword("one", ["alpha"], 10, (1.0, 0.3, 0.5))} == {a, b}
        with index.transaction() as tx:
            index.delete_items(tx, "one", [a])
        _put(index, "one", "b", "beta only now", "", "")
        c = _put(index, "one", "c", "alpha gamma", "", "")
        got = reader.keyword("one", ["alpha"], 10, (1.0, 0.3, 0.5))
        assert [r for r, _ in got] == [c]
        _same(got, reader.keyword_sql("one", ["alpha"], 10, (1.0, 0.3, 0.5)))
        assert reader._mirror is not None and reader._mirror.rebuilds == 1
    finally:
        reader.close()


def test_pruned_log_forces_a_rebuild(
    db_path: Path, index: SQLiteMemoryIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(index_sqlite, "KW_LOG_KEEP", 5)
    monkeypatch.setattr(index_sqlite, "KW_LOG_PRUNE_EVERY", 4)
    reader = SQLiteMemoryIndex(SQLiteDB(db_path))
    try:
        first = _put(index, "one", "a", "alpha", "", "")
        assert [r for r, _ in reader.keyword("one", ["alpha"], 10, (1.0, 0.3, 0.5))] == [first]
        for n in range(30):
            _put(index, "one", f"n{n}", "alpha beta" if n % 2 else "gamma", "", "")
        with index.transaction() as tx:
            index.delete_items(tx, "one", [first])
        assert reader._mirror is not None
        before = reader._mirror.rebuilds
        got = reader.keyword("one", ["alpha"], 50, (1.0, 0.3, 0.5))
        assert reader._mirror.rebuilds == before + 1
        assert first not in {r for r, _ in got}
        _same(got, reader.keyword_sql("one", ["alpha"], 50, (1.0, 0.3, 0.5)))
    finally:
        reader.close()


def test_words_fts5_reads_as_phrases_take_the_sql_path(index: SQLiteMemoryIndex) -> None:
    _put(index, "one", "a", "the billing service moved", "", "")
    _put(index, "one", "b", "service billing", "", "")
    got = index.keyword("one", ["billing service"], 10, (1.0, 0.3, 0.5))
    assert len(got) == 1
    assert got == index.keyword_sql("one", ["billing service"], 10, (1.0, 0.3, 0.5))


def test_a_closed_index_searches_again_from_any_thread(index: SQLiteMemoryIndex) -> None:
    """Closing the index (as a store does when a caller is done with it) leaves it usable, as
    its database connections are: the next search, from this or another thread, reopens the
    tokenizer and rebuilds the mirror instead of failing on a closed connection."""
    import threading

    a = _put(index, "one", "a", "alpha deploy billing", "", "")
    w = (1.0, 0.3, 0.5)
    assert [r for r, _ in index.keyword("one", ["alpha"], 10, w)] == [a]
    index.close()
    b = _put(index, "one", "b", "alpha again, after the close", "", "")
    got: list[list[tuple[int, float]]] = []
    errors: list[BaseException] = []

    def search() -> None:
        try:
            got.append(index.keyword("one", ["alphas", "after"], 10, w))
        except BaseException as exc:  # reported below
            errors.append(exc)

    worker = threading.Thread(target=search)
    worker.start()
    worker.join(30)
    assert not errors, errors
    assert {r for r, _ in got[0]} == {a, b}
    _same(got[0], index.keyword_sql("one", ["alphas", "after"], 10, w))
    index.close()
    assert {r for r, _ in index.keyword("one", ["deploy"], 10, w)} == {a}


def test_mirror_follows_context_and_entities_columns(index: SQLiteMemoryIndex) -> None:
    a = _put(index, "one", "a", "nothing here", "Lovelace", "")
    b = _put(index, "one", "b", "quiet turn", "", "Ada spoke of Lovelace")
    w = (1.0, 0.3, 0.5)
    got = index.keyword("one", ["lovelace"], 10, w)
    assert {r for r, _ in got} == {a, b}
    _same(got, index.keyword_sql("one", ["lovelace"], 10, w))
    assert index.keyword("two", ["lovelace"], 10, w) == []


@given(st.text(max_size=40))
def test_has_digit_is_str_isdigit(text: str) -> None:
    assert has_digit(text) == any(ch.isdigit() for ch in text)


def test_entity_items_single_name_matches_the_grouped_query(index: SQLiteMemoryIndex) -> None:
    rids = [_put(index, "one", f"e{n}", f"item {n}", "", "") for n in range(6)]
    with index.transaction() as tx:
        for n, rid in enumerate(rids):
            names = ["Lima"] + (["Peru"] if n % 2 else [])
            index.set_entities(tx, rid, "one", names)
    # only "Lima" exists: newest first, like the count-ordered query
    assert index.entity_items("one", ["Lima", "lima"], 4) == sorted(rids, reverse=True)[:4]
    # both exist: items naming both first
    both = index.entity_items("one", ["Lima", "Peru"], 10)
    assert both[:3] == sorted(rids[1::2], reverse=True)
    assert both[3:] == sorted(rids[0::2], reverse=True)
    assert index.entity_items("one", ["nobody"], 4) == []


def test_a_hand_edit_is_noticed_after_a_clean_check(holdfast_home: Path) -> None:
    """Two searches with nothing changed read the index's file states once; an edit made by
    hand to a Markdown file (same size, new text) is still found by the next search."""
    store = MemoryStore(MemoryConfig(), embedder=NoEmbedder(warn=False))
    try:
        store.add("The deploy window is Tuesday.", namespace="hand", kind="fact", trust="owner")
        assert store.search("deploy window", namespace="hand")
        calls = 0
        real = store.index.file_state

        def counting(namespace: str) -> dict[str, tuple[int, int, str]]:
            nonlocal calls
            calls += 1
            return real(namespace)

        store.index.file_state = counting  # type: ignore[method-assign]
        store.search("deploy window", namespace="hand")
        store.search("deploy window", namespace="hand")
        assert calls == 0
        path = store.root / "hand" / "MEMORY.md"
        text = path.read_text("utf-8")
        path.write_text(text.replace("Tuesday", "Fridays"), "utf-8")
        hits = store.search("Fridays", namespace="hand")
        assert calls == 1
        assert [h.item.text for h in hits] == ["The deploy window is Fridays."]
        assert [h.item.text for h in store.search("deploy window", namespace="hand")] == [
            "The deploy window is Fridays."
        ]
    finally:
        store.close()


def test_filtered_candidates_past_the_first_slice_are_still_found(store: MemoryStore) -> None:
    """Recall filters the fused list a slice at a time: when every candidate of the first
    slices is filtered out (here: below the trust floor), later ones still fill the hits."""
    entries: list[tuple[str, dict[str, Any]]] = [
        (f"alpha note {n}", {"namespace": "slices", "trust": "untrusted"}) for n in range(150)
    ]
    entries += [
        (f"alpha in a much longer owner statement about release {n}", {"namespace": "slices"})
        for n in range(4)
    ]
    store.add_many(entries, dedup=False)
    hits = store.search("alpha", namespace="slices", limit=3, min_trust="agent")
    assert len(hits) == 3
    assert all("owner statement" in h.item.text for h in hits)
    ranks = [h.ranks["keyword"] for h in hits]
    assert min(ranks) > 64  # found beyond the first slice


def test_dense_search_ranks_like_a_float64_product(index: SQLiteMemoryIndex) -> None:
    """The dense arm's single-threaded product gives the ranking of an exact float64 one."""
    import numpy as np

    from holdfast.memory.vectors import VectorCache

    rng = np.random.default_rng(3)
    vecs = rng.standard_normal((300, 16)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    rids = [_put(index, "one", f"v{n}", f"row {n}", "", "") for n in range(300)]
    with index.transaction() as tx:
        index.add_chunks(
            tx, "one", "e", [(r, 0, v.tobytes()) for r, v in zip(rids, vecs, strict=True)]
        )
    query = rng.standard_normal(16).astype(np.float32)
    got = VectorCache(index, 16).search("one", "e", query, 20)
    exact = vecs.astype(np.float64) @ query.astype(np.float64)
    assert [r for r, _ in got] == [rids[i] for i in np.argsort(-exact)[:20]]
    assert [s for _, s in got] == pytest.approx(sorted(exact, reverse=True)[:20], abs=1e-5)
