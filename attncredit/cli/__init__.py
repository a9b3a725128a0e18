"""The ``attncredit`` console command: one entry point, one subcommand per job.

    attncredit --help
    attncredit env                 # versions, GPU, and which combinations are outside the tested stacks

Each subcommand lives in its own module of this package and exposes ``main(argv: list[str]) -> int``; the
module is imported only when its subcommand runs, so ``attncredit --help`` and ``attncredit env`` stay fast and
need neither TRL nor a GPU. A subcommand builds its own parser with ``prog="attncredit <name>"``, so
``attncredit <name> --help`` shows that command's own options.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module under attncredit.cli, one-line summary shown by ``attncredit --help``)
COMMANDS: dict[str, tuple[str, str]] = {
    "grpo": ("grpo", "train with GRPO and attention-aware credit (a YAML config and/or flags; default: CPU demo)"),
    "ppo": ("ppo", "train with PPO, a learned critic and attention-aware credit (default: CPU demo)"),
    "eval": ("eval", "evaluate a model on math and Countdown benchmarks: avg@k, pass@k, results.json"),
    "analyze": ("analyze", "see and measure a model's preplan-and-anchor rhythm: plots, token page, Table 2"),
    "compare": ("compare", "compare training runs: one plot per metric and a table of final and best values"),
    "exp": ("exp", "run arms x seeds of an experiment file resumably, collect finished runs, report with intervals"),
    "env": ("env", "print the installed versions and GPU, and flag combinations outside the tested stacks"),
}


def _parser() -> argparse.ArgumentParser:
    width = max(len(name) for name in COMMANDS)
    listing = "\n".join(f"  {name:<{width}}  {summary}" for name, (_, summary) in COMMANDS.items())
    return argparse.ArgumentParser(
        prog="attncredit",
        description="Attention-aware credit assignment for GRPO/PPO fine-tuning of LLM reasoning (arXiv 2510.13554).",
        epilog=f"commands:\n{listing}\n\n'attncredit <command> --help' shows a command's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="attncredit [--version] <command> [options]",
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = _parser()
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0 if argv else 2
    if argv[0] == "--version":
        from attncredit import __version__

        print(f"attncredit {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        import difflib

        close = difflib.get_close_matches(name, COMMANDS, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        print(f"attncredit: unknown command {name!r}{hint} (allowed: {', '.join(COMMANDS)})", file=sys.stderr)
        return 2
    module = importlib.import_module(f"attncredit.cli.{COMMANDS[name][0]}")
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
