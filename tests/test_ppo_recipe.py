"""`attncredit ppo` and recipes/ppo_anchor.py: bad PPO input ends with one error line and exit code 2; the offline default run trains."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "ppo_anchor.py"
BASE = "output_dir: {out}\nreport_to: none\nuse_cpu: true\nmax_steps: 1\nmodel_name_or_path: {tiny}\n"


def load_recipe():
    spec = importlib.util.spec_from_file_location("ppo_anchor", RECIPE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve field types through the module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "config, expected",
    [
        ("gae_lambda: 1.5\n", "gae_lambda=1.5 is invalid; allowed: a number in [0, 1]"),
        ("gae_gamma: -1\n", "gae_gamma=-1 is invalid; allowed: a number in [0, 1]"),
        ("critic_model_name_or_path: ./no-such-critic\n", "critic_model_name_or_path='./no-such-critic' is not a folder"),
        ("per_device_train_batch_size: 4\nnum_generations: 3\n", "must be divisible by num_generations (3)"),
        ("critic_learning_rat: 0.1\n", "did you mean critic_learning_rate"),
        (  # the data is checked before the critic loads
            "critic_model_name_or_path: ./no-such-critic\ndataset_name: arithmetic\ndataset_options: {}\n"
            "reward_funcs: [countdown]\nreward_weights: [1.0]\n",
            "train_dataset is missing column 'numbers' (needed by reward 'countdown'); required: prompt, numbers, target",
        ),
    ],
    ids=["lambda", "gamma", "critic-path", "batch", "config-key", "columns-before-critic"],
)
def test_bad_input_is_one_error_line_with_exit_code_2(tmp_path, tiny_qwen2, capsys, config, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(BASE.format(out=tmp_path / "out", tiny=tiny_qwen2) + config)
    with pytest.raises(SystemExit) as exit_info:
        load_recipe().main(["--config", str(path)])
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("error: ")]
    assert exit_info.value.code == 2
    assert len(errors) == 1 and err[-1] == errors[0] and expected in errors[0], err


@pytest.mark.slow
def test_offline_default_run_writes_checkpoints_critic_and_metrics(tmp_path):
    """The README's `attncredit ppo` on the embedded SmolLM2 (the packaged ppo_default.yaml), with 2
    completions of 16 tokens per step to keep it short."""
    out = tmp_path / "run"
    short = ["--per_device_train_batch_size", "2", "--max_completion_length", "16"]
    proc = subprocess.run(
        [sys.executable, "-m", "attncredit", "ppo", "--output_dir", str(out), *short],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"output_dir": str(out), "global_step": 2}
    # ppo_default.yaml keeps one resumable checkpoint (save_total_limit: 1), with the critic and its optimizer
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2"]
    assert (out / "checkpoint-2" / "model.safetensors").exists()
    assert (out / "checkpoint-2" / "critic" / "value_head.safetensors").exists()
    assert (out / "checkpoint-2" / "critic" / "critic_optimizer.pt").exists()
    assert (out / "critic" / "model.safetensors").exists()
    card = (out / "README.md").read_text()  # the model card says PPO and names the embedded model's hub id
    assert "- ppo" in card and "- grpo" not in card and "base_model: HuggingFaceTB/SmolLM2-135M-Instruct" in card
    steps = [m for m in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "loss" in m]
    assert [m["step"] for m in steps] == [1, 2]
    for m in steps:
        for key in ("critic/value_loss", "critic/vpred_mean", "critic/returns_mean", "critic/clipfrac",
                    "ppo/advantages_mean", "ppo/advantages_std"):  # fmt: skip
            assert key in m, key
        # explained variance is NaN (left out of metrics.jsonl) when every return of the batch is equal
        assert "critic/explained_variance" in m or m["reward_std"] == 0
        assert m["attncredit/gamma_mean"] > 1.0


def test_paper_style_ppo_config_reads_through_the_recipe_parser():
    config = ROOT / "recipes" / "configs" / "ppo_qwen3_4b_dapo_1k.yaml"
    # use_cpu: this machine has no GPU, and TrainingArguments refuses bf16 on a GPU-less host without it
    _, args, model_args = load_recipe().parse_args(["--config", str(config), "--use_cpu", "true"])
    assert model_args.model_name_or_path == "Qwen/Qwen3-4B-Base"
    assert "recipes/accelerate/fsdp2.yaml recipes/ppo_anchor.py" in config.read_text()  # 8 processes
    responses_per_round = args.per_device_train_batch_size * 8 * args.steps_per_generation
    assert responses_per_round == 512 and args.max_steps == 500 * 16
    assert (args.credit_strategy, args.gae_gamma, args.gae_lambda, args.critic_gae_lambda) == ("coupled", 1.0, 0.95, 1.0)
    assert args.critic_warmup_steps == 16 and args.kl_coef == 0.0 and args.advantage_whitening == "batch"
