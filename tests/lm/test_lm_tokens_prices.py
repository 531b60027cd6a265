from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from holdfast.errors import ConfigError
from holdfast.lm import (
    DEFAULT_PRICES,
    CallRecord,
    Completion,
    Price,
    ToolCall,
    Usage,
    completion_from_dict,
    completion_to_dict,
    estimate_tokens,
)

words = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=200)


def test_estimate_tokens_examples() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens(None) == 0
    assert estimate_tokens([]) == 0
    assert estimate_tokens("hello") == 2
    assert estimate_tokens("The quick brown fox jumps over the lazy dog.") == 13
    assert estimate_tokens("你好世界") == 4
    one = estimate_tokens([{"role": "user", "content": "hi"}])
    assert one == estimate_tokens("hi") + 4 + 3


@given(words, words)
def test_estimate_is_additive_over_whitespace(a: str, b: str) -> None:
    assert estimate_tokens(a + " " + b) == estimate_tokens(a) + estimate_tokens(b)


@given(words)
def test_estimate_bounded_by_characters(text: str) -> None:
    n = estimate_tokens(text)
    assert 0 <= n <= len(text)
    if text.strip():
        assert n >= 1


@given(st.lists(st.tuples(st.sampled_from(["user", "assistant", "system"]), words), max_size=8))
def test_message_estimate_grows_with_messages(pairs: list[tuple[str, str]]) -> None:
    msgs = [{"role": r, "content": c} for r, c in pairs]
    total = estimate_tokens(msgs)
    assert total >= sum(estimate_tokens(c) for _, c in pairs)
    if msgs:
        assert estimate_tokens([*msgs, {"role": "user", "content": "x"}]) > total


def test_price_lookup_and_cost() -> None:
    assert DEFAULT_PRICES.lookup("openai", "gpt-4o-mini") == Price(0.15, 0.60, 0.075)
    assert DEFAULT_PRICES.lookup("openai", "gpt-4o-mini-2024-07-18") == Price(0.15, 0.60, 0.075)
    assert DEFAULT_PRICES.lookup("openai", "gpt-4o-2024-08-06") == Price(2.50, 10.0, 1.25)
    assert DEFAULT_PRICES.lookup("openrouter", "openai/gpt-4o") == Price(2.50, 10.0, 1.25)
    assert DEFAULT_PRICES.lookup("ollama", "qwen3:8b") == Price(0.0, 0.0, 0.0)
    assert DEFAULT_PRICES.lookup("openai", "no-such-model") is None
    price = Price(input=2.0, output=8.0, cached_input=0.5)
    assert price.cost(1_000_000, 0) == pytest.approx(2.0)
    assert price.cost(1_000_000, 1_000_000, cached_tokens=400_000) == pytest.approx(
        0.6 * 2.0 + 0.4 * 0.5 + 8.0
    )


def test_price_table_extend() -> None:
    table = DEFAULT_PRICES.extend({"my-model": (1.0, 2.0), "gpt-4o": Price(9.0, 9.0)})
    assert table.lookup("vllm", "my-model") == Price(0.0, 0.0, 0.0)
    assert table.lookup("together", "my-model") == Price(1.0, 2.0)
    assert table.lookup("openai", "gpt-4o") == Price(9.0, 9.0)
    assert DEFAULT_PRICES.lookup("openai", "gpt-4o") == Price(2.50, 10.0, 1.25)
    with pytest.raises(ConfigError, match="USD per million"):
        DEFAULT_PRICES.extend({"bad": "cheap"})  # type: ignore[dict-item]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=10,
)


@given(
    text=words,
    calls=st.lists(st.tuples(st.text(max_size=8), st.text(max_size=8), words), max_size=3),
    tokens=st.tuples(*(st.integers(0, 10**7),) * 3),
    messages=st.lists(
        st.dictionaries(st.sampled_from(["role", "content", "name"]), json_values), max_size=4
    ),
    metadata=st.dictionaries(st.text(max_size=8), json_values, max_size=3),
)
def test_call_record_json_round_trip(
    text: str,
    calls: list[tuple[str, str, str]],
    tokens: tuple[int, int, int],
    messages: list[dict[str, object]],
    metadata: dict[str, object],
) -> None:
    completion = Completion(
        text=text,
        tool_calls=tuple(ToolCall(i, n, a) for i, n, a in calls),
        finish_reason="stop",
        usage=Usage(tokens[0], tokens[1], tokens[2], latency_s=0.25, cost_usd=0.5, priced=False),
        model="openai:gpt-x",
        call_id="call-1",
    )
    assert (
        completion_from_dict(json.loads(json.dumps(completion_to_dict(completion)))) == completion
    )
    record = CallRecord(
        call_id="call-1",
        model="openai:gpt-x",
        messages=messages,
        params={"stop": ["x"]},
        completion=completion,
        metadata=metadata,
    )
    assert CallRecord.from_dict(json.loads(json.dumps(record.to_dict()))) == record


def test_prices_match_exact_names_and_dated_snapshots_only() -> None:
    from holdfast.lm.prices import DEFAULT_PRICES, Price

    # o3-pro and gpt-5-pro are their own models (list prices several times o3's and gpt-5's)
    assert DEFAULT_PRICES.lookup("openai", "o3-pro") == Price(20.0, 80.0)
    assert DEFAULT_PRICES.lookup("openai", "gpt-5-pro") == Price(15.0, 120.0)
    for unknown in ("o3-deep-research", "gpt-5-codex-max", "gpt-4o-realtime-preview", "o3x"):
        assert DEFAULT_PRICES.lookup("openai", unknown) is None, unknown
    bare = DEFAULT_PRICES.extend({})
    without_pro = type(bare)({k: v for k, v in bare.prices.items() if not k.endswith("-pro")})
    assert without_pro.lookup("openai", "o3-pro") is None  # never priced as o3
    assert without_pro.lookup("openai", "gpt-5-pro") is None
    assert DEFAULT_PRICES.lookup("anthropic", "claude-sonnet-4-5-20250929") == Price(3.0, 15.0, 0.3)
    assert DEFAULT_PRICES.lookup("openai", "gpt-4o-2024-08-06") == Price(2.50, 10.0, 1.25)
    assert DEFAULT_PRICES.lookup("openai", "gpt-4o-latest") == Price(2.50, 10.0, 1.25)
    assert DEFAULT_PRICES.lookup("openrouter", "openai/gpt-5-pro") == Price(15.0, 120.0)


def test_an_unpriced_model_costs_nothing_and_says_so() -> None:
    from holdfast.lm import get_lm
    from holdfast.testing import FakeOpenAIServer

    with (
        FakeOpenAIServer() as server,
        get_lm("openai:o3-preview-x", base_url=server.base_url) as lm,
    ):
        usage = lm.complete([{"role": "user", "content": "hi"}]).usage
    assert usage.priced is False and usage.cost_usd == 0.0 and usage.input_tokens > 0


def test_prices_load_from_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from holdfast.lm import get_lm
    from holdfast.lm.prices import DEFAULT_PRICES, Price, PriceTable

    path = tmp_path / "prices.json"
    path.write_text(
        '{"house-model": [1.0, 2.0], "together:llama-x": {"input": 0.2, "output": 0.6, '
        '"cached_input": 0.05}, "gpt-4o": [9, 9]}'
    )
    table = PriceTable.from_file(path)
    assert table.lookup("together", "house-model") == Price(1.0, 2.0)
    assert table.lookup("together", "llama-x") == Price(0.2, 0.6, 0.05)
    assert table.lookup("openai", "gpt-4o") == Price(9.0, 9.0)
    assert table.lookup("openai", "gpt-4o-mini") == DEFAULT_PRICES.lookup("openai", "gpt-4o-mini")
    alone = PriceTable.from_file(path, base=False)
    assert alone.lookup("openai", "gpt-4o-mini") is None
    monkeypatch.setenv("HOLDFAST_PRICES", str(path))
    lm = get_lm("together:house-model", api_key="k", base_url="http://127.0.0.1:9/v1")
    assert lm.price == Price(1.0, 2.0)
    for bad in ('{"m": [1]}', '{"m": {"input": 1}}', '{"m": [-1, 2]}', "[1, 2]", "nope"):
        path.write_text(bad)
        with pytest.raises(ConfigError, match="price"):
            PriceTable.from_file(path)
    with pytest.raises(ConfigError, match="cannot read"):
        PriceTable.from_file(tmp_path / "missing.json")
