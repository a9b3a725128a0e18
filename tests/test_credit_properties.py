"""Properties of the credit strategies on random batches (many seeds, varied lengths and layouts), and a
literal per-response Python reference of Eq. 14-19 that the vectorised code must match token for token."""

import math
from fractions import Fraction

import pytest
import torch

from attncredit.credit import compute_token_weights, token_advantages

RANKED = ("entropy", "local_chunk", "global_anchor")
STATISTIC_OF = {"entropy": "entropy", "local_chunk": "waad", "global_anchor": "fai"}
SEEDS = range(40)


def random_batch(seed, device="cpu"):
    """Rows of random length N; each with a response of 0..N tokens anywhere in the row (left padding,
    prompt, right padding). Half the seeds draw statistics from a few integers, so ties are common.
    Outside the response: NaN, inf, or huge values, which must never be read."""
    g = torch.Generator().manual_seed(seed)
    b, n = int(torch.randint(1, 7, (1,), generator=g)), int(torch.randint(1, 41, (1,), generator=g))
    mask = torch.zeros(b, n, dtype=torch.bool)
    for r in range(b):
        length = int(torch.randint(0, n + 1, (1,), generator=g)) if r else min(n, seed % 4)  # 0..3 tokens in row 0
        start = int(torch.randint(0, n - length + 1, (1,), generator=g))
        mask[r, start : start + length] = True

    def stat(scale):
        x = torch.randint(0, 4, (b, n), generator=g).float() if seed % 2 else torch.rand(b, n, generator=g)
        junk = torch.tensor([float("nan"), float("inf"), 1e30])[torch.randint(0, 3, (b, n), generator=g)]
        return torch.where(mask, x * scale, junk).to(device)

    return dict(waad=stat(10.0), fai=stat(0.1), entropy=stat(2.0), response_mask=mask.to(device))


def exact_count(n, q):
    frac = Fraction(str(q))
    return -(-n * frac.numerator // frac.denominator)


def ref_top(score, q, largest=True):
    """TopQ of one response, literally: sort positions by (score descending, position ascending)."""
    order = sorted(range(len(score)), key=lambda i: (-score[i] if largest else score[i], i))
    return set(order[: exact_count(len(score), q)])


def ref_delta(w):
    return [abs(w[i] - w[i + 1]) for i in range(len(w) - 1)] + [0.0] * bool(w)


def ref_coupled(w, f, q, amp, alpha, k, overlap):
    """Eq. 16-19 with the readings of docs/method.md, for one response."""
    anchors, delta = ref_top(f, q), ref_delta(w)
    preplans = ref_top(delta, q)
    tau_delta = min((delta[u] for u in preplans), default=math.inf)
    tau_waad = sorted(w)[(len(w) - 1) // 2] if w else math.inf
    dominated, intro = set(), set()
    for s in anchors:
        before = list(range(max(0, s - k), s))
        jump = max((delta[u] for u in before), default=0.0)
        if w[s] <= tau_waad and jump >= tau_delta and jump > 0:
            dominated.add(s)
            intro.add(next(u for u in before if delta[u] == jump))
    a = amp - 1
    gamma = [
        1 + a * (t in anchors and t not in dominated) + (1 - alpha) * a * (t in dominated) + alpha * a * (t in intro)
        for t in range(len(w))
    ]
    return [min(x, amp) for x in gamma] if overlap == "cap" else gamma


def reference(strategy, batch, q=0.4, amp=1.5, alpha=0.5, k=3, overlap="sum"):
    mask = batch["response_mask"].cpu()
    out = torch.ones(mask.shape, dtype=torch.float64)
    for r in range(mask.shape[0]):
        pos = mask[r].nonzero().flatten()
        values = {name: batch[name][r, pos].double().tolist() for name in ("waad", "fai", "entropy")}
        if strategy == "coupled":
            gamma = ref_coupled(values["waad"], values["fai"], q, amp, alpha, k, overlap)
        else:
            score = ref_delta(values["waad"]) if strategy == "local_chunk" else values[STATISTIC_OF[strategy]]
            top = ref_top(score, q)
            gamma = [amp if i in top else 1.0 for i in range(len(pos))]
        out[r, pos] = torch.tensor(gamma, dtype=torch.float64)
    return out.float()


@pytest.mark.parametrize("strategy", ["none", "random", *RANKED, "coupled"])
def test_gamma_at_least_one_and_exactly_one_outside_the_response(strategy):
    for seed in SEEDS:
        batch = random_batch(seed)
        gamma = compute_token_weights(strategy, **batch, generator=torch.Generator().manual_seed(seed))
        mask = batch["response_mask"]
        assert gamma.dtype == torch.float32 and gamma.shape == mask.shape
        assert (gamma >= 1).all() and (gamma[~mask] == 1).all(), seed


@pytest.mark.parametrize("q", [0.4, 0.2, 0.6, 1.0, 0.0, 0.3])
def test_exactly_ceil_q_n_amplified_tokens_per_response(q):
    for seed in SEEDS:
        batch = random_batch(seed)
        want = torch.tensor([exact_count(int(n), q) for n in batch["response_mask"].sum(dim=1)])
        for strategy in ("random", *RANKED):
            generator = torch.Generator().manual_seed(seed)
            gamma = compute_token_weights(strategy, **batch, top_quantile=q, generator=generator)
            assert ((gamma == 1.5) | (gamma == 1)).all()
            assert torch.equal((gamma == 1.5).sum(dim=1), want), (strategy, seed)


@pytest.mark.parametrize("q", [0.4, 0.2, 0.7])
def test_ranked_strategies_match_the_reference(q):
    for seed in SEEDS:
        batch = random_batch(seed)
        for strategy in RANKED:
            got = compute_token_weights(strategy, **batch, top_quantile=q, gamma_amp=2.0)
            assert torch.equal(got, reference(strategy, batch, q=q, amp=2.0)), (strategy, seed)


@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("overlap", ["sum", "cap"])
def test_coupled_matches_the_reference(k, overlap):
    for seed in SEEDS:
        batch = random_batch(seed)
        alpha = (0.5, 0.25, 0.0, 1.0)[seed % 4]
        got = compute_token_weights("coupled", **batch, alpha=alpha, k=k, coupled_overlap=overlap)
        want = reference("coupled", batch, alpha=alpha, k=k, overlap=overlap)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6, msg=f"seed {seed}")
        if overlap == "cap":
            assert (got <= 1.5).all()


def test_coupled_with_alpha_zero_is_global_anchor():
    for seed in SEEDS:
        batch = random_batch(seed)
        anchors = compute_token_weights("global_anchor", **batch)
        assert torch.equal(compute_token_weights("coupled", **batch, alpha=0.0), anchors)


@pytest.mark.parametrize("strategy", ["waad", "fai", "entropy"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_statistic_on_a_response_token_raises(strategy, bad):
    users = {"waad": ("local_chunk", "coupled"), "fai": ("global_anchor", "coupled"), "entropy": ("entropy",)}[strategy]
    for seed in range(8):
        batch = random_batch(seed + 100)
        tokens = batch["response_mask"].nonzero()
        if not len(tokens):
            continue
        r, t = tokens[seed % len(tokens)].tolist()
        batch[strategy] = batch[strategy].clone()
        batch[strategy][r, t] = bad
        for name in users:
            with pytest.raises(ValueError, match=f"{strategy} has 1 NaN/inf value"):
                compute_token_weights(name, **batch)


def test_deterministic_for_a_seed():
    for seed in range(10):
        batch = random_batch(seed)
        for strategy in ("random", *RANKED, "coupled"):
            one = compute_token_weights(strategy, **batch, generator=torch.Generator().manual_seed(7))
            two = compute_token_weights(strategy, **batch, generator=torch.Generator().manual_seed(7))
            assert torch.equal(one, two)
    mask = torch.ones(8, 64, dtype=torch.bool)
    draws = [
        compute_token_weights("random", response_mask=mask, generator=torch.Generator().manual_seed(s)) for s in (1, 2)
    ]
    assert not torch.equal(*draws)


def test_random_is_uniform_over_positions():
    mask = torch.ones(4000, 10, dtype=torch.bool)
    gamma = compute_token_weights("random", response_mask=mask, generator=torch.Generator().manual_seed(0))
    frequency = (gamma == 1.5).float().mean(dim=0)
    assert ((frequency - 0.4).abs() < 0.03).all(), frequency


@pytest.mark.parametrize("strategy", ["random", *RANKED, "coupled"])
def test_mean_one_and_sign_modes(strategy):
    for seed in SEEDS:
        batch = random_batch(seed)
        mask = batch["response_mask"]
        gamma = compute_token_weights(strategy, **batch, generator=torch.Generator().manual_seed(seed))
        adv = torch.randn(mask.shape[0], generator=torch.Generator().manual_seed(seed))
        adv[0] = 0.0
        normed = token_advantages(adv, gamma, mask, normalize="mean_one") / adv[:, None]
        rows = mask.any(dim=1) & (adv != 0)
        mean = (normed * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)
        torch.testing.assert_close(mean[rows], torch.ones(int(rows.sum())))
        assert (normed[~mask & (adv != 0)[:, None]] == 1).all()
        both = token_advantages(adv, gamma, mask)
        assert torch.equal(both, adv[:, None] * gamma)
        for sign, keeps in (("positive", adv >= 0), ("negative", adv < 0)):
            got = token_advantages(adv, gamma, mask, sign=sign)
            assert torch.equal(got[keeps], both[keeps])
            assert torch.equal(got[~keeps], adv[~keeps, None].expand(-1, mask.shape[1]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.gpu
def test_gpu_matches_cpu():
    for seed in SEEDS:
        cpu, gpu = random_batch(seed), random_batch(seed, device="cuda")
        for strategy in ("random", *RANKED, "coupled"):
            want = compute_token_weights(strategy, **cpu, generator=torch.Generator().manual_seed(seed))
            got = compute_token_weights(strategy, **gpu, generator=torch.Generator().manual_seed(seed))
            assert got.device.type == "cuda" and torch.equal(got.cpu(), want), (strategy, seed)
