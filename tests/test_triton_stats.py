"""Parity of the fused Triton attention-stats kernel with the dense reference (attention/stats.py).

On a CUDA machine the kernels run compiled; elsewhere they run on CPU tensors under the Triton
interpreter (conftest.py sets TRITON_INTERPRET=1 before any test imports the kernels), with small shapes.
Skipped when triton is not installed (``pip install attncredit[triton]``).
"""

import math

import pytest
import torch

CUDA = torch.cuda.is_available()
pytest.importorskip("triton")

from attncredit.attention import stats as stats_mod  # noqa: E402
from attncredit.attention.chunked import chunked_attention_stats  # noqa: E402
from attncredit.attention.triton_stats import _interpreted, triton_attention_stats  # noqa: E402

DEVICE = "cuda" if CUDA else "cpu"
assert CUDA or _interpreted(), "without CUDA the kernels must run under the Triton interpreter (see conftest.py)"

FIELDS = ("waad", "fai", "head_distance")


def _inputs(b, hq, hkv, n, d, dtype, *, pad, resp_from=1 / 3, resp_gaps=False, scale=1.0, seed=0):
    """Random q/k; sequence 0 left-padded, sequence 1 right-padded (pad='mixed'); response from a fraction on."""
    g = torch.Generator().manual_seed(seed)
    q = (torch.randn(b, hq, n, d, generator=g) * scale).to(dtype)
    k = (torch.randn(b, hkv, n, d, generator=g) * scale).to(dtype)
    attn = torch.ones(b, n, dtype=torch.bool)
    if pad == "mixed" and n > 4:
        attn[0, : n // 5] = False
        if b > 1:
            attn[1, n - n // 4 :] = False
    elif pad == "left" and n > 2:
        attn[:, : n // 3] = False
    elif pad == "right" and n > 2:
        attn[:, n - n // 3 :] = False
    resp = torch.zeros(b, n, dtype=torch.bool)
    for i in range(b):
        real = attn[i].nonzero().flatten()
        resp[i, real[int(len(real) * resp_from) :]] = True
    if resp_gaps:
        resp &= torch.rand(b, n, generator=g) > 0.3
    return q.to(DEVICE), k.to(DEVICE), attn.to(DEVICE), resp.to(DEVICE)


def _check(q, k, attn, resp, window, horizon, *, tol, hd_rtol, rel_range=None, config=None, row_lse=None,
           head_distance=True, backend=None, **variant):
    """Max abs error <= tol (+ hd_rtol |ref| for head_distance), or 16 float32 epsilons of |ref| where that is larger
    (a WAAD near W = 40 has ulps of 4e-6: the float32 reference's own summation error exceeds 1e-5 there); with
    ``rel_range``, waad and fai may instead be off by rel_range times their range (W for waad, max |ref| for fai):
    the 16-bit-input criterion. The reference is dense with its own softmax; ``head_distance=False`` (band-only with
    ``row_lse``) must return None for it. ``backend`` replaces the triton kernel (e.g. the chunked torch one)."""
    scaling = q.shape[-1] ** -0.5
    ref = stats_mod.dense_attention_stats(q, k, attn, resp, scaling, window, horizon, **variant)
    if backend is None:
        out = triton_attention_stats(q, k, attn, resp, scaling, window, horizon, row_lse=row_lse,
                                     head_distance=head_distance, config=config, **variant)
    else:
        out = backend(q, k, attn, resp, scaling, window, horizon, row_lse=row_lse, head_distance=head_distance,
                      **variant)
    slack = 0.0
    if not head_distance:
        assert out.head_distance is None
        if row_lse is not None:
            # band-only never sees the far keys, so nothing normalises away the rounding of its scores against the
            # given LSE: WAAD carries W times that relative error of the near probabilities, ~eps |S| each
            s_max = float((torch.matmul(q.float(), k.float().repeat_interleave(q.shape[1] // k.shape[1], 1)
                                        .transpose(-1, -2)) * scaling).abs().max())
            slack = window * 2 * torch.finfo(torch.float32).eps * s_max
    for f in FIELDS if head_distance else FIELDS[:2]:
        got, want = getattr(out, f), getattr(ref, f)
        assert got.dtype == torch.float32 and got.shape == want.shape, f
        assert torch.isfinite(got).all(), f
        err = (got - want).abs()
        if f == "head_distance":
            bound = tol + hd_rtol * want.abs()
        elif rel_range is not None:
            bound = tol + rel_range * (window if f == "waad" else float(want.abs().max()))
        else:
            bound = torch.clamp(16 * torch.finfo(torch.float32).eps * want.abs(), min=tol)
        if f == "waad":
            bound = bound + slack
        assert bool((err <= bound).all()), f"{f}: max abs error {err.max().item():.3g}"
    return out


def _row_lse(q, k, attn, scaling, softcap=None, sliding_window=None):
    """Natural-log row log-sum-exp over the allowed keys (without a sink), as SDPA's fused kernels return it;
    computed in float64 so that it is exact to float32 (-inf on rows with no key)."""
    n = q.shape[2]
    kk = k.double().repeat_interleave(q.shape[1] // k.shape[1], dim=1)
    s = torch.matmul(q.double(), kk.transpose(-1, -2)) * scaling
    if softcap is not None:
        s = softcap * torch.tanh(s / softcap)
    idx = torch.arange(n, device=q.device)
    allowed = idx[:, None] >= idx[None, :]
    if sliding_window is not None:
        allowed &= idx[:, None] - idx[None, :] < sliding_window
    allowed = allowed[None] & attn[:, None, :] & attn[:, :, None]
    return torch.logsumexp(s.masked_fill(~allowed[:, None], float("-inf")), -1).float()


# fp32: errors of the dense float32 reference itself reach ~2e-7 relative on head_distance (values up to ~N/2),
# so head_distance gets a relative term on top of the 1e-5 absolute bound; waad and fai are held to 1e-5.
FP32 = dict(tol=1e-5, hd_rtol=4e-7)
# 16-bit inputs with a given float32 LSE: 2^-8 (bf16 rounding) of each statistic's range.
HALF = dict(tol=1e-5, hd_rtol=2**-8, rel_range=2**-8)

CASES = [  # (B, Hq, Hkv, N, D, pad, window, horizon, config)
    (1, 2, 1, 1, 16, "none", 10, (10, 100), None),
    (2, 4, 2, 7, 16, "mixed", 3, (1, 4), None),
    (2, 4, 4, 64, 32, "mixed", 10, (10, 100), None),
    (2, 4, 1, 64, 24, "left", 1, (0, 0), dict(block_m=16, block_n=16)),
    (2, 4, 2, 257, 64, "mixed", 10, (10, 100), None),
    (2, 2, 1, 257, 32, "right", 40, (0, 300), dict(block_m=16, block_n=32)),
    (1, 4, 2, 257, 32, "left", 5, (3, 20), dict(block_m=32, block_n=16)),
]
if CUDA:
    CASES += [
        (3, 8, 2, 1000, 128, "mixed", 10, (10, 100), None),
        (2, 4, 2, 1000, 64, "left", 20, (0, 50), dict(block_m=64, block_n=64, num_warps=4, num_stages=2)),
        (2, 8, 8, 1000, 80, "right", 10, (10, 100), None),
    ]


@pytest.mark.parametrize("b,hq,hkv,n,d,pad,window,horizon,config", CASES)
def test_fp32_matches_dense(b, hq, hkv, n, d, pad, window, horizon, config):
    q, k, attn, resp = _inputs(b, hq, hkv, n, d, torch.float32, pad=pad, scale=1.5)
    _check(q, k, attn, resp, window, horizon, config=config, **FP32)


def test_response_with_gaps_and_peaked_scores():
    q, k, attn, resp = _inputs(2, 4, 2, 100, 32, torch.float32, pad="mixed", resp_from=0.5, resp_gaps=True, scale=4)
    _check(q, k, attn, resp, 10, (10, 100), **FP32)


def test_no_response_rows_gives_zeros():
    q, k, attn, resp = _inputs(2, 2, 1, 40, 16, torch.float32, pad="mixed")
    resp[:] = False
    out = _check(q, k, attn, resp, 10, (10, 100), **FP32)
    assert all(bool((getattr(out, f) == 0).all()) for f in FIELDS)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16] if CUDA else [torch.bfloat16])
@pytest.mark.parametrize("n", [1000] if CUDA else [130])
def test_half_precision_matches_dense(dtype, n):
    q, k, attn, resp = _inputs(2, 8 if CUDA else 4, 2, n, 128 if CUDA else 64, dtype, pad="mixed", scale=1.5)
    # the reference upcasts the same rounded inputs and the kernel accumulates in fp32: only the order differs
    out = _check(q, k, attn, resp, 10, (10, 100), tol=2e-5, hd_rtol=1e-6)
    assert out.waad.abs().max() > 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_given_row_lse(dtype):
    n = 1000 if CUDA else 150
    q, k, attn, resp = _inputs(2, 4, 2, n, 64, dtype, pad="mixed", scale=1.5)
    lse = _row_lse(q, k, attn, q.shape[-1] ** -0.5)
    # the kernel trusts the given LSE: a 1-ulp error in lse is a relative error of all of a row's probabilities
    tol = dict(tol=1e-5, hd_rtol=1e-6) if dtype == torch.float32 else HALF
    _check(q, k, attn, resp, 10, (10, 100), row_lse=lse, **tol)


def test_public_api_dispatch_and_strided_inputs():
    q, k, attn, resp = _inputs(2, 4, 2, 50, 32, torch.float32, pad="mixed")
    # [B, N, H, D] storage seen as [B, H, N, D], as the attention layers produce it
    q = q.transpose(1, 2).contiguous().transpose(1, 2)
    k = k.transpose(1, 2).contiguous().transpose(1, 2)
    out = stats_mod.attention_stats(q, k, attention_mask=attn, response_mask=resp, window=7, fai_horizon=(2, 30),
                                    backend="triton")
    ref = stats_mod.attention_stats(q, k, attention_mask=attn, response_mask=resp, window=7, fai_horizon=(2, 30),
                                    backend="dense")
    for f in FIELDS:
        torch.testing.assert_close(getattr(out, f), getattr(ref, f), atol=1e-5, rtol=4e-7)


VARIANT_CASES = [  # (B, Hq, Hkv, N, D, pad, window, horizon, softcap, sinks?, sliding_window)
    (2, 4, 2, 37, 16, "mixed", 3, (1, 5), None, False, 5),  # window edge inside one 16-key block
    (2, 4, 2, 64, 16, "mixed", 10, (2, 30), 5.0, True, None),
    (2, 2, 1, 97, 16, "mixed", 10, (10, 100), 20.0, True, 33),  # odd length, edge across blocks, far blocks
    (1, 2, 1, 40, 16, "right", 1, (0, 0), 3.0, False, 1),
]


@pytest.mark.parametrize("b,hq,hkv,n,d,pad,window,horizon,softcap,sinks,sliding_window", VARIANT_CASES)
def test_variants_match_dense(b, hq, hkv, n, d, pad, window, horizon, softcap, sinks, sliding_window):
    """Softcapping, sinks and sliding windows (docs/method.md, "Attention statistics") against the dense reference."""
    q, k, attn, resp = _inputs(b, hq, hkv, n, d, torch.float32, pad=pad, scale=1.5)
    sink_logits = (torch.randn(hq, generator=torch.Generator().manual_seed(1)) * 2).to(DEVICE) if sinks else None
    variant = dict(softcap=softcap, sinks=sink_logits, sliding_window=sliding_window)
    _check(q, k, attn, resp, window, horizon, config=dict(block_m=16, block_n=16), **variant, **FP32)


def test_given_row_lse_with_sink_softcap_and_window():
    q, k, attn, resp = _inputs(2, 2, 1, 50, 16, torch.float32, pad="mixed", scale=1.5)
    scaling, cap, sw = q.shape[-1] ** -0.5, 6.0, 9
    sinks = torch.tensor([0.5, -1.0], device=DEVICE)
    n = q.shape[2]
    s = cap * torch.tanh(torch.matmul(q.float(), k.float().repeat_interleave(2, 1).transpose(-1, -2)) * scaling / cap)
    idx = torch.arange(n, device=DEVICE)
    allowed = ((idx[:, None] >= idx[None, :]) & (idx[:, None] - idx[None, :] < sw))[None] & attn[:, None, :]
    lse = torch.logsumexp(s.masked_fill(~allowed[:, None], float("-inf")), -1)  # without the sink
    _check(q, k, attn, resp, 4, (1, 20), row_lse=lse, softcap=cap, sinks=sinks, sliding_window=sw,
           config=dict(block_m=16, block_n=16), tol=1e-5, hd_rtol=1e-6)


# Band-only statistics (head groups kept: no head distance, given row LSE), triton and the chunked torch backend
BAND_BACKENDS = {"triton": None, "torch": chunked_attention_stats}


@pytest.mark.parametrize("backend", list(BAND_BACKENDS))
@pytest.mark.parametrize("b,hq,hkv,n,d,pad,window,horizon,config", CASES)
def test_band_only_matches_dense(b, hq, hkv, n, d, pad, window, horizon, config, backend):
    q, k, attn, resp = _inputs(b, hq, hkv, n, d, torch.float32, pad=pad, scale=1.5)
    lse = _row_lse(q, k, attn, q.shape[-1] ** -0.5)
    kernel = BAND_BACKENDS[backend]
    _check(q, k, attn, resp, window, horizon, config=config if kernel is None else None, row_lse=lse,
           head_distance=False, backend=kernel, **FP32)


@pytest.mark.parametrize("backend", list(BAND_BACKENDS))
@pytest.mark.parametrize("b,hq,hkv,n,d,pad,window,horizon,softcap,sinks,sliding_window", VARIANT_CASES)
def test_band_only_variants_match_dense(b, hq, hkv, n, d, pad, window, horizon, softcap, sinks, sliding_window,
                                        backend):
    q, k, attn, resp = _inputs(b, hq, hkv, n, d, torch.float32, pad=pad, scale=1.5)
    sink_logits = (torch.randn(hq, generator=torch.Generator().manual_seed(1)) * 2).to(DEVICE) if sinks else None
    lse = _row_lse(q, k, attn, q.shape[-1] ** -0.5, softcap=softcap, sliding_window=sliding_window)
    kernel = BAND_BACKENDS[backend]
    _check(q, k, attn, resp, window, horizon, config=dict(block_m=16, block_n=16) if kernel is None else None,
           row_lse=lse, head_distance=False, backend=kernel, softcap=softcap, sinks=sink_logits,
           sliding_window=sliding_window, **FP32)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16] if CUDA else [torch.bfloat16])
def test_band_only_half_precision(dtype):
    n = 1000 if CUDA else 130
    q, k, attn, resp = _inputs(2, 4, 2, n, 64, dtype, pad="mixed", scale=1.5)
    lse = _row_lse(q, k, attn, q.shape[-1] ** -0.5)
    out = _check(q, k, attn, resp, 10, (10, 100), row_lse=lse, head_distance=False, tol=2e-5, hd_rtol=0.0)
    assert out.waad.abs().max() > 0


def test_band_only_reads_the_given_lse():
    """Band-only trusts the LSE (it never sees the far keys): a normaliser off by log(2) halves every FAI value,
    where the full sweep, which divides by the row's own mass, is unmoved on WAAD."""
    q, k, attn, resp = _inputs(2, 2, 1, 80, 16, torch.float32, pad="mixed", scale=1.5)
    scaling = q.shape[-1] ** -0.5
    lse = _row_lse(q, k, attn, scaling)
    exact = triton_attention_stats(q, k, attn, resp, scaling, 10, (2, 30), row_lse=lse, head_distance=False)
    off = triton_attention_stats(q, k, attn, resp, scaling, 10, (2, 30), row_lse=lse + math.log(2), head_distance=False)
    torch.testing.assert_close(off.fai, exact.fai / 2, atol=1e-6, rtol=1e-5)
    full = triton_attention_stats(q, k, attn, resp, scaling, 10, (2, 30), row_lse=lse + math.log(2))
    torch.testing.assert_close(full.waad, exact.waad, atol=1e-5, rtol=1e-5)


def test_head_distance_false_without_lse_keeps_the_full_sweep():
    q, k, attn, resp = _inputs(2, 4, 2, 70, 16, torch.float32, pad="mixed", scale=1.5)
    _check(q, k, attn, resp, 10, (10, 100), head_distance=False, **FP32)


@pytest.mark.parametrize("backend", list(BAND_BACKENDS))
def test_band_only_head_subset(backend):
    """Kept groups need WAAD of the local heads and FAI of the global heads only: those equal the dense values, every
    other value is 0 (the triton kernel skips them; a WAAD-only head reads only its last W keys)."""
    q, k, attn, resp = _inputs(2, 6, 2, 150, 16, torch.float32, pad="mixed", scale=1.5)
    scaling = q.shape[-1] ** -0.5
    lse = _row_lse(q, k, attn, scaling)
    waad_heads = torch.tensor([True, False, False, True, False, False], device=DEVICE)
    fai_heads = torch.tensor([False, True, False, True, False, False], device=DEVICE)
    ref = stats_mod.dense_attention_stats(q, k, attn, resp, scaling, 5, (3, 40))
    kernel = BAND_BACKENDS[backend] or triton_attention_stats
    kwargs = dict(config=dict(block_m=16, block_n=16)) if backend == "triton" else {}
    out = kernel(q, k, attn, resp, scaling, 5, (3, 40), row_lse=lse, head_distance=False,
                 heads=(waad_heads, fai_heads), **kwargs)
    assert out.head_distance is None
    torch.testing.assert_close(out.waad[:, waad_heads], ref.waad[:, waad_heads], atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(out.fai[:, fai_heads], ref.fai[:, fai_heads], atol=1e-6, rtol=1e-5)
    assert bool((out.waad[:, ~waad_heads] == 0).all()) and bool((out.fai[:, ~fai_heads] == 0).all())
    assert float(out.waad[:, waad_heads].max()) > 1 and float(out.fai[:, fai_heads].max()) > 0
    with pytest.raises(ValueError, match=r"heads must be \(waad_heads, fai_heads\), two bool \[Hq=6\]"):
        stats_mod.attention_stats(q, k, attention_mask=attn, response_mask=resp, heads=(waad_heads,))
