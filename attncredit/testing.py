"""Tiny random models for tests and quick demos, built offline.

``save_tiny_model(folder, arch=...)`` writes a randomly initialised causal LM of a real architecture (Qwen2, Qwen3,
Llama or Mistral; and for the attention-variant coverage, :data:`VARIANT_ARCHS`: Gemma 2 with logit softcapping and
sliding windows, Gemma 3, GPT-OSS with sinks, Nemotron-H with Mamba/attention/MoE layers, Mistral with a short
sliding window, DeepSeek-V3 with multi-head latent attention, Qwen3-Next and Qwen3.5 with Gated DeltaNet/attention
layers, Falcon-H1 with attention and Mamba in parallel, LFM2 with convolution/attention layers, Falcon with
multi-query or grouped fused query/key/value projections) and a byte-level BPE tokenizer with a ChatML chat
template, so every code path that takes a model name (TRL, vLLM, the scripts) can
run on it without the hub. ``build_tiny_vlm(arch=...)`` returns a tiny vision-language model (LLaVA or Gemma 3)
and its processor, built offline. ``head_dim`` defaults to 64, the smallest head size vLLM's CPU attention
backend accepts.
"""

from __future__ import annotations

from pathlib import Path

import torch

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"]
_CORPUS = [
    "Using the numbers 3, 5, 7 and 11, create an equation that equals 24. Show your work in <think> </think> tags "
    "and return the final equation in <answer> </answer> tags, for example <answer> (1 + 2) / 3 </answer>.",
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May? The answer is \\boxed{72}. #### 72",
    "Let x = 2/3 + 1/6. Then x = 5/6, so the final answer is $\\frac{5}{6}$. 0123456789 + - * / = ( ) [ ] { }",
    "You are a helpful assistant. Please reason step by step, and put your final answer within \\boxed{}.",
]
ARCHS = ("qwen2", "qwen3", "llama", "mistral")
# name: (transformers model type, config fields) of tiny models whose attention is not plain causal softmax
VARIANT_ARCHS = {
    # softcap 2 and query_pre_attn_scalar 8 (not head_dim): both change the probabilities; sliding window 8 on
    # every other layer; initializer_range 0.2 gives scores of order 1, where the cap bites
    "gemma2": ("gemma2", dict(sliding_window=8, attn_logit_softcapping=2.0, final_logit_softcapping=30.0,
                              query_pre_attn_scalar=8, initializer_range=0.2)),
    "gemma3": ("gemma3_text", dict(sliding_window=8, query_pre_attn_scalar=8, initializer_range=0.2)),
    # per-head sinks (initialised like the other weights, std 0.02), sliding window 8
    "gpt_oss": ("gpt_oss", dict(sliding_window=8, num_local_experts=4, num_experts_per_tok=2)),
    # hybrid: Mamba-2, attention, MoE and MLP blocks; attention at layers 1, 3 and 5
    "nemotron_h": ("nemotron_h", dict(
        layers_block_type=["linear_attention", "full_attention", "moe", "full_attention", "mlp", "full_attention"],
        ssm_state_size=16, mamba_num_heads=8, mamba_head_dim=16, n_groups=1, chunk_size=16,
        n_routed_experts=4, num_experts_per_tok=2, moe_intermediate_size=64, moe_shared_expert_intermediate_size=64,
    )),
    "mistral_sliding": ("mistral", dict(sliding_window=8)),
    # multi-head latent attention: queries and keys of 8 + 16 (rotary, = head_dim) dims from low-rank projections,
    # values of 16, one key per query head (num_key_value_heads None: as many as query heads); MoE after layer 0
    "deepseek_v3": ("deepseek_v3", dict(
        num_key_value_heads=None, q_lora_rank=32, kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=16,
        v_head_dim=16, n_routed_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, first_k_dense_replace=1,
        n_group=1, topk_group=1,
    )),
    # hybrid: Gated DeltaNet and gated softmax attention (rotary on half of each head) in turn, MoE
    "qwen3_next": ("qwen3_next", dict(
        layer_types=["linear_attention", "full_attention"] * 3, partial_rotary_factor=0.5, linear_num_value_heads=4,
        linear_num_key_heads=2, linear_key_head_dim=16, linear_value_head_dim=16, num_experts=4, num_experts_per_tok=2,
        moe_intermediate_size=32, shared_expert_intermediate_size=32,
    )),
    # Qwen3.5's language model: Gated DeltaNet / gated attention in turn, dense MLP
    "qwen3_5": ("qwen3_5_text", dict(
        layer_types=["linear_attention", "full_attention"] * 3, linear_num_value_heads=4, linear_num_key_heads=2,
        linear_key_head_dim=16, linear_value_head_dim=16,
    )),
    # parallel hybrid: softmax attention and Mamba-2 side by side in every layer (layer type "hybrid")
    "falcon_h1": ("falcon_h1", dict(
        mamba_d_ssm=64, mamba_n_heads=4, mamba_d_head=16, mamba_d_state=16, mamba_n_groups=1, mamba_chunk_size=16,
    )),
    # hybrid: gated short convolutions and attention in turn
    "lfm2": ("lfm2", dict(layer_types=["conv", "full_attention"] * 3, block_ff_dim=128)),
    # Falcon-7B's layout: one key/value head for all query heads (multi-query), attention and MLP in parallel;
    # rotary positions (ALiBi Falcons are refused: their position bias rides in the attention mask)
    "falcon": ("falcon", dict(multi_query=True, parallel_attn=True, alibi=False)),
    # Falcon-40B/180B's layout: grouped key/value heads interleaved with their queries in one fused projection
    "falcon_gqa": ("falcon", dict(new_decoder_architecture=True, num_kv_heads=2, alibi=False)),
}


def build_tiny_tokenizer(vocab_size: int = 512):
    """Byte-level BPE trained on a small built-in math corpus, with a ChatML template and pad token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|pad|>",
        bos_token=None,
        unk_token=None,
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.padding_side = "left"
    return fast


def build_tiny_model(
    arch: str = "qwen2",
    *,
    vocab_size: int,
    num_layers: int = 6,
    hidden_size: int = 128,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    head_dim: int = 64,
    seed: int = 0,
    eos_token_id: int | None = None,
    pad_token_id: int | None = None,
):
    """Randomly initialised causal LM of a real architecture, in float32, on CPU."""
    from transformers import AutoConfig, AutoModelForCausalLM

    if arch not in ARCHS and arch not in VARIANT_ARCHS:
        raise ValueError(f"arch must be one of {ARCHS + tuple(VARIANT_ARCHS)}, got {arch!r}")
    model_type, extra = VARIANT_ARCHS.get(arch, (arch, {}))
    fields = dict(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        head_dim=head_dim,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        bos_token_id=None,
    )
    from transformers import CONFIG_MAPPING

    # an architecture's own fields win; fields it derives itself (Falcon's head_dim property) are left to it
    derived = {k for k in fields if isinstance(getattr(CONFIG_MAPPING[model_type], k, None), property)}
    config = AutoConfig.for_model(model_type, **{k: v for k, v in {**fields, **extra}.items() if k not in derived})
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32)


def save_tiny_model(folder: str | Path, arch: str = "qwen2", seed: int = 0, **model_kwargs) -> Path:
    """Write a tiny random model and its tokenizer to ``folder``; returns the folder."""
    folder = Path(folder)
    tokenizer = build_tiny_tokenizer()
    model = build_tiny_model(
        arch,
        vocab_size=len(tokenizer),
        seed=seed,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **model_kwargs,
    )
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


VLM_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}{{ '<image>' }}{% else %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}"
    "{{ '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


VLM_ARCHS = ("llava", "gemma3")


def build_tiny_vlm(seed: int = 0, num_layers: int = 4, arch: str = "llava"):
    """A tiny random vision-language model of ``arch`` and its processor, built offline.

    ``llava``: CLIP vision tower, Qwen2 language model. ``gemma3``: SigLIP vision tower, Gemma 3 language model
    (sliding window 8 on five layers in six, ``query_pre_attn_scalar`` 8; image tokens attend to each other
    bidirectionally, marked by ``token_type_ids``). Images are 28 x 28 pixels: 4 patches of 14, i.e. 4 image tokens
    in the prompt (Gemma 3 wraps them in ``<start_of_image>`` ... ``<end_of_image>``). The processors use PIL
    image processors (no torchvision) and a ChatML template that renders ``{"type": "image"}`` parts; a Gemma 3
    processor takes one list of images per prompt. Returns ``(model, processor)``, the model in float32 on CPU.
    """
    from transformers import AutoConfig, AutoModelForImageTextToText

    if arch not in VLM_ARCHS:
        raise ValueError(f"arch must be one of {VLM_ARCHS}, got {arch!r}")
    tokenizer = build_tiny_tokenizer()
    image_marks = ["<image>"] if arch == "llava" else ["<start_of_image>", "<image_soft_token>", "<end_of_image>"]
    tokenizer.add_special_tokens({"additional_special_tokens": image_marks})
    text_config = dict(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=num_layers,
        num_attention_heads=4, num_key_value_heads=2, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    vision_config = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                         image_size=28, patch_size=14)  # fmt: skip
    template = VLM_CHAT_TEMPLATE
    if arch == "llava":
        config = AutoConfig.for_model(
            "llava",
            text_config=dict(model_type="qwen2", **text_config),
            vision_config=dict(model_type="clip_vision_model", projection_dim=32, **vision_config),
            image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
            vision_feature_layer=-1,
            vision_feature_select_strategy="default",
        )
    else:
        boi, image, eoi = (tokenizer.convert_tokens_to_ids(t) for t in image_marks)
        tokenizer.boi_token, tokenizer.image_token, tokenizer.eoi_token = image_marks
        tokenizer.boi_token_id, tokenizer.image_token_id, tokenizer.eoi_token_id = boi, image, eoi
        config = AutoConfig.for_model(
            "gemma3",
            text_config=dict(model_type="gemma3_text", head_dim=16, sliding_window=8, query_pre_attn_scalar=8,
                             bos_token_id=None, **text_config),  # fmt: skip
            vision_config=dict(model_type="siglip_vision_model", **vision_config),
            mm_tokens_per_image=4, boi_token_index=boi, eoi_token_index=eoi, image_token_index=image,
        )
        template = template.replace("'<image>'", "'<start_of_image>'")
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(config, dtype=torch.float32)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    if arch == "llava":
        from transformers import CLIPImageProcessor, LlavaProcessor

        image_processor = CLIPImageProcessor(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28})
        processor = LlavaProcessor(
            image_processor=image_processor, tokenizer=tokenizer, patch_size=14, num_additional_image_tokens=1,
            vision_feature_select_strategy="default", image_token="<image>", chat_template=template,
        )
    else:
        from transformers.models.gemma3 import Gemma3ImageProcessorPil, Gemma3Processor

        processor = Gemma3Processor(
            image_processor=Gemma3ImageProcessorPil(size={"height": 28, "width": 28}), tokenizer=tokenizer,
            chat_template=template, image_seq_length=4,
        )
    return model, processor
