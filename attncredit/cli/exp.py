"""``attncredit exp``: arms x seeds over a recipe config (attncredit.experiments).

    attncredit exp run EXPERIMENT.yaml [--parallel N] [--only arm=none,coupled,seed=0,1]
    attncredit exp collect EXPERIMENT.yaml [--to DIR]     # small files of finished runs -> DIR (docs/study/<name>)
    attncredit exp report EXPERIMENT.yaml|RESULTS_DIR     # report.md and curves.png in the run root or DIR

``run`` skips finished runs and resumes the others from their newest checkpoint, so running it again after a kill
loses at most ``save_steps`` steps per run. Bad input: one ``error:`` line, exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="arms x seeds over a recipe config: run resumably, collect, report",
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train every arm x seed not finished yet (resuming unfinished ones)")
    run.add_argument("experiment", help="experiment file (YAML)")
    run.add_argument("--parallel", type=int, default=1, help="runs at a time (default: %(default)s)")
    run.add_argument("--only", default=None,
                     help="a subset, e.g. arm=none,coupled or seed=0,1 or arm=none,seed=3 (arms x seeds); selections "
                     "joined by ';' add up: 'arm=entropy,seed=0;arm=none,coupled,seed=1'")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    collect = sub.add_parser("collect", help="copy finished runs' metrics.jsonl and settings to a results folder")
    collect.add_argument("experiment", help="experiment file (YAML)")
    collect.add_argument("--to", default=None, help="results folder (default: docs/study/<experiment name>)")
    report = sub.add_parser("report", help="per-arm means, intervals, paired differences, curves, step times")
    report.add_argument("source", help="experiment file (its output_root) or a folder of runs (e.g. from collect)")
    return parser


def main(argv: list[str] | None = None) -> int:
    from attncredit.errors import ConfigError
    from attncredit.experiments import collect, load_experiment, parse_only, run_experiment, write_report

    args = _parser("attncredit exp").parse_args(sys.argv[1:] if argv is None else list(argv))
    try:
        if args.command == "report":
            if Path(args.source).is_dir():
                text = write_report(args.source)
            else:
                experiment = load_experiment(args.source, check_fields=False)
                text = write_report(experiment.output_root, primary=experiment.primary_metric,
                                    baseline=experiment.baseline, max_steps=experiment.max_steps,
                                    train_metric=experiment.train_metric, comparisons=experiment.comparisons)
            print(text, end="")
            return 0
        experiment = load_experiment(args.experiment, check_fields=args.command == "run")
        if args.command == "collect":
            destination = args.to or str(Path("docs") / "study" / experiment.name)
            copied = collect(experiment, destination)
            print(f"{len(copied)} finished runs copied to {destination}: {', '.join(copied) or 'none'}")
            return 0
        if isinstance(args.parallel, bool) or args.parallel < 1:
            raise ConfigError(f"--parallel must be an integer >= 1, got {args.parallel}")
        runs = parse_only(args.only, experiment) if args.only else None
        if runs == []:
            raise ConfigError(f"--only {args.only!r} selects no run of {experiment.name}")
        return run_experiment(experiment, runs, parallel=args.parallel, progress=not args.quiet)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
