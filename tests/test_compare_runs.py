"""compare_runs: metrics.jsonl reading (resumed runs, train + eval at one step), the paper's EMA-of-peak curve, and
plots from two real 2-step training runs of the recipe on a tiny model (with TRL's eval loop on Countdown test)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from attncredit.errors import ConfigError
from attncredit.analysis.runs import comparison_markdown, ema_of_peak, moving_average, read_run, read_runs

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _write(path: Path, entries) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    with open(path / "metrics.jsonl", "w") as f:
        for e in entries:
            f.write((e if isinstance(e, str) else json.dumps(e)) + "\n")
    return path


def test_ema_of_running_peak_hand_values():
    assert ema_of_peak([0.0, 1.0, 0.5, 2.0], 0.5) == [0.0, 0.5, 0.5, 1.25]
    # a dip below the running EMA does not pull the curve down; alpha 1 is the running peak
    assert ema_of_peak([3.0, 1.0, 4.0, 1.0], 1.0) == [3.0, 3.0, 4.0, 4.0]
    assert ema_of_peak([1.0, 0.0, 0.0], 0.1) == [1.0, 1.0, 1.0]
    assert ema_of_peak([], 0.3) == []
    assert moving_average([0.0, 1.0, 0.0], 0.5) == [0.0, 0.5, 0.25]  # lengths and credit statistics: plain EMA
    for bad in (0, -0.1, 1.5):
        with pytest.raises(ConfigError):
            ema_of_peak([1.0], bad)


def test_read_run_keeps_last_entry_per_step_and_kind(tmp_path):
    run = _write(
        tmp_path / "resumed",
        [
            {"step": 1, "reward": 0.1},
            {"step": 2, "reward": 0.2},
            {"step": 2, "eval_reward": 0.5, "eval_rewards/countdown/mean": 0.4},
            {"step": 3, "reward": 0.9},  # logged before the crash; the resumed run logs step 3 again
            {"step": 2, "reward": 0.25},  # resumed from checkpoint-1: step 2 again
            {"step": 3, "reward": 0.3},
            {"step": 3, "train_runtime": 12.0, "train_loss": 0.0},  # final summary: not a curve point
            '{"step": 4, "rew',  # line cut by a crash
        ],
    )
    r = read_run(run)
    assert r.name == "resumed" and r.skipped_lines == 1 and r.last_step == 3
    assert r.series["reward"] == ([1, 2, 3], [0.1, 0.25, 0.3])
    assert r.series["eval_reward"] == ([2], [0.5])  # the train entry at step 2 does not hide the eval entry
    assert "train_runtime" not in r.series


def test_read_runs_names_and_errors(tmp_path):
    a = _write(tmp_path / "x" / "run", [{"step": 1, "reward": 0.0}])
    b = _write(tmp_path / "y" / "run", [{"step": 1, "reward": 1.0}])
    assert [r.name for r in read_runs([a, b])] == ["x/run", "y/run"]
    assert read_runs([a / "metrics.jsonl"])[0].name == "run"
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="has no metrics.jsonl"):
        read_runs([tmp_path / "empty"])
    with pytest.raises(ConfigError, match="does not exist"):
        read_runs([tmp_path / "missing"])
    with pytest.raises(ConfigError, match="no metrics entries"):
        read_run(_write(tmp_path / "blank", []))


def test_comparison_table_final_and_best(tmp_path):
    a = _write(tmp_path / "grpo", [{"step": s, "reward": v} for s, v in [(1, 0.2), (2, 0.6), (3, 0.4)]])
    b = _write(
        tmp_path / "coupled",
        [{"step": s, "reward": v, "attncredit/gamma_mean": 1.2} for s, v in [(1, 0.1), (2, 0.3), (3, 0.7)]],
    )
    text = comparison_markdown(read_runs([a, b]), ema=0.5)
    assert "| grpo | 0.4 | 0.6 | 2 | 0.4 |" in text  # EMA-of-peak: 0.2, 0.4, 0.4
    assert "| coupled | 0.7 | 0.7 | 3 |" in text
    assert "| grpo | - | - | - | - |" in text  # GRPO logs no attncredit statistics


def test_compare_runs_script_errors(tmp_path, capsys):
    from attncredit.cli import compare as compare_runs

    (tmp_path / "norun").mkdir()
    assert compare_runs.main([str(tmp_path / "norun"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "metrics.jsonl" in err[0]
    good = _write(tmp_path / "good", [{"step": 1, "reward": 0.5}])
    assert compare_runs.main([str(good), "--out", str(tmp_path / "out"), "--ema", "0"]) == 2
    assert capsys.readouterr().err.startswith("error: EMA alpha")


# ---------------------------------------------------------------------------------------------------------------
# Two real runs of the recipe (default.yaml's settings, shrunk): credit none vs coupled, eval on Countdown test
# ---------------------------------------------------------------------------------------------------------------
TINY_CONFIG = """\
model_name_or_path: {model}
dtype: float32
dataset_name: countdown
dataset_options: {{num_numbers: 3, num_train: 64, num_test: 8}}
dataset_test_split: test
max_eval_samples: 4
reward_funcs: [countdown, format]
reward_weights: [1.0, 0.5]
credit_strategy: coupled
output_dir: {out}
max_steps: 2
per_device_train_batch_size: 4
num_generations: 2
max_completion_length: 12
temperature: 1.0
learning_rate: 5.0e-6
beta: 0.0
logging_steps: 1
save_strategy: "no"
eval_strategy: steps
eval_steps: 2
per_device_eval_batch_size: 4
report_to: none
seed: 42
bf16: false
"""


@pytest.fixture(scope="module")
def two_runs(tiny_qwen2, tmp_path_factory):
    """Train 2 steps with credit_strategy none and coupled through `attncredit grpo` (in-process)."""
    from attncredit.cli import grpo as recipe

    root = tmp_path_factory.mktemp("runs")
    config = root / "tiny.yaml"
    config.write_text(TINY_CONFIG.format(model=tiny_qwen2, out=root / "unused"))
    runs = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model gains nothing from more; on a shared 2-core CPU 2 threads ran 20x slower
    try:
        for strategy in ("none", "coupled"):
            out = root / f"countdown-{strategy}"
            recipe.main(["--config", str(config), "--credit_strategy", strategy, "--output_dir", str(out)])
            runs[strategy] = out
    finally:
        torch.set_num_threads(threads)
    return runs


def test_training_logs_eval_metrics(two_runs):
    """TRL's eval loop on the held-out Countdown split logs eval_* rewards into metrics.jsonl."""
    for strategy, run in two_runs.items():
        entries = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        evals = [e for e in entries if "eval_reward" in e]
        assert [e["step"] for e in evals] == [2]
        assert {"eval_rewards/countdown/mean", "eval_rewards/format/mean", "eval_completions/mean_length"} <= set(evals[0])
        train = [e for e in entries if "reward" in e]
        assert [e["step"] for e in train] == [1, 2]
        has_credit = any("attncredit/gamma_mean" in e for e in train)
        assert has_credit == (strategy == "coupled")


def test_compare_runs_plots_real_runs(two_runs, tmp_path):
    from attncredit.cli import compare as compare_runs

    out = tmp_path / "compare"
    assert compare_runs.main([str(two_runs["none"]), str(two_runs["coupled"]), "--out", str(out), "--ema", "0.3"]) == 0
    pngs = {p.name for p in out.glob("*.png")}
    expected = {
        "reward.png",
        "rewards_countdown_mean.png",
        "eval_reward.png",
        "eval_rewards_countdown_mean.png",
        "completions_mean_length.png",
        "attncredit_gamma_mean.png",
    }
    logged = {k for line in (two_runs["coupled"] / "metrics.jsonl").read_text().splitlines() for k in json.loads(line)}
    expected |= {k.replace("/", "_") + ".png" for k in logged if k.startswith("attncredit/")}  # every credit metric
    assert expected <= pngs
    for name in pngs:
        data = (out / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5_000
    table = (out / "comparison.md").read_text()
    assert "countdown-none" in table and "countdown-coupled" in table
    assert "## eval reward: countdown (`eval_rewards/countdown/mean`)" in table
