"""Per-response ranking primitives shared by the credit strategies (docs/method.md, Credit strategies).

Every statistic is a [B, N] tensor over prompt + response positions; ``response`` is a bool [B, N] mask
whose True entries are contiguous in each row. All selection happens within one response (row) at a time,
vectorised over the batch with a stable sort, so ties always resolve to the earlier position.
"""

from __future__ import annotations

from fractions import Fraction

import torch

#: A quantile q is read as the nearest fraction with a denominator of at most this (0.4 -> 2/5).
QUANTILE_DENOMINATOR = 10**6


def quantile_count(lengths: torch.Tensor, q: float) -> torch.Tensor:
    """``ceil(q * n)`` for each response length n (a tensor of lengths, or one int), in exact integer arithmetic.

    ``q`` is read as the nearest fraction a/b with b <= 10**6, so ``0.4 * 5`` gives 2 (not the 3 that
    ``math.ceil(0.4 * 5)`` gives because 0.4 * 5 == 2.0000000000000004 in floating point).
    """
    frac = Fraction(q).limit_denominator(QUANTILE_DENOMINATOR)
    return (lengths * frac.numerator + (frac.denominator - 1)) // frac.denominator


def top_quantile_mask(score: torch.Tensor, response: torch.Tensor, q: float, *, largest: bool = True) -> torch.Tensor:
    """TopQ(score, q) of Eq. 14 / 16, per response: a bool [B, N] mask of selected tokens.

    In each row, of the n response tokens the ``ceil(q * n)`` with the largest score are selected
    (the smallest with ``largest=False``); equal scores go to the earlier position. ``score`` must be
    finite on the response; its values elsewhere are ignored.
    """
    key = score.to(torch.float64) if largest else -score.to(torch.float64)
    # "+ 0.0" turns -0.0 into +0.0, so a bit-pattern (radix) sort cannot order the two zeros.
    key = key.masked_fill(~response, float("-inf")) + 0.0
    order = torch.sort(key, dim=1, descending=True, stable=True).indices
    count = quantile_count(response.sum(dim=1), q)
    ranked = torch.arange(score.shape[1], device=score.device) < count[:, None]
    return torch.zeros_like(response).scatter(1, order, ranked)


def response_lower_median(values: torch.Tensor, response: torch.Tensor) -> torch.Tensor:
    """[B] lower median of ``values`` over each response: the element of rank ``(n - 1) // 2`` (0-based,
    ascending), as ``torch.median`` defines it; +inf for an empty response."""
    ordered = torch.sort(values.masked_fill(~response, float("inf")), dim=1).values
    rank = ((response.sum(dim=1) - 1) // 2).clamp(min=0)
    return ordered.gather(1, rank[:, None]).squeeze(1)


def shift_right(x: torch.Tensor, offset: int, fill) -> torch.Tensor:
    """``y[:, t] = x[:, t - offset]``, and ``fill`` where ``t - offset < 0``."""
    y = torch.full_like(x, fill)
    if offset < x.shape[1]:
        y[:, offset:] = x[:, : x.shape[1] - offset]
    return y
