"""AnchorPPOTrainer with vLLM generation (``use_vllm=True, vllm_mode="colocate"``), 2 steps on a tiny model.

Needs the vLLM CPU environment (see tests/test_vllm_colocate.py): ``ATTNCREDIT_VLLM_PYTHON=.venv-vllm/bin/python``.
With vLLM, TRL runs its no-grad old-log-prob forward for the importance-sampling correction; the critic's values come
from its own no-grad forward, the attention credit from that old-log-prob forward, and TRL's loss reads the 2-D
``GAE x gamma`` advantages.
"""

import pytest

from tiny_training import NO_VLLM, VLLM_PYTHON, train_with_vllm_colocate

pytestmark = pytest.mark.slow


@pytest.mark.skipif(not VLLM_PYTHON, reason=NO_VLLM)
def test_ppo_with_vllm_colocate(tiny_model_dirs, tmp_path):
    r = train_with_vllm_colocate(tiny_model_dirs["llama"], tmp_path, trainer="ppo")
    assert r["runs_old_logps_forward"]
    assert r["loss_advantage_dims"] == [2, 2]
    steps = [h for h in r["log_history"] if "loss" in h]
    assert len(steps) == 2
    for h in steps:
        assert h["attncredit/gamma_mean"] > 1.0
        assert "critic/value_loss" in h and "critic/explained_variance" in h
        assert h["sampling/sampling_logp_difference/max"] < 0.05  # vLLM sampled from the policy's current weights
    assert r["policy_after"] != r["policy_before"] and r["critic_after"] != r["critic_before"]
