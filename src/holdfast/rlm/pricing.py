"""What each model of a job costs, and what a dollar budget does with a model of unknown price.

Every call's cost is computed from its token counts (see :mod:`holdfast.lm.prices`). A model the
price table does not know would count as free, so a dollar budget over it is refused when the job
starts, naming the model and how to price it, unless the budget opts in to an estimate: the
highest input and output rates in the table, so the budget still bounds what it may spend.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from holdfast.errors import ConfigError
from holdfast.lm.prices import DEFAULT_PRICES, Price
from holdfast.lm.tokens import estimate_tokens
from holdfast.lm.types import LM, Message, Usage
from holdfast.rlm.budget import Budget, Unpriced

# The estimate of a reply's tokens when a call sets no max_tokens (for reservations only).
UNBOUNDED_REPLY_TOKENS = 8_192

_MISSING: Any = object()


RLM_REMEDY = (
    "Give it a price in USD per million tokens: RLM(..., prices={{'{name}': (INPUT, OUTPUT)}}) "
    "or get_lm('{name}', price=Price(INPUT, OUTPUT)) (command line: --price {name}=INPUT,OUTPUT); "
    "or count it at the highest price in the table ({estimate}) with "
    "Budget(unpriced='estimate') (--unpriced estimate)."
)


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


def as_price(value: Price | Sequence[float]) -> Price:
    """A :class:`Price` from a Price or ``(input, output[, cached_input])`` USD per million."""
    if isinstance(value, Price):
        return value
    if isinstance(value, Sequence) and not isinstance(value, str) and len(value) in (2, 3):
        numbers = [float(v) for v in value]
        if all(n >= 0 and n == n and n != float("inf") for n in numbers):
            return Price(*numbers)
    raise ConfigError(
        f"a price is (input, output[, cached_input]) in USD per million tokens, got {value!r}"
    )


class JobPricing:
    """The prices of the models of one job (or task) under a dollar limit.

    ``overrides`` are the caller's prices by model name; ``max_usd`` and ``unpriced`` are the
    dollar limit and what it does with a model of unknown price (see :class:`Budget`).
    """

    def __init__(
        self,
        overrides: Mapping[str, Price | Sequence[float]] | None = None,
        *,
        max_usd: float | None = None,
        unpriced: Unpriced = "fail",
    ) -> None:
        self.max_usd = max_usd
        self.unpriced = unpriced
        self.overrides = {name: as_price(p) for name, p in (overrides or {}).items()}
        self.estimate = estimate_price()

    @classmethod
    def for_budget(
        cls,
        budget: Budget,
        overrides: Mapping[str, Price | Sequence[float]] | None = None,
    ) -> JobPricing:
        return cls(overrides, max_usd=budget.max_usd, unpriced=budget.unpriced)

    def price_of(self, lm: LM) -> Price | None:
        """The price of ``lm``: the caller's override, else the model's own; None if unknown."""
        override = self.overrides.get(lm.model)
        if override is not None:
            return override
        price = getattr(lm, "price", _MISSING)
        return price if isinstance(price, Price) else None

    def check(self, models: Iterable[LM], remedy: str = RLM_REMEDY) -> None:
        """Refuse a dollar limit over a model of unknown price (unless estimates are allowed).

        ``remedy`` says how to give a price or opt in, with ``{name}`` for the model's name and
        ``{estimate}`` for the estimate's rates.
        """
        if self.max_usd is None or self.unpriced == "estimate":
            return
        unknown = sorted({lm.model for lm in models if self.price_of(lm) is None})
        if not unknown:
            return
        rates = f"${self.estimate.input:g} in, ${self.estimate.output:g} out per million"
        raise UnpricedModel(
            f"a dollar budget (${self.max_usd:g}) is set, but the price of {', '.join(unknown)} "
            "is unknown, so its calls cannot be counted against it (they would count as free). "
            + remedy.format(name=unknown[0], estimate=rates),
            models=unknown,
        )

    def cost(self, lm: LM, usage: Usage) -> Usage:
        """``usage`` with its dollar cost from this job's prices (an estimate when unpriced)."""
        override = self.overrides.get(lm.model)
        if override is not None:
            return replace(usage, cost_usd=_cost(override, usage), priced=True)
        if usage.priced:
            return usage
        if self.max_usd is not None:  # unpriced="estimate": count it high, flagged
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
