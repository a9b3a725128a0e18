"""The learning study: does attention credit change what SmolLM2-135M-Instruct learns? (docs/experiments.md)

The task is generated offline: word-free integer arithmetic prompts ("What is 47 + 38 - 19? ..."), scored 1 when
the last integer of the answer is the result, else 0. The held-out test set is drawn from its own seed and
excluded from the training stream. Sampling temperature 0.6 (train and eval): at 1.0 the untrained 135M model
answers under 10% of even the easiest level (docs/experiments.md), too few for GRPO groups to have reward spread.
Plain GRPO (``none``), the paper's coupled credit (``coupled``) and its
random control (``random``) train with the same seed, data order, budget and hyper-parameters; only
``credit_strategy`` differs.

    python scripts/study_learning.py start --levels 1,2,3,4                # untrained held-out avg@k per level
    python scripts/study_learning.py train --arm none --seed 0 --out runs/study/none-s0
    python scripts/study_learning.py train --arm coupled --seed 0 --out runs/study/coupled-s0
    python scripts/study_learning.py train --arm random --seed 0 --out runs/study/random-s0
    python scripts/study_learning.py all --seeds 0,1 --out runs/study     # choose the level, then every arm x seed
    python scripts/study_learning.py summarize runs/study                 # table of held-out avg@k, mean +- spread

``train`` evaluates on the test set (avg@k: k samples per problem at the training temperature) before the first
step and every ``--eval-steps`` steps; ``metrics.jsonl`` in ``--out`` holds TRL's train and eval metrics and the
``attncredit/*`` statistics (plot them with scripts/compare_runs.py). Bad input ends with "error: <message>" and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

ARMS = ("none", "coupled", "random")
TEST_SEED = 10_000  # the test problems' generator seed; training streams use the run seed
LEVELS = {
    # level: (number of operands, smallest operand, largest operand, operators)
    1: (2, 1, 30, "+"),
    2: (2, 10, 99, "+"),
    3: (3, 1, 20, "+-"),
    4: (3, 10, 99, "+-"),
}
INSTRUCTION = "Answer with the final result as a number."


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2)


def _fail(message: str):
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


# ------------------------------------------------------------------------------------------------------------
# The task
# ------------------------------------------------------------------------------------------------------------
def make_problem(rng: random.Random, level: int) -> tuple[str, int]:
    """One expression of ``level`` and its value, e.g. ("47 + 38 - 19", 66)."""
    count, low, high, ops = LEVELS[level]
    numbers = [rng.randint(low, high) for _ in range(count)]
    text, value = str(numbers[0]), numbers[0]
    for n in numbers[1:]:
        op = rng.choice(ops)
        text += f" {op} {n}"
        value = value + n if op == "+" else value - n
    return text, value


def make_rows(expressions: list[tuple[str, int]]) -> list[dict]:
    return [
        {"prompt": [{"role": "user", "content": f"What is {text}? {INSTRUCTION}"}], "answer": str(value)}
        for text, value in expressions
    ]


def distinct_problems(level: int) -> int:
    """How many different expressions ``level`` has: (operand choices)^operands x (operators)^(operands - 1)."""
    count, low, high, ops = LEVELS[level]
    return (high - low + 1) ** count * len(ops) ** (count - 1)


def test_problems(level: int, n: int) -> list[tuple[str, int]]:
    """The held-out set: the first ``n`` distinct expressions of the test generator, at most a quarter of the
    level's expressions (so that most of them are left to train on)."""
    if n > distinct_problems(level) // 4:
        _fail(f"num-test {n} is more than a quarter of level {level}'s {distinct_problems(level)} distinct problems; "
              f"allowed: at most {distinct_problems(level) // 4}")
    rng, seen, out = random.Random(TEST_SEED + level), set(), []
    while len(out) < n:
        problem = make_problem(rng, level)
        if problem[0] not in seen:
            seen.add(problem[0])
            out.append(problem)
    return out


def train_problems(level: int, n: int, seed: int, exclude: set[str]) -> list[tuple[str, int]]:
    """``n`` training expressions from the run's seed, none of them in the test set."""
    rng, out = random.Random(seed * 1_000 + level), []
    while len(out) < n:
        problem = make_problem(rng, level)
        if problem[0] not in exclude:
            out.append(problem)
    return out


_INTEGER = re.compile(r"-?\d[\d,]*")


def last_integer(text: str) -> int | None:
    matches = _INTEGER.findall(text or "")
    if not matches:
        return None
    try:
        return int(matches[-1].replace(",", ""))
    except ValueError:
        return None


def accuracy(completions, answer, **kwargs) -> list[float]:
    """1.0 when the completion's last integer equals the answer, else 0.0 (the study's only reward)."""
    texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
    return [float(last_integer(t) == int(a)) for t, a in zip(texts, answer)]


# ------------------------------------------------------------------------------------------------------------
# Untrained accuracy per level (to choose the difficulty)
# ------------------------------------------------------------------------------------------------------------
def start_accuracy(args) -> dict:
    """Held-out avg@k of the untrained model for each of ``args.levels``; also written to <out>/start_accuracy.json."""
    import torch

    from attncredit.evaluation import SamplingSettings, benchmark_metrics, make_generator, sample_and_score

    def score(completions, rows):
        return [{"reward": r} for r in accuracy(completions, [row["answer"] for row in rows])]

    if args.threads:
        torch.set_num_threads(args.threads)
    generator = make_generator(args.model, "hf", batch_size=args.batch_size, cache=args.cache)
    sampling = SamplingSettings(n=args.k, temperature=args.temperature, top_p=1.0, max_new_tokens=args.max_new_tokens,
                                seed=0)
    results = {}
    for level in args.levels:
        rows = make_rows(test_problems(level, args.num_test))
        start = time.perf_counter()
        records, _ = sample_and_score(generator, rows, sampling, score)
        scores = [[r["reward"] for r in per] for per in records]
        spread = sum(0 < sum(per) < len(per) for per in scores) / len(scores)
        results[level] = {"avg@k": benchmark_metrics(scores)[f"avg@{args.k}"], "groups_with_spread": spread,
                          "seconds": time.perf_counter() - start, "example": records[0][0]["completion"]}
        print(json.dumps({"level": level, "levels": LEVELS[level], **results[level]}), flush=True)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "start_accuracy.json").write_text(json.dumps(
            {"k": args.k, "num_test": args.num_test, "temperature": args.temperature, "results": results}, indent=1))
    generator.close()
    return results


def choose_level(results: dict) -> int:
    """The level whose untrained avg@k is nearest 30% among those in [10%, 50%] (groups then have reward spread)."""
    inside = {level: r["avg@k"] for level, r in results.items() if 0.10 <= r["avg@k"] <= 0.50}
    if not inside:
        _fail("no level has an untrained held-out accuracy in [10%, 50%]: " +
              ", ".join(f"level {lv}: {r['avg@k']:.2f}" for lv, r in results.items()))
    return min(inside, key=lambda level: abs(inside[level] - 0.30))


# ------------------------------------------------------------------------------------------------------------
# One arm
# ------------------------------------------------------------------------------------------------------------
def train(args) -> int:
    import torch
    from datasets import Dataset

    from attncredit import AnchorGRPOConfig, AnchorGRPOTrainer
    from attncredit.models import load_tokenizer, resolve_model_name

    if args.arm not in ARMS:
        _fail(f"arm {args.arm!r} is invalid; allowed: {', '.join(ARMS)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = torch.cuda.is_available() and not args.cpu
    test = test_problems(args.level, args.num_test)
    train_rows = make_rows(train_problems(args.level, args.num_train, args.seed, {t for t, _ in test}))
    model_path = resolve_model_name(args.model)
    config = AnchorGRPOConfig(
        output_dir=args.out,
        credit_strategy=args.arm,
        max_steps=args.steps,
        per_device_train_batch_size=args.prompts * args.group,
        num_generations=args.group,
        num_generations_eval=args.k,
        per_device_eval_batch_size=args.eval_batch,
        max_completion_length=args.max_new_tokens,
        temperature=args.temperature,
        learning_rate=args.lr,
        lr_scheduler_type="constant",
        warmup_steps=0,
        beta=0.0,
        loss_type="grpo",
        logging_steps=1,
        save_strategy="no",
        eval_strategy="steps",
        eval_steps=args.eval_steps,
        eval_on_start=True,  # step 0: the untrained model on the held-out set
        report_to="none",
        seed=args.seed,
        data_seed=args.seed,
        bf16=cuda,
        use_cpu=not cuda,
        cache_implementation=args.cache if cuda and args.cache != "dynamic" else None,
        model_init_kwargs={"dtype": "bfloat16" if cuda else "float32"},
        credit_log_every=0,
    )
    trainer = AnchorGRPOTrainer(
        model=model_path,
        reward_funcs=[accuracy],
        args=config,
        train_dataset=Dataset.from_list(train_rows),
        eval_dataset=Dataset.from_list(make_rows(test)),
        processing_class=load_tokenizer(model_path),
    )
    if args.max_minutes:
        trainer.add_callback(wall_clock(args.max_minutes * 60))
    Path(args.out).mkdir(parents=True, exist_ok=True)
    settings = {k: v for k, v in vars(args).items() if k != "func"}
    settings.update(device=torch.cuda.get_device_name() if cuda else "cpu", model_path=str(model_path))
    (Path(args.out) / "study_settings.json").write_text(json.dumps(settings, indent=1))
    start = time.perf_counter()
    trainer.train()
    trainer.evaluate()
    print(json.dumps({"out": args.out, "arm": args.arm, "seed": args.seed, "global_step": trainer.state.global_step,
                      "seconds": round(time.perf_counter() - start, 1)}), flush=True)
    return 0


def wall_clock(seconds: float):
    """A callback that stops training after ``seconds`` (a safety net; every run reports the step it reached)."""
    from transformers import TrainerCallback

    class WallClock(TrainerCallback):
        def __init__(self):
            self.deadline = time.monotonic() + seconds

        def on_step_end(self, args, state, control, **kwargs):
            if time.monotonic() > self.deadline:
                control.should_training_stop = True
            return control

    return WallClock()


# ------------------------------------------------------------------------------------------------------------
# All arms at once, and the summary
# ------------------------------------------------------------------------------------------------------------
def run_all(args, passthrough: list[str]) -> int:
    """Every arm x seed as its own process (a 135M model leaves most of one GPU idle); waits for all."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.level == "auto":
        start = argparse.Namespace(model=args.model, levels=sorted(LEVELS), num_test=args.start_num_test, k=args.start_k,
                                   temperature=args.temperature, max_new_tokens=args.max_new_tokens, batch_size=64,
                                   cache="auto",
                                   threads=None, out=str(out))
        level = choose_level(start_accuracy(start))
        print(f"level {level}: untrained avg@k nearest 30%", flush=True)
    else:
        level = int(args.level)
    passthrough = [*passthrough, "--level", str(level), "--model", args.model, "--max-new-tokens", str(args.max_new_tokens),
                   "--temperature", str(args.temperature)]
    procs = []
    for seed in args.seeds:
        for arm in args.arms:
            run_dir = out / f"{arm}-s{seed}"
            cmd = [sys.executable, __file__, "train", "--arm", arm, "--seed", str(seed), "--out", str(run_dir),
                   *passthrough]
            log = open(out / f"{arm}-s{seed}.log", "w")
            procs.append((run_dir, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), log))
            print(" ".join(cmd[1:]), flush=True)
    failed = 0
    for run_dir, proc, log in procs:
        failed += proc.wait() != 0
        log.close()
    print(f"{len(procs) - failed}/{len(procs)} runs finished", flush=True)
    return 1 if failed else 0


def read_metrics(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def summarize(args) -> int:
    """Held-out avg@k before and after training per arm (mean +- half range over seeds), and train reward."""
    import statistics

    root = Path(args.root)
    runs: dict[str, list[dict]] = {}
    for run_dir in sorted(p for p in root.iterdir() if (p / "metrics.jsonl").exists()):
        arm, _, seed = run_dir.name.rpartition("-s")
        metrics = read_metrics(run_dir)
        evals = [m for m in metrics if "eval_reward" in m]
        train = [m for m in metrics if "reward" in m and "loss" in m]
        if not evals or not train:
            continue
        last_k = train[-args.window:]
        runs.setdefault(arm, []).append({
            "seed": seed, "steps": train[-1]["step"],
            "eval_start": evals[0]["eval_reward"], "eval_end": evals[-1]["eval_reward"],
            "eval_best": max(e["eval_reward"] for e in evals),
            "train_reward_last": sum(m["reward"] for m in last_k) / len(last_k),
        })
    if not runs:
        _fail(f"no run folder with metrics.jsonl under {root}")

    def fmt(values):
        mean = statistics.fmean(values)
        half = (max(values) - min(values)) / 2
        return f"{mean:.3f} +- {half:.3f}"

    lines = ["| arm | seeds | steps | held-out avg@k, start | end | best | train reward, last %d steps |" % args.window,
             "|---|---|---|---|---|---|---|"]
    for arm in sorted(runs, key=lambda a: ARMS.index(a) if a in ARMS else len(ARMS)):
        rs = runs[arm]
        lines.append(f"| {arm} | {len(rs)} | {min(r['steps'] for r in rs)}-{max(r['steps'] for r in rs)} | "
                     f"{fmt([r['eval_start'] for r in rs])} | {fmt([r['eval_end'] for r in rs])} | "
                     f"{fmt([r['eval_best'] for r in rs])} | {fmt([r['train_reward_last'] for r in rs])} |")
    table = "\n".join(lines)
    (root / "summary.md").write_text(table + "\n")
    (root / "summary.json").write_text(json.dumps(runs, indent=1))
    print(table)
    return 0


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _add_run_options(p):
    p.add_argument("--model", default="smollm2-135m-instruct", help="model (default: %(default)s)")
    p.add_argument("--level", type=int, default=3, choices=sorted(LEVELS), help="task difficulty (default: %(default)s)")
    p.add_argument("--steps", type=int, default=200, help="optimizer steps = rollout rounds (default: %(default)s)")
    p.add_argument("--prompts", type=int, default=8, help="prompts per step (default: %(default)s)")
    p.add_argument("--group", type=int, default=8, help="responses per prompt, GRPO group (default: %(default)s)")
    p.add_argument("--lr", type=float, default=2e-5, help="learning rate, constant (default: %(default)s)")
    p.add_argument("--temperature", type=float, default=0.6, help="sampling temperature, train and eval (default: %(default)s)")
    p.add_argument("--max-new-tokens", type=int, default=64, help="completion cap (default: %(default)s)")
    p.add_argument("--num-train", type=int, default=20_000, help="training problems (default: %(default)s)")
    p.add_argument("--num-test", type=int, default=128, help="held-out problems (default: %(default)s)")
    p.add_argument("--k", type=int, default=4, help="samples per held-out problem, avg@k (default: %(default)s)")
    p.add_argument("--eval-steps", type=int, default=25, help="evaluate every N steps (default: %(default)s)")
    p.add_argument("--eval-batch", type=int, default=128, help="eval sequences per generate call (default: %(default)s)")
    p.add_argument("--cache", default="dynamic", choices=["static", "dynamic"],
                   help="KV cache of TRL's generation on a GPU (default: %(default)s; TRL does not compile, and a "
                   "static cache measured no faster uncompiled: docs/benchmarks.md)")
    p.add_argument("--max-minutes", type=float, default=None, help="stop training after this many minutes")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--cpu", action="store_true", help="train on the CPU even when a GPU is present")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    p = _Parser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("start", help="untrained held-out avg@k per difficulty level")
    s.add_argument("--model", default="smollm2-135m-instruct")
    s.add_argument("--levels", type=_ints, default=sorted(LEVELS))
    s.add_argument("--num-test", type=int, default=64)
    s.add_argument("--k", type=int, default=4)
    s.add_argument("--temperature", type=float, default=0.6)
    s.add_argument("--max-new-tokens", type=int, default=64)
    s.add_argument("--batch-size", type=int, default=64)
    s.add_argument("--cache", default="auto", choices=["auto", "static", "dynamic"])
    s.add_argument("--threads", type=int, default=None)
    s.add_argument("--out", default=None)
    t = sub.add_parser("train", help="one arm, one seed")
    t.add_argument("--arm", required=True, help=f"credit strategy: {', '.join(ARMS)}")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", required=True)
    _add_run_options(t)
    a = sub.add_parser("all", help="every arm x seed as parallel processes; other options go to each run")
    a.add_argument("--arms", default=",".join(ARMS), type=lambda x: [v for v in x.split(",") if v])
    a.add_argument("--seeds", type=_ints, default=[0, 1])
    a.add_argument("--out", required=True)
    a.add_argument("--level", default="auto", help="task level, or auto: measure every level's untrained accuracy "
                   "first and take the one nearest 30%% within [10%%, 50%%] (default: %(default)s)")
    a.add_argument("--model", default="smollm2-135m-instruct")
    a.add_argument("--max-new-tokens", type=int, default=64)
    a.add_argument("--temperature", type=float, default=0.6, help="sampling temperature of the level choice, "
                   "training and evaluation (default: %(default)s)")
    a.add_argument("--start-num-test", type=int, default=128, help="problems per level for --level auto")
    a.add_argument("--start-k", type=int, default=4, help="samples per problem for --level auto")
    m = sub.add_parser("summarize", help="table of held-out avg@k per arm over seeds")
    m.add_argument("root")
    m.add_argument("--window", type=int, default=20, help="train reward averaged over the last N steps")
    if argv and argv[0] == "all":
        args, passthrough = a.parse_known_args(argv[1:])
        bad = [x for x in args.arms if x not in ARMS]
        if bad:
            _fail(f"arm {bad[0]!r} is invalid; allowed: {', '.join(ARMS)}")
        return run_all(args, passthrough)
    args = p.parse_args(argv)
    if args.command == "start":
        start_accuracy(args)
        return 0
    if args.command == "train":
        return train(args)
    return summarize(args)


if __name__ == "__main__":
    raise SystemExit(main())
