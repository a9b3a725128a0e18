"""PPO's critic loss and the batch statistics around it: clipped value loss, whitening, explained variance.

Every function takes a ``(B, C)`` mask of the valid completion tokens; ``reduce`` (optional) sums a small
statistics tensor over processes (``accelerator.reduce(x, "sum")``), so that a batch split across ranks is
normalised as one batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

Reduce = Callable[[torch.Tensor], torch.Tensor] | None


def _sum(x: torch.Tensor, reduce: Reduce) -> torch.Tensor:
    return reduce(x) if reduce is not None else x


def masked_mean_var(x: torch.Tensor, mask: torch.Tensor, reduce: Reduce = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and unbiased variance of ``x`` over the valid entries of ``mask`` (over every rank with ``reduce``)."""
    m = mask.to(x.dtype)
    stats = _sum(torch.stack([(x * m).sum(), (x * x * m).sum(), m.sum()]), reduce)
    total, total_sq, count = stats[0], stats[1], stats[2]
    mean = total / count.clamp(min=1.0)
    var = (total_sq - count * mean * mean).clamp(min=0.0) / (count - 1.0).clamp(min=1.0)
    return mean, var


def whiten(x: torch.Tensor, mask: torch.Tensor, reduce: Reduce = None, eps: float = 1e-8) -> torch.Tensor:
    """``(x - mean) / sqrt(var + eps)`` over the valid tokens of the batch; invalid positions stay 0."""
    mean, var = masked_mean_var(x, mask, reduce)
    return torch.where(mask.bool(), (x - mean) * torch.rsqrt(var + eps), 0.0)


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, reduce: Reduce = None) -> torch.Tensor:
    """``1 - Var(R - V) / Var(R)`` over the valid tokens: 1 for a perfect critic, 0 for a constant one (NaN if
    the returns do not vary)."""
    _, var_returns = masked_mean_var(returns, mask, reduce)
    _, var_error = masked_mean_var(returns - values, mask, reduce)
    return 1.0 - var_error / var_returns


@dataclass
class ValueLoss:
    """The clipped value loss of a micro-batch and its diagnostics (masked means over valid tokens)."""

    loss: torch.Tensor
    clipfrac: torch.Tensor
    vpred_mean: torch.Tensor


def clipped_value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    cliprange_value: float | None,
) -> ValueLoss:
    """PPO's clipped value loss (verl ``compute_value_loss``), a token mean over ``mask``:

        V_clip = old_V + clip(V - old_V, -eps_v, eps_v)
        L_V    = 0.5 * mean_t max((V - R)^2, (V_clip - R)^2)

    ``clipfrac`` is the share of tokens where the clipped term is the larger one. ``cliprange_value=None`` gives the
    plain squared error.
    """
    m = mask.to(values.dtype)
    count = m.sum().clamp(min=1.0)
    unclipped = (values - returns) ** 2
    if cliprange_value is None:
        losses, clipped_more = unclipped, torch.zeros_like(unclipped)
    else:
        clipped_values = old_values + (values - old_values).clamp(-cliprange_value, cliprange_value)
        clipped = (clipped_values - returns) ** 2
        losses, clipped_more = torch.max(unclipped, clipped), (clipped > unclipped).to(values.dtype)
    return ValueLoss(
        loss=0.5 * (losses * m).sum() / count,
        clipfrac=((clipped_more * m).sum() / count).detach(),
        vpred_mean=((values.detach() * m).sum() / count),
    )
