"""GRPO with attention-aware credit assignment: ``attncredit grpo`` as a script, for ``accelerate launch``.

    accelerate launch recipes/grpo_anchor.py --config recipes/configs/X.yaml [--field value ...]
    python recipes/grpo_anchor.py                       # recipes/configs/default.yaml: SmolLM2, CPU, offline

The flow lives in the package (attncredit/recipe.py, attncredit/cli/grpo.py), so this file, ``attncredit grpo``
and ``accelerate launch -m attncredit grpo`` take the same flags and YAML configs (``--help`` lists them).
"""

from __future__ import annotations

import sys

from attncredit.recipe import DEFAULT_CONFIG, AnchorScriptArguments, load_data, parse_args, quiet_console, run  # noqa: F401


def main(argv: list[str] | None = None) -> int:
    from attncredit.cli.grpo import main as grpo_main

    return grpo_main(sys.argv[1:] if argv is None else argv, prog="grpo_anchor.py")


if __name__ == "__main__":
    raise SystemExit(main())
