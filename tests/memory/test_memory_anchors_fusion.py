"""Time anchored to events, bare relative ranges, and the feature fusion."""

from __future__ import annotations

from holdfast.memory import MemoryStore
from holdfast.memory.anchors import resolve_anchor
from holdfast.memory.fusion import CandidateInfo, fuse


def _seed(store: MemoryStore) -> dict[str, str]:
    ids = {}
    for key, text, when in (
        ("kafka", "We decided to stream events through Kafka.", "2024-02-01T10:00:00Z"),
        ("reorg", "The reorg happened and platform moved under infra.", "2024-03-01T10:00:00Z"),
        ("pulsar", "We decided to stream events through Pulsar.", "2024-04-02T10:00:00Z"),
        ("joined", "Alice joined the platform team.", "2024-05-06T10:00:00Z"),
        ("rust", "We decided to stream events with a Rust service.", "2024-06-03T10:00:00Z"),
    ):
        ids[key] = store.add(text, mention_time=when).item.id
    return ids


def test_before_and_since_an_event_resolve_against_the_item_naming_it(store: MemoryStore) -> None:
    ids = _seed(store)
    anchor = resolve_anchor(store, "default", "how did we stream events before the reorg?")
    assert anchor is not None and anchor.item_id == ids["reorg"]
    before = [
        h.item.id for h in store.search("how did we decide to stream events before the reorg?")
    ]
    assert ids["kafka"] in before and ids["pulsar"] not in before and ids["rust"] not in before
    since = [h.item.id for h in store.search("how do we stream events since the reorg?")]
    assert ids["pulsar"] in since and ids["rust"] in since and ids["kafka"] not in since
    after = [h.item.id for h in store.search("how did we stream events after Alice joined?")]
    assert ids["rust"] in after and ids["pulsar"] not in after and ids["kafka"] not in after


def test_an_unknown_event_filters_nothing(store: MemoryStore) -> None:
    ids = _seed(store)
    assert resolve_anchor(store, "default", "events before the merger") is None
    found = {h.item.id for h in store.search("stream events before the merger")}
    assert {ids["kafka"], ids["pulsar"], ids["rust"]} <= found


def test_a_bare_last_week_ranks_that_week_first_without_filtering(store: MemoryStore) -> None:
    old = store.add("The deploy script failed on staging.", mention_time="2024-05-01T09:00:00Z")
    new = store.add("The deploy script failed on production.", mention_time="2024-05-14T09:00:00Z")
    hits = store.search("deploy script failed last week", as_of="2024-05-20T12:00:00Z")
    assert [h.item.id for h in hits] == [new.item.id, old.item.id]
    assert "time" in hits[0].ranks


def test_feature_fusion_keeps_a_clear_keyword_winner_first() -> None:
    info = {r: CandidateInfo(f"turn {r}", None, None, False) for r in range(1, 6)}
    keyword = [(1, 12.0), (2, 3.0), (3, 2.9)]
    dense = [(4, 0.61), (2, 0.60), (5, 0.59), (1, 0.40)]
    order = [rid for rid, _, _ in fuse("q", keyword, dense, [], [], info)]
    assert order[0] == 1, "BM25 far ahead of the rest wins over a narrow dense first place"
    # a candidate both arms like beats one only a single arm found
    assert order.index(2) < order.index(4) and order.index(2) < order.index(3)
    ranked = fuse("q", keyword, dense, [9], [], info)
    assert ranked[-1][0] == 9 and ranked[-1][2] == {"entity": 1}
