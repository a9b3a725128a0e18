"""Per-response rhythm statistics: traces, selected preplan / anchor tokens, peaks, gamma, Table 2 counts.

From one :class:`~attncredit.analysis.forward.RhythmForward` of a batch, :func:`analyze_batch` builds one
:class:`ResponseRhythm` per sequence:

* the **analysis** traces, from the head groups of the analysis layers (``--layers``) and the analysis FAI
  horizon: local-group WAAD (Eq. 8-9), global-group FAI (Eq. 8, 10), receiver-head FAI, entropy;
* the **selected** tokens of the training rules on those traces: preplan = TopQ of
  ``Delta_t = |WAAD_t - WAAD_{t+1}|`` (Eq. 14), anchors = TopQ of FAI (Eq. 16), q = ``top_quantile``;
* **gamma** of every credit strategy as the trainer computes it (probe layers, training FAI horizon);
* the Table 2 counts (:mod:`~attncredit.analysis.coupling`) for the analysis layers and, optionally, for
  layer segments (bottom / middle / top third, Table 10 of the paper).

Only response tokens are analysed. A token's FAI exists when at least one response row lies in its receiver
band, i.e. for offsets ``j <= n - 1 - H_lo`` of an n-token response; FAI peaks and anchors are chosen among those.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..attention.groups import group_size, group_token_stats
from ..credit import compute_token_weights, required_statistics
from ..credit import strategies as credit_strategies
from .coupling import ResponseCoupling, receiver_heads, response_coupling
from .forward import RhythmForward
from .peaks import PeakRule, find_peaks


@dataclass
class ResponseRhythm:
    """Everything the plots, pages and summaries show for one response (arrays over its n tokens)."""

    token_ids: list[int]
    waad: np.ndarray
    fai: np.ndarray
    receiver_fai: np.ndarray
    entropy: np.ndarray
    next_entropy: np.ndarray
    fai_eligible: np.ndarray
    delta: np.ndarray
    preplan: np.ndarray
    anchors: np.ndarray
    peaks: dict[str, np.ndarray]
    gammas: dict[str, np.ndarray]
    coupling: ResponseCoupling
    head_distance: np.ndarray  # [n_layers, Hq] over the analysis layers
    local_mask: np.ndarray
    global_mask: np.ndarray
    receiver_mask: np.ndarray
    candidates: np.ndarray  # [n, m] top tokens of the distribution that sampled each token
    segments: dict[str, ResponseCoupling] = field(default_factory=dict)
    band_local: np.ndarray | None = None  # [R, K] group-averaged probabilities
    band_global: np.ndarray | None = None
    tokens: list[str] = field(default_factory=list)
    prompt_length: int = 0

    @property
    def receiver_in_global(self) -> float:
        """Share of the receiver heads that are also global-group heads (how much (ii) shares heads)."""
        recv = self.receiver_mask.astype(bool)
        return float((recv & self.global_mask.astype(bool)).sum() / max(int(recv.sum()), 1))

    @property
    def length(self) -> int:
        return len(self.token_ids)


def chunk_delta(waad) -> np.ndarray:
    """Eq. 14 on one response, in numpy: ``|WAAD_t - WAAD_{t+1}|``, 0 for the last token; computed by the
    training code (``attncredit.credit.strategies.chunk_delta``) on one row that is all response."""
    row = torch.from_numpy(np.asarray(waad, dtype=np.float64).reshape(1, -1))
    return credit_strategies.chunk_delta(row, torch.ones_like(row, dtype=torch.bool))[0].numpy()


def fai_eligible(n: int, h_lo: int) -> np.ndarray:
    """Response offsets whose FAI has at least one receiver row: ``j <= n - 1 - H_lo``."""
    return np.arange(n) <= n - 1 - h_lo


def _per_head_fai(stats, layers, i: int, cols: slice) -> np.ndarray:
    """[n_layers * Hq, n] per-head FAI of sequence i over the response columns."""
    return torch.cat([stats[layer].fai[i, :, cols] for layer in layers]).double().numpy()


def _layer_coupling(stats, layers, i, cols, entropy, next_entropy, eligible, *, quantile, per, receivers, rule, rng,
                    shuffles, groups=None):
    groups = groups or group_token_stats({layer: stats[layer] for layer in layers}, quantile=quantile, per=per)
    per_head = _per_head_fai(stats, layers, i, cols)
    count = receivers or group_size(per_head.shape[0], quantile)
    recv = receiver_heads(per_head, eligible, count)
    receiver_fai = per_head[recv].mean(0)
    waad = groups.waad[i, cols].double().numpy()
    fai = groups.fai[i, cols].double().numpy()
    coupling, peaks = response_coupling(
        waad=waad, fai=fai, receiver_fai=receiver_fai, entropy=entropy, next_entropy=next_entropy,
        fai_eligible=eligible, rule=rule, rng=rng, shuffles=shuffles,
    )
    return groups, recv, waad, fai, receiver_fai, coupling, peaks


def analyze_batch(
    fwd: RhythmForward,
    input_ids: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    layers: list[int],
    credit_layers: list[int],
    fai_lo: int,
    rule: PeakRule,
    rng: np.random.Generator,
    head_quantile: float = 0.3,
    head_grouping: str = "sequence",
    receivers: int | None = None,
    top_quantile: float = 0.4,
    strategies: list[str] | None = None,
    credit_kwargs: dict | None = None,
    credit_generator: torch.Generator | None = None,
    shuffles: int = 100,
    segments: dict[str, list[int]] | None = None,
) -> list[ResponseRhythm]:
    """One :class:`ResponseRhythm` per sequence of the batch (see the module docstring).

    ``layers``: the analysis layers; ``credit_layers``: the probe layers of the training-time gamma (their
    statistics are ``fwd.credit_stats``); ``receivers``: receiver heads per response (default: the global group's
    size); ``segments``: optional name -> layers for per-segment Table 2 counts.
    """
    response = response_mask.bool().cpu()
    entropy_t = fwd.entropy
    strategies = list(strategies or [])
    gammas = {}
    if strategies:
        credit_groups = group_token_stats(fwd.credit_stats, quantile=head_quantile, per=head_grouping)
        for name in strategies:
            needs = required_statistics(name)
            gammas[name] = compute_token_weights(
                name,
                waad=credit_groups.waad if "waad" in needs else None,
                fai=credit_groups.fai if "fai" in needs else None,
                entropy=entropy_t.nan_to_num(0.0) if "entropy" in needs else None,
                response_mask=response,
                top_quantile=top_quantile,
                generator=credit_generator,
                **(credit_kwargs or {}),
            ).numpy()
    groups = group_token_stats({layer: fwd.stats[layer] for layer in layers}, quantile=head_quantile, per=head_grouping)
    segment_groups = {
        name: group_token_stats({layer: fwd.stats[layer] for layer in seg}, quantile=head_quantile, per=head_grouping)
        for name, seg in (segments or {}).items()
    }
    out = []
    for i in range(input_ids.shape[0]):
        pos = response[i].nonzero().flatten()
        if pos.numel() == 0:
            out.append(None)
            continue
        first, last = int(pos[0]), int(pos[-1]) + 1
        cols = slice(first, last)
        n = last - first
        eligible = fai_eligible(n, fai_lo)
        entropy = fwd.entropy[i, cols].double().numpy()
        next_entropy = fwd.next_entropy[i, cols].double().numpy().copy()
        next_entropy[-1] = np.nan  # the last response row predicts past the response
        _, recv, waad, fai, receiver_fai, coupling, peaks = _layer_coupling(
            fwd.stats, layers, i, cols, entropy, next_entropy, eligible, quantile=head_quantile, per=head_grouping,
            receivers=receivers, rule=rule, rng=rng, shuffles=shuffles, groups=groups,
        )
        seg_counts = {}
        for name, seg in (segments or {}).items():
            seg_counts[name] = _layer_coupling(
                fwd.stats, seg, i, cols, entropy, next_entropy, eligible, quantile=head_quantile, per=head_grouping,
                receivers=None, rule=rule, rng=rng, shuffles=shuffles, groups=segment_groups[name],
            )[5]
        delta = chunk_delta(waad)
        hq = fwd.stats[layers[0]].fai.shape[1]
        rhythm = ResponseRhythm(
            token_ids=input_ids[i, cols].tolist(),
            waad=waad,
            fai=fai,
            receiver_fai=receiver_fai,
            entropy=entropy,
            next_entropy=next_entropy,
            fai_eligible=eligible,
            delta=delta,
            preplan=find_peaks(delta, method="top_quantile", quantile=top_quantile),
            anchors=find_peaks(fai, eligible, method="top_quantile", quantile=top_quantile),
            peaks=peaks,
            gammas={name: g[i, cols].astype(np.float64) for name, g in gammas.items()},
            coupling=coupling,
            head_distance=groups.head_distance[i].double().numpy(),
            local_mask=groups.local_mask[i].numpy(),
            global_mask=groups.global_mask[i].numpy(),
            receiver_mask=recv.reshape(len(layers), hq),
            candidates=fwd.candidates[i, cols].numpy(),
            segments=seg_counts,
        )
        if fwd.bands and fwd.bands[i]:
            rhythm.band_local, rhythm.band_global = group_bands(fwd.bands[i], layers, groups, i)
        out.append(rhythm)
    return out


def group_bands(bands: dict[int, torch.Tensor], layers: list[int], groups, i: int):
    """Eq. 8 on the heatmap bands: mean over the local / global heads of sequence i ([R, K] each).

    Layers without a band (not among ``bands``) are skipped; the mean is over the group's heads that have one."""
    local = glob = None
    n_local = n_global = 0
    for j, layer in enumerate(layers):
        if layer not in bands:
            continue
        band = bands[layer].double()  # [Hq, R, K]
        lm, gm = groups.local_mask[i, j], groups.global_mask[i, j]
        if lm.any():
            part = band[lm].sum(0)
            local = part if local is None else local + part
            n_local += int(lm.sum())
        if gm.any():
            part = band[gm].sum(0)
            glob = part if glob is None else glob + part
            n_global += int(gm.sum())
    local = (local / n_local).numpy() if n_local else None
    glob = (glob / n_global).numpy() if n_global else None
    return local, glob
