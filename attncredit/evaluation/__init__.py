"""Evaluation: benchmarks by name, HF/vLLM generation, avg@k / pass@k.

* ``metrics``: ``pass_at_k`` (unbiased, Chen et al. 2021), ``avg_at_k``, ``benchmark_metrics``;
* ``benchmarks``: ``BENCHMARKS`` (name -> dataset split, scorer, the paper's k), ``parse_benchmarks``;
* ``generate``: ``make_generator(model, backend="auto"|"vllm"|"hf")``, ``SamplingSettings``;
* ``runner``: ``EvalPlan``, ``run_evaluation``, ``write_results``, ``format_table`` (used by ``attncredit eval``);
  ``sample_and_score``, the generate-and-score loop under them (also used by ``scripts/task_difficulty.py``).

Comparing training runs' logs is analysis: ``attncredit.analysis.runs`` (``attncredit compare``).

Example::

    from attncredit.evaluation import EvalPlan, make_generator, parse_benchmarks, run_evaluation, format_table
    plan = EvalPlan(parse_benchmarks("gsm8k,aime2025"), limit=20)
    results = run_evaluation(make_generator("smollm2-135m-instruct", backend="hf"), plan)
    print(format_table(results))
"""

from .benchmarks import BENCHMARKS, PAPER_SETS, Benchmark, list_benchmarks, parse_benchmarks, score_completions
from .generate import BACKENDS, SamplingSettings, make_generator, resolve_backend
from .metrics import avg_at_k, benchmark_metrics, default_ks, pass_at_k
from .runner import (
    EvalPlan,
    format_table,
    load_benchmark_rows,
    run_evaluation,
    sample_and_score,
    summary,
    write_results,
)

__all__ = [
    "BENCHMARKS",
    "PAPER_SETS",
    "Benchmark",
    "list_benchmarks",
    "parse_benchmarks",
    "score_completions",
    "BACKENDS",
    "SamplingSettings",
    "make_generator",
    "resolve_backend",
    "avg_at_k",
    "benchmark_metrics",
    "default_ks",
    "pass_at_k",
    "EvalPlan",
    "format_table",
    "load_benchmark_rows",
    "run_evaluation",
    "sample_and_score",
    "summary",
    "write_results",
]
