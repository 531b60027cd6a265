"""What each model of a job costs, and what a dollar budget does with a model of unknown price.

Every call's cost is computed from its token counts (see :mod:`holdfast.lm.prices`). A model the
price table does not know would count as free, so a dollar budget over it is refused when the job
starts, naming the model and how to price it, unless the budget opts in to an estimate: the
highest input and output rates in the table, so the budget still bounds what it may spend.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from holdfast.errors import ConfigError
from holdfast.lm.prices import DEFAULT_PRICES, Price
from holdfast.lm.tokens import estimate_tokens
from holdfast.lm.types import LM, Message, Usage
from holdfast.rlm.budget import Budget

# The estimate of a reply's tokens when a call sets no max_tokens (for reservations only).
UNBOUNDED_REPLY_TOKENS = 8_192

_MISSING: Any = object()


class UnpricedModel(ConfigError):
    """A dollar budget is set over a model whose price is unknown."""

    code = "unpriced_model"


def estimate_price(prices: Iterable[Price] | None = None) -> Price:
    """The price an unpriced model is counted at under ``unpriced="estimate"``."""
    table = list(prices if prices is not None else DEFAULT_PRICES.prices.values())
    return Price(
        input=max((p.input for p in table), default=0.0),
        output=max((p.output for p in table), default=0.0),
    )


def as_price(value: Price | tuple[float, ...] | list[float]) -> Price:
    """A :class:`Price` from a Price or ``(input, output[, cached_input])`` USD per million."""
    if isinstance(value, Price):
        return value
    if isinstance(value, (tuple, list)) and len(value) in (2, 3):
        numbers = [float(v) for v in value]
        if all(n >= 0 and n == n and n != float("inf") for n in numbers):
            return Price(*numbers)
    raise ConfigError(
        f"a price is (input, output[, cached_input]) in USD per million tokens, got {value!r}"
    )


class JobPricing:
    """The prices of the models of one job; ``overrides`` are the caller's, by model name."""

    def __init__(
        self,
        budget: Budget,
        overrides: Mapping[str, Price | tuple[float, ...] | list[float]] | None = None,
    ) -> None:
        self.budget = budget
        self.overrides = {name: as_price(p) for name, p in (overrides or {}).items()}
        self.estimate = estimate_price()

    def price_of(self, lm: LM) -> Price | None:
        """The price of ``lm``: the caller's override, else the model's own; None if unknown."""
        override = self.overrides.get(lm.model)
        if override is not None:
            return override
        price = getattr(lm, "price", _MISSING)
        return price if isinstance(price, Price) else None

    def check(self, models: Iterable[LM]) -> None:
        """Refuse a dollar budget over a model of unknown price (unless estimates are allowed)."""
        b = self.budget
        if b.max_usd is None or b.unpriced == "estimate":
            return
        unknown = sorted({lm.model for lm in models if self.price_of(lm) is None})
        if not unknown:
            return
        name = unknown[0]
        raise UnpricedModel(
            f"max_usd={b.max_usd:g} is set, but the price of {', '.join(unknown)} is unknown, so "
            "its calls cannot be counted against the budget (they would count as free). Give it "
            f"a price in USD per million tokens: RLM(..., prices={{{name!r}: (INPUT, OUTPUT)}}) "
            f"or get_lm({name!r}, price=Price(INPUT, OUTPUT)) (command line: --price "
            f"{name}=INPUT,OUTPUT); or count it at the highest price in the table "
            f"(${self.estimate.input:g} in, ${self.estimate.output:g} out per million) with "
            "Budget(unpriced='estimate') (--unpriced estimate).",
            models=unknown,
        )

    def cost(self, lm: LM, usage: Usage) -> Usage:
        """``usage`` with its dollar cost from this job's prices (an estimate when unpriced)."""
        override = self.overrides.get(lm.model)
        if override is not None:
            return replace(usage, cost_usd=_cost(override, usage), priced=True)
        if usage.priced:
            return usage
        if self.budget.max_usd is not None:  # unpriced="estimate": count it high, flagged
            return replace(usage, cost_usd=_cost(self.estimate, usage), priced=False)
        return replace(usage, priced=False)

    def reservation(
        self, lm: LM, messages: list[Message], max_tokens: int | None
    ) -> tuple[int, float, Usage]:
        """What one call may cost before it is sent: tokens, dollars, and as a usage estimate."""
        prompt = estimate_tokens(messages)
        reply = max_tokens if max_tokens is not None else UNBOUNDED_REPLY_TOKENS
        usage = Usage(input_tokens=prompt, output_tokens=reply, estimated_tokens=prompt + reply)
        priced = self.cost(lm, self._with_lm_price(lm, usage))
        return prompt + reply, priced.cost_usd, priced

    def _with_lm_price(self, lm: LM, usage: Usage) -> Usage:
        price = self.price_of(lm)
        if price is None:
            return replace(usage, priced=False)
        return replace(usage, cost_usd=_cost(price, usage), priced=True)


def _cost(price: Price, usage: Usage) -> float:
    return price.cost(usage.input_tokens, usage.output_tokens, usage.cached_tokens)
