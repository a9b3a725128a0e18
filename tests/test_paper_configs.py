"""recipes/configs/qwen3_*: read through the recipe's own parser, every paper config trains the paper's rollout steps
(500 for Qwen3-4B, 600 for Qwen3-8B) of 512 responses with 16 optimizer steps each, and aggregates the loss as Eq. 12
(TRL's loss_type "grpo": token mean per response, then mean over responses)."""

import re
from pathlib import Path

import pytest
import yaml

from tests.test_recipe import load_recipe

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "recipes" / "configs").glob("qwen3_*.yaml"))
PAPER_ROUNDS = {"4b": 500, "8b": 600}  # the paper's rollout steps per model size


def launch_processes(config: Path) -> int:
    """Number of training processes of the accelerate config that the file's launch comment names."""
    match = re.search(r"--config_file (\S+\.yaml)", config.read_text())
    assert match, f"{config.name}: no 'accelerate launch --config_file ...' line in its comment"
    accelerate = yaml.safe_load((ROOT / match.group(1)).read_text())
    return int(accelerate["num_processes"])


def test_there_are_paper_configs():
    assert {c.name for c in CONFIGS} >= {"qwen3_4b_countdown.yaml", "qwen3_4b_dapo_1k.yaml", "qwen3_8b_dapo_8k.yaml"}


@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_paper_config_yields_the_paper_rollout_rounds(config):
    # use_cpu: this machine has no GPU, and TrainingArguments refuses bf16 on a GPU-less host without it
    _, args, _ = load_recipe().parse_args(["--config", str(config), "--use_cpu", "true"])
    world = launch_processes(config)
    size = re.search(r"qwen3_(\d+b)_", config.name).group(1)
    micro_batches_per_round = args.steps_per_generation * args.num_iterations
    optimizer_steps_per_round = micro_batches_per_round // args.gradient_accumulation_steps
    responses_per_round = args.per_device_train_batch_size * world * args.steps_per_generation

    assert micro_batches_per_round % args.gradient_accumulation_steps == 0
    assert responses_per_round == 512 and responses_per_round % args.num_generations == 0
    assert optimizer_steps_per_round == 16
    assert args.max_steps % optimizer_steps_per_round == 0
    assert args.max_steps // optimizer_steps_per_round == PAPER_ROUNDS[size]
    assert args.loss_type == "grpo"
    assert (args.learning_rate, args.temperature, args.beta) == (1e-6, 1.0, 0.0)
    text = config.read_text()
    assert f"{PAPER_ROUNDS[size]} x 16 = {args.max_steps}" in text, "the comment must map max_steps to the paper"
