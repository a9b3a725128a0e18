"""AnchorPPOTrainer under `accelerate launch` with 2 processes on this CPU (gloo), coupled credit on GAE advantages.

The critic is prepared by accelerate (DDP) like the policy: after training both models are identical on both ranks
and differ from where they started. Whitening is over the whole batch: each rank's own advantages are off-centre,
the logged (global) mean is 0 and the std 1.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from test_trainer_distributed import free_port

SCRIPT = Path(__file__).parent / "scripts" / "train_tiny_ppo.py"


def launch_two_processes(model_dir, out_dir, overrides: dict) -> list[dict]:
    """`accelerate launch --multi_gpu` with 2 processes; use_cpu=True makes each rank join a gloo group."""
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
        "--dynamo_backend", "no", "--main_process_port", str(free_port()),
        str(SCRIPT), str(model_dir), str(out_dir), json.dumps(overrides),
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return [json.loads((Path(out_dir) / f"rank{r}.json").read_text()) for r in range(2)]


def test_two_ranks_train_identical_policy_and_critic(tiny_qwen2, tmp_path):
    ranks = launch_two_processes(tiny_qwen2, tmp_path, {"max_steps": 2})
    assert [r["process_index"] for r in ranks] == [0, 1]
    assert all(r["num_processes"] == 2 for r in ranks)
    for key in ("policy", "critic"):
        assert ranks[0][f"{key}_after"] == ranks[1][f"{key}_after"], key
        assert ranks[0][f"{key}_after"] != ranks[0][f"{key}_before"], key
    for r in ranks:
        assert r["loss_advantage_dims"] == [2, 2]
    # whitening over both ranks' tokens: the local means are not 0, the logged global mean is
    local = [m for r in ranks for m in r["rollout_advantage_means"]]
    assert max(abs(m) for m in local) > 1e-3
    history = [h for h in ranks[0]["log_history"] if "ppo/advantages_mean" in h]
    assert len(history) == 2
    assert all(abs(h["ppo/advantages_mean"]) < 1e-5 and h["ppo/advantages_std"] == pytest.approx(1.0, abs=1e-3) for h in history)
    assert all("critic/value_loss" in h and "critic/explained_variance" in h for h in history)
