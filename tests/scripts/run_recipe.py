"""Run `attncredit grpo` or `attncredit ppo` (attncredit.cli) unchanged, with one extra reward name for tiny random models.

    python tests/scripts/run_recipe.py [--trainer grpo|ppo] --config X.yaml [--field value ...]

``digits`` (the share of digits in a completion) gives reward spread inside every group even for a random model,
so advantages, gradients and the credit strategy's choices all matter; the packaged rewards score random text 0.
"""

import argparse
import importlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for the shared digits reward
from tiny_training import digit_reward  # noqa: E402

if __name__ == "__main__":
    import rewards

    parser = argparse.ArgumentParser(allow_abbrev=False, add_help=False)
    parser.add_argument("--trainer", choices=("grpo", "ppo"), default="grpo")
    known, recipe_argv = parser.parse_known_args(sys.argv[1:])
    rewards.REWARD_FUNCS["digits"] = digit_reward
    command = importlib.import_module(f"attncredit.cli.{known.trainer}")
    raise SystemExit(command.main(recipe_argv))
