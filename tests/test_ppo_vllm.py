"""AnchorPPOTrainer with vLLM generation (``use_vllm=True, vllm_mode="colocate"``), 2 steps on a tiny model.

Needs the vLLM CPU environment (see tests/test_vllm_colocate.py): ``ATTNCREDIT_VLLM_PYTHON=.venv-vllm/bin/python``.
With vLLM, TRL runs its no-grad old-log-prob forward for the importance-sampling correction; the critic's values come
from its own no-grad forward, the attention credit from that old-log-prob forward, and TRL's loss reads the 2-D
``GAE x gamma`` advantages.
"""

import json
import os
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "scripts" / "train_tiny_ppo.py"
VLLM_PYTHON = os.environ.get("ATTNCREDIT_VLLM_PYTHON")


@pytest.mark.skipif(
    not VLLM_PYTHON,
    reason="ATTNCREDIT_VLLM_PYTHON is not set: build a vLLM venv with `bash scripts/setup_vllm_cpu_env.sh .venv-vllm` "
    "and run `ATTNCREDIT_VLLM_PYTHON=.venv-vllm/bin/python pytest`",
)
def test_ppo_with_vllm_colocate(tiny_model_dirs, tmp_path):
    python = Path(VLLM_PYTHON).expanduser().absolute()
    assert python.is_file(), f"ATTNCREDIT_VLLM_PYTHON={VLLM_PYTHON} does not exist"
    overrides = {
        "use_vllm": True,
        "vllm_mode": "colocate",
        "vllm_max_model_length": 256,
        "vllm_cpu": True,
        "max_steps": 2,
    }
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"),
    }
    proc = subprocess.run(
        [str(python), str(SCRIPT), str(tiny_model_dirs["llama"]), str(tmp_path), json.dumps(overrides)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-8000:]
    r = json.loads((tmp_path / "rank0.json").read_text())
    assert r["runs_old_logps_forward"]
    assert r["loss_advantage_dims"] == [2, 2]
    steps = [h for h in r["log_history"] if "loss" in h]
    assert len(steps) == 2
    for h in steps:
        assert h["attncredit/gamma_mean"] > 1.0
        assert "critic/value_loss" in h and "critic/explained_variance" in h
        assert h["sampling/sampling_logp_difference/max"] < 0.05  # vLLM sampled from the policy's current weights
    assert r["policy_after"] != r["policy_before"] and r["critic_after"] != r["critic_before"]
