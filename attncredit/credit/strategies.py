"""The built-in credit strategies (docs/method.md, Credit strategies): ``none``, ``random``, ``entropy``, ``local_chunk``,
``global_anchor`` and ``coupled``.

Each returns gamma [B, N] >= 1 for the response tokens; ``compute_token_weights`` sets it to exactly 1
elsewhere. "TopQ" is per response: the ``ceil(q * n)`` of its n tokens with the largest score, ties to the
earlier position (``selection.top_quantile_mask``). A selected token gets ``gamma_amp``, i.e.
``1 + (gamma_amp - 1)``, every other token 1 (Eq. 15, 17). ``selection="bottom"`` selects the
``ceil(q * n)`` smallest scores instead: the Bottom-40% ablation of the paper's Table 5.
"""

from __future__ import annotations

import numbers

import torch

from ..errors import ConfigError
from .registry import CreditBatch, register_strategy
from .selection import response_lower_median, shift_right, top_quantile_mask

SELECTIONS = ("top", "bottom")
OVERLAP_RULES = ("sum", "cap")


def _check_choice(option: str, value, allowed: tuple) -> None:
    if value not in allowed:
        raise ConfigError(f"{option} must be one of {', '.join(map(repr, allowed))}, got {value!r}")


def _check_threshold(option: str, value, keyword: str) -> None:
    """A threshold option is ``keyword`` (a per-response rule) or a finite real number."""
    if value != keyword and not (
        isinstance(value, numbers.Real) and not isinstance(value, bool) and abs(float(value)) < float("inf")
    ):
        raise ConfigError(f"{option} must be {keyword!r} or a finite number, got {value!r}")


def _ranked(score: torch.Tensor, batch: CreditBatch, selection: str) -> torch.Tensor:
    """gamma of Eq. 15 / 17: ``gamma_amp`` on TopQ(score) (BottomQ for ``selection="bottom"``), else 1."""
    _check_choice("selection", selection, SELECTIONS)
    chosen = top_quantile_mask(score, batch.response, batch.top_quantile, largest=selection == "top")
    return torch.where(chosen, batch.gamma_amp, 1.0)


def chunk_delta(waad: torch.Tensor, response: torch.Tensor) -> torch.Tensor:
    """Eq. 14: ``Delta_t = |WAAD_t - WAAD_{t+1}|`` for t and t+1 both in the response; 0 for the last
    response token (no successor; docs/method.md) and outside the response."""
    both = torch.zeros_like(response)
    both[:, :-1] = response[:, :-1] & response[:, 1:]
    diff = torch.zeros_like(waad)
    diff[:, :-1] = (waad[:, :-1] - waad[:, 1:]).abs()
    return torch.where(both, diff, 0.0)


@register_strategy("none")
def none(batch: CreditBatch) -> torch.Tensor:
    """Plain GRPO: gamma = 1 everywhere."""
    return torch.ones(batch.response.shape, dtype=torch.float64, device=batch.response.device)


@register_strategy("random")
def random(batch: CreditBatch) -> torch.Tensor:
    """Random credit: a uniformly random ``ceil(q * n)``-subset of each response gets ``gamma_amp``.

    The scores are drawn with ``batch.generator`` on the generator's device (the default CPU generator
    when None), so a seeded CPU generator gives the same tokens on every device.
    """
    device = batch.generator.device if batch.generator is not None else "cpu"
    score = torch.rand(batch.response.shape, generator=batch.generator, device=device)
    return _ranked(score.to(batch.response.device), batch, "top")


@register_strategy("entropy", requires=("entropy",))
def entropy(batch: CreditBatch, *, selection: str = "top") -> torch.Tensor:
    """High-entropy credit: ``gamma_t = 1 + (gamma_amp - 1) 1{t in TopQ(H_t, q)}``."""
    return _ranked(batch.entropy, batch, selection)


@register_strategy("local_chunk", requires=("waad",))
def local_chunk(batch: CreditBatch, *, selection: str = "top") -> torch.Tensor:
    """Local-chunk credit: ``T_loc = TopQ(Delta_t, q)`` with ``Delta_t = |WAAD_t - WAAD_{t+1}|``
    (Eq. 14), ``gamma_t = 1 + (gamma_amp - 1) 1{t in T_loc}`` (Eq. 15)."""
    return _ranked(chunk_delta(batch.waad, batch.response), batch, selection)


@register_strategy("global_anchor", requires=("fai",))
def global_anchor(batch: CreditBatch, *, selection: str = "top") -> torch.Tensor:
    """Global-anchor credit: ``T_glob = TopQ(FAI_t, q)`` (Eq. 16),
    ``gamma_t = 1 + (gamma_amp - 1) 1{t in T_glob}`` (Eq. 17).

    Tokens with no receiver rows (the last H_lo response tokens) have FAI = 0, the lowest possible value,
    so they are selected only when fewer than ``ceil(q * n)`` tokens have a positive FAI.
    """
    return _ranked(batch.fai, batch, selection)


@register_strategy("coupled", requires=("waad", "fai"))
def coupled(
    batch: CreditBatch,
    *,
    selection: str = "top",
    tau_waad="median",
    tau_delta="top_quantile",
    coupled_overlap: str = "sum",
) -> torch.Tensor:
    """Coupled rhythm credit (Eq. 18-19, with the readings of docs/method.md).

    * anchors ``T_glob = TopQ(FAI, q)`` (Eq. 16; BottomQ for ``selection="bottom"``);
    * ``Delta`` as in Eq. 14; the predecessors of s are ``P(s) = {s-k, ..., s-1}`` within the response;
    * an anchor s is locally dominated, ``s in D`` (Eq. 18), if ``WAAD_s <= tau_waad`` and
      ``max_{u in P(s)} Delta_u >= tau_Delta`` with that maximum > 0 (a zero change is no jump);
      the first response token has no predecessor and is never dominated;
    * ``intro(s) = argmax_{u in P(s)} Delta_u``, ties to the earlier position; ``I(D) = {intro(s) : s in D}``,
      so an intro token shared by several anchors counts once;
    * Eq. 19: ``gamma_t = 1 + a 1{t in T_glob \\ D} + (1 - alpha) a 1{t in D} + alpha a 1{t in I(D)}``,
      ``a = gamma_amp - 1``.

    Options:
      tau_waad: ``"median"`` (default): the response's lower median of WAAD; or a number (absolute WAAD).
      tau_delta: ``"top_quantile"`` (default): the smallest Delta in TopQ(Delta, q), i.e. T_loc of Eq. 14,
        so every intro token is a preplan token (+inf when T_loc is empty); or a number.
      coupled_overlap: how the Eq. 19 terms combine on a token in two roles (an intro token that is also
        an anchor). ``"sum"`` (default): Eq. 19 literally, e.g. 1 + a + alpha a for an intro token that
        is a non-dominated anchor; ``"cap"``: the same, clipped at ``gamma_amp``.
    """
    _check_choice("selection", selection, SELECTIONS)
    _check_threshold("tau_waad", tau_waad, "median")
    _check_threshold("tau_delta", tau_delta, "top_quantile")
    _check_choice("coupled_overlap", coupled_overlap, OVERLAP_RULES)
    resp, waad, q = batch.response, batch.waad, batch.top_quantile

    anchors = top_quantile_mask(batch.fai, resp, q, largest=selection == "top")
    delta = chunk_delta(waad, resp)
    if tau_delta == "top_quantile":
        preplans = top_quantile_mask(delta, resp, q)
        tau_d = delta.masked_fill(~preplans, float("inf")).amin(dim=1)
    else:
        tau_d = torch.full(resp.shape[:1], float(tau_delta), dtype=delta.dtype, device=delta.device)
    if tau_waad == "median":
        tau_w = response_lower_median(waad, resp)
    else:
        tau_w = torch.full(resp.shape[:1], float(tau_waad), dtype=waad.dtype, device=waad.device)

    # Running argmax of Delta over P(s), visiting the earliest predecessor first so that ties keep it.
    best = torch.full_like(delta, float("-inf"))
    best_offset = torch.zeros(resp.shape, dtype=torch.long, device=resp.device)
    for offset in range(batch.k, 0, -1):
        valid = resp & shift_right(resp, offset, False)
        candidate = shift_right(delta, offset, float("-inf")).masked_fill(~valid, float("-inf"))
        better = candidate > best
        best = torch.where(better, candidate, best)
        best_offset = torch.where(better, offset, best_offset)

    dominated = anchors & (waad <= tau_w[:, None]) & (best >= tau_d[:, None]) & (best > 0)
    intro = torch.zeros_like(resp)
    for offset in range(1, min(batch.k, resp.shape[1] - 1) + 1):
        intro[:, :-offset] |= (dominated & (best_offset == offset))[:, offset:]

    a, alpha = batch.gamma_amp - 1.0, batch.alpha
    undominated, dominated, intro = (anchors & ~dominated).double(), dominated.double(), intro.double()
    gamma = 1.0 + a * undominated + (1.0 - alpha) * a * dominated + alpha * a * intro
    return gamma.clamp(max=batch.gamma_amp) if coupled_overlap == "cap" else gamma
