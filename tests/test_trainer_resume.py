"""Kill a recipe run with SIGKILL after its step-2 checkpoint, resume it, and get the uninterrupted run's numbers.

Three runs of recipes/grpo_anchor.py (through tests/scripts/run_recipe.py, which adds a reward with spread on random
text) on a tiny model, same seed and config (4 steps, a checkpoint every 2):
A runs straight through; B is killed (SIGKILL, no clean-up) as soon as checkpoint-2 is complete; B is then resumed
with ``--resume_from_checkpoint last``. The resumed run must reproduce A exactly: the same losses and credit
summaries at steps 3-4 and the same final weights. That needs the dataloader order, the RNG state that generation
samples from, the optimizer and scheduler state and the credit strategy's own random numbers to be restored.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

pytestmark = pytest.mark.slow

RUN_RECIPE = Path(__file__).parent / "scripts" / "run_recipe.py"  # the recipe, plus a reward for random models
CONFIG = """\
model_name_or_path: {model}
dtype: float32
dataset_name: countdown
dataset_options: {{num_numbers: 3, num_train: 64, num_test: 8}}
reward_funcs: [digits]
credit_strategy: {strategy}
output_dir: {out}
max_steps: 4
per_device_train_batch_size: 4
num_generations: 4
max_completion_length: 16
temperature: 1.0
learning_rate: 1.0e-3
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


def kill_after_checkpoints(runs: dict, timeout: float = 600) -> None:
    """SIGKILL every run as soon as its checkpoint's trainer_state.json (written last) is complete JSON.

    ``runs`` maps a name to (process, checkpoint folder); all are polled together, so a fast run is not left
    training past its checkpoint while another one is awaited."""
    pending = dict(runs)
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for name, (proc, checkpoint) in list(pending.items()):
            if proc.poll() is not None:
                raise AssertionError(f"{name} ended (code {proc.returncode}) before {checkpoint.name}: {proc.stdout.read()[-4000:]}")
            try:
                json.loads((checkpoint / "trainer_state.json").read_text())
            except (FileNotFoundError, json.JSONDecodeError):
                continue
            proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=60)
            del pending[name]
        time.sleep(0.02)
    for proc, _ in pending.values():
        proc.kill()
    assert not pending, f"no checkpoint after {timeout} s for {sorted(pending)}"


def logged_steps(output_dir: Path) -> dict[int, dict]:
    """Last metrics.jsonl entry with a loss for each step (a resumed run logs its steps again)."""
    entries = [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]
    return {e["step"]: e for e in entries if "loss" in e}


def test_sigkill_and_resume_reproduces_the_uninterrupted_run(tiny_qwen2, tmp_path):
    # Coupled credit (deterministic given the statistics) and random credit (its own generator), all runs of both
    # at once: four processes share the 2 cores (one thread each), then the two resumed runs.
    runs = {}
    for strategy in ("coupled", "random"):
        for name in ("straight", "killed"):
            out = tmp_path / strategy / name
            config = tmp_path / f"{strategy}-{name}.yaml"
            config.write_text(CONFIG.format(model=tiny_qwen2, strategy=strategy, out=out))
            runs[strategy, name] = (config, out, start(config))

    kill_after_checkpoints({s: (runs[s, "killed"][2], runs[s, "killed"][1] / "checkpoint-2") for s in ("coupled", "random")})
    for strategy in ("coupled", "random"):
        out = runs[strategy, "killed"][1]
        checkpoints = sorted(p.name for p in out.glob("checkpoint-*"))
        assert checkpoints == ["checkpoint-2"], (strategy, checkpoints)  # killed before step 4's checkpoint
        assert not (out / "model.safetensors").exists()
    resumed = {s: start(runs[s, "killed"][0], "--resume_from_checkpoint", "last") for s in ("coupled", "random")}
    for strategy in ("coupled", "random"):
        finish(runs[strategy, "straight"][2])
        finish(resumed[strategy])

    keys = ["loss", "grad_norm", "reward", "attncredit/gamma_mean", "attncredit/amplified_frac"]
    for strategy in ("coupled", "random"):
        straight, killed = runs[strategy, "straight"][1], runs[strategy, "killed"][1]
        a, b = logged_steps(straight), logged_steps(killed)
        assert sorted(a) == sorted(b) == [1, 2, 3, 4], strategy
        for step in (3, 4):
            assert {k: b[step].get(k) for k in keys} == {k: a[step].get(k) for k in keys}, (strategy, step)
        # gamma and gradients matter in these runs
        assert a[3]["attncredit/gamma_mean"] > 1.0 and all(a[s]["grad_norm"] > 0 for s in a), strategy
        wa, wb = load_file(straight / "model.safetensors"), load_file(killed / "model.safetensors")
        assert wa.keys() == wb.keys()
        differ = [k for k in wa if not torch.equal(wa[k], wb[k])]
        assert not differ, (strategy, differ[:5])
