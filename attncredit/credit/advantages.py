"""Per-token advantages ``A_t gamma_t`` (PAPER.md Eq. 12-13), with the sign modes of §6.1 / Table 7(a)."""

from __future__ import annotations

import torch

from ..errors import ConfigError

#: ``both``: every response (paper v2, Table 7a best); ``positive`` / ``negative``: only responses with
#: A >= 0 / A < 0 get gamma, the others gamma = 1 (paper v1 used ``positive``).
SIGN_MODES = ("both", "positive", "negative")
#: ``none``: gamma as computed (paper); ``mean_one``: gamma rescaled to mean 1 over each response.
NORMALIZATIONS = ("none", "mean_one")


def token_advantages(
    advantages: torch.Tensor,
    gamma: torch.Tensor,
    completion_mask: torch.Tensor,
    sign: str = "both",
    normalize: str = "none",
) -> torch.Tensor:
    """TRL's per-token advantages ``A~_{i,t} = A_i gamma_{i,t}`` (Eq. 13), shape (B, C).

    Args:
        advantages: (B,) group-normalised sequence advantages A_i (Eq. 6).
        gamma: (B, C) weights of the completion tokens: the caller slices the completion part of
            ``compute_token_weights``'s [B, N] output, ``gamma[:, -C:]`` when completions end the rows.
        completion_mask: (B, C) bool or 0/1, the completion tokens; gamma is taken as 1 elsewhere.
        sign: ``both`` (default, paper v2), ``positive`` (gamma only where A_i >= 0) or ``negative``
            (only where A_i < 0); the excluded responses get gamma = 1, i.e. plain GRPO.
        normalize: ``none`` (default, paper) or ``mean_one``: after the sign mode, each response's gamma is
            divided by its mean over the completion tokens, ``gamma * n_i / sum_t gamma_{i,t}``, so the
            advantage mass of every response (and so the effective learning rate) stays that of GRPO.

    Returns: ``A[:, None] * gamma`` in the dtype of ``advantages``; outside the completion it equals A_i.
    """
    if sign not in SIGN_MODES:
        raise ConfigError(f"sign must be one of {', '.join(SIGN_MODES)}, got {sign!r}")
    if normalize not in NORMALIZATIONS:
        raise ConfigError(f"normalize must be one of {', '.join(NORMALIZATIONS)}, got {normalize!r}")
    if advantages.dim() != 1 or gamma.dim() != 2 or gamma.shape[0] != advantages.shape[0]:
        raise ValueError(f"need advantages (B,), gamma (B, C); got {tuple(advantages.shape)}, {tuple(gamma.shape)}")
    if completion_mask.shape != gamma.shape:
        raise ValueError(f"completion_mask {tuple(completion_mask.shape)} must be shaped as gamma {tuple(gamma.shape)}")
    mask = completion_mask.to(device=gamma.device, dtype=torch.bool)
    gamma = torch.where(mask, gamma.to(advantages.dtype), 1.0)
    if sign != "both":
        applies = advantages >= 0 if sign == "positive" else advantages < 0
        gamma = torch.where(applies[:, None], gamma, 1.0)
    if normalize == "mean_one":
        total = gamma.masked_fill(~mask, 0.0).sum(dim=1, keepdim=True)
        count = mask.sum(dim=1, keepdim=True)
        if bool(((total <= 0) & (count > 0)).any()):
            raise ValueError("normalize='mean_one' needs a positive sum of gamma over every completion")
        gamma = torch.where(mask, gamma * count / total.clamp(min=torch.finfo(gamma.dtype).tiny), 1.0)
    return advantages[:, None] * gamma
