"""credit_head_regroup_every: head groups recomputed on every k-th step, kept in between, and carried by checkpoints."""

import os

import pytest
import torch
from tiny_training import digit_reward, prompts, tiny_args

import attncredit.trainer as trainer_module
from attncredit import AnchorGRPOConfig, AnchorGRPOTrainer
from attncredit.errors import ConfigError
from attncredit.models import load_tokenizer


@pytest.fixture
def grouping_calls(monkeypatch):
    """Every group_token_stats call of the trainer: (global step, fixed heads given or None, groups returned)."""
    calls, real = [], trainer_module.group_token_stats

    def spy(*args, heads=None, **kwargs):
        groups = real(*args, heads=heads, **kwargs)
        calls.append((current["trainer"].state.global_step, heads, groups))
        return groups

    current = {}
    monkeypatch.setattr(trainer_module, "group_token_stats", spy)
    return calls, current


def make_trainer(model_dir, out, current, **overrides):
    args = AnchorGRPOConfig(**tiny_args(out, **{"credit_head_regroup_every": 2, "max_steps": 4, **overrides}))
    trainer = AnchorGRPOTrainer(
        model=str(model_dir), reward_funcs=digit_reward, args=args, train_dataset=prompts(),
        processing_class=load_tokenizer(str(model_dir)),
    )
    current["trainer"] = trainer
    return trainer


def test_groups_are_kept_between_regroup_steps_and_resume_with_the_checkpoint(tiny_qwen2, tmp_path, grouping_calls):
    calls, current = grouping_calls
    make_trainer(tiny_qwen2, tmp_path / "full", current, save_strategy="steps", save_steps=1).train()
    full = list(calls)
    assert [step for step, _, _ in full] == [0, 1, 2, 3]
    for step, heads, groups in full:
        if step % 2 == 0:  # regroup step: ranked from this forward's head distances
            assert heads is None and not groups.fixed and groups.head_distance is not None
        else:  # kept: the batch groups of the previous (regroup) step, for every sequence; band-only statistics
            assert groups.head_distance is None
            previous = full[step - 1][2].batch_masks()
            assert groups.fixed and all(torch.equal(h, p) for h, p in zip(heads, previous))
            assert torch.equal(groups.local_mask, previous[0].expand_as(groups.local_mask))

    checkpoint = tmp_path / "full" / "checkpoint-1"
    assert (checkpoint / trainer_module.HEAD_GROUPS_FILE).exists()
    calls.clear()
    make_trainer(tiny_qwen2, tmp_path / "full", current, save_strategy="steps", save_steps=1).train(
        resume_from_checkpoint=str(checkpoint)
    )
    resumed = list(calls)
    assert [step for step, _, _ in resumed] == [1, 2, 3]
    step, heads, _ = resumed[0]  # first forward after resume: the groups kept at step 0, read from the checkpoint
    assert heads is not None and all(torch.equal(h.cpu(), p.cpu()) for h, p in zip(heads, full[1][1]))
    for (_, _, a), (_, _, b) in zip(resumed, full[1:]):
        torch.testing.assert_close(a.waad, b.waad)
        torch.testing.assert_close(a.fai, b.fai)

    os.remove(checkpoint / trainer_module.HEAD_GROUPS_FILE)  # without the file the resumed run must regroup
    calls.clear()
    make_trainer(tiny_qwen2, tmp_path / "full", current, save_strategy="no").train(resume_from_checkpoint=str(checkpoint))
    assert calls[0][1] is None


def test_default_regroups_every_forward(tiny_qwen2, tmp_path, grouping_calls):
    calls, current = grouping_calls
    make_trainer(tiny_qwen2, tmp_path, current, credit_head_regroup_every=1, max_steps=2).train()
    assert [heads for _, heads, _ in calls] == [None, None]


def test_bad_regroup_interval_is_one_line(tmp_path):
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ConfigError, match=r"credit_head_regroup_every=.* is invalid; allowed: an integer >= 1"):
            AnchorGRPOConfig(**tiny_args(tmp_path, credit_head_regroup_every=bad))


def test_fixed_heads_average_the_given_groups_for_every_sequence():
    from attncredit.attention.groups import group_token_stats
    from attncredit.attention.types import AttentionStats

    g = torch.Generator().manual_seed(0)
    b, hq, n, layers = 3, 4, 9, (2, 5)
    stats = {
        layer: AttentionStats(
            waad=torch.rand(b, hq, n, generator=g), fai=torch.rand(b, hq, n, generator=g),
            head_distance=torch.rand(b, hq, generator=g),
        )
        for layer in layers
    }
    batch = group_token_stats(stats, quantile=0.25, per="batch")
    fixed = group_token_stats(stats, quantile=0.25, heads=batch.batch_masks())
    assert fixed.fixed and torch.equal(fixed.local_mask, batch.local_mask)
    torch.testing.assert_close(fixed.waad, batch.waad)
    torch.testing.assert_close(fixed.fai, batch.fai)
    local = torch.zeros(len(layers), hq, dtype=torch.bool)
    local[1, 3] = local[0, 0] = True  # any two heads: WAAD is their plain mean
    glob = torch.zeros_like(local)
    glob[0, 1] = glob[0, 2] = True
    chosen = group_token_stats(stats, quantile=0.25, heads=(local, glob))
    torch.testing.assert_close(chosen.waad, (stats[2].waad[:, 0] + stats[5].waad[:, 3]) / 2)
    torch.testing.assert_close(chosen.fai, (stats[2].fai[:, 1] + stats[2].fai[:, 2]) / 2)
    assert chosen.batch_groups() == {"local": [[2, 0], [5, 3]], "global": [[2, 1], [2, 2]]}
    with pytest.raises(ValueError, match="fixed head groups must be two bool"):
        group_token_stats(stats, heads=(local, glob[:, :2]))
