"""``compute_token_weights``: validate the inputs, run a registered strategy, return gamma [B, N] float32."""

from __future__ import annotations

import functools
import numbers

import torch

from ..attention.masks import first_split_row, split_rows
from ..deferred import DeferredChecks
from ..errors import ConfigError
from .registry import STATISTICS, STRATEGIES, CreditBatch, check_options


def _check_number(name: str, value, low: float, high: float = float("inf")) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not low <= float(value) <= high:
        bounds = f"in [{low}, {high}]" if high < float("inf") else f">= {low}"
        raise ConfigError(f"{name} must be a number {bounds}, got {value!r}")
    return float(value)


def _response_bool(response_mask, checks: DeferredChecks) -> torch.Tensor:
    """The response mask as bool [B, N]; raises unless it is 2-D, and adds to ``checks`` that it is 0/1-valued and
    contiguous per row."""
    if not isinstance(response_mask, torch.Tensor) or response_mask.dim() != 2:
        got = tuple(response_mask.shape) if isinstance(response_mask, torch.Tensor) else type(response_mask).__name__
        raise ValueError(f"response_mask must be a [B, N] tensor, got {got}")
    if response_mask.dtype != torch.bool:
        checks.add(((response_mask != 0) & (response_mask != 1)).any(),
                   lambda: ValueError("response_mask must hold only 0 and 1 (or be bool)"))  # fmt: skip
        response_mask = response_mask != 0
    checks.add(split_rows(response_mask).any(), lambda: ValueError(
        f"response_mask row {first_split_row(response_mask)} is not one contiguous run of response tokens"
    ))  # fmt: skip
    return response_mask


class NonFiniteStatisticError(ValueError):
    """A statistic a strategy reads is NaN or inf on a response token."""


def _non_finite_error(name: str, value: torch.Tensor, bad: torch.Tensor) -> NonFiniteStatisticError:
    bad = bad.nonzero()
    row, pos = (int(i) for i in bad[0])
    return NonFiniteStatisticError(
        f"{name} has {len(bad)} NaN/inf value(s) on response tokens (first: row {row}, position {pos}, "
        f"value {float(value[row, pos])}); the statistics must be finite"
    )


def _statistic(name: str, value, response: torch.Tensor, checks: DeferredChecks) -> torch.Tensor:
    """A statistic as float64 [B, N], set to 0 outside the response; raises on shape, and adds to ``checks`` that it
    is finite on the response."""
    if not isinstance(value, torch.Tensor) or value.shape != response.shape or value.is_complex():
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise ValueError(f"{name} must be a real tensor shaped {tuple(response.shape)} like response_mask, got {shape}")
    if value.device != response.device:
        raise ValueError(f"{name} is on {value.device} but response_mask is on {response.device}")
    value = value.to(torch.float64)
    bad = ~torch.isfinite(value) & response
    checks.add(bad.any(), functools.partial(_non_finite_error, name, value, bad))
    return torch.where(response, value, 0.0)


def compute_token_weights(
    strategy: str,
    *,
    waad: torch.Tensor | None = None,
    fai: torch.Tensor | None = None,
    entropy: torch.Tensor | None = None,
    response_mask: torch.Tensor,
    top_quantile: float = 0.4,
    gamma_amp: float = 1.5,
    alpha: float = 0.5,
    k: int = 3,
    generator: torch.Generator | None = None,
    checks: DeferredChecks | None = None,
    **options,
) -> torch.Tensor:
    """Per-token advantage weights gamma [B, N] float32 of a credit strategy (Eq. 13-19; docs/method.md).

    Args:
        strategy: a name from ``list_strategies()``: ``none``, ``random``, ``entropy``, ``local_chunk``,
            ``global_anchor``, ``coupled``, or one added with ``register_strategy``.
        waad: group-averaged WAAD of the local-focused heads (Eq. 8-9), [B, N]; for local_chunk, coupled.
        fai: group-averaged FAI of the global-focused heads (Eq. 8, 10), [B, N]; for global_anchor, coupled.
        entropy: the policy's per-token entropy, [B, N], aligned with the tokens; for entropy.
        response_mask: [B, N] bool or 0/1; the response tokens of a row must be contiguous and may start
            anywhere (left padding, prompt) and be followed by padding.
        top_quantile: q in [0, 1]: each response has ``ceil(q * n)`` selected tokens (q read as a fraction
            with denominator <= 10**6, so 0.4 * 5 gives exactly 2). Paper: 0.4.
        gamma_amp: weight of a selected token, >= 1 (Eq. 15, 17, 19). Paper: 1.5.
        alpha: share of the extra credit a dominated anchor hands to its intro token, in [0, 1] (Eq. 19).
        k: number of predecessors searched for a WAAD jump (Eq. 18), an integer >= 1. Paper: k in {1, 2, 3}.
        generator: random source of the ``random`` strategy (on any device), for reproducible runs.
        checks: optional :class:`~attncredit.deferred.DeferredChecks` that the checks of the inputs' values
            (response_mask 0/1 and contiguous, statistics finite on the response) are added to, for the caller to
            verify before it uses gamma for an update; the strategy then runs without waiting for the GPU. Without
            it they are read at once, in one host sync, before the strategy runs.
        **options: the strategy's own options (``list_strategies`` / ``STRATEGIES[name].options``), e.g.
            ``selection``, ``tau_waad``, ``tau_delta``, ``coupled_overlap`` for ``coupled``.

    Statistics the strategy does not require may be passed and are neither checked nor read; values
    outside the response are never read (strategies see them as 0).

    Returns gamma [B, N] float32 on the device of ``response_mask``: >= 1 on the response tokens and
    exactly 1 elsewhere. Slice its completion part (``gamma[:, -C:]``) for ``token_advantages``.

    Raises:
        ConfigError (a ValueError): unknown strategy or option, out-of-range argument or option value.
        ValueError: missing required statistic, bad shape or device, NaN/inf on a response token
            (``NonFiniteStatisticError``); with ``checks``, the checks of values raise from its ``verify()``.
    """
    check_options(strategy, options)  # raises on an unknown strategy or option name
    spec = STRATEGIES[strategy]
    top_quantile = _check_number("top_quantile", top_quantile, 0.0, 1.0)
    gamma_amp = _check_number("gamma_amp", gamma_amp, 1.0)
    alpha = _check_number("alpha", alpha, 0.0, 1.0)
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        raise ConfigError(f"k must be an integer >= 1, got {k!r}")

    pending = DeferredChecks() if checks is None else checks
    response = _response_bool(response_mask, pending)
    given = {"waad": waad, "fai": fai, "entropy": entropy}
    missing = [name for name in spec.requires if given[name] is None]
    if missing:
        raise ValueError(
            f"credit strategy {strategy!r} needs {', '.join(spec.requires)}; missing: {', '.join(missing)}"
        )
    stats = {name: _statistic(name, given[name], response, pending) if name in spec.requires else None
             for name in STATISTICS}  # fmt: skip
    if checks is None:
        pending.verify()
    if response.shape[1] == 0:
        return torch.ones(response.shape, dtype=torch.float32, device=response.device)
    batch = CreditBatch(
        **stats, response=response, top_quantile=top_quantile, gamma_amp=gamma_amp, alpha=alpha, k=int(k),
        generator=generator,
    )
    gamma = spec.fn(batch, **{**spec.options, **options})
    if gamma.shape != response.shape:
        raise ValueError(f"strategy {strategy!r} returned shape {tuple(gamma.shape)}, expected {tuple(response.shape)}")
    return torch.where(response, gamma.to(device=response.device, dtype=torch.float32), 1.0)
