"""``attncredit grpo``: GRPO with attention-aware credit (the recipe in attncredit.recipe).

    attncredit grpo [--config X.yaml] [--field value ...]
    accelerate launch -m attncredit grpo --config X.yaml [...]

Without ``--config`` it trains on the packaged default config (recipes/configs/default.yaml): the embedded
SmolLM2-135M-Instruct, on a CPU, offline. ``recipes/grpo_anchor.py`` runs this same function.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None, prog: str = "attncredit grpo") -> int:
    from attncredit.recipe import DEFAULT_CONFIG, quiet_console, run

    quiet_console()
    from attncredit import AnchorGRPOConfig, AnchorGRPOTrainer

    run(sys.argv[1:] if argv is None else list(argv), AnchorGRPOTrainer, AnchorGRPOConfig, DEFAULT_CONFIG, prog)
    return 0
