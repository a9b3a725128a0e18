"""attncredit.experiments and ``attncredit exp``: experiment-file errors, run selection, collect, the report's
statistics against a hand computation, and a sweep killed mid-run and resumed against an uninterrupted one."""

import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml

from tiny_training import SCRIPTS, assert_same_tensors, logged_steps, resume_recipe_config, subprocess_env

from attncredit.cli import exp as exp_cli
from attncredit.errors import ConfigError
from attncredit.experiments import load_experiment, parse_only, run_experiment, write_report
from attncredit.experiments.report import alone, plot_curves, read_runs, same_conditions, side_by_side, summarize
from attncredit.experiments.stats import bootstrap_interval, mean_interval, paired_differences, t_quantile


def experiment_file(folder, recipe_config, root, /, **fields):
    """``folder``/experiment.yaml over ``recipe_config`` with arms none/coupled, seeds 0-1, 4 steps; ``fields`` replace entries
    (a value None deletes the key)."""
    data = dict(name="tiny", recipe="grpo", config=str(recipe_config), output_root=str(root), seeds=[0, 1], max_steps=4,
                save_steps=2, baseline="none", primary_metric="eval_reward",
                arms={"none": {"credit_strategy": "none"}, "coupled": {"credit_strategy": "coupled"}})
    data.update(fields)
    data = {k: v for k, v in data.items() if v is not None}
    path = folder / "experiment.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture
def recipe_config(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text("learning_rate: 1.0e-3\neval_strategy: steps\neval_steps: 2\n")
    return path


# --------------------------------------------------------------------------------------------------------------
# Bad experiment files: one line, naming the bad value and what is allowed, exit 2
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(baseline=None), "is missing 'baseline'; required: name, recipe, config"),
        (dict(arms={"none": {"credit_stratgy": "none"}}), "arm 'none': unknown recipe field 'credit_stratgy' (did you mean credit_strategy"),
        (dict(arms={"none": {"seed": 3}}), "arm 'none': 'seed' is set by the runner; allowed: any recipe field except"),
        (dict(recipe="dpo"), "unknown recipe 'dpo'; allowed: grpo, ppo"),
        (dict(seeds=[0, "one"]), "every seed must be an integer >= 0, got 'one'"),
        (dict(seeds=[1, 1]), "seeds must be distinct, got [1, 1]"),
        (dict(seeds=[]), "seeds must be a non-empty list of integers >= 0, got []"),
        (dict(baseline="grpo"), "baseline 'grpo' is not an arm; allowed: none, coupled"),
        (dict(config="missing.yaml"), "recipe config 'missing.yaml' does not exist"),
        (dict(max_steps=5), "max_steps 5 is not a multiple of eval_steps 2"),
        (dict(common={"eval_strategy": "no"}), "primary_metric 'eval_reward' is an evaluation metric, but the recipe"),
        (dict(colour="red"), "unknown key 'colour'; allowed: name, recipe"),
        (dict(max_steps=0), "max_steps must be an integer >= 1, got 0"),
        (dict(comparisons=[["coupled", "entropy"]]), "comparison ['coupled', 'entropy'] must be [arm, other arm] of two"),
    ],
)
def test_a_bad_experiment_file_is_one_line_naming_the_value(tmp_path, recipe_config, capsys, fields, message):
    path = experiment_file(tmp_path, recipe_config, tmp_path / "runs", **fields)
    assert exp_cli.main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "runs").exists()


def test_a_missing_experiment_file_and_a_bad_only(tmp_path, recipe_config, capsys):
    assert exp_cli.main(["run", str(tmp_path / "nope.yaml")]) == 2
    assert "experiment file" in capsys.readouterr().err
    path = experiment_file(tmp_path, recipe_config, tmp_path / "runs")
    assert exp_cli.main(["run", str(path), "--only", "arm=entropy"]) == 2
    assert "error: --only: arm 'entropy' is not in the experiment; allowed: none, coupled\n" == capsys.readouterr().err


def test_only_selects_arms_and_seeds(tmp_path, recipe_config):
    experiment = load_experiment(experiment_file(tmp_path, recipe_config, tmp_path / "runs", seeds=[0, 1, 2]))
    assert parse_only("arm=coupled", experiment) == [("coupled", 0), ("coupled", 1), ("coupled", 2)]
    assert parse_only("seed=2,0", experiment) == [("none", 0), ("coupled", 0), ("none", 2), ("coupled", 2)]
    assert parse_only("arm=none,coupled,seed=1", experiment) == [("none", 1), ("coupled", 1)]
    # selections joined by ';' add up, in the experiment's run order, each run once
    assert parse_only("arm=coupled,seed=2;arm=none,seed=0,2;seed=2", experiment) == [
        ("none", 0), ("none", 2), ("coupled", 2)]
    for bad, message in [("seed=7", "seed '7' is not in the experiment; allowed: 0, 1, 2"),
                         ("colour=red", "unknown key 'colour'"), ("none", "expected arm=NAME"),
                         ("arm=none;;seed=1", "expected arm=NAME"), ("arm=none;seed=9", "seed '9' is not in")]:
        with pytest.raises(ConfigError, match=message):
            parse_only(bad, experiment)


def test_the_shipped_study_files_validate():
    experiment = load_experiment("experiments/credit_study.yaml")
    assert list(experiment.arms) == ["none", "coupled", "random", "entropy_mask_80_20", "entropy"]  # run order
    assert experiment.seeds == list(range(10)) and experiment.max_steps >= 300
    assert experiment.overrides("entropy_mask_80_20") == {"credit_strategy": "none", "top_entropy_quantile": 0.2}
    assert experiment.comparisons == [("coupled", "random"), ("coupled", "entropy_mask_80_20")]
    for name in ("credit_study_timing", "credit_study_step_time"):  # the GPU timing files: same recipe config
        timing = load_experiment(f"experiments/{name}.yaml")
        assert timing.config == experiment.config and "none" in timing.arms and "coupled" in timing.arms
        assert not set(timing.seeds) & set(experiment.seeds)  # none of the study's seeds


# --------------------------------------------------------------------------------------------------------------
# The report's statistics against a hand computation, on synthetic run folders
# --------------------------------------------------------------------------------------------------------------
def write_run(root, arm, seed, final, step_times, *, finished=True, max_steps=4, resumed=False, length=None,
              start=1000.0, device="GPU-A", host=None, uuid=None):
    """A synthetic run folder; its training steps are logged at wall-clock ``start + 10 x step`` on ``device``."""
    run = root / f"{arm}-s{seed}"
    run.mkdir(parents=True)
    settings = dict(experiment="synthetic", arm=arm, seed=seed, max_steps=max_steps, baseline="none",
                    primary_metric="eval_rewards/acc/mean", train_metric="reward",
                    comparisons=[["coupled", "random"], ["random", "entropy"]], device=device,
                    **({"host": host} if host else {}), **({"device_uuid": uuid} if uuid else {}))
    (run / "experiment_run.json").write_text(json.dumps(settings))
    lines = [{"step": 0, "eval_rewards/acc/mean": 0.1}]
    for step, seconds in enumerate(step_times, start=1):
        lines.append({"step": step, "time": start + 10 * step, "loss": 0.0, "reward": 0.1 * step, "step_time": seconds,
                      **({"attncredit/time_share": 0.01 * step} if arm == "coupled" else {})})
    if resumed:  # a resumed run logs steps 3-4 again; the last entry per step counts
        lines += [{"step": 3, "loss": 0.0, "reward": 9.0, "step_time": 99.0}, {"step": 4, "eval_rewards/acc/mean": -1.0}]
        lines[3]["step_time"] = 1.0
    if finished:
        lines += [{"step": max_steps, "eval_rewards/acc/mean": final, **({} if length is None else
                                                                           {"eval_completions/mean_length": length})},
                  {"step": max_steps, "train_runtime": 50.0}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines) + '{"step": 4, "los')
    if finished:
        (run / "finished.json").write_text('{"global_step": 4}')
    return run


def test_report_statistics_equal_a_hand_computation(tmp_path):
    root = tmp_path / "results"
    none = {0: 0.2, 1: 0.3, 2: 0.4}
    coupled = {0: 0.3, 1: 0.5, 2: 0.4, 3: 0.9}  # seed 3 has no baseline: not in the paired difference
    for seed, value in none.items():
        write_run(root, "none", seed, value, [2.0, 2.0, 2.0, 2.0], length=40.0 + 10 * seed)
    for seed, value in coupled.items():
        write_run(root, "coupled", seed, value, [3.0, 1.0, 1.5, 1.5], resumed=seed == 0)
    write_run(root, "random", 0, 0.25, [2.0, 2.0, 2.0, 2.0])
    write_run(root, "random", 1, 0.35, [2.0, 2.0], finished=False)  # no evaluation at step 4: left out

    text = write_report(root)

    # none: mean 0.3, sd 0.1, t(0.975, 2) = 4.302653 -> 0.3 +- 0.248414
    half = 4.302653 * 0.1 / math.sqrt(3)
    assert f"| none | 3 | 0.300 | [{0.3 - half:.3f}, {0.3 + half:.3f}] |" in text
    # coupled: seeds 0-3, mean 0.525, sd of (0.3, 0.5, 0.4, 0.9) = 0.262996, t(0.975, 3) = 3.182446
    sd = math.sqrt(sum((v - 0.525) ** 2 for v in coupled.values()) / 3)
    half_c = 3.182446 * sd / 2
    # paired with none on seeds 0-2: differences 0.1, 0.2, 0.0 -> mean 0.1, sd 0.1; three seeds: no bootstrap
    # interval (it would be the range [0.0, 0.2]; bootstrap_interval against numpy in test_statistics_primitives)
    assert (f"| coupled | 4 | 0.525 | [{0.525 - half_c:.3f}, {0.525 + half_c:.3f}] | +0.100 | 3 | "
            f"[{0.1 - half:+.3f}, {0.1 + half:+.3f}] | - |") in text
    assert "given from 4 seeds on" in text
    # step time: median over every logged step of the arm's runs; coupled seed 0's step 3 re-logged as 99 s.
    # Every run trained side by side (same device, same span): the ratio is the median over the 4 x 3 pairs of
    # (run median / none run median 2.0): seed 0's 2.25 / 2 three times, the other seeds' 1.5 / 2 nine times
    coupled_times = [3.0, 1.0, 99.0, 1.5] + [3.0, 1.0, 1.5, 1.5] * 3
    ratio = np.median([2.25 / 2.0] * 3 + [1.5 / 2.0] * 9)
    assert f"| {np.median(coupled_times):.3f} | {ratio:.3f} (12) |" in text
    assert "| random | 1 | 0.250 | - | +0.050 | 1 | - | - | 2.000 | 1.000 (6) | - |" in text
    # the credit's share: median over coupled's logged steps (0.01 x step; seed 0's re-logged step 3 counts once)
    assert f"| {ratio:.3f} (12) | 2.5% |" in text
    assert "| none | 3 | 0.300 |" in text and "| 2.000 | 1.000 | - |" in text  # the baseline: no pairs with itself
    assert "| coupled - random | 1 | +0.050 | - | - |" in text
    # secondary: train reward (0.1 x step) over steps 1-4, coupled seed 0's step 3 re-logged as 9.0; length at step 4
    assert "| none | 0.250 | [0.250, 0.250] | 50.0 |" in text
    late = [(0.1 + 0.2 + 9.0 + 0.4) / 4, 0.25, 0.25, 0.25]
    half_late = 3.182446 * np.std(late, ddof=1) / 2
    assert f"| coupled | {np.mean(late):.3f} | [{np.mean(late) - half_late:.3f}, {np.mean(late) + half_late:.3f}] | - |" in text  # random's seed 1 is unfinished
    assert "| random - entropy | 0 | - | - | - |" in text
    assert "Fewer than 2 seeds, no interval: random." in text
    assert "Left out (no eval_rewards/acc/mean at step 4, e.g. unfinished): random-s1." in text
    assert "none 12 steps of 3 runs" in text and "random 6 steps of 2 runs" in text
    assert (root / "report.md").read_text() == text and (root / "curves.png").stat().st_size > 10_000


def test_curves_span_the_runs_values_and_cut_wider_bands(tmp_path):
    root = tmp_path / "results"
    write_run(root, "none", 0, 0.2, [2.0] * 4)
    write_run(root, "none", 1, 0.9, [2.0] * 4)
    runs = read_runs(root)

    spans = plot_curves(runs, "eval_rewards/acc/mean", "reward", tmp_path / "curves.png", ["none"])

    # held-out values: 0.1 (step 0, both seeds), 0.2 and 0.9 (step 4); padded by 5% of the range 0.8
    assert spans["held-out"] == pytest.approx((0.1 - 0.04, 0.9 + 0.04))
    # two seeds at step 4: the 95% t band (t(0.975, 1) = 12.7) reaches far past both edges, and is cut there
    band = mean_interval([0.2, 0.9])
    assert band.low < spans["held-out"][0] - 1 and band.high > spans["held-out"][1] + 1
    # train: reward 0.1 x step, trailing means 0.1, 0.15, 0.2, 0.25 in both runs; padded by 5% of 0.15
    assert spans["train"] == pytest.approx((0.1 - 0.0075, 0.25 + 0.0075))
    assert (tmp_path / "curves.png").stat().st_size > 10_000


def test_step_time_ratio_pairs_only_runs_that_trained_side_by_side(tmp_path):
    root = tmp_path / "results"
    # Each run logs steps 1-4 at start + 10..40 s. Block 1 (start 1000, GPU-A, host machine-1 where recorded):
    # none-s0 at 2 s and coupled-s0 at 2.2 s per step. Block 2 (start 5000, GPU-A): coupled-s1 and random-s1, no
    # none run beside them. Beside block 1 in time but elsewhere: none-s1 and entropy-s0 on GPU-B, entropy-s1 on
    # machine-2. entropy-s2 (GPU-A, start 1020) shares 10 s of none-s0's 30 s span: less than half.
    write_run(root, "none", 0, 0.5, [2.0] * 4, host="machine-1")
    write_run(root, "coupled", 0, 0.5, [2.2] * 4)  # records no host: device and time decide
    write_run(root, "coupled", 1, 0.5, [1.0] * 4, start=5000.0)
    write_run(root, "random", 1, 0.5, [0.9] * 4, start=5000.0)
    write_run(root, "none", 1, 0.5, [5.0] * 4, device="GPU-B")
    write_run(root, "entropy", 0, 0.5, [1.0] * 4, device="GPU-B")
    write_run(root, "entropy", 1, 0.5, [1.0] * 4, host="machine-2")
    write_run(root, "entropy", 2, 0.5, [7.0] * 4, start=1020.0)
    write_run(root, "entropy", 3, 0.5, [1.0] * 4, start=1005.0, device="GPU-C")
    text = write_report(root)
    assert "| coupled | 2 | 0.500 |" in text and "| 1.600 | 1.100 (1) |" in text  # 2.2 / 2.0; block 2 left out
    assert "| random | 1 | 0.500 |" in text and "| 0.900 | - |" in text  # no none run beside it
    assert "| entropy | 4 | 0.500 |" in text and "| 1.000 | 0.200 (1) |" in text  # entropy-s0 / none-s1 only
    assert "side by side (same device, overlapping time spans)" in text
    runs = {r.path.name: r for r in read_runs(root)}
    assert side_by_side(runs["none-s0"], runs["coupled-s0"]) and not side_by_side(runs["none-s0"], runs["coupled-s1"])
    assert not side_by_side(runs["none-s0"], runs["entropy-s1"])  # same device and time, another host
    assert not side_by_side(runs["none-s0"], runs["entropy-s2"])  # a third of the span shared
    write_run(root / "more", "none", 0, 0.5, [2.0] * 4)
    write_run(root / "more", "coupled", 0, 0.5, [1.0] * 4, start=1005.0)  # 25 s of 30 shared: side by side
    more = {r.path.name: r for r in read_runs(root / "more")}
    assert side_by_side(more["none-s0"], more["coupled-s0"])
    summaries = summarize(list(more.values()), "eval_rewards/acc/mean", "none", 4)
    assert summaries["coupled"].time_ratio == 0.5 and summaries["coupled"].time_pairs == 1


def test_step_time_ratio_also_pairs_runs_that_each_trained_alone_on_one_gpu(tmp_path):
    root = tmp_path / "results"
    # One after another on GPU uuid U1, none beside them: none-s0 (2 s), coupled-s0 (2.1 s), random-s0 (3 s); then
    # entropy-s0 and none-s1 side by side on U1 (4 s, 5 s). On U2: coupled-s1 alone (1 s): another GPU, no pair.
    write_run(root, "none", 0, 0.5, [2.0] * 4, start=1000.0, uuid="U1")
    write_run(root, "coupled", 0, 0.5, [2.1] * 4, start=2000.0, uuid="U1")
    write_run(root, "random", 0, 0.5, [3.0] * 4, start=3000.0, uuid="U1")
    write_run(root, "entropy", 0, 0.5, [4.0] * 4, start=4000.0, uuid="U1")
    write_run(root, "none", 1, 0.5, [5.0] * 4, start=4005.0, uuid="U1")
    write_run(root, "coupled", 1, 0.5, [1.0] * 4, start=2000.0, uuid="U2")
    runs = {r.path.name: r for r in read_runs(root)}
    everything = list(runs.values())
    assert alone(runs["none-s0"], everything) and alone(runs["coupled-s1"], everything)  # U2 is another machine
    assert not alone(runs["none-s1"], everything) and not alone(runs["entropy-s0"], everything)
    assert same_conditions(runs["coupled-s0"], runs["none-s0"], everything)
    assert not same_conditions(runs["coupled-s0"], runs["none-s1"], everything)  # none-s1 had a neighbour
    assert not same_conditions(runs["coupled-s1"], runs["none-s0"], everything)  # alone, but on another GPU
    summaries = summarize(everything, "eval_rewards/acc/mean", "none", 4)
    assert summaries["coupled"].time_ratio == pytest.approx(1.05) and summaries["coupled"].time_pairs == 1
    assert summaries["random"].time_ratio == pytest.approx(1.5) and summaries["random"].time_pairs == 1
    assert summaries["entropy"].time_ratio == pytest.approx(0.8) and summaries["entropy"].time_pairs == 1  # beside
    text = write_report(root)
    assert "| 1.050 (1) |" in text and "each alone on the same GPU (same GPU UUID" in text
    # without UUIDs (runs recorded before the runner wrote them) runs one after another do not compare
    for run in everything:
        run.settings.pop("device_uuid")
    assert summarize(everything, "eval_rewards/acc/mean", "none", 4)["coupled"].time_ratio is None


def test_statistics_primitives():
    for df, table in [(1, 12.706205), (4, 2.776445), (9, 2.262157), (30, 2.042272)]:
        assert t_quantile(0.975, df) == pytest.approx(table, abs=1e-6)
    assert mean_interval([0.5]).low is None and bootstrap_interval([0.5]).high is None
    assert paired_differences({0: 1.0, 2: 3.0, 5: 1.0}, {2: 1.0, 0: 0.5, 7: 0.0}) == {0: 0.5, 2: 2.0}
    # the percentile bootstrap by hand (numpy, RNG seed 0), from 4 values on; below, the mean alone
    diffs = np.array([0.1, 0.2, 0.0, 0.35])
    means = diffs[np.random.default_rng(0).integers(0, 4, size=(10_000, 4))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    got = bootstrap_interval(diffs)
    assert (got.n, got.mean, got.low, got.high) == (4, pytest.approx(0.1625), pytest.approx(low), pytest.approx(high))
    assert 0.0 < got.low and got.high < 0.35  # inside the range of the values
    three = bootstrap_interval([0.1, 0.2, 0.0])
    assert (three.n, three.mean, three.low, three.high) == (3, pytest.approx(0.1), None, None)


def test_collect_copies_the_small_files_of_finished_runs_only(tmp_path, recipe_config, capsys):
    root = tmp_path / "runs"
    path = experiment_file(tmp_path, recipe_config, root, seeds=[0])
    done = write_run(root, "none", 0, 0.5, [1.0] * 4)
    (done / "checkpoint-4").mkdir()
    (done / "model.safetensors").write_bytes(b"weights")
    write_run(root, "coupled", 0, 0.5, [1.0] * 4, finished=False)
    assert exp_cli.main(["collect", str(path), "--to", str(tmp_path / "study")]) == 0
    assert "1 finished runs copied" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "study").iterdir()) == ["none-s0"]
    assert sorted(p.name for p in (tmp_path / "study" / "none-s0").iterdir()) == [
        "experiment_run.json", "finished.json", "metrics.jsonl"]
    assert exp_cli.main(["report", str(tmp_path / "study")]) == 0
    assert "| none | 1 | 0.500 |" in capsys.readouterr().out


def test_a_run_with_its_last_checkpoint_is_finished_and_a_failing_run_is_tried_twice(tmp_path, recipe_config, capsys):
    root = tmp_path / "runs"
    experiment = load_experiment(experiment_file(tmp_path, recipe_config, root, seeds=[0]))
    checkpoint = root / "none-s0" / "checkpoint-4"  # the process died after its last save: finished, not rerun
    checkpoint.mkdir(parents=True)
    (checkpoint / "trainer_state.json").write_text('{"global_step": 4}')
    failing = [sys.executable, "-c", "import sys; print('no luck'); sys.exit(3)"]
    assert run_experiment(experiment, poll_seconds=0.05, progress=False, launcher=failing) == 1
    out, err = capsys.readouterr()
    assert "2 runs selected, 1 finished already, 1 to run" in out
    console = root / "coupled-s0" / "console.log"
    assert err == f"run coupled-s0 failed 2 times in a row; see {console}\n"
    assert console.read_text().count("\nno luck\n") == 2 and "exit code 3" in console.read_text()
    assert json.loads((root / "none-s0" / "finished.json").read_text())["global_step"] == 4
    settings = json.loads((root / "coupled-s0" / "experiment_run.json").read_text())
    assert settings["arm"] == "coupled" and settings["seed"] == 0 and settings["device"] and settings["host"]
    assert "device_uuid" in settings  # None here, without a GPU
    assert len(settings["git_commit"]) == 40 and isinstance(settings["git_dirty"], bool)  # this test runs in a checkout
    assert settings["attempt"] == 2 and settings["started"] in console.read_text()  # the latest start, stamped
    assert settings["config_contents"] == {"learning_rate": 1.0e-3, "eval_strategy": "steps", "eval_steps": 2}
    assert settings["command"][settings["command"].index("--seed") + 1] == "0"
    assert settings["command"][settings["command"].index("--data_seed") + 1] == "0"
    assert settings["command"][-2:] == ["--credit_strategy", "coupled"]


# --------------------------------------------------------------------------------------------------------------
# A sweep killed mid-run (SIGKILL of the runner and its children) and resumed equals an uninterrupted sweep
# --------------------------------------------------------------------------------------------------------------
def start_sweep(path, launcher=f"[sys.executable, {str(SCRIPTS / 'run_recipe.py')!r}, '--trainer']"):
    """``run_experiment`` on ``path`` in its own process group, by default the recipe run through
    tests/scripts/run_recipe.py (which adds the ``digits`` reward that gives random text reward spread)."""
    code = ("import sys; from attncredit.experiments import load_experiment, run_experiment; "
            f"sys.exit(run_experiment(load_experiment({str(path)!r}), parallel=2, poll_seconds=0.2, progress=False, "
            f"launcher={launcher}))")
    return subprocess.Popen([sys.executable, "-c", code], env=subprocess_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def test_sigterm_stops_the_runner_and_its_runs(tmp_path, recipe_config):
    root = tmp_path / "runs"
    sweep = start_sweep(experiment_file(tmp_path, recipe_config, root, seeds=[0]),
                        launcher="[sys.executable, '-c', 'import time; time.sleep(120)']")
    pid_files = [root / "none-s0" / "runner.pid", root / "coupled-s0" / "runner.pid"]
    deadline = time.monotonic() + 120
    while not all(p.is_file() and p.read_text() for p in pid_files):
        assert sweep.poll() is None and time.monotonic() < deadline, sweep.stdout.read()
        time.sleep(0.05)
    children = [int(p.read_text()) for p in pid_files]
    sweep.send_signal(signal.SIGTERM)  # the runner only, as `timeout` or a job scheduler would
    sweep.communicate(timeout=60)
    assert sweep.returncode == 128 + signal.SIGTERM
    assert not any(p.exists() for p in pid_files)
    for child in children:
        with pytest.raises(ProcessLookupError):
            os.kill(child, 0)


@pytest.mark.slow
def test_a_killed_sweep_resumes_to_the_uninterrupted_result_and_skips_finished_runs(tiny_qwen2, tmp_path):
    config = resume_recipe_config(tmp_path / "recipe.yaml", tiny_qwen2, tmp_path / "unused", num_generations=4,
                                  dataset_test_split="test", max_eval_samples=2, eval_strategy="steps", eval_steps=2,
                                  per_device_eval_batch_size=4)
    sweeps = {}
    for name in ("straight", "killed"):
        (tmp_path / name).mkdir()
        sweeps[name] = experiment_file(tmp_path / name, config, tmp_path / name / "runs", seeds=[0],
                                       arms={"none": {"credit_strategy": "none"},
                                             "coupled": {"credit_strategy": "coupled"}})
    straight, killed = start_sweep(sweeps["straight"]), start_sweep(sweeps["killed"])
    checkpoints = [tmp_path / "killed" / "runs" / f"{arm}-s0" / "checkpoint-2" / "trainer_state.json"
                   for arm in ("none", "coupled")]
    deadline = time.monotonic() + 600
    while not any(p.is_file() and p.read_text().strip().endswith("}") for p in checkpoints):
        assert killed.poll() is None and time.monotonic() < deadline, killed.stdout.read()[-4000:]
        time.sleep(0.05)
    os.killpg(killed.pid, signal.SIGKILL)  # the runner and both training processes, no clean-up
    killed.communicate(timeout=60)
    assert not all((p.parents[1] / "finished.json").exists() for p in checkpoints)

    resumed = start_sweep(sweeps["killed"])
    for proc in (straight, resumed):
        out, _ = proc.communicate(timeout=900)
        assert proc.returncode == 0, out[-6000:]
    assert "resuming from checkpoint-2" in "".join(p.parents[1].joinpath("console.log").read_text() for p in checkpoints)
    for arm in ("none", "coupled"):
        a, b = tmp_path / "straight" / "runs" / f"{arm}-s0", tmp_path / "killed" / "runs" / f"{arm}-s0"
        keys = ["loss", "grad_norm", "reward"]
        steps_a, steps_b = logged_steps(a), logged_steps(b)
        assert sorted(steps_a) == sorted(steps_b) == [1, 2, 3, 4]
        assert all({k: steps_a[s][k] for k in keys} == {k: steps_b[s][k] for k in keys} for s in (3, 4)), arm
        assert_same_tensors(a / "model.safetensors", b / "model.safetensors")
        assert json.loads((b / "experiment_run.json").read_text())["overrides"] == {"credit_strategy": arm}
    assert "eval_reward" in write_report(tmp_path / "killed" / "runs")

    again = start_sweep(sweeps["killed"])
    out, _ = again.communicate(timeout=120)
    assert again.returncode == 0 and "2 runs selected, 2 finished already, 0 to run" in out, out
