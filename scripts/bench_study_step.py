"""Per-step time of an experiment's own runs, arm against arm, phase by phase: where a credit arm's extra time goes.

Each arm's trainer is built by the recipe's own path (``attncredit.recipe.build_trainer``) from the experiment
file: its recipe config, the common and the arm's overrides, ``--seed`` as the run's seed and data seed (so every arm
sees the same prompts), no evaluation and no checkpoints. The arms train ``--steps`` steps each, alternating
(arm A, arm B, arm A, ...) for ``--rounds`` rounds in one process; the first ``--warmup`` steps of every run are
dropped (compilation of the generation step, Triton kernels, allocator growth), and so are the first
``--warmup-rounds`` rounds (default 1) whole. A process pays some costs once per shape, whichever run meets the
shape first: cuDNN plans its attention for every new sequence length (forward and backward), and the compiled
generation step keeps the graphs of earlier trainers' models (this script resets it after every run). Measured on
an H100 (2026-12-07), a first run in the process took up to 2 s for a step of a new length against 0.5-0.7 s
otherwise, so without a warm-up round the arm that runs first looks slower. ``--fixed-length T`` removes most new
lengths as well: every completion is T tokens (``max_completion_length`` and ``generation_kwargs.min_new_tokens``),
so only the prompts' padding varies. Every step is timed by ``bench_step.PhaseTimer`` (CUDA synchronised around
each phase):

* ``generate``: TRL's ``_generate``; ``score``: the rest of ``_generate_and_score_completions`` (rewards,
  advantages, an old-log-prob forward where TRL runs one, credit computed there);
* ``loss``: ``_compute_loss``, the policy forward (with the recorded statistics and credit when the arm reads
  them in the loss forward) and TRL's loss;
* ``rest``: the rest of the step (backward, gradient clipping, optimizer, step-end callbacks);
* ``step``: the whole optimizer step; ``unsynced``: the same steps of a run whose only synchronisation is at the
  step's ends (no phase timers), the time the study's own runs see (timed rounds only).

With ``--profile K``, K steps after the warm-up steps of each arm's first timed run are also traced by
``torch.profiler``; per arm it writes the operator table (``--out``/profile_<arm>.txt) and prints, per step, the
CUDA kernel time, the number of CUDA synchronisations and the operators whose CPU or CUDA time differ most from the
first arm.
The last lines are a table: mean seconds per step per phase and arm, and the ratio to the first arm; then the
medians of ``step`` and ``unsynced`` (robust to the occasional step of a new length).

    python scripts/bench_study_step.py experiments/credit_study.yaml --arms none,coupled --fixed-length 64
    python scripts/bench_study_step.py experiments/credit_study.yaml --arms none,coupled --profile 3 --out prof/
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_step import PhaseTimer, free_memory, int_at_least  # noqa: E402

METHODS = ("_generate", "_generate_and_score_completions", "_compute_loss")
PHASES = ("generate", "score", "loss", "rest", "step")


def study_phases(totals) -> dict:
    """Phases of one step from the timer's totals (module docstring)."""
    rollout, step = totals["_generate_and_score_completions"], totals["_step"]
    loss = totals["_compute_loss"]
    return {"generate": totals["_generate"], "score": rollout - totals["_generate"], "loss": loss,
            "rest": step - rollout - loss, "step": step}


def step_only(totals) -> dict:
    """The record of one step of an unsynchronised run: its whole time."""
    return {"unsynced": totals["_step"]}


def recipe_argv(experiment, arm: str, opts, output_dir: str) -> list[str]:
    """The recipe's command line for ``arm`` (the runner's flags, shortened to ``--steps`` and without evaluation
    or checkpoints), then ``--set`` overrides."""
    from attncredit.experiments.runner import run_command

    cmd = run_command(experiment, arm, opts.seed, resume=False, overwrite=True)
    argv = cmd[cmd.index("--config"):]
    argv += ["--output_dir", output_dir, "--max_steps", str(opts.steps), "--save_strategy", "no",
             "--eval_strategy", "no", "--eval_on_start", "false", "--report_to", "none", "--disable_tqdm", "true"]
    if opts.fixed_length:
        argv += ["--max_completion_length", str(opts.fixed_length),
                 "--generation_kwargs", json.dumps({"min_new_tokens": opts.fixed_length})]
    for item in opts.set:
        key, _, value = item.partition("=")
        argv += [f"--{key}", value]
    return argv


def train(experiment, arm: str, opts, output_dir: str, *, phases: bool, profile: int = 0):
    """Train one run of ``arm``; its timed steps (after the warm-up) as dicts, and the profiler (or None)."""
    from attncredit import AnchorGRPOConfig, AnchorGRPOTrainer
    from attncredit.recipe import DEFAULT_CONFIG, build_trainer

    trainer, _ = build_trainer(recipe_argv(experiment, arm, opts, output_dir), AnchorGRPOTrainer, AnchorGRPOConfig,
                               DEFAULT_CONFIG)
    timer = PhaseTimer(trainer, METHODS if phases else (), study_phases if phases else step_only)
    profiler = None
    if profile:
        from transformers import TrainerCallback

        activities = [torch.profiler.ProfilerActivity.CPU]
        if torch.cuda.is_available():
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        profiler = torch.profiler.profile(
            activities=activities,
            schedule=torch.profiler.schedule(wait=opts.warmup, warmup=1, active=profile, repeat=1),
        )

        class Step(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                profiler.step()

        trainer.add_callback(Step())
        profiler.start()
    trainer.train()
    if profiler is not None:
        profiler.stop()
    del trainer
    free_memory()
    torch._dynamo.reset()  # the next trainer compiles its own generation step instead of adding to this one's cache
    return timer.steps[opts.warmup:], profiler


def operator_totals(profiler) -> dict[str, tuple[float, float, int]]:
    """name -> (self CPU seconds, self CUDA seconds, calls) over the traced steps."""
    out = {}
    for event in profiler.key_averages():
        cuda = getattr(event, "self_device_time_total", getattr(event, "self_cuda_time_total", 0.0))
        out[event.key] = (event.self_cpu_time_total / 1e6, cuda / 1e6, event.count)
    return out


SYNC_OPS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "cudaMemcpyAsync")


def profile_summary(arms: list[str], totals: dict[str, dict], steps: int) -> list[str]:
    """Per arm: CUDA kernel seconds and synchronising calls per step; then the operators whose per-step self CPU or
    CUDA time grew most against the first arm."""
    lines = [f"\nprofile, per traced step ({steps} steps per arm)",
             f"{'arm':20s} {'CUDA s':>8s} {'CPU s':>8s} " + " ".join(f"{op[4:]:>17s}" for op in SYNC_OPS)]
    for arm in arms:
        t = totals[arm]
        cuda = sum(v[1] for v in t.values())
        cpu = sum(v[0] for v in t.values())
        calls = " ".join(f"{t.get(op, (0, 0, 0))[2] / steps:17.1f}" for op in SYNC_OPS)
        lines.append(f"{arm:20s} {cuda / steps:8.4f} {cpu / steps:8.4f} {calls}")
    base = totals[arms[0]]
    for arm in arms[1:]:
        t = totals[arm]
        for column, name in ((0, "self CPU"), (1, "self CUDA")):
            growth = sorted(((t.get(k, (0, 0, 0))[column] - base.get(k, (0, 0, 0))[column]) / steps, k)
                            for k in set(t) | set(base))[::-1][:12]
            lines.append(f"{arm} vs {arms[0]}: largest growth of {name} seconds per step (operator, +s, calls)")
            for delta, key in growth:
                calls = (t.get(key, (0, 0, 0))[2] - base.get(key, (0, 0, 0))[2]) / steps
                lines.append(f"  {key[:70]:70s} {delta:+9.5f} {calls:+8.1f}")
    return lines


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiment", help="experiment file (experiments/*.yaml) of a grpo recipe")
    parser.add_argument("--arms", required=True, help="comma-separated arms of the file; the first is the baseline")
    parser.add_argument("--seed", type=int, default=0, help="seed and data seed of every run (default 0)")
    parser.add_argument("--steps", type=int_at_least(2), default=24, help="optimizer steps per run (default 24)")
    parser.add_argument("--warmup", type=int_at_least(0), default=4, help="untimed first steps per run (default 4)")
    parser.add_argument("--rounds", type=int_at_least(1), default=2,
                        help="alternations of the arms, warm-up rounds included (default 2)")
    parser.add_argument("--warmup-rounds", type=int_at_least(0), default=1,
                        help="untimed first rounds, which pay the process's once-per-shape costs (default 1)")
    parser.add_argument("--fixed-length", type=int_at_least(1), default=None, metavar="T",
                        help="every completion exactly T tokens (default: the config's, variable lengths)")
    parser.add_argument("--profile", type=int_at_least(0), default=0, metavar="K",
                        help="trace K steps of each arm's first timed run with torch.profiler (default 0: none)")
    parser.add_argument("--no-unsynced", action="store_true", help="skip the runs without phase timers")
    parser.add_argument("--out", default=None, help="folder for the raw step records and profiler tables")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="a recipe override for every arm, e.g. --set per_device_train_batch_size=8 (repeatable)")
    opts = parser.parse_args(argv)
    if opts.warmup_rounds >= opts.rounds:
        parser.error(f"--warmup-rounds {opts.warmup_rounds} leaves no timed round of --rounds {opts.rounds}")
    if opts.warmup >= opts.steps:
        parser.error(f"--warmup {opts.warmup} must be below --steps {opts.steps}")
    if opts.profile and opts.warmup + 1 + opts.profile > opts.steps:
        parser.error(f"--profile {opts.profile} needs --steps of at least --warmup + 1 + K = "
                     f"{opts.warmup + 1 + opts.profile}")
    for item in opts.set:
        if "=" not in item:
            parser.error(f"--set {item!r}: expected FIELD=VALUE")
    from attncredit.experiments.spec import load_experiment

    experiment = load_experiment(opts.experiment)
    if experiment.recipe != "grpo":
        parser.error(f"{opts.experiment}: recipe {experiment.recipe!r}; this benchmark times grpo experiments")
    opts.arm_list = [a.strip() for a in opts.arms.split(",")]
    for arm in opts.arm_list:
        if arm not in experiment.arms:
            parser.error(f"--arms: no arm {arm!r} in {opts.experiment} (arms: {', '.join(experiment.arms)})")
    if len(opts.arm_list) < 2 or len(set(opts.arm_list)) != len(opts.arm_list):
        parser.error(f"--arms {opts.arms!r}: name at least two different arms")
    opts.experiment_spec = experiment
    return opts


def main(argv=None) -> None:
    opts = parse_args(argv)
    experiment, arms = opts.experiment_spec, opts.arm_list
    records: dict[str, list[dict]] = {arm: [] for arm in arms}
    unsynced: dict[str, list[dict]] = {arm: [] for arm in arms}
    profiles: dict[str, dict] = {}
    out = Path(opts.out) if opts.out else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench_study_step_") as tmp:
        for round_ in range(opts.rounds):
            timed = round_ >= opts.warmup_rounds
            for arm in arms:
                start = time.perf_counter()
                profile = opts.profile if round_ == opts.warmup_rounds else 0
                steps, profiler = train(experiment, arm, opts, f"{tmp}/{arm}_{round_}", phases=True, profile=profile)
                if not timed:
                    print(f"round {round_} {arm:20s} warm-up  mean step "
                          f"{statistics.fmean(s['step'] for s in steps):.3f}s ({time.perf_counter() - start:.0f}s)",
                          flush=True)
                    continue
                records[arm] += steps
                if profiler is not None:
                    profiles[arm] = operator_totals(profiler)
                    if out:
                        table = profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=60)
                        (out / f"profile_{arm}.txt").write_text(table)
                print(f"round {round_} {arm:20s} phases   mean step {statistics.fmean(s['step'] for s in steps):.3f}s "
                      f"({time.perf_counter() - start:.0f}s)", flush=True)
                if opts.no_unsynced:
                    continue
                start = time.perf_counter()
                steps, _ = train(experiment, arm, opts, f"{tmp}/{arm}_{round_}_u", phases=False)
                unsynced[arm] += steps
                print(f"round {round_} {arm:20s} unsynced mean step "
                      f"{statistics.fmean(s['unsynced'] for s in steps):.3f}s ({time.perf_counter() - start:.0f}s)",
                      flush=True)
    if out:
        (out / "steps.json").write_text(json.dumps({"phases": records, "unsynced": unsynced}, indent=1))
    if profiles:
        print("\n".join(profile_summary(arms, profiles, opts.profile)))
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    length = f"completions of {opts.fixed_length} tokens" if opts.fixed_length else "the config's completion lengths"
    timed_rounds = opts.rounds - opts.warmup_rounds
    print(f"\n{experiment.name}, seed {opts.seed}, {device}, {length}: mean seconds per step over {timed_rounds} "
          f"timed round(s) x {opts.steps - opts.warmup} steps per arm; ratio to {arms[0]}")
    print(f"{'phase':16s}" + "".join(f"{arm:>20s}" for arm in arms) + "".join(f"{'ratio ' + a:>22s}" for a in arms[1:]))
    rows = [(phase, records, phase) for phase in PHASES]
    if not opts.no_unsynced:
        rows.append(("unsynced", unsynced, "unsynced"))
    whole_step = rows[len(PHASES) - 1:]  # step and unsynced
    table = [(label, source, key, statistics.fmean) for label, source, key in rows]
    table += [(f"median_{label}", source, key, statistics.median) for label, source, key in whole_step]
    for label, source, key, average in table:
        values = [average(s[key] for s in source[arm]) for arm in arms]
        ratios = [v / values[0] if values[0] > 0 else float("nan") for v in values[1:]]
        print(f"{label:16s}" + "".join(f"{v:20.4f}" for v in values) + "".join(f"{r:22.3f}" for r in ratios))


if __name__ == "__main__":
    main()
