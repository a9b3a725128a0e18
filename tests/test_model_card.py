"""Model cards and saved names of our runs: TRL's card naming the base model's hub id (the embedded model's too), the
run folder in its quick start, attncredit's tags, method (arXiv 2510.13554), credit settings and citation beside
TRL's; PPO cards say PPO; config.json's _name_or_path and a LoRA adapter's base_model_name_or_path are the hub id."""

import json
import shutil

import pytest
import torch
from peft import LoraConfig

from attncredit import AnchorGRPOConfig, AnchorGRPOTrainer, AnchorPPOConfig, AnchorPPOTrainer
from attncredit.model_card import base_model_id
from attncredit.models import load_tokenizer

from tiny_training import digit_reward, prompts, tiny_args

HUB_ID = "org/tiny-qwen2"  # what a hub model's folder looks like once attncredit saved it


@pytest.fixture
def hub_like(tiny_qwen2, tmp_path):
    """A copy of the tiny model whose config.json names a hub id, as a folder saved by attncredit does."""
    folder = tmp_path / "base"
    shutil.copytree(tiny_qwen2, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "_name_or_path": HUB_ID}))
    return folder


def _train(trainer_cls, config_cls, model, out, kind, **kwargs):
    args = config_cls(**tiny_args(out, trainer=kind, max_steps=1))
    trainer = trainer_cls(
        model=str(model), reward_funcs=digit_reward, args=args, train_dataset=prompts(),
        processing_class=load_tokenizer(str(model)), **kwargs,
    )  # fmt: skip
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        trainer.train()
    finally:
        torch.set_num_threads(threads)
    trainer.save_model()
    return trainer


def _card(out) -> tuple[dict, str]:
    import yaml

    text = (out / "README.md").read_text()
    _, front, body = text.split("---\n", 2)
    return yaml.safe_load(front), body


def test_grpo_card_config_and_reload(hub_like, tmp_path):
    out = tmp_path / "run"
    _train(AnchorGRPOTrainer, AnchorGRPOConfig, hub_like, out, "grpo")
    meta, body = _card(out)
    assert meta["base_model"] == HUB_ID
    assert {"attncredit", "grpo", "trl"} <= set(meta["tags"]) and "ppo" not in meta["tags"]
    assert f"fine-tuned version of [{HUB_ID}](https://huggingface.co/{HUB_ID})" in body
    assert f'model="{out}"' in body and 'model="None"' not in body  # the quick start loads the saved folder
    assert "trained with GRPO" in body and "2402.03300" in body  # TRL's own GRPO text and citation stay
    assert "arxiv.org/abs/2510.13554" in body and "Preplan-and-Anchor Rhythm" in body
    assert "| `credit_strategy` | `coupled` |" in body and "| `credit_top_quantile` | `0.4` |" in body
    assert body.index("@article{li2025attention") < body.index("Cite TRL as:")  # beside TRL's citations
    assert "author       = {Yang Li and Zhichen Dong and" in body and "Junchi Yan}" in body  # the full author list
    assert json.loads((out / "config.json").read_text())["_name_or_path"] == HUB_ID
    assert base_model_id(str(out)) == HUB_ID  # a run started from this folder names the same base

    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(out).config.vocab_size > 0  # the extra key loads


def test_ppo_card_says_ppo(hub_like, tmp_path):
    out = tmp_path / "run"
    _train(AnchorPPOTrainer, AnchorPPOConfig, hub_like, out, "ppo")
    meta, body = _card(out)
    assert meta["base_model"] == HUB_ID
    assert {"attncredit", "ppo", "trl"} <= set(meta["tags"]) and "grpo" not in meta["tags"]
    assert "trained with PPO" in body and "1707.06347" in body and "GRPO" not in body and "DeepSeekMath" not in body
    assert "Its PPO advantages were scaled" in body and "| `gae_lambda` | `0.95` |" in body
    assert json.loads((out / "config.json").read_text())["_name_or_path"] == HUB_ID


def test_lora_adapter_names_the_hub_base_model(hub_like, tmp_path):
    out = tmp_path / "run"
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    _train(AnchorGRPOTrainer, AnchorGRPOConfig, hub_like, out, "grpo", peft_config=lora)
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == HUB_ID
    assert _card(out)[0]["base_model"] == HUB_ID


def test_base_model_id_of_embedded_names_folders_and_hub_ids(tmp_path, monkeypatch, tiny_qwen2):
    monkeypatch.setenv("ATTNCREDIT_CACHE", str(tmp_path / "cache"))
    converted = tmp_path / "cache" / "models" / "smollm2-135m-instruct"
    converted.mkdir(parents=True)
    (converted / "config.json").write_text("{}")
    assert base_model_id(str(converted)) == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert base_model_id("smollm2-135m-instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert base_model_id("Qwen/Qwen3-4B-Base") == "Qwen/Qwen3-4B-Base"
    assert base_model_id(str(tiny_qwen2)) is None  # a local folder with no hub id recorded
    assert base_model_id(str(tmp_path / "no" / "such")) is None
