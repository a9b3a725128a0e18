"""Kill a recipe run with SIGKILL after its step-2 checkpoint, resume it, and get the uninterrupted run's numbers.

Three runs of recipes/grpo_anchor.py (through tests/scripts/run_recipe.py, which adds a reward with spread on random
text) on a tiny model, same seed and config (4 steps, a checkpoint every 2):
A runs straight through; B is killed (SIGKILL, no clean-up) as soon as checkpoint-2 is complete; B is then resumed
with ``--resume_from_checkpoint last``. The resumed run must reproduce A exactly: the same losses and credit
summaries at steps 3-4 and the same final weights. That needs the dataloader order, the RNG state that generation
samples from, the optimizer and scheduler state and the credit strategy's own random numbers to be restored.
"""

import pytest

from tiny_training import assert_same_tensors, finish, kill_after_checkpoints, logged_steps, resume_recipe_config, start_recipe

pytestmark = pytest.mark.slow


def test_sigkill_and_resume_reproduces_the_uninterrupted_run(tiny_qwen2, tmp_path):
    # Coupled credit (deterministic given the statistics) and random credit (its own generator), all runs of both
    # at once: four processes share the 2 cores (one thread each), then the two resumed runs.
    runs = {}
    for strategy in ("coupled", "random"):
        for name in ("straight", "killed"):
            out = tmp_path / strategy / name
            config = resume_recipe_config(
                tmp_path / f"{strategy}-{name}.yaml", tiny_qwen2, out, credit_strategy=strategy, num_generations=4
            )
            runs[strategy, name] = (config, out, start_recipe("grpo", config))

    kill_after_checkpoints({s: (runs[s, "killed"][2], runs[s, "killed"][1] / "checkpoint-2") for s in ("coupled", "random")})
    for strategy in ("coupled", "random"):
        out = runs[strategy, "killed"][1]
        checkpoints = sorted(p.name for p in out.glob("checkpoint-*"))
        assert checkpoints == ["checkpoint-2"], (strategy, checkpoints)  # killed before step 4's checkpoint
        assert not (out / "model.safetensors").exists()
    resumed = {s: start_recipe("grpo", runs[s, "killed"][0], "--resume_from_checkpoint", "last") for s in ("coupled", "random")}
    for strategy in ("coupled", "random"):
        finish(runs[strategy, "straight"][2])
        finish(resumed[strategy])

    keys = ["loss", "grad_norm", "reward", "attncredit/gamma_mean", "attncredit/amplified_frac"]
    for strategy in ("coupled", "random"):
        straight, killed = runs[strategy, "straight"][1], runs[strategy, "killed"][1]
        a, b = logged_steps(straight), logged_steps(killed)
        assert sorted(a) == sorted(b) == [1, 2, 3, 4], strategy
        for step in (3, 4):
            assert {k: b[step].get(k) for k in keys} == {k: a[step].get(k) for k in keys}, (strategy, step)
        # gamma and gradients matter in these runs
        assert a[3]["attncredit/gamma_mean"] > 1.0 and all(a[s]["grad_norm"] > 0 for s in a), strategy
        assert_same_tensors(straight / "model.safetensors", killed / "model.safetensors")
