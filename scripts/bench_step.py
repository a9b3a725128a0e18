"""End-to-end GRPO step time: TRL's GRPOTrainer vs AnchorGRPOTrainer (coupled credit), same seed and batch.

A random-init model of Qwen3-1.7B's shape (28 layers, 16 query / 8 KV heads, head_dim 128, hidden 2048,
vocab 151936; the shape flags and ``--preset smollm2`` set others) trains on random-word prompts with HF generate
and fixed-length completions (``min_new_tokens = max_completion_length``), so every run sees the same token counts.
Generation is TRL's own: ``generate`` with the default dynamic KV cache, the fastest TRL's trainer offers without
vLLM (it disables compilation; docs/benchmarks.md, generation speed). Two cases:

* ``old-logps``: ``steps_per_generation=2``, so TRL runs its no-grad old-log-prob forward and attncredit
  records the statistics there (it generates on every other step: the timed steps must be an even number);
* ``loss``: ``steps_per_generation=1``, TRL runs no such forward and attncredit records in the loss forward.

Runs alternate (TRL, attncredit, TRL, attncredit, ...), each with a fresh model of the same initialisation; the
first ``--warmup`` steps of every run are dropped. ``--warmup-run-tokens T`` first trains one untimed step per
case and trainer with T-token completions, so that the process's one-time costs (CUDA and library start-up,
Triton compilation of the statistics kernels) are paid before the timed runs, which can then time every step
(``--warmup 0``) of long completions (Triton compiles a kernel again for a length that differs in divisibility
by 16, so T and ``--tokens-completion`` should both be multiples of 16, or both not). Per phase the mean over the timed steps of all rounds is reported (a mean,
not a median: with ``steps_per_generation=2`` every other step generates, and the mean is the amortised cost):
``generate`` (TRL's ``_generate``), ``score`` (rest of ``_generate_and_score_completions``: rewards and the
old-log-prob forward), ``train`` (the rest of the step: loss forward, backward, gradient clipping, optimizer),
``step`` (the whole optimizer step) and ``non-gen`` (step - generate: the sharper figure, since the run-to-run
noise of generation can hide a 1% difference). ``--regroup-every K`` sets attncredit's
``credit_head_regroup_every``: the head groups are recomputed in the steps whose 0-based global step is a multiple
of K (always the first step of a run, so a run needs more than K steps to time steps without regrouping). The last
lines are a table with the ratios attncredit / TRL.

    python scripts/bench_step.py [--tokens-prompt 384 --tokens-completion 128 --steps 7 --warmup 1 --rounds 2]
    python scripts/bench_step.py --preset long  # 256 + 4096 tokens, case loss: about 5-6 minutes on one H200
    python scripts/bench_step.py --preset long --tokens-completion 2048 --rounds 2  # about 5-6.5 minutes
    python scripts/bench_step.py --preset long --no-cudnn-attention --warmup-full  # about 7 minutes
    python scripts/bench_step.py --preset smollm2  # the learning study's shape (SmolLM2-135M) and batch

In one process, the first long rollout is slower than the next (measured on the H200 at 4096 tokens: 2.4x with
cuDNN attention, which plans each new key length once per process; 1.19x without it), so a whole-step ratio needs
``--warmup-full`` (one untimed full-length TRL step first); the ``non-gen`` ratio does not.

``--preset long`` (8 completions x (256 prompt + 4096 completion) tokens, one timed step per trainer after a
64-token warm-up run, one round, case ``loss``) is sized for about 5-6 minutes on one H200 (an estimate from
docs/benchmarks.md, where HF generate took 27-38 ms per generated token for this shape, about the same at 16 and
at 32 completions: a 4096-token rollout takes 1.8-2.6 minutes, two of them plus about a minute of start-up,
warm-up runs and training steps); explicit flags override its values.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import tempfile
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


def qwen3_model(vocab_size: int, seed: int, layers: int = 28, hidden: int = 2048, heads: int = 16, kv_heads: int = 8,
                head_dim: int = 128, intermediate: int | None = None):
    """Random-init Qwen3; the defaults are Qwen3-1.7B's shape (``intermediate`` None: 3 x hidden)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(
        "qwen3",
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=intermediate or 3 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=head_dim,
        max_position_embeddings=40960,
        tie_word_embeddings=True,
        eos_token_id=0,
        pad_token_id=1,
    )
    torch.manual_seed(seed)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16, attn_implementation="sdpa")
    return model


def model_shape(opts: argparse.Namespace) -> dict:
    """``qwen3_model``'s shape keywords from the shared flags."""
    return dict(layers=opts.layers, hidden=opts.hidden, heads=opts.heads, kv_heads=opts.kv_heads,
                head_dim=opts.head_dim, intermediate=opts.intermediate)


def prompt_dataset(vocab_size: int, tokens: int, n: int = 64):
    """``n`` prompts of ``tokens`` random words (ids 2 .. vocab_size-1, seed 0) as a ``datasets.Dataset``."""
    from datasets import Dataset

    g = torch.Generator().manual_seed(0)
    words = torch.randint(2, vocab_size, (n, tokens), generator=g).tolist()
    return Dataset.from_list([{"prompt": " ".join(f"w{i}" for i in row)} for row in words])


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


def free_memory() -> None:
    """Free the last run's trainer (model, optimizer, caches) once its caller dropped it, before the next run: a
    trainer sits in reference cycles (the timer's method wrappers, callbacks holding it) that only ``gc`` frees."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


#: steps_per_generation of each case
CASES = {"old-logps": 2, "loss": 1}

PRESETS = {
    "long": {
        "tokens_prompt": 256,
        "tokens_completion": 4096,
        "batch": 8,
        "generations": 8,
        "steps": 1,
        "warmup": 0,
        "rounds": 1,
        "cases": ["loss"],
        "warmup_run_tokens": 64,
    },
    # the learning study's shape and batch (SmolLM2-135M: 30 layers, hidden 576, 9 query / 3 KV heads of 64;
    # 8 prompts x 8 completions of about 50-65 tokens), statistics in the loss forward as in the study
    "smollm2": {
        "tokens_prompt": 64,
        "tokens_completion": 64,
        "batch": 64,
        "generations": 8,
        "steps": 12,
        "warmup": 2,
        "rounds": 2,
        "cases": ["loss"],
        "layers": 30,
        "hidden": 576,
        "intermediate": 1536,
        "heads": 9,
        "kv_heads": 3,
        "head_dim": 64,
        "vocab": 49152,
    },
}


def run(kind: str, case: str, opts, tokenizer, dataset, output_dir: str, completion: int, steps: int) -> list[dict]:
    """Train ``steps`` steps of one trainer (``"trl"`` or ``"attncredit"``) on ``case``; the per-step records."""
    from trl import GRPOConfig, GRPOTrainer

    from attncredit import AnchorGRPOConfig, AnchorGRPOTrainer

    if kind == "trl":
        config_cls, trainer_cls, extra = GRPOConfig, GRPOTrainer, {}
    else:
        config_cls, trainer_cls = AnchorGRPOConfig, AnchorGRPOTrainer
        extra = {
            "credit_strategy": "coupled",
            "credit_head_regroup_every": opts.regroup_every,
            "credit_log_every": opts.credit_log_every,
        }
    args = config_cls(
        output_dir=output_dir,
        max_steps=steps,
        per_device_train_batch_size=opts.batch,
        num_generations=opts.generations,
        steps_per_generation=CASES[case],
        max_completion_length=completion,
        generation_kwargs={"min_new_tokens": completion},
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
        model=qwen3_model(len(tokenizer), seed=0, **model_shape(opts)),
        reward_funcs=length_reward,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    timer = PhaseTimer(trainer, GRPO_METHODS, grpo_phases)
    trainer.train()
    del trainer
    free_memory()
    return timer.steps


def int_at_least(low: int):
    """argparse type: an integer >= ``low``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is below {low}")
        return value

    return parse


def case_list(text: str) -> list[str]:
    """argparse type: comma-separated cases, each once."""
    cases = [c.strip() for c in text.split(",")]
    for c in cases:
        if c not in CASES:
            raise argparse.ArgumentTypeError(f"unknown case {c!r} (allowed: {', '.join(CASES)})")
    if len(set(cases)) != len(cases):
        raise argparse.ArgumentTypeError(f"a case is named twice in {text!r}")
    return cases


def add_run_flags(parser: argparse.ArgumentParser, **defaults) -> None:
    """The flags every step benchmark shares (token counts, batch, steps, rounds, model shape, JSON output);
    ``defaults`` gives each script's own defaults for ``tokens_prompt``, ``tokens_completion``, ``generations``,
    ``steps``, ``warmup`` and ``rounds``."""
    parser.add_argument("--tokens-prompt", type=int_at_least(1), default=defaults["tokens_prompt"])
    parser.add_argument("--tokens-completion", type=int_at_least(1), default=defaults["tokens_completion"])
    parser.add_argument("--batch", type=int_at_least(2), default=16, help="completions per optimizer step")
    parser.add_argument("--generations", type=int_at_least(2), default=defaults["generations"],
                        help="completions per prompt")  # fmt: skip
    parser.add_argument("--steps", type=int_at_least(1), default=defaults["steps"], help="optimizer steps per run")
    parser.add_argument("--warmup", type=int_at_least(0), default=defaults["warmup"],
                        help="untimed first steps of every run")  # fmt: skip
    parser.add_argument("--rounds", type=int_at_least(1), default=defaults["rounds"])
    parser.add_argument("--json", default=None, help="also write the raw step records here")
    parser.add_argument("--layers", type=int_at_least(1), default=28, help="model depth (Qwen3-1.7B: 28)")
    parser.add_argument("--hidden", type=int_at_least(1), default=2048, help="hidden size (Qwen3-1.7B: 2048)")
    parser.add_argument("--vocab", type=int_at_least(3), default=151936, help="vocabulary size (Qwen3: 151936)")
    parser.add_argument("--heads", type=int_at_least(1), default=16, help="query heads (Qwen3-1.7B: 16)")
    parser.add_argument("--kv-heads", type=int_at_least(1), default=8, help="key/value heads (Qwen3-1.7B: 8)")
    parser.add_argument("--head-dim", type=int_at_least(1), default=128, help="head size (Qwen3-1.7B: 128)")
    parser.add_argument("--intermediate", type=int_at_least(1), default=None,
                        help="MLP size (default: 3 x hidden, Qwen3-1.7B's 6144)")  # fmt: skip


def check_run_flags(parser: argparse.ArgumentParser, opts: argparse.Namespace) -> None:
    """One-line errors for the shared flags: a timed step must remain, and the batch must hold whole groups."""
    if opts.warmup >= opts.steps:
        parser.error(f"--warmup {opts.warmup} leaves no timed step of --steps {opts.steps}: it must be below it")
    if opts.heads % opts.kv_heads:
        parser.error(f"--heads {opts.heads} must be a multiple of --kv-heads {opts.kv_heads} (grouped-query attention)")
    if opts.batch % opts.generations:
        parser.error(f"--batch {opts.batch} must be a multiple of --generations {opts.generations} (whole groups)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; ``--preset`` sets the defaults of the flags it names, explicit flags override them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS),
                        help="long: 256 + 4096 tokens, 1 timed step, case loss; smollm2: the learning study's model "
                        "shape and batch")  # fmt: skip
    add_run_flags(parser, tokens_prompt=256, tokens_completion=256, generations=8, steps=6, warmup=2, rounds=2)
    parser.add_argument(
        "--warmup-run-tokens", type=int_at_least(0), default=0,
        help="before the timed runs, one untimed step per case and trainer with this many completion tokens (0: none)",
    )  # fmt: skip
    parser.add_argument(
        "--warmup-full", action="store_true",
        help="before the timed runs, one untimed TRL step per case at the full completion length: the process-wide "
        "caches that the first long rollout fills (cuDNN plans for every key length, the allocator) then favour "
        "neither timed run",
    )  # fmt: skip
    parser.add_argument("--cases", type=case_list, default=list(CASES), help=f"comma-separated: {', '.join(CASES)}")
    parser.add_argument(
        "--regroup-every", type=int_at_least(1), default=1,
        help="attncredit's credit_head_regroup_every: recompute the head groups on steps 0, K, 2K, ... of a run",
    )  # fmt: skip
    parser.add_argument(
        "--credit-log-every", type=int_at_least(0), default=0,
        help="attncredit's credit_log_every (default 0 here: a token view is drawn once per N steps, at step 0 too, "
        "and its plotting would land in the one timed step of a short run)",
    )  # fmt: skip
    parser.add_argument(
        "--no-cudnn-attention", action="store_true",
        help="switch SDPA's cuDNN kernel off for both trainers (torch.backends.cuda.enable_cudnn_sdp(False)): cuDNN "
        "plans each new key length once per process, which the first long generation pays token by token",
    )  # fmt: skip
    preset = parser.parse_known_args(argv)[0].preset
    if preset:
        parser.set_defaults(**PRESETS[preset])
    opts = parser.parse_args(argv)
    check_run_flags(parser, opts)
    if "old-logps" in opts.cases and (opts.steps - opts.warmup) % 2:
        parser.error(
            f"case old-logps generates on every other step: --steps {opts.steps} minus --warmup {opts.warmup} "
            f"must be even so that the timed steps amortise generation and the old-log-prob forward"
        )
    return opts


def main() -> None:
    opts = parse_args()
    if opts.no_cudnn_attention:
        torch.backends.cuda.enable_cudnn_sdp(False)
    tokenizer = word_tokenizer(opts.vocab)
    dataset = prompt_dataset(opts.vocab, opts.tokens_prompt)

    records = {}
    with tempfile.TemporaryDirectory(prefix="bench_step_") as tmp:
        if opts.warmup_run_tokens:
            for case in opts.cases:
                for kind in ("trl", "attncredit"):
                    start = time.perf_counter()
                    run(kind, case, opts, tokenizer, dataset, f"{tmp}/warmup_{kind}_{case}", opts.warmup_run_tokens, 1)
                    print(f"warm-up {case:9s} {kind:10s} {opts.warmup_run_tokens} tokens, "
                          f"{time.perf_counter() - start:.1f}s", flush=True)  # fmt: skip
        if opts.warmup_full:
            for case in opts.cases:
                start = time.perf_counter()
                run("trl", case, opts, tokenizer, dataset, f"{tmp}/warmup_full_{case}", opts.tokens_completion, 1)
                print(f"full-length warm-up {case:9s} trl {opts.tokens_completion} tokens, "
                      f"{time.perf_counter() - start:.1f}s", flush=True)  # fmt: skip
        for case in opts.cases:
            for round_ in range(opts.rounds):
                for kind in ("trl", "attncredit"):
                    output_dir = f"{tmp}/{kind}_{case}_{round_}"
                    steps = run(kind, case, opts, tokenizer, dataset, output_dir, opts.tokens_completion, opts.steps)
                    steps = steps[opts.warmup :]
                    records.setdefault((case, kind), []).extend(steps)
                    mean = statistics.fmean(s["step"] for s in steps)
                    print(f"round {round_} {case:9s} {kind:10s} mean step {mean:.3f}s", flush=True)
    if opts.json:
        with open(opts.json, "w") as f:
            json.dump({f"{c}/{k}": v for (c, k), v in records.items()}, f, indent=1)

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    print(
        f"\nGRPO step, {opts.layers} layers x {opts.hidden} hidden, {opts.heads}/{opts.kv_heads} heads of "
        f"{opts.head_dim} (Qwen3-1.7B: 28 x 2048, 16/8 of 128), {opts.batch} completions x "
        f"({opts.tokens_prompt} prompt + {opts.tokens_completion} completion) tokens, {device}; attncredit: coupled "
        f"credit, head groups every {opts.regroup_every} step(s); mean seconds per step over {opts.rounds} rounds x "
        f"{opts.steps - opts.warmup} steps"
    )
    print(f"{'case':10s} {'phase':9s} {'TRL':>8s} {'attncredit':>10s} {'ratio':>7s}")
    for case in opts.cases:
        for phase in ("generate", "score", "train", "step"):
            a = statistics.fmean(s[phase] for s in records[(case, "trl")])
            b = statistics.fmean(s[phase] for s in records[(case, "attncredit")])
            print(f"{case:10s} {phase:9s} {a:8.3f} {b:10.3f} {b / a if a > 0 else float('nan'):7.3f}")
        a = statistics.fmean(s["step"] - s["generate"] for s in records[(case, "trl")])
        b = statistics.fmean(s["step"] - s["generate"] for s in records[(case, "attncredit")])
        print(f"{case:10s} {'non-gen':9s} {a:8.3f} {b:10.3f} {b / a:7.3f}")


if __name__ == "__main__":
    main()
