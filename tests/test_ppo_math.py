"""PPO maths without the trainer: GAE against a plain per-row loop, token rewards, value clipping, whitening,
explained variance, length-adaptive lambda, and AnchorPPOConfig's one-line errors."""

import pytest
import torch

from attncredit import AnchorPPOConfig, compute_gae
from attncredit.errors import ConfigError
from attncredit.ppo import clipped_value_loss, explained_variance, length_adaptive_lambda, outcome_token_rewards, whiten


def gae_by_hand(rewards, values, mask, gamma, lam):
    """Independent reference: per row, take the valid positions as a list and run the textbook backward recursion
    in Python floats."""
    B, C = len(rewards), len(rewards[0])
    adv = [[0.0] * C for _ in range(B)]
    ret = [[0.0] * C for _ in range(B)]
    for b in range(B):
        lam_b = lam[b] if isinstance(lam, list) else lam
        idx = [t for t in range(C) if mask[b][t]]
        running = 0.0
        for k in range(len(idx) - 1, -1, -1):
            t = idx[k]
            v_next = values[b][idx[k + 1]] if k + 1 < len(idx) else 0.0
            delta = rewards[b][t] + gamma * v_next - values[b][t]
            running = delta + gamma * lam_b * running
            adv[b][t] = running
            ret[b][t] = running + values[b][t]
    return torch.tensor(adv, dtype=torch.float64), torch.tensor(ret, dtype=torch.float64)


def random_batch(seed, B=6, C=9):
    g = torch.Generator().manual_seed(seed)
    rewards = torch.randn(B, C, generator=g, dtype=torch.float64)
    values = torch.randn(B, C, generator=g, dtype=torch.float64)
    mask = torch.zeros(B, C, dtype=torch.bool)
    mask[0, :] = True  # full row
    mask[1, :4] = True  # right padding
    mask[2, 3:] = True  # left zeros
    mask[3, 2:7] = True  # zeros on both sides
    mask[4, [0, 1, 4, 8]] = True  # gaps
    # row 5: empty completion
    return rewards, values, mask


@pytest.mark.parametrize("gamma", [1.0, 0.99])
@pytest.mark.parametrize("lam", [0.0, 0.95, 1.0])
def test_gae_matches_an_independent_loop(gamma, lam):
    rewards, values, mask = random_batch(int(gamma * 100 + lam * 10))
    adv, ret = compute_gae(rewards, values, mask, gamma=gamma, lam=lam)
    ref_adv, ref_ret = gae_by_hand(rewards.tolist(), values.tolist(), mask.tolist(), gamma, lam)
    assert adv.dtype == ret.dtype == torch.float64 and adv.shape == ret.shape == mask.shape
    torch.testing.assert_close(adv, ref_adv, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ret, ref_ret, rtol=1e-12, atol=1e-12)
    assert bool((adv[~mask] == 0).all()) and bool((ret[~mask] == 0).all())


def test_gae_with_one_lambda_per_row_matches_the_loop():
    rewards, values, mask = random_batch(3)
    lams = [0.0, 0.5, 0.9, 1.0, 0.3, 0.7]
    adv, ret = compute_gae(rewards, values, mask, gamma=0.99, lam=torch.tensor(lams, dtype=torch.float64))
    ref_adv, ref_ret = gae_by_hand(rewards.tolist(), values.tolist(), mask.tolist(), 0.99, lams)
    torch.testing.assert_close(adv, ref_adv)
    torch.testing.assert_close(ret, ref_ret)


def test_undiscounted_full_trace_returns_are_the_outcome_reward_on_every_valid_token():
    _, values, mask = random_batch(5)
    outcome = torch.tensor([1.0, 0.0, 0.5, -2.0, 3.0, 7.0])
    token_rewards = outcome_token_rewards(outcome, mask)
    # the reward sits on the last valid token of each row (none for the empty row 5)
    assert token_rewards[0, 8] == 1.0 and token_rewards[1, 3] == 0.0 and token_rewards[2, 8] == 0.5
    assert token_rewards[3, 6] == -2.0 and token_rewards[4, 8] == 3.0 and bool((token_rewards[5] == 0).all())
    assert int((token_rewards != 0).sum()) == 4
    _, ret = compute_gae(token_rewards, values.float(), mask, gamma=1.0, lam=1.0)
    expected = torch.where(mask, outcome[:, None].expand_as(ret), 0.0)
    torch.testing.assert_close(ret, expected, rtol=0, atol=1e-5)


def test_kl_penalty_enters_the_reward_on_every_valid_token():
    mask = torch.tensor([[0, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.bool)
    kl = torch.tensor([[9.0, 0.5, -0.25, 1.0], [2.0, 4.0, 9.0, 9.0]])
    r = outcome_token_rewards(torch.tensor([1.0, 0.0]), mask, kl=kl, kl_coef=0.1)
    expected = torch.tensor([[0.0, -0.05, 0.025, 1.0 - 0.1], [-0.2, -0.4, 0.0, 0.0]])
    torch.testing.assert_close(r, expected)
    # with gamma = lambda = 1 the return is the outcome minus the KL still to come
    _, ret = compute_gae(r, torch.zeros(2, 4), mask, gamma=1.0, lam=1.0)
    torch.testing.assert_close(ret[0, 1:], torch.tensor([1.0 - 0.1 * 1.25, 1.0 - 0.1 * 0.75, 1.0 - 0.1]))
    with pytest.raises(ValueError, match="kl_coef=0.1 needs kl"):
        outcome_token_rewards(torch.tensor([1.0, 0.0]), mask, kl_coef=0.1)


def test_value_clipping_keeps_the_larger_loss_and_counts_clipped_tokens():
    old = torch.tensor([[0.0, 0.0, 0.0, 0.0]])
    returns = torch.tensor([[1.0, 1.0, -1.0, 5.0]])
    values = torch.tensor([[2.0, 0.3, 0.9, 1.0]], requires_grad=True)
    mask = torch.tensor([[1, 1, 1, 0]])
    out = clipped_value_loss(values, old, returns, mask, cliprange_value=0.5)
    # token 0: V=2 unclipped (2-1)^2=1, clipped V=0.5 -> 0.25: max 1; token 1: 0.49 vs 0.49 (inside the range);
    # token 2: V=0.9 -> 3.61, clipped 0.5 -> 2.25: max 3.61. Token 3 is padding.
    assert out.loss.item() == pytest.approx(0.5 * (1.0 + 0.49 + 3.61) / 3)
    assert out.clipfrac.item() == 0.0
    # a value that moved too far in the right direction: the clipped (larger) loss wins and its gradient is 0
    values2 = torch.tensor([[0.0, 0.0, -0.9, 0.0]], requires_grad=True)
    out2 = clipped_value_loss(values2, torch.tensor([[0.0, 0.0, 0.0, 0.0]]), torch.tensor([[0.0, 0.0, -0.8, 0.0]]), mask, 0.5)
    # token 2: unclipped (-0.9+0.8)^2 = 0.01, clipped V=-0.5 -> 0.09 > 0.01: clipped
    assert out2.clipfrac.item() == pytest.approx(1 / 3)
    assert out2.loss.item() == pytest.approx(0.5 * 0.09 / 3)
    out2.loss.backward()
    assert values2.grad[0, 2] == 0.0
    unclipped = clipped_value_loss(values, old, returns, mask, cliprange_value=None)
    assert unclipped.loss.item() == pytest.approx(0.5 * (1.0 + 0.49 + 3.61) / 3)
    assert out.vpred_mean.item() == pytest.approx((2.0 + 0.3 + 0.9) / 3)


def test_whitening_uses_only_valid_tokens_and_a_cross_rank_sum():
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0], [4.0, 5.0, 6.0, -50.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 0]])
    w = whiten(x, mask)
    valid = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    expected = (valid - valid.mean()) / valid.std()
    torch.testing.assert_close(w[mask.bool()], expected, rtol=1e-4, atol=1e-4)
    assert bool((w[:, 3] == 0).all())
    # split over two "ranks" whose statistics are summed: the same result as the whole batch
    halves = [(x[:1], mask[:1]), (x[1:], mask[1:])]
    stats = [torch.stack([(a * m).sum(), (a * a * m).sum(), m.sum().float()]) for a, m in halves]
    total = stats[0] + stats[1]
    for a, m in halves:
        torch.testing.assert_close(whiten(a, m, reduce=lambda s: total), w[: 1] if a is halves[0][0] else w[1:])


def test_explained_variance():
    returns = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    mask = torch.ones(1, 4)
    assert explained_variance(returns, returns, mask).item() == pytest.approx(1.0)
    assert explained_variance(torch.full_like(returns, 2.5), returns, mask).item() == pytest.approx(0.0)
    assert explained_variance(returns * 0.5, returns, mask).item() == pytest.approx(0.75)


def test_length_adaptive_lambda():
    mask = torch.zeros(3, 200)
    mask[0, :100] = 1
    mask[1, :] = 1
    mask[2, :10] = 1
    lam = length_adaptive_lambda(mask, alpha=0.05)
    torch.testing.assert_close(lam, torch.tensor([1 - 1 / 5, 1 - 1 / 10, 0.0]))


BASE = dict(report_to="none", use_cpu=True, per_device_train_batch_size=4, num_generations=4)


@pytest.mark.parametrize(
    "overrides, expected",
    [
        ({"gae_lambda": 1.5}, "gae_lambda=1.5 is invalid; allowed: a number in [0, 1]"),
        ({"gae_gamma": -0.1}, "gae_gamma=-0.1 is invalid; allowed: a number in [0, 1]"),
        ({"critic_gae_lambda": 2}, "critic_gae_lambda=2 is invalid"),
        ({"advantage_whitening": "group"}, "advantage_whitening='group' is invalid; allowed: batch, none"),
        ({"num_generations": 3}, "generation_batch_size (4) must be divisible by num_generations (3)."),
        ({"num_generations": 1, "per_device_train_batch_size": 1}, "num_generations=1 needs at least 2 completions"),
        ({"cliprange_value": 0}, "cliprange_value=0 is invalid"),
        ({"critic_warmup_steps": -1}, "critic_warmup_steps=-1 is invalid"),
        ({"fp16": True}, "fp16=True is invalid; allowed: False (AnchorPPOTrainer trains in bf16 or fp32)"),
    ],
)
def test_config_errors_are_one_line(tmp_path, overrides, expected):
    with pytest.raises(ConfigError) as info:
        AnchorPPOConfig(output_dir=str(tmp_path), **{**BASE, **overrides})
    message = str(info.value)
    assert expected in message and "\n" not in message


def test_one_generation_per_prompt_is_allowed(tmp_path):
    args = AnchorPPOConfig(output_dir=str(tmp_path), **{**BASE, "num_generations": 1})
    assert args.num_generations == 1 and args.generation_batch_size == 4 and args.num_generations_eval == 1
