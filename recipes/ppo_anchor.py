"""PPO with a learned critic, GAE and attention-aware credit: the attncredit PPO entry point.

    accelerate launch recipes/ppo_anchor.py --config recipes/configs/X.yaml [--field value ...]

The same data, reward and model arguments as recipes/grpo_anchor.py (``AnchorScriptArguments``, TRL's
``ModelConfig``), with ``attncredit.AnchorPPOConfig`` (AnchorGRPOConfig plus ``critic_*``, ``gae_*``, ``kl_coef``,
``cliprange_value``, ``vf_coef``, ``advantage_whitening``) for the training arguments. Without ``--config`` it runs
``recipes/configs/ppo_default.yaml``: the embedded SmolLM2-135M-Instruct on small Countdown problems, on a CPU,
offline. The final critic is saved to ``<output_dir>/critic`` (``critic_model_name_or_path`` reads it back).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the GRPO recipe's data and argument helpers
import grpo_anchor  # noqa: E402

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "ppo_default.yaml"


def parse_args(argv: list[str]):
    from attncredit import AnchorPPOConfig

    return grpo_anchor.parse_args(argv, AnchorPPOConfig, DEFAULT_CONFIG)


def main(argv: list[str] | None = None) -> None:
    grpo_anchor.quiet_console()
    from attncredit import AnchorPPOConfig, AnchorPPOTrainer

    grpo_anchor.run(sys.argv[1:] if argv is None else list(argv), AnchorPPOTrainer, AnchorPPOConfig, DEFAULT_CONFIG)


if __name__ == "__main__":
    main()
