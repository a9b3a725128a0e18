"""The TRL surface AnchorGRPOTrainer relies on. attncredit overrides private GRPOTrainer methods and reads private
attributes; pyproject.toml pins the TRL range these tests cover. A TRL release that changes one of them fails here,
loudly, instead of silently bypassing the credit."""

import inspect

import trl
from packaging.version import Version
from trl import GRPOTrainer

from attncredit import AnchorGRPOTrainer

# method -> its parameters in TRL 1.16 (name, kind) as AnchorGRPOTrainer calls and overrides it
OVERRIDDEN = {
    "_tokenize_prompts": ["self", "prompts"],
    "_generate_and_score_completions": ["self", "inputs"],
    "_compute_loss": ["self", "model", "inputs"],
    "_save_checkpoint": ["self", "model", "trial"],
    "_load_optimizer_and_scheduler": ["self", "checkpoint"],
    "_get_per_token_logps_and_entropies": [
        "self", "model", "input_ids", "attention_mask", "logits_to_keep", "batch_size", "compute_entropy",
        "compute_aux_loss", "pixel_values", "image_grid_thw", "num_images", "pixel_attention_mask", "spatial_shapes",
        "num_tiles", "image_sizes", "token_type_ids", "mm_token_type_ids", "image_position_ids",
    ],
}
# transformers' Trainer method overridden to stop on a non-finite grad norm before the optimizer step
OVERRIDDEN_TRAINER = {"_get_grad_norm": ["self", "model", "grad_norm"], "train": ["self", "resume_from_checkpoint", "trial", "ignore_keys_for_eval"],
                      # the model card (TRL's _BaseTrainer) and the saved base-model name (transformers' Trainer)
                      "create_model_card": ["self", "model_name", "dataset_name", "tags"],
                      "save_model": ["self", "output_dir", "_internal_call"]}
# methods and attributes the trainer and CreditLoggingCallback use without overriding them
CALLED = ["_log_completion_extra", "_get_output_dir"]
ATTRIBUTES = [
    "_metrics", "_is_vlm", "environment_factories", "tools", "chat_template", "chat_template_kwargs", "use_vllm",
    "vllm_importance_sampling_correction", "num_iterations", "log_completions", "reward_funcs", "reward_func_names",
    "hub_model_id", "_name", "_paper", "_tag_names",  # read by TRL's create_model_card
]


def test_trl_version_is_in_the_pinned_range():
    assert Version("1.16") <= Version(trl.__version__) < Version("1.17"), trl.__version__


def test_overridden_trl_methods_keep_their_signatures():
    for name, expected in OVERRIDDEN.items():
        assert name in vars(AnchorGRPOTrainer), f"AnchorGRPOTrainer no longer overrides {name}"
        params = [p.name for p in inspect.signature(getattr(GRPOTrainer, name)).parameters.values()
                  if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
        assert params == expected, f"GRPOTrainer.{name} changed signature: {params} != {expected}"
    for name, expected in OVERRIDDEN_TRAINER.items():
        params = [p.name for p in inspect.signature(getattr(GRPOTrainer, name)).parameters.values()
                  if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
        assert name in vars(AnchorGRPOTrainer) and params == expected, f"Trainer.{name} changed signature: {params}"
    for name in CALLED:
        assert callable(getattr(GRPOTrainer, name, None)), f"GRPOTrainer.{name} is gone"


def test_private_trl_attributes_exist_on_a_real_trainer(tiny_qwen2, tmp_path):
    from tiny_training import digit_reward, prompts, tiny_args

    from attncredit import AnchorGRPOConfig
    from attncredit.models import load_tokenizer

    trainer = AnchorGRPOTrainer(
        model=str(tiny_qwen2),
        reward_funcs=digit_reward,
        args=AnchorGRPOConfig(**tiny_args(tmp_path)),
        train_dataset=prompts(),
        processing_class=load_tokenizer(str(tiny_qwen2)),
    )
    missing = [name for name in ATTRIBUTES if not hasattr(trainer, name)]
    assert not missing, f"GRPOTrainer attributes attncredit reads are gone: {missing}"
    assert "train" in trainer._metrics
