"""Registry of credit strategies, chosen by name (in the style of verl's ``register_adv_est``).

A strategy is one function ``fn(batch: CreditBatch, *, option=default, ...) -> Tensor`` that returns
gamma [B, N] (Eq. 15, 17, 19; docs/method.md). Its keyword-only parameters are its options: their names are
the only extra keywords ``compute_token_weights`` accepts for it, and their defaults apply when the
caller leaves them out. ``compute_token_weights`` validates the inputs before the call and afterwards
sets gamma to exactly 1 outside the response and casts it to float32, so a strategy only has to get
the response tokens right::

    import torch
    from attncredit.credit import register_strategy, top_quantile_mask

    @register_strategy("low_waad", requires=("waad",))
    def low_waad(batch, *, selection="bottom"):
        chosen = top_quantile_mask(batch.waad, batch.response, batch.top_quantile, largest=selection == "top")
        return torch.where(chosen, batch.gamma_amp, 1.0)
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable

import torch

from ..errors import ConfigError

#: The per-token statistics a strategy can require.
STATISTICS = ("waad", "fai", "entropy")


@dataclass(frozen=True)
class CreditBatch:
    """Validated inputs of one strategy call.

    ``waad``, ``fai`` and ``entropy`` are float64 [B, N], finite on the response and 0 elsewhere, for the
    statistics in the strategy's ``requires``, and None for the others. ``response`` is bool [B, N] with
    contiguous True entries per row.
    """

    waad: torch.Tensor | None
    fai: torch.Tensor | None
    entropy: torch.Tensor | None
    response: torch.Tensor
    top_quantile: float
    gamma_amp: float
    alpha: float
    k: int
    generator: torch.Generator | None


@dataclass(frozen=True)
class Strategy:
    """A registered strategy: its function, the statistics it needs, and its options with defaults."""

    name: str
    fn: Callable[..., torch.Tensor]
    requires: tuple[str, ...]
    options: dict


STRATEGIES: dict[str, Strategy] = {}


def register_strategy(name: str, *, requires: tuple[str, ...] = ()):
    """Decorator: register ``fn(batch, *, options...)`` as credit strategy ``name``.

    ``requires`` names the statistics (of ``waad``, ``fai``, ``entropy``) the strategy reads; calling it
    without one of them raises. Registering a different function under a taken name raises.
    """
    unknown = [s for s in requires if s not in STATISTICS]
    if unknown:
        raise ValueError(f"strategy {name!r} requires unknown statistics {unknown}; allowed: {', '.join(STATISTICS)}")

    def decorator(fn):
        params = list(inspect.signature(fn).parameters.values())
        options = params[1:]
        if not params or any(p.kind is not p.KEYWORD_ONLY or p.default is p.empty for p in options):
            raise TypeError(f"strategy {name!r} must have the signature fn(batch, *, option=default, ...)")
        if name in STRATEGIES and STRATEGIES[name].fn is not fn:
            raise ValueError(f"credit strategy {name!r} is already registered")
        STRATEGIES[name] = Strategy(name, fn, tuple(requires), {p.name: p.default for p in options})
        return fn

    return decorator


def check_options(strategy: str, options: dict) -> None:
    """Raise a one-line ConfigError unless every key of ``options`` is an option of ``strategy`` (the keyword-only
    parameters of its function); their values are checked by the strategy itself."""
    required_statistics(strategy)  # raises the unknown-strategy error
    spec = STRATEGIES[strategy]
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        allowed = ", ".join(spec.options) or "none"
        raise ConfigError(f"unknown option {', '.join(unknown)} for credit strategy {strategy!r}; allowed: {allowed}")


def list_strategies() -> list[str]:
    """Names of the registered strategies, in registration order."""
    return list(STRATEGIES)


def required_statistics(strategy: str) -> tuple[str, ...]:
    """The statistics (of ``waad``, ``fai``, ``entropy``) that ``strategy`` reads, so a caller computes
    only those, e.g. the policy entropy only when ``"entropy" in required_statistics(name)``."""
    if strategy not in STRATEGIES:
        raise ConfigError(f"unknown credit strategy {strategy!r}; allowed: {', '.join(STRATEGIES)}")
    return STRATEGIES[strategy].requires
