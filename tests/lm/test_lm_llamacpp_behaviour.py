"""llama.cpp's behaviours, reproduced by FakeOpenAIServer as its server answers them (the same
cases run against the real llama-server in tests/integration/): tools refused without --jinja,
tools silently dropped by a template without tool support, prompts over n_ctx, embeddings inputs
over the physical batch."""

from __future__ import annotations

from pathlib import Path

import pytest

from holdfast.errors import RuntimeFailure
from holdfast.lm import ContextOverflow, ToolsUnsupported, get_lm
from holdfast.lm.capabilities import is_tools_unsupported, no_tool_calls_hint, probe_tool_support
from holdfast.memory import MemoryConfig, MemoryStore, OpenAIEmbedder, make_embedder
from holdfast.testing import FakeOpenAIServer

USER = [{"role": "user", "content": "What is the weather in Paris?"}]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]


@pytest.mark.parametrize("direct", [False, True])
def test_tools_refused_without_jinja_is_typed_and_not_retried(direct: bool) -> None:
    with FakeOpenAIServer(tools="refused") as server:
        with get_lm("llamacpp:smol", base_url=server.base_url, direct_http=direct) as lm:
            with pytest.raises(ToolsUnsupported, match="--jinja") as info:
                lm.complete(USER, tools=TOOLS)
            assert lm.complete(USER).text.startswith("echo:")  # without tools it answers
        assert info.value.details["attempts"] == 1
        chats = [r for r in server.request_log if r.path.endswith("/chat/completions")]
        assert len(chats) == 2  # the HTTP 500 was not retried


def test_other_servers_wordings_of_no_tool_support() -> None:
    for body in (
        '{"error":{"code":500,"message":"tools param requires --jinja flag"}}',
        '{"error":"registry.ollama.ai/library/gemma:2b does not support tools"}',
        '{"message":"\\"auto\\" tool choice requires --enable-auto-tool-choice and '
        '--tool-call-parser to be set"}',
    ):
        assert is_tools_unsupported(400, body) and is_tools_unsupported(500, body)
    assert not is_tools_unsupported(500, '{"error":"out of memory"}')
    assert not is_tools_unsupported(200, "does not support tools")


def test_a_template_that_drops_tools_is_detected_by_probe() -> None:
    with (
        FakeOpenAIServer(tools="ignored") as server,
        get_lm("llamacpp:smol", base_url=server.base_url) as lm,
    ):
        reply = lm.complete(USER, tools=TOOLS)
        assert not reply.tool_calls  # silently: the tools never reached the model
        assert probe_tool_support(server.base_url) is False
        assert "does not support tools" in no_tool_calls_hint(lm)
    with FakeOpenAIServer() as server:
        assert probe_tool_support(server.base_url) is True
        assert probe_tool_support(server.base_url.replace("/v1", "")) is True
    assert probe_tool_support("https://api.openai.com/v1") is None  # never probed
    assert probe_tool_support(None) is None


def test_probe_of_a_server_without_props_is_unknown() -> None:
    import http.server
    import threading

    class NoProps(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.HTTPServer(("127.0.0.1", 0), NoProps)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
        assert probe_tool_support(url) is None
        assert "may have no tool support" in no_tool_calls_hint(type("L", (), {"base_url": url}))
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.mark.parametrize("direct", [False, True])
def test_a_prompt_over_n_ctx_is_a_context_overflow(direct: bool) -> None:
    with (
        FakeOpenAIServer(n_ctx=200) as server,
        get_lm("llamacpp:smol", base_url=server.base_url, direct_http=direct) as lm,
    ):
        assert lm.complete(USER).text
        with pytest.raises(ContextOverflow) as info:
            lm.complete([{"role": "user", "content": "word " * 400}])
    assert info.value.context_window == 200
    assert info.value.prompt_tokens is not None and info.value.prompt_tokens >= 200


def _long_item() -> str:
    return " ".join(
        f"Item {i}: the deploy of service {i} finished in {i % 7} minutes." for i in range(60)
    )


def test_embedder_chunks_fit_llamacpp_default_batch(tmp_path: Path) -> None:
    text = _long_item()
    assert len(text.split()) > 500
    with FakeOpenAIServer(embedding_batch=512) as server:
        embedder = make_embedder(f"openai:smol-embed@{server.base_url}")
        assert isinstance(embedder, OpenAIEmbedder) and embedder.max_words <= 200
        store = MemoryStore(MemoryConfig(root=tmp_path / "m"), embedder=embedder)
        try:
            result = store.add(text, namespace="ops")
            assert result.status == "added"
            hits = store.search("deploy of service 59", namespace="ops")
            assert hits and hits[0].item.id == result.item.id
        finally:
            store.close()
        wide = OpenAIEmbedder("smol-embed", base_url=server.base_url, max_words=400)
        with pytest.raises(RuntimeFailure, match="HOLDFAST_EMBEDDER_MAX_WORDS"):
            wide.embed([" ".join(text.split()[:400])])


def test_embedder_chunk_size_is_settable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOLDFAST_EMBEDDER_MAX_WORDS", "64")
    embedder = make_embedder("openai:e@http://127.0.0.1:9/v1")
    assert isinstance(embedder, OpenAIEmbedder) and embedder.max_words == 64
    explicit = make_embedder("openai:e@http://127.0.0.1:9/v1", max_words=32)
    assert isinstance(explicit, OpenAIEmbedder) and explicit.max_words == 32
    monkeypatch.setenv("HOLDFAST_EMBEDDER_MAX_WORDS", "lots")
    with pytest.raises(Exception, match="HOLDFAST_EMBEDDER_MAX_WORDS"):
        make_embedder("openai:e@http://127.0.0.1:9/v1")


@pytest.mark.parametrize("direct", [False, True])
def test_unparsable_model_output_is_malformed_and_not_retried(direct: bool) -> None:
    from holdfast.lm import MalformedResponse
    from holdfast.testing import Fault

    body = (
        '{"error":{"code":500,"message":"The model produced output that does not match the '
        'expected peg-native format","type":"server_error"}}'
    )
    with FakeOpenAIServer() as server:
        server.inject(Fault.status(500, body=body))
        lm = get_lm("llamacpp:smol", base_url=server.base_url, direct_http=direct)
        with lm, pytest.raises(MalformedResponse, match="could not parse the model's output"):
            lm.complete(USER, tools=TOOLS)
        assert len(server.requests) == 1


def test_embedder_timeout_suits_a_slow_local_server(monkeypatch: pytest.MonkeyPatch) -> None:
    embedder = make_embedder("openai:e@http://127.0.0.1:9/v1")
    assert isinstance(embedder, OpenAIEmbedder) and embedder.timeout >= 120
    monkeypatch.setenv("HOLDFAST_EMBEDDER_TIMEOUT", "300")
    slow = make_embedder("openai:e@http://127.0.0.1:9/v1")
    assert isinstance(slow, OpenAIEmbedder) and slow.timeout == 300
    monkeypatch.setenv("HOLDFAST_EMBEDDER_TIMEOUT", "-1")
    with pytest.raises(Exception, match="HOLDFAST_EMBEDDER_TIMEOUT"):
        make_embedder("openai:e@http://127.0.0.1:9/v1")
