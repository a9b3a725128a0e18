"""AnchorGRPOTrainer on a real TRL GRPOTrainer loop with a tiny real-architecture model."""

import json
import time
from pathlib import Path

import pytest
import torch
from tiny_training import digit_reward, prompts, tiny_args
from trl import GRPOConfig, GRPOTrainer

import attncredit
from attncredit import AnchorGRPOConfig, AnchorGRPOTrainer
from attncredit.errors import ConfigError
from attncredit.models import load_tokenizer


def train(trainer_cls, config_cls, model_dir, tmp_path, **overrides):
    args = tiny_args(tmp_path, max_completion_length=24, **overrides)
    if config_cls is GRPOConfig:
        del args["credit_strategy"]
    trainer = trainer_cls(
        model=str(model_dir),
        reward_funcs=digit_reward,
        args=config_cls(**args),
        train_dataset=prompts(),
        processing_class=load_tokenizer(str(model_dir)),
    )
    trainer.train()
    return trainer


def losses(trainer):
    return [(h["loss"], h["grad_norm"]) for h in trainer.state.log_history if "loss" in h]


def test_none_strategy_matches_trl_step_for_step(tiny_qwen2, tmp_path):
    ours = train(AnchorGRPOTrainer, AnchorGRPOConfig, tiny_qwen2, tmp_path / "a", credit_strategy="none")
    trl = train(GRPOTrainer, GRPOConfig, tiny_qwen2, tmp_path / "b")
    assert len(losses(ours)) == 2
    assert losses(ours) == losses(trl)
    for (name, p), q in zip(ours.model.named_parameters(), trl.model.parameters()):
        assert torch.equal(p, q), name


class CapturingTrainer(AnchorGRPOTrainer):
    """Keeps the sequence advantages TRL computed and the 2-D ones the loss received."""

    captured: list

    def _scaled_advantages(self, advantages, gamma, completion_mask):
        out = super()._scaled_advantages(advantages, gamma, completion_mask)
        self.captured.append((advantages.clone(), gamma.clone(), completion_mask.clone(), out.clone()))
        return out


@pytest.mark.parametrize("steps_per_generation", [1, 2], ids=["loss-forward", "old-logps-forward"])
def test_coupled_advantages_are_2d_and_differ_exactly_where_gamma_is_not_one(tiny_qwen2, tmp_path, steps_per_generation):
    # Two optimizer steps per generation make TRL run its old-log-prob forward (the second step's rollouts come
    # from older weights); with one, TRL runs none and the statistics come from the loss forward.
    CapturingTrainer.captured = []
    trainer = train(
        CapturingTrainer,
        AnchorGRPOConfig,
        tiny_qwen2,
        tmp_path,
        credit_strategy="coupled",
        steps_per_generation=steps_per_generation,
        max_steps=1,
        log_completions=True,
    )
    assert trainer._trl_runs_old_logps_forward() == (steps_per_generation == 2)
    assert trainer.captured
    for adv, gamma, mask, out in trainer.captured:
        assert out.shape == gamma.shape == mask.shape and out.dim() == 2
        expected = adv[:, None] * gamma
        assert torch.allclose(out, expected)
        differs = out != adv[:, None].expand_as(out)
        assert torch.equal(differs, (gamma != 1) & (adv[:, None] != 0))
        assert bool(((gamma != 1) & ~mask.bool()).any()) is False
        assert bool((gamma > 1).any())
    logged = [h for h in trainer.state.log_history if "attncredit/gamma_mean" in h]
    assert logged and logged[0]["attncredit/gamma_mean"] > 1.0
    assert 0.0 < logged[0]["attncredit/amplified_frac"] < 1.0
    metrics = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert any("attncredit/waad_mean" in m for m in metrics)
    clock = [m["time"] for m in metrics]  # the wall clock of every row, for where a run's time went
    assert clock == sorted(clock) and abs(clock[-1] - time.time()) < 600
    if steps_per_generation == 2:  # gamma known before TRL's completions table is filled
        marked = list(trainer._logs["extra"]["amplified"])
        assert len(marked) == len(trainer._logs["completion"]) and any("[[" in text for text in marked)


def test_config_rejects_bad_credit_values(tmp_path):
    with pytest.raises(ConfigError, match="credit_strategy='anchors'"):
        AnchorGRPOConfig(output_dir=str(tmp_path), credit_strategy="anchors", report_to="none", use_cpu=True)
    with pytest.raises(ConfigError, match="credit_fai_horizon"):
        AnchorGRPOConfig(output_dir=str(tmp_path), credit_fai_horizon=[100, 10], report_to="none", use_cpu=True)
    with pytest.raises(ConfigError, match="credit_gamma_amp"):
        AnchorGRPOConfig(output_dir=str(tmp_path), credit_gamma_amp=0.5, report_to="none", use_cpu=True)


def test_pinned_memory_is_off_without_an_accelerator(tmp_path, monkeypatch):
    """TRL pins dataloader memory by default; without an accelerator torch warns at every epoch, so it is off."""
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: False)
    assert AnchorGRPOConfig(output_dir=str(tmp_path), report_to="none").dataloader_pin_memory is False
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: True)
    assert AnchorGRPOConfig(output_dir=str(tmp_path), report_to="none", use_cpu=True).dataloader_pin_memory is False
    assert AnchorGRPOConfig(output_dir=str(tmp_path), report_to="none", bf16=False).dataloader_pin_memory is True


def test_nan_reward_fails_naming_the_function_and_step(tiny_qwen2, tmp_path):
    from attncredit.errors import NonFiniteTrainingError

    def broken_reward(completions, **kwargs):
        return [float("nan")] + [0.5] * (len(completions) - 1)

    trainer = AnchorGRPOTrainer(
        model=str(tiny_qwen2),
        reward_funcs=broken_reward,
        args=AnchorGRPOConfig(**tiny_args(tmp_path, max_steps=1)),
        train_dataset=prompts(),
        processing_class=load_tokenizer(str(tiny_qwen2)),
    )
    with pytest.raises(NonFiniteTrainingError, match="reward function 'broken_reward' returned nan for completion 0 at step 0"):
        trainer.train()


def test_nan_attention_statistics_fail_naming_the_step(tiny_qwen2, tmp_path, monkeypatch):
    import attncredit.trainer as trainer_module
    from attncredit.errors import NonFiniteTrainingError

    real = trainer_module.group_token_stats

    def poisoned(*args, **kwargs):
        groups = real(*args, **kwargs)
        groups.fai[:] = float("nan")
        return groups

    monkeypatch.setattr(trainer_module, "group_token_stats", poisoned)
    with pytest.raises(NonFiniteTrainingError, match=r"step 0: fai has \d+ NaN/inf value"):
        train(AnchorGRPOTrainer, AnchorGRPOConfig, tiny_qwen2, tmp_path, credit_strategy="global_anchor", max_steps=1)


@pytest.mark.slow
def test_class_docstring_example_runs(tmp_path, monkeypatch):
    """The runnable example in AnchorGRPOTrainer's docstring trains one step as written (embedded model, CPU)."""
    import re
    import textwrap

    example = AnchorGRPOTrainer.__doc__.split("::", 1)[1]
    code = textwrap.dedent(example.rstrip().rstrip('"'))
    monkeypatch.chdir(tmp_path)
    scope = {}
    exec(compile(code, "AnchorGRPOTrainer.__doc__", "exec"), scope)
    trainer = scope["trainer"]
    assert trainer.state.global_step == 1
    assert any("attncredit/gamma_mean" in h for h in trainer.state.log_history)
    assert re.search(r"runs/example$", trainer.args.output_dir)


@pytest.mark.parametrize("strategy", ["coupled", "random", "entropy"])
def test_credit_adds_no_host_wait_before_its_checks_are_read(tiny_qwen2, tmp_path, monkeypatch, strategy):
    """Nothing in attncredit's code reads a tensor's value on the host during a training step (on a GPU each such
    read waits for every queued kernel): the credit's input checks stay on the device and are read together by
    DeferredChecks.verify, after TRL's own metrics have waited already. The checks still run (verify finds them)."""
    from host_reads import HostReads

    from attncredit.deferred import DeferredChecks

    pending = []
    real_verify = DeferredChecks.verify

    def counted(self):
        pending.append(len(self))
        real_verify(self)

    monkeypatch.setattr(DeferredChecks, "verify", counted)

    class Watched(AnchorGRPOTrainer):
        def training_step(self, *args, **kwargs):
            with HostReads() as reads:
                loss = super().training_step(*args, **kwargs)
            self.host_reads = reads.inside(Path(attncredit.__file__).parent)
            return loss

    # credit_log_every 0 as in the study: the head-group log and token views copy to the host on their steps, by design
    trainer = train(Watched, AnchorGRPOConfig, tiny_qwen2, tmp_path, credit_strategy=strategy, max_steps=1,
                    credit_log_every=0)
    assert trainer.host_reads == []
    assert sum(pending) >= 2  # the response mask's two checks at least (plus masks and statistics where read)
