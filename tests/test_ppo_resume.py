"""Kill a PPO recipe run with SIGKILL after its step-2 checkpoint, resume it, and get the uninterrupted run's numbers,
critic included (its weights, AdamW state and scheduler are in checkpoint-N/critic/)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from test_trainer_resume import kill_after_checkpoints, logged_steps

pytestmark = pytest.mark.slow

RUN_RECIPE = Path(__file__).parent / "scripts" / "run_ppo_recipe.py"
CONFIG = """\
model_name_or_path: {model}
dtype: float32
dataset_name: countdown
dataset_options: {{num_numbers: 3, num_train: 64, num_test: 8}}
reward_funcs: [digits]
credit_strategy: coupled
output_dir: {out}
max_steps: 4
per_device_train_batch_size: 4
num_generations: 2
max_completion_length: 16
temperature: 1.0
learning_rate: 1.0e-3
critic_learning_rate: 1.0e-3
beta: 0.0
logging_steps: 1
save_strategy: steps
save_steps: 2
report_to: none
use_cpu: true
seed: 7
bf16: false
"""
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}


def start(config: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(RUN_RECIPE), "--config", str(config), *extra],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(proc: subprocess.Popen) -> None:
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-6000:]


def test_sigkill_and_resume_restores_the_critic_and_reproduces_the_run(tiny_qwen2, tmp_path):
    runs = {}
    for name in ("straight", "killed"):
        out = tmp_path / name
        config = tmp_path / f"{name}.yaml"
        config.write_text(CONFIG.format(model=tiny_qwen2, out=out))
        runs[name] = (config, out, start(config))
    kill_after_checkpoints({"killed": (runs["killed"][2], runs["killed"][1] / "checkpoint-2")})
    killed_out = runs["killed"][1]
    assert sorted(p.name for p in killed_out.glob("checkpoint-*")) == ["checkpoint-2"]
    assert sorted(p.name for p in (killed_out / "checkpoint-2" / "critic").iterdir()) == [
        "config.json", "critic_optimizer.pt", "model.safetensors", "value_head.safetensors"
    ]  # fmt: skip
    resumed = start(runs["killed"][0], "--resume_from_checkpoint", "last")
    finish(runs["straight"][2])
    finish(resumed)

    keys = ["loss", "grad_norm", "reward", "critic/value_loss", "critic/explained_variance", "critic/vpred_mean",
            "critic/grad_norm", "ppo/advantages_std", "attncredit/gamma_mean"]  # fmt: skip
    a, b = logged_steps(runs["straight"][1]), logged_steps(killed_out)
    assert sorted(a) == sorted(b) == [1, 2, 3, 4]
    for step in (3, 4):
        assert {k: b[step].get(k) for k in keys} == {k: a[step].get(k) for k in keys}, step
    assert all(a[s]["critic/grad_norm"] > 0 and a[s]["grad_norm"] > 0 for s in a)
    for folder in ("", "critic"):
        for name in ("model.safetensors",) + (("value_head.safetensors",) if folder else ()):
            wa = load_file(runs["straight"][1] / folder / name)
            wb = load_file(killed_out / folder / name)
            assert wa.keys() == wb.keys()
            differ = [k for k in wa if not torch.equal(wa[k], wb[k])]
            assert not differ, (folder, name, differ[:5])
    # the critic moved: its head is no longer the zero initialisation
    assert load_file(killed_out / "critic" / "value_head.safetensors")["weight"].abs().sum() > 0
    record = json.loads((killed_out / "checkpoint-2" / "trainer_state.json").read_text())
    assert record["global_step"] == 2
