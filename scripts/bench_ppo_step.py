"""End-to-end PPO step time: AnchorPPOTrainer with coupled credit vs without (``credit_strategy="none"``).

The model, prompts and reward of scripts/bench_step.py (random-init Qwen3-1.7B shape by default, HF generate,
fixed-length completions); the critic is a copy of the policy's backbone with a value head. Phases per optimizer
step (mean over the steps after ``--warmup``, all rounds): ``generate`` (TRL's ``_generate``), ``critic`` (the
critic's no-grad value forward on the rollout plus its value-loss forward, backward and optimizer step), ``score``
(rest of ``_generate_and_score_completions``: rewards, GAE, TRL's old-log-prob forward where it runs one),
``train`` (the rest: policy loss forward, backward, optimizer) and ``step``. Runs alternate none, coupled, none, ...

    python scripts/bench_ppo_step.py [--tokens-prompt 128 --tokens-completion 128 --rounds 1 --steps 4]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_step import (  # noqa: E402
    PhaseTimer,
    add_run_flags,
    check_run_flags,
    free_memory,
    length_reward,
    model_shape,
    prompt_dataset,
    qwen3_model,
    word_tokenizer,
)

PHASES = ("generate", "critic", "score", "train", "step")


PPO_METHODS = ("_generate", "_generate_and_score_completions", "_critic_values", "_critic_step")


def ppo_phases(totals) -> dict:
    """PPO step phases from the totals: generate, critic (value forward on the rollout + critic update), score (the
    rest of the rollout), train (the rest of the step), step."""
    rollout = totals["_generate_and_score_completions"]
    return {
        "generate": totals["_generate"],
        "critic": totals["_critic_values"] + totals["_critic_step"],
        "score": rollout - totals["_generate"] - totals["_critic_values"],
        "train": totals["_step"] - rollout - totals["_critic_step"],
        "step": totals["_step"],
    }


def run(strategy: str, opts, tokenizer, dataset, output_dir: str) -> list[dict]:
    """Train ``opts.steps`` steps of AnchorPPOTrainer with ``credit_strategy=strategy``; the timed step records."""
    from attncredit import AnchorPPOConfig, AnchorPPOTrainer
    from attncredit.ppo import ValueModel

    args = AnchorPPOConfig(
        output_dir=output_dir,
        max_steps=opts.steps,
        per_device_train_batch_size=opts.batch,
        num_generations=opts.generations,
        max_completion_length=opts.tokens_completion,
        generation_kwargs={"min_new_tokens": opts.tokens_completion},
        learning_rate=1e-6,
        critic_learning_rate=1e-5,
        beta=0.0,
        bf16=torch.cuda.is_available(),
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        seed=0,
        disable_tqdm=True,
        credit_strategy=strategy,
    )
    model = qwen3_model(len(tokenizer), seed=0, **model_shape(opts))
    trainer = AnchorPPOTrainer(
        model=model,
        reward_funcs=length_reward,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        critic=ValueModel.from_causal_lm(model),
    )
    timer = PhaseTimer(trainer, PPO_METHODS, ppo_phases)
    trainer.train()
    del trainer, model
    free_memory()
    return timer.steps[opts.warmup :]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_flags(parser, tokens_prompt=128, tokens_completion=128, generations=4, steps=4, warmup=1, rounds=1)
    opts = parser.parse_args()
    check_run_flags(parser, opts)

    tokenizer = word_tokenizer(opts.vocab)
    dataset = prompt_dataset(opts.vocab, opts.tokens_prompt)

    records = defaultdict(list)
    with tempfile.TemporaryDirectory(prefix="bench_ppo_") as tmp:
        for round_ in range(opts.rounds):
            for strategy in ("none", "coupled"):
                steps = run(strategy, opts, tokenizer, dataset, f"{tmp}/{strategy}_{round_}")
                records[strategy].extend(steps)
                mean = statistics.fmean(s["step"] for s in steps)
                print(f"round {round_} {strategy:8s} mean step {mean:.3f}s", flush=True)
    if opts.json:
        with open(opts.json, "w") as f:
            json.dump(records, f, indent=1)

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    print(f"\nPPO step, {opts.layers} layers x {opts.hidden} hidden, policy + critic of that shape, {opts.batch} "
          f"completions x ({opts.tokens_prompt} prompt + {opts.tokens_completion} completion) tokens, {device}; "
          f"mean seconds per step over {opts.rounds} rounds x {opts.steps - opts.warmup} steps")
    print(f"{'phase':9s} {'none':>8s} {'coupled':>8s} {'ratio':>7s}")
    for phase in PHASES:
        a = statistics.fmean(s[phase] for s in records["none"])
        b = statistics.fmean(s[phase] for s in records["coupled"])
        print(f"{phase:9s} {a:8.3f} {b:8.3f} {b / a if a else float('nan'):7.3f}")


if __name__ == "__main__":
    main()
