r"""Fused Triton kernel for the attention statistics of one causal layer (docs/method.md, "Attention statistics",
Eq. 7, 9, 10).

One program handles one query head ``h`` of one sequence ``b`` and one block of ``BLOCK_M`` query rows
``t``; it streams the key blocks ``s <= t`` like a FlashAttention forward, but with no ``P V`` product
(about half a flash forward). With scores in base 2, ``x_ts = log2(e) * scaling * q_t . k_s``, and the
running row maximum ``m_t``, it keeps per row (rescaled by ``2^(m_old - m_new)`` at each block):

* ``l_t = sum_s 2^(x_ts - m_t)``                              (softmax normaliser)
* ``u_t = sum_s 2^(x_ts - m_t) (t - s)``                        (first moment of the distance)
* ``v_t = sum_s 2^(x_ts - m_t) min(t - s, W)``                  (a far block adds ``W`` times its row sum)

and ends with ``A[t, s] = 2^(x_ts - lse_t)``, ``lse_t = m_t + log2 l_t``, so that

* head distance (Eq. 7): ``sum_s A[t,s] (t - s) = u_t / l_t``, averaged over response rows;
* WAAD (Eq. 9):          ``sum_s A[t,s] min(t - s, W) = v_t / l_t``  (every term >= 0: nothing cancels, and rows
  need not sum to 1, which they do not with a sink). With a given ``row_lse`` the sums use ``2^(x_ts - lse_t)``
  (``lse_t`` converted to base 2) with no running maximum, and are still divided by their own ``l_t`` (plus the
  sink's ``2^(z_h - lse_t)``), so that an error of the given LSE, which scales every term of a row alike, cancels.

The layer's score rule: with softcapping ``c`` the logit is ``log2(e) c tanh(scaling q.k / c)`` (tanh from exp2
and a short odd polynomial near 0, float32-accurate to a few ulps); with a sliding window ``w`` the pairs
``t - s >= w`` are masked and the key stream of a row block starts at ``qs - w + 1``; with a sink logit ``z_h``
each row starts at ``m = log2(e) z_h``, ``l = 1``: the sink is one more term of the normaliser and of nothing else.

Far key blocks (every ``t - s >= W``, inside the sliding window, and no padding key) run unmasked, and
there the distance moment is taken per block as ``(t - s0) sum_j p_j - sum_j p_j j`` for ``s = s0 + j``:
two row sums and no per-element distance (and WAAD adds ``W sum_j p_j``). Near blocks (the causal diagonal, the last ``W`` keys, a block holding left
padding, blocks reaching past the sliding window) apply the masks and the exact per-element distances.

FAI (Eq. 10) needs the final ``lse_t``: a second sweep over the diagonal band
``H_lo <= t - s <= H_hi`` of the same query block recomputes ``A[t, s]`` there (at most
``(BLOCK_M + H_hi - H_lo) / BLOCK_N + 1`` key blocks) and adds the column sums over response rows into
``FAI_sum[s]`` with atomics; the host divides by ``|T(s)| = #{t in R : H_lo <= t - s <= H_hi}``.
When the row log-sum-exp is given (``row_lse``, natural log, e.g. from the flash/efficient SDPA kernels
that the layer ran anyway), the kernel skips the running maximum and folds the FAI band into the single
sweep. Nothing of size N x N is stored: the outputs are O(B Hq N).

Band-only (``row_lse`` given, ``head_distance=False``: the head groups are kept from an earlier forward, see
``credit_head_regroup_every``): only the key blocks within ``max(W - 1, H_hi)`` of the diagonal are read, so the
cost is ``O(N (BLOCK_M + max(W, H_hi)))`` per head instead of ``O(N^2)``. With ``A[t, s] = 2^(x_ts - lse_t)`` the
row's key mass is ``1 - A_sink`` (``A_sink = 2^(z_h - lse_t)``, 0 without a sink), so the keys not read, all at
``t - s >= W``, add ``W (1 - A_sink - sum_{read} A[t, s])`` to WAAD; FAI's band lies inside the keys read.

Query blocks with no response row do no work (prompt rows are free); keys before the first real token
(left padding) get no attention; rows and keys after the last real token (right padding) are never
read. Accumulation is float32; ``tl.dot`` uses IEEE float32 for float32 inputs (no tf32).
GQA: query head ``h`` reads key head ``h // (Hq // Hkv)``; the grid puts the heads of one key head next
to each other so that they share the key blocks in L2.

Cost (H200, bf16, Qwen3-4B head shapes, 32k tokens per batch, docs/benchmarks.md), relative to the same
layer's SDPA forward: 2.3x at 1k tokens per sequence, 1.3x at 4k, 1.1x at 8k, 0.9x at 16k, 0.85x at 32k (SDPA
runs at ~630 TFLOP/s there; this kernel's Q K^T sweep, half the FLOPs, at ~370). With ``row_lse`` it is 7-15%
faster at 4k-32k. Far-block row sums on the tensor cores from fp16 probabilities (with a packed fp16 exp2) were
tried and were 10-15% slower, so every path is exact float32 arithmetic on the given inputs.

Runs on CUDA tensors, and on CPU tensors under the Triton interpreter (``TRITON_INTERPRET=1`` set
before ``triton`` is imported). Reference: ``attncredit.attention.stats.dense_attention_stats``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .types import AttentionStats

LOG2E = 1.4426950408889634


@triton.jit
def _tanh(y):
    """tanh in float32 to a few ulps: an odd Taylor polynomial below |y| = 1/4, above it (1 - e) / (1 + e) with
    e = exp(-2|y|) (Triton has no tanh that also runs under the interpreter)."""
    a = tl.abs(y)
    e = tl.exp2(-2.8853900817779268 * a)
    y2 = a * a
    small = a * (1.0 + y2 * (-0.3333333333333333 + y2 * (0.13333333333333333 + y2 * (-0.05396825396825397
                                                                                    + y2 * 0.021869488536155203))))
    r = tl.where(a < 0.25, small, (1.0 - e) / (1.0 + e))
    return tl.where(y < 0, -r, r)


@triton.jit
def _logit2(x, qk_scale, cap_in, cap_out, HAS_SOFTCAP: tl.constexpr):
    """Base-2 logits of raw dot products x: ``log2(e) scaling x``, or ``log2(e) c tanh(scaling x / c)`` (softcap c)."""
    if HAS_SOFTCAP:
        return cap_out * _tanh(x * cap_in)
    else:
        return x * qk_scale


@triton.jit
def _far_step(q, k_base, start_n, offs_n, offs_d, offs_m_f, m_i, l_i, u_i, v_i, lse2, stride_kn, stride_kd,
              qk_scale, cap_in, cap_out, W,
              HEAD_DIM: tl.constexpr, HAS_LSE: tl.constexpr, PREC: tl.constexpr, HAS_SOFTCAP: tl.constexpr):
    """A key block with no mask: every key is real and inside the window, every t - s >= W. Updates (m, l, u, v)."""
    offs = start_n + offs_n
    k = tl.load(k_base + offs[None, :] * stride_kn + offs_d[:, None] * stride_kd,
                mask=(offs_d < HEAD_DIM)[:, None], other=0.0).to(q.dtype)
    x = _logit2(tl.dot(q, k, input_precision=PREC), qk_scale, cap_in, cap_out, HAS_SOFTCAP)
    j = offs_n.to(tl.float32)
    if HAS_LSE:
        p = tl.exp2(x - lse2[:, None])
        l_b = tl.sum(p, 1)
        l_i = l_i + l_b
        u_i = u_i + (offs_m_f - start_n) * l_b - tl.sum(p * j[None, :], 1)
        v_i = v_i + W * l_b
    else:
        m_new = tl.maximum(m_i, tl.max(x, 1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(x - m_new[:, None])
        l_b = tl.sum(p, 1)
        l_i = l_i * alpha + l_b
        u_i = u_i * alpha + ((offs_m_f - start_n) * l_b - tl.sum(p * j[None, :], 1))
        v_i = v_i * alpha + W * l_b
        m_i = m_new
    return m_i, l_i, u_i, v_i


@triton.jit
def _near_step(q, k_base, fai_base, start_n, offs_n, offs_d, offs_m, row_resp, m_i, l_i, u_i, v_i, lse2,
               stride_kn, stride_kd, qk_scale, cap_in, cap_out, N, kv_start, W, SW, H_LO, H_HI, fai_keys,
               HEAD_DIM: tl.constexpr, HAS_LSE: tl.constexpr, HEAD_DIST: tl.constexpr, PREC: tl.constexpr,
               HAS_SOFTCAP: tl.constexpr, HAS_WINDOW: tl.constexpr):
    """A key block with the causal, padding and sliding-window masks and the per-element clipped distance."""
    offs = start_n + offs_n
    k = tl.load(k_base + offs[None, :] * stride_kn + offs_d[:, None] * stride_kd,
                mask=(offs < N)[None, :] & (offs_d < HEAD_DIM)[:, None], other=0.0).to(q.dtype)
    x = _logit2(tl.dot(q, k, input_precision=PREC), qk_scale, cap_in, cap_out, HAS_SOFTCAP)
    dist = offs_m[:, None] - offs[None, :]
    valid = (dist >= 0) & (offs >= kv_start)[None, :]
    if HAS_WINDOW:
        valid = valid & (dist < SW)
    x = tl.where(valid, x, float("-inf"))
    d_f = dist.to(tl.float32)
    clip = tl.minimum(d_f, W)  # only ever multiplied by p, which is 0 where t < s
    if HAS_LSE and not HEAD_DIST:  # band-only: the WAAD sums take the keys at t - s < W only
        p = tl.where(valid, tl.exp2(x - lse2[:, None]), 0.0)
        p_near = tl.where(dist < W, p, 0.0)
        l_i = l_i + tl.sum(p_near, 1)
        v_i = v_i + tl.sum(p_near * d_f, 1)
        band = valid & (dist >= H_LO) & (dist <= H_HI) & row_resp[:, None]
        tl.atomic_add(fai_base + offs, tl.sum(tl.where(band, p, 0.0), 0), mask=(offs < N) & fai_keys)
    elif HAS_LSE:
        p = tl.where(valid, tl.exp2(x - lse2[:, None]), 0.0)
        l_i = l_i + tl.sum(p, 1)
        u_i = u_i + tl.sum(p * d_f, 1)
        v_i = v_i + tl.sum(p * clip, 1)
        band = valid & (dist >= H_LO) & (dist <= H_HI) & row_resp[:, None]
        tl.atomic_add(fai_base + offs, tl.sum(tl.where(band, p, 0.0), 0), mask=offs < N)
    else:
        m_new = tl.maximum(m_i, tl.max(x, 1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(x - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        u_i = u_i * alpha + tl.sum(p * d_f, 1)
        v_i = v_i * alpha + tl.sum(p * clip, 1)
        m_i = m_new
    return m_i, l_i, u_i, v_i


@triton.jit
def _attention_stats_kernel(
    Q, K, LSE, SINKS, BOUNDS, RESP, HEADS, WAAD, HD, FAI,
    stride_qb, stride_qh, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_lb, stride_lh, stride_ln,
    N, HQ, GROUP, qk_scale, cap_in, cap_out, W, SW, H_LO, H_HI,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    HAS_LSE: tl.constexpr, HEAD_DIST: tl.constexpr, PREC: tl.constexpr, DOT_F32: tl.constexpr,
    HAS_SOFTCAP: tl.constexpr, HAS_SINK: tl.constexpr, HAS_WINDOW: tl.constexpr, HAS_HEADS: tl.constexpr,
):
    pid_bh = tl.program_id(0)  # heads of one key head are neighbours: they share K in L2
    pid_m = tl.num_programs(1) - 1 - tl.program_id(1)  # longest query blocks first
    b = pid_bh // HQ
    h = pid_bh % HQ
    hk = h // GROUP
    kv_start = tl.load(BOUNDS + b * 4 + 0)  # first real token
    r_start = tl.load(BOUNDS + b * 4 + 2)  # first response row
    r_end = tl.load(BOUNDS + b * 4 + 3)  # last response row + 1

    qs = pid_m * BLOCK_M
    offs_m = qs + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    row_resp = tl.load(RESP + b * N + offs_m, mask=offs_m < N, other=0) != 0
    offs_m_f = offs_m.to(tl.float32)

    b64 = b.to(tl.int64)
    q = tl.load(Q + b64 * stride_qb + h.to(tl.int64) * stride_qh + offs_m[:, None] * stride_qn
                + offs_d[None, :] * stride_qd, mask=(offs_m < N)[:, None] & (offs_d < HEAD_DIM)[None, :], other=0.0)
    if DOT_F32:  # the interpreter's bf16 tl.dot is wrong (triton 3.9); bf16 products are exact in fp32
        q = q.to(tl.float32)
    k_base = K + b64 * stride_kb + hk.to(tl.int64) * stride_kh
    fai_base = FAI + pid_bh.to(tl.int64) * N

    m_i = tl.zeros([BLOCK_M], dtype=tl.float32) - 1.0e30  # finite: fully masked rows give p = 0, not NaN
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    sink2 = 0.0
    if HAS_SINK:  # the sink logit opens every row's normaliser: m = sink, l = 2^(sink - m) = 1
        sink2 = tl.load(SINKS + h) * 1.4426950408889634
        if not HAS_LSE:  # with a given LSE the sink's share 2^(sink - lse) is added at the end
            m_i = m_i * 0.0 + sink2
            l_i = l_i + 1.0
    u_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    v_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    if HAS_LSE:
        lse2 = tl.load(LSE + b64 * stride_lb + h.to(tl.int64) * stride_lh + offs_m * stride_ln,
                       mask=offs_m < N, other=0.0) * 1.4426950408889634
    else:
        lse2 = m_i

    # key blocks (aligned to BLOCK_N) that the response rows of this block need: [k_first, k_end)
    has_rows = (qs < r_end) & (qs + BLOCK_M > r_start)
    # band-only with a head subset: bit 0 of HEADS[h] asks for WAAD, bit 1 for FAI; a head with neither does nothing
    mode = 3
    if HAS_HEADS:
        mode = tl.load(HEADS + h).to(tl.int32)
        has_rows = has_rows & (mode != 0)
    waad_rows = row_resp & (((tl.zeros([BLOCK_M], dtype=tl.int32) + mode) & 1) != 0)  # rows whose WAAD is stored
    fai_keys = ((tl.zeros([BLOCK_N], dtype=tl.int32) + mode) & 2) != 0  # FAI sums are added (per key lane)
    if HAS_WINDOW:  # row qs sees keys from qs - SW + 1 on
        k_first = (tl.maximum(kv_start, qs - SW + 1) // BLOCK_N) * BLOCK_N
    else:
        k_first = (kv_start // BLOCK_N) * BLOCK_N
    k_end = tl.where(has_rows, tl.minimum(qs + BLOCK_M, r_end), k_first)
    # near blocks: some t - s < W, or (with a given LSE) some key inside the FAI band
    if HAS_LSE:
        reach = tl.maximum(W - 1, H_HI)
        if HAS_HEADS:  # a WAAD-only head reads only the keys at t - s < W
            reach = tl.where((mode & 2) != 0, reach, W - 1)
    else:
        reach = W - 1
    near_lo = tl.maximum((tl.maximum(qs - reach, 0) // BLOCK_N) * BLOCK_N, k_first)
    near_lo = tl.minimum(near_lo, k_end)
    # a first block holding left padding is masked too, and so is every block with a pair outside the window
    # (t - s >= SW for the last row qs + BLOCK_M - 1: blocks starting before qs + BLOCK_M - SW)
    far_lo = tl.where((kv_start > k_first) & (k_first < near_lo), k_first + BLOCK_N, k_first)
    if HAS_WINDOW:
        edge = tl.cdiv(tl.maximum(qs + BLOCK_M - SW, 0), BLOCK_N) * BLOCK_N
        far_lo = tl.minimum(tl.maximum(far_lo, edge), near_lo)
    if HEAD_DIST or not HAS_LSE:  # band-only: keys before near_lo are all at t - s > max(W - 1, H_hi)
        for start_n in range(k_first, far_lo, BLOCK_N):
            m_i, l_i, u_i, v_i = _near_step(q, k_base, fai_base, start_n, offs_n, offs_d, offs_m, row_resp,
                                            m_i, l_i, u_i, v_i, lse2, stride_kn, stride_kd, qk_scale, cap_in, cap_out,
                                            N, kv_start, W, SW, H_LO, H_HI, fai_keys, HEAD_DIM, HAS_LSE, HEAD_DIST,
                                            PREC, HAS_SOFTCAP, HAS_WINDOW)
        for start_n in range(far_lo, near_lo, BLOCK_N):
            m_i, l_i, u_i, v_i = _far_step(q, k_base, start_n, offs_n, offs_d, offs_m_f, m_i, l_i, u_i, v_i, lse2,
                                           stride_kn, stride_kd, qk_scale, cap_in, cap_out, W, HEAD_DIM, HAS_LSE,
                                           PREC, HAS_SOFTCAP)
    for start_n in range(near_lo, k_end, BLOCK_N):
        m_i, l_i, u_i, v_i = _near_step(q, k_base, fai_base, start_n, offs_n, offs_d, offs_m, row_resp,
                                        m_i, l_i, u_i, v_i, lse2, stride_kn, stride_kd, qk_scale, cap_in, cap_out,
                                        N, kv_start, W, SW, H_LO, H_HI, fai_keys, HEAD_DIM, HAS_LSE, HEAD_DIST, PREC,
                                        HAS_SOFTCAP, HAS_WINDOW)

    if HAS_LSE and not HEAD_DIST:  # band-only: the keys at t - s >= W hold the rest of the row's key mass
        mass = 1.0
        if HAS_SINK:
            mass = mass - tl.exp2(sink2 - lse2)
        waad_row = v_i + W * tl.maximum(mass - l_i, 0.0)
    elif HAS_LSE:  # divide by the row's mass (keys + sink) as computed here: an error of the given LSE cancels
        if HAS_SINK:
            l_i = l_i + tl.exp2(sink2 - lse2)
        l_safe = tl.where(l_i > 0, l_i, 1.0)
        dist_row = u_i / l_safe
        waad_row = v_i / l_safe
    else:
        l_safe = tl.where(l_i > 0, l_i, 1.0)
        dist_row = u_i / l_safe
        waad_row = v_i / l_safe
        lse2 = tl.where(l_i > 0, m_i + tl.log2(l_safe), float("inf"))  # rows with no key: p = 0
        # FAI band of the same rows, with the final LSE: H_lo <= t - s <= H_hi
        f_lo = (tl.maximum(qs - H_HI, kv_start) // BLOCK_N) * BLOCK_N
        f_hi = tl.where(has_rows, tl.minimum(qs + BLOCK_M, r_end) - H_LO, 0)
        for start_n in range(f_lo, f_hi, BLOCK_N):
            offs = start_n + offs_n
            k = tl.load(k_base + offs[None, :] * stride_kn + offs_d[:, None] * stride_kd,
                        mask=(offs < N)[None, :] & (offs_d < HEAD_DIM)[:, None], other=0.0).to(q.dtype)
            x = _logit2(tl.dot(q, k, input_precision=PREC), qk_scale, cap_in, cap_out, HAS_SOFTCAP)
            dist = offs_m[:, None] - offs[None, :]
            band = (dist >= H_LO) & (dist <= H_HI) & (offs >= kv_start)[None, :] & row_resp[:, None]
            if HAS_WINDOW:
                band = band & (dist < SW)
            p = tl.where(band, tl.exp2(x - lse2[:, None]), 0.0)
            tl.atomic_add(fai_base + offs, tl.sum(p, 0), mask=offs < N)

    tl.store(WAAD + pid_bh.to(tl.int64) * N + offs_m, waad_row, mask=waad_rows)
    # float64 sum over rows: one atomic per program; the mean over up to N rows keeps float32 row accuracy
    if HEAD_DIST:
        hd_part = tl.sum(tl.where(row_resp, dist_row, 0.0).to(tl.float64), 0)
        tl.atomic_add(HD + pid_bh, hd_part, mask=has_rows)


def _interpreted() -> bool:
    """True when the kernels were built for the Triton interpreter (TRITON_INTERPRET=1 at import)."""
    return type(_attention_stats_kernel).__name__ == "InterpretedFunction"


def _default_config(query: torch.Tensor, band_only: bool = False) -> dict:
    """Block sizes; for 16-bit inputs the fastest of those measured on an H200 (docs/benchmarks.md): 128 x 64 for
    the sweeps, 64 x 64 for band-only (about 20% faster there: less of each block lies outside the band)."""
    if not query.is_cuda:  # interpreter: few, small numpy steps
        return dict(block_m=32, block_n=32, num_warps=4, num_stages=1)
    if query.dtype == torch.float32:
        return dict(block_m=64, block_n=32, num_warps=4, num_stages=2)
    if band_only:
        return dict(block_m=64, block_n=64, num_warps=4, num_stages=3)
    return dict(block_m=128, block_n=64, num_warps=4, num_stages=3)


def _span(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """First index and last index + 1 of the True entries of each row of a bool [B, N] mask (0, 0 if none)."""
    n = mask.shape[1]
    idx = torch.arange(n, device=mask.device)
    first = torch.where(mask, idx, n).amin(1)
    last = torch.where(mask, idx + 1, 0).amax(1)
    return torch.minimum(first, last), last


def triton_attention_stats(
    query: torch.Tensor,
    key: torch.Tensor,
    attention_mask: torch.Tensor,
    response_mask: torch.Tensor,
    scaling: float,
    window: int,
    fai_horizon: tuple[int, int],
    *,
    softcap: float | None = None,
    sinks: torch.Tensor | None = None,
    sliding_window: int | None = None,
    row_lse: torch.Tensor | None = None,
    head_distance: bool = True,
    heads: tuple[torch.Tensor, torch.Tensor] | None = None,
    config: dict | None = None,
) -> AttentionStats:
    """Head distance, WAAD and FAI of one layer with the fused Triton kernel (see the module docstring).

    Args: as ``dense_attention_stats`` (masks bool [B, N], validated by ``attention_stats``; ``softcap``,
        ``sinks`` [Hq] and ``sliding_window`` the layer's score rule), plus
        row_lse: optional [B, Hq, >=N] float natural-log row log-sum-exp of the (softcapped) scores over the
            allowed keys, without the sink (as returned by SDPA's flash/efficient kernels); skips recomputing it.
            With ``sinks`` the sink is added to it here: ``log(exp(lse) + exp(sink_h))``.
        head_distance: compute the head distance (Eq. 7), which needs every causal pair. ``False`` with ``row_lse``
            runs the band-only kernel: only the key blocks within ``max(W - 1, H_hi)`` of the diagonal, with
            ``WAAD_t = sum_{t-s<W} A[t,s] (t-s) + W (1 - A_sink - sum_{t-s<W} A[t,s])``; ``head_distance`` is
            then None (also without ``row_lse``, where the full sweep runs for the normaliser).
        heads: optional (waad_heads, fai_heads), bool [Hq] each: WAAD is wanted only for the first set and FAI only
            for the second (the kept local and global groups); the other values are returned as 0. Band-only skips
            them: a WAAD-only head reads just the keys at ``t - s < W``, a head in neither set nothing.
        config: optional dict overriding the defaults of ``_default_config``: ``block_m``, ``block_n``,
            ``num_warps``, ``num_stages``.
    """
    if not query.is_cuda and not _interpreted():
        raise RuntimeError("the triton backend needs CUDA tensors, or TRITON_INTERPRET=1 set before importing triton")
    b, hq, n, d = query.shape
    hkv = key.shape[1]
    if query.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        query = query.float()
    key = key.to(query.dtype)
    band_only = row_lse is not None and not head_distance
    cfg = {**_default_config(query, band_only=band_only), **(config or {})}
    dev = query.device
    attention_mask = attention_mask.to(dev, torch.bool)
    response_mask = response_mask.to(dev, torch.bool)
    kv_start, kv_end = _span(attention_mask)
    r_start, r_end = _span(response_mask)
    bounds = torch.stack([kv_start, kv_end, r_start, r_end], 1).to(torch.int32).contiguous()
    resp = response_mask.to(torch.int8).contiguous()
    head_mode = (heads[0].to(dev, torch.int8) + 2 * heads[1].to(dev, torch.int8)).contiguous() if heads else resp

    waad = torch.zeros(b, hq, n, dtype=torch.float32, device=dev)
    fai_sum = torch.zeros(b, hq, n, dtype=torch.float32, device=dev)
    hd_sum = torch.zeros(b, hq, dtype=torch.float64, device=dev)
    lo, hi = fai_horizon
    if row_lse is not None:
        # rows with no allowed key have lse = -inf: +inf makes their probabilities 0 instead of NaN
        lse = row_lse.float()
        if sinks is not None:
            lse = torch.logaddexp(lse, sinks.float().to(dev)[None, :, None])
        lse = lse.nan_to_num(nan=float("inf"), neginf=float("inf"))
        lse_strides = (lse.stride(0), lse.stride(1), lse.stride(2))
    else:
        lse, lse_strides = waad, (0, 0, 0)  # unused
    dot_f32 = not query.is_cuda and query.dtype == torch.bfloat16
    cap_in, cap_out = (float(scaling) / softcap, softcap * LOG2E) if softcap is not None else (1.0, 1.0)
    sink_logits = sinks.float().to(dev).contiguous() if sinks is not None else waad  # unused without sinks
    sw = int(sliding_window) if sliding_window is not None else n + 1  # unused without a window
    block_d = max(16, triton.next_power_of_2(d))
    grid = (b * hq, triton.cdiv(n, cfg["block_m"]))
    if n > 0 and b * hq > 0:
        _attention_stats_kernel[grid](
            query, key, lse, sink_logits, bounds, resp, head_mode, waad, hd_sum, fai_sum,
            *query.stride(), *key.stride(), *lse_strides,
            n, hq, hq // hkv, float(scaling) * LOG2E, cap_in, cap_out, int(window), sw, int(lo), int(hi),
            HEAD_DIM=d, BLOCK_D=block_d, BLOCK_M=cfg["block_m"], BLOCK_N=cfg["block_n"],
            HAS_LSE=row_lse is not None, HEAD_DIST=bool(head_distance),
            PREC="ieee" if query.dtype == torch.float32 or dot_f32 else "tf32",
            DOT_F32=dot_f32, HAS_SOFTCAP=softcap is not None, HAS_SINK=sinks is not None,
            HAS_WINDOW=sliding_window is not None, HAS_HEADS=band_only and heads is not None,
            num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
        )
    n_rows = response_mask.sum(1).clamp(min=1).double()
    distance = (hd_sum / n_rows[:, None]).float() if head_distance else None
    # |T(s)| = number of response rows t with s + H_lo <= t <= s + H_hi
    csum = torch.nn.functional.pad(response_mask.int().cumsum(1), (1, 0))  # csum[i] = #resp in [0, i)
    idx = torch.arange(n, device=dev)
    counts = csum[:, (idx + hi + 1).clamp(max=n)] - csum[:, (idx + lo).clamp(max=n)]
    scale = (counts > 0) & attention_mask
    fai = fai_sum / counts.clamp(min=1).float()[:, None, :] * scale[:, None, :]
    stats = AttentionStats(waad=waad, fai=fai, head_distance=distance)
    return stats.keep_heads(*heads) if heads is not None and not band_only else stats


__all__ = ["triton_attention_stats"]
