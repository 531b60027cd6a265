"""``get_lm("provider:model")``: the one way to build a model client from a name.

The provider's key and base-URL variables (``OPENAI_API_KEY``, ``OPENAI_BASE_URL`` ...) are read
from the process environment at call time, as the provider SDKs do; pass ``env={}`` to ignore the
environment or any mapping to use instead. Explicit arguments always win over ``env``. The model
clients themselves (``OpenAICompatLM`` ...) never read the environment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from holdfast.lm.base import BaseLM
from holdfast.lm.prices import DEFAULT_PRICES, PriceTable, prices_from_env
from holdfast.lm.providers import ProviderSpec, parse_model_name
from holdfast.lm.record import CallRecorder
from holdfast.lm.retry import RetryPolicy


def resolve_endpoint(
    spec: ProviderSpec,
    *,
    base_url: str | None = None,
    api_key: str | None = None,
    env: Mapping[str, str] | None = None,
) -> tuple[str, str | None]:
    """The base URL and API key to use: explicit values, then ``env``, then the provider default.

    ``env=None`` means the process environment, read now (never at import); pass ``{}`` to ignore
    the environment entirely.
    """
    env = os.environ if env is None else env
    url = base_url or (env.get(spec.base_url_env) if spec.base_url_env else None) or spec.base_url
    key = api_key or (env.get(spec.key_env) if spec.key_env else None) or None
    return url, key


SDK_HEADER_ENV = ("OPENAI_ORG_ID", "OPENAI_PROJECT_ID")


def sdk_only_headers(env: Mapping[str, str] | None = None) -> list[str]:
    """The variables in ``env`` that the ``openai`` SDK turns into headers the direct path lacks."""
    env = os.environ if env is None else env
    return [name for name in SDK_HEADER_ENV if env.get(name)]


def get_lm(
    model: str,
    *,
    base_url: str | None = None,
    api_key: str | None = None,
    env: Mapping[str, str] | None = None,
    max_concurrency: int | None = None,
    retry: RetryPolicy | None = None,
    timeout: float = 120.0,
    prices: PriceTable = DEFAULT_PRICES,
    call_log: CallRecorder | None = None,
    **options: Any,
) -> BaseLM:
    """Build the client of ``model`` (``provider:model``).

    ``base_url`` overrides the provider's default endpoint (any OpenAI-compatible server works as
    ``vllm:<model>`` with a base URL); ``env`` is where to look up the provider's key and base-URL
    variables (e.g. ``OPENAI_API_KEY``, ``OPENAI_BASE_URL``) when they are not passed: the process
    environment by default, as the provider SDKs do; ``{}`` ignores it. Calls go
    to ``call_log`` when one is attached. ``HOLDFAST_PRICES`` in ``env`` names a JSON price file
    loaded on top of ``prices``. Extra ``options`` go to the client class.

    The HTTP path of an OpenAI-compatible model is the direct client for a plain ``http://``
    endpoint and the SDK otherwise (see :func:`~holdfast.lm.openai_compat.choose_http_path`);
    ``direct_http=True`` or ``False`` forces one. Where ``env`` sets ``OPENAI_ORG_ID`` or
    ``OPENAI_PROJECT_ID``, which the SDK sends as headers and the direct client does not, the
    default is the SDK.
    """
    spec, _ = parse_model_name(model)
    url, key = resolve_endpoint(spec, base_url=base_url, api_key=api_key, env=env)
    if options.get("direct_http") is None and sdk_only_headers(env):
        options["direct_http"] = False
    prices = prices_from_env(prices, env)  # HOLDFAST_PRICES=<file>: a maintained price list
    kwargs: dict[str, Any] = dict(
        base_url=url,
        api_key=key,
        max_concurrency=max_concurrency,
        retry=retry,
        timeout=timeout,
        prices=prices,
        call_log=call_log,
        **options,
    )
    if spec.wire == "anthropic":
        from holdfast.lm.anthropic_lm import AnthropicLM

        return AnthropicLM(model, **kwargs)
    from holdfast.lm.openai_compat import OpenAICompatLM

    return OpenAICompatLM(model, **kwargs)
