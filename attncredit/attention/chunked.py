"""Exact attention statistics in chunked PyTorch, never building an N x N matrix (``backend="torch"``).

Math. For one query head, scores ``S[t,s] = scaling * q_t . k_s`` over keys ``s <= t``, row log-sum-exp
``lse_t = log sum_s exp S[t,s]`` and probabilities ``A[t,s] = exp(S[t,s] - lse_t)`` (docs/method.md,
"Attention statistics", Eq. 7, 9, 10):

* Pass 1 (rows). For a block of query rows, stream the key blocks left to right keeping, in float32, the
  running row max ``m_t`` and three sums rescaled by ``exp(m_old - m_new)`` when the max grows (the online
  softmax of FlashAttention)::

      l_t = sum_s e[t,s],   D_t = sum_s e[t,s] (t - s),   V_t = sum_s e[t,s] min(t - s, W),   e = exp(S - m_t)

  Then ``lse_t = m_t + log l_t``, the row distance ``d_t = D_t / l_t`` and ``WAAD_t = V_t / l_t``. Every
  weight is >= 0, so nothing cancels: neither ``t - sum_s A s`` nor ``W - sum_s A max(0, W - (t - s))`` is
  ever formed (the latter loses all digits of a small WAAD when W is large). A key block whose pairs are
  all at distance >= W ("far") needs no elementwise weights: with ``b`` its last key,
  ``sum_s e (t - s) = (t - b) sum_s e + sum_s e (b - s)`` (both terms >= 0, one matrix-vector product) and
  ``sum_s e min(t - s, W) = W sum_s e``; only the blocks within W + block of the diagonal are weighted
  elementwise. ``head_distance`` is the mean of ``d_t`` over response rows.
* Pass 2 (FAI band). With ``lse`` known, revisit only the key blocks that meet the band
  ``H_lo <= t - s <= H_hi``, recompute S there and add ``A[t,s]`` of response rows to per-key column sums::

      FAI_s = sum_{t in R, H_lo <= t-s <= H_hi} A[t,s] / #{t in R : H_lo <= t - s <= H_hi}   (0 if none)

  The receiver counts come from a prefix sum of the response mask.
* Band-only (``row_lse`` given and no head distance wanted: the head groups are kept from an earlier forward). Pass
  1 is replaced by the WAAD window: with ``A = exp(S - lse)`` (``lse`` including the sink), each row reads only its
  keys with ``t - s < W`` and the others, all at ``t - s >= W``, hold the rest of its key mass::

      WAAD_t = sum_{t-s<W} A[t,s] (t - s) + W (1 - exp(z_h - lse_t) - sum_{t-s<W} A[t,s])

  (no sink: ``exp(z_h - lse_t) = 0``); pass 2 runs with the given ``lse``. Time ``O(N (W + H_hi - H_lo + block))``.

Attention variants (the layer's own score rule). Softcapping replaces every score by ``c tanh(S / c)`` before
anything else; a sliding window of ``w`` keys masks the pairs with ``t - s >= w`` (rows start their key stream at
``t0 - w + 1``, and a block that reaches past a row's window is weighted elementwise, with the mask); a sink logit
``z_h`` starts each row's online softmax with ``m = z_h`` and ``l = 1``, i.e. one more term of the normaliser at
distance 0 that no sum other than ``l`` sees, so ``A[t, s] = e[t, s] / l_t`` gives the sink its share and no key.

Each sequence is cropped to [first real token, last response token]: padding (which may hold anything,
even NaN) never enters a score, distances are index differences inside the crop (real tokens are
contiguous), keys after the last response row receive nothing, and only rows from the first response
token on are computed as queries.

Memory. Scores live in tiles of ``heads x block x block`` float32 (heads = as many whole GQA groups of
query heads as fit in the tile budget of ``_TILES``, at least one group), query/key blocks are upcast to
float32 per tile, and a few tile-sized temporaries exist at once. Peak extra memory is therefore
``O(Hq N + Hq block D + max(tile budget, Hq / Hkv block^2))`` floats: linear in N, independent of W and
H_hi, and within the ``O(N (W + H_hi + block))`` per head that the design allows. Time is that of one
causal attention score pass, plus ``N (H_hi - H_lo + block)`` more scores per head for the FAI band.
"""

from __future__ import annotations

import torch

from .types import AttentionStats

# (tile edge, float32 scores per tile) by device type; a tile holds at least one whole GQA group
# (Hq / Hkv x edge^2 scores), even above the budget. Measured: edge 256 is fastest on CPU (vs 128/512/1024
# at 8k tokens); on an H200, 1024 with 64 MiB tiles was fastest at 1k and 8k tokens, 10% behind 2048 at 32k.
_TILES = {"cpu": (256, 1 << 21)}
_ACCELERATOR_TILE = (1024, 1 << 24)


def chunked_attention_stats(
    query, key, attention_mask, response_mask, scaling, window, fai_horizon, *, softcap=None, sinks=None,
    sliding_window=None, row_lse=None, head_distance=True, heads=None, block: int | None = None,
) -> AttentionStats:
    """Same contract as ``stats.dense_attention_stats`` (inputs already validated); ``block`` sets the tile edge.

    With ``row_lse`` ([B, Hq, >=N], natural log, without the sink) and ``head_distance=False`` only the band passes
    run (module docstring, "Band-only"); with ``head_distance=True`` pass 1 computes the normaliser itself (it needs
    every causal pair for the head distance anyway) and ``row_lse`` is not read. ``heads`` (waad_heads, fai_heads)
    zeroes WAAD and FAI outside them.
    """
    variant = _Variant(softcap, sinks, sliding_window)
    band_only = row_lse is not None and not head_distance
    b, hq, n, _ = query.shape
    default_block, tile_elements = _TILES.get(query.device.type, _ACCELERATOR_TILE)
    block = block or default_block
    group = hq // key.shape[1]
    kv_per_chunk = max(1, tile_elements // (group * block * block))  # KV heads (with their query heads) per tile
    waad = torch.zeros(b, hq, n, dtype=torch.float32, device=query.device)
    fai = torch.zeros_like(waad)
    distance = torch.zeros(b, hq, dtype=torch.float32, device=query.device)
    for i, span in enumerate(_spans(attention_mask, response_mask)):
        if span is None:
            continue
        start, first, stop = span
        part = slice(start, stop)
        given = row_lse[i, :, first:stop].float() if band_only else None
        waad[i, :, part], fai[i, :, part], distance[i] = _sequence_stats(
            query[i, :, part], key[i, :, part], response_mask[i, part], first - start,
            scaling, window, fai_horizon, block, kv_per_chunk, variant, given,
        )
    stats = AttentionStats(waad=waad, fai=fai, head_distance=distance if head_distance else None)
    return stats.keep_heads(*heads) if heads is not None else stats


def _spans(attention_mask, response_mask):
    """Per sequence (first real token, first response token, last response token + 1), or None without response."""
    b, n = attention_mask.shape
    if n == 0:
        return [None] * b
    idx = torch.arange(n, device=attention_mask.device)
    start = torch.where(attention_mask, idx, n).amin(-1)
    first = torch.where(response_mask, idx, n).amin(-1)
    stop = torch.where(response_mask, idx + 1, 0).amax(-1)
    return [tuple(row) if row[2] > 0 else None for row in torch.stack([start, first, stop], -1).tolist()]


class _Variant:
    """The layer's score rule: optional softcap, per-head sink logits [Hq] and sliding window (see module doc)."""

    def __init__(self, softcap, sinks, sliding_window):
        self.softcap, self.sinks, self.sliding_window = softcap, sinks, sliding_window

    def scores(self, scores):
        """Softcap raw scaled scores in place: ``softcap tanh(S / softcap)``."""
        if self.softcap is not None:
            scores.div_(self.softcap).tanh_().mul_(self.softcap)
        return scores

    def outside(self, dist):
        """Bool tile of the pairs the layer does not attend to: ``t < s`` or ``t - s >= sliding_window``."""
        out = dist < 0
        if self.sliding_window is not None:
            out |= dist >= self.sliding_window
        return out


def _sequence_stats(query, key, response, first, scaling, window, fai_horizon, block, kv_per_chunk, variant,
                    given_lse=None):
    """WAAD [Hq, L], FAI [Hq, L], head distance [Hq] of one cropped sequence, ``kv_per_chunk`` GQA groups at a time;
    band-only (head distance 0) when the row LSE of rows first..L-1 is given ([Hq, L - first])."""
    hq, length, _ = query.shape
    hkv = key.shape[0]
    group = hq // hkv
    waad = torch.zeros(hq, length, dtype=torch.float32, device=query.device)
    fai = torch.zeros_like(waad)
    head_distance = torch.zeros(hq, dtype=torch.float32, device=query.device)
    rows = response[first:].float()
    counts = _receiver_counts(response, fai_horizon)
    for h0 in range(0, hkv, kv_per_chunk):
        heads = slice(h0 * group, min(h0 + kv_per_chunk, hkv) * group)
        q = query[heads].unflatten(0, (-1, group))  # [kv heads, group, L, D]
        k = key[h0 : h0 + kv_per_chunk]  # [kv heads, L, D]
        sinks = None if variant.sinks is None else variant.sinks[heads].view(-1, group, 1)
        if given_lse is None:
            lse, row_distance, row_waad = _row_pass(q, k, first, scaling, window, block, variant, sinks)
            head_distance[heads] = (row_distance * rows).sum(-1).flatten() / rows.sum()
        else:
            lse = given_lse[heads].unflatten(0, (-1, group))
            if sinks is not None:
                lse = torch.logaddexp(lse, sinks)
            row_waad = _window_pass(q, k, lse, first, scaling, window, block, variant, sinks)
        waad[heads, first:] = torch.where(rows > 0, row_waad, 0.0).flatten(0, 1)
        lse = lse.masked_fill(rows == 0, float("inf"))  # rows that do not count get A = exp(S - inf) = 0
        column_sums = _band_column_sums(q, k, lse, first, scaling, fai_horizon, block, variant)
        fai[heads] = (column_sums / counts.clamp(min=1)).flatten(0, 1)
    return waad, fai, head_distance


def _receiver_counts(response, fai_horizon):
    """Number of response rows t with H_lo <= t - s <= H_hi, per key s (float [L])."""
    length = response.shape[0]
    lo, hi = (min(h, length) for h in fai_horizon)
    below = torch.nn.functional.pad(response.long().cumsum(0), (1, 0))  # below[x] = #response rows < x
    s = torch.arange(length, device=response.device)
    return (below[(s + hi + 1).clamp(max=length)] - below[(s + lo).clamp(max=length)]).float()


def _row_pass(q, k, first, scaling, window, block, variant, sinks):
    """lse, row distance d_t and WAAD_t of rows first..L-1 (each [kv heads, group, L - first])."""
    starts = range(first, q.shape[2], block)
    blocks = [_row_block(q[:, :, t0 : t0 + block], k, t0, scaling, window, block, variant, sinks) for t0 in starts]
    return [torch.cat(parts, -1) for parts in zip(*blocks)]


def _row_block(q, k, t0, scaling, window, block, variant, sinks):
    """Pass 1 for query rows t0.. against keys max(0, t - sliding_window + 1)..t, streaming key blocks with the
    online softmax; the sink (if any) starts each row as a key of weight exp(sink) at distance 0."""
    q = q.float() * scaling
    rows = q.shape[2]
    t = torch.arange(t0, t0 + rows, device=q.device, dtype=torch.float32)
    # finite start: a row whose keys in a block are all outside its window keeps m and gets e = 0, not NaN
    m = torch.full(q.shape[:-1], -1e30, device=q.device)
    total, dist_sum, waad_sum = torch.zeros_like(m), torch.zeros_like(m), torch.zeros_like(m)
    if sinks is not None:
        m, total = m.maximum(sinks), total + 1.0  # exp(sink - m) with m = sink
    s_start = 0 if variant.sliding_window is None else max(0, t0 - variant.sliding_window + 1)
    for s0 in range(s_start, t0 + rows, block):
        scores = variant.scores(q @ k[:, None, s0 : s0 + block].float().transpose(-1, -2))  # [kv, group, rows, keys]
        last = s0 + scores.shape[-1] - 1
        beyond_window = variant.sliding_window is not None and t0 + rows - 1 - s0 >= variant.sliding_window
        far = t0 - last >= window and not beyond_window
        if not far:
            dist = _distances(t0, s0, scores.shape[-2:], q.device)
            scores.masked_fill_(variant.outside(dist), float("-inf"))
        m_new = torch.maximum(m, scores.amax(-1))
        shrink = torch.exp(m - m_new)
        e = scores.sub_(m_new[..., None]).exp_()
        total, dist_sum, waad_sum, m = total * shrink, dist_sum * shrink, waad_sum * shrink, m_new
        if far:
            sums = e @ _far_weights(scores.shape[-1], q.device)  # [..., 2]: sum e, sum e (last - s)
            total += sums[..., 0]
            dist_sum += (t - last) * sums[..., 0] + sums[..., 1]
            waad_sum += window * sums[..., 0]
        else:
            total += e.sum(-1)
            dist_sum += (e * dist).sum(-1)
            waad_sum += (e * dist.clamp(max=window)).sum(-1)
    return m + total.log(), dist_sum / total, waad_sum / total


def _window_pass(q, k, lse, first, scaling, window, block, variant, sinks):
    """Band-only WAAD of rows first..L-1 from their LSE (with the sink): the keys with t - s < W, read here, plus
    ``W`` times the rest of the row's key mass, ``1 - exp(sink - lse_t) - sum_{t-s<W} A[t,s]`` (those keys are all at
    ``t - s >= W``)."""
    length = q.shape[2]
    parts = []
    for t0 in range(first, length, block):
        t1 = min(t0 + block, length)
        s0 = max(0, t0 - window + 1)
        scores = variant.scores(q[:, :, t0:t1].float() * scaling @ k[:, None, s0:t1].float().transpose(-1, -2))
        dist = _distances(t0, s0, scores.shape[-2:], q.device)
        scores.masked_fill_((dist >= window) | variant.outside(dist), float("-inf"))
        p = scores.sub_(lse[..., t0 - first : t1 - first, None]).exp_()
        mass = 1.0 if sinks is None else 1.0 - torch.exp(sinks - lse[..., t0 - first : t1 - first])
        rest = (mass - p.sum(-1)).clamp(min=0)
        parts.append((p * dist).sum(-1) + window * rest)
    return torch.cat(parts, -1)


def _band_column_sums(q, k, lse, first, scaling, fai_horizon, block, variant):
    """Pass 2: per key s, sum of A[t,s] = exp(S - lse_t) over rows t >= first with H_lo <= t - s <= H_hi."""
    lo, hi = fai_horizon
    length = q.shape[2]
    sums = torch.zeros(q.shape[:3], dtype=torch.float32, device=q.device)
    for t0 in range(first, length, block):
        t1 = min(t0 + block, length)
        qf = q[:, :, t0:t1].float() * scaling
        row_lse = lse[..., t0 - first : t1 - first, None]
        for s0 in range(max(0, t0 - hi), t1 - lo, block):
            s1 = min(s0 + block, t1 - lo)
            scores = variant.scores(qf @ k[:, None, s0:s1].float().transpose(-1, -2))
            dist = _distances(t0, s0, scores.shape[-2:], q.device)
            scores.masked_fill_((dist < lo) | (dist > hi) | variant.outside(dist), float("-inf"))
            sums[..., s0:s1] += scores.sub_(row_lse).exp_().sum(-2)
    return sums


def _distances(t0, s0, shape, device):
    """t - s for rows t0.. and keys s0.. as a float [rows, keys] tile."""
    rows, keys = shape
    t = torch.arange(t0, t0 + rows, device=device)
    s = torch.arange(s0, s0 + keys, device=device)
    return (t[:, None] - s[None, :]).float()


def _far_weights(keys, device):
    """[keys, 2] columns (1, last - s) for a key block whose last key is ``last``."""
    return torch.stack([torch.ones(keys, device=device), torch.arange(keys - 1, -1, -1, device=device).float()], -1)
