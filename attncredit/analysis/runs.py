"""Compare training runs: read ``metrics.jsonl``, smooth with the paper's EMA of the running peak, plot, tabulate.

``AnchorGRPOTrainer`` appends one JSON object per logging event to ``<output_dir>/metrics.jsonl``: training
entries (``reward``, ``rewards/<name>/mean``, ``completions/mean_length``, ``attncredit/*``), evaluation entries
(``eval_*``) and one final summary (``train_runtime``, ...), each with its ``step``. Training and evaluation at
the same step are separate entries, and a run resumed from a checkpoint logs the steps after that checkpoint
again, so ``read_run`` keeps, per step, the last entry of each kind (train / eval / summary).

The paper's training curves plot ``EMA_t = a * max(x_t, EMA_{t-1}) + (1 - a) * EMA_{t-1}``, an
exponential moving average of the running peak; ``ema_of_peak`` computes it (``EMA_0 = x_0``).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError

METRICS_FILE = "metrics.jsonl"
SUMMARY_KEYS = ("train_runtime", "train_loss", "total_flos")

# Metrics plotted when present, in this order: (key or regex, label, higher is better?)
_PLOT_SPECS: list[tuple[str, str, bool | None]] = [
    (r"reward", "train reward (weighted sum)", True),
    (r"rewards/[^/]+/mean", "train reward: {name}", True),
    (r"eval_reward", "eval reward (weighted sum)", True),
    (r"eval_rewards/[^/]+/mean", "eval reward: {name}", True),
    (r"completions/mean_length", "response length (tokens)", None),
    (r"eval_completions/mean_length", "eval response length (tokens)", None),
    (r"completions/clipped_ratio", "truncated responses (fraction)", None),
    (r"attncredit/[^/]+", "attncredit: {name}", None),
]


@dataclass
class Run:
    """One run's metrics: ``series[metric] = (steps, values)``, steps ascending."""

    name: str
    path: Path
    series: dict[str, tuple[list[int], list[float]]] = field(default_factory=dict)
    skipped_lines: int = 0

    @property
    def last_step(self) -> int:
        return max((s[-1] for s, _ in self.series.values() if s), default=0)


def _kind(entry: dict) -> str:
    if any(k.startswith("eval_") for k in entry):
        return "eval"
    if any(k in entry for k in SUMMARY_KEYS):
        return "summary"
    return "train"


def metrics_path(run_dir: str | Path) -> Path:
    """``<run_dir>/metrics.jsonl`` (or ``run_dir`` itself when it is that file); ``ConfigError`` if missing."""
    path = Path(run_dir)
    if path.is_file() and path.name.endswith(".jsonl"):
        return path
    if not path.exists():
        raise ConfigError(f"run folder '{run_dir}' does not exist")
    candidate = path / METRICS_FILE
    if not candidate.is_file():
        raise ConfigError(
            f"run folder '{run_dir}' has no {METRICS_FILE} (AnchorGRPOTrainer writes it into the training output_dir)"
        )
    return candidate


def read_run(run_dir: str | Path, name: str | None = None) -> Run:
    """Read one run's ``metrics.jsonl`` (keeping the last entry of each kind per step)."""
    path = metrics_path(run_dir)
    latest: dict[tuple[int, str], dict] = {}
    skipped = 0
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by a crash
                skipped += 1
                continue
            if not isinstance(entry, dict) or not isinstance(entry.get("step"), (int, float)):
                skipped += 1
                continue
            latest[(int(entry["step"]), _kind(entry))] = entry
    if not latest:
        raise ConfigError(f"{path} holds no metrics entries")
    series: dict[str, tuple[list[int], list[float]]] = {}
    for (step, kind), entry in sorted(latest.items()):
        if kind == "summary":
            continue
        for key, value in entry.items():
            if key in ("step", "epoch", "time") or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if not math.isfinite(value):
                continue
            steps, values = series.setdefault(key, ([], []))
            steps.append(step)
            values.append(float(value))
    run_dir = path.parent
    return Run(name=name or run_dir.name, path=run_dir, series=series, skipped_lines=skipped)


def read_runs(run_dirs: list[str | Path]) -> list[Run]:
    """Read several runs; names are folder names, made unique with their parent folder when they clash."""
    if not run_dirs:
        raise ConfigError("no run folders given")
    paths = [metrics_path(d).parent for d in run_dirs]
    base = [p.name for p in paths]
    names = [f"{p.parent.name}/{p.name}" if base.count(p.name) > 1 else p.name for p in paths]
    for i in range(len(names)):  # still equal (same folder twice, or equal parents): number them
        if names.count(names[i]) > 1:
            names[i] = f"{names[i]} ({i + 1})"
    return [read_run(p, n) for p, n in zip(paths, names)]


def ema_of_peak(values: list[float], alpha: float) -> list[float]:
    """The paper's curve smoothing: ``EMA_t = a * max(x_t, EMA_{t-1}) + (1 - a) * EMA_{t-1}``, ``EMA_0 = x_0``.

    Since ``max(x_t, EMA_{t-1}) >= EMA_{t-1}``, the curve never decreases; ``alpha = 1`` gives the running peak.
    """
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or not 0 < alpha <= 1:
        raise ConfigError(f"EMA alpha must be in (0, 1], got {alpha!r}")
    out: list[float] = []
    for x in values:
        out.append(x if not out else alpha * max(x, out[-1]) + (1 - alpha) * out[-1])
    return out


def moving_average(values: list[float], alpha: float) -> list[float]:
    """Plain exponential moving average ``EMA_t = a * x_t + (1 - a) * EMA_{t-1}``, ``EMA_0 = x_0`` (smoothing for
    metrics where a running peak means nothing: lengths, attncredit statistics)."""
    ema_of_peak([], alpha)
    out: list[float] = []
    for x in values:
        out.append(x if not out else alpha * x + (1 - alpha) * out[-1])
    return out


def plot_metrics(runs: list[Run]) -> list[tuple[str, str, bool | None]]:
    """(metric, label, higher-is-better) of every plottable metric any run logged, in the order of ``_PLOT_SPECS``."""
    keys = sorted({k for run in runs for k in run.series})
    out, seen = [], set()
    for pattern, label, better in _PLOT_SPECS:
        for key in keys:
            if key in seen or not re.fullmatch(pattern, key):
                continue
            seen.add(key)
            name = key.split("/")[-2] if key.endswith("/mean") else key.split("/")[-1]
            out.append((key, label.format(name=name), better))
    return out


def _filename(metric: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", metric).strip("_") + ".png"


def plot_runs(runs: list[Run], out_dir: str | Path, ema: float | None = None) -> list[Path]:
    """One PNG per metric in ``out_dir``, runs overlaid (legend: run names). With ``ema``: the paper's EMA of the
    running peak for rewards and accuracies, a plain EMA for the other metrics, raw values faint behind them.
    Returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    from matplotlib.ticker import MaxNLocator

    colors = plt.get_cmap("tab10").colors
    # Colour, dash and marker all change from run to run, so runs whose curves coincide stay distinguishable.
    dashes = ["-", "--", "-.", ":"]
    markers = ["o", "s", "^", "D", "v", "P"]
    written = []
    for metric, label, better in plot_metrics(runs):
        smooth = ema_of_peak if better else moving_average
        fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=120)
        for i, run in enumerate(runs):
            if metric not in run.series:
                continue
            steps, values = run.series[metric]
            few = len(steps) <= 30  # few points: markers and dashes; many (noisy) points: thin solid lines
            style = dict(color=colors[i % len(colors)], linestyle=dashes[i % len(dashes)] if few else "-")
            marker = markers[i % len(markers)] if few else None
            if ema is not None:
                ax.plot(steps, values, alpha=0.3, linewidth=1, marker=marker, markersize=3, **style)
                ax.plot(steps, smooth(values, ema), linewidth=2, marker=marker, markersize=5, label=run.name,
                        **style)
            else:
                ax.plot(steps, values, linewidth=1.8 if few else 1.1, marker=marker, markersize=5, label=run.name,
                        **style)
        kind = "EMA of running peak" if better else "EMA"
        title = label if ema is None else f"{label}\n{kind} (alpha={ema:g}); faint: raw values"
        ax.set_title(title, fontsize=11)
        ax.set_xlabel("training step")
        ax.set_ylabel(metric, fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 2.5, 5, 10]))
        ax.legend(fontsize=9, loc="best", frameon=True)
        fig.tight_layout()
        path = out_dir / _filename(metric)
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    return written


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if value != 0 and (abs(value) >= 1e4 or abs(value) < 1e-3):
        return f"{value:.3g}"
    return f"{value:.4g}" if abs(value) < 100 else f"{value:.1f}"


def comparison_markdown(runs: list[Run], ema: float | None = None) -> str:
    """Markdown: the runs, then one table per plotted metric with final and best values per run.

    "best" is the maximum for rewards and accuracies; for other metrics (lengths, attncredit statistics) the table
    gives the mean, min and max instead.
    """
    lines = ["# Run comparison", "", "| run | folder | last step | entries skipped |", "|---|---|---|---|"]
    for run in runs:
        lines.append(f"| {run.name} | `{run.path}` | {run.last_step} | {run.skipped_lines} |")
    for metric, label, better in plot_metrics(runs):
        lines += ["", f"## {label} (`{metric}`)", ""]
        if better:
            head = ["run", "final", "best", "best at step"] + ([f"final EMA-of-peak (alpha={ema:g})"] if ema else [])
        else:
            head = ["run", "final", "mean", "min", "max"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for run in runs:
            if metric not in run.series:
                lines.append("| " + " | ".join([run.name] + ["-"] * (len(head) - 1)) + " |")
                continue
            steps, values = run.series[metric]
            if better:
                i = max(range(len(values)), key=lambda j: values[j])
                cells = [_fmt(values[-1]), _fmt(values[i]), str(steps[i])]
                if ema:
                    cells.append(_fmt(ema_of_peak(values, ema)[-1]))
            else:
                cells = [_fmt(values[-1]), _fmt(sum(values) / len(values)), _fmt(min(values)), _fmt(max(values))]
            lines.append("| " + " | ".join([run.name, *cells]) + " |")
    return "\n".join(lines) + "\n"


def compare_runs(run_dirs: list[str | Path], out_dir: str | Path, ema: float | None = None) -> dict:
    """Read ``run_dirs``, write the plots and ``comparison.md`` into ``out_dir``; returns what was written."""
    if ema is not None:
        ema_of_peak([], ema)  # validate alpha before any work
    runs = read_runs(run_dirs)
    if not plot_metrics(runs):
        raise ConfigError("none of the runs logged a reward, eval, length or attncredit metric")
    plots = plot_runs(runs, out_dir, ema)
    table = Path(out_dir) / "comparison.md"
    table.write_text(comparison_markdown(runs, ema))
    return {"runs": runs, "plots": plots, "table": table}
