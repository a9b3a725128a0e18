"""The perturbation test of Table 1 of the paper (Eq. 11): are high-FAI tokens the ones the rest depends on?
(Definitions: "Analysis definitions" in ``docs/method.md``.)

For one response o and a position i*, each of the ``alternatives`` most likely next tokens v != o_{i*} of
``p(. | q, o_<i*)`` (the distribution that sampled o_{i*}) is forced at i* and the text is continued greedily
for at most ``max_tokens`` tokens. The continuation is compared with the original one by the Jaccard overlap of
their content-word sets (Eq. 11):

    J = |S(o_{>i*}) ∩ S(õ^v_{>i*})| / |S(o_{>i*}) ∪ S(õ^v_{>i*})|

where both continuations are cut to the same number of tokens (``max_tokens``, or fewer when the original response
ends earlier), and S(text) is the set of lowercased alphanumeric words of the text minus :data:`STOP_WORDS` (J = 1
when both sets are empty). Positions: the top-K and the bottom-K FAI tokens of the response among those with an
FAI and at least ``min_following`` tokens after them (the script uses ``min_following = max_tokens``, so every
compared continuation is full length and the end of the response, where FAI averages over few receivers, is out).
Per response, the mean J at its top positions and at its bottom positions; the test reports the mean J of each
and ``Pr(top < bottom)`` over responses (paper: 0.534 vs 0.631, 87.14% on 70 problems; K not given).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

#: Small English stop-word list (function words that carry no content).
STOP_WORDS = frozenset(
    """a an the and or but if then so of to in on at by for with from as is are was were be been being am it its
    this that these those there here he she they we you i me my your his her their our them us him what which who
    whom whose when where why how all any each both few more most other some such no nor not only own same than
    too very can will just do does did doing have has had having would should could may might must shall into
    over under again further once about above below up down out off also let lets""".split()
)
_WORD = re.compile(r"[a-z0-9]+")

PAPER_TABLE1 = {"top_jaccard": 0.534, "bottom_jaccard": 0.631, "pr_top_lt_bottom": 0.8714}


def content_words(text: str) -> set[str]:
    """Lowercased alphanumeric words of ``text`` without stop words."""
    return {w for w in _WORD.findall(text.lower()) if w not in STOP_WORDS}


def jaccard(a: set, b: set) -> float:
    """``|a ∩ b| / |a ∪ b|``; 1.0 when both are empty."""
    union = a | b
    return 1.0 if not union else len(a & b) / len(union)


def fai_positions(fai, eligible, k: int) -> tuple[list[int], list[int]]:
    """(top-k, bottom-k) positions of ``fai`` among ``eligible`` (disjoint; ties to the earlier position)."""
    fai = np.asarray(fai, dtype=np.float64)
    idx = np.flatnonzero(np.asarray(eligible, dtype=bool) & np.isfinite(fai))
    if idx.size == 0 or k < 1:
        return [], []
    order = idx[np.argsort(-fai[idx], kind="stable")]
    k = min(k, idx.size // 2) if idx.size >= 2 else 1
    top = sorted(order[:k].tolist())
    ascending = idx[np.argsort(fai[idx], kind="stable")]
    bottom = sorted([int(j) for j in ascending if j not in set(top)][:k])
    return top, bottom


@dataclass
class PerturbedPosition:
    position: int
    fai: float
    original_token: str
    alternatives: list[str]
    jaccards: list[float]


@dataclass
class ResponsePerturbation:
    top: list[PerturbedPosition] = field(default_factory=list)
    bottom: list[PerturbedPosition] = field(default_factory=list)

    @property
    def top_mean(self) -> float:
        vals = [j for p in self.top for j in p.jaccards]
        return float(np.mean(vals)) if vals else float("nan")

    @property
    def bottom_mean(self) -> float:
        vals = [j for p in self.bottom for j in p.jaccards]
        return float(np.mean(vals)) if vals else float("nan")


def perturb_response(
    generator,
    prompt_ids: list[int],
    response_ids: list[int],
    fai,
    eligible,
    candidates,
    *,
    k: int = 2,
    alternatives: int = 3,
    max_tokens: int = 48,
    min_following: int = 8,
    batch_size: int | None = None,
) -> ResponsePerturbation:
    """Run the perturbation test on one response (see the module docstring).

    ``generator``: an ``attncredit.evaluation.generate`` generator (its tokenizer decodes, its end tokens end a
    continuation); ``candidates`` [n, m]: the most likely tokens of the distribution that sampled each response
    token (``RhythmForward.candidates``); the first ``alternatives`` of them that differ from the original token
    are forced. The greedy continuations run through ``generator.generate``, ``batch_size`` at a time (default:
    all of the response's continuations in one batch).
    """
    from ..evaluation.generate import SamplingSettings

    tokenizer = generator.tokenizer
    eos = list(generator.end_ids)
    n = len(response_ids)
    room = np.arange(n) < n - min_following
    top, bottom = fai_positions(fai, np.asarray(eligible, dtype=bool) & room, k)
    jobs = []  # (entry, position, forced token)
    result = ResponsePerturbation()
    for group, positions in (("top", top), ("bottom", bottom)):
        for pos in positions:
            alts = [int(c) for c in candidates[pos] if int(c) != response_ids[pos]][:alternatives]
            entry = PerturbedPosition(
                position=pos,
                fai=float(fai[pos]),
                original_token=tokenizer.decode([response_ids[pos]]),
                alternatives=[tokenizer.decode([a]) for a in alts],
                jaccards=[],
            )
            getattr(result, group).append(entry)
            jobs.extend((entry, pos, a) for a in alts)
    if not jobs:
        return result
    greedy = SamplingSettings(n=1, temperature=0.0, max_new_tokens=max_tokens)
    seqs = [list(prompt_ids) + list(response_ids[:pos]) + [alt] for _, pos, alt in jobs]
    continuations = generator.generate(seqs, greedy, batch_size=batch_size or len(seqs))
    for (entry, pos, _), [sample] in zip(jobs, continuations):
        original = _until_eos(response_ids[pos + 1 : pos + 1 + max_tokens], eos)
        # compare equal token budgets: a continuation cut short by the response's end is not compared with
        # a longer greedy one
        new = _until_eos(sample.token_ids, eos)[: max(len(original), 1)]
        a = content_words(tokenizer.decode(original, skip_special_tokens=True))
        b = content_words(tokenizer.decode(new, skip_special_tokens=True))
        entry.jaccards.append(jaccard(a, b))
    return result


def _until_eos(ids: list[int], eos: list[int]) -> list[int]:
    for j, t in enumerate(ids):
        if t in eos:
            return ids[:j]
    return ids


def summarize(results: list[ResponsePerturbation]) -> dict:
    """Mean Jaccard at top / bottom FAI positions (pooled over all forced alternatives) and Pr(top < bottom) over
    responses with both (ties count half)."""
    tops = [j for r in results for p in r.top for j in p.jaccards]
    bottoms = [j for r in results for p in r.bottom for j in p.jaccards]
    pairs = [(r.top_mean, r.bottom_mean) for r in results if np.isfinite(r.top_mean) and np.isfinite(r.bottom_mean)]
    wins = sum(1.0 if t < b else 0.5 if t == b else 0.0 for t, b in pairs)
    return {
        "top_jaccard": float(np.mean(tops)) if tops else None,
        "bottom_jaccard": float(np.mean(bottoms)) if bottoms else None,
        "pr_top_lt_bottom": wins / len(pairs) if pairs else None,
        "responses": len(pairs),
        "ties": sum(1 for t, b in pairs if t == b),
        "continuations": len(tops) + len(bottoms),
    }
