"""The three coupling statistics of Table 2 of the paper (its App. A.1), with their random baselines and lifts.
Definitions and the readings taken: "Analysis definitions" in ``docs/method.md``.

Per response, with peaks from a :class:`~attncredit.analysis.peaks.PeakRule`:

(i) **WAAD-peak entropy.** Observed: mean predictive entropy at WAAD peaks. Random: mean entropy over all response
    tokens. (Entropy of token t is the entropy of the distribution that sampled it, ``p(. | q, o_<t)``.)
(ii) **Receiver / global FAI co-occurrence.** Receiver heads (Thought Anchors, Bogdan et al. 2025) are the heads
    whose per-token FAI (the mean attention a token receives from later response rows: a column mean) has the
    highest excess kurtosis over the response's tokens, i.e. heads that pour attention into a few tokens. Observed:
    share of the peaks of the receiver heads' mean FAI that are also peaks of the global group's FAI. Random: the
    share of tokens that are global-FAI peaks (the hit rate of a receiver peak placed at random).
(iii) **FAI follows / coincides with WAAD.** Observed: share of global-FAI peaks s with a WAAD peak at s or
    s - 1 (``max_lag`` = 1: "immediately follows"). Random: the same share after moving the FAI peaks to random
    eligible positions of the same response (their count kept), averaged over seeded shuffles.

Every statistic is pooled over responses (sums of numerators over sums of denominators, so long responses weigh
more, as with tokens pooled over 70 problems in the paper). ``Lift = (Observed - Random) / Random``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np

from .peaks import PeakRule

#: The paper's Table 2 (Qwen3-4B-Base, 70 GSM8K problems): (random, observed, lift).
PAPER_TABLE2 = {
    "waad_peak_entropy": (0.2386, 0.3608, 0.5197),
    "receiver_global_fai_cooccurrence": (0.2241, 0.6084, 1.7149),
    "fai_follows_waad": (0.3687, 0.5253, 0.4247),
}
TABLE2_TITLES = {
    "waad_peak_entropy": "Average entropy of the WAAD peaks",
    "receiver_global_fai_cooccurrence": "FAI peak of receiver & global heads co-occurrence",
    "fai_follows_waad": "FAI peak follows/coincides with WAAD peak",
}


def lift(observed: float | None, random: float | None) -> float | None:
    """``(observed - random) / random``; None when either is missing or ``random`` is 0."""
    if observed is None or random is None or random == 0 or not np.isfinite(observed) or not np.isfinite(random):
        return None
    return (observed - random) / random


def cooccurrence(receiver_peaks, global_peaks) -> tuple[int, int]:
    """(receiver peaks that are also global peaks, receiver peaks)."""
    r = np.asarray(receiver_peaks, dtype=bool)
    g = np.asarray(global_peaks, dtype=bool)
    return int((r & g).sum()), int(r.sum())


def follows_or_coincides(fai_peaks, waad_peaks, max_lag: int = 1) -> int:
    """How many FAI peaks s have a WAAD peak at some u with ``s - max_lag <= u <= s``."""
    f = np.asarray(fai_peaks, dtype=bool)
    w = np.asarray(waad_peaks, dtype=bool)
    near = w.copy()
    for lag in range(1, max_lag + 1):
        near[lag:] |= w[:-lag]
    return int((f & near).sum())


def shuffled_follows_or_coincides(
    fai_peaks, waad_peaks, eligible, rng: np.random.Generator, shuffles: int = 100, max_lag: int = 1
) -> float:
    """Mean of :func:`follows_or_coincides` over ``shuffles`` random placements of the FAI peaks on ``eligible``
    positions (the same number of peaks, distinct positions)."""
    f = np.asarray(fai_peaks, dtype=bool)
    idx = np.flatnonzero(np.asarray(eligible, dtype=bool))
    count = int(f.sum())
    if count == 0 or shuffles < 1:
        return 0.0
    if count > idx.size:
        raise ValueError(f"{count} FAI peaks but only {idx.size} eligible positions")
    total = 0
    for _ in range(shuffles):
        moved = np.zeros_like(f)
        moved[rng.choice(idx, size=count, replace=False)] = True
        total += follows_or_coincides(moved, waad_peaks, max_lag)
    return total / shuffles


def excess_kurtosis(x, axis: int = -1) -> np.ndarray:
    """Fisher (excess) kurtosis ``E[(x - mu)^4] / var^2 - 3`` along ``axis``; -3 for a constant row."""
    x = np.asarray(x, dtype=np.float64)
    centred = x - x.mean(axis=axis, keepdims=True)
    var = (centred**2).mean(axis=axis)
    fourth = (centred**4).mean(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        k = np.where(var > 0, fourth / np.where(var > 0, var, 1.0) ** 2, 0.0)
    return k - 3.0


def receiver_heads(per_head_fai, eligible, count: int) -> np.ndarray:
    """Bool [H] mask of the ``count`` heads with the highest excess kurtosis of their FAI over ``eligible`` tokens.

    ``per_head_fai`` is [H, n]: row h is head h's FAI_s (column means of its attention over later response rows).
    Ties go to the lower head index.
    """
    a = np.asarray(per_head_fai, dtype=np.float64)
    cols = np.asarray(eligible, dtype=bool)
    mask = np.zeros(a.shape[0], dtype=bool)
    if cols.sum() < 2 or count < 1:
        mask[: max(count, 0)] = True
        return mask
    k = excess_kurtosis(a[:, cols], axis=1)
    order = np.argsort(-k, kind="stable")
    mask[order[: min(count, a.shape[0])]] = True
    return mask


@dataclass
class ResponseCoupling:
    """Per-response counts behind Table 2 (pooled by :func:`table2`)."""

    entropy_at_peaks: float = 0.0  # sum of entropy over WAAD peaks
    waad_peaks: int = 0
    entropy_all: float = 0.0  # sum of entropy over all response tokens
    tokens: int = 0
    next_entropy_at_peaks: float = 0.0  # same with the entropy of the distribution a token predicts (row t)
    next_waad_peaks: int = 0
    next_entropy_all: float = 0.0
    next_tokens: int = 0
    receiver_on_global: int = 0  # (ii) receiver-FAI peaks that are global-FAI peaks
    receiver_peaks: int = 0
    global_peaks: int = 0  # global-FAI peaks (== fai_peaks)
    fai_tokens: int = 0  # tokens with an FAI (at least one receiver row)
    fai_follow: int = 0  # (iii) FAI peaks with a WAAD peak at s or s-1
    fai_follow_shuffled: float = 0.0  # mean of the same over shuffles

    def __add__(self, other: ResponseCoupling) -> ResponseCoupling:
        return ResponseCoupling(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})

    def as_dict(self) -> dict:
        return asdict(self)


def response_coupling(
    *,
    waad,
    fai,
    receiver_fai,
    entropy,
    fai_eligible,
    rule: PeakRule,
    rng: np.random.Generator,
    shuffles: int = 100,
    next_entropy=None,
    max_lag: int = 1,
) -> tuple[ResponseCoupling, dict]:
    """Table 2 counts of one response (arrays [n] over its tokens) and its peak masks.

    WAAD peaks are taken over all n tokens; FAI peaks (global and receiver) over ``fai_eligible`` tokens (those
    with at least one receiver row). ``next_entropy`` (optional, NaN where undefined) gives the variant of (i)
    with the entropy the token's own row predicts.
    """
    waad = np.asarray(waad, dtype=np.float64)
    n = waad.shape[0]
    entropy = np.asarray(entropy, dtype=np.float64)
    eligible = np.asarray(fai_eligible, dtype=bool)
    for name, arr in (("fai", fai), ("receiver_fai", receiver_fai), ("entropy", entropy), ("fai_eligible", eligible)):
        if np.shape(arr) != (n,):
            raise ValueError(f"{name} must have shape ({n},) like waad, got {np.shape(arr)}")
    waad_peaks = rule.find(waad)
    global_peaks = rule.find(fai, eligible)
    receiver_peaks = rule.find(receiver_fai, eligible)
    c = ResponseCoupling()
    finite = np.isfinite(entropy)
    c.entropy_at_peaks = float(entropy[waad_peaks & finite].sum())
    c.waad_peaks = int((waad_peaks & finite).sum())
    c.entropy_all = float(entropy[finite].sum())
    c.tokens = int(finite.sum())
    if next_entropy is not None:
        nxt = np.asarray(next_entropy, dtype=np.float64)
        ok = np.isfinite(nxt)
        c.next_entropy_at_peaks = float(nxt[waad_peaks & ok].sum())
        c.next_waad_peaks = int((waad_peaks & ok).sum())
        c.next_entropy_all = float(nxt[ok].sum())
        c.next_tokens = int(ok.sum())
    c.receiver_on_global, c.receiver_peaks = cooccurrence(receiver_peaks, global_peaks)
    c.global_peaks = int(global_peaks.sum())
    c.fai_tokens = int(eligible.sum())
    c.fai_follow = follows_or_coincides(global_peaks, waad_peaks, max_lag)
    c.fai_follow_shuffled = shuffled_follows_or_coincides(global_peaks, waad_peaks, eligible, rng, shuffles, max_lag)
    return c, {"waad_peaks": waad_peaks, "fai_peaks": global_peaks, "receiver_peaks": receiver_peaks}


def _ratio(num: float, den: float) -> float | None:
    return float(num) / float(den) if den else None


def _metric(random, observed, **counts) -> dict:
    return {"random": random, "observed": observed, "lift": lift(observed, random), **counts}


def table2(total: ResponseCoupling) -> dict:
    """The three Table 2 rows (and the next-token entropy variant) from pooled counts."""
    return {
        "waad_peak_entropy": _metric(
            _ratio(total.entropy_all, total.tokens),
            _ratio(total.entropy_at_peaks, total.waad_peaks),
            waad_peaks=total.waad_peaks,
            tokens=total.tokens,
        ),
        "receiver_global_fai_cooccurrence": _metric(
            _ratio(total.global_peaks, total.fai_tokens),
            _ratio(total.receiver_on_global, total.receiver_peaks),
            receiver_peaks=total.receiver_peaks,
            overlapping=total.receiver_on_global,
            global_peaks=total.global_peaks,
            tokens=total.fai_tokens,
        ),
        "fai_follows_waad": _metric(
            _ratio(total.fai_follow_shuffled, total.global_peaks),
            _ratio(total.fai_follow, total.global_peaks),
            fai_peaks=total.global_peaks,
            following=total.fai_follow,
        ),
        "waad_peak_next_token_entropy": _metric(
            _ratio(total.next_entropy_all, total.next_tokens),
            _ratio(total.next_entropy_at_peaks, total.next_waad_peaks),
            waad_peaks=total.next_waad_peaks,
            tokens=total.next_tokens,
        ),
    }


__all__ = [
    "PAPER_TABLE2",
    "TABLE2_TITLES",
    "ResponseCoupling",
    "cooccurrence",
    "excess_kurtosis",
    "follows_or_coincides",
    "lift",
    "receiver_heads",
    "response_coupling",
    "shuffled_follows_or_coincides",
    "table2",
]
