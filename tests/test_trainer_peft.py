"""AnchorGRPOTrainer with a LoRA adapter (peft_config) and a KL term, so TRL runs its PEFT reference pass.

The reference pass is the same module with the adapter disabled; it must never record attention statistics (gamma
must come from the policy, adapter on), whether the statistics come from the loss forward or from TRL's old-log-prob
forward that runs right before the reference pass in the same no-grad block.
"""

import pytest
import torch
from peft import LoraConfig
from peft.tuners.tuners_utils import BaseTunerLayer

from attncredit import AnchorGRPOConfig, AnchorGRPOTrainer
from attncredit.attention import recording
from attncredit.models import load_tokenizer

from tiny_training import digit_reward, prompts, tiny_args


def adapters_disabled(model) -> bool:
    return any(m.disable_adapters for m in model.modules() if isinstance(m, BaseTunerLayer))


class CountingTrainer(AnchorGRPOTrainer):
    """Notes every policy log-prob forward: adapter on or off (reference pass), grad or no grad."""

    def _get_per_token_logps_and_entropies(self, model, *args, **kwargs):
        self.forwards.append({"adapter_off": adapters_disabled(model), "grad": torch.is_grad_enabled()})
        return super()._get_per_token_logps_and_entropies(model, *args, **kwargs)


@pytest.mark.parametrize("steps_per_generation", [1, 2], ids=["loss-forward", "old-logps-forward"])
def test_lora_reference_pass_never_records_and_only_lora_weights_train(
    tiny_qwen2, tmp_path, monkeypatch, steps_per_generation
):
    recordings = []  # one entry per probe layer whose statistics were computed
    original_call = recording.AttentionRecorder.__call__

    def counting_call(self, module, query, key, kwargs, row_lse):
        before = len(self.stats)
        original_call(self, module, query, key, kwargs, row_lse)
        if len(self.stats) > before:
            recordings.append({"layer": module.layer_idx, "adapter_off": adapters_disabled(self._model)})

    monkeypatch.setattr(recording.AttentionRecorder, "__call__", counting_call)

    args = AnchorGRPOConfig(**tiny_args(tmp_path, beta=0.1, steps_per_generation=steps_per_generation))
    trainer = CountingTrainer(
        model=str(tiny_qwen2),
        reward_funcs=digit_reward,
        args=args,
        train_dataset=prompts(),
        processing_class=load_tokenizer(str(tiny_qwen2)),
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
    )
    trainer.forwards = []
    assert trainer.ref_model is None  # PEFT: the reference is the policy with its adapter disabled
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()

    # TRL ran the reference pass (adapter off, no grad) once per generation.
    reference_passes = [f for f in trainer.forwards if f["adapter_off"]]
    generations = 2 // steps_per_generation
    assert len(reference_passes) == generations and not any(f["grad"] for f in reference_passes)
    # Statistics were recorded only with the adapter on, once per micro-batch of 4 rows (2 per run: in the loss
    # forward of each step, or in the one old-log-prob forward over both steps' rows).
    assert recordings and not any(r["adapter_off"] for r in recordings)
    assert len(recordings) == 2 * len(trainer.probe_layers)
    assert trainer._trl_runs_old_logps_forward() == (steps_per_generation == 2)
    # Logged on every step; a step that reuses its rollout's gamma repeats that rollout's statistics.
    logged = [h for h in trainer.state.log_history if "attncredit/gamma_mean" in h]
    assert len(logged) == 2 and all(h["attncredit/gamma_mean"] > 1.0 for h in logged)
    if generations == 1:
        assert logged[0]["attncredit/gamma_mean"] == logged[1]["attncredit/gamma_mean"]
    assert all("kl" in h for h in trainer.state.log_history if "loss" in h)

    after = dict(trainer.model.named_parameters())
    lora = [n for n in after if "lora_" in n]
    base = [n for n in after if "lora_" not in n]
    assert lora and base
    assert all(after[n].requires_grad for n in lora) and not any(after[n].requires_grad for n in base)
    assert all(not torch.equal(after[n], before[n]) for n in lora if "lora_B" in n)
    assert any(not torch.equal(after[n], before[n]) for n in lora if "lora_A" in n)
    assert all(torch.equal(after[n], before[n]) for n in base)
