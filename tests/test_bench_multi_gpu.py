"""scripts/bench_multi_gpu.py: its flags, its checks and table on made-up records, and its --cpu mode end to end
(2 processes over gloo with recipes/accelerate/cpu_2proc.yaml: train, SIGKILL after checkpoint-2, resume, check)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import bench_multi_gpu as bench  # noqa: E402

HEADS0 = [[[1, 0], [0, 0]], [[0, 0], [0, 1]]]  # [local, global] x probe layer x head
HEADS1 = [[[0, 1], [0, 0]], [[0, 0], [1, 0]]]


def resumed(policy=("a", "a"), critic=(None, None), heads=(HEADS0, HEADS1), regroup=False, steps=(2, 3)):
    return [
        {"records": [{"step": s, "regroup": regroup and s == steps[0], "heads": heads[r]} for s in steps],
         "policy_hash": policy[r], "critic_hash": critic[r]}
        for r in range(2)
    ]  # fmt: skip


def first(amplified=(0.2, 0.3), gamma=(1.1, 1.2), heads=(HEADS0, HEADS1)):
    return [{"amplified_frac": amplified[r], "gamma_mean": gamma[r], "heads": heads[r]} for r in range(2)]


def groups_file(heads=(HEADS0, HEADS1)):
    return {"local": heads[0][0], "global": heads[0][1], "ranks": [{"local": h[0], "global": h[1]} for h in heads]}


def test_flags_default_to_the_four_shipped_gpu_configs_and_both_trainers():
    opts = bench.parse_args([])
    assert opts.configs == ["multi_gpu", "fsdp2", "zero2", "zero3"] and opts.trainers == ["grpo", "ppo"]
    assert (opts.layers, opts.hidden) == (8, 256)
    for config in opts.configs:
        assert (ROOT / "recipes" / "accelerate" / f"{config}.yaml").is_file()
    cpu = bench.parse_args(["--cpu"])
    assert cpu.configs == ["cpu_2proc"] and (cpu.layers, cpu.hidden) == (6, 128)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--cpu", "--configs", "zero2"], "--configs zero2 is invalid with --cpu; allowed: cpu_2proc"),
        (["--configs", "cpu_2proc"], "--configs cpu_2proc is invalid; allowed: multi_gpu, fsdp2, zero2, zero3"),
        (["--hidden", "100"], "--hidden 100 is invalid; allowed: a multiple of 64"),
    ],
)
def test_bad_flags_are_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        bench.parse_args(argv)
    assert info.value.code == 2 and message in capsys.readouterr().err


def test_launch_command_uses_the_shipped_config_with_two_processes():
    opts = bench.parse_args(["--configs", "fsdp2"])
    opts.model_dir = "MODEL"
    cmd = bench.launch_command("fsdp2", opts, "ppo", Path("OUT"), "resume")
    assert cmd[cmd.index("--config_file") + 1] == str(ROOT / "recipes" / "accelerate" / "fsdp2.yaml")
    assert cmd[cmd.index("--num_processes") + 1] == "2" and "--mixed_precision" not in cmd  # bf16 from the config
    assert cmd[-9:] == ["--worker", "--trainer", "ppo", "--model", "MODEL", "--out", "OUT", "--phase", "resume"]
    cpu = bench.parse_args(["--cpu"])
    cpu.model_dir = "MODEL"
    cmd = bench.launch_command("cpu_2proc", cpu, "grpo", Path("OUT"), "killed")
    assert cmd[cmd.index("--mixed_precision") + 1] == "no" and cmd[-1] == "--cpu"


def test_checks_pass_on_consistent_records():
    assert bench.check_steps_continue(resumed(), [1, 2, 3, 4])[0] == "ok"
    assert bench.check_ranks_equal(resumed(critic=("c", "c")))[0] == "ok"
    logged = {"attncredit/amplified_frac": 0.25, "attncredit/gamma_mean": 1.15}
    ref = first(amplified=(0.22, 0.31), gamma=(1.101, 1.205))  # within bf16 tolerance
    assert bench.check_stats(first(), ref, logged)[0] == "ok"
    status, detail = bench.check_kept_groups(first(), groups_file(), resumed())
    assert (status, detail) == ("ok", "ranks' groups differ")


@pytest.mark.parametrize(
    "check, message",
    [
        (lambda: bench.check_steps_continue(resumed(steps=(0, 1, 2, 3)), [1, 2, 3, 4]), "rank 0 trained global steps [0, 1, 2, 3]"),
        (lambda: bench.check_steps_continue(resumed(), [3, 4]), "metrics.jsonl steps [3, 4], expected 1-4"),
        (lambda: bench.check_ranks_equal(resumed(policy=("a", "b"))), "policy_hash differs across ranks"),
        (lambda: bench.check_ranks_equal(resumed(critic=("c", "d"))), "critic_hash differs across ranks"),
        (lambda: bench.check_stats(first(), first(amplified=(0.3, 0.3)), {}), "rank 0 amplified share 0.2000 vs one process 0.3000"),
        (lambda: bench.check_stats(first(), first(gamma=(1.1, 1.3)), {}), "rank 1 gamma mean 1.20000 vs one process 1.30000"),
        (lambda: bench.check_stats(first(), first(), {"attncredit/amplified_frac": 0.2, "attncredit/gamma_mean": 1.15}),
         "logged attncredit/amplified_frac 0.2 is not the mean over ranks"),
        (lambda: bench.check_stats(first(), first(), None), "no logged step 1"),
        (lambda: bench.check_kept_groups(first(), None, resumed()), "no attncredit_head_groups.json"),
        (lambda: bench.check_kept_groups(first(), {"local": [], "global": []}, resumed()), "not per rank"),
        (lambda: bench.check_kept_groups(first(), groups_file(), resumed(regroup=True)), "rank 0: the resumed run ranked the heads again"),
        (lambda: bench.check_kept_groups(first(), groups_file(), resumed(heads=(HEADS0, HEADS0))), "rank 1: kept groups differ from the checkpoint's"),
        (lambda: bench.check_kept_groups(first(heads=(HEADS1, HEADS1)), groups_file(), resumed()),
         "rank 0: the checkpoint's groups differ from those ranked at step 1"),
    ],
)  # fmt: skip
def test_each_check_names_what_failed(check, message):
    status, detail = check()
    assert status == "FAIL" and message in detail, detail


def test_table_is_printed_with_one_row_per_config_and_trainer():
    results = {
        ("multi_gpu", "grpo"): {name: ("ok", "") for name in bench.CHECKS},
        ("zero3", "ppo"): {name: ("refused", "") for name in bench.CHECKS} | {"trains_saves": ("refused", "one line")},
        ("fsdp2", "grpo"): {"trains_saves": ("ok", ""), "resumes": ("FAIL", "exit 1")},
    }
    table = bench.format_table(results).splitlines()
    assert table[0] == "| config | trainer | trains_saves | resumes | steps_continue | ranks_equal | stats_1proc | kept_groups |"
    assert table[2] == "| multi_gpu | grpo | ok | ok | ok | ok | ok | ok |"
    assert table[3] == "| zero3 | ppo | refused | refused | refused | refused | refused | refused |"
    assert table[4] == "| fsdp2 | grpo | ok | FAIL | - | - | - | - |"
    assert bench.format_details(results).splitlines()[0] == "fsdp2 grpo resumes: FAIL: exit 1"
    assert bench.any_failed(results) and not bench.any_failed({k: v for k, v in results.items() if k[0] != "fsdp2"})


def test_a_failed_launch_is_told_by_its_error_lines_not_the_agents_summary():
    log = (
        "  0%|          | 0/4\nUserWarning: RuntimeError-like text in a warning\n"
        "terminate called after throwing an instance of 'gloo::IoException'\n"
        "  what():  [../third_party/gloo/gloo/transport/tcp/pair.cc:534] Connection closed by peer\n"
        "torch.distributed.elastic.multiprocessing.api: failed (exitcode: -6)\n" + "=" * 500 + "\n"
        "  exitcode  : -6 (pid: 27094)\n  error_file: <N/A>\n  exitcode  : -6 (pid: 27094)\n"
    )
    assert bench.log_evidence(log) == (
        "terminate called after throwing an instance of 'gloo::IoException' | "
        "what():  [../third_party/gloo/gloo/transport/tcp/pair.cc:534] Connection closed by peer | "
        "torch.distributed.elastic.multiprocessing.api: failed (exitcode: -6) | exitcode  : -6 (pid: 27094)"
    )
    assert bench.log_evidence("x" * 500 + "no error here") == f"log tail: {('x' * 387 + 'no error here')!r}"


def test_without_two_gpus_and_without_cpu_it_stops_in_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_multi_gpu.py"), "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=120, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
    )  # fmt: skip
    assert proc.returncode == 2 and proc.stderr.strip() == "error: 0 GPU(s) visible, 2 needed (or --cpu)"


@pytest.mark.slow
def test_cpu_mode_trains_kills_resumes_and_checks_grpo(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_multi_gpu.py"), "--cpu", "--trainers", "grpo", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "| cpu_2proc | grpo | ok | ok | ok | ok | ok | ok |"
    results = json.loads((tmp_path / "results.json").read_text())
    assert [(r["config"], r["trainer"]) for r in results] == [("cpu_2proc", "grpo")]
    case = tmp_path / "cpu_2proc-grpo"
    assert sorted(p.name for p in case.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    assert "waiting for the kill" in (case / "killed.log").read_text()
