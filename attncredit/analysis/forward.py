"""One recorded no-grad forward over prompt + response: everything the rhythm analysis reads from the policy.

The forward runs the model's decoder once with :class:`RhythmRecorder` (an
:class:`~attncredit.attention.recording.AttentionRecorder` that records more) and returns, per batch:

* ``stats[layer]``: per-head head distance / WAAD / FAI (Eq. 7, 9, 10) with the *analysis* FAI horizon, for every
  recorded layer, from the statistics engine (chunked or Triton backend: no N x N matrix);
* ``credit_stats[layer]``: the same for the credit layers with the *training* FAI horizon (the gamma the trainer
  would compute), computed from the same query/key tensors when the two horizons differ;
* ``entropy`` [B, N]: the policy's predictive entropy of the distribution that produced each response token,
  ``H(p(. | q, o_<t))`` (Table 2 of the paper), from the logits of the previous row (NaN outside the response);
  ``next_entropy`` [B, N]: the entropy of the distribution each response row predicts (its successor);
  ``candidates`` [B, N, m]: the m most likely tokens of ``p(. | q, o_<t)`` (for the perturbation test).
  The LM head runs over chunks of rows, so no [B, N, vocab] tensor exists;
* ``bands[i][layer]`` [Hq, R, K]: exact attention probabilities of R response rows of sequence i over the K
  keys ending at the last of those rows (the "sawtooth" heatmap), from the layer's post-RoPE query/key, softmax
  over the full row (prompt keys included). Memory: Hq x R x (row position) floats per layer and sequence.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..attention.recording import AttentionRecorder
from ..attention.stats import AttentionStats, attention_stats


@dataclass(frozen=True)
class BandWindow:
    """Rows ``[row_start, row_stop)`` and keys ``[col_start, row_stop)`` of one sequence (padded positions)."""

    row_start: int
    row_stop: int
    col_start: int


@dataclass
class RhythmForward:
    """Outputs of :func:`rhythm_forward` (tensors on the CPU)."""

    stats: dict[int, AttentionStats]
    credit_stats: dict[int, AttentionStats]
    entropy: torch.Tensor
    next_entropy: torch.Tensor
    candidates: torch.Tensor
    bands: list[dict[int, torch.Tensor]] = field(default_factory=list)


def band_probabilities(
    query, key, attention_mask, window: BandWindow, scaling: float, *, softcap=None, sinks=None, sliding_window=None
) -> torch.Tensor:
    """Exact causal attention probabilities [Hq, R, K] of one sequence for the rows and keys of ``window``.

    ``query`` [Hq, N, D], ``key`` [Hkv, N, D] (GQA: query head h reads key head h // (Hq / Hkv)),
    ``attention_mask`` [N] bool. The softmax runs over every real key ``s <= t`` (prompt included) with the
    layer's score rule (``softcap``, ``sinks`` [Hq], ``sliding_window``, as in ``attention_stats``); only the
    columns ``[col_start, row_stop)`` are returned, so a row's shown mass is at most 1.
    """
    r0, r1, c0 = window.row_start, window.row_stop, window.col_start
    hq, hkv = query.shape[0], key.shape[0]
    q = query[:, r0:r1].float()
    k = key[:, :r1].float().repeat_interleave(hq // hkv, dim=0)
    scores = torch.matmul(q, k.transpose(-1, -2)) * scaling  # [Hq, R, r1]
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    rows = torch.arange(r0, r1, device=query.device)[:, None]
    cols = torch.arange(r1, device=query.device)[None, :]
    allowed = (cols <= rows) & attention_mask[:r1].bool()[None, :]
    if sliding_window is not None:
        allowed &= rows - cols < sliding_window
    scores = scores.masked_fill(~allowed, float("-inf"))
    if sinks is None:
        probs = torch.softmax(scores, dim=-1).nan_to_num(0.0)
    else:  # the sink takes its share of each row and is not shown
        sink = sinks.detach().float().to(scores.device)[:, None, None].expand(-1, scores.shape[1], 1)
        probs = torch.softmax(torch.cat([scores, sink], dim=-1), dim=-1)[..., :-1]
    return probs[:, :, c0:]


class RhythmRecorder(AttentionRecorder):
    """An ``AttentionRecorder`` that also records credit-horizon statistics and attention bands (see module doc)."""

    def __init__(
        self,
        model,
        layers,
        attention_mask: torch.Tensor,
        response_mask: torch.Tensor,
        *,
        window: int = 10,
        fai_horizon: tuple[int, int] = (1, 10**9),
        backend: str = "auto",
        credit_layers=(),
        credit_fai_horizon: tuple[int, int] | None = None,
        band_windows: list[BandWindow | None] | None = None,
        band_layers=None,
    ):
        super().__init__(
            model, layers, attention_mask, response_mask, window=window, fai_horizon=fai_horizon, backend=backend
        )
        extra = sorted(set(credit_layers) - set(self.layers))
        if extra:
            raise ValueError(f"credit layers {extra} are not among the recorded layers {self.layers}")
        self.credit_layers = set(credit_layers)
        self.credit_fai_horizon = tuple(credit_fai_horizon) if credit_fai_horizon is not None else self.fai_horizon
        self.credit_stats: dict[int, AttentionStats] = {}
        self.band_windows = list(band_windows or [])
        self.band_layers = set(self.layers if band_layers is None else band_layers)
        self.bands: list[dict[int, torch.Tensor]] = [{} for _ in self.band_windows]
        self._attention = attention_mask.bool()
        self._response = response_mask.bool()

    def __call__(self, module, query, key, kwargs, row_lse):
        super().__call__(module, query, key, kwargs, row_lse)
        layer = module.layer_idx
        scaling = kwargs.get("scaling")
        scaling = query.shape[-1] ** -0.5 if scaling is None else scaling
        variant = {"softcap": kwargs.get("softcap"), "sinks": kwargs.get("s_aux")}
        variant["sliding_window"] = kwargs.get("sliding_window")
        attention = self._attention.to(query.device)
        if layer in self.credit_layers and self.credit_fai_horizon != self.fai_horizon:
            self.credit_stats[layer] = _to_cpu(
                attention_stats(
                    query.detach(),
                    key.detach(),
                    scaling=scaling,
                    attention_mask=attention,
                    response_mask=self._response.to(query.device),
                    window=self.window,
                    fai_horizon=self.credit_fai_horizon,
                    backend=self.backend,
                    row_lse=row_lse,
                    **variant,
                )
            )
        if layer in self.band_layers:
            with torch.no_grad():
                for i, win in enumerate(self.band_windows):
                    if win is not None:
                        self.bands[i][layer] = band_probabilities(
                            query[i].detach(), key[i].detach(), attention[i], win, scaling, **variant
                        ).cpu()


def _to_cpu(s: AttentionStats) -> AttentionStats:
    return AttentionStats(waad=s.waad.cpu(), fai=s.fai.cpu(), head_distance=s.head_distance.cpu())


def _lm_head_logits(model, hidden: torch.Tensor) -> torch.Tensor:
    logits = model.get_output_embeddings()(hidden).float()
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    scaling = getattr(config, "logits_scaling", None)  # Granite
    if scaling:
        logits = logits / scaling
    cap = getattr(config, "final_logit_softcapping", None)  # Gemma 2/3
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


@torch.no_grad()
def rhythm_forward(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    response_mask: torch.Tensor,
    layers,
    *,
    window: int = 10,
    fai_horizon: tuple[int, int | None] = (1, None),
    backend: str = "auto",
    credit_layers=(),
    credit_fai_horizon: tuple[int, int | None] | None = None,
    band_windows: list[BandWindow | None] | None = None,
    band_layers=None,
    num_candidates: int = 4,
    logit_rows: int = 256,
) -> RhythmForward:
    """Run the decoder of ``model`` (prepared with ``enable_recording``) once and collect the analysis inputs.

    Args:
        input_ids, attention_mask, response_mask: [B, N]; real tokens contiguous per row, response inside them.
        layers: every layer whose statistics are needed (analysis layers and credit layers).
        window, fai_horizon, backend: WAAD window, analysis FAI band (H_lo, H_hi), statistics backend; H_hi None
            means "to the end of the response" (the paper's analysis setting, App. A.1).
        credit_layers, credit_fai_horizon: layers and FAI band of the training-time gamma.
        band_windows: per sequence a :class:`BandWindow` (or None) of the attention heatmap; ``band_layers``
            restricts the layers whose bands are kept (default: all recorded layers).
        num_candidates: top tokens kept per response position.
        logit_rows: about how many (sequence, position) rows go through the LM head at once.
    """
    attention_mask = attention_mask.bool()
    response_mask = response_mask.bool()
    b, n = input_ids.shape
    end = max(n, 1)
    fai_horizon = (fai_horizon[0], end if fai_horizon[1] is None else fai_horizon[1])
    if credit_fai_horizon is not None:
        credit_fai_horizon = (credit_fai_horizon[0], end if credit_fai_horizon[1] is None else credit_fai_horizon[1])
    recorder = RhythmRecorder(
        model,
        list(layers),
        attention_mask,
        response_mask,
        window=window,
        fai_horizon=fai_horizon,
        backend=backend,
        credit_layers=credit_layers,
        credit_fai_horizon=credit_fai_horizon,
        band_windows=band_windows,
        band_layers=band_layers,
    )
    decoder = model.base_model
    with recorder:
        hidden = decoder(input_ids=input_ids, attention_mask=attention_mask.long(), use_cache=False).last_hidden_state
    row_entropy = torch.full((b, n), float("nan"))
    row_candidates = torch.zeros((b, n, num_candidates), dtype=torch.long)
    has_response = response_mask.any(0)
    if bool(has_response.any()):
        start = max(int(has_response.nonzero()[0]) - 1, 0)
        step = max(1, logit_rows // b)
        for s in range(start, n, step):
            e = min(n, s + step)
            logp = torch.log_softmax(_lm_head_logits(model, hidden[:, s:e]), dim=-1)
            row_entropy[:, s:e] = -(logp.exp() * logp).sum(-1).cpu()
            row_candidates[:, s:e] = logp.topk(num_candidates, dim=-1).indices.cpu()
    response = response_mask.cpu()
    entropy = torch.full((b, n), float("nan"))
    entropy[:, 1:] = row_entropy[:, :-1]  # token t was sampled from the distribution of row t - 1
    candidates = torch.zeros_like(row_candidates)
    candidates[:, 1:] = row_candidates[:, :-1]
    entropy = entropy.masked_fill(~response, float("nan"))
    next_entropy = row_entropy.masked_fill(~response, float("nan"))
    stats = {layer: _to_cpu(s) for layer, s in recorder.stats.items()}
    credit_stats = {layer: recorder.credit_stats.get(layer, stats[layer]) for layer in recorder.credit_layers}
    return RhythmForward(
        stats=stats,
        credit_stats=credit_stats,
        entropy=entropy,
        next_entropy=next_entropy,
        candidates=candidates,
        bands=recorder.bands,
    )
