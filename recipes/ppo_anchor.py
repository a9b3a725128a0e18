"""PPO with a learned critic, GAE and attention-aware credit: ``attncredit ppo`` as a script, for ``accelerate launch``.

    accelerate launch recipes/ppo_anchor.py --config recipes/configs/X.yaml [--field value ...]
    python recipes/ppo_anchor.py                        # recipes/configs/ppo_default.yaml: SmolLM2, CPU, offline

The flow lives in the package (attncredit/recipe.py, attncredit/cli/ppo.py), so this file, ``attncredit ppo``
and ``accelerate launch -m attncredit ppo`` take the same flags and YAML configs (``--help`` lists them).
"""

from __future__ import annotations

import sys

from attncredit.recipe import PPO_DEFAULT_CONFIG as DEFAULT_CONFIG
from attncredit.recipe import parse_args as _parse_args


def parse_args(argv: list[str]):
    from attncredit import AnchorPPOConfig

    return _parse_args(argv, AnchorPPOConfig, DEFAULT_CONFIG)


def main(argv: list[str] | None = None) -> int:
    from attncredit.cli.ppo import main as ppo_main

    return ppo_main(sys.argv[1:] if argv is None else argv, prog="ppo_anchor.py")


if __name__ == "__main__":
    raise SystemExit(main())
