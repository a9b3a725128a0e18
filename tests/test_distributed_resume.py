"""Two processes on this CPU (gloo), killed with SIGKILL after a checkpoint and resumed from the newest complete one.

tests/scripts/train_tiny.py under `accelerate launch` with 2 processes, 4 steps, a checkpoint every 2 steps; the
killed run is SIGKILLed as a whole (launcher and both ranks, as a scheduler ends a job) as soon as checkpoint-2 is
complete, then started again with ``resume_from_checkpoint="last"``. Checked: the resumed run logs steps 3-4 (the
step numbers go on), the parameters are identical on both ranks afterwards, and with ``credit_head_regroup_every``
4 the head groups of the resumed run's first step (a kept-groups step) are each rank's own groups from the
checkpoint, not recomputed ones (each rank ranks heads on its own rows, so the checkpoint holds one entry per rank).

* GRPO under DDP (``recipes/accelerate/cpu_2proc.yaml``) against an uninterrupted 2-process run of the same seed:
  the same losses, credit statistics, kept head groups and final weights;
* PPO launched with ``recipes/accelerate/fsdp2.yaml``: on a CPU, accelerate 1.16 does not shard. Its
  ``AcceleratorState`` turns the FSDP plugin on only for accelerator device types (MULTI_GPU, MULTI_XPU, ...), and
  a ``use_cpu`` run is MULTI_CPU, so the fsdp_config is ignored and the ranks run as DDP over gloo (without
  ``use_cpu``, on a machine without GPUs, each process trains alone: distributed type NO). The test pins that
  fallback (the day accelerate shards on CPUs it fails, and the FSDP2 assertions can move here) and checks the
  PPO resume under it: policy and critic (its AdamW in ``checkpoint-2/critic/``) equal on both ranks.
"""

import json

import pytest

from tiny_training import kill_after_checkpoints, rank_records, start_two_processes

pytestmark = pytest.mark.slow

RESUME = {"max_steps": 4, "save_strategy": "steps", "save_steps": 2, "credit_head_regroup_every": 4}
SAME = ["loss", "grad_norm", "reward", "attncredit/gamma_mean", "attncredit/amplified_frac"]


def _finish(proc, what):
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, f"{what}: {out[-6000:]}"


def _logged(record) -> dict[int, dict]:
    return {h["step"]: h for h in record["log_history"] if "loss" in h}


def _kill_and_resume(model, out, overrides, trainer, config_file, straight=None):
    """Run ``out`` killed after checkpoint-2 (and ``straight`` uninterrupted beside it), then resume ``out``; returns
    the resumed run's rank records and checkpoint-2's head-group file."""
    killed = start_two_processes(model, out, overrides, trainer, config_file)
    other = start_two_processes(model, straight, overrides, trainer, config_file) if straight else None
    kill_after_checkpoints({"killed": (killed, out / "checkpoint-2")})
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2"]
    assert not list(out.glob("rank*.json")), "the killed run finished"
    assert sorted(p.name for p in (out / "checkpoint-2").glob("rng_state_*.pth")) == ["rng_state_0.pth", "rng_state_1.pth"]
    groups = json.loads((out / "checkpoint-2" / "attncredit_head_groups.json").read_text())
    resumed = start_two_processes(model, out, {**overrides, "resume_from_checkpoint": "last"}, trainer, config_file)
    if other is not None:
        _finish(other, "uninterrupted run")
    _finish(resumed, "resumed run")
    return rank_records(out), groups


def _check_resumed(ranks, groups):
    assert [r["num_processes"] for r in ranks] == [2, 2]
    # the step numbers go on from the checkpoint: the resumed run trains steps 3 and 4 only (global_step 2 and 3
    # while they run), and its log history is the checkpoint's steps 1-2 followed by its own 3-4
    for record in ranks:
        assert [x["step"] for x in record["recorded"]] == [2, 3]
    assert sorted(_logged(ranks[0])) == [1, 2, 3, 4]
    assert ranks[0]["policy_after"] == ranks[1]["policy_after"]
    # one entry per rank in the checkpoint; rank 0's is also the single-process layout's top level
    assert len(groups["ranks"]) == 2 and groups["ranks"][0] == {"local": groups["local"], "global": groups["global"]}
    for rank, record in enumerate(ranks):
        first = record["recorded"][0]
        assert first["step"] == 2 and not first["regroup"], "the resumed run ranked the heads again instead of keeping them"
        saved = groups["ranks"][rank]
        assert first["heads"] == [saved["local"], saved["global"]], rank
        assert all(not x["regroup"] for x in record["recorded"])  # steps 2 and 3 (0-based): kept groups


def test_grpo_ddp_killed_after_a_checkpoint_resumes_like_the_uninterrupted_run(tiny_qwen2, tmp_path):
    overrides = {**RESUME, "credit_strategy": "coupled"}
    ranks, groups = _kill_and_resume(
        tiny_qwen2, tmp_path / "killed", overrides, "grpo", "cpu_2proc.yaml", straight=tmp_path / "straight"
    )
    _check_resumed(ranks, groups)
    straight = rank_records(tmp_path / "straight")
    a, b = _logged(straight[0]), _logged(ranks[0])
    for step in (3, 4):
        assert {k: b[step].get(k) for k in SAME} == {k: a[step].get(k) for k in SAME}, step
    assert a[3]["attncredit/gamma_mean"] > 1.0
    assert ranks[0]["policy_after"] == straight[0]["policy_after"] != straight[0]["policy_before"]
    for rank in range(2):
        # the uninterrupted run's rank kept the same groups at steps 2-3 (from its step-0 regroup)
        kept = [x["heads"] for x in straight[rank]["recorded"] if x["step"] in (2, 3)]
        assert kept and all(h == ranks[rank]["recorded"][0]["heads"] for h in kept), rank


def test_ppo_with_the_fsdp2_config_on_cpu_runs_as_ddp_and_resumes_with_policy_and_critic_equal_on_both_ranks(
    tiny_qwen2, tmp_path
):
    overrides = {**RESUME, "credit_strategy": "coupled", "num_generations": 2}
    ranks, groups = _kill_and_resume(tiny_qwen2, tmp_path / "killed", overrides, "ppo", "fsdp2.yaml")
    # accelerate ignores fsdp_config for a CPU (MULTI_CPU) run: no FSDP2 sharding on CPUs
    assert all(r["distributed_type"] == "MULTI_CPU" and not r["fsdp2_wrapped"] for r in ranks)
    _check_resumed(ranks, groups)
    assert ranks[0]["critic_after"] == ranks[1]["critic_after"] != ranks[0]["critic_before"]
    assert sorted(p.name for p in (tmp_path / "killed" / "checkpoint-2" / "critic").iterdir()) == [
        "config.json", "critic_optimizer.pt", "model.safetensors", "value_head.safetensors"
    ]  # fmt: skip
    history = [h for h in ranks[0]["log_history"] if "critic/value_loss" in h]
    assert [h["step"] for h in history] == [1, 2, 3, 4]
