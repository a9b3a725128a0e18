"""Attention statistics: the dense reference against a brute force, the ``torch`` backend against the dense one."""

import math
import subprocess
import sys
import textwrap

import pytest
import torch

from attncredit.attention.chunked import chunked_attention_stats
from attncredit.attention.stats import attention_stats
from attncredit.attention.types import AttentionStats

FIELDS = ("waad", "fai", "head_distance")


def make_inputs(hq, hkv, n, *, batch=4, d=16, dtype=torch.float32, seed=0):
    """Random q/k and masks: left padding, right padding, both, none; responses start mid-sequence
    (row 1's response is followed by real non-response tokens, row 2's has holes, row 3 has no response row)."""
    gen = torch.Generator().manual_seed(seed)
    query = (torch.randn(batch, hq, n, d, generator=gen) * 2).to(dtype)
    key = torch.randn(batch, hkv, n, d, generator=gen).to(dtype)
    attention_mask = torch.zeros(batch, n, dtype=torch.long)
    response_mask = torch.zeros(batch, n, dtype=torch.long)
    spans = [  # real tokens [start, stop), response [r0, r1)
        (n // 3, n, n // 2, n),
        (0, n - n // 5, n // 4, n - n // 3),
        (n // 7, n - n // 7, n // 3, n - n // 7),
        (0, n, 0, 0),
    ]
    for i, (start, stop, r0, r1) in enumerate(spans[:batch]):
        attention_mask[i, start:stop] = 1
        response_mask[i, max(r0, start) : min(r1, stop)] = 1
    if batch > 2:
        response_mask[2, ::5] = 0  # holes (e.g. masked tool output) inside the response
    return query, key, attention_mask, response_mask


def assert_stats_close(actual: AttentionStats, expected: AttentionStats):
    """|error| <= 1e-5, or 16 float32 epsilons relative where 1e-5 is below float32 resolution (values > 5)."""
    for field in FIELDS:
        a, e = getattr(actual, field), getattr(expected, field)
        assert a.dtype == torch.float32 and a.shape == e.shape, field
        tolerance = torch.clamp(16 * torch.finfo(torch.float32).eps * e.abs(), min=1e-5)
        err = (a - e).abs()
        excess = (err - tolerance).max()
        assert excess <= 0, f"{field}: max error {err.max():.3g}, {excess:.3g} over the tolerance"


def brute_force(query, key, attention_mask, response_mask, window, fai_horizon):
    """Eq. 7, 9, 10 with Python loops over one float64 torch.softmax per real query row."""
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
                keys = [s for s in real if s <= t]
                scores = torch.stack([query[i, h, t].double() @ key[i, h // group, s].double() for s in keys])
                scores = scores / math.sqrt(d)
                probs[t] = dict(zip(keys, torch.softmax(scores, 0).tolist()))
            for t in resp:
                waad[i, h, t] = sum(p * min(t - s, window) for s, p in probs[t].items())
            if resp:
                dist[i, h] = sum(sum(p * (t - s) for s, p in probs[t].items()) for t in resp) / len(resp)
            for s in real:
                receivers = [t for t in resp if lo <= t - s <= hi]
                if receivers:
                    fai[i, h, s] = sum(probs[t][s] for t in receivers) / len(receivers)
    return AttentionStats(waad=waad, fai=fai, head_distance=dist)


@pytest.mark.parametrize("window,fai_horizon", [(2, (1, 3)), (10, (0, 10000))])
def test_dense_reference_matches_brute_force(window, fai_horizon):
    query, key, attention_mask, response_mask = make_inputs(4, 2, 9, d=8)
    masks = dict(attention_mask=attention_mask, response_mask=response_mask)
    dense = attention_stats(query, key, **masks, window=window, fai_horizon=fai_horizon, backend="dense")
    assert_stats_close(dense, brute_force(query, key, attention_mask, response_mask, window, fai_horizon))
    padding, not_response = attention_mask == 0, response_mask == 0
    assert bool((dense.waad[not_response[:, None].expand_as(dense.waad)] == 0).all())
    assert bool((dense.fai[padding[:, None].expand_as(dense.fai)] == 0).all())
    assert bool((dense.head_distance[3] == 0).all())  # no response row
    assert bool((dense.waad[0, :, 8] > 0).all()) and bool((dense.fai[0, :, 4] > 0).all())  # not trivially zero


CASES = [  # Hq, Hkv, N, window, fai_horizon, block (None: the default tile)
    (4, 2, 1, 10, (10, 100), None),
    (4, 2, 7, 3, (1, 5), 4),
    (6, 1, 7, 1, (0, 0), 2),
    (3, 3, 64, 10, (10, 100), 16),
    (6, 1, 64, 1, (0, 10000), 8),
    (4, 2, 64, 100, (1, 5), None),
    (4, 2, 257, 3, (1, 5), None),
    (6, 1, 257, 300, (0, 10000), 64),
    (3, 3, 257, 10, (10, 100), 32),
    (2, 1, 1000, 10, (10, 100), None),
    (2, 1, 1000, 3, (0, 10000), 96),
    (2, 2, 1000, 1, (0, 0), 128),
]


@pytest.mark.parametrize("hq,hkv,n,window,fai_horizon,block", CASES)
def test_torch_backend_matches_dense(hq, hkv, n, window, fai_horizon, block):
    query, key, attention_mask, response_mask = make_inputs(hq, hkv, n, batch=4 if n < 1000 else 2)
    masks = dict(attention_mask=attention_mask, response_mask=response_mask)
    dense = attention_stats(query, key, **masks, window=window, fai_horizon=fai_horizon, backend="dense")
    scaling = query.shape[-1] ** -0.5
    chunked = chunked_attention_stats(
        query, key, attention_mask.bool(), response_mask.bool(), scaling, window, fai_horizon, block=block
    )
    assert_stats_close(chunked, dense)


@pytest.mark.parametrize("hq,hkv,n,window,fai_horizon", [(4, 2, 257, 10, (10, 100)), (6, 1, 100, 3, (0, 10000))])
def test_torch_backend_bf16_matches_dense_on_same_inputs(hq, hkv, n, window, fai_horizon):
    """Both backends upcast the same bf16 values, so they agree to float32 rounding (far inside bf16 rounding)."""
    inputs = make_inputs(hq, hkv, n, dtype=torch.bfloat16)
    kwargs = dict(attention_mask=inputs[2], response_mask=inputs[3], window=window, fai_horizon=fai_horizon)
    chunked = attention_stats(*inputs[:2], **kwargs, backend="torch")
    assert_stats_close(chunked, attention_stats(*inputs[:2], **kwargs, backend="dense"))


def test_default_response_and_auto_backend_on_cpu():
    query, key, attention_mask, _ = make_inputs(4, 2, 50)
    auto = attention_stats(query, key, attention_mask=attention_mask, scaling=0.3)
    dense = attention_stats(query, key, attention_mask=attention_mask, scaling=0.3, backend="dense")
    assert_stats_close(auto, dense)
    assert bool((auto.waad[0, :, 20:] > 0).all())  # every real token is a response row by default


def test_garbage_in_padding_is_ignored():
    query, key, attention_mask, response_mask = make_inputs(4, 2, 40)
    padding = attention_mask == 0
    clean = attention_stats(query, key, attention_mask=attention_mask, response_mask=response_mask, backend="torch")
    query[padding[:, None].expand(query.shape[:3])] = float("nan")
    key[padding[:, None].expand(key.shape[:3])] = float("inf")
    for backend in ("torch", "dense"):
        dirty = attention_stats(query, key, attention_mask=attention_mask, response_mask=response_mask, backend=backend)
        assert_stats_close(dirty, clean)


def test_empty_sequence():
    query, key = torch.randn(2, 4, 0, 8), torch.randn(2, 2, 0, 8)
    out = attention_stats(query, key, backend="torch")
    assert out.waad.shape == (2, 4, 0) and out.fai.shape == (2, 4, 0)
    assert out.head_distance.tolist() == [[0.0] * 4] * 2


def _bad_inputs():
    q, k = torch.randn(2, 4, 6, 8), torch.randn(2, 2, 6, 8)
    ones = torch.ones(2, 6)
    left = torch.tensor([[0, 0, 1, 1, 1, 1]] * 2)
    nan_q = q.clone()
    nan_q[1, 2, 3, 0] = float("nan")
    nan_lse = torch.zeros(2, 4, 6)
    nan_lse[1, 0, 2] = float("nan")
    return [  # (query, key, kwargs, message pattern)
        (q[0], k, {}, r"query must be \[B, Hq, N, D\]"),
        (q, k[0], {}, r"key must be \[B, Hkv, N, D\]"),
        (q, k[:, :, :5], {}, r"key must be \[B=2, Hkv, N=6, D=8\], got shape \(2, 2, 5, 8\)"),
        (q, k[..., :4], {}, r"key must be \[B=2, Hkv, N=6, D=8\]"),
        (q, k[:1], {}, r"key must be \[B=2, Hkv, N=6, D=8\]"),
        (q, torch.randn(2, 3, 6, 8), {}, r"Hq=4 must be a positive multiple of key heads Hkv=3"),
        (q[:, :0], k, {}, r"Hq=0 must be a positive multiple of key heads Hkv=2"),
        (q, k, dict(attention_mask=torch.ones(2, 5)), r"attention_mask must be \[B=2, N=6\], got shape \(2, 5\)"),
        (q, k, dict(response_mask=torch.ones(6)), r"response_mask must be \[B=2, N=6\], got shape \(6,\)"),
        (q, k, dict(attention_mask=left, response_mask=ones), r"response_mask marks padding"),
        (q, k, dict(attention_mask=torch.tensor([[1, 1, 0, 1, 1, 1]] * 2)), r"attention_mask must mark one contiguous"),
        (q, k, dict(window=0), r"window must be an integer >= 1, got 0"),
        (q, k, dict(window=2.5), r"window must be an integer >= 1"),
        (q, k, dict(window=None), r"window must be an integer >= 1"),
        (q, k, dict(fai_horizon=(5, 4)), r"fai_horizon must be integers \(H_lo, H_hi\) with 0 <= H_lo <= H_hi"),
        (q, k, dict(fai_horizon=(-1, 4)), r"fai_horizon must be integers"),
        (q, k, dict(fai_horizon=(1, 2, 3)), r"fai_horizon must be integers"),
        (q, k, dict(fai_horizon=10), r"fai_horizon must be integers"),
        (q, k, dict(backend="flash"), r"backend must be one of"),
        (q, k, dict(scaling=float("nan")), r"scaling must be a finite number"),
        (nan_q, k, {}, r"query has NaN or inf at a real token \(batch 1, position 3\)"),
        (q, k * float("inf"), {}, r"key has NaN or inf at a real token \(batch 0, position 0\)"),
        (q, k, dict(row_lse=torch.zeros(2, 4, 5)), r"row_lse must be \[B=2, Hq=4, >=N=6\], got \(2, 4, 5\)"),
        (q, k, dict(row_lse=torch.zeros(2, 4, 6, dtype=torch.long)), r"row_lse must be a float tensor on cpu"),
        (q, k, dict(row_lse=nan_lse, response_mask=ones), r"row_lse has NaN or inf at a response row \(batch 1, "
         r"position 2\); only other rows may"),
        (q, k, dict(head_distance=1), r"head_distance must be True or False, got 1"),
    ]


@pytest.mark.parametrize("query,key,kwargs,message", _bad_inputs())
def test_bad_input_raises_value_error(query, key, kwargs, message):
    with pytest.raises(ValueError, match=message):
        attention_stats(query, key, **{"backend": "torch", **kwargs})


def test_row_lse_may_be_anything_outside_the_response():
    q, k = torch.randn(2, 4, 6, 8), torch.randn(2, 2, 6, 8)
    lse = torch.logsumexp(  # the exact normaliser of the response rows 3..5; NaN on a prompt row
        (q @ k.repeat_interleave(2, 1).transpose(-1, -2) * 8**-0.5).masked_fill(~torch.ones(6, 6).tril().bool(), -1e30),
        -1,
    )
    lse[0, 1, 1] = float("nan")
    late = torch.tensor([[0, 0, 0, 1, 1, 1]] * 2)
    out = attention_stats(q, k, response_mask=late, row_lse=lse, head_distance=False, backend="torch")
    ref = attention_stats(q, k, response_mask=late, backend="dense")
    assert out.head_distance is None
    torch.testing.assert_close(out.waad, ref.waad, atol=1e-5, rtol=1e-5)


PEAK_MEMORY_SCRIPT = """
import resource, torch
from attncredit.attention.stats import attention_stats
torch.set_num_threads(1)  # memory does not depend on it; speed on a shared CPU does (OpenMP spin-waits)
n = 16384
query, key = torch.randn(1, 2, n, 64), torch.randn(1, 1, n, 64)
response = torch.ones(1, n, dtype=torch.bool)
response[:, : n // 4] = False
attention_stats(query[:, :, :300], key[:, :, :300], response_mask=response[:, :300], backend="torch")  # load kernels
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out = attention_stats(query, key, response_mask=response, backend="torch")
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
assert bool(out.waad[0, :, n // 4 :].gt(0).all()) and bool(out.fai.isfinite().all())
print((after - before) * 1024)  # ru_maxrss is in KiB on Linux
"""


def test_torch_backend_at_16k_tokens_stays_under_1_gib():
    """Dense probabilities would take 2 x 16384^2 x 4 B = 2 GiB; the chunked pass needs a few tiles."""
    command = [sys.executable, "-c", textwrap.dedent(PEAK_MEMORY_SCRIPT)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    growth = int(result.stdout.split()[-1])
    assert growth < 2**30, f"peak RSS grew by {growth / 2**20:.0f} MiB"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_torch_backend_on_cuda_matches_dense(dtype):
    query, key, attention_mask, response_mask = make_inputs(6, 2, 700, dtype=dtype)
    kwargs = dict(attention_mask=attention_mask, response_mask=response_mask, window=10, fai_horizon=(10, 100))
    dense = attention_stats(query, key, **kwargs, backend="dense")
    cuda_kwargs = {name: mask.cuda() for name, mask in kwargs.items() if torch.is_tensor(mask)}
    on_gpu = attention_stats(query.cuda(), key.cuda(), **{**kwargs, **cuda_kwargs}, backend="torch")
    assert_stats_close(AttentionStats(**{f: getattr(on_gpu, f).cpu() for f in FIELDS}), dense)
