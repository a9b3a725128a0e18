"""The one check that a [B, N] mask marks a single contiguous run per row (real tokens, or response tokens)."""

from __future__ import annotations

import torch


def first_split_row(mask: torch.Tensor) -> int | None:
    """Index of the first row of the bool [B, N] ``mask`` whose True entries form more than one run, else None.

    A run starts where a True entry follows a False one (or the row start); one host sync.
    """
    starts = mask.clone()
    starts[:, 1:] &= ~mask[:, :-1]
    split = starts.sum(dim=1) > 1
    if not bool(split.any()):
        return None
    return int(split.nonzero()[0])
