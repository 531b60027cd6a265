"""Context-window overflow: each server family's wording becomes a typed ContextOverflow."""

from __future__ import annotations

import json

import pytest

from holdfast.lm import ContextOverflow, ProviderRejected, RetryPolicy, get_lm
from holdfast.lm.errors import is_context_overflow, overflow_figures
from holdfast.testing import FakeOpenAIServer, Fault

USER = [{"role": "user", "content": "hi"}]

# Bodies as the servers send them (llama.cpp's verbatim from the integration suite).
LLAMACPP = json.dumps(
    {
        "error": {
            "code": 400,
            "message": "request (12031 tokens) exceeds the available context size (8192 tokens), "
            "try increasing it",
            "type": "exceed_context_size_error",
            "n_prompt_tokens": 12031,
            "n_ctx": 8192,
        }
    }
)
WORDINGS = [
    (LLAMACPP, (12031, 8192)),
    (
        "This model's maximum context length is 2048 tokens. However, you requested 2100 tokens "
        "(2000 in the messages, 100 in the completion). Please reduce the length.",
        (2100, 2048),
    ),
    (
        '{"error": {"message": "This model\'s maximum context length is 128000 tokens. However, '
        'your messages resulted in 130012 tokens.", "code": "context_length_exceeded"}}',
        (130012, 128000),
    ),
    (
        '{"type":"error","error":{"message":"prompt is too long: 210000 tokens > 200000 maximum"}}',
        (210000, 200000),
    ),
    ('{"error":"input length exceeds the context length"}', (None, None)),
    ("Input validation error: `inputs` tokens + `max_new_tokens` must be <= 4096", (None, None)),
    (
        "Trying to keep the first 5000 tokens when context the overflows. However, the model is "
        "loaded with context length of only 4096 tokens, which is not enough.",
        (None, None),
    ),
    ("the prompt overflows the context", (None, None)),
]
NOT_OVERFLOW = [
    '{"error": {"message": "max_tokens must be at least 1"}}',
    '{"error": {"message": "model \'x\' not found"}}',
    '{"error": {"message": "Invalid value for temperature"}}',
]


@pytest.mark.parametrize(("body", "figures"), WORDINGS)
def test_every_known_wording_is_recognised(body: str, figures: tuple[int, int]) -> None:
    assert is_context_overflow(400, body)
    assert overflow_figures(body) == figures


@pytest.mark.parametrize("body", NOT_OVERFLOW)
def test_other_rejections_are_not_overflow(body: str) -> None:
    assert not is_context_overflow(400, body)


def test_a_5xx_is_never_an_overflow() -> None:
    assert not is_context_overflow(500, LLAMACPP)


@pytest.mark.parametrize("direct", [False, True])
def test_llamacpp_overflow_over_http_is_typed_with_figures(direct: bool) -> None:
    with FakeOpenAIServer() as server:
        server.inject(Fault.status(400, body=LLAMACPP))
        with (
            get_lm(
                "llamacpp:m", base_url=server.base_url, direct_http=direct, retry=RetryPolicy()
            ) as lm,
            pytest.raises(ContextOverflow) as info,
        ):
            lm.complete(USER)
    err = info.value
    assert isinstance(err, ProviderRejected) and err.code == "context_overflow"
    assert (err.prompt_tokens, err.context_window) == (12031, 8192)
    assert "exceeds the available context size" in err.message
    assert len(server.requests) == 1, "an overflow is never retried"
    assert err.to_dict()["details"]["context_window"] == 8192
