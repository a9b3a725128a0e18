"""Credit strategies on small hand-built WAAD / FAI / entropy sequences, every expected set derived by hand.

Each sequence is one response of n = 10 tokens, placed in rows of N = 16 three ways: after a 3-token
prompt with right padding, after left padding and a prompt with right padding, and ending the row.
The values outside the response are garbage (100, -7 and NaN) that no strategy may read.
Positions in comments and expectations are relative to the response start; q = 0.4 selects 4 of 10.
"""

import math

import pytest
import torch

from attncredit.credit import (
    STRATEGIES,
    compute_token_weights,
    list_strategies,
    quantile_count,
    register_strategy,
    required_statistics,
    token_advantages,
    top_quantile_mask,
)

N = 16
STARTS = (3, 4, 6)  # response at [3, 13), [4, 14), [6, 16) of each row
GARBAGE = (100.0, -7.0, float("nan"))


def rows(values):
    """[3, 16] float32: ``values`` at each row's response, garbage elsewhere."""
    out = torch.empty(len(STARTS), N)
    for r, (start, junk) in enumerate(zip(STARTS, GARBAGE)):
        out[r] = junk
        out[r, start : start + len(values)] = torch.tensor(values)
    return out


def response_mask(n=10):
    mask = torch.zeros(len(STARTS), N, dtype=torch.bool)
    for r, start in enumerate(STARTS):
        mask[r, start : start + n] = True
    return mask


def expect(gamma_response):
    """[3, 16] float32: the expected gamma, ``gamma_response`` on the response, exactly 1 elsewhere."""
    out = torch.ones(len(STARTS), N)
    for r, start in enumerate(STARTS):
        out[r, start : start + len(gamma_response)] = torch.tensor(gamma_response, dtype=torch.float64).float()
    return out


def selected(positions, n=10, amp=1.5):
    return expect([amp if i in positions else 1.0 for i in range(n)])


# A sawtooth of chunks: Delta_t = |w_t - w_{t+1}| = [5, .5, .5, 7, 8, 1, 5, 6, .25, 0 (last token)].
SAWTOOTH = [6, 1, 1.5, 2, 9, 1, 2, 7, 1, 1.25]


def test_local_chunk_selects_top_delta_ties_to_earlier():
    w, mask = rows(SAWTOOTH), response_mask()
    # Top 4 of Delta: 8 (t4), 7 (t3), 6 (t7), then 5 at t0 and t6: the tie goes to the earlier t0.
    torch.testing.assert_close(compute_token_weights("local_chunk", waad=w, response_mask=mask), selected({0, 3, 4, 7}))
    # q = 0.2: ceil(2) = 2 tokens; q = 0.5: 5 tokens (both of the tied 5s).
    got = compute_token_weights("local_chunk", waad=w, response_mask=mask, top_quantile=0.2)
    torch.testing.assert_close(got, selected({3, 4}))
    got = compute_token_weights("local_chunk", waad=w, response_mask=mask, top_quantile=0.5)
    torch.testing.assert_close(got, selected({0, 3, 4, 6, 7}))
    # Bottom-40% (the paper's Table 5): 0 (t9), .25 (t8), .5 (t1), .5 (t2).
    got = compute_token_weights("local_chunk", waad=w, response_mask=mask, selection="bottom")
    torch.testing.assert_close(got, selected({1, 2, 8, 9}))
    got = compute_token_weights("local_chunk", waad=w, response_mask=mask, gamma_amp=2.0)
    torch.testing.assert_close(got, selected({0, 3, 4, 7}, amp=2.0))


def test_last_response_token_has_zero_delta_and_padding_is_not_its_successor():
    # WAAD rises only into the padding / next row: Delta of the last token stays 0, so with one jump
    # inside the response (t3 -> t4) and all other Delta 0, the ties go to the earliest tokens.
    w, mask = rows([1, 1, 1, 1, 5, 5, 5, 5, 5, 5]), response_mask()
    torch.testing.assert_close(compute_token_weights("local_chunk", waad=w, response_mask=mask), selected({0, 1, 2, 3}))


def test_entropy_selects_top_entropy():
    e, mask = rows([0.1, 2.0, 0.3, 2.0, 0.5, 1.5, 0.2, 0.9, 1.5, 0.4]), response_mask()
    torch.testing.assert_close(compute_token_weights("entropy", entropy=e, response_mask=mask), selected({1, 3, 5, 8}))
    # q = 0.3: 3 tokens; the tie 1.5 at t5 and t8 goes to t5.
    got = compute_token_weights("entropy", entropy=e, response_mask=mask, top_quantile=0.3)
    torch.testing.assert_close(got, selected({1, 3, 5}))


def test_global_anchor_selects_top_fai_and_zero_tails_last():
    # The last H_lo tokens have no receiver rows, FAI = 0: they are never preferred to a positive FAI.
    f, mask = rows([0.3, 0.1, 0.5, 0.2, 0.6, 0.05, 0.4, 0, 0, 0]), response_mask()
    got = compute_token_weights("global_anchor", fai=f, response_mask=mask)
    torch.testing.assert_close(got, selected({0, 2, 4, 6}))
    # A response shorter than H_lo has FAI = 0 everywhere: ceil(0.4 * 3) = 2 tokens, the earliest.
    f, mask = rows([0, 0, 0]), response_mask(3)
    got = compute_token_weights("global_anchor", fai=f, response_mask=mask)
    torch.testing.assert_close(got, selected({0, 1}, n=3))


def test_quantile_count_is_exact_ceil():
    n = torch.arange(0, 101)
    cases = ((0.4, 2, 5), (0.6, 3, 5), (0.7, 7, 10), (0.1 + 0.2, 3, 10), (1 / 3, 1, 3), (1.0, 1, 1), (0.0, 0, 1))
    for q, num, den in cases:
        assert quantile_count(n, q).tolist() == [-(-i * num // den) for i in range(101)], q
    # Products that land just above an integer in floating point must not round up.
    assert math.ceil(0.07 * 100) == 8 and int(quantile_count(torch.tensor(100), 0.07)) == 7
    q32 = float(torch.tensor(0.4, dtype=torch.float32))  # 0.4000000059604645, e.g. a float32 config value
    assert math.ceil(q32 * 5) == 3 and int(quantile_count(torch.tensor(5), q32)) == 2
    f, mask = rows([1, 5, 3, 4, 2]), response_mask(5)
    torch.testing.assert_close(compute_token_weights("global_anchor", fai=f, response_mask=mask), selected({1, 3}, n=5))


# Coupled rhythm credit. WAAD w and its Delta:
#   t:      0  1  2  3  4  5  6  7  8  9
#   w:      2  2  9  1  1  1  6  8  2  2
#   Delta:  0  7  8  0  0  5  2  6  0  0
# T_loc = TopQ(Delta) = {2, 1, 7, 5}, so tau_Delta = 5; sorted w = 1 1 1 2 2 2 2 6 8 9, lower median
# tau_waad = 2. A dominated anchor s needs w_s <= 2 and a Delta >= 5 among its k = 3 predecessors.
RHYTHM = [2, 2, 9, 1, 1, 1, 6, 8, 2, 2]


def fai_with_anchors(anchors):
    """FAI whose top 4 are exactly ``anchors`` (distinct positive values, 0 elsewhere)."""
    return rows([0.9 - 0.1 * sorted(anchors).index(i) if i in anchors else 0.0 for i in range(10)])


def coupled(anchors, **kwargs):
    w, f = rows(RHYTHM), fai_with_anchors(anchors)
    return compute_token_weights("coupled", waad=w, fai=f, response_mask=response_mask(), **kwargs)


@pytest.mark.parametrize("alpha", [0.5, 0.25, 0.0, 1.0])
def test_coupled_anchor_after_jump_is_dominated_high_waad_anchor_is_not(alpha):
    # t0: first token, no predecessor -> 1.5.  t3: w = 1 <= 2, predecessors t0..t2 have Delta 0, 7, 8:
    # dominated, intro = t2 (the WAAD peak; Delta 8).  t6 (w = 6) and t7 (w = 8, predecessors' max
    # Delta 5 >= tau_Delta) have high WAAD: not dominated -> 1.5.
    a = 0.5
    want = [1.5, 1, 1 + a * alpha, 1 + a * (1 - alpha), 1, 1, 1.5, 1.5, 1, 1]
    torch.testing.assert_close(coupled({0, 3, 6, 7}, alpha=alpha), expect(want))
    # k = 1 finds the same jump (t2 right before t3).
    torch.testing.assert_close(coupled({0, 3, 6, 7}, alpha=alpha, k=1), expect(want))


def test_coupled_intro_token_shared_by_two_anchors_counts_once():
    # t3 (predecessors' Delta 0, 7, 8) and t4 (7, 8, 0) are both dominated, both with intro t2.
    want = [1, 1, 1.25, 1.25, 1.25, 1, 1.5, 1.5, 1, 1]
    torch.testing.assert_close(coupled({3, 4, 6, 7}), expect(want))


def test_coupled_overlap_rules():
    # t9: w = 2 <= 2, predecessors t6..t8 have Delta 2, 6, 0: dominated, intro = t7, itself a
    # non-dominated anchor. Literal Eq. 19 ("sum"): 1 + 0.5 + 0.5 alpha; "cap": gamma_amp.
    base = [1, 1, 1.25, 1.25, 1, 1, 1.5, None, 1, 1.25]
    literal, capped = ([x if g is None else g for g in base] for x in (1.75, 1.5))
    torch.testing.assert_close(coupled({3, 6, 7, 9}), expect(literal))
    torch.testing.assert_close(coupled({3, 6, 7, 9}, coupled_overlap="cap"), expect(capped))
    got = coupled({3, 6, 7, 9}, alpha=0.25, gamma_amp=2.0)
    torch.testing.assert_close(got, expect([1, 1, 1.25, 1.75, 1, 1, 2, 2.25, 1, 1.75]))


def test_coupled_k_bounds_the_search_for_the_jump():
    # t4's predecessors: k = 1 -> {t3}: Delta 0, no jump, not dominated; k = 2 -> {t2, t3}: Delta 8 at t2.
    torch.testing.assert_close(coupled({0, 4, 6, 7}, k=1), expect([1.5, 1, 1, 1, 1.5, 1, 1.5, 1.5, 1, 1]))
    torch.testing.assert_close(coupled({0, 4, 6, 7}, k=2), expect([1.5, 1, 1.25, 1, 1.25, 1, 1.5, 1.5, 1, 1]))


def test_coupled_intro_ties_go_to_the_earlier_position():
    # w = 1 9 1 9 1 1 1 1 1 1: Delta = 8 8 8 8 0 0 0 0 0 0, tau_Delta = 8, tau_waad = 1.
    # t4's predecessors t1, t2, t3 all have Delta 8: intro = t1. t7, t8, t9 see no jump.
    w, f = rows([1, 9, 1, 9, 1, 1, 1, 1, 1, 1]), fai_with_anchors({4, 7, 8, 9})
    got = compute_token_weights("coupled", waad=w, fai=f, response_mask=response_mask())
    torch.testing.assert_close(got, expect([1, 1.25, 1, 1, 1.25, 1, 1, 1.5, 1.5, 1.5]))


def test_coupled_thresholds_as_numbers():
    # tau_waad = 8 also lets t6 (predecessors' Delta 0, 0, 5: intro t5) and t7 (0, 5, 2: intro t5) be dominated.
    want = [1.5, 1, 1.25, 1.25, 1, 1.25, 1.25, 1.25, 1, 1]
    torch.testing.assert_close(coupled({0, 3, 6, 7}, tau_waad=8.0), expect(want))
    # tau_Delta = 7.5 keeps t3 dominated (Delta 8); tau_Delta = 9 dominates nothing: plain global anchors.
    torch.testing.assert_close(coupled({0, 3, 6, 7}, tau_delta=7.5), coupled({0, 3, 6, 7}))
    torch.testing.assert_close(coupled({0, 3, 6, 7}, tau_delta=9), selected({0, 3, 6, 7}))


def test_coupled_bottom_selection_flips_the_anchor_ranking():
    f, w, mask = fai_with_anchors({0, 3, 6, 7}), rows(RHYTHM), response_mask()
    # Bottom-4 FAI: the six zeros at t1, t2, t4, t5, t8, t9 tie; the earliest four are t1, t2, t4, t5.
    # t4: w = 1, predecessors' Delta 7, 8, 0 -> dominated, intro t2 (itself a bottom anchor): 1 + .5 + .25.
    # t5: w = 1, predecessors' Delta 8, 0, 0 -> dominated, intro t2 too.
    got = compute_token_weights("coupled", waad=w, fai=f, response_mask=mask, selection="bottom")
    torch.testing.assert_close(got, expect([1, 1.5, 1.75, 1, 1.25, 1.25, 1, 1, 1, 1]))


@pytest.mark.parametrize("strategy", ["random", "entropy", "local_chunk", "global_anchor", "coupled"])
def test_response_of_one_and_zero_tokens(strategy):
    stats = dict(waad=rows([3.0]), fai=rows([0.2]), entropy=rows([1.0]), generator=torch.Generator().manual_seed(0))
    got = compute_token_weights(strategy, response_mask=response_mask(1), **stats)
    torch.testing.assert_close(got, selected({0}, n=1))
    got = compute_token_weights(strategy, response_mask=response_mask(0), **stats)
    torch.testing.assert_close(got, torch.ones(3, N))


def test_coupled_two_token_response():
    # Delta = |w0 - w1|, 0; T_loc = {t0}; tau_waad = min(w). The anchor t1 is dominated iff w1 <= w0.
    mask = response_mask(2)
    got = compute_token_weights("coupled", waad=rows([5.0, 1.0]), fai=rows([0.1, 0.9]), response_mask=mask)
    torch.testing.assert_close(got, expect([1.25, 1.25]))
    got = compute_token_weights("coupled", waad=rows([1.0, 5.0]), fai=rows([0.1, 0.9]), response_mask=mask)
    torch.testing.assert_close(got, expect([1.0, 1.5]))
    got = compute_token_weights("coupled", waad=rows([3.0, 3.0]), fai=rows([0.1, 0.9]), response_mask=mask)
    torch.testing.assert_close(got, expect([1.0, 1.5]))  # no WAAD change, no jump


def test_none_and_random():
    mask = response_mask()
    torch.testing.assert_close(compute_token_weights("none", response_mask=mask), torch.ones(3, N))
    draw = [
        compute_token_weights("random", response_mask=mask, generator=torch.Generator().manual_seed(s)) for s in (1, 1)
    ]
    torch.testing.assert_close(draw[0], draw[1])
    assert ((draw[0] == 1.5).sum(dim=1) == 4).all() and ((draw[0] == 1.5) <= mask).all()


# Sign modes (the paper's Table 7a) on a TRL-shaped batch: left-padded prompts [B, P], right-padded
# completions [B, C], N = P + C; gamma over N is sliced to the completion part before token_advantages.
P, C = 6, 10


def trl_batch():
    attention = torch.zeros(3, P + C, dtype=torch.bool)
    attention[0, 2:P + 10] = True  # 4 prompt tokens, 10 completion tokens
    attention[1, 0:P + 7] = True  # 6 prompt tokens, 7 completion tokens
    attention[2, 5:P + 4] = True  # 1 prompt token, 4 completion tokens
    completion = attention[:, P:]
    response = torch.zeros_like(attention)
    response[:, P:] = completion
    fai = torch.zeros(3, P + C)
    fai[:, P:] = torch.tensor([0.5, 0.9, 0.1, 0.8, 0.2, 0.3, 0.7, 0.4, 0.6, 0.05])
    return fai, response, completion


def test_token_advantages_sign_modes_and_mean_one():
    fai, response, completion = trl_batch()
    gamma = compute_token_weights("global_anchor", fai=fai, response_mask=response)[:, P:]
    # Completions of 10, 7 and 4 tokens: top 4 of 10 {1, 3, 6, 8}, top 3 of 7 {1, 3, 6}, top 2 of 4 {1, 3}.
    want = torch.ones(3, C)
    for r, chosen in enumerate(([1, 3, 6, 8], [1, 3, 6], [1, 3])):
        want[r, chosen] = 1.5
    torch.testing.assert_close(gamma, want)
    adv = torch.tensor([1.0, -0.5, 0.0])
    torch.testing.assert_close(token_advantages(adv, gamma, completion), adv[:, None] * want)
    plain = adv[:, None].expand(3, C)
    positive = token_advantages(adv, gamma, completion, sign="positive")
    torch.testing.assert_close(positive, torch.stack([adv[0] * want[0], plain[1], plain[2]]))
    negative = token_advantages(adv, gamma, completion, sign="negative")
    torch.testing.assert_close(negative, torch.stack([plain[0], adv[1] * want[1], plain[2]]))
    # mean_one: row 0 has 4 x 1.5 and 6 x 1 over 10 tokens, mean 1.2 -> 1.25 and 1/1.2; row 1: 3 x 1.5 and
    # 4 x 1 over 7, mean 8.5/7; outside the completion gamma stays 1.
    normed = token_advantages(adv, gamma, completion, normalize="mean_one")
    g1 = torch.where(want[1] == 1.5, 1.5 * 7 / 8.5, 7 / 8.5) * completion[1] + ~completion[1]
    torch.testing.assert_close(normed[0], torch.where(want[0] == 1.5, 1.25, 1 / 1.2))
    torch.testing.assert_close(normed[1], -0.5 * g1)
    normed = token_advantages(adv, gamma, completion, sign="negative", normalize="mean_one")
    torch.testing.assert_close(normed[0], plain[0])


def test_token_advantages_of_token_level_advantages_apply_sign_per_token():
    fai, response, completion = trl_batch()
    gamma = compute_token_weights("global_anchor", fai=fai, response_mask=response)[:, P:]
    adv = torch.linspace(-1.0, 1.0, 3 * C).reshape(3, C)  # e.g. GAE: a different advantage at every token
    torch.testing.assert_close(token_advantages(adv, gamma, completion), adv * torch.where(completion, gamma, 1.0))
    positive = token_advantages(adv, gamma, completion, sign="positive")
    torch.testing.assert_close(positive, torch.where(completion & (adv >= 0), adv * gamma, adv))
    negative = token_advantages(adv, gamma, completion, sign="negative")
    torch.testing.assert_close(negative, torch.where(completion & (adv < 0), adv * gamma, adv))
    with pytest.raises(ValueError, match=r"need advantages \(B,\) or \(B, C\)"):
        token_advantages(adv[:, :-1], gamma, completion)


def test_errors_are_one_line_and_name_the_allowed_values():
    w, mask = rows(SAWTOOTH), response_mask()
    cases = [
        (dict(strategy="rhythm"), "unknown credit strategy 'rhythm'; allowed: none, random, entropy, local_chunk"),
        (dict(strategy="coupled"), "needs waad, fai; missing: fai"),
        (dict(strategy="entropy"), "missing: entropy"),
        (
            dict(strategy="local_chunk", coupled_overlap="sum"),
            "unknown option coupled_overlap for credit strategy 'local_chunk'; allowed: selection",
        ),
        (dict(strategy="none", selection="top"), "allowed: none"),
        (dict(strategy="coupled", fai=w, coupled_overlap="max"), "coupled_overlap must be one of 'sum', 'cap', got"),
        (dict(strategy="coupled", fai=w, tau_waad="mean"), "tau_waad must be 'median' or a finite number"),
        (dict(strategy="coupled", fai=w, tau_delta=float("nan")), "tau_delta must be 'top_quantile'"),
        (dict(strategy="local_chunk", selection="middle"), "selection must be one of 'top', 'bottom'"),
        (dict(strategy="local_chunk", top_quantile=1.5), "top_quantile must be a number in [0.0, 1.0], got 1.5"),
        (dict(strategy="local_chunk", gamma_amp=0.5), "gamma_amp must be a number >= 1.0"),
        (dict(strategy="local_chunk", alpha=-1), "alpha must be a number in [0.0, 1.0]"),
        (dict(strategy="local_chunk", k=0), "k must be an integer >= 1, got 0"),
        (dict(strategy="local_chunk", k=1.5), "k must be an integer >= 1"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError) as info:
            compute_token_weights(**{"waad": w, "response_mask": mask, **kwargs})
        assert message in str(info.value) and "\n" not in str(info.value), (kwargs, str(info.value))
    with pytest.raises(ValueError, match="sign must be one of both, positive, negative, got 'pos'"):
        token_advantages(torch.zeros(3), torch.ones(3, N), mask, sign="pos")
    with pytest.raises(ValueError, match="normalize must be one of none, mean_one"):
        token_advantages(torch.zeros(3), torch.ones(3, N), mask, normalize="l1")


def test_statistics_checks():
    w, mask = rows(SAWTOOTH), response_mask()
    bad = w.clone()
    bad[1, 7] = float("nan")  # inside row 1's response [4, 14)
    with pytest.raises(ValueError, match=r"waad has 1 NaN/inf value\(s\) .*\(first: row 1, position 7"):
        compute_token_weights("local_chunk", waad=bad, response_mask=mask)
    bad[1, 7] = float("inf")
    with pytest.raises(ValueError, match="fai has 1 NaN/inf"):
        compute_token_weights("coupled", waad=w, fai=bad, response_mask=mask)
    # Not read, so not checked: a NaN statistic the strategy does not use.
    compute_token_weights("local_chunk", waad=w, entropy=bad, response_mask=mask)
    with pytest.raises(ValueError, match="waad must be a real tensor shaped"):
        compute_token_weights("local_chunk", waad=w[:, :-1], response_mask=mask)
    split = mask.clone()
    split[2, 0] = True
    with pytest.raises(ValueError, match="response_mask row 2 is not one contiguous run"):
        compute_token_weights("local_chunk", waad=w, response_mask=split)
    with pytest.raises(ValueError, match="only 0 and 1"):
        compute_token_weights("local_chunk", waad=w, response_mask=mask * 2)
    as_int = compute_token_weights("local_chunk", waad=w, response_mask=mask.long())
    torch.testing.assert_close(as_int, compute_token_weights("local_chunk", waad=w, response_mask=mask))


@pytest.fixture
def scratch_registry():
    before = dict(STRATEGIES)
    yield
    STRATEGIES.clear()
    STRATEGIES.update(before)


def test_register_a_custom_strategy(scratch_registry):
    @register_strategy("low_waad", requires=("waad",))
    def low_waad(batch, *, selection="bottom"):
        chosen = top_quantile_mask(batch.waad, batch.response, batch.top_quantile, largest=selection == "top")
        return torch.where(chosen, batch.gamma_amp, 1.0)

    assert "low_waad" in list_strategies() and STRATEGIES["low_waad"].options == {"selection": "bottom"}
    assert required_statistics("low_waad") == ("waad",) and required_statistics("coupled") == ("waad", "fai")
    with pytest.raises(ValueError, match="unknown credit strategy 'x'"):
        required_statistics("x")
    w, mask = rows(SAWTOOTH), response_mask()
    # Lowest 4 WAAD: 1 (t1), 1 (t5), 1 (t8), then 1.25 (t9).
    torch.testing.assert_close(compute_token_weights("low_waad", waad=w, response_mask=mask), selected({1, 5, 8, 9}))
    with pytest.raises(ValueError, match="allowed: selection"):
        compute_token_weights("low_waad", waad=w, response_mask=mask, k_max=2)
    with pytest.raises(ValueError, match="already registered"):
        register_strategy("low_waad")(lambda batch: batch.response.double())
    with pytest.raises(TypeError, match=r"fn\(batch, \*, option=default"):
        register_strategy("positional")(lambda batch, q: batch.response.double())
    with pytest.raises(ValueError, match="unknown statistics"):
        register_strategy("bad", requires=("attention",))


def test_credit_summaries_are_means_over_completion_tokens_without_boolean_indexing():
    """The logged per-chunk means read completion tokens only, whatever the other positions hold (NaN included),
    and equal the boolean-indexed means they replaced (which made the host wait for the GPU)."""
    from host_reads import HostReads

    from attncredit.callbacks import CreditChunk, CreditLoggingCallback

    g = torch.Generator().manual_seed(0)
    mask = torch.rand(5, 9, generator=g) > 0.4
    gamma = torch.where(torch.rand(5, 9, generator=g) > 0.5, 1.0, 1.5)
    waad = torch.rand(5, 9, generator=g).masked_fill(~mask, float("nan"))
    fai = torch.rand(5, 9, generator=g).masked_fill(~mask, float("inf"))
    logger = CreditLoggingCallback(trainer=None)
    with HostReads() as reads:
        logger.on_credit(CreditChunk(completion_ids=None, completion_mask=mask.long(), gamma=gamma, waad=waad,
                                     fai=fai, groups=object(), clock=None, seconds=0.0, rollout=True))
    assert reads.sites == []  # the summaries stay on the device until a logging step
    (summary,) = logger._summaries
    n = mask.sum()
    want = {"amplified_frac": (gamma[mask] != 1).sum() / n, "gamma_mean": gamma[mask].sum() / n,
            "waad_mean": waad[mask].sum() / n, "fai_mean": fai[mask].sum() / n}
    assert set(summary) == set(want)
    for name, value in want.items():
        assert torch.isfinite(summary[name]) and float(summary[name]) == pytest.approx(float(value), rel=1e-6), name


def test_deferred_checks_read_once_and_raise_the_first_failure_in_order():
    from attncredit.deferred import DeferredChecks

    checks = DeferredChecks()
    checks.verify()  # nothing pending: nothing to read
    checks.add(torch.tensor(False), lambda: ValueError("never"))
    checks.add(torch.tensor([True]), lambda: ValueError("second"))  # one element: read like a scalar
    checks.add(torch.tensor(True), lambda: KeyError("third"))
    assert len(checks) == 3
    with pytest.raises(ValueError, match="^second$"):
        checks.verify()
    assert len(checks) == 0  # read once: a later verify does not raise the same failure again
    checks.verify()
    checks.add(torch.tensor(True), lambda: ValueError("dropped"))
    checks.clear()
    checks.verify()


def test_statistics_checks_deferred_raise_on_verify_with_the_same_messages():
    """With ``checks``, compute_token_weights returns gamma without reading the values' checks; verify() raises what
    the immediate call raises, and good inputs give the same gamma."""
    from attncredit.deferred import DeferredChecks

    w, mask = rows(SAWTOOTH), response_mask()
    bad = w.clone()
    bad[1, 7] = float("nan")
    split = mask.clone()
    split[2, 0] = True
    cases = [
        (dict(strategy="local_chunk", waad=bad, response_mask=mask),
         r"waad has 1 NaN/inf value\(s\) .*row 1, position 7"),
        (dict(strategy="local_chunk", waad=w, response_mask=split), "response_mask row 2 is not one contiguous run"),
        (dict(strategy="local_chunk", waad=w, response_mask=mask * 2), "only 0 and 1"),
    ]
    for kwargs, message in cases:
        checks = DeferredChecks()
        gamma = compute_token_weights(**kwargs, checks=checks)
        assert gamma.shape == w.shape and len(checks) >= 1
        with pytest.raises(ValueError, match=message):
            checks.verify()
        with pytest.raises(ValueError, match=message):
            compute_token_weights(**kwargs)
    checks = DeferredChecks()
    gamma = compute_token_weights("coupled", waad=w, fai=w, response_mask=mask, checks=checks)
    checks.verify()
    torch.testing.assert_close(gamma, compute_token_weights("coupled", waad=w, fai=w, response_mask=mask))
