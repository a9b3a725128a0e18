"""Per-token advantages ``A_t gamma_t`` (Eq. 12-13), with the sign modes of Table 7(a) (docs/method.md)."""

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
    """TRL's per-token advantages ``A~_{i,t} = A_{i,t} gamma_{i,t}`` (Eq. 13), shape (B, C).

    Args:
        advantages: (B,) sequence advantages A_i (GRPO's group-normalised advantage, Eq. 6), broadcast to every
            token, or (B, C) token advantages A_{i,t} (e.g. GAE of a critic).
        gamma: (B, C) weights of the completion tokens: the caller slices the completion part of
            ``compute_token_weights``'s [B, N] output, ``gamma[:, -C:]`` when completions end the rows.
        completion_mask: (B, C) bool or 0/1, the completion tokens; gamma is taken as 1 elsewhere.
        sign: ``both`` (default, paper v2), ``positive`` (gamma only where the advantage is >= 0) or ``negative``
            (only where it is < 0), judged per response for (B,) advantages and per token for (B, C); the
            excluded tokens get gamma = 1.
        normalize: ``none`` (default, paper) or ``mean_one``: after the sign mode, each response's gamma is
            divided by its mean over the completion tokens, ``gamma * n_i / sum_t gamma_{i,t}``, so the
            advantage mass of every response (and so the effective learning rate) stays that of GRPO.

    Returns: ``A * gamma`` (B, C) in the dtype of ``advantages``; outside the completion it equals A.
    """
    if sign not in SIGN_MODES:
        raise ConfigError(f"sign must be one of {', '.join(SIGN_MODES)}, got {sign!r}")
    if normalize not in NORMALIZATIONS:
        raise ConfigError(f"normalize must be one of {', '.join(NORMALIZATIONS)}, got {normalize!r}")
    if gamma.dim() != 2 or advantages.shape not in (gamma.shape[:1], gamma.shape):
        raise ValueError(
            f"need advantages (B,) or (B, C) and gamma (B, C); got {tuple(advantages.shape)}, {tuple(gamma.shape)}"
        )
    token_adv = advantages if advantages.dim() == 2 else advantages[:, None]
    if completion_mask.shape != gamma.shape:
        raise ValueError(f"completion_mask {tuple(completion_mask.shape)} must be shaped as gamma {tuple(gamma.shape)}")
    mask = completion_mask.to(device=gamma.device, dtype=torch.bool)
    gamma = torch.where(mask, gamma.to(advantages.dtype), 1.0)
    if sign != "both":
        applies = token_adv >= 0 if sign == "positive" else token_adv < 0
        gamma = torch.where(applies, gamma, 1.0)
    if normalize == "mean_one":
        total = gamma.masked_fill(~mask, 0.0).sum(dim=1, keepdim=True)
        count = mask.sum(dim=1, keepdim=True)
        if bool(((total <= 0) & (count > 0)).any()):
            raise ValueError("normalize='mean_one' needs a positive sum of gamma over every completion")
        gamma = torch.where(mask, gamma * count / total.clamp(min=torch.finfo(gamma.dtype).tiny), 1.0)
    return token_adv * gamma
