"""Every attention variant TRL trains: Gemma 2 (softcapping, sliding windows), Gemma 3 (sliding windows), GPT-OSS
(sinks, sliding windows), Nemotron-H (Mamba/attention/MoE hybrid), Mistral (sliding window on every layer),
DeepSeek-V3 (multi-head latent attention: query/key and value head sizes differ), Qwen3-Next and Qwen3.5 (Gated
DeltaNet / gated attention hybrids), Falcon-H1 (attention and Mamba in parallel in each layer), LFM2 (convolution /
attention hybrid), Falcon (multi-query and grouped fused projections; where transformers routes it through the
AttentionInterface), and the vision-language models LLaVA, Gemma 3 and Qwen2.5-VL.

For each tiny random model: recording follows the model's own attention path (logits bit-identical to the same
model without recording), the recorded statistics equal Eq. 7, 9, 10 applied to the model's own eager attention
probabilities (``output_attentions=True``) on every attention layer, probe layers are chosen among the attention
layers, and AnchorGRPOTrainer trains with coupled credit and amplifies tokens.
"""

import copy
import json

import pytest
import torch
from test_recording import _batch, _stats_from_probabilities
from test_recording import FALCON_USES_INTERFACE
from tiny_training import digit_reward, image_prompts, prompts, tiny_args

from attncredit.attention.recording import (
    ATTN_IMPLEMENTATION,
    EAGER_IMPLEMENTATION,
    attention_layer_types,
    enable_recording,
    model_probe_layers,
    record_attention,
)
from attncredit.errors import ConfigError
from attncredit.testing import ARCHS, VARIANT_ARCHS, build_tiny_model, build_tiny_tokenizer, save_tiny_model

SMALL = dict(num_layers=6, hidden_size=64, num_heads=4, num_kv_heads=2, head_dim=16)
SLIDING = ["sliding_attention", "full_attention"] * 3
EXPECTED = {  # arch: (route, attention layer types, default probe layers, global-only probe layers)
    "gemma2": (EAGER_IMPLEMENTATION, dict(enumerate(SLIDING)), [2, 3, 4], [3, 5]),
    "gemma3": (ATTN_IMPLEMENTATION, {**{i: "sliding_attention" for i in range(5)}, 5: "full_attention"}, [2, 3, 4],
               [5]),
    "gpt_oss": (EAGER_IMPLEMENTATION, dict(enumerate(SLIDING)), [2, 3, 4], [3, 5]),
    "nemotron_h": (ATTN_IMPLEMENTATION, {1: "full_attention", 3: "full_attention", 5: "full_attention"}, [3, 5],
                   [3, 5]),
    "mistral_sliding": (ATTN_IMPLEMENTATION, {i: "sliding_attention" for i in range(6)}, [2, 3, 4], None),
    "deepseek_v3": (ATTN_IMPLEMENTATION, {i: "full_attention" for i in range(6)}, [2, 3, 4], [2, 3, 4]),
    "qwen3_next": (ATTN_IMPLEMENTATION, {1: "full_attention", 3: "full_attention", 5: "full_attention"}, [3, 5],
                   [3, 5]),
    "qwen3_5": (ATTN_IMPLEMENTATION, {1: "full_attention", 3: "full_attention", 5: "full_attention"}, [3, 5], [3, 5]),
    "falcon_h1": (ATTN_IMPLEMENTATION, {i: "full_attention" for i in range(6)}, [2, 3, 4], [2, 3, 4]),
    "lfm2": (ATTN_IMPLEMENTATION, {1: "full_attention", 3: "full_attention", 5: "full_attention"}, [3, 5], [3, 5]),
    "falcon": (ATTN_IMPLEMENTATION, {i: "full_attention" for i in range(6)}, [2, 3, 4], [2, 3, 4]),
    "falcon_gqa": (ATTN_IMPLEMENTATION, {i: "full_attention" for i in range(6)}, [2, 3, 4], [2, 3, 4]),
}
# Falcon goes through transformers' AttentionInterface from transformers 5.25 on; before, it computes attention
# itself and is refused (tests/test_recording.py): its variants run where the installed transformers allows.
_FALCON_SKIP = pytest.mark.skipif(not FALCON_USES_INTERFACE, reason="this transformers' Falcon bypasses the "
                                  "AttentionInterface (refused: test_recording.py)")
VARIANTS = [pytest.param(arch, marks=_FALCON_SKIP) if arch.startswith("falcon") and arch != "falcon_h1" else arch
            for arch in sorted(VARIANT_ARCHS)]
WINDOW, HORIZON = 4, (2, 12)


def _model(arch):
    tokenizer = build_tiny_tokenizer()
    return build_tiny_model(arch, vocab_size=len(tokenizer), **SMALL).eval()


@pytest.mark.parametrize("arch", VARIANTS)
def test_recording_follows_the_model_and_matches_its_eager_probabilities(arch):
    model = _model(arch)
    route, types, probes, global_probes = EXPECTED[arch]
    input_ids, attention_mask, response_mask = _batch(model.config.vocab_size, n=30)  # 30 tokens > window 8
    stock_implementation = model.config._attn_implementation
    if arch == "gpt_oss":  # sink logits of the size trained models have, so that they take real mass
        for module in model.modules():
            if isinstance(getattr(module, "sinks", None), torch.nn.Parameter):
                module.sinks.data = torch.linspace(-1.0, 4.0, module.sinks.numel())
    with torch.no_grad():
        stock = model(input_ids, attention_mask=attention_mask).logits
    eager = copy.deepcopy(model)
    eager.set_attn_implementation("eager")
    with torch.no_grad():
        probabilities = eager(input_ids, attention_mask=attention_mask, output_attentions=True).attentions
    if arch == "gpt_oss":  # the sinks really take mass: the kept probabilities of response rows sum to less than 1
        row_mass = probabilities[0].sum(-1).transpose(1, 2)[response_mask.bool()]  # [rows, heads]
        assert float(row_mass.mean()) < 0.9

    enable_recording(model)
    assert model.config._attn_implementation == route
    assert attention_layer_types(model) == types
    assert model_probe_layers(model) == probes
    if global_probes is None:
        with pytest.raises(ConfigError, match="no global \\(full_attention\\) layers"):
            model_probe_layers(model, global_only=True)
    else:
        assert model_probe_layers(model, global_only=True) == global_probes
    layers = sorted(types)
    # triton (the interpreter on CPU) for softcapping, sinks and MLA's 24-dim queries and keys
    backends = ["dense", "torch"] + (["triton"] if arch in ("gemma2", "gpt_oss", "deepseek_v3") else [])
    for backend in backends:
        with torch.no_grad(), record_attention(
            model, layers, attention_mask, response_mask, window=WINDOW, fai_horizon=HORIZON, backend=backend
        ) as rec:
            logits = model(input_ids, attention_mask=attention_mask).logits
        assert torch.equal(logits, stock), f"{arch}: logits changed under recording ({stock_implementation} -> {route})"
        for i, layer in enumerate(layers):  # output_attentions lists the attention layers in order
            expected = _stats_from_probabilities(probabilities[i], attention_mask, response_mask, WINDOW, HORIZON)
            got = rec.stats[layer]
            for value, ref in zip((got.head_distance, got.waad, got.fai), expected):
                torch.testing.assert_close(value.double(), ref, atol=1e-5, rtol=0.0)
    with torch.no_grad():
        assert torch.equal(model(input_ids, attention_mask=attention_mask).logits, stock)


@pytest.mark.parametrize("arch", VARIANTS + list(ARCHS))
def test_config_reading_without_the_probe_forward_agrees_with_it(arch):
    """Under FSDP/ZeRO the trainer enables recording with ``verify=False`` (no probe forward: parameters are
    sharded); the route and layer types it reads from the config must be those the probe forward finds."""
    verified = enable_recording(_model(arch))
    unverified = enable_recording(_model(arch), verify=False)
    assert unverified.config._attn_implementation == verified.config._attn_implementation
    assert attention_layer_types(unverified) == attention_layer_types(verified)


def test_explicit_probe_layers_must_be_attention_layers():
    model = enable_recording(_model("nemotron_h"))
    with pytest.raises(ConfigError, match=r"probe layers \[2\] of NemotronHForCausalLM are not softmax attention "
                                          r"layers; those are \[1, 3, 5\]"):
        model_probe_layers(model, explicit=[2, 3])
    assert model_probe_layers(model, explicit=[5, 1]) == [1, 5]
    gemma = enable_recording(_model("gemma2"))
    with pytest.raises(ConfigError, match=r"\[2\] of Gemma2ForCausalLM are not global \(full_attention\) layers"):
        model_probe_layers(gemma, explicit=[2, 3], global_only=True)
    input_ids, attention_mask, response_mask = _batch(model.config.vocab_size, n=30)
    with pytest.raises(ConfigError, match=r"probe layers \[2\] .* are not softmax attention layers"):
        record_attention(model, [2], attention_mask, response_mask)


@pytest.fixture(scope="module")
def variant_model_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("variant-models")
    return {arch: save_tiny_model(root / arch, arch=arch, **SMALL) for arch in VARIANT_ARCHS}


@pytest.mark.parametrize("arch", VARIANTS)
def test_coupled_credit_trains_and_amplifies(variant_model_dirs, tmp_path, arch):
    from attncredit import AnchorGRPOConfig, AnchorGRPOTrainer
    from attncredit.models import load_tokenizer

    folder = str(variant_model_dirs[arch])
    gammas = []

    class Trainer(AnchorGRPOTrainer):
        def _scaled_advantages(self, advantages, gamma, completion_mask):
            gammas.append(gamma.detach().clone())
            return super()._scaled_advantages(advantages, gamma, completion_mask)

    global_only = arch in ("gemma2", "gpt_oss")
    args = tiny_args(tmp_path, max_completion_length=12, credit_probe_global_only=global_only)
    trainer = Trainer(
        model=folder,
        reward_funcs=digit_reward,
        args=AnchorGRPOConfig(**args),
        train_dataset=prompts(),
        processing_class=load_tokenizer(folder),
    )
    route, types, probes, global_probes = EXPECTED[arch]
    assert trainer.probe_layers == (global_probes if global_only else probes)
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    trainer.train()
    assert trainer.model.config._attn_implementation == route
    assert gammas and any(bool((g > 1).any()) for g in gammas)  # credit amplified some tokens
    assert all(bool(torch.isfinite(g).all()) for g in gammas)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    assert any(not torch.equal(p, before[name]) for name, p in trainer.model.named_parameters())
    with open(tmp_path / "attncredit_head_groups.jsonl") as f:
        record = json.loads(f.readline())
    assert record["layer_types"] == {str(layer): types[layer] for layer in trainer.probe_layers}


def test_global_only_option_is_validated(tmp_path):
    from attncredit import AnchorGRPOConfig

    with pytest.raises(ConfigError, match=r"credit_probe_global_only='yes' is invalid; allowed: True or False"):
        AnchorGRPOConfig(**tiny_args(tmp_path, credit_probe_global_only="yes"))


def _vlm_batch(processor, n_images=3, completion=6):
    """Left-padded prompts with one 28x28 image each (4 image tokens), followed by ``completion`` text tokens."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    images = [Image.fromarray((rng.random((40, 40, 3)) * 255).astype("uint8")) for _ in range(n_images)]
    texts = [
        processor.apply_chat_template(
            [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "1 + " * i + "1 ="}]}],
            add_generation_prompt=True,
            tokenize=False,
        )
        + "2 3 4 5 6 7"
        for i in range(n_images)
    ]
    processor.tokenizer.padding_side = "left"
    inputs = processor(text=texts, images=[[image] for image in images], padding=True, return_tensors="pt")
    response_mask = torch.zeros_like(inputs["attention_mask"])
    response_mask[:, -completion:] = 1
    return inputs, response_mask


VLM_EXPECTED = {  # arch: (layers, attention layer types, default probe layers)
    "llava": (4, {i: "full_attention" for i in range(4)}, [1, 2]),
    "gemma3": (6, {**{i: "sliding_attention" for i in range(5)}, 5: "full_attention"}, [2, 3, 4]),
    "qwen2_5_vl": (4, {i: "full_attention" for i in range(4)}, [1, 2]),
}


def _tiny_qwen2_5_vl_and_batch(n_images=3, completion=6):
    """A tiny random Qwen2.5-VL (M-RoPE) and a batch built as its processor would: Qwen2.5-VL's processor needs a
    video processor, which needs torchvision, which does not load here with the CPU torch. So the batch is the
    PIL image processor's output plus the text with each image's ``<|image_pad|>`` tokens expanded to its
    ``grid_t * grid_h * grid_w / merge_size**2`` (one per 28x28 image)."""
    import numpy as np
    from PIL import Image
    from transformers import AutoConfig, AutoModelForImageTextToText
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    tokenizer = build_tiny_tokenizer()
    marks = ["<|vision_start|>", "<|image_pad|>", "<|vision_end|>", "<|video_pad|>"]
    tokenizer.add_special_tokens({"additional_special_tokens": marks})
    start, image, end, video = (tokenizer.convert_tokens_to_ids(t) for t in marks)
    config = AutoConfig.for_model(
        "qwen2_5_vl",
        text_config=dict(
            model_type="qwen2_5_vl_text", vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
            num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, bos_token_id=None,
            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
            rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 10000.0},
        ),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2, fullatt_block_indexes=[1]),
        vision_start_token_id=start, image_token_id=image, vision_end_token_id=end, video_token_id=video,
    )  # fmt: skip
    torch.manual_seed(0)
    model = AutoModelForImageTextToText.from_config(config, dtype=torch.float32)
    image_processor = Qwen2VLImageProcessorPil(min_pixels=28 * 28, max_pixels=28 * 28, patch_size=14, merge_size=2)
    rng = np.random.default_rng(0)
    images = [Image.fromarray((rng.random((40, 40, 3)) * 255).astype("uint8")) for _ in range(n_images)]
    pixels = image_processor(images=images, return_tensors="pt")
    pads = [int(grid.prod()) // 4 for grid in pixels["image_grid_thw"]]
    image_texts = ["<|vision_start|>" + "<|image_pad|>" * pad + "<|vision_end|>" for pad in pads]
    texts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": image_texts[i] + "1 + " * i + "1 ="}],
            add_generation_prompt=True,
            tokenize=False,
        )
        + "2 3 4 5 6 7"
        for i in range(n_images)
    ]
    inputs = {**tokenizer(texts, padding=True, return_tensors="pt"), **pixels}
    response_mask = torch.zeros_like(inputs["attention_mask"])
    response_mask[:, -completion:] = 1
    return model, inputs, response_mask


@pytest.mark.parametrize("arch", sorted(VLM_EXPECTED))
def test_vlm_language_model_statistics_with_image_tokens_as_prompt(arch):
    """Gemma 3's image tokens attend to each other both ways; they are prompt rows, which the statistics never
    read as queries, so its completion rows still match the eager probabilities. Qwen2.5-VL rotates queries and
    keys by 3-D (M-RoPE) positions."""
    from attncredit.testing import build_tiny_vlm

    num_layers, types, probes = VLM_EXPECTED[arch]
    if arch == "qwen2_5_vl":
        model, inputs, response_mask = _tiny_qwen2_5_vl_and_batch()
    else:
        model, processor = build_tiny_vlm(num_layers=num_layers, arch=arch)
        inputs, response_mask = _vlm_batch(processor)
    model.eval()
    image_token = model.config.image_token_id
    assert bool((inputs["input_ids"] == image_token).any(-1).all())  # every row holds image tokens, in its prompt
    assert not bool(((inputs["input_ids"] == image_token) & response_mask.bool()).any())
    with torch.no_grad():
        stock = model(**inputs).logits
    eager = copy.deepcopy(model)
    eager.set_attn_implementation("eager")
    with torch.no_grad():
        probabilities = eager(**inputs, output_attentions=True).attentions  # the language model's layers
    enable_recording(model)
    assert attention_layer_types(model) == types
    assert model_probe_layers(model) == probes
    layers = sorted(types)  # every attention layer, Gemma 3's global one (which sees the image) included
    with torch.no_grad(), record_attention(
        model, layers, inputs["attention_mask"], response_mask, window=WINDOW, fai_horizon=(1, 40), backend="torch"
    ) as rec:
        recorded = [name for name, m in model.named_modules() if "_attncredit_recorder" in m.__dict__]
        logits = model(**inputs).logits
    assert recorded and all(name.startswith("model.language_model.layers.") for name in recorded)
    assert torch.equal(logits, stock)
    for layer in layers:
        expected = _stats_from_probabilities(
            probabilities[layer], inputs["attention_mask"], response_mask, WINDOW, (1, 40)
        )
        for value, ref in zip((rec.stats[layer].head_distance, rec.stats[layer].waad, rec.stats[layer].fai), expected):
            torch.testing.assert_close(value.double(), ref, atol=1e-5, rtol=0.0)
    # the completion attends to the image tokens (Gemma 3: at its global layer, beyond the sliding windows)
    fai = torch.stack([rec.stats[layer].fai.transpose(1, 2)[inputs["input_ids"] == image_token] for layer in layers])
    assert float(fai.max()) > 0


@pytest.mark.parametrize("arch", ["gemma3", "llava"])  # Qwen2.5-VL: no processor here (see above)
def test_vlm_coupled_credit_trains_on_the_text_completion(tmp_path, arch):
    from attncredit import AnchorGRPOConfig, AnchorGRPOTrainer
    from attncredit.testing import build_tiny_vlm

    model, processor = build_tiny_vlm(num_layers=VLM_EXPECTED[arch][0], arch=arch)
    gammas, image_inputs = [], []

    class Trainer(AnchorGRPOTrainer):
        def _recorded_forward(self, model, input_ids, attention_mask, logits_to_keep, *args, **kwargs):
            image_inputs.append(kwargs.get("pixel_values") is not None)
            return super()._recorded_forward(model, input_ids, attention_mask, logits_to_keep, *args, **kwargs)

        def _scaled_advantages(self, advantages, gamma, completion_mask):
            gammas.append(gamma.detach().clone())
            return super()._scaled_advantages(advantages, gamma, completion_mask)

    trainer = Trainer(
        model=model,
        reward_funcs=digit_reward,
        args=AnchorGRPOConfig(**tiny_args(tmp_path, max_completion_length=12)),
        train_dataset=image_prompts(),
        processing_class=processor,
    )
    trainer.train()
    assert image_inputs and all(image_inputs)  # the recorded forward saw the images
    assert gammas and any(bool((g > 1).any()) for g in gammas)
    assert len([h for h in trainer.state.log_history if "loss" in h]) == 2


@pytest.mark.parametrize("arch", ["gemma2", "gpt_oss"])
def test_rhythm_analysis_forward_uses_the_layer_score_rule(arch):
    """The analysis forward's credit-horizon statistics and attention bands follow softcapping, sinks and windows."""
    from attncredit.analysis.forward import BandWindow, rhythm_forward

    model = _model(arch)
    if arch == "gpt_oss":
        for module in model.modules():
            if isinstance(getattr(module, "sinks", None), torch.nn.Parameter):
                module.sinks.data = torch.linspace(-1.0, 4.0, module.sinks.numel())
    input_ids, attention_mask, response_mask = _batch(model.config.vocab_size, n=30)
    eager = copy.deepcopy(model)
    eager.set_attn_implementation("eager")
    with torch.no_grad():
        probabilities = eager(input_ids, attention_mask=attention_mask, output_attentions=True).attentions
    enable_recording(model)
    band = BandWindow(row_start=20, row_stop=30, col_start=5)
    out = rhythm_forward(
        model, input_ids, attention_mask, response_mask, [2, 3], window=WINDOW, fai_horizon=HORIZON,
        backend="torch", credit_layers=[2, 3], credit_fai_horizon=(1, 5), band_windows=[band, None, None],
    )
    for layer in (2, 3):  # 2 is a sliding-window layer, 3 a global one
        expected = _stats_from_probabilities(probabilities[layer], attention_mask, response_mask, WINDOW, (1, 5))
        got = out.credit_stats[layer]
        for value, ref in zip((got.head_distance, got.waad, got.fai), expected):
            torch.testing.assert_close(value.double(), ref, atol=1e-5, rtol=0.0)
        torch.testing.assert_close(out.bands[0][layer], probabilities[layer][0, :, 20:30, 5:30], atol=1e-5, rtol=0.0)
