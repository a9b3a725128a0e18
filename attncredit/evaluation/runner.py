"""Evaluate one model on several benchmarks: generate k samples per problem, score them, aggregate, report.

``run_evaluation`` returns (and ``write_results`` saves as ``results.json``) one dict::

    {"settings": {...model, backend, sampling, limit, seed, versions, wall_seconds...},
     "benchmarks": {name: {"metrics": {"avg@k", "pass@1", ..., "headline", "value", "format", "mean_tokens",
                                       "truncated", "num_problems", "num_samples", "seconds"},
                           "problems": [{"index", "prompt", "answer", ..., "num_correct",
                                         "samples": [{"completion", "reward", "correct", "format",
                                                      "num_tokens", "finish_reason"}]}]}}}

Metric values are fractions in [0, 1]; ``format_table`` prints them as percentages.
"""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass, field
from typing import Callable

from attncredit.errors import ConfigError

from .benchmarks import Benchmark, format_scores, score_completions
from .generate import Generator, SamplingSettings
from .metrics import benchmark_metrics, default_ks

_ROW_FIELDS = ("id", "numbers", "target", "category")


@dataclass
class EvalPlan:
    """What to run: benchmarks, samples per problem (None: each benchmark's paper default) and sampling."""

    benchmarks: list[Benchmark]
    n_samples: int | None = None
    pass_ks: list[int] | None = None
    limit: int | None = None
    temperature: float = 0.6
    top_p: float = 0.95
    max_new_tokens: int = 1024
    seed: int = 42
    template: str | None = None
    strict: bool = False
    extra: dict = field(default_factory=dict)

    def samples_for(self, benchmark: Benchmark) -> int:
        return self.n_samples if self.n_samples is not None else benchmark.default_k

    def sampling_for(self, benchmark: Benchmark) -> SamplingSettings:
        n = self.samples_for(benchmark)
        if self.n_samples is None and self.temperature == 0:
            n = 1  # greedy: one sample, whatever the paper's default k
        return SamplingSettings(
            n=n, temperature=self.temperature, top_p=self.top_p, max_new_tokens=self.max_new_tokens, seed=self.seed
        )

    def check(self) -> None:
        """Raise ``ConfigError`` on bad settings before any model is loaded."""
        if self.limit is not None and (isinstance(self.limit, bool) or not isinstance(self.limit, int) or self.limit < 1):
            raise ConfigError(f"limit must be an integer >= 1, got {self.limit!r}")
        for benchmark in self.benchmarks:
            sampling = self.sampling_for(benchmark)  # validates n, temperature, top-p, max-new-tokens
            for k in self.pass_ks or []:
                if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= sampling.n:
                    raise ConfigError(
                        f"pass@k needs k in 1..n-samples={sampling.n} for {benchmark.name}, got k={k!r}"
                    )

    def to_dict(self) -> dict:
        return {
            "benchmarks": [b.name for b in self.benchmarks],
            "n_samples": self.n_samples,
            "samples_per_benchmark": {b.name: self.sampling_for(b).n for b in self.benchmarks},
            "pass_ks": self.pass_ks,
            "limit": self.limit,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_new_tokens": self.max_new_tokens,
            "seed": self.seed,
            "template": self.template,
            "strict": self.strict,
            **self.extra,
        }


def load_benchmark_rows(plan: EvalPlan) -> dict[str, list[dict]]:
    """Rows of every benchmark of ``plan`` (fails fast, before any model loads, on one the loaders cannot serve)."""
    rows = {}
    for benchmark in plan.benchmarks:
        data = benchmark.load(limit=plan.limit, seed=plan.seed, template=plan.template)
        if len(data) == 0:
            raise ConfigError(f"benchmark '{benchmark.name}' has no problems")
        rows[benchmark.name] = data.to_list()
    return rows


def sample_and_score(
    generator: Generator,
    rows: list[dict],
    sampling: SamplingSettings,
    score: Callable[[list, list[dict]], list[dict]],
    progress=None,
) -> tuple[list[list[dict]], float]:
    """Generate ``sampling.n`` answers to each row's ``prompt`` and score them: the evaluation loop of
    ``evaluate_benchmark`` and of ``scripts/task_difficulty.py``.

    ``score(completions, rows)`` gets every answer as TRL's conversational ``[{"role": "assistant", "content":
    text}]`` with its problem's row (a row repeated once per answer) and returns one dict of named scores per
    answer (e.g. ``{"reward": 1.0}``). Returns, per row, the records ``{"completion", <score names>...,
    "num_tokens", "finish_reason"}`` of its ``sampling.n`` answers, and the seconds spent rendering and
    generating. ``progress``: a tqdm-like bar advanced by answers done.
    """
    start = time.perf_counter()
    samples = generator.generate(generator.render([row["prompt"] for row in rows]), sampling, progress=progress)
    generation_seconds = time.perf_counter() - start
    flat_rows = [row for row, group in zip(rows, samples) for _ in group]
    completions = [[{"role": "assistant", "content": s.text}] for group in samples for s in group]
    scores = score(completions, flat_rows)
    if len(scores) != len(completions):
        raise ValueError(f"score returned {len(scores)} results for {len(completions)} answers; it needs one per answer")
    scores = iter(scores)
    records = [
        [
            {"completion": s.text, **next(scores), "num_tokens": s.num_tokens, "finish_reason": s.finish_reason}
            for s in group
        ]
        for group in samples
    ]
    return records, generation_seconds


def evaluate_benchmark(
    benchmark: Benchmark, rows: list[dict], generator: Generator, plan: EvalPlan, show_progress: bool = True
) -> dict:
    """Generate, score and aggregate one benchmark; returns ``{"metrics": ..., "problems": ...}``."""
    from tqdm.auto import tqdm

    sampling = plan.sampling_for(benchmark)

    def score(completions, flat_rows):
        rewards, correct = score_completions(benchmark.task, completions, flat_rows, strict=plan.strict)
        formats = format_scores(completions, flat_rows)
        return [{"reward": r, "correct": bool(c), "format": f} for r, c, f in zip(rewards, correct, formats)]

    start = time.perf_counter()
    bar = None
    if show_progress and generator.name != "vllm":  # vLLM draws its own tqdm bar
        bar = tqdm(total=len(rows) * sampling.n, desc=f"{benchmark.name} (n={sampling.n})", unit="sample")
    try:
        records_per_row, gen_seconds = sample_and_score(generator, rows, sampling, score, progress=bar)
    finally:
        if bar is not None:
            bar.close()

    problems = [
        {
            "index": index,
            "prompt": row["prompt"],
            "answer": row["answer"],
            **{k: row[k] for k in _ROW_FIELDS if k in row},
            "num_correct": sum(r["correct"] for r in records),
            "samples": records,
        }
        for index, (row, records) in enumerate(zip(rows, records_per_row))
    ]
    per_problem = [[r["correct"] for r in records] for records in records_per_row]
    metrics = benchmark_metrics(per_problem, ks=plan.pass_ks or default_ks(sampling.n))
    all_samples = [r for p in problems for r in p["samples"]]
    metrics.update(
        headline=f"avg@{sampling.n}" if sampling.n > 1 else "pass@1",
        format=sum(r["format"] for r in all_samples) / len(all_samples),
        mean_tokens=sum(r["num_tokens"] for r in all_samples) / len(all_samples),
        truncated=sum(r["finish_reason"] == "length" for r in all_samples) / len(all_samples),
        generation_seconds=gen_seconds,
        seconds=time.perf_counter() - start,
    )
    metrics["value"] = metrics[f"avg@{sampling.n}"] if metrics["headline"].startswith("avg@") else metrics["pass@1"]
    return {"metrics": metrics, "problems": problems}


def run_evaluation(
    generator: Generator,
    plan: EvalPlan,
    rows: dict[str, list[dict]] | None = None,
    model_name: str | None = None,
    show_progress: bool = True,
) -> dict:
    """Evaluate ``generator``'s model on every benchmark of ``plan``; returns the results dict (module docstring)."""
    start = time.perf_counter()
    rows = rows if rows is not None else load_benchmark_rows(plan)
    results = {
        "settings": {
            "model": model_name or str(generator.model_path),
            **generator.info(),
            **plan.to_dict(),
            "versions": _versions(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
        "benchmarks": {},
    }
    for benchmark in plan.benchmarks:
        results["benchmarks"][benchmark.name] = evaluate_benchmark(
            benchmark, rows[benchmark.name], generator, plan, show_progress=show_progress
        )
    results["settings"]["wall_seconds"] = time.perf_counter() - start
    return results


def write_results(results: dict, out_dir) -> "Path":
    """Write ``results.json`` (settings, metrics, every generation) into ``out_dir``; returns its path."""
    import json
    from pathlib import Path

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=1, ensure_ascii=False, default=str))
    tmp.replace(path)
    return path


def summary(results: dict) -> dict[str, dict]:
    """``{benchmark: metrics}`` without the generations."""
    return {name: entry["metrics"] for name, entry in results["benchmarks"].items()}


def format_table(results: dict) -> str:
    """A plain-text table of the per-benchmark metrics (percentages) and the average of the headline values."""
    rows = []
    ks_seen: list[str] = []
    for entry in results["benchmarks"].values():
        for key in entry["metrics"]:
            if key.startswith("pass@") and key not in ks_seen:
                ks_seen.append(key)
    ks_seen.sort(key=lambda k: int(k.split("@")[1]))
    header = ["benchmark", "problems", "n", "metric", "value", *ks_seen, "format", "tokens", "truncated", "seconds"]
    for name, entry in results["benchmarks"].items():
        m = entry["metrics"]
        rows.append(
            [
                name,
                str(m["num_problems"]),
                str(m["num_samples"]),
                m["headline"],
                f"{100 * m['value']:.1f}",
                *[f"{100 * m[k]:.1f}" if k in m else "-" for k in ks_seen],
                f"{100 * m['format']:.1f}",
                f"{m['mean_tokens']:.0f}",
                f"{100 * m['truncated']:.1f}",
                f"{m['seconds']:.0f}",
            ]
        )
    if len(rows) > 1:
        values = [e["metrics"]["value"] for e in results["benchmarks"].values()]
        rows.append(["average", "", "", "", f"{100 * sum(values) / len(values):.1f}", *[""] * (len(header) - 5)])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells):
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    return "\n".join([line(header), line(["-" * w for w in widths]), *[line(r) for r in rows]])


def _versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for package in ("attncredit", "torch", "transformers", "trl", "vllm", "math-verify"):
        try:
            out[package] = md.version(package)
        except md.PackageNotFoundError:
            pass
    return out
