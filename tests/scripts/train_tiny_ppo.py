"""Train AnchorPPOTrainer on a tiny model for a few steps and write what this rank saw, for subprocess tests.

    [accelerate launch ...] python tests/scripts/train_tiny_ppo.py MODEL_DIR OUT_DIR ['{"config_field": value, ...}']

Used by tests/test_ppo_distributed.py (2 processes, gloo) and tests/test_ppo_vllm.py (vLLM colocate). Each rank
writes ``OUT_DIR/rank<i>.json`` with sha256 digests of the policy's and the critic's full (gathered) weights before and after training, the
local mean of the whitened GAE advantages of every rollout (before credit), the dimension of the advantages TRL's
loss read, and the log history.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # train_tiny.py: weights digest, vLLM CPU patches
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the shared tiny-run pieces
from tiny_training import AdvantageReads, digit_reward, prompts  # noqa: E402
from train_tiny import patch_vllm_for_cpu_tests  # noqa: E402


def full_weights_hash(model) -> str:
    """sha256 of the full (unsharded) state dict of a plain, DDP or FSDP2 model; every rank must call it."""
    import hashlib

    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))
    digest = hashlib.sha256()
    for name, tensor in sorted(state.items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().float().numpy().tobytes())
    return digest.hexdigest()


def make_trainer_class():
    from attncredit import AnchorPPOTrainer

    class DebugPPOTrainer(AnchorPPOTrainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.debug = {"rollout_advantage_means": [], "loss_advantage_dims": []}

        def _rollout_advantages(self, output):
            advantages = super()._rollout_advantages(output)
            mask = output["value_mask"].bool()
            self.debug["rollout_advantage_means"].append(float(advantages[mask].mean()))
            return advantages

        def _compute_loss(self, model, inputs):
            reads: list = []
            try:
                return super()._compute_loss(model, AdvantageReads(inputs, reads))
            finally:
                self.debug["loss_advantage_dims"].append(reads[-1] if reads else None)

    return DebugPPOTrainer


def main(model_dir: str, out_dir: str, overrides: dict) -> None:
    from transformers import AutoModelForCausalLM

    from attncredit import AnchorPPOConfig
    from attncredit.models import load_tokenizer
    from attncredit.ppo import ValueModel

    if overrides.pop("vllm_cpu", False):
        patch_vllm_for_cpu_tests()
    policy_before = full_weights_hash(AutoModelForCausalLM.from_pretrained(model_dir))
    critic_before = full_weights_hash(ValueModel.from_pretrained(model_dir))
    args = dict(
        output_dir=out_dir, max_steps=2, per_device_train_batch_size=4, num_generations=4, max_completion_length=16,
        learning_rate=1e-3, critic_learning_rate=1e-3, logging_steps=1, save_strategy="no", report_to="none",
        use_cpu=True, seed=0, bf16=False, credit_strategy="coupled",
    )  # fmt: skip
    args.update(overrides)
    trainer = make_trainer_class()(
        model=model_dir,
        reward_funcs=digit_reward,
        args=AnchorPPOConfig(**args),
        train_dataset=prompts(16),
        processing_class=load_tokenizer(model_dir),
    )
    trainer.train()
    rank = trainer.accelerator.process_index
    result = {
        "process_index": rank,
        "num_processes": trainer.accelerator.num_processes,
        "runs_old_logps_forward": trainer._trl_runs_old_logps_forward(),
        "policy_before": policy_before,
        "policy_after": full_weights_hash(trainer.model),
        "critic_before": critic_before,
        "critic_after": full_weights_hash(trainer.critic),
        "log_history": trainer.state.log_history,
        **trainer.debug,
    }
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(result, f)


if __name__ == "__main__":  # guard: vLLM starts its workers with spawn
    main(sys.argv[1], sys.argv[2], json.loads(sys.argv[3]) if len(sys.argv) > 3 else {})
