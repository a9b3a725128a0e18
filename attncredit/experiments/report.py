"""The experiment report: what the runs that exist say, with intervals, curves and per-step time.

Reads every run folder under one root (``<root>/<arm>-s<seed>/`` with ``experiment_run.json`` and
``metrics.jsonl``): the run root of ``attncredit exp run`` or a folder ``attncredit exp collect`` filled. A
resumed run logs some steps twice in ``metrics.jsonl``; the last entry per step counts.

For each arm (statistics in ``stats.py``):

* the primary metric at the final step: each seed's value from its evaluation at ``max_steps``; the mean over
  seeds and its 95% Student-t interval (runs without that evaluation, e.g. unfinished, are left out and named);
* the paired difference to the baseline arm: per seed both arms have, arm minus baseline; the mean, its t-interval
  and its percentile bootstrap interval (10,000 resamples, RNG seed 0; from 4 seeds on, ``stats.MIN_BOOTSTRAP``);
  the same for the experiment's other ``comparisons`` (pairs of arms), in a second table;
* secondary, per arm over its finished seeds: the train metric's mean over the last ``LAST_STEPS`` (20) steps
  with a t-interval, and the held-out completion length at the final step;
* the per-step time: the median of TRL's ``step_time`` over every logged step of every run of the arm.
  ``step_time`` is the wall time of GRPOTrainer's ``training_step`` calls of one optimizer step: generation,
  rewards, the credit statistics, loss and backward; the optimizer update itself and evaluation are outside it.
  Runs that share one GPU as parallel processes wait for each other inside it, and runs of different GPU blocks
  ran on other machines beside other runs, so step times compare only between runs that met the same conditions:
  runs that trained side by side (the same ``device``, and ``host`` where both runs record one, with time spans,
  first to last logged training step, that overlap by at least ``SIDE_BY_SIDE`` of the shorter one), and runs
  that each trained alone on the same GPU (the same ``device_uuid``, which the runner records, and no other run
  of the report overlapping either's span on that machine; runs outside the report, e.g. of another experiment,
  are not seen). The ratio to the baseline is the median, over every such pair of a run of the arm and a run of
  the baseline, of the ratio of their median step times ("-" where there is no such pair); hence also
* the credit's own share of the wall time: the median of ``attncredit/time_share`` (the seconds of the attention
  statistics and of the credit over the wall time since the previous log) over the arm's logged steps; "-" for an
  arm without credit.

Also ``curves.png``: the primary metric vs step (mean over seeds, band: the 95% t-interval at each step with 2+
seeds) and the train metric vs step (each run's trailing mean over ``SMOOTH`` steps, then mean and band over seeds).
The markdown table goes to ``<root>/report.md``; it says how many seeds and steps each number rests on and flags
arms with fewer than two seeds (no interval).
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from attncredit.errors import ConfigError

from .runner import FINISHED_FILE, METRICS_FILE, SETTINGS_FILE
from .stats import MIN_BOOTSTRAP, Estimate, bootstrap_interval, mean_interval, paired_differences

STEP_TIME = "step_time"
CREDIT_SHARE = "attncredit/time_share"
EVAL_LENGTH = "eval_completions/mean_length"
SMOOTH = 10
LAST_STEPS = 20
SIDE_BY_SIDE = 0.5  # share of the shorter run's time span that two runs must share to count as side by side


@dataclass
class RunRecord:
    """One run folder's settings and metrics (the last logged entry per step and kind)."""

    path: Path
    settings: dict
    finished: bool
    train: dict[int, dict] = field(default_factory=dict)  # step -> merged training-step record
    evals: dict[int, dict] = field(default_factory=dict)  # step -> merged evaluation record

    @property
    def arm(self) -> str:
        return self.settings["arm"]

    @property
    def seed(self) -> int:
        return int(self.settings["seed"])


def read_run(path: Path) -> RunRecord:
    """A run folder as a ``RunRecord``; lines cut by a kill are skipped."""
    settings = json.loads((path / SETTINGS_FILE).read_text())
    run = RunRecord(path, settings, (path / FINISHED_FILE).is_file())
    metrics = path / METRICS_FILE
    lines = metrics.read_text().splitlines() if metrics.is_file() else []
    for line in lines:
        try:
            record = json.loads(line)
            step = int(record["step"])
        except (ValueError, KeyError, TypeError):
            continue
        if any(key.startswith("eval_") for key in record):
            run.evals.setdefault(step, {}).update(record)
        elif "train_runtime" not in record:  # the end-of-training summary is not a step
            run.train.setdefault(step, {}).update(record)
    return run


def read_runs(root: str | Path) -> list[RunRecord]:
    """Every run folder directly under ``root``; ``ConfigError`` when there is none or they mix experiments."""
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"results folder {str(root)!r} does not exist; give an experiment file or a folder of runs")
    runs = [read_run(p.parent) for p in sorted(root.glob(f"*/{SETTINGS_FILE}"))]
    if not runs:
        raise ConfigError(f"no run folder (<arm>-s<seed>/{SETTINGS_FILE}) under {root}")
    names = sorted({r.settings["experiment"] for r in runs})
    if len(names) > 1:
        raise ConfigError(f"{root} holds runs of several experiments ({', '.join(names)}); report one at a time")
    return runs


def _span(run: RunRecord) -> tuple[float, float] | None:
    """First and last wall-clock time of the run's logged training steps (None with fewer than two)."""
    times = [float(r["time"]) for r in run.train.values() if "time" in r]
    return (min(times), max(times)) if len(times) >= 2 else None


def _same_machine(a: RunRecord, b: RunRecord) -> bool:
    """Whether ``a`` and ``b`` may have run on one machine: the same GPU UUID where both record one, else the same
    device name and, where both record one, host."""
    if a.settings.get("device_uuid") and b.settings.get("device_uuid"):
        return a.settings["device_uuid"] == b.settings["device_uuid"]
    if a.settings.get("device") != b.settings.get("device"):
        return False
    return not (a.settings.get("host") and b.settings.get("host") and a.settings["host"] != b.settings["host"])


def _shared_seconds(a: RunRecord, b: RunRecord) -> tuple[float, float] | None:
    """(seconds both spans share, the shorter span's length), None when either run has no span."""
    span_a, span_b = _span(a), _span(b)
    if span_a is None or span_b is None:
        return None
    return (min(span_a[1], span_b[1]) - max(span_a[0], span_b[0]),
            min(span_a[1] - span_a[0], span_b[1] - span_b[0]))


def side_by_side(a: RunRecord, b: RunRecord) -> bool:
    """Whether runs ``a`` and ``b`` trained at the same time on the same machine (module docstring)."""
    shared = _shared_seconds(a, b) if _same_machine(a, b) else None
    return shared is not None and shared[1] > 0 and shared[0] >= SIDE_BY_SIDE * shared[1]


def alone(run: RunRecord, runs: list[RunRecord]) -> bool:
    """Whether ``run`` has a span and no other run of ``runs`` trained on its machine during any of it."""
    if _span(run) is None:
        return False
    return not any(other is not run and _same_machine(run, other) and (shared := _shared_seconds(run, other))
                   and shared[0] > 0 for other in runs)


def same_conditions(a: RunRecord, b: RunRecord, runs: list[RunRecord]) -> bool:
    """Whether the step times of ``a`` and ``b`` compare: side by side, or each alone on the same GPU (module
    docstring)."""
    uuid = a.settings.get("device_uuid")
    return side_by_side(a, b) or bool(uuid and uuid == b.settings.get("device_uuid") and alone(a, runs)
                                      and alone(b, runs))


def _train_values(run: RunRecord, key: str) -> list[float]:
    """The run's logged values of the train metric ``key`` (e.g. ``step_time``), one per step that logged it."""
    return [float(r[key]) for r in run.train.values() if key in r]


def time_ratio(runs: list[RunRecord], arm: str, baseline: str) -> tuple[float | None, int]:
    """(median over the pairs in the same conditions of median step time of the arm's run / the baseline run's,
    pairs)."""
    medians = {id(r): statistics.median(t) for r in runs
               if r.arm in (arm, baseline) and (t := _train_values(r, STEP_TIME))}
    ratios = [medians[id(run)] / medians[id(base)]
              for run in runs if run.arm == arm and id(run) in medians
              for base in runs if base.arm == baseline and medians.get(id(base)) and same_conditions(run, base, runs)]
    return (statistics.median(ratios) if ratios else None), len(ratios)


@dataclass
class ArmSummary:
    arm: str
    final: dict[int, float]  # seed -> primary metric at max_steps
    estimate: Estimate | None
    difference: Estimate | None = None  # paired, t-interval
    bootstrap: Estimate | None = None  # paired, percentile bootstrap
    step_time: float | None = None
    timed_steps: int = 0
    time_ratio: float | None = None  # vs the baseline, over runs in the same conditions
    time_pairs: int = 0
    credit_share: float | None = None  # median attncredit/time_share
    runs: int = 0
    missing: list[str] = field(default_factory=list)  # runs without the primary metric at max_steps
    late_train: dict[int, float] = field(default_factory=dict)  # seed -> train metric, mean of the last steps
    length: dict[int, float] = field(default_factory=dict)  # seed -> held-out completion length at max_steps


def summarize(runs: list[RunRecord], primary: str, baseline: str, max_steps: int,
              train_metric: str = "reward") -> dict[str, ArmSummary]:
    """Per arm (the baseline first, then in the order first seen): final values, mean and t-interval, paired
    difference to ``baseline`` (t and bootstrap), median step time (module docstring); per finished seed also the
    train metric's mean over steps ``max_steps - LAST_STEPS + 1 .. max_steps`` and the held-out completion length
    at ``max_steps``."""
    summaries: dict[str, ArmSummary] = {}
    times: dict[str, list[float]] = {}
    shares: dict[str, list[float]] = {}
    for run in sorted(runs, key=lambda r: r.arm != baseline):
        summary = summaries.setdefault(run.arm, ArmSummary(run.arm, {}, None))
        summary.runs += 1
        value = run.evals.get(max_steps, {}).get(primary)
        if value is None:
            summary.missing.append(run.path.name)
        else:
            summary.final[run.seed] = float(value)
            late = [float(r[train_metric]) for step, r in run.train.items()
                    if step > max_steps - LAST_STEPS and train_metric in r]
            if late:
                summary.late_train[run.seed] = sum(late) / len(late)
            if EVAL_LENGTH in run.evals[max_steps]:
                summary.length[run.seed] = float(run.evals[max_steps][EVAL_LENGTH])
        times.setdefault(run.arm, []).extend(_train_values(run, STEP_TIME))
        shares.setdefault(run.arm, []).extend(_train_values(run, CREDIT_SHARE))
    for arm, summary in summaries.items():
        summary.final = dict(sorted(summary.final.items()))
        summary.estimate = mean_interval(summary.final.values()) if summary.final else None
        if times[arm]:
            summary.step_time, summary.timed_steps = statistics.median(times[arm]), len(times[arm])
        if shares[arm]:
            summary.credit_share = statistics.median(shares[arm])
        if arm != baseline:
            summary.time_ratio, summary.time_pairs = time_ratio(runs, arm, baseline)
            if pair := compare(summaries, arm, baseline):
                summary.difference, summary.bootstrap = pair
    return summaries


def compare(summaries: dict[str, ArmSummary], arm: str, other: str) -> tuple[Estimate, Estimate] | None:
    """The paired difference ``arm - other`` over the seeds both have: (t estimate, bootstrap estimate), or None
    when they share no seed (or either arm has no run)."""
    if arm not in summaries or other not in summaries:
        return None
    diffs = paired_differences(summaries[arm].final, summaries[other].final)
    return (mean_interval(diffs.values()), bootstrap_interval(diffs.values())) if diffs else None


def _interval(e: Estimate | None, signed: bool = False) -> str:
    if e is None or e.low is None:
        return "-"
    f = "{:+.3f}" if signed else "{:.3f}"
    return f"[{f.format(e.low)}, {f.format(e.high)}]"


def markdown(name: str, summaries: dict[str, ArmSummary], primary: str, baseline: str, max_steps: int,
             comparisons: list | tuple = (), train_metric: str = "reward") -> str:
    """The report's markdown: one table row per arm, one per other comparison, and the notes on what each number
    rests on."""
    base = summaries.get(baseline)
    lines = [
        f"# {name}: {primary} at step {max_steps}",
        "",
        f"| arm | seeds | mean | 95% CI (t) | diff vs {baseline} | paired seeds | diff 95% CI (t) | "
        f"diff 95% CI (bootstrap) | step time, median (s) | time / {baseline}, same conditions (pairs) | "
        "credit's share of the time |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summaries.values():
        ratio = "1.000" if s.arm == baseline else (
            f"{s.time_ratio:.3f} ({s.time_pairs})" if s.time_ratio is not None else "-")
        lines.append(
            f"| {s.arm} | {len(s.final)} | {s.estimate.mean:.3f} | {_interval(s.estimate)} | "
            if s.estimate else f"| {s.arm} | 0 | - | - | "
        )
        lines[-1] += (
            f"{f'{s.difference.mean:+.3f}' if s.difference else '-'} | {s.difference.n if s.difference else 0} | "
            f"{_interval(s.difference, True)} | {_interval(s.bootstrap, True)} | "
            f"{f'{s.step_time:.3f}' if s.step_time is not None else '-'} | {ratio} | "
            f"{f'{100 * s.credit_share:.1f}%' if s.credit_share is not None else '-'} |"
        )
    if comparisons:
        lines += ["", "| comparison | paired seeds | mean difference | 95% CI (t) | 95% CI (bootstrap) |",
                  "|---|---|---|---|---|"]
        for arm, other in comparisons:
            pair = compare(summaries, arm, other)
            lines.append(f"| {arm} - {other} | " + (f"{pair[0].n} | {pair[0].mean:+.3f} | {_interval(pair[0], True)} | "
                                                     f"{_interval(pair[1], True)} |" if pair else "0 | - | - | - |"))
    lines += ["", f"| arm | train {train_metric}, steps {max(1, max_steps - LAST_STEPS + 1)}-{max_steps}: mean | "
              "95% CI (t) | held-out completion length (tokens) |", "|---|---|---|---|"]
    for s in summaries.values():
        late = mean_interval(s.late_train.values()) if s.late_train else None
        length = f"{sum(s.length.values()) / len(s.length):.1f}" if s.length else "-"
        lines.append(f"| {s.arm} | {f'{late.mean:.3f}' if late else '-'} | {_interval(late)} | {length} |")
    lines += ["", f"Each mean rests on one evaluation per seed at step {max_steps} (seeds: "
              + "; ".join(f"{s.arm} {', '.join(map(str, s.final)) or 'none'}" for s in summaries.values()) + "). "
              f"Differences are paired by seed (same data order) and use only seeds both arms have; t-intervals are "
              f"Student-t over seeds, bootstrap intervals the percentiles of 10,000 resampled means (RNG seed 0), given "
              f"from {MIN_BOOTSTRAP} seeds on (with fewer they are only the range of the values). "
              "Step time: median of TRL's step_time over "
              + "; ".join(f"{s.arm} {s.timed_steps} steps of {s.runs} runs" for s in summaries.values()) + ". "
              "Runs sharing one GPU as parallel processes wait for each other within a step, and runs of other GPU "
              "blocks ran on other machines beside other runs, so the time ratio pairs only runs in the same "
              "conditions: side by side (same device, overlapping time spans) or each alone on the same GPU (same "
              "GPU UUID, no other run of this report beside either): the median over those pairs of the run's "
              f"median step time over the {baseline} run's, with the number of pairs; the credit's own cost is its "
              "share of the "
              "time (median attncredit/time_share: attention statistics and credit seconds over the wall time)."]
    few = [s.arm for s in summaries.values() if len(s.final) < 2]
    if few:
        lines.append(f"\nFewer than 2 seeds, no interval: {', '.join(few)}.")
    if base is None:
        lines.append(f"\nNo run of the baseline arm {baseline!r}: no differences.")
    missing = [m for s in summaries.values() for m in s.missing]
    if missing:
        lines.append(f"\nLeft out (no {primary} at step {max_steps}, e.g. unfinished): {', '.join(missing)}.")
    return "\n".join(lines) + "\n"


def _band(series: dict[int, list[float]]):
    steps = sorted(series)
    estimates = [mean_interval(series[s]) for s in steps]
    mean = [e.mean for e in estimates]
    low = [e.low if e.low is not None else e.mean for e in estimates]
    high = [e.high if e.high is not None else e.mean for e in estimates]
    return steps, mean, low, high


def plot_curves(runs: list[RunRecord], primary: str, train_metric: str, path: Path,
                arms: list[str]) -> dict[str, tuple[float, float]]:
    """``curves.png``: primary metric and smoothed train metric vs step, mean and 95% t band per arm (in the
    order of ``arms``). Each panel's y-axis spans the runs' own values (padded by 5% of their range), so a band
    wider than anything a run reached (two seeds: t(0.975, 1) = 12.7 standard errors) is cut at the panel's edge
    instead of squeezing the curves; returns those spans, ``{"held-out": (low, high), "train": (low, high)}``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    values: dict[str, list[float]] = {"held-out": [], "train": []}
    for index, arm in enumerate(arms):
        color = f"C{index % 10}"
        evals: dict[int, list[float]] = {}
        train: dict[int, list[float]] = {}
        for run in (r for r in runs if r.arm == arm):
            for step, record in run.evals.items():
                if primary in record:
                    evals.setdefault(step, []).append(float(record[primary]))
            points = sorted((s, float(r[train_metric])) for s, r in run.train.items() if train_metric in r)
            for i, (step, _) in enumerate(points):
                window = [v for _, v in points[max(0, i - SMOOTH + 1): i + 1]]
                train.setdefault(step, []).append(sum(window) / len(window))
        for panel, axis, series in (("held-out", left, evals), ("train", right, train)):
            if series:
                steps, mean, low, high = _band(series)
                axis.plot(steps, mean, color=color, label=arm)
                axis.fill_between(steps, low, high, color=color, alpha=0.2)
                values[panel] += [v for per_step in series.values() for v in per_step]
    spans = {}
    for panel, axis in (("held-out", left), ("train", right)):
        if values[panel]:
            low, high = min(values[panel]), max(values[panel])
            pad = 0.05 * (high - low) or 0.05 * max(abs(high), 1.0)
            spans[panel] = (low - pad, high + pad)
            axis.set_ylim(*spans[panel])
    left.set(xlabel="step", ylabel=primary, title="held-out metric (mean, 95% t band over seeds)")
    right.set(xlabel="step", ylabel=train_metric, title=f"train metric, trailing mean of {SMOOTH} steps")
    for axis in (left, right):
        axis.grid(alpha=0.3)
        axis.legend(loc="lower right")
    fig.text(0.5, 0.01, "y-axes span the runs' own values; bands wider than that are cut at the edge",
             ha="center", fontsize=8, color="0.4")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return spans


def write_report(root: str | Path, *, primary: str | None = None, baseline: str | None = None,
                 max_steps: int | None = None, train_metric: str | None = None, comparisons=None) -> str:
    """Read the runs under ``root``, write ``report.md`` and ``curves.png`` there, return the markdown.
    The experiment's primary metric, baseline, step budget, train metric and other comparisons come from the runs'
    settings unless given (an experiment file gives them)."""
    root = Path(root)
    runs = read_runs(root)
    first = runs[0].settings
    primary = primary or first["primary_metric"]
    baseline = baseline or first["baseline"]
    max_steps = max_steps or int(first["max_steps"])
    train_metric = train_metric or first.get("train_metric", "reward")
    comparisons = first.get("comparisons", []) if comparisons is None else comparisons
    summaries = summarize(runs, primary, baseline, max_steps, train_metric)
    text = markdown(first["experiment"], summaries, primary, baseline, max_steps, comparisons, train_metric)
    plot_curves(runs, primary, train_metric, root / "curves.png", list(summaries))
    text += "\n![learning curves](curves.png)\n"
    (root / "report.md").write_text(text)
    return text
