"""Mask checks: that a [B, N] mask marks a single contiguous run per row (real tokens, or response tokens), and that
a layer's 4-D attention mask lets response rows see exactly the keys the attention statistics assume."""

from __future__ import annotations

import torch


def split_rows(mask: torch.Tensor) -> torch.Tensor:
    """bool [B]: which rows of the bool [B, N] ``mask`` hold more than one run of True entries (no host sync).

    A run starts where a True entry follows a False one (or the row start).
    """
    starts = mask.clone()
    starts[:, 1:] &= ~mask[:, :-1]
    return starts.sum(dim=1) > 1


def first_split_row(mask: torch.Tensor) -> int | None:
    """Index of the first row of the bool [B, N] ``mask`` whose True entries form more than one run, else None
    (:func:`split_rows`; one host sync)."""
    split = split_rows(mask)
    if not bool(split.any()):
        return None
    return int(split.nonzero()[0])


def mask_disagrees(
    mask: torch.Tensor,
    attention_mask: torch.Tensor,
    response_mask: torch.Tensor,
    sliding_window: int | None = None,
    max_elements: int = 1 << 24,
) -> torch.Tensor:
    """Whether a layer's attention mask lets some response row see other keys than the statistics give probability.

    The statistics let row ``t`` of sequence ``b`` attend to key ``s`` exactly when
    ``real[b, s] and s <= t and t - s < sliding_window`` (no window: no last condition). ``mask`` is the layer's
    [B or 1, 1, N, N] mask, bool (SDPA: True = may attend) or float (eager: 0 = may attend); ``attention_mask``
    and ``response_mask`` are [B, N] (1 = real token, 1 = response token). Rows outside the response may differ.
    Returns a 0-dim bool tensor on ``mask``'s device, without a host sync; the comparison runs over the whole batch
    in blocks of query rows whose [B, rows, N] temporaries hold at most ``max_elements`` elements (at least one row).
    """
    b, n = attention_mask.shape
    idx = torch.arange(n, device=mask.device)
    real = attention_mask.to(mask.device, torch.bool)[:, None, :]  # [B, 1, N]
    response = response_mask.to(mask.device, torch.bool)
    rows = max(1, max_elements // max(b * n, 1))
    bad = torch.zeros((), dtype=torch.bool, device=mask.device)
    for t0 in range(0, n, rows):
        t = idx[t0 : t0 + rows, None]  # [rows, 1]
        allowed = mask[:, 0, t0 : t0 + rows]  # [B or 1, rows, N]
        allowed = allowed if allowed.dtype == torch.bool else allowed == 0
        expected = (idx[None, :] <= t) & real  # [B, rows, N]
        if sliding_window is not None:
            expected &= idx[None, :] > t - sliding_window
        bad |= ((allowed != expected) & response[:, t0 : t0 + rows, None]).any()
    return bad
