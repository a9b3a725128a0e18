"""The row log-sum-exp taken from SDPA's own kernel (attncredit.attention.lse) and the statistics that use it.

On this CPU SDPA runs FlashAttention for CPU, which returns the LSE: the capture must leave logits and gradients
bit-identical to stock SDPA, give the statistics of the model's eager probabilities, and fall back (logged once)
where the kernel cannot give an identical output. The band-only statistics of a kept-groups forward must equal
the full ones on WAAD and FAI.
"""

import logging

import pytest
import torch
import torch.nn.functional as F
from test_recording import LAYERS, _batch, _eager_reference, _load, _record

from attncredit.attention import lse as lse_module
from attncredit.attention import record_attention
from attncredit.attention.lse import RowLSECapture
from attncredit.attention.recording import enable_recording


@pytest.fixture
def fresh_decisions(monkeypatch):
    """An empty decision cache, so that each test sees the first-call check and its log line."""
    monkeypatch.setattr(lse_module, "_DECISIONS", {})


def _causal_padded_mask(b, n, pad):
    mask = torch.ones(b, 1, n, n, dtype=torch.bool).tril()
    mask[0, :, :, :pad] = False
    mask[0, 0, torch.arange(pad), torch.arange(pad)] = True  # padding rows see themselves, as transformers does
    return mask


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
# CPU: FlashAttention for CPU; CUDA (H200, bf16): cuDNN or flash for the causal flag, cuDNN or efficient with a mask
SHAPES = {"cpu": (2, 4, 37, 16), "cuda": (2, 32, 301, 128)}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("mask_kind", ["causal", "bool", "float"])
@pytest.mark.parametrize("gqa", [False, True])
def test_capture_is_sdpa_bit_for_bit_with_the_lse(fresh_decisions, device, dtype, mask_kind, gqa):
    g = torch.Generator().manual_seed(0)
    b, hq, n, d = SHAPES[device]
    hkv = hq // 4 if gqa else hq
    q, k, v = (torch.randn(b, h, n, d, generator=g).to(device, dtype).requires_grad_() for h in (hq, hkv, hkv))
    mask = None if mask_kind == "causal" else _causal_padded_mask(b, n, 5).to(device)
    if mask_kind == "float":
        mask = torch.zeros(b, 1, n, n, dtype=dtype, device=device).masked_fill(~mask, float("-inf"))
    kwargs = dict(attn_mask=mask, is_causal=mask is None, enable_gqa=gqa, scale=d**-0.5)
    reference = F.scaled_dot_product_attention(q, k, v, **kwargs)
    ref_grads = torch.autograd.grad(reference.square().sum(), (q, k, v))
    with RowLSECapture() as capture:
        out = F.scaled_dot_product_attention(q, k, v, **kwargs)
    grads = torch.autograd.grad(out.square().sum(), (q, k, v))
    assert torch.equal(out, reference)
    again = torch.autograd.grad(F.scaled_dot_product_attention(q, k, v, **kwargs).square().sum(), (q, k, v))
    if all(torch.equal(a, r) for a, r in zip(again, ref_grads)):
        assert all(torch.equal(a, r) for a, r in zip(grads, ref_grads))
    else:  # a backward with atomics (CUDA float32: the efficient kernel) differs from itself run to run
        for a, r, r2 in zip(grads, ref_grads, again):
            assert float((a - r).abs().max()) <= 4 * float((r2 - r).abs().max()) + 1e-6
    if capture.lse is None:  # the kernel SDPA chose cannot give it bit-identically here (logged): nothing to check
        assert device == "cuda"
        return
    # the LSE is the natural-log normaliser of every row (padding rows of sequence 0 see only themselves)
    scores = torch.einsum("bhtd,bhsd->bhts", q.double(), k.double().repeat_interleave(hq // hkv, 1)) * d**-0.5
    allowed = (torch.ones(n, n, dtype=torch.bool).tril() if mask is None else _causal_padded_mask(b, n, 5)).to(device)
    want = torch.logsumexp(scores.masked_fill(~allowed, float("-inf")), -1)
    assert capture.lse.shape[:2] == (b, hq) and capture.lse.shape[2] >= n
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    torch.testing.assert_close(capture.lse[..., :n].double(), want, atol=tol, rtol=tol)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_bf16_model_on_gpu_captures_the_lse_of_its_kernel(tiny_qwen2, fresh_decisions, caplog):
    """The route a GPU run takes: bf16, padding mask (repeated KV), SDPA's fused kernel gives the LSE, logits stay
    bit-identical, and the statistics match the eager probabilities within bf16 rounding."""
    model = _load(tiny_qwen2, dtype=torch.bfloat16).cuda()
    inputs = [x.cuda() for x in _batch(model.config.vocab_size, n=200)]
    reference = _eager_reference(tiny_qwen2, [x.cpu() for x in inputs], LAYERS, dtype=torch.bfloat16)
    enable_recording(model)
    with torch.no_grad():
        stock = model(inputs[0], attention_mask=inputs[1]).logits
    with caplog.at_level(logging.INFO, logger=lse_module.__name__):
        rec, out = _record(model, inputs, backend="triton")
        band, _ = _record(model, inputs, backend="triton", head_distance=False)
    print([r.getMessage() for r in caplog.records])
    assert torch.equal(out.logits, stock)
    assert rec.kernel_lse_layers == LAYERS and band.kernel_lse_layers == LAYERS
    for layer, (distance, waad, fai) in reference.items():
        for got, want in ((rec.stats[layer].waad, waad), (band.stats[layer].waad, waad), (rec.stats[layer].fai, fai),
                          (band.stats[layer].fai, fai), (rec.stats[layer].head_distance, distance)):
            assert float((got.double().cpu() - want).abs().max()) <= 0.01 * float(want.abs().max())


def test_only_the_first_sdpa_call_is_captured(fresh_decisions):
    q = torch.randn(1, 2, 8, 16)
    with RowLSECapture() as capture:
        F.scaled_dot_product_attention(q, q, q, is_causal=True)
        first = capture.lse
        F.scaled_dot_product_attention(q * 2, q, q, is_causal=True)
    assert capture.lse is first


# these run the model on the CPU: triton only under its interpreter (set when there is no GPU, see conftest.py)
CPU_BACKENDS = ["dense", "torch"] + ([] if torch.cuda.is_available() else ["triton"])


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_recorded_stats_with_the_kernel_lse_match_eager(tiny_qwen2, fresh_decisions, caplog, backend):
    model = _load(tiny_qwen2)
    inputs = _batch(model.config.vocab_size)
    reference = _eager_reference(tiny_qwen2, inputs, LAYERS)
    enable_recording(model)
    with torch.no_grad():
        stock = model(inputs[0], attention_mask=inputs[1]).logits
    with caplog.at_level(logging.INFO, logger=lse_module.__name__):
        rec, out = _record(model, inputs, backend=backend)
        _record(model, inputs, backend=backend)  # a second forward of the same kind: no new decision, no new line
    assert torch.equal(out.logits, stock)
    assert rec.kernel_lse_layers == LAYERS
    assert sum("row log-sum-exp from SDPA's flash kernel" in r.getMessage() for r in caplog.records) == 1
    for layer, (distance, waad, fai) in reference.items():
        got = rec.stats[layer]
        for value, want in ((got.head_distance, distance), (got.waad, waad), (got.fai, fai)):
            torch.testing.assert_close(value.double(), want, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", CPU_BACKENDS[1:])
def test_band_only_recording_equals_the_full_statistics(tiny_qwen2, backend):
    model = enable_recording(_load(tiny_qwen2))
    inputs = _batch(model.config.vocab_size, n=60)
    full, _ = _record(model, inputs, backend=backend, window=10, horizon=(10, 100))
    band, _ = _record(model, inputs, backend=backend, window=10, horizon=(10, 100), head_distance=False)
    assert band.kernel_lse_layers == LAYERS
    for layer in LAYERS:
        assert band.stats[layer].head_distance is None
        torch.testing.assert_close(band.stats[layer].waad, full.stats[layer].waad, atol=2e-5, rtol=1e-5)
        torch.testing.assert_close(band.stats[layer].fai, full.stats[layer].fai, atol=1e-6, rtol=1e-5)
    assert float(full.stats[LAYERS[0]].waad.max()) > 1.0


def test_gradients_bit_identical_while_recording(tiny_qwen2):
    """The loss forward records too (TRL's single-iteration path): the backward must be stock SDPA's."""

    def grads(record):
        model = _load(tiny_qwen2).train()
        input_ids, attention_mask, response_mask = _batch(model.config.vocab_size)
        if record:
            enable_recording(model)
            with record_attention(model, LAYERS, attention_mask, response_mask, backend="torch") as rec:
                loss = model(input_ids, attention_mask=attention_mask).logits.float().square().mean()
            assert rec.kernel_lse_layers == LAYERS
        else:
            loss = model(input_ids, attention_mask=attention_mask).logits.float().square().mean()
        loss.backward()
        return {name: p.grad for name, p in model.named_parameters()}

    stock, recorded = grads(False), grads(True)
    assert all(torch.equal(stock[name], recorded[name]) for name in stock)


def test_a_kernel_whose_output_differs_falls_back_once(tiny_qwen2, fresh_decisions, monkeypatch, caplog):
    real = lse_module._run_kernel

    def off_by_a_bit(*args, **kwargs):
        out, lse = real(*args, **kwargs)
        out = out.clone()
        out[0, 0, -1, 0] += 1e-3
        return out, lse

    monkeypatch.setattr(lse_module, "_run_kernel", off_by_a_bit)
    model = enable_recording(_load(tiny_qwen2))
    inputs = _batch(model.config.vocab_size)
    with torch.no_grad():
        stock = model(inputs[0], attention_mask=inputs[1]).logits
    with caplog.at_level(logging.INFO, logger=lse_module.__name__):
        rec, out = _record(model, inputs, backend="torch")
        _record(model, inputs, backend="torch")
    assert rec.kernel_lse_layers == [] and torch.equal(out.logits, stock)
    assert sum("no row log-sum-exp with an output bit-identical" in r.getMessage() for r in caplog.records) == 1
    reference = _eager_reference(tiny_qwen2, inputs, LAYERS)
    torch.testing.assert_close(rec.stats[LAYERS[0]].waad.double(), reference[LAYERS[0]][1], atol=1e-5, rtol=0)


def test_attention_dropout_falls_back_to_own_normaliser(tiny_model_dirs, fresh_decisions, caplog):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dirs["qwen2"], attention_dropout=0.5).train()
    enable_recording(model)
    inputs = _batch(model.config.vocab_size)
    with caplog.at_level(logging.INFO, logger=lse_module.__name__):
        rec, _ = _record(model, inputs, backend="torch")
    assert rec.kernel_lse_layers == []
    assert any("attention dropout 0.5" in r.getMessage() for r in caplog.records)
    assert all(torch.isfinite(s.waad).all() for s in rec.stats.values())


def test_eager_route_has_no_kernel_lse(tiny_model_dirs):
    model = enable_recording(_load(tiny_model_dirs["qwen2"], attn="eager"))
    rec, _ = _record(model, _batch(model.config.vocab_size))
    assert rec.kernel_lse_layers == [] and sorted(rec.stats) == LAYERS


def test_kernel_lse_can_be_switched_off(tiny_qwen2):
    model = enable_recording(_load(tiny_qwen2))
    rec, _ = _record(model, _batch(model.config.vocab_size), kernel_lse=False)
    assert rec.kernel_lse_layers == [] and sorted(rec.stats) == LAYERS
    with pytest.raises(ValueError, match="kernel_lse must be True or False, got 'yes'"):
        _record(model, _batch(model.config.vocab_size), kernel_lse="yes")


@pytest.mark.parametrize("backend", CPU_BACKENDS[1:])
def test_kept_groups_need_only_their_heads(tiny_qwen2, backend):
    """With the kept groups named, the band-only forward computes WAAD for the local and FAI for the global heads
    only; the group averages the credit reads are the same as from every head's statistics."""
    from attncredit.attention import group_token_stats

    model = enable_recording(_load(tiny_qwen2))
    inputs = _batch(model.config.vocab_size, n=60)
    hq = model.config.num_attention_heads
    local = torch.zeros(len(LAYERS), hq, dtype=torch.bool)
    glob = torch.zeros_like(local)
    local[0, 0] = local[2, 3] = True
    glob[1, 1] = glob[2, 0] = True
    heads = {layer: (local[i], glob[i]) for i, layer in enumerate(LAYERS)}
    every, _ = _record(model, inputs, backend=backend, head_distance=False)
    subset, _ = _record(model, inputs, backend=backend, head_distance=False, heads=heads)
    a = group_token_stats(every.stats, heads=(local, glob))
    b = group_token_stats(subset.stats, heads=(local, glob))
    torch.testing.assert_close(b.waad, a.waad, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(b.fai, a.fai, atol=1e-7, rtol=1e-6)
    assert float(a.waad.max()) > 0 and float(a.fai.max()) > 0
    assert bool((subset.stats[LAYERS[0]].waad[:, 1:] == 0).all())  # not a local head of that layer: skipped
    with pytest.raises(ValueError, match="heads must map every probe layer"):
        _record(model, inputs, backend=backend, head_distance=False, heads={LAYERS[0]: heads[LAYERS[0]]})
