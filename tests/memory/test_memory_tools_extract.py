"""Agent tools, context packs and model-driven extraction (with the scripted fake model)."""

from __future__ import annotations

import json

import pytest

from holdfast.errors import InvalidInput
from holdfast.memory import MemoryStore, Trust
from holdfast.memory.context import build_pack, context_pack
from holdfast.memory.extract import extract
from holdfast.memory.tools import MemoryTools
from holdfast.testing import ScriptedLM


def test_schemas_are_openai_function_tools() -> None:
    schemas = MemoryTools.schemas()
    names = [s["function"]["name"] for s in schemas]
    assert names == [
        "memory_add",
        "memory_update",
        "memory_delete",
        "memory_search",
        "memory_get",
        "memory_believe",
        "memory_evidence",
        "memory_beliefs",
        "memory_resolve",
        "memory_evidence_of",
        "memory_model",
        "context_pack",
    ]
    for s in schemas:
        assert s["type"] == "function"
        params = s["function"]["parameters"]
        assert params["type"] == "object" and set(params["required"]) <= set(params["properties"])
        json.dumps(s)


def test_tool_round_trip(store: MemoryStore) -> None:
    tools = MemoryTools(store, namespace="agent")
    added = tools.dispatch(
        "memory_add", json.dumps({"text": "The build uses Bazel 7.", "entities": ["Bazel"]})
    )
    assert added["status"] == "added"
    found = tools.dispatch("memory_search", {"query": "which build tool", "limit": 3})
    assert found["results"][0]["id"] == added["id"] and found["results"][0]["citation"]
    got = tools.dispatch("memory_get", {"id": added["id"]})
    assert got["item"]["trust"] == "agent"
    upd = tools.dispatch("memory_update", {"id": added["id"], "text": "The build uses Bazel 8."})
    assert upd["status"] == "superseded"
    assert tools.dispatch("memory_search", {"query": "Bazel"})["results"][0]["id"] == upd["id"]
    web = tools.dispatch(
        "memory_add", {"text": "Bazel 9 ships next week.", "source_url": "https://example.org"}
    )
    assert store.get(web["id"]).trust is Trust.UNTRUSTED
    assert tools.dispatch("memory_delete", {"id": web["id"], "purge": True})["error"].startswith(
        "purge is not allowed"
    )
    assert tools.dispatch("memory_delete", {"id": web["id"]})["status"] == "deleted"
    pack = tools.dispatch("context_pack", {"query": "Bazel version", "budget": 200})
    assert pack["tokens"] <= 200 and upd["id"] in pack["text"]


def test_tool_errors_go_back_to_the_model(store: MemoryStore) -> None:
    tools = MemoryTools(store, namespace="agent")
    assert "unknown memory tool" in tools.dispatch("memory_fly", {})["error"]
    assert "not valid JSON" in tools.dispatch("memory_add", "{oops")["error"]
    assert "bad arguments" in tools.dispatch("memory_add", {"txt": "x"})["error"]
    assert tools.dispatch("memory_get", {"id": "m-missing"})["code"] == "invalid_input"
    other = store.add("private to user", namespace="user")
    assert "error" in tools.dispatch("memory_get", {"id": other.item.id})


def test_context_pack_fills_the_budget_and_says_why(store: MemoryStore) -> None:
    for n in range(12):
        store.add(
            f"Deployment note {n}: " + "the rollout of service alpha went fine " * (1 + n % 3),
            namespace="p",
        )
    store.add("Deployment note 0: " + "the rollout of service alpha went fine ", namespace="q")
    pack = context_pack(store, "rollout of service alpha", budget=120, namespace="p")
    assert 0 < pack.tokens <= 120
    assert pack.left_out and all("over budget" in x.reason for x in pack.left_out)
    assert len(pack.hits) + len(pack.left_out) == 12
    hits = store.search("rollout alpha", namespace="p", limit=3)
    doubled = build_pack([hits[0], hits[0], hits[1]], 10_000)
    assert [x.reason for x in doubled.left_out] == ["duplicate of a packed item"]
    with pytest.raises(InvalidInput):
        build_pack(hits, 0)


def test_extraction_applies_checked_operations(store: MemoryStore) -> None:
    old = store.add("Dana lives in Lisbon.", namespace="u")
    stale = store.add("Dana drinks coffee.", namespace="u")
    reply = json.dumps(
        {
            "operations": [
                {
                    "op": "ADD",
                    "text": "Dana adopted a greyhound named Pixel.",
                    "entities": ["Dana", "Pixel"],
                },
                {"op": "ADD", "text": "dana lives in lisbon"},
                {"op": "UPDATE", "id": old.item.id, "text": "Dana lives in Porto."},
                {"op": "DELETE", "id": stale.item.id},
                {"op": "DELETE", "id": "m-invented"},
                {"op": "EXPLODE"},
            ]
        }
    )
    lm = ScriptedLM(["```json\n" + reply + "\n```"])
    res = extract(
        store,
        lm,
        [
            {
                "role": "user",
                "content": "Dana: I moved to Porto and adopted Pixel, my greyhound. I quit coffee.",
            }
        ],
        namespace="u",
    )
    outcomes = [a.outcome for a in res.applied]
    assert outcomes[0] == "added" and outcomes[1].startswith("noop (duplicate")
    assert outcomes[2].startswith("superseded by") and outcomes[3] == "tombstoned"
    assert [r.outcome for r in res.rejected] == [
        "id was not among the memories shown",
        "unknown op 'EXPLODE'",
    ]
    assert "Dana lives in Lisbon." in res.prompt[1]["content"]
    assert lm.last_call.messages == res.prompt
    texts = [h.item.text for h in store.search("Dana", namespace="u")]
    assert (
        "Dana lives in Porto." in texts
        and "Dana lives in Lisbon." not in texts
        and "Dana drinks coffee." not in texts
    )


def test_extraction_with_a_bad_reply_changes_nothing(store: MemoryStore) -> None:
    store.add("Eli likes tea.", namespace="u")
    res = extract(
        store, ScriptedLM(["I think Eli likes tea."]), "Eli: still tea for me", namespace="u"
    )
    assert res.error and res.applied == []
    assert store.stats("u")["items"] == 1
