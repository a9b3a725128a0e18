"""Generalised advantage estimation over completion tokens, and the token rewards it consumes.

With token rewards ``r_t``, critic values ``V_t`` (the value of the state before completion token ``t``), discount
``gamma`` and trace parameter ``lambda``, over the valid tokens of one completion (``t' = next valid token``):

    delta_t = r_t + gamma * V_{t'} - V_t          (V after the last valid token is 0: the episode ends)
    A_t     = delta_t + gamma * lambda * A_{t'}    (A after the last valid token is 0)
    R_t     = A_t + V_t                            (the critic's regression target)

Invalid positions (padding, on either side, or gaps) are skipped: they get ``A = R = 0`` and do not break the chain.
With ``gamma = lambda = 1``, ``R_t = sum_{s >= t} r_s``, the outcome reward when only the last token is rewarded.
"""

from __future__ import annotations

import torch


def compute_gae(
    token_rewards: torch.Tensor,
    values: torch.Tensor,
    completion_mask: torch.Tensor,
    gamma: float = 1.0,
    lam: float | torch.Tensor = 0.95,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE advantages and returns, both ``(B, C)`` float tensors, zero where ``completion_mask`` is 0.

    Args:
        token_rewards: (B, C) reward of each completion token (values at masked positions are ignored).
        values: (B, C) critic value ``V_t`` of the state before each completion token.
        completion_mask: (B, C) bool or 0/1; 1 on the completion's tokens. Zeros may stand on the right (padding),
            on the left, or anywhere: the recursion runs over the valid tokens only.
        gamma: discount in [0, 1].
        lam: GAE lambda in [0, 1], a number or a (B,) tensor (one lambda per row, e.g. length-adaptive).

    Returns: ``(advantages, returns)`` in float32 (or the inputs' float64).
    """
    if token_rewards.shape != values.shape or values.shape != completion_mask.shape or values.dim() != 2:
        raise ValueError(
            f"token_rewards, values and completion_mask must share one (B, C) shape; got {tuple(token_rewards.shape)}, "
            f"{tuple(values.shape)}, {tuple(completion_mask.shape)}"
        )
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma={gamma} is invalid; allowed: a number in [0, 1]")
    dtype = torch.promote_types(torch.promote_types(token_rewards.dtype, values.dtype), torch.float32)
    rewards, values = token_rewards.to(dtype), values.to(dtype)
    mask = completion_mask.to(device=values.device, dtype=torch.bool)
    lam = torch.as_tensor(lam, dtype=dtype, device=values.device)
    if bool(((lam < 0) | (lam > 1)).any()):
        raise ValueError(f"lam={lam.tolist()} is invalid; allowed: numbers in [0, 1]")
    lam = lam.expand(values.size(0)) if lam.dim() == 0 else lam
    advantages = torch.zeros_like(values)
    next_value = torch.zeros_like(values[:, 0])
    next_advantage = torch.zeros_like(values[:, 0])
    for t in reversed(range(values.size(1))):
        valid = mask[:, t]
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        advantage = delta + gamma * lam * next_advantage
        advantages[:, t] = torch.where(valid, advantage, 0.0)
        next_advantage = torch.where(valid, advantage, next_advantage)
        next_value = torch.where(valid, values[:, t], next_value)
    returns = torch.where(mask, advantages + values, 0.0)
    return advantages, returns


def outcome_token_rewards(
    rewards: torch.Tensor,
    completion_mask: torch.Tensor,
    kl: torch.Tensor | None = None,
    kl_coef: float = 0.0,
) -> torch.Tensor:
    """Token rewards ``r_t = 1[t = last valid token] * R - kl_coef * kl_t`` on the valid tokens, 0 elsewhere.

    Args:
        rewards: (B,) outcome reward of each completion.
        completion_mask: (B, C) 1 on the completion tokens.
        kl: (B, C) per-token KL estimate to the reference, ``log pi_old(y_t) - log pi_ref(y_t)`` (the ``k1``
            estimator, as verl's in-reward KL); needed when ``kl_coef != 0``.
        kl_coef: weight of the KL penalty (0: outcome reward only, the paper's setting).
    """
    mask = completion_mask.to(dtype=torch.bool)
    if rewards.dim() != 1 or rewards.size(0) != mask.size(0):
        raise ValueError(f"need rewards (B,) and completion_mask (B, C); got {tuple(rewards.shape)}, {tuple(mask.shape)}")
    positions = torch.arange(mask.size(1), device=mask.device).expand_as(mask)
    last = torch.where(mask, positions, -1).amax(dim=1)  # -1 for an empty completion: no reward position
    is_last = (positions == last[:, None]) & mask
    token_rewards = torch.where(is_last, rewards.to(torch.float32)[:, None], 0.0)
    if kl_coef != 0.0:
        if kl is None or kl.shape != mask.shape:
            raise ValueError(f"kl_coef={kl_coef} needs kl of shape {tuple(mask.shape)}")
        token_rewards = token_rewards - kl_coef * torch.where(mask, kl.to(torch.float32), 0.0)
    return token_rewards


def length_adaptive_lambda(completion_mask: torch.Tensor, alpha: float) -> torch.Tensor:
    """VAPO's per-sequence actor lambda ``1 - 1 / (alpha * len)``, clamped to [0, 1]; (B,) float32."""
    lengths = completion_mask.to(torch.float32).sum(dim=1).clamp(min=1.0)
    return (1.0 - 1.0 / (alpha * lengths)).clamp(0.0, 1.0)
