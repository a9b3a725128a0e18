"""Evaluate a model on math and Countdown benchmarks: k samples per problem, avg@k and pass@k, results.json.

    attncredit eval --model smollm2-135m-instruct --benchmarks gsm8k --limit 20
    attncredit eval --model runs/qwen3-4b-dapo-1k-coupled --benchmarks table4 --out runs/eval/coupled
    attncredit eval --model runs/qwen3-4b-countdown-coupled --benchmarks countdown --backend vllm

Benchmarks (comma-separated; sets: table3, table4, table6, offline): gsm8k, aime2025, champ, countdown, countdown3
(offline); aime2024, amc23, math500, olympiadbench, minerva (from the hub). Prompts are the training templates
(the dataset loaders' defaults, or --template) and answers are scored by the training rewards (math_accuracy;
Countdown: correct when its reward is 1.0). Without --n-samples each benchmark takes the paper's k: 16 samples
for AIME (avg@16), 1 elsewhere (pass@1). The backend is vLLM when it is installed, else transformers generate.

Writes <out>/results.json (settings, per-benchmark metrics, every generation with its score) and prints a table.
Bad input ends with "error: <message>" and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

GPU_MAX_NEW_TOKENS = 1024
CPU_MAX_NEW_TOKENS = 256  # SmolLM2-135M on 2 CPU cores: 3 GSM8K problems took 11 minutes at 1024 tokens


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, as every attncredit entry point
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2)


def _int_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="attncredit eval", description=__doc__.splitlines()[0],
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m-instruct",
                   help="hub id, local folder (e.g. a training output_dir) or embedded name (default: %(default)s)")
    p.add_argument("--benchmarks", default="gsm8k", help="comma-separated benchmark names or sets (default: %(default)s)")
    p.add_argument("--n-samples", type=int, default=None,
                   help="samples per problem (k of avg@k); default: the paper's per benchmark (AIME 16, others 1)")
    p.add_argument("--pass-k", type=_int_list, default=None,
                   help="pass@k values to report, e.g. 1,4,16 (each <= n-samples); default 1, 2, 4, ..., n")
    p.add_argument("--limit", type=int, default=None, help="first N problems of each benchmark")
    p.add_argument("--temperature", type=float, default=0.6, help="0 = greedy (default: %(default)s)")
    p.add_argument("--top-p", type=float, default=0.95, help="nucleus sampling (default: %(default)s)")
    p.add_argument("--max-new-tokens", type=int, default=None,
                   help=f"answer length cap; the paper's 1K / 8K settings (default: {GPU_MAX_NEW_TOKENS} with a GPU or "
                   f"vLLM, {CPU_MAX_NEW_TOKENS} with HF generate on a CPU, where {GPU_MAX_NEW_TOKENS} tokens take "
                   "minutes per problem)")
    p.add_argument("--batch-size", type=int, default=16, help="sequences per generate call, HF backend (default: %(default)s)")
    p.add_argument("--backend", default="auto", choices=["auto", "vllm", "hf"], help="generator (default: %(default)s)")
    p.add_argument("--cache", default="auto", choices=["auto", "dynamic", "static"],
                   help="HF backend KV cache (auto = dynamic); on a GPU, --cache static --compile is ~5x faster "
                   "after a ~35 s compilation per batch shape (docs/benchmarks.md)")
    p.add_argument("--compile", action="store_true", help="HF backend: let transformers compile the decoding step "
                   "(with --cache static)")
    p.add_argument("--dtype", default="auto",
                   help="model dtype: auto (float32 on CPU, the checkpoint's on GPU), bfloat16, float16, float32")
    p.add_argument("--template", default=None, help="prompt template (r1, boxed); default: as in training, per task")
    p.add_argument("--strict", action="store_true",
                   help="count only answers given in \\boxed{} or <answer> tags (the training rewards also read an "
                   "untagged completion's last stated answer)")
    p.add_argument("--tensor-parallel-size", type=int, default=1, help="vLLM tensor parallel GPUs (default: 1)")
    p.add_argument("--gpu-memory-utilization", type=float, default=None,
                   help="vLLM memory share: of the GPU (default 0.9), or of host memory on vLLM's CPU build (default 0.3)")
    p.add_argument("--out", default=None, help="output folder for results.json (default: runs/eval/<model name>)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier results.json in --out (without it such a run is refused before the model loads)")
    p.add_argument("--seed", type=int, default=42,
                   help="sampling seed and Countdown generator seed; 42 = the recipes' seed, so 'countdown' is the "
                   "split held out in training (default: %(default)s)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (HF backend); 1 is much faster on a CPU shared with other jobs")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # recorded in results.json
    from attncredit.errors import ConfigError, first_line

    try:
        return _run(args)
    except ConfigError as e:
        print(f"error: {first_line(e)}", file=sys.stderr)
        return 2


def _run(args) -> int:
    import time

    from attncredit.errors import ConfigError
    from attncredit.evaluation import (
        EvalPlan,
        format_table,
        load_benchmark_rows,
        make_generator,
        parse_benchmarks,
        resolve_backend,
        run_evaluation,
        write_results,
    )

    if args.dtype not in ("auto", "bfloat16", "float16", "float32"):
        raise ConfigError(f"unknown dtype '{args.dtype}'; allowed: auto, bfloat16, float16, float32")
    if args.gpu_memory_utilization is not None and not 0 < args.gpu_memory_utilization <= 1:
        raise ConfigError(f"gpu-memory-utilization must be in (0, 1], got {args.gpu_memory_utilization}")
    if args.tensor_parallel_size < 1:
        raise ConfigError(f"tensor-parallel-size must be >= 1, got {args.tensor_parallel_size}")
    backend = resolve_backend(args.backend)
    if args.max_new_tokens is None:
        import torch

        on_gpu = backend == "vllm" or torch.cuda.is_available()
        args.max_new_tokens = GPU_MAX_NEW_TOKENS if on_gpu else CPU_MAX_NEW_TOKENS
        if not on_gpu:
            print(f"note: HF generate on a CPU: answers capped at {CPU_MAX_NEW_TOKENS} new tokens "
                  f"(--max-new-tokens {GPU_MAX_NEW_TOKENS} for the paper's 1K setting, minutes per problem)", file=sys.stderr)
    plan = EvalPlan(
        benchmarks=parse_benchmarks(args.benchmarks),
        n_samples=args.n_samples,
        pass_ks=args.pass_k,
        limit=args.limit,
        temperature=args.temperature,
        top_p=args.top_p,
        max_new_tokens=args.max_new_tokens,
        seed=args.seed,
        template=args.template,
        strict=args.strict,
    )
    plan.check()
    if args.threads is not None:
        if args.threads < 1:
            raise ConfigError(f"threads must be >= 1, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
    out = Path(args.out) if args.out else Path("runs") / "eval" / Path(str(args.model).rstrip("/")).name
    if (out / "results.json").exists() and not args.overwrite:  # an earlier evaluation's generations stay
        raise ConfigError(
            f"{out / 'results.json'} exists (an earlier evaluation); replace it with --overwrite, or choose another --out"
        )
    rows = load_benchmark_rows(plan)  # fail on a benchmark the loaders cannot serve before loading a model
    start = time.perf_counter()
    generator = make_generator(
        args.model,
        backend,
        dtype=args.dtype,
        batch_size=args.batch_size,
        seed=args.seed,
        tensor_parallel_size=args.tensor_parallel_size,
        gpu_memory_utilization=args.gpu_memory_utilization,
        cache=args.cache,
        compile=args.compile,
    )
    load_seconds = time.perf_counter() - start
    results = run_evaluation(generator, plan, rows=rows, model_name=args.model, show_progress=not args.quiet)
    results["settings"]["model_load_seconds"] = load_seconds
    results["settings"]["command"] = " ".join(["attncredit", "eval", *args.argv])
    path = write_results(results, out)
    print(format_table(results))
    print(f"model load {load_seconds:.0f} s, evaluation {results['settings']['wall_seconds']:.0f} s; wrote {path}")
    generator.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
