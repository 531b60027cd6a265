"""The price table: USD per million input, cached-input and output tokens.

Cost is always computed here from token counts, so it never depends on a provider reporting it.
Local servers (vLLM, SGLang, Ollama, llama.cpp, LM Studio) cost nothing. A model the table does not
know costs 0 and is flagged (``Usage.priced`` is False) so that budgets can tell "free" from
"unknown". Users extend the table with :meth:`PriceTable.extend` and hand it to ``get_lm``.

Figures are list prices for standard (non-batch) use as published by the providers
(https://openai.com/api/pricing/, https://www.anthropic.com/pricing,
https://api-docs.deepseek.com/quick_start/pricing, https://groq.com/pricing); check your
provider's page when it matters, and override them with your own table or a file
(:meth:`PriceTable.from_file`, or ``HOLDFAST_PRICES=<file>`` for ``get_lm`` and the CLI).

Names match exactly, with one allowance: a dated snapshot of a known model (``gpt-4o-2024-08-06``,
``claude-sonnet-4-5-20250929``) or its ``-latest`` alias costs what the model costs. Any other
suffix is another model (``o3-pro`` is not ``o3``, ``gpt-5-pro`` is not ``gpt-5``) and is
reported unpriced unless the table names it.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

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
    "gpt-5-pro": Price(15.0, 120.0),
    "o3": Price(2.0, 8.0, 0.50),
    "o3-pro": Price(20.0, 80.0),
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


# A snapshot suffix: -2024-08-06, -20250929, or -latest (nothing else keeps the base price).
_SNAPSHOT = re.compile(r"-(?:\d{4}-\d{2}-\d{2}|\d{8}|latest)$")

PRICES_ENV = "HOLDFAST_PRICES"


@dataclass(frozen=True)
class PriceTable:
    """An immutable model-name to :class:`Price` map, matched exactly (see the module notes).

    ``gpt-4o-2024-08-06`` matches ``gpt-4o`` (a dated snapshot); ``openai/gpt-4o`` (OpenRouter
    style) matches ``gpt-4o``; ``provider:model`` keys win over bare model names.
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

    def load(self, path: str | os.PathLike[str]) -> PriceTable:
        """A new table with the prices of a JSON file added or overriding (see :meth:`from_file`)."""
        return self.extend(_read_prices(Path(path)))

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], *, base: bool = True) -> PriceTable:
        """The table of a JSON file of USD per million tokens, on top of the defaults (or alone
        with ``base=False``)::

            {"my-model": [0.3, 1.2], "together:llama-4": {"input": 0.2, "output": 0.6,
             "cached_input": 0.05}}
        """
        start = DEFAULT_PRICES if base else PriceTable(MappingProxyType({}))
        return start.load(path)

    def lookup(self, provider: str, model: str) -> Price | None:
        """The price of ``model`` served by ``provider``, or None when unknown."""
        if provider in LOCAL_PROVIDERS:
            return FREE
        name = model.rsplit("/", 1)[-1]
        base = _SNAPSHOT.sub("", name)
        for key in (f"{provider}:{model}", model, name, f"{provider}:{base}", base):
            if key in self.prices:
                return self.prices[key]
        return None


def _read_prices(path: Path) -> dict[str, Price | tuple[float, ...]]:
    try:
        raw: Any = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read the price file {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ConfigError(f"the price file {path} is not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"the price file {path} must hold an object of model: price")
    out: dict[str, Price | tuple[float, ...]] = {}
    for name, value in raw.items():
        numbers: list[Any]
        if isinstance(value, dict):
            unknown = set(value) - {"input", "output", "cached_input"}
            if unknown or "input" not in value or "output" not in value:
                raise ConfigError(
                    f"{path}: price of {name!r} needs input and output (and optionally "
                    f"cached_input) in USD per million tokens, got {value!r}"
                )
            numbers = [value["input"], value["output"]]
            if value.get("cached_input") is not None:
                numbers.append(value["cached_input"])
        elif isinstance(value, list):
            numbers = value
        else:
            numbers = []
        ok = len(numbers) in (2, 3) and all(
            isinstance(n, (int, float)) and not isinstance(n, bool) and 0 <= n < float("inf")
            for n in numbers
        )
        if not ok:
            raise ConfigError(
                f"{path}: price of {name!r} must be [input, output(, cached_input)] or an "
                f"object of them, non-negative USD per million tokens; got {value!r}"
            )
        out[str(name)] = tuple(float(n) for n in numbers)
    return out


def prices_from_env(prices: PriceTable, env: Mapping[str, str] | None = None) -> PriceTable:
    """``prices`` with the file named by ``HOLDFAST_PRICES`` loaded on top, when it is set."""
    env = os.environ if env is None else env
    path = env.get(PRICES_ENV)
    return prices.load(path) if path else prices


DEFAULT_PRICES = PriceTable()
