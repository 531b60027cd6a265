"""The provider registry: where each provider lives, which key it needs, and its quirks.

Models are named ``provider:model`` (``openai:gpt-4o-mini``, ``ollama:qwen3:8b``). A
:class:`ProviderSpec` keeps the three provider concerns apart: the wire format (``openai`` or
``anthropic``), the endpoint and credentials (default base URL, the environment variables the
CLI reads), and per-model quirks (the name of the max-tokens parameter, a sensible concurrency).
"""

from __future__ import annotations

from dataclasses import dataclass

from holdfast.errors import ConfigError
from holdfast.lm.errors import UnknownProvider


@dataclass(frozen=True)
class ProviderSpec:
    """How to reach one provider."""

    name: str
    base_url: str
    key_env: str | None
    base_url_env: str | None = None
    needs_key: bool = True
    wire: str = "openai"
    max_concurrency: int = 64
    max_tokens_param: str = "max_tokens"
    local: bool = False


def _local(name: str, port: int, prefix: str) -> ProviderSpec:
    return ProviderSpec(
        name=name,
        base_url=f"http://127.0.0.1:{port}/v1",
        key_env=f"{prefix}_API_KEY",
        base_url_env=f"{prefix}_BASE_URL",
        needs_key=False,
        max_concurrency=256,
        local=True,
    )


PROVIDERS: dict[str, ProviderSpec] = {
    spec.name: spec
    for spec in (
        ProviderSpec(
            "openai",
            "https://api.openai.com/v1",
            "OPENAI_API_KEY",
            "OPENAI_BASE_URL",
            max_tokens_param="max_completion_tokens",
        ),
        ProviderSpec(
            "anthropic",
            "https://api.anthropic.com",
            "ANTHROPIC_API_KEY",
            "ANTHROPIC_BASE_URL",
            wire="anthropic",
        ),
        ProviderSpec(
            "openrouter",
            "https://openrouter.ai/api/v1",
            "OPENROUTER_API_KEY",
            "OPENROUTER_BASE_URL",
        ),
        ProviderSpec(
            "together", "https://api.together.xyz/v1", "TOGETHER_API_KEY", "TOGETHER_BASE_URL"
        ),
        ProviderSpec("groq", "https://api.groq.com/openai/v1", "GROQ_API_KEY", "GROQ_BASE_URL"),
        ProviderSpec(
            "deepseek", "https://api.deepseek.com/v1", "DEEPSEEK_API_KEY", "DEEPSEEK_BASE_URL"
        ),
        ProviderSpec(
            "fireworks",
            "https://api.fireworks.ai/inference/v1",
            "FIREWORKS_API_KEY",
            "FIREWORKS_BASE_URL",
        ),
        ProviderSpec("mistral", "https://api.mistral.ai/v1", "MISTRAL_API_KEY", "MISTRAL_BASE_URL"),
        _local("vllm", 8000, "VLLM"),
        _local("sglang", 30000, "SGLANG"),
        _local("ollama", 11434, "OLLAMA"),
        _local("llamacpp", 8080, "LLAMACPP"),
        _local("lmstudio", 1234, "LMSTUDIO"),
    )
}


def parse_model_name(name: str) -> tuple[ProviderSpec, str]:
    """Split ``provider:model`` into the provider's spec and the model id it serves."""
    if not isinstance(name, str) or ":" not in name:
        raise ConfigError(
            f"model {name!r} must be named provider:model, e.g. openai:gpt-4o-mini or "
            f"ollama:qwen3:8b; known providers: {', '.join(sorted(PROVIDERS))}",
            model=name,
        )
    provider, model = name.split(":", 1)
    spec = PROVIDERS.get(provider.strip().lower())
    if spec is None:
        raise UnknownProvider(
            f"unknown provider {provider!r} in model {name!r}; known providers: "
            f"{', '.join(sorted(PROVIDERS))} (any OpenAI-compatible server works as vllm:<model> "
            "with base_url=...)",
            provider=provider,
            known=sorted(PROVIDERS),
        )
    if not model.strip():
        raise ConfigError(f"model {name!r} names no model after {provider!r}:", model=name)
    return spec, model.strip()
