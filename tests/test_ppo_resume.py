"""Kill a PPO recipe run with SIGKILL after its step-2 checkpoint, resume it, and get the uninterrupted run's numbers,
critic included (its weights, AdamW state and scheduler are in checkpoint-N/critic/)."""

import json

import pytest
from safetensors.torch import load_file

from tiny_training import assert_same_tensors, finish, kill_after_checkpoints, logged_steps, resume_recipe_config, start_recipe

pytestmark = pytest.mark.slow


def test_sigkill_and_resume_restores_the_critic_and_reproduces_the_run(tiny_qwen2, tmp_path):
    runs = {}
    for name in ("straight", "killed"):
        out = tmp_path / name
        config = resume_recipe_config(
            tmp_path / f"{name}.yaml", tiny_qwen2, out, credit_strategy="coupled", num_generations=2,
            critic_learning_rate=1.0e-3,
        )  # fmt: skip
        runs[name] = (config, out, start_recipe("ppo", config))
    kill_after_checkpoints({"killed": (runs["killed"][2], runs["killed"][1] / "checkpoint-2")})
    killed_out = runs["killed"][1]
    assert sorted(p.name for p in killed_out.glob("checkpoint-*")) == ["checkpoint-2"]
    assert sorted(p.name for p in (killed_out / "checkpoint-2" / "critic").iterdir()) == [
        "config.json", "critic_optimizer.pt", "model.safetensors", "value_head.safetensors"
    ]  # fmt: skip
    resumed = start_recipe("ppo", runs["killed"][0], "--resume_from_checkpoint", "last")
    finish(runs["straight"][2])
    finish(resumed)

    keys = ["loss", "grad_norm", "reward", "critic/value_loss", "critic/explained_variance", "critic/vpred_mean",
            "critic/grad_norm", "ppo/advantages_std", "attncredit/gamma_mean"]  # fmt: skip
    a, b = logged_steps(runs["straight"][1]), logged_steps(killed_out)
    assert sorted(a) == sorted(b) == [1, 2, 3, 4]
    for step in (3, 4):
        assert {k: b[step].get(k) for k in keys} == {k: a[step].get(k) for k in keys}, step
    assert all(a[s]["critic/grad_norm"] > 0 and a[s]["grad_norm"] > 0 for s in a)
    for folder in ("", "critic"):
        for name in ("model.safetensors",) + (("value_head.safetensors",) if folder else ()):
            assert_same_tensors(runs["straight"][1] / folder / name, killed_out / folder / name)
    # the critic moved: its head is no longer the zero initialisation
    assert load_file(killed_out / "critic" / "value_head.safetensors")["weight"].abs().sum() > 0
    record = json.loads((killed_out / "checkpoint-2" / "trainer_state.json").read_text())
    assert record["global_step"] == 2
