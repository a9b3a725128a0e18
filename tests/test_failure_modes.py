"""What happens on a rerun, a kill while saving, NaN and bad paths (README "Failure modes"), on a tiny model."""

import json
import math
import shutil

import pytest
from tiny_training import digit_reward, prompts, tiny_args

from attncredit import AnchorGRPOConfig, AnchorGRPOTrainer
from attncredit.errors import ConfigError, NonFiniteTrainingError
from attncredit.models import load_tokenizer


def trainer_for(model_dir, output_dir, cls=AnchorGRPOTrainer, **overrides):
    return cls(
        model=str(model_dir),
        reward_funcs=digit_reward,
        args=AnchorGRPOConfig(**tiny_args(output_dir, **overrides)),
        train_dataset=prompts(),
        processing_class=load_tokenizer(str(model_dir)),
    )


def metrics(output_dir):
    return [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("field", ["credit_gamma_amp", "learning_rate", "credit_alpha"])
@pytest.mark.parametrize("value", [float("inf"), float("nan")])
def test_non_finite_config_values_are_rejected(tmp_path, field, value):
    with pytest.raises(ConfigError, match=rf"^{field}={value} is invalid; allowed: finite numbers"):
        AnchorGRPOConfig(output_dir=str(tmp_path), use_cpu=True, **{field: value})


def test_precision_default_runs_on_this_machine(tmp_path):
    import torch

    args = AnchorGRPOConfig(output_dir=str(tmp_path))  # TRL's default would be bf16=True, refused on a CPU
    assert args.bf16 is (torch.cuda.is_available() and torch.cuda.is_bf16_supported())


class OverflowingCredit(AnchorGRPOTrainer):
    """Credit weights that overflow (as a huge credit_gamma_amp or a broken custom strategy would): the loss and
    gradients of step 1 are NaN."""

    def _scaled_advantages(self, advantages, gamma, completion_mask):
        return super()._scaled_advantages(advantages, gamma * float("inf"), completion_mask)


def test_non_finite_grad_norm_stops_at_its_step_and_is_recorded(tiny_qwen2, tmp_path):
    trainer = trainer_for(tiny_qwen2, tmp_path, OverflowingCredit, max_steps=3)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    with pytest.raises(NonFiniteTrainingError, match=r"^non-finite grad_norm=nan at step 1: training stopped.*likely causes"):
        trainer.train()
    (record,) = metrics(tmp_path)
    assert record["step"] == 1 and math.isnan(record["grad_norm"]) and "reward" in record, record
    after = trainer.model.state_dict()
    assert all(after[k].equal(v) for k, v in before.items()), "the NaN step reached the weights"


def test_reruns_never_mix_and_resume_skips_a_torn_checkpoint(tiny_qwen2, tmp_path, caplog):
    from attncredit.output_dir import is_complete

    out = tmp_path / "run"
    checkpoints = dict(save_strategy="steps", save_steps=1, credit_log_every=1)
    trainer_for(tiny_qwen2, out, **checkpoints).train()
    assert [m["step"] for m in metrics(out) if "loss" in m] == [1, 2]
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]

    # The same command again: refused before anything is written, naming the ways on.
    with pytest.raises(ConfigError, match=r"holds another run's outputs \(.*metrics\.jsonl.*overwrite_output_dir=True"):
        trainer_for(tiny_qwen2, out, **checkpoints).train()

    # A kill while checkpoint-2 was being written: resume true takes checkpoint-1 and says what it skipped.
    state = out / "checkpoint-2" / "trainer_state.json"
    state.write_text(state.read_text()[:40])
    with caplog.at_level("WARNING", logger="attncredit.output_dir"):
        trainer = trainer_for(tiny_qwen2, out, **checkpoints)
        trainer.train(resume_from_checkpoint=True)
    assert "skipping incomplete checkpoint-2" in caplog.text
    assert trainer.state.global_step == 2 and is_complete(out / "checkpoint-2")
    assert [m["step"] for m in metrics(out) if "loss" in m] == [1, 2, 2]  # step 2 again, from the resumed run

    # Starting over deletes the old run's outputs: one run's steps, token views and checkpoints only.
    trainer_for(tiny_qwen2, out, overwrite_output_dir=True, max_steps=1, **checkpoints).train()
    assert [m["step"] for m in metrics(out) if "loss" in m] == [1]
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1"]
    assert sorted(p.name for p in (out / "token_views").iterdir()) == ["step_00000.html", "step_00000.png"]


def test_unwritable_output_dir_fails_before_the_model_loads(tiny_qwen2, tmp_path, monkeypatch):
    import transformers

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", lambda *a, **k: pytest.fail("model loaded"))
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match=r"output_dir='.*file/run' is not a writable folder \(Not a directory\)"):
        trainer_for(tiny_qwen2, tmp_path / "file" / "run")


def test_logged_nan_is_kept_in_metrics_jsonl_and_stops_training(tmp_path):
    """A NaN that shows only at logging time (e.g. the loss): metrics.jsonl keeps it, then the guard stops."""
    from types import SimpleNamespace

    from transformers import TrainerControl

    from attncredit.callbacks import MetricsJsonlCallback, NonFiniteGuardCallback

    args = SimpleNamespace(output_dir=str(tmp_path))
    state = SimpleNamespace(global_step=7, epoch=0.5, is_world_process_zero=True)
    logs = {"loss": float("nan"), "grad_norm": 1.0, "reward": 0.5}
    MetricsJsonlCallback().on_log(args, state, TrainerControl(), logs=logs)
    (record,) = metrics(tmp_path)
    assert record["step"] == 7 and math.isnan(record["loss"]) and record["reward"] == 0.5
    with pytest.raises(NonFiniteTrainingError, match=r"^non-finite loss=nan at step 7: training stopped"):
        NonFiniteGuardCallback().on_log(args, state, TrainerControl(), logs=logs)


def test_a_ppo_runs_final_critic_counts_as_a_run_output_and_overwrite_removes_it(tmp_path):
    from attncredit.output_dir import prepare_output_dir, run_outputs

    (tmp_path / "critic").mkdir()
    (tmp_path / "critic" / "model.safetensors").write_text("x")
    (tmp_path / "notes.txt").write_text("the user's own file")
    assert run_outputs(str(tmp_path)) == ["critic"]
    with pytest.raises(ConfigError, match=r"holds another run's outputs \(critic\)"):
        prepare_output_dir(str(tmp_path), None, overwrite=False)
    prepare_output_dir(str(tmp_path), None, overwrite=True)
    assert not (tmp_path / "critic").exists() and (tmp_path / "notes.txt").exists()
