"""The TRL / transformers surface AnchorPPOTrainer relies on beyond AnchorGRPOTrainer's (tests/test_trl_contract.py):
the methods it overrides or calls, with their TRL 1.16 / transformers 5 signatures, and GRPOConfig's refusal of
num_generations=1 that AnchorPPOConfig works around."""

import inspect

import pytest
from trl import GRPOConfig, GRPOTrainer

from attncredit import AnchorPPOTrainer

OVERRIDDEN = {
    "_calculate_rewards": ["self", "inputs", "prompts", "completions", "completion_ids_list"],
    "training_step": ["self", "model", "inputs", "num_items_in_batch"],
    "create_scheduler": ["self", "num_training_steps", "optimizer"],
    "save_model": ["self", "output_dir", "_internal_call"],
    "_load_optimizer_and_scheduler": ["self", "checkpoint"],
    "_compute_loss": ["self", "model", "inputs"],
}


def test_overridden_methods_keep_their_signatures():
    """(The critic joins checkpoints through AnchorGRPOTrainer._write_checkpoint, under the base trainer's
    ``_save_checkpoint`` override, which tests/test_trl_contract.py holds to TRL's signature.)"""
    for name, expected in OVERRIDDEN.items():
        assert name in vars(AnchorPPOTrainer), f"AnchorPPOTrainer no longer overrides {name}"
        params = [p.name for p in inspect.signature(getattr(GRPOTrainer, name)).parameters.values()
                  if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
        assert params == expected, f"GRPOTrainer.{name} changed signature: {params} != {expected}"


def test_trl_still_refuses_one_generation_for_grpo(tmp_path):
    # AnchorPPOConfig lets num_generations=1 through TRL's checks (tests/test_ppo_math.py); if TRL drops this
    # refusal, the workaround in AnchorPPOConfig.__post_init__ can go.
    with pytest.raises(ValueError, match="at least 2 generations"):
        GRPOConfig(output_dir=str(tmp_path), num_generations=1, per_device_train_batch_size=4, report_to="none", use_cpu=True)


def test_rewards_and_trainer_attributes_on_a_real_trainer(tiny_qwen2, tmp_path):
    from test_ppo_trainer import make_trainer

    trainer = make_trainer(tiny_qwen2, tmp_path)
    for name in ("reward_weights", "ref_model", "beta", "_metrics", "reward_func_names", "_logs"):
        assert hasattr(trainer, name), name
    assert trainer.reward_weights.tolist() == [1.0]
    assert callable(getattr(trainer, "_get_output_dir", None))


def test_the_critic_gets_every_image_input_trl_gives_the_policy():
    """The critic's forward takes VISION_INPUTS from the rollout and micro-batches: the image keywords TRL's log-prob
    forward passes to the policy, less its bookkeeping (image and tile counts). A new one in TRL fails here."""
    from attncredit.ppo.trainer import VISION_INPUTS

    params = list(inspect.signature(GRPOTrainer._get_per_token_logps_and_entropies).parameters)
    model_inputs = params[params.index("compute_aux_loss") + 1 :]
    assert sorted(set(model_inputs) - {"num_images", "num_tiles"}) == sorted(VISION_INPUTS)
