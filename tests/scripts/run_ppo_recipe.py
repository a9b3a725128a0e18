"""Run recipes/ppo_anchor.py unchanged, with the ``digits`` reward for tiny random models (see run_recipe.py).

    python tests/scripts/run_ppo_recipe.py --config X.yaml [--field value ...]
"""

import importlib.util
import sys
from pathlib import Path

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "ppo_anchor.py"


def digits(completions, **kwargs):
    texts = [c[0]["content"] if isinstance(c, list) else c for c in completions]
    return [sum(ch.isdigit() for ch in t) / max(len(t), 1) for t in texts]


if __name__ == "__main__":
    import rewards

    rewards.REWARD_FUNCS["digits"] = digits
    spec = importlib.util.spec_from_file_location("ppo_anchor", RECIPE)
    recipe = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = recipe  # dataclasses resolve field types through the module
    spec.loader.exec_module(recipe)
    recipe.main(sys.argv[1:])
