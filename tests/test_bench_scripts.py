"""scripts/bench_step.py and scripts/bench_ppo_step.py end to end on CPU with a tiny model, and their flags."""

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import bench_step  # noqa: E402

TINY = ["--layers", "2", "--hidden", "64", "--vocab", "256", "--tokens-prompt", "8", "--tokens-completion", "8",
        "--batch", "4", "--generations", "2", "--rounds", "1"]  # fmt: skip


def run_script(name: str, args: list[str]) -> str:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / name), *args], capture_output=True, text=True, env=env, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def table(stdout: str, rows: int) -> list[list[str]]:
    """The last ``rows`` lines of the printed table, split into cells."""
    return [line.split() for line in stdout.strip().splitlines()[-rows:]]


def test_bench_step_end_to_end(tmp_path):
    out = tmp_path / "steps.json"
    args = [*TINY, "--steps", "2", "--warmup", "0", "--warmup-run-tokens", "4", "--regroup-every", "2", "--warmup-full"]
    stdout = run_script("bench_step.py", [*args, "--json", str(out)])
    for case in ("old-logps", "loss"):
        for kind in ("trl", "attncredit"):
            assert f"warm-up {case:9s} {kind:10s} 4 tokens" in stdout
        assert f"full-length warm-up {case:9s} trl" in stdout
    records = json.loads(out.read_text())
    assert set(records) == {"old-logps/trl", "old-logps/attncredit", "loss/trl", "loss/attncredit"}
    for key, steps in records.items():
        assert len(steps) == 2
        for s in steps:
            assert set(s) == {"generate", "score", "train", "step"}
            # the step clock holds the rollout and the loss; each phase is a positive share of it
            assert s["train"] > 0 and s["score"] >= 0 and s["generate"] >= 0
            assert s["generate"] + s["score"] + s["train"] == pytest.approx(s["step"])
        generated = [s["generate"] > 0 for s in steps]
        # old-logps generates for two steps at once, on the first; loss on every step
        assert generated == ([True, False] if key.startswith("old-logps") else [True, True])
    rows = table(stdout, 10)
    phases = ("generate", "score", "train", "step", "non-gen")
    assert [r[:2] for r in rows] == [[c, p] for c in ("old-logps", "loss") for p in phases]
    for case, phase, trl, attncredit, ratio in rows:
        means = [
            statistics.fmean(s["step"] - s["generate"] if phase == "non-gen" else s[phase] for s in steps)
            for steps in (records[f"{case}/trl"], records[f"{case}/attncredit"])
        ]
        assert [float(trl), float(attncredit)] == pytest.approx(means, abs=6e-4)
        if means[0] > 0:
            assert float(ratio) == pytest.approx(means[1] / means[0], abs=6e-4)


def test_bench_ppo_step_end_to_end(tmp_path):
    out = tmp_path / "steps.json"
    stdout = run_script("bench_ppo_step.py", [*TINY, "--steps", "2", "--warmup", "1", "--json", str(out)])
    records = json.loads(out.read_text())
    assert set(records) == {"none", "coupled"}
    for steps in records.values():
        assert len(steps) == 1
        (s,) = steps
        assert set(s) == {"generate", "critic", "score", "train", "step"}
        assert all(s[p] > 0 for p in ("generate", "critic", "score", "train"))
        assert s["generate"] + s["critic"] + s["score"] + s["train"] == pytest.approx(s["step"])
    rows = table(stdout, 5)
    assert [r[0] for r in rows] == ["generate", "critic", "score", "train", "step"]
    assert float(rows[-1][1]) == pytest.approx(records["none"][0]["step"], abs=6e-4)


def test_bench_step_preset_long_and_overrides():
    opts = bench_step.parse_args(["--preset", "long"])
    assert (opts.tokens_prompt, opts.tokens_completion, opts.batch, opts.generations) == (256, 4096, 8, 8)
    assert (opts.steps, opts.warmup, opts.rounds, opts.cases, opts.warmup_run_tokens) == (1, 0, 1, ["loss"], 64)
    assert opts.regroup_every == 1
    opts = bench_step.parse_args(
        ["--preset", "long", "--tokens-completion", "2048", "--rounds", "2", "--regroup-every", "3"]
    )
    assert (opts.tokens_completion, opts.rounds, opts.regroup_every, opts.tokens_prompt) == (2048, 2, 3, 256)
    assert bench_step.parse_args([]).cases == ["old-logps", "loss"]
    opts = bench_step.parse_args(["--preset", "smollm2"])  # the learning study's SmolLM2-135M shape and batch
    assert bench_step.model_shape(opts) == dict(layers=30, hidden=576, heads=9, kv_heads=3, head_dim=64,
                                                intermediate=1536)  # fmt: skip
    assert (opts.batch, opts.generations, opts.vocab, opts.cases) == (64, 8, 49152, ["loss"])


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--cases", "loss,foo"], "unknown case 'foo' (allowed: old-logps, loss)"),
        (["--cases", "loss,loss"], "a case is named twice"),
        (["--steps", "0"], "argument --steps: 0 is below 1"),
        (["--regroup-every", "0"], "argument --regroup-every: 0 is below 1"),
        (["--steps", "2", "--warmup", "2"], "--warmup 2 leaves no timed step of --steps 2"),
        (["--batch", "6", "--generations", "4"], "--batch 6 must be a multiple of --generations 4"),
        (["--steps", "4", "--warmup", "1"], "--steps 4 minus --warmup 1 must be even"),
        (["--preset", "long", "--cases", "old-logps"], "--steps 1 minus --warmup 0 must be even"),
        (["--preset", "huge"], "invalid choice: 'huge'"),
        (["--heads", "9", "--kv-heads", "2"], "--heads 9 must be a multiple of --kv-heads 2"),
    ],
)
def test_bench_step_refuses_bad_flags(argv, message, capsys):
    with pytest.raises(SystemExit):
        bench_step.parse_args(argv)
    assert message in capsys.readouterr().err


def study_experiment(tmp_path, model) -> Path:
    """A tiny two-arm experiment file (none, coupled) over a 4-step countdown recipe config of ``model`` (its
    countdown reward: a random model scores 0, and the step still runs every phase)."""
    import yaml

    from tiny_training import resume_recipe_config

    config = resume_recipe_config(tmp_path / "recipe.yaml", model, tmp_path / "unused", num_generations=2,
                                   reward_funcs=["countdown"])
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(dict(
        name="tiny", recipe="grpo", config=str(config), output_root=str(tmp_path / "runs"), seeds=[0], max_steps=4,
        save_steps=2, baseline="none", primary_metric="reward",
        arms={"none": {"credit_strategy": "none"}, "coupled": {"credit_strategy": "coupled"}},
    )))  # fmt: skip
    return path


def test_bench_study_step_end_to_end(tmp_path, tiny_qwen2):
    experiment = study_experiment(tmp_path, tiny_qwen2)
    out = tmp_path / "bench"
    stdout = run_script("bench_study_step.py", [str(experiment), "--arms", "none,coupled", "--steps", "4",
                                                "--warmup", "1", "--profile", "2", "--out", str(out),
                                                "--fixed-length", "5"])  # fmt: skip
    assert "round 0 none                 warm-up" in stdout and "round 0 coupled              warm-up" in stdout
    assert "round 1 coupled              unsynced" in stdout and "completions of 5 tokens" in stdout
    records = json.loads((out / "steps.json").read_text())
    for arm in ("none", "coupled"):
        steps = records["phases"][arm]
        assert len(steps) == 3 and len(records["unsynced"][arm]) == 3  # 4 steps, the first dropped
        for s in steps:
            assert s["generate"] > 0 and s["loss"] > 0 and s["rest"] > 0 and s["score"] >= 0
            assert s["generate"] + s["score"] + s["loss"] + s["rest"] == pytest.approx(s["step"])
        assert "Name" in (out / f"profile_{arm}.txt").read_text()  # the profiler's operator table
    assert "coupled vs none: largest growth of self CPU seconds per step" in stdout
    rows = table(stdout, 8)
    assert [r[0] for r in rows] == ["generate", "score", "loss", "rest", "step", "unsynced", "median_step",
                                    "median_unsynced"]  # fmt: skip
    for label, none, coupled, ratio in rows:
        key = label.removeprefix("median_")
        source = records["unsynced" if key == "unsynced" else "phases"]
        average = statistics.median if label.startswith("median_") else statistics.fmean
        means = [average(s[key] for s in source[arm]) for arm in ("none", "coupled")]
        assert [float(none), float(coupled)] == pytest.approx(means, abs=6e-5)
        assert float(ratio) == pytest.approx(means[1] / means[0], abs=6e-4)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--arms", "none,entropy"], "--arms: no arm 'entropy' in"),
        (["--arms", "none"], "--arms 'none': name at least two different arms"),
        (["--arms", "none,coupled", "--steps", "3", "--warmup", "3"], "--warmup 3 must be below --steps 3"),
        (["--arms", "none,coupled", "--steps", "5", "--profile", "2"], "--profile 2 needs --steps of at least"),
        (["--arms", "none,coupled", "--set", "seed"], "--set 'seed': expected FIELD=VALUE"),
        (["--arms", "none,coupled", "--rounds", "1"], "--warmup-rounds 1 leaves no timed round of --rounds 1"),
        (["--arms", "none,coupled", "--fixed-length", "0"], "argument --fixed-length: 0 is below 1"),
    ],
)
def test_bench_study_step_refuses_bad_flags(argv, message, capsys, tmp_path, tiny_qwen2):
    import bench_study_step

    with pytest.raises(SystemExit):
        bench_study_step.parse_args([str(study_experiment(tmp_path, tiny_qwen2)), *argv])
    assert message in capsys.readouterr().err
