"""Coupled credit across TRL GRPO settings: activation checkpointing, several iterations per generation, several
steps per generation, and TRL 1.16's loss types. Each case trains 1-2 steps of a tiny model and checks that the loss
read 2-D advantages (A * gamma) and that the statistics came from the forward the setting implies."""

import pytest
import torch

from attncredit import AnchorGRPOConfig, AnchorGRPOTrainer
from attncredit.models import load_tokenizer
from tiny_training import AdvantageReads, digit_reward, prompts, tiny_args


class ProbeTrainer(AnchorGRPOTrainer):
    """Counts recorded forwards (with or without grad) and keeps the advantages' dimension that TRL's loss read."""

    def _recorded_forward(self, *args, **kwargs):
        out = super()._recorded_forward(*args, **kwargs)
        self.recorded.append({"grad": torch.is_grad_enabled(), "gamma": out[3].clone()})
        return out

    def _compute_loss(self, model, inputs):
        reads = []
        loss = super()._compute_loss(model, AdvantageReads(inputs, reads))
        self.loss_reads.append(reads[-1])  # TRL reads inputs["advantages"] after its forward: the last read
        self.losses.append(float(loss))
        return loss


CASES = {
    # name: (config overrides, statistics from TRL's old-log-prob forward?, expected recorded forwards)
    # activation checkpointing: the loss forward records once; the recomputation in backward passes through
    "gradient_checkpointing": (dict(gradient_checkpointing=True, max_steps=1), False, 1),
    # one generation for two optimizer steps: TRL needs old log-probs and the stats come from that no-grad forward
    # (TRL switches checkpointing off there); 8 rows in one forward
    "steps_per_generation=2+gradient_checkpointing": (
        dict(steps_per_generation=2, gradient_checkpointing=True, max_steps=1), True, 1
    ),
    # one generation, two optimizer steps over the same rows: old log-probs again
    "num_iterations=2": (dict(num_iterations=2, max_steps=2), True, 1),
    # two micro-batches per optimizer step, both iterations inside it: no old-log-prob forward, the first
    # iteration's loss forward records, the second reuses the 2-D advantages it left in TRL's buffer
    "num_iterations=2+accumulation": (
        dict(num_iterations=2, gradient_accumulation_steps=2, steps_per_generation=1, max_steps=1), False, 1
    ),
    # loss types that use the advantage differently ("dapo", the default, runs in the other trainer tests; "bnpo"
    # differs from "grpo" only in its normaliser)
    **{
        f"loss_type={loss}": (dict(loss_type=loss, max_steps=1, **extra), False, 1)
        for loss, extra in [
            ("grpo", {}),
            ("dr_grpo", {}),
            ("cispo", {}),
            ("sapo", {}),
            ("luspo", {"importance_sampling_level": "sequence"}),
            ("vespo", {}),
        ]
    },
}


@pytest.mark.parametrize("case", list(CASES))
def test_credit_reaches_the_loss(tiny_qwen2, tmp_path, case):
    overrides, from_old_logps, recorded_forwards = CASES[case]
    args = AnchorGRPOConfig(**tiny_args(tmp_path, **overrides))
    trainer = ProbeTrainer(
        model=str(tiny_qwen2),
        reward_funcs=digit_reward,
        args=args,
        train_dataset=prompts(),
        processing_class=load_tokenizer(str(tiny_qwen2)),
    )
    trainer.recorded, trainer.loss_reads, trainer.losses = [], [], []
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.train()

    micro_steps = args.max_steps * args.gradient_accumulation_steps
    assert trainer.state.global_step == args.max_steps
    assert trainer._trl_runs_old_logps_forward() == from_old_logps
    assert len(trainer.recorded) == recorded_forwards
    assert all(r["grad"] != from_old_logps for r in trainer.recorded)
    assert all((r["gamma"] > 1).any() and (r["gamma"] >= 1).all() for r in trainer.recorded)
    assert trainer.loss_reads == [2] * micro_steps
    assert all(torch.isfinite(torch.tensor(trainer.losses)))
    assert any(not torch.equal(p, q) for p, q in zip(trainer.model.parameters(), before))
    logged = [h for h in trainer.state.log_history if "attncredit/gamma_mean" in h]
    assert logged and logged[0]["attncredit/gamma_mean"] > 1.0
