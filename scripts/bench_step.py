"""End-to-end GRPO step time: TRL's GRPOTrainer vs AnchorGRPOTrainer (coupled credit), same seed and batch.

A random-init model of Qwen3-1.7B's shape (28 layers, 16 query / 8 KV heads, head_dim 128, hidden 2048,
vocab 151936) trains on random-word prompts with HF generate and fixed-length completions
(``min_new_tokens = max_completion_length``), so every run sees the same token counts. Two cases:

* ``old-logps``: ``steps_per_generation=2``, so TRL runs its no-grad old-log-prob forward and attncredit
  records the statistics there;
* ``loss``: ``steps_per_generation=1``, TRL runs no such forward and attncredit records in the loss forward.

Runs alternate (TRL, attncredit, TRL, attncredit, ...); the first ``--warmup`` steps of every run are
dropped; per phase the mean over the remaining steps of all rounds is reported (a mean, not a median: with
``steps_per_generation=2`` every other step generates, and the mean is the amortised cost):
``generate`` (TRL's ``_generate``), ``score`` (rest of ``_generate_and_score_completions``: rewards and the
old-log-prob forward), ``train`` (the rest of the step: loss forward, backward, optimizer) and ``step``.
The last lines are a table with the ratios attncredit / TRL.

    python scripts/bench_step.py [--tokens-prompt 256 --tokens-completion 256 --rounds 2 --steps 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import defaultdict

import torch


def word_tokenizer(vocab_size: int):
    """Word-level tokenizer over ``w0 .. w{V-1}`` so that every id the model can sample decodes."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|pad|>"]
    vocab = {tok: i for i, tok in enumerate(specials)}
    vocab.update({f"w{i}": i for i in range(len(specials), vocab_size)})
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<|endoftext|>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|pad|>")
    fast.padding_side = "left"
    return fast


def qwen3_model(vocab_size: int, seed: int, layers: int = 28, hidden: int = 2048):
    """Random-init Qwen3; the defaults are Qwen3-1.7B's shape."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(
        "qwen3",
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=3 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=16,
        num_key_value_heads=8,
        head_dim=128,
        max_position_embeddings=40960,
        tie_word_embeddings=True,
        eos_token_id=0,
        pad_token_id=1,
    )
    torch.manual_seed(seed)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16, attn_implementation="sdpa")
    return model


def length_reward(completions, **kwargs):
    """Deterministic reward with spread inside groups: share of even word ids in the completion."""
    out = []
    for c in completions:
        words = c.split()
        out.append(sum(int(w[1:]) % 2 == 0 for w in words if w[1:].isdigit()) / max(len(words), 1))
    return out


class PhaseTimer:
    """Synchronised wall-clock time of a trainer's optimizer steps and of some of its methods, one record per step.

    ``_step`` is the whole optimizer step: from the Trainer's ``on_step_begin`` event to the end of its
    ``on_step_end`` callbacks (this timer's callback is added last), i.e. rollout, loss forward and backward of
    every micro-batch, gradient clipping, optimizer step and the step-end callbacks; the logging that follows
    ``on_step_end`` is not in it. Each method named in ``methods`` is wrapped: CUDA is synchronised before and after
    the call, and its wall time is added to this step's total for that method (a call nested in another counts in
    both, e.g. ``_generate`` inside ``_generate_and_score_completions``; a method not called in a step totals 0).
    At each step's end ``phases(totals)`` turns the totals into the step's record, appended to ``steps``.
    """

    def __init__(self, trainer, methods, phases):
        self.steps: list[dict] = []
        self.current = defaultdict(float)
        self.start = 0.0
        sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
        for name in methods:
            original = getattr(trainer, name)

            def timed(*args, _original=original, _name=name, **kwargs):
                sync()
                start = time.perf_counter()
                out = _original(*args, **kwargs)
                sync()
                self.current[_name] += time.perf_counter() - start
                return out

            setattr(trainer, name, timed)

        from transformers import TrainerCallback

        timer = self

        class StepClock(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):
                sync()
                timer.current = defaultdict(float)
                timer.start = time.perf_counter()

            def on_step_end(self, args, state, control, **kwargs):
                sync()
                timer.current["_step"] = time.perf_counter() - timer.start
                timer.steps.append(phases(timer.current))

        trainer.add_callback(StepClock())


GRPO_METHODS = ("_generate", "_generate_and_score_completions")


def grpo_phases(totals) -> dict:
    """GRPO step phases from the totals: generate, score (the rest of the rollout), train (the rest), step."""
    generate = totals["_generate"]
    rollout = totals["_generate_and_score_completions"]
    step = totals["_step"]
    return {"generate": generate, "score": rollout - generate, "train": step - rollout, "step": step}


def run(kind: str, case: str, opts, tokenizer, dataset) -> list[dict]:
    from trl import GRPOConfig, GRPOTrainer

    from attncredit import AnchorGRPOConfig, AnchorGRPOTrainer

    config_cls, trainer_cls = (GRPOConfig, GRPOTrainer) if kind == "trl" else (AnchorGRPOConfig, AnchorGRPOTrainer)
    extra = {"credit_strategy": "coupled"} if kind == "attncredit" else {}
    args = config_cls(
        output_dir=f"/tmp/bench_step_{kind}_{case}",
        max_steps=opts.steps,
        per_device_train_batch_size=opts.batch,
        num_generations=opts.generations,
        steps_per_generation=2 if case == "old-logps" else 1,
        max_completion_length=opts.tokens_completion,
        generation_kwargs={"min_new_tokens": opts.tokens_completion},
        learning_rate=1e-6,
        beta=0.0,
        bf16=torch.cuda.is_available(),
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        seed=0,
        disable_tqdm=True,
        **extra,
    )
    trainer = trainer_cls(
        model=qwen3_model(len(tokenizer), seed=0, layers=opts.layers, hidden=opts.hidden),
        reward_funcs=length_reward,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    timer = PhaseTimer(trainer, GRPO_METHODS, grpo_phases)
    trainer.train()
    del trainer
    torch.cuda.empty_cache() if torch.cuda.is_available() else None
    return timer.steps[opts.warmup :]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens-prompt", type=int, default=256)
    parser.add_argument("--tokens-completion", type=int, default=256)
    parser.add_argument("--batch", type=int, default=16, help="completions per optimizer step")
    parser.add_argument("--generations", type=int, default=8)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--cases", default="old-logps,loss")
    parser.add_argument("--json", default=None, help="also write the raw step records here")
    parser.add_argument("--layers", type=int, default=28, help="model depth (Qwen3-1.7B: 28)")
    parser.add_argument("--hidden", type=int, default=2048, help="hidden size (Qwen3-1.7B: 2048)")
    parser.add_argument("--vocab", type=int, default=151936, help="vocabulary size (Qwen3: 151936)")
    opts = parser.parse_args()

    from datasets import Dataset

    vocab = opts.vocab
    tokenizer = word_tokenizer(vocab)
    g = torch.Generator().manual_seed(0)
    prompts = [
        " ".join(f"w{i}" for i in torch.randint(2, vocab, (opts.tokens_prompt,), generator=g).tolist())
        for _ in range(64)
    ]
    dataset = Dataset.from_list([{"prompt": p} for p in prompts])

    records = {}
    for case in opts.cases.split(","):
        for round_ in range(opts.rounds):
            for kind in ("trl", "attncredit"):
                steps = run(kind, case, opts, tokenizer, dataset)
                records.setdefault((case, kind), []).extend(steps)
                mean = statistics.fmean(s["step"] for s in steps)
                print(f"round {round_} {case:9s} {kind:10s} mean step {mean:.3f}s", flush=True)
    if opts.json:
        with open(opts.json, "w") as f:
            json.dump({f"{c}/{k}": v for (c, k), v in records.items()}, f, indent=1)

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    print(f"\nGRPO step, {opts.layers} layers x {opts.hidden} hidden (Qwen3-1.7B: 28 x 2048), {opts.batch} completions x ({opts.tokens_prompt} prompt + "
          f"{opts.tokens_completion} completion) tokens, {device}; mean seconds per step over "
          f"{opts.rounds} rounds x {opts.steps - opts.warmup} steps")
    print(f"{'case':10s} {'phase':9s} {'TRL':>8s} {'attncredit':>10s} {'ratio':>7s}")
    for case in opts.cases.split(","):
        for phase in ("generate", "score", "train", "step"):
            a = statistics.fmean(s[phase] for s in records[(case, "trl")])
            b = statistics.fmean(s[phase] for s in records[(case, "attncredit")])
            print(f"{case:10s} {phase:9s} {a:8.3f} {b:10.3f} {b / a if a > 0 else float('nan'):7.3f}")
        a = statistics.fmean(s["step"] - s["generate"] for s in records[(case, "trl")])
        b = statistics.fmean(s["step"] - s["generate"] for s in records[(case, "attncredit")])
        print(f"{case:10s} {'non-gen':9s} {a:8.3f} {b:10.3f} {b / a:7.3f}")


if __name__ == "__main__":
    main()
