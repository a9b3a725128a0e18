"""AnchorGRPOTrainer under `accelerate launch` with 2 processes on this CPU (gloo), coupled credit.

Each rank records its attention statistics and computes gamma for its own rows, locally; only the small credit
summaries are reduced for logging; DDP keeps the weights identical on both ranks.
"""

import pytest

from tiny_training import launch_two_processes

GATHERS = {"all_gather", "all_gather_into_tensor", "all_gather_object", "gather"}


def test_two_ranks_compute_gamma_locally_and_end_with_identical_weights(tiny_qwen2, tmp_path):
    ranks = launch_two_processes(tiny_qwen2, tmp_path, {"credit_strategy": "coupled", "max_steps": 2})

    assert [r["process_index"] for r in ranks] == [0, 1]
    assert all(r["num_processes"] == 2 for r in ranks), "accelerate started independent single-process runs"

    for r in ranks:
        # One recorded forward per step (the loss forward: no old-log-prob pass here), on this rank's own rows.
        assert not r["runs_old_logps_forward"]
        assert [x["step"] for x in r["recorded"]] == [0, 1]
        assert all(x["with_grad"] for x in r["recorded"])
        assert [x["rows"] for x in r["recorded"]] == [x["rows"] for x in r["loss_rows"]]
        assert all(x["gamma_shape"][0] == 4 and x["gamma_max"] > 1.0 for x in r["recorded"])
        assert r["loss_advantage_dims"] == [2, 2]
        # No attention data leaves the rank: no gather at all while recording or computing gamma, and what is
        # gathered for logging is a handful of summary numbers.
        for c in r["collectives"]:
            if c["phase"] in ("recorded_forward", "credit"):
                assert c["op"] not in GATHERS, c
            if c["op"] in GATHERS:
                assert c["numel"] <= 8, c

    # The ranks worked on different prompts (TRL's sampler gives each rank its own groups).
    for step in range(2):
        prompts = [{tuple(row[:12]) for row in r["recorded"][step]["rows"]} for r in ranks]
        assert prompts[0].isdisjoint(prompts[1])

    # The logged attncredit/gamma_mean of each step is the mean of the two ranks' local means.
    logged = [h["attncredit/gamma_mean"] for h in ranks[0]["log_history"] if "attncredit/gamma_mean" in h]
    local = [[x["gamma_mean"] for x in r["recorded"]] for r in ranks]
    assert logged == pytest.approx([(a + b) / 2 for a, b in zip(*local)], rel=1e-6)
    assert local[0] != local[1]

    # DDP: gradients averaged, identical updates on both ranks.
    assert ranks[0]["policy_after"] == ranks[1]["policy_after"]
    assert ranks[0]["policy_after"] != ranks[0]["policy_before"]
