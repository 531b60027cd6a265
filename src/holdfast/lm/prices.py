"""The price table: USD per million input, cached-input and output tokens.

Cost is always computed here from token counts, so it never depends on a provider reporting it.
Local servers (vLLM, SGLang, Ollama, llama.cpp, LM Studio) cost nothing. A model the table does not
know costs 0 and is flagged (``Usage.priced`` is False) so that budgets can tell "free" from
"unknown". Users extend the table with :meth:`PriceTable.extend` and hand it to ``get_lm``.

Figures are list prices for standard (non-batch) use as published by the providers; check your
provider's page when it matters, and override them with your own table.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from holdfast.errors import ConfigError


@dataclass(frozen=True)
class Price:
    """USD per million tokens."""

    input: float
    output: float
    cached_input: float | None = None

    def cost(self, input_tokens: int, output_tokens: int, cached_tokens: int = 0) -> float:
        """The USD cost of a call; ``cached_tokens`` is the part of ``input_tokens`` read from cache."""
        cached = max(0, min(cached_tokens, input_tokens))
        cached_rate = self.input if self.cached_input is None else self.cached_input
        usd = (
            (input_tokens - cached) * self.input
            + cached * cached_rate
            + output_tokens * self.output
        ) / 1_000_000
        return round(usd, 10)


FREE = Price(0.0, 0.0, 0.0)

# Providers that run models on the user's own hardware: every model is free.
LOCAL_PROVIDERS = frozenset({"vllm", "sglang", "ollama", "llamacpp", "lmstudio", "local", "fake"})

_DEFAULT: dict[str, Price] = {
    # OpenAI
    "gpt-5": Price(1.25, 10.0, 0.125),
    "gpt-5-mini": Price(0.25, 2.0, 0.025),
    "gpt-5-nano": Price(0.05, 0.40, 0.005),
    "gpt-4.1": Price(2.0, 8.0, 0.50),
    "gpt-4.1-mini": Price(0.40, 1.60, 0.10),
    "gpt-4.1-nano": Price(0.10, 0.40, 0.025),
    "gpt-4o": Price(2.50, 10.0, 1.25),
    "gpt-4o-mini": Price(0.15, 0.60, 0.075),
    "o3": Price(2.0, 8.0, 0.50),
    "o4-mini": Price(1.10, 4.40, 0.275),
    "o3-mini": Price(1.10, 4.40, 0.55),
    # Anthropic (cached input = cache reads)
    "claude-opus-4-1": Price(15.0, 75.0, 1.50),
    "claude-opus-4": Price(15.0, 75.0, 1.50),
    "claude-sonnet-4-5": Price(3.0, 15.0, 0.30),
    "claude-sonnet-4": Price(3.0, 15.0, 0.30),
    "claude-haiku-4-5": Price(1.0, 5.0, 0.10),
    "claude-3-5-haiku": Price(0.80, 4.0, 0.08),
    # DeepSeek
    "deepseek-chat": Price(0.27, 1.10, 0.07),
    "deepseek-reasoner": Price(0.55, 2.19, 0.14),
    # Open-weight models as commonly priced by hosted providers
    "llama-3.3-70b-versatile": Price(0.59, 0.79),
    "llama-3.1-8b-instant": Price(0.05, 0.08),
}


@dataclass(frozen=True)
class PriceTable:
    """An immutable model-name to :class:`Price` map with prefix matching for dated names.

    ``gpt-4o-2024-08-06`` matches ``gpt-4o``; ``openai/gpt-4o`` (OpenRouter style) matches ``gpt-4o``.
    Lookups of longer names win over shorter ones (``gpt-4o-mini`` before ``gpt-4o``).
    """

    prices: Mapping[str, Price] = field(default_factory=lambda: MappingProxyType(dict(_DEFAULT)))

    def extend(self, prices: Mapping[str, Price | tuple[float, ...]]) -> PriceTable:
        """A new table with ``prices`` added or overriding; tuples are ``(input, output[, cached])``."""
        merged = dict(self.prices)
        for name, value in prices.items():
            if isinstance(value, Price):
                merged[name] = value
            elif isinstance(value, tuple) and len(value) in (2, 3):
                merged[name] = Price(*(float(v) for v in value))
            else:
                raise ConfigError(
                    f"price for {name!r} must be a Price or (input, output[, cached_input]) "
                    f"USD per million tokens, got {value!r}"
                )
        return PriceTable(MappingProxyType(merged))

    def lookup(self, provider: str, model: str) -> Price | None:
        """The price of ``model`` served by ``provider``, or None when unknown."""
        if provider in LOCAL_PROVIDERS:
            return FREE
        for key in (f"{provider}:{model}", model, model.rsplit("/", 1)[-1]):
            if key in self.prices:
                return self.prices[key]
        name = model.rsplit("/", 1)[-1]
        best: str | None = None
        for key in self.prices:
            if name.startswith(key + "-") and (best is None or len(key) > len(best)):
                best = key
        return self.prices[best] if best is not None else None


DEFAULT_PRICES = PriceTable()
