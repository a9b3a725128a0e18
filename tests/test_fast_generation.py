"""Fast generation without vLLM (static KV cache) changes speed, not what the credit path computes."""

import pytest
import torch
from tiny_training import digit_reward, prompts, tiny_args

from attncredit import AnchorGRPOConfig, AnchorGRPOTrainer
from attncredit.errors import ConfigError
from attncredit.evaluation.generate import HFGenerator, SamplingSettings
from attncredit.models import load_tokenizer
from attncredit.static_cache import StaticCachePool, reuse_static_caches
from transformers.generation.configuration_utils import CompileConfig


class Recording(AnchorGRPOTrainer):
    """Keeps every rollout's completion ids and the 2-D advantages the loss receives."""

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        self.rollouts.append(output["completion_ids"].clone())
        return output

    def _scaled_advantages(self, advantages, gamma, completion_mask):
        out = super()._scaled_advantages(advantages, gamma, completion_mask)
        self.advantages.append(out.clone())
        return out


def run(model_dir, tmp_path, **overrides):
    trainer = Recording(
        model=str(model_dir),
        reward_funcs=digit_reward,
        args=AnchorGRPOConfig(**tiny_args(tmp_path, max_steps=1, max_completion_length=12, **overrides)),
        train_dataset=prompts(),
        processing_class=load_tokenizer(str(model_dir)),
    )
    trainer.rollouts, trainer.advantages = [], []
    trainer.train()
    return trainer


@pytest.mark.parametrize("steps_per_generation", [1, 2], ids=["loss-forward", "old-logps-forward"])
def test_static_cache_gives_the_same_completions_and_advantages(tiny_qwen2, tmp_path, steps_per_generation):
    torch.set_num_threads(1)
    dynamic = run(tiny_qwen2, tmp_path / "d", steps_per_generation=steps_per_generation)
    static = run(tiny_qwen2, tmp_path / "s", steps_per_generation=steps_per_generation, cache_implementation="static")
    assert static.generation_config.cache_implementation == "static"
    assert dynamic.rollouts and len(dynamic.rollouts) == len(static.rollouts)
    for a, b in zip(dynamic.rollouts, static.rollouts):
        assert torch.equal(a, b)
    assert dynamic.advantages and len(dynamic.advantages) == len(static.advantages)
    for a, b in zip(dynamic.advantages, static.advantages):
        assert a.dim() == 2 and torch.allclose(a, b, atol=1e-6)
        assert bool((a != 0).any())


def test_generator_static_cache_matches_dynamic_greedy(tiny_qwen2):
    torch.set_num_threads(1)
    tokenizer = load_tokenizer(str(tiny_qwen2))
    texts = {}
    for cache, compile_ in (("dynamic", False), ("static", False), ("static", True)):
        gen = HFGenerator(str(tiny_qwen2), tokenizer, device="cpu", batch_size=3, cache=cache, compile=compile_)
        ids = gen.render([[{"role": "user", "content": f"What is {i} + 2?"}] for i in range(5)])
        samples = gen.generate(ids, SamplingSettings(n=1, temperature=0.0, max_new_tokens=10))
        texts[cache, compile_] = [[s.text for s in per] for per in samples]
        assert gen.info()["cache"] == cache
        pool = gen.model.__dict__.get("_prepare_static_cache")
        assert isinstance(pool, StaticCachePool) == compile_  # with compile, only the last batch's cache is kept
        assert not compile_ or pool.kept_shape[:2] == ("static", 2)
    assert texts["dynamic", False] == texts["static", False] == texts["static", True]


def test_generator_rejects_an_unknown_cache(tiny_qwen2):
    with pytest.raises(ConfigError, match="unknown cache 'paged'; allowed: auto, dynamic, static"):
        HFGenerator(str(tiny_qwen2), load_tokenizer(str(tiny_qwen2)), device="cpu", cache="paged")


def test_auto_cache_is_dynamic(tiny_qwen2):
    assert HFGenerator(str(tiny_qwen2), load_tokenizer(str(tiny_qwen2)), device="cpu").cache == "dynamic"


class CompiledOnCpu(Recording):
    """transformers compiles the decoding step only on accelerators unless the compile config allows every device."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        config = CompileConfig()
        config._compile_all_devices = True
        self.generation_config.compile_config = config


@pytest.mark.slow
def test_compile_generation_compiles_the_decoding_step_and_samples_the_same(tiny_qwen2, tmp_path):
    torch.set_num_threads(1)
    dynamic = run(tiny_qwen2, tmp_path / "d")
    compiled = CompiledOnCpu(
        model=str(tiny_qwen2),
        reward_funcs=digit_reward,
        args=AnchorGRPOConfig(**tiny_args(tmp_path / "c", max_steps=1, max_completion_length=12, compile_generation=True)),
        train_dataset=prompts(),
        processing_class=load_tokenizer(str(tiny_qwen2)),
    )
    compiled.rollouts, compiled.advantages = [], []
    compiled.train()
    assert compiled.generation_config.cache_implementation == "static"
    assert compiled.generation_config.disable_compile is False
    assert getattr(compiled.accelerator.unwrap_model(compiled.model), "_compiled_call", None) is not None
    pool = compiled.accelerator.unwrap_model(compiled.model).__dict__["_prepare_static_cache"]
    assert isinstance(pool, StaticCachePool) and pool.kept_shape is not None  # the rollout's cache, kept for the next
    assert len(dynamic.rollouts) == len(compiled.rollouts) == 1
    assert torch.equal(dynamic.rollouts[0], compiled.rollouts[0])


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"compile_generation": "yes"}, "compile_generation='yes' is invalid; allowed: True or False"),
        ({"compile_generation": True, "cache_implementation": "dynamic"}, "cache_implementation='dynamic' is invalid"),
        ({"compile_generation": True, "use_vllm": True}, "compile_generation=True is invalid; allowed: False when use_vllm"),
    ],
)
def test_compile_generation_bad_combinations(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        AnchorGRPOConfig(output_dir=str(tmp_path), **overrides)


def test_reused_static_cache_gives_the_same_tokens_and_keeps_its_tensors(tiny_qwen2):
    """A model with reuse_static_caches generates what a fresh model generates (greedy and seeded sampling) while
    every call of the kept shape gets the same cache back, with the same key/value tensors (the addresses a CUDA
    graph of the compiled decoding step was recorded with); a call of another batch size or a longer one replaces
    it, and the replaced cache is released (at most one cache is held)."""
    import gc
    import weakref

    from transformers import AutoModelForCausalLM

    torch.set_num_threads(1)
    tokenizer = load_tokenizer(str(tiny_qwen2))
    plain = AutoModelForCausalLM.from_pretrained(str(tiny_qwen2))
    pooled = AutoModelForCausalLM.from_pretrained(str(tiny_qwen2))
    pool = reuse_static_caches(pooled)
    assert reuse_static_caches(pooled) is pool  # idempotent
    assert pool.kept_shape is None
    prompts_ = ["What is 1 + 2?", "What is 30 + 4?", "Say 7."]
    calls = [(3, 6, False), (3, 6, True), (2, 6, True), (3, 6, False), (3, 9, True), (3, 6, False)]
    caches, keys = [], []
    for batch, new_tokens, sample in calls:
        encoded = tokenizer(prompts_[:batch], return_tensors="pt", padding=True, padding_side="left")
        outputs = []
        for model in (plain, pooled):
            torch.manual_seed(0)
            outputs.append(model.generate(**encoded, max_new_tokens=new_tokens, do_sample=sample, top_k=0,
                                          cache_implementation="static", return_dict_in_generate=True))
        assert torch.equal(outputs[0].sequences, outputs[1].sequences)
        caches.append(weakref.ref(outputs[1].past_key_values))
        keys.append(outputs[1].past_key_values.layers[0].keys.data_ptr())
        assert pool.kept_shape[1] == batch
        del outputs
    gc.collect()
    first, second, third, fourth, fifth, sixth = caches
    # batch 3, same length: handed back reset, with the same tensors; batch 2 took the pool's one place and then
    # batch 3 came back to a new cache; transformers never shortens the length, so the last call reuses the longer
    assert second is first and keys[1] == keys[0]
    assert len({id(first), id(third), id(fourth), id(fifth)}) == 4 and sixth is fifth and keys[5] == keys[4]
    assert first() is third() is fourth() is None  # each replaced cache was released
    assert fifth() is not None and pool.kept_shape[:2] == ("static", 3)
