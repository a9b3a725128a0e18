"""Compare training runs: one PNG per metric (runs overlaid) and a markdown table of final and best values.

    attncredit compare runs/countdown-none runs/countdown-coupled --out runs/compare
    attncredit compare runs/qwen3-4b-dapo-1k-* --out runs/compare-1k --ema 0.1

Each RUN_DIR is a training output_dir holding the metrics.jsonl that AnchorGRPOTrainer writes (or that file).
Plotted when logged: train reward and per-reward means, eval reward and per-reward means (eval_*), response
length, truncated fraction, and the attncredit/* statistics. With --ema ALPHA the reward and accuracy curves are
the paper's EMA of the running peak, EMA_t = ALPHA * max(x_t, EMA_{t-1}) + (1 - ALPHA) * EMA_{t-1} (the paper's curves),
the other metrics a plain EMA, over faint raw values. Writes <out>/<metric>.png and <out>/comparison.md. Bad input ends with "error: <message>", exit code 2.
"""

from __future__ import annotations

import argparse
import sys


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2)


def main(argv: list[str] | None = None) -> int:
    p = _Parser(prog="attncredit compare", description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="training output folders with metrics.jsonl")
    p.add_argument("--out", required=True, help="folder for the PNG plots and comparison.md")
    p.add_argument("--ema", type=float, default=None, metavar="ALPHA",
                   help="plot the EMA of the running peak with this alpha in (0, 1] (paper's curves)")
    args = p.parse_args(argv)

    from attncredit.errors import ConfigError, first_line
    from attncredit.analysis.runs import compare_runs

    try:
        result = compare_runs(args.runs, args.out, ema=args.ema)
    except ConfigError as e:
        print(f"error: {first_line(e)}", file=sys.stderr)
        return 2
    for run in result["runs"]:
        note = f", {run.skipped_lines} unreadable lines skipped" if run.skipped_lines else ""
        print(f"{run.name}: {run.path} (last step {run.last_step}{note})")
    print(f"wrote {len(result['plots'])} plots and {result['table']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
