"""AnchorPPOTrainer under `accelerate launch` with 2 processes on this CPU (gloo), coupled credit on GAE advantages.

The critic is prepared by accelerate (DDP) like the policy: after training both models are identical on both ranks
and differ from where they started. Whitening is over the whole batch: each rank's own advantages are off-centre,
the logged (global) mean is 0 and the std 1.
"""

import pytest

from tiny_training import launch_two_processes


def test_two_ranks_train_identical_policy_and_critic(tiny_qwen2, tmp_path):
    ranks = launch_two_processes(tiny_qwen2, tmp_path, {"max_steps": 2}, trainer="ppo")
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
