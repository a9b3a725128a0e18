"""Per-head attention statistics of a causal self-attention layer: the one validator and backend dispatcher.

Math (docs/method.md, "Attention statistics"). For one head with post-softmax causal probabilities ``A[t, s]``
(row t = query, column s = key, s <= t, padding keys excluded), response rows ``R`` and distances counted in
real-token positions:

* head distance (Eq. 7):  ``d = (1/|R|) sum_{t in R} sum_{s<=t} A[t,s] (t - s)``  (0 when R is empty)
* WAAD (Eq. 9):           ``WAAD_t = sum_{s<=t} A[t,s] min(t - s, W)`` for t in R, 0 elsewhere
* FAI (Eq. 10):           ``FAI_s = mean_{t in R, H_lo <= t - s <= H_hi} A[t,s]``, 0 when no such row

All three are linear in A, so the group averages of Eq. 8 can be taken after the per-head statistics.
The ``dense`` backend here builds A and is the reference every fast backend is tested against.

Every way into the kernels goes through this module: :func:`attention_stats` for one call, and
:func:`check_options` / :func:`check_masks` / :func:`backend_function` for the recorder, which validates once per
forward and then runs the chosen kernel on every probe layer.
"""

from __future__ import annotations

import math

import torch

from ..deferred import DeferredChecks
from .masks import split_rows
from .types import BACKENDS, AttentionStats


def check_options(window, fai_horizon, backend) -> tuple[int, tuple[int, int]]:
    """Validate the WAAD window W >= 1, the FAI band 0 <= H_lo <= H_hi and the backend name; return (W, band)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {tuple(BACKENDS)}, got {backend!r}")
    if not _is_int(window) or window < 1:
        raise ValueError(f"window must be an integer >= 1, got {window!r}")
    lo, hi = fai_horizon if isinstance(fai_horizon, (tuple, list)) and len(fai_horizon) == 2 else (None, None)
    if not (_is_int(lo) and _is_int(hi)) or lo < 0 or lo > hi:
        raise ValueError(f"fai_horizon must be integers (H_lo, H_hi) with 0 <= H_lo <= H_hi, got {fai_horizon!r}")
    return int(window), (int(lo), int(hi))


def check_variant(softcap, sinks, sliding_window, num_heads: int, device) -> dict:
    """Validate the attention variant of a layer; return the kernels' keyword arguments (only those that are set).

    ``softcap``: a finite number > 0 or None; ``sinks``: a finite [Hq] tensor or None (returned float32 on
    ``device``); ``sliding_window``: an integer >= 1 or None.
    """
    variant = {}
    if softcap is not None:
        if isinstance(softcap, bool) or not isinstance(softcap, (int, float)) or not 0 < softcap < math.inf:
            raise ValueError(f"softcap must be a finite number > 0 or None, got {softcap!r}")
        variant["softcap"] = float(softcap)
    if sinks is not None:
        if not isinstance(sinks, torch.Tensor) or tuple(sinks.shape) != (num_heads,):
            shape = tuple(sinks.shape) if isinstance(sinks, torch.Tensor) else type(sinks).__name__
            raise ValueError(f"sinks must be a [Hq={num_heads}] tensor of per-head logits or None, got {shape}")
        sinks = sinks.detach().to(device=device, dtype=torch.float32)
        if not bool(torch.isfinite(sinks).all()):
            raise ValueError("sinks must be finite")
        variant["sinks"] = sinks
    if sliding_window is not None:
        if not _is_int(sliding_window) or sliding_window < 1:
            raise ValueError(f"sliding_window must be an integer >= 1 or None, got {sliding_window!r}")
        variant["sliding_window"] = int(sliding_window)
    return variant


def check_masks(
    attention_mask, response_mask, batch: int, length: int, device, checks: DeferredChecks | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate the [B, N] masks (None: every token real / every real token a response); return them bool on ``device``.

    Real tokens must be one contiguous run per row (left and/or right padding; no packed sequences) and response
    tokens must be real. Shapes are checked at once; the two checks of the values are read in one host sync, or,
    with ``checks``, added to it for the caller's :meth:`~attncredit.deferred.DeferredChecks.verify` (no sync here).
    """
    masks = []
    for name, mask in (("attention_mask", attention_mask), ("response_mask", response_mask)):
        if mask is None:
            masks.append(None)
            continue
        if not isinstance(mask, torch.Tensor) or tuple(mask.shape) != (batch, length):
            shape = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
            raise ValueError(f"{name} must be [B={batch}, N={length}], got shape {shape}")
        masks.append(mask.to(device=device).bool())
    attn, resp = masks
    if attn is None:
        attn = torch.ones(batch, length, dtype=torch.bool, device=device)
    pending = DeferredChecks() if checks is None else checks
    pending.add(split_rows(attn).any(), lambda: ValueError(
        "attention_mask must mark one contiguous run of real tokens per row (left/right padding only; packed "
        "sequences are not supported)"
    ))  # fmt: skip
    if resp is None:
        resp = attn
    else:
        pending.add((resp & ~attn).any(), lambda: ValueError(
            "response_mask marks padding tokens (attention_mask == 0) as response tokens"
        ))  # fmt: skip
    if checks is None:
        pending.verify()
    return attn, resp


def backend_function(backend: str, device: torch.device):
    """The kernel of ``backend`` (``auto``: triton on CUDA, torch elsewhere) for tensors on ``device``.

    The kernel takes validated inputs ``(query, key, attention_mask, response_mask, scaling, window, fai_horizon)``
    (bool masks, see :func:`check_options` and :func:`check_masks`), the keywords of :func:`check_variant`
    (``softcap``, ``sinks``, ``sliding_window``) and ``row_lse`` / ``head_distance`` / ``heads`` (see
    :func:`attention_stats`),
    and returns :class:`AttentionStats`.
    """
    if backend == "auto":
        backend = "triton" if torch.device(device).type == "cuda" else "torch"
    if backend == "dense":
        return dense_attention_stats
    if backend == "torch":
        from .chunked import chunked_attention_stats

        return chunked_attention_stats
    if backend == "triton":
        from .triton_stats import triton_attention_stats

        return triton_attention_stats
    raise ValueError(f"backend must be one of {tuple(BACKENDS)}, got {backend!r}")


def _check_qk(query, key):
    """Validate the shapes and devices of query [B, Hq, N, D] and key [B, Hkv, N, D] (Hq a multiple of Hkv)."""
    if query.dim() != 4:
        raise ValueError(f"query must be [B, Hq, N, D], got shape {tuple(query.shape)}")
    if key.dim() != 4:
        raise ValueError(f"key must be [B, Hkv, N, D], got shape {tuple(key.shape)}")
    b, hq, n, d = query.shape
    if key.shape[0] != b or key.shape[2] != n or key.shape[3] != d:
        raise ValueError(f"key must be [B={b}, Hkv, N={n}, D={d}], got shape {tuple(key.shape)}")
    if key.device != query.device:
        raise ValueError(f"key must be on the device of query ({query.device}), got {key.device}")
    hkv = key.shape[1]
    if hkv == 0 or hq == 0 or hq % hkv != 0:
        raise ValueError(f"query heads Hq={hq} must be a positive multiple of key heads Hkv={hkv}")


def _is_int(x):
    """True for integers and integral floats (10, 10.0), False for anything else (None, True, 2.5, "10")."""
    if isinstance(x, bool):
        return False
    try:
        return int(x) == x
    except (TypeError, ValueError, OverflowError):
        return False


def _check_finite(name, x, attn):
    """Reject NaN/inf in ``x`` [B, H, N, D] at real tokens; padding may hold anything. One reduction, [B, N] memory."""
    _raise_first_non_finite(name, torch.isfinite(x.sum(dim=(1, 3), dtype=torch.float32)), attn, "a real token",
                            "padding")  # fmt: skip


def _raise_first_non_finite(name, finite, where, where_name, others_name) -> None:
    """Raise naming the first (batch, position) that ``where`` [B, N] marks and ``finite`` [B, N] does not."""
    bad = ~finite & where
    if bool(bad.any()):
        i, t = (int(v) for v in bad.nonzero()[0])
        raise ValueError(f"{name} has NaN or inf at {where_name} (batch {i}, position {t}); only {others_name} may")


def dense_attention_stats(
    query, key, attention_mask, response_mask, scaling, window, fai_horizon, *, softcap=None, sinks=None,
    sliding_window=None, row_lse=None, head_distance=True, heads=None,
):
    """Reference: materialise A [B, Hq, N, N] in float32 and apply Eq. 7, 9 and 10 literally.

    Scores ``S = scaling q.k``, then ``softcap tanh(S / softcap)`` if ``softcap``; keys with ``t - s >= sliding_window``
    are masked; ``sinks`` [Hq] adds ``exp(sink_h)`` to every row's normaliser without being a key position. With
    ``row_lse`` [B, Hq, >=N] (natural log, without the sink) the probabilities are ``exp(S - lse)`` with that
    normaliser (``log(exp(lse) + exp(sink_h))`` with a sink), as the fast backends read it; ``head_distance=False``
    returns None for it; ``heads`` (waad_heads, fai_heads) zeroes WAAD and FAI outside them.
    """
    b, hq, n, _ = query.shape
    group = hq // key.shape[1]
    k = key.float().repeat_interleave(group, dim=1)
    scores = torch.matmul(query.float(), k.transpose(-1, -2)) * scaling
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    idx = torch.arange(n, device=query.device)
    dist = (idx[:, None] - idx[None, :]).float()  # t - s
    causal = dist >= 0
    if sliding_window is not None:
        causal &= dist < sliding_window
    allowed = causal[None] & attention_mask[:, None, :] & attention_mask[:, :, None]  # [B, N, N]
    scores = scores.masked_fill(~allowed[:, None], float("-inf"))
    if row_lse is not None:
        lse = row_lse[..., :n].float()
        if sinks is not None:
            lse = torch.logaddexp(lse, sinks.float().to(lse.device)[None, :, None])
        probs = torch.exp(scores - lse[..., None]).nan_to_num(0.0)
    elif sinks is None:
        probs = torch.softmax(scores, dim=-1).nan_to_num(0.0)  # padding rows have no key: all zeros
    else:
        sink = sinks.float().to(scores.device)[None, :, None, None].expand(b, hq, n, 1)
        probs = torch.softmax(torch.cat([scores, sink], dim=-1), dim=-1)[..., :-1]  # the sink is no key position
    rows = response_mask[:, None, :, None].float()  # [B, 1, N, 1]
    waad = (probs * dist.clamp(max=window)).sum(-1) * rows[..., 0]
    n_rows = response_mask.sum(-1).clamp(min=1).float()[:, None]
    distance = (probs * dist.clamp(min=0)).sum(-1).mul(rows[..., 0]).sum(-1) / n_rows if head_distance else None
    lo, hi = fai_horizon
    band = ((dist >= lo) & (dist <= hi))[None] & response_mask[:, :, None]  # [B, N(t), N(s)]
    counts = band.sum(1).float()  # receivers per key s
    fai = (probs * band[:, None]).sum(-2) / counts.clamp(min=1)[:, None]
    fai = fai * (counts > 0)[:, None] * attention_mask[:, None]
    stats = AttentionStats(waad=waad, fai=fai, head_distance=distance)
    return stats.keep_heads(*heads) if heads is not None else stats


def attention_stats(
    query: torch.Tensor,
    key: torch.Tensor,
    *,
    scaling: float | None = None,
    attention_mask: torch.Tensor | None = None,
    response_mask: torch.Tensor | None = None,
    window: int = 10,
    fai_horizon: tuple[int, int] = (10, 100),
    backend: str = "auto",
    softcap: float | None = None,
    sinks: torch.Tensor | None = None,
    sliding_window: int | None = None,
    row_lse: torch.Tensor | None = None,
    head_distance: bool = True,
    heads: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> AttentionStats:
    """Head distance, WAAD and FAI of one causal self-attention layer, per query head.

    The probabilities are those of the layer's own softmax: ``A[t, s] = exp(S[t, s]) / (sum_{s' allowed}
    exp(S[t, s']) + exp(sink_h))`` with ``S = softcap tanh(scaling q_t.k_s / softcap)`` (plain ``scaling q_t.k_s``
    without softcapping), keys allowed when real, ``s <= t`` and ``t - s < sliding_window``, and the sink term only
    with ``sinks``. Keys outside the window have ``A = 0``: they add to none of the sums below. The FAI receiver
    count ``|T(s)|`` counts every response row of the band, as Eq. 10 reads (docs/method.md, "Attention statistics").

    Args:
        query: [B, Hq, N, D] post-RoPE queries.
        key: [B, Hkv, N, D] post-RoPE keys; query head h reads key head h // (Hq // Hkv) (GQA).
        scaling: softmax scale, default D**-0.5.
        attention_mask: [B, N], 1 for real tokens, 0 for padding (left and/or right; real tokens contiguous).
        response_mask: [B, N], 1 for response tokens (the query rows that count); default: every real token.
        window: WAAD clipping window W (Eq. 9), paper default 10.
        fai_horizon: (H_lo, H_hi) receiver band of FAI (Eq. 10), paper default (10, 100).
        backend: ``dense`` (reference, builds A), ``torch`` (chunked, O(N (W + H_hi + block)) memory per head),
            ``triton`` (fused GPU kernels) or ``auto`` (triton on CUDA, torch elsewhere).
        softcap: attention-logit softcapping (Gemma 2), > 0, or None.
        sinks: [Hq] per-head sink logits (GPT-OSS), or None.
        sliding_window: the layer's sliding window (keys with ``t - s < sliding_window`` are seen), >= 1, or None.
        row_lse: [B, Hq, >=N] natural-log row log-sum-exp of the scores over the allowed keys, without the sink, as
            SDPA's fused kernels compute it (:mod:`attncredit.attention.lse`); finite at response rows. The
            probabilities become ``exp(S - lse)``; the triton backend skips its own normaliser with it.
        head_distance: False skips the head distance (returned as None); with ``row_lse`` the torch and triton
            backends then read only the keys within ``max(W - 1, H_hi)`` of each row (band-only).
        heads: (waad_heads, fai_heads), bool [Hq] each: WAAD is needed only for the first set and FAI only for the
            second (the kept local and global head groups); the others are returned as 0, and the band-only triton
            kernel skips them.

    Returns:
        AttentionStats with float32 ``waad`` [B, Hq, N], ``fai`` [B, Hq, N], ``head_distance`` [B, Hq] (or None).

    Raises:
        ValueError: naming the argument and the expected shape or range, for wrong shapes, Hq not a multiple of
            Hkv, key on another device, masks that are not [B, N], real tokens that are not one contiguous run,
            response tokens that are padding, window < 1, a horizon that is not 0 <= H_lo <= H_hi, a non-finite
            scaling, a softcap that is not a finite number > 0, sinks that are not a finite [Hq] tensor, a
            sliding window < 1, and NaN/inf in query or key at real tokens (padding positions may hold anything: they
            never read). The last check is one reduction over heads and D per token (fp32 accumulation, so
            finite values large enough to overflow it are rejected too; their scores would overflow anyway).
    """
    _check_qk(query, key)
    window, fai_horizon = check_options(window, fai_horizon, backend)
    b, _, n, _ = query.shape
    attn, resp = check_masks(attention_mask, response_mask, b, n, query.device)
    for name, x in (("query", query), ("key", key)):
        _check_finite(name, x, attn)
    scaling = query.shape[-1] ** -0.5 if scaling is None else float(scaling)
    if not math.isfinite(scaling):
        raise ValueError(f"scaling must be a finite number, got {scaling!r}")
    variant = check_variant(softcap, sinks, sliding_window, query.shape[1], query.device)
    if row_lse is not None:
        _check_row_lse(row_lse, query, resp)
    if not isinstance(head_distance, bool):
        raise ValueError(f"head_distance must be True or False, got {head_distance!r}")
    check_heads(heads, query.shape[1])
    return backend_function(backend, query.device)(
        query, key, attn, resp, scaling, window, fai_horizon, row_lse=row_lse, head_distance=head_distance,
        heads=heads, **variant
    )


def check_heads(heads, num_heads: int) -> None:
    """Validate a head subset: None, or (waad_heads, fai_heads), two bool tensors of shape [Hq]."""
    if heads is None:
        return
    ok = isinstance(heads, (tuple, list)) and len(heads) == 2 and all(
        isinstance(m, torch.Tensor) and m.dtype == torch.bool and tuple(m.shape) == (num_heads,) for m in heads
    )
    if not ok:
        raise ValueError(f"heads must be (waad_heads, fai_heads), two bool [Hq={num_heads}] tensors, got {heads!r}")


def _check_row_lse(row_lse, query, response_mask) -> None:
    """Validate a given row LSE: a float [B, Hq, >=N] tensor on the query's device, finite at response rows."""
    b, hq, n, _ = query.shape
    if not isinstance(row_lse, torch.Tensor) or row_lse.dim() != 3 or tuple(row_lse.shape[:2]) != (b, hq) or (
        row_lse.shape[2] < n
    ):
        shape = tuple(row_lse.shape) if isinstance(row_lse, torch.Tensor) else type(row_lse).__name__
        raise ValueError(f"row_lse must be [B={b}, Hq={hq}, >=N={n}], got {shape}")
    if row_lse.device != query.device or not row_lse.is_floating_point():
        raise ValueError(f"row_lse must be a float tensor on {query.device}, got {row_lse.dtype} on {row_lse.device}")
    _raise_first_non_finite("row_lse", torch.isfinite(row_lse[..., :n]).all(1), response_mask, "a response row",
                            "other rows")  # fmt: skip
