"""`--reward_funcs` as in TRL's script: our names, dotted import paths (TRL's own reward functions included) and
reward models (a hub id or folder, loaded by the trainer as a sequence-classification model); anything else is one
error line listing our names."""

import json

import pytest
import torch

from attncredit.errors import ConfigError
from attncredit.recipe import resolve_reward_funcs

CONFIG = """\
model_name_or_path: {model}
dataset_name: countdown
dataset_options: {{num_numbers: 3, num_train: 8, num_test: 4}}
output_dir: {out}
max_steps: 1
per_device_train_batch_size: 4
num_generations: 4
max_completion_length: 8
logging_steps: 1
save_strategy: "no"
report_to: none
use_cpu: true
bf16: false
credit_log_every: 0
"""


def test_names_import_paths_and_models_resolve(tmp_path, monkeypatch):
    from trl.rewards import think_format_reward

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # a hub id is resolved, not downloaded, here
    import rewards

    model_dir = tmp_path / "rm"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    funcs = resolve_reward_funcs(["countdown", "trl.rewards.think_format_reward", str(model_dir)], reward_model="org/rm")
    assert funcs == ["org/rm", rewards.countdown, think_format_reward, str(model_dir)]  # TRL: the model comes first
    assert resolve_reward_funcs("tag_count,format") == [rewards.tag_count, rewards.format_reward]


@pytest.mark.parametrize(
    "names, message",
    [
        (["telepathy"], "unknown reward function 'telepathy'; allowed: math_accuracy, countdown"),
        (["trl.rewards.no_such_reward"], "reward function 'trl.rewards.no_such_reward' cannot be imported"),
        (["no_such_pkg.reward"], "cannot be imported (No module named 'no_such_pkg')"),
        (["./no/such/rm"], "model folder './no/such/rm' does not exist"),
        (["trl.rewards"], "reward function 'trl.rewards' is a _LazyModule, not a function"),
    ],
    ids=["unknown", "bad-attr", "bad-module", "bad-folder", "module"],
)
def test_bad_reward_is_one_config_error_line(names, message):
    with pytest.raises(ConfigError) as info:
        resolve_reward_funcs(names)
    assert message in str(info.value) and "\n" not in str(info.value)
    if names != ["./no/such/rm"]:  # that one is the model resolver's message
        assert "allowed: math_accuracy, countdown" in str(info.value)


def _train(tmp_path, tiny, rewards_yaml: str):
    from attncredit.cli import grpo

    out = tmp_path / "out"
    config = tmp_path / "run.yaml"
    config.write_text(CONFIG.format(model=tiny, out=out) + rewards_yaml)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert grpo.main(["--config", str(config)]) == 0
    finally:
        torch.set_num_threads(threads)
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_trl_reward_function_by_import_path_trains_a_step(tmp_path, tiny_qwen2):
    metrics = _train(tmp_path, tiny_qwen2, "reward_funcs: [trl.rewards.think_format_reward, tag_count]\n")
    step = next(m for m in metrics if "loss" in m)
    assert step["step"] == 1 and "rewards/think_format_reward/mean" in step and "rewards/tag_count/mean" in step


def test_reward_model_folder_trains_a_step(tmp_path, tiny_qwen2):
    """A model folder in reward_funcs is a reward model: TRL loads it with a 1-label classification head."""
    metrics = _train(tmp_path, tiny_qwen2, f"reward_funcs: [{tiny_qwen2}]\n")
    step = next(m for m in metrics if "loss" in m)
    name = str(tiny_qwen2).rstrip("/").split("/")[-1]
    assert step["step"] == 1 and f"rewards/{name}/mean" in step
    assert step["reward_std"] > 0  # a random head scores every completion differently
