"""``attncredit ppo``: PPO with a learned critic, GAE and attention-aware credit (the recipe in attncredit.recipe).

    attncredit ppo [--config X.yaml] [--field value ...]
    accelerate launch -m attncredit ppo --config X.yaml [...]

The same data, reward and model arguments as ``attncredit grpo``, with ``attncredit.AnchorPPOConfig`` (critic_*,
gae_*, kl_coef, ...) for the training arguments. Without ``--config`` it trains on the packaged
recipes/configs/ppo_default.yaml. The final critic is saved to ``<output_dir>/critic``. ``recipes/ppo_anchor.py``
runs this same function.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None, prog: str = "attncredit ppo") -> int:
    from attncredit.recipe import PPO_DEFAULT_CONFIG, quiet_console, run

    quiet_console()
    from attncredit import AnchorPPOConfig, AnchorPPOTrainer

    run(sys.argv[1:] if argv is None else list(argv), AnchorPPOTrainer, AnchorPPOConfig, PPO_DEFAULT_CONFIG, prog)
    return 0
