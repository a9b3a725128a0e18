"""Issue 21 (part B): resume of a finished run or of another trainer's checkpoint, bad rows and over-long prompts,
a failed checkpoint save, config values checked at parse time, and the Python API's run-folder guard; on a tiny
model (README "Failure modes")."""

import errno
import json
import shutil
import warnings

import pytest
from tiny_training import digit_reward, prompts, tiny_args

from attncredit import AnchorGRPOConfig, AnchorGRPOTrainer
from attncredit.errors import CheckpointSaveError, ConfigError
from attncredit.models import load_tokenizer
from attncredit.output_dir import FinishedRunError, check_resume, is_complete


def trainer_for(model_dir, output_dir, train_dataset=None, cls=AnchorGRPOTrainer, **overrides):
    return cls(
        model=str(model_dir),
        reward_funcs=digit_reward,
        args=AnchorGRPOConfig(**tiny_args(output_dir, **overrides)),
        train_dataset=prompts() if train_dataset is None else train_dataset,
        processing_class=load_tokenizer(str(model_dir)),
    )


@pytest.fixture
def no_model_load(monkeypatch):
    """Fail the test if a model is loaded: the check under test must come first."""
    import transformers

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", lambda *a, **k: pytest.fail("model loaded"))


def fake_checkpoint(folder, step, critic=False, max_steps=4):
    folder.mkdir(parents=True)
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": step, "max_steps": max_steps, "num_train_epochs": 1}))
    if critic:
        (folder / "critic").mkdir()
    return folder


def snapshot(folder):
    """Every file under ``folder`` with its size and modification time."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------------------------------------------
# Config values checked at parse time
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "options, match",
    [
        ('{"selection": "nope"}', r"^credit_options=\{'selection': 'nope'\} is invalid for credit strategy 'coupled': selection must be one of 'top', 'bottom'"),
        ({"tau_waad": "x"}, r"^credit_options=.*tau_waad must be 'median' or a finite number"),
    ],
)
def test_a_bad_credit_option_value_fails_at_parse_time(tmp_path, options, match):
    with pytest.raises(ConfigError, match=match):
        AnchorGRPOConfig(output_dir=str(tmp_path), use_cpu=True, credit_options=options)
    assert AnchorGRPOConfig(output_dir=str(tmp_path), use_cpu=True, credit_options={"selection": "bottom"}).credit_options


@pytest.mark.parametrize("value", [0, -3])
def test_max_completion_length_below_one_is_named_by_its_field(tmp_path, value):
    with pytest.raises(ConfigError, match=rf"^max_completion_length={value} is invalid; allowed: an integer >= 1"):
        AnchorGRPOConfig(output_dir=str(tmp_path), use_cpu=True, max_completion_length=value)


# ---------------------------------------------------------------------------------------------------------------
# Resume: finished runs, another trainer's checkpoint, the Python guard before the model loads
# ---------------------------------------------------------------------------------------------------------------
def test_resuming_a_finished_run_trains_nothing_and_keeps_its_outputs(tiny_qwen2, tmp_path, no_model_load):
    out = tmp_path / "run"
    fake_checkpoint(out / "checkpoint-2", 2, max_steps=2)
    (out / "model.safetensors").write_text("the finished run's model")
    before = snapshot(out)
    for max_steps in (2, 1):  # the same max_steps, and a lower one
        with pytest.raises(FinishedRunError, match=r"checkpoint-2 is step 2, at or past max_steps=%d: the run has finished, nothing to train" % max_steps):
            trainer_for(tiny_qwen2, out, max_steps=max_steps, resume_from_checkpoint="true")
    # By epochs: the finished run's own max_steps counts, when the number of epochs is the same.
    with pytest.raises(FinishedRunError, match=r"max_steps=2: the run has finished"):
        trainer_for(tiny_qwen2, out, max_steps=-1, num_train_epochs=1, resume_from_checkpoint="true")
    # Rerun without resuming: refused before the model loads, naming the Python arguments.
    with pytest.raises(ConfigError, match=r"holds another run's outputs .*resume_from_checkpoint=True \(config or train\(\)\), start over with overwrite_output_dir=True"):
        trainer_for(tiny_qwen2, out, max_steps=2)
    assert snapshot(out) == before


def test_finished_run_is_refused_by_train_and_an_unfinished_one_resumes(tiny_qwen2, tmp_path):
    out = tmp_path / "run"
    trainer_for(tiny_qwen2, out, save_strategy="steps", save_steps=1).train()
    shutil.rmtree(out / "checkpoint-1")
    before = snapshot(out)
    trainer = trainer_for(tiny_qwen2, tmp_path / "other")  # train(resume_from_checkpoint=...) names it instead
    trainer.args.output_dir = str(out)
    with pytest.raises(FinishedRunError, match=r"step 2, at or past max_steps=2: the run has finished"):
        trainer.train(resume_from_checkpoint=True)
    assert snapshot(out) == before
    # The experiment runner's case: a run that has not reached max_steps resumes and trains on.
    trainer = trainer_for(tiny_qwen2, out, max_steps=3, save_strategy="steps", save_steps=1, resume_from_checkpoint="true")
    trainer.train()
    assert trainer.state.global_step == 3 and is_complete(out / "checkpoint-3")


def test_a_checkpoint_of_the_other_trainer_is_refused(tiny_qwen2, tmp_path, no_model_load):
    ppo = fake_checkpoint(tmp_path / "ppo" / "checkpoint-1", 1, critic=True)
    grpo = fake_checkpoint(tmp_path / "grpo" / "checkpoint-1", 1)
    with pytest.raises(ConfigError, match=r"is a PPO checkpoint \(it holds the critic\); it cannot resume a GRPO run"):
        trainer_for(tiny_qwen2, ppo.parent, resume_from_checkpoint=str(ppo))
    with pytest.raises(ConfigError, match=r"is a GRPO checkpoint \(no critic/ folder\); it cannot resume a PPO run"):
        check_resume(str(grpo), "ppo", 4, 1)
    check_resume(str(ppo), "ppo", 4, 1)
    check_resume(str(grpo), "grpo", 4, 1)


# ---------------------------------------------------------------------------------------------------------------
# Data: every row, prompt lengths
# ---------------------------------------------------------------------------------------------------------------
def test_every_row_is_validated_before_the_model_loads(tiny_qwen2, tmp_path, no_model_load):
    from datasets import Dataset

    from rewards import math_accuracy  # reads the 'answer' column

    from attncredit.data.checks import validate_rows

    rows = [{"prompt": [{"role": "user", "content": f"{i} + {i} ="}], "answer": str(2 * i)} for i in range(6)]
    bad = [dict(r) for r in rows]
    bad[2]["prompt"] = None
    with pytest.raises(ConfigError, match=r"^train_dataset row 2: a null prompt in column 'prompt'"):
        trainer_for(tiny_qwen2, tmp_path, train_dataset=Dataset.from_list(bad))
    cases = {
        "null content": (4, "prompt", {"prompt": [{"role": "user", "content": None}]}, "a message whose 'content' is null"),
        "empty list": (1, "prompt", {"prompt": []}, "an empty message list"),
        "null answer": (5, "answer", {"answer": None}, "a null value"),
    }
    for index, column, change, problem in cases.values():
        data = [dict(r) for r in rows]
        data[index] = {**data[index], **change}
        for form in (Dataset.from_list(data), data):
            with pytest.raises(ConfigError, match=rf"^dataset row {index}: {problem} in column '{column}'"):
                validate_rows(form, [math_accuracy])
    # Shuffled or selected datasets report the row index as the trainer sees it.
    with pytest.raises(ConfigError, match=r"^dataset row 0: a null prompt"):
        validate_rows(Dataset.from_list(bad).select([2, 0]))
    strings = Dataset.from_list([{"prompt": "a"}, {"prompt": ""}])
    with pytest.raises(ConfigError, match=r"^dataset row 1: a null or empty prompt"):
        validate_rows(strings)
    validate_rows(Dataset.from_list(rows), [math_accuracy])


def test_a_prompt_longer_than_the_context_fails_before_training(tiny_qwen2, tmp_path):
    from datasets import Dataset

    from attncredit.data.checks import check_prompt_lengths

    tokenizer = load_tokenizer(str(tiny_qwen2))
    long = " ".join(["seven"] * 3000)  # the tiny model's context is 2048 tokens
    rows = [{"prompt": [{"role": "user", "content": "1 + 1 ="}]}, {"prompt": [{"role": "user", "content": long}]}]
    with pytest.raises(ConfigError, match=r"^train_dataset row 1: the prompt is \d+ tokens, not shorter than the model's context of 2048 tokens"):
        trainer_for(tiny_qwen2, tmp_path, train_dataset=Dataset.from_list(rows * 4))
    with pytest.raises(ConfigError, match=r"^dataset row 3: the prompt is"):  # rows 0-2 are within the limit
        check_prompt_lengths(Dataset.from_list([rows[0]] * 3 + [rows[1]]), tokenizer, 2048)
    with pytest.raises(ConfigError, match=r"^dataset row 0: the prompt is"):
        check_prompt_lengths([{"prompt": long}], tokenizer, 2048)
    check_prompt_lengths(Dataset.from_list(rows[:1] * 1000), tokenizer, 2048)  # short rows: no tokenization


# ---------------------------------------------------------------------------------------------------------------
# A failed checkpoint save
# ---------------------------------------------------------------------------------------------------------------
def test_a_full_disk_at_a_checkpoint_is_one_line_and_the_run_resumes(tiny_qwen2, tmp_path, monkeypatch):
    out = tmp_path / "run"
    checkpoints = dict(save_strategy="steps", save_steps=1)
    trainer = trainer_for(tiny_qwen2, out, **checkpoints)
    save_model = AnchorGRPOTrainer.save_model

    def full_disk(self, output_dir=None, _internal_call=False):
        if output_dir and output_dir.endswith("checkpoint-2"):
            (out / "checkpoint-2").mkdir(parents=True, exist_ok=True)
            (out / "checkpoint-2" / "model.safetensors").write_bytes(b"\0" * 100)  # written in part
            raise OSError(errno.ENOSPC, "No space left on device")
        return save_model(self, output_dir, _internal_call)

    monkeypatch.setattr(AnchorGRPOTrainer, "save_model", full_disk)
    with pytest.raises(CheckpointSaveError) as failure:
        trainer.train()
    message = str(failure.value)
    assert "\n" not in message and "checkpoint-2 failed (OSError: [Errno 28] No space left on device)" in message, message
    assert "resume from checkpoint-1 with resume_from_checkpoint=true" in message, message
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1"]
    monkeypatch.setattr(AnchorGRPOTrainer, "save_model", save_model)
    trainer = trainer_for(tiny_qwen2, out, **checkpoints)
    trainer.train(resume_from_checkpoint=True)
    assert trainer.state.global_step == 2 and is_complete(out / "checkpoint-2")


# ---------------------------------------------------------------------------------------------------------------
# Python API rough edges
# ---------------------------------------------------------------------------------------------------------------
def test_a_model_object_gets_no_ignored_model_init_kwargs_warning(tiny_qwen2, tmp_path):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_qwen2))
    args = AnchorGRPOConfig(**tiny_args(tmp_path))
    assert args.model_init_kwargs == {"dtype": "float32"}  # still loads by name in float32
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        AnchorGRPOTrainer(model=model, reward_funcs=digit_reward, args=args, train_dataset=prompts(),
                          processing_class=load_tokenizer(str(tiny_qwen2)))  # fmt: skip
    assert not [w for w in caught if "model_init_kwargs" in str(w.message)]
    assert args.model_init_kwargs == {"dtype": "float32"}  # the user's config is left as it was


def test_more_probe_layers_than_the_model_has_is_one_line(tiny_qwen2, tmp_path):
    with pytest.raises(ConfigError, match=r"^credit_num_probe_layers=1000 is invalid for Qwen2ForCausalLM: the middle third of its 6 attention layers holds 3; allowed: 1 to 3"):
        trainer_for(tiny_qwen2, tmp_path, credit_num_probe_layers=1000)


def test_a_reward_returning_none_for_a_whole_batch_warns_once(tiny_qwen2, tmp_path):
    def nothing(completions, **kwargs):
        return [None] * len(completions)

    trainer = AnchorGRPOTrainer(
        model=str(tiny_qwen2), reward_funcs=[digit_reward, nothing], args=AnchorGRPOConfig(**tiny_args(tmp_path)),
        train_dataset=prompts(), processing_class=load_tokenizer(str(tiny_qwen2)),
    )  # fmt: skip
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.train()
    hits = [w for w in caught if "reward function 'nothing' returned None for every completion" in str(w.message)]
    assert len(hits) == 1, [str(w.message) for w in caught]


@pytest.mark.parametrize("trainer", ["grpo", "ppo"])
def test_cli_resume_of_a_finished_run_exits_0_and_of_the_other_trainer_exits_2(tiny_qwen2, tmp_path, capsys, no_model_load, trainer):
    """`attncredit grpo|ppo --resume_from_checkpoint true` on a finished run: one line, exit 0, nothing written, before
    the model loads; on the other trainer's checkpoint: one error line, exit 2."""
    import importlib

    main = importlib.import_module(f"attncredit.cli.{trainer}").main
    config = tmp_path / "run.yaml"
    config.write_text(f"model_name_or_path: {tiny_qwen2}\noutput_dir: {tmp_path / 'run'}\nreport_to: none\nuse_cpu: true\nmax_steps: 2\n")
    fake_checkpoint(tmp_path / "run" / "checkpoint-2", 2, critic=trainer == "ppo", max_steps=2)
    before = snapshot(tmp_path / "run")
    main(["--config", str(config), "--resume_from_checkpoint", "true"])
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("attncredit: resume_from_checkpoint: ") and "step 2, at or past max_steps=2: the run has finished" in err[-1], err
    assert snapshot(tmp_path / "run") == before
    shutil.rmtree(tmp_path / "run")
    fake_checkpoint(tmp_path / "run" / "checkpoint-1", 1, critic=trainer != "ppo", max_steps=2)
    with pytest.raises(SystemExit) as exit_info:
        main(["--config", str(config), "--resume_from_checkpoint", "true"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and err[-1].startswith("error: resume_from_checkpoint=") and "it cannot resume" in err[-1], err


# ---------------------------------------------------------------------------------------------------------------
# PPO logging and its default config
# ---------------------------------------------------------------------------------------------------------------
def test_ppo_logs_critic_lr_like_learning_rate_and_credit_metrics_on_every_step(tiny_qwen2, tmp_path):
    """critic/lr is read where transformers reads learning_rate (the rate the step used, before the scheduler steps);
    with num_iterations 2 the step that reuses the rollout logs its attncredit/* statistics too."""
    from attncredit import AnchorPPOConfig, AnchorPPOTrainer

    args = AnchorPPOConfig(**tiny_args(tmp_path, "ppo", learning_rate=1e-3, critic_learning_rate=1e-3, num_iterations=2,
                                       lr_scheduler_type="linear"))  # fmt: skip
    trainer = AnchorPPOTrainer(model=str(tiny_qwen2), reward_funcs=digit_reward, args=args, train_dataset=prompts(),
                               processing_class=load_tokenizer(str(tiny_qwen2)))  # fmt: skip
    trainer.train()
    logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = {e["step"]: e for e in logged if "loss" in e}
    assert sorted(steps) == [1, 2]
    for step, entry in steps.items():
        assert entry["critic/lr"] == pytest.approx(entry["learning_rate"]), (step, entry)
        assert "attncredit/gamma_mean" in entry and "attncredit/amplified_frac" in entry, (step, sorted(entry))
    assert steps[1]["learning_rate"] == pytest.approx(1e-3)  # linear decay: step 1 trains at the full rate


def test_ppo_default_config_keeps_one_checkpoint():
    import yaml

    from tiny_training import ROOT

    config = yaml.safe_load((ROOT / "recipes" / "configs" / "ppo_default.yaml").read_text())
    default = yaml.safe_load((ROOT / "recipes" / "configs" / "default.yaml").read_text())
    assert config["save_total_limit"] == default["save_total_limit"] == 1


@pytest.mark.parametrize("where", ["checkpoint-2", "final"])
def test_cli_full_disk_is_one_error_line_with_exit_1(tiny_qwen2, tmp_path, capsys, monkeypatch, where):
    """`attncredit grpo` when the disk fills at the step-2 checkpoint or at the final model: one error line naming the
    folder and the OSError, exit 1, no traceback."""
    from attncredit.cli.grpo import main

    out = tmp_path / "run"
    save_model = AnchorGRPOTrainer.save_model

    def full_disk(self, output_dir=None, _internal_call=False):
        target = out / where if where != "final" else out
        if output_dir is not None and str(output_dir).rstrip("/") == str(target):
            raise OSError(errno.ENOSPC, "No space left on device")
        return save_model(self, output_dir, _internal_call)

    monkeypatch.setattr(AnchorGRPOTrainer, "save_model", full_disk)
    config = tmp_path / "run.yaml"
    config.write_text(
        f"model_name_or_path: {tiny_qwen2}\ndtype: float32\noutput_dir: {out}\nreport_to: none\nuse_cpu: true\n"
        "max_steps: 2\nsave_strategy: steps\nsave_steps: 1\nper_device_train_batch_size: 4\nnum_generations: 4\n"
        "max_completion_length: 8\nreward_funcs: [format]\ndataset_name: countdown3\nbf16: false\n"
    )
    with pytest.raises(SystemExit) as exit_info:
        main(["--config", str(config)])
    err = [line.strip() for line in capsys.readouterr().err.splitlines() if "error: " in line or "Traceback" in line]
    assert exit_info.value.code == 1 and len(err) == 1, err
    kept = "checkpoint-1" if where == "checkpoint-2" else "checkpoint-2"
    assert "No space left on device" in err[0] and str(out) in err[0] and kept in err[0], err


def test_cli_a_null_prompt_in_row_2_is_one_error_line_before_the_model_loads(tiny_qwen2, tmp_path, capsys, no_model_load):
    from attncredit.cli.grpo import main

    data = tmp_path / "prompts.jsonl"
    rows = [{"prompt": "What is 1 + 1?", "answer": "2"}, {"prompt": "What is 2 + 2?", "answer": "4"},
            {"prompt": None, "answer": "6"}, {"prompt": "What is 4 + 4?", "answer": "8"}]  # fmt: skip
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = tmp_path / "run.yaml"
    config.write_text(f"model_name_or_path: {tiny_qwen2}\noutput_dir: {tmp_path / 'run'}\nreport_to: none\nuse_cpu: true\n"
                      f"dataset_name: {data}\nreward_funcs: [math_accuracy]\nnum_generations: 4\n")  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:
        main(["--config", str(config)])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and err[-1] == (
        "error: train_dataset row 2: a null or empty prompt in column 'prompt'; allowed: a non-empty string or a "
        "non-empty list of {'role', 'content'} messages, none of them null (fix or drop the row before training)"
    ), err
