"""Attention variants in the statistics: logit softcapping, attention sinks and sliding windows.

The dense reference is checked against Eq. 7, 9, 10 computed row by row in float64 from the variant's own softmax;
the chunked ``torch`` backend and the Triton kernel (under TRITON_INTERPRET=1 on CPU) against the dense reference,
with GQA, left/right padding, odd lengths and window edges that fall inside and across key blocks.
"""

import math

import pytest
import torch
from test_attention_stats import assert_stats_close, make_inputs

from attncredit.attention.chunked import chunked_attention_stats
from attncredit.attention.stats import attention_stats, dense_attention_stats
from attncredit.attention.types import AttentionStats


def brute_force(query, key, attention_mask, response_mask, window, fai_horizon, softcap, sinks, sliding_window):
    """Eq. 7, 9, 10 from one float64 softmax per real query row over its allowed keys plus the sink."""
    b, hq, n, d = query.shape
    group = hq // key.shape[1]
    lo, hi = fai_horizon
    waad, fai, dist = torch.zeros(b, hq, n), torch.zeros(b, hq, n), torch.zeros(b, hq)
    for i in range(b):
        real = [t for t in range(n) if attention_mask[i, t]]
        resp = [t for t in range(n) if response_mask[i, t]]
        for h in range(hq):
            probs = {}
            for t in real:
                keys = [s for s in real if s <= t and (sliding_window is None or t - s < sliding_window)]
                scores = torch.stack([query[i, h, t].double() @ key[i, h // group, s].double() for s in keys])
                scores = scores / math.sqrt(d)
                if softcap is not None:
                    scores = softcap * torch.tanh(scores / softcap)
                if sinks is not None:
                    scores = torch.cat([scores, sinks[h].double().view(1)])
                p = torch.softmax(scores, 0).tolist()
                probs[t] = dict(zip(keys, p))  # the sink's share (last entry, if any) belongs to no key
            for t in resp:
                waad[i, h, t] = sum(p * min(t - s, window) for s, p in probs[t].items())
            if resp:
                dist[i, h] = sum(sum(p * (t - s) for s, p in probs[t].items()) for t in resp) / len(resp)
            for s in real:
                receivers = [t for t in resp if lo <= t - s <= hi]
                if receivers:
                    fai[i, h, s] = sum(probs[t].get(s, 0.0) for t in receivers) / len(receivers)
    return AttentionStats(waad=waad, fai=fai, head_distance=dist)


VARIANTS = {  # name: (softcap, sinks?, sliding_window)
    "softcap": (4.0, False, None),
    "sinks": (None, True, None),
    "window": (None, False, 3),
    "all": (2.5, True, 4),
}


def _variant(name, hq, seed=0):
    softcap, with_sinks, sliding_window = VARIANTS[name]
    sinks = torch.randn(hq, generator=torch.Generator().manual_seed(seed)) * 2 if with_sinks else None
    return dict(softcap=softcap, sinks=sinks, sliding_window=sliding_window)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_dense_reference_matches_brute_force(name):
    query, key, attention_mask, response_mask = make_inputs(4, 2, 11, d=8)
    variant = _variant(name, 4)
    for window, horizon in [(2, (1, 3)), (10, (0, 10000))]:
        dense = attention_stats(query, key, attention_mask=attention_mask, response_mask=response_mask, window=window,
                                fai_horizon=horizon, backend="dense", **variant)
        expected = brute_force(query, key, attention_mask, response_mask, window, horizon, **variant)
        assert_stats_close(dense, expected)
    plain = attention_stats(query, key, attention_mask=attention_mask, response_mask=response_mask, backend="dense")
    assert not torch.allclose(dense.waad, plain.waad, atol=1e-3)  # the variant really changes the numbers


def test_sink_takes_mass_and_window_drops_far_keys():
    query, key, attention_mask, response_mask = make_inputs(2, 1, 30, batch=2)
    masks = dict(attention_mask=attention_mask, response_mask=response_mask, backend="dense")
    huge_sink = attention_stats(query, key, sinks=torch.full((2,), 60.0), **masks)
    assert float(huge_sink.waad.abs().max()) < 1e-6 and float(huge_sink.fai.abs().max()) < 1e-6
    narrow = attention_stats(query, key, sliding_window=3, window=10, **masks)
    assert float(narrow.waad.max()) <= 2.0 + 1e-6  # only t - s in {0, 1, 2} carries probability
    assert float(narrow.waad.max()) > 1.0


CASES = [  # Hq, Hkv, N, window, fai_horizon, block, variant
    (4, 2, 7, 3, (1, 5), 4, "all"),
    (6, 1, 37, 10, (10, 100), 8, "window"),
    (4, 2, 64, 3, (0, 10000), 16, "softcap"),
    (3, 3, 64, 10, (2, 30), None, "sinks"),
    (4, 2, 131, 4, (0, 50), 32, "all"),
    (2, 1, 257, 10, (10, 100), 64, "all"),
]


@pytest.mark.parametrize("hq,hkv,n,window,fai_horizon,block,name", CASES)
def test_torch_backend_matches_dense(hq, hkv, n, window, fai_horizon, block, name):
    query, key, attention_mask, response_mask = make_inputs(hq, hkv, n)
    variant = _variant(name, hq)
    if variant["sliding_window"] is not None and n > 20:
        variant["sliding_window"] = n // 3 + 1  # window edges inside and across the key blocks
    dense = dense_attention_stats(query, key, attention_mask.bool(), response_mask.bool(), 16**-0.5, window,
                                  fai_horizon, **variant)
    chunked = chunked_attention_stats(query, key, attention_mask.bool(), response_mask.bool(), 16**-0.5, window,
                                      fai_horizon, block=block, **variant)
    assert_stats_close(chunked, dense)


@pytest.mark.parametrize("sliding_window", [1, 2, 9, 31, 32, 33, 200])
def test_torch_backend_window_edges(sliding_window):
    query, key, attention_mask, response_mask = make_inputs(2, 1, 97, batch=4)
    args = (query, key, attention_mask.bool(), response_mask.bool(), 0.3, 10, (10, 100))
    dense = dense_attention_stats(*args, sliding_window=sliding_window, softcap=7.0)
    assert_stats_close(chunked_attention_stats(*args, sliding_window=sliding_window, softcap=7.0, block=32), dense)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(softcap=0.0), r"softcap must be a finite number > 0 or None, got 0.0"),
        (dict(softcap=float("inf")), r"softcap must be a finite number > 0"),
        (dict(softcap="50"), r"softcap must be a finite number > 0"),
        (dict(sinks=torch.zeros(3)), r"sinks must be a \[Hq=4\] tensor of per-head logits or None, got \(3,\)"),
        (dict(sinks=[0.0] * 4), r"sinks must be a \[Hq=4\] tensor"),
        (dict(sinks=torch.tensor([0.0, float("nan"), 0.0, 0.0])), r"sinks must be finite"),
        (dict(sliding_window=0), r"sliding_window must be an integer >= 1 or None, got 0"),
        (dict(sliding_window=2.5), r"sliding_window must be an integer >= 1"),
    ],
)
def test_bad_variant_raises(kwargs, message):
    q, k = torch.randn(2, 4, 6, 8), torch.randn(2, 2, 6, 8)
    with pytest.raises(ValueError, match=message):
        attention_stats(q, k, backend="torch", **kwargs)
