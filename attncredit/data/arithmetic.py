"""Multi-operand integer arithmetic answered with worked steps: "What is 14 + 7 - 3 + 9?" ... ``Answer: 27``.

The study task of issue 22 (docs/experiments.md): unlike a one-number answer, the model writes one line per
operation ("14 + 7 = 21", "21 - 3 = 18", ...) before its final ``Answer: N`` line, so a completion holds a plan, a
chain of intermediate results that later lines read back, and an answer. The prompt (``prompt_messages``) states
that format after one worked example (an earlier turn of the chat). The reward is ``rewards.arithmetic_answer``: 1.0 when the last
``Answer: N`` line's integer is the value, else 0.

Generation is offline and deterministic. An expression is ``num_operands`` integers drawn uniformly from
``min_operand..max_operand`` joined by operators drawn uniformly from ``operators`` (a string of ``+``, ``-``,
``*``); its value follows the usual precedence (``*`` before ``+``/``-``). The held-out split comes from its
own stream (``"arithmetic-test"`` plus the difficulty settings), so it is the same for every run seed and never
depends on the train size; it holds distinct expressions. The train stream is seeded by the run seed and skips
every held-out expression, so no run trains on a held-out problem.

Selection rule (fixed before any training; issue 22). Among ``CANDIDATES`` below, the study takes the setting
whose untrained embedded model (``smollm2-135m-instruct``) has a held-out avg@4 at the study temperature in
[10%, 50%], nearest 30%, among those whose mean completion length is at least 40 tokens (``choose_setting``).
Measured with ``scripts/task_difficulty.py`` on 128 held-out problems x 4 samples, max 160 new tokens; the
command and numbers are in ``docs/study/arithmetic_difficulty.json``.
"""

from __future__ import annotations

import random

OPERATORS = "+-*"

# Candidate difficulty settings of the study task, fixed before the measurement that chooses among them.
CANDIDATES: dict[str, dict] = {
    "4x1-9+": {"num_operands": 4, "min_operand": 1, "max_operand": 9, "operators": "+"},
    "4x1-9+-": {"num_operands": 4, "min_operand": 1, "max_operand": 9, "operators": "+-"},
    "4x1-20+": {"num_operands": 4, "min_operand": 1, "max_operand": 20, "operators": "+"},
    "5x1-9+": {"num_operands": 5, "min_operand": 1, "max_operand": 9, "operators": "+"},
    "5x1-9+-": {"num_operands": 5, "min_operand": 1, "max_operand": 9, "operators": "+-"},
    "6x1-9+": {"num_operands": 6, "min_operand": 1, "max_operand": 9, "operators": "+"},
}
MIN_MEAN_TOKENS = 40.0
ACCURACY_RANGE = (0.10, 0.50)
ACCURACY_TARGET = 0.30

INSTRUCTION = (
    "Work it out step by step: write one line per operation with its result, then end with a last line of the "
    "form 'Answer: N'."
)
# The one worked example, shown as an earlier turn of the conversation (a 135M model copies an example given
# inside the question instead of answering).
EXAMPLE = ("7 + 5 - 3 + 8", "Step 1: 7 + 5 = 12\nStep 2: 12 - 3 = 9\nStep 3: 9 + 8 = 17\nAnswer: 17")


def check_settings(num_operands: int, min_operand: int, max_operand: int, operators: str) -> None:
    """Raise ``ValueError`` (one line) for settings that admit no expression."""
    if num_operands < 2:
        raise ValueError(f"arithmetic num_operands must be >= 2, got {num_operands}")
    if not 0 <= min_operand <= max_operand:
        raise ValueError(f"arithmetic needs 0 <= min_operand <= max_operand, got {min_operand}..{max_operand}")
    if not operators or set(operators) - set(OPERATORS):
        raise ValueError(f"arithmetic operators must be a non-empty string of {OPERATORS!r}, got {operators!r}")


def evaluate(numbers: list[int], ops: list[str]) -> int:
    """The value of ``numbers[0] ops[0] numbers[1] ...`` with ``*`` binding tighter than ``+`` and ``-``."""
    terms, signs = [numbers[0]], []
    for op, n in zip(ops, numbers[1:]):
        if op == "*":
            terms[-1] *= n
        else:
            signs.append(op)
            terms.append(n)
    value = terms[0]
    for sign, term in zip(signs, terms[1:]):
        value = value + term if sign == "+" else value - term
    return value


def _expression(rng: random.Random, num_operands: int, min_operand: int, max_operand: int, operators: str):
    numbers = [rng.randint(min_operand, max_operand) for _ in range(num_operands)]
    ops = [rng.choice(operators) for _ in range(num_operands - 1)]
    text = str(numbers[0]) + "".join(f" {op} {n}" for op, n in zip(ops, numbers[1:]))
    return text, evaluate(numbers, ops)


def distinct_expressions(num_operands: int, min_operand: int, max_operand: int, operators: str) -> int:
    """How many different expressions the settings admit: (operand choices)^operands x (operators)^(operands - 1)."""
    return (max_operand - min_operand + 1) ** num_operands * len(set(operators)) ** (num_operands - 1)


def _settings_key(settings: dict) -> str:
    return "{num_operands}x{min_operand}-{max_operand}{operators}".format(**settings)


def arithmetic_split(split: str, n: int, *, seed: int = 0, num_test: int = 640, **settings) -> list[dict]:
    """The first ``n`` problems ``{"expression", "value"}`` of split ``"train"`` or ``"test"``.

    Test: ``n`` distinct expressions of the stream ``"arithmetic-test-<settings>"`` (``seed`` is not used: every
    run evaluates on the same problems); at most a quarter of the settings' distinct expressions, so most are left
    to train on. Train: the stream ``"arithmetic-train-<seed>-<settings>"`` minus the ``num_test`` held-out
    expressions (repeats allowed, as in any sampled stream). ``settings``: ``num_operands``, ``min_operand``,
    ``max_operand``, ``operators``.
    """
    check_settings(**settings)
    key = _settings_key(settings)
    num_test = n if split == "test" else num_test
    available = distinct_expressions(**settings)
    if num_test > available // 4:
        raise ValueError(
            f"arithmetic num_test {num_test} is more than a quarter of the {available} distinct expressions of "
            f"{key}; allowed: at most {available // 4}"
        )
    rng, test, seen = random.Random(f"arithmetic-test-{key}"), [], set()
    while len(test) < num_test:
        text, value = _expression(rng, **settings)
        if text not in seen:
            seen.add(text)
            test.append({"expression": text, "value": value})
    if split == "test":
        return test
    rng, train = random.Random(f"arithmetic-train-{seed}-{key}"), []
    while len(train) < n:
        text, value = _expression(rng, **settings)
        if text not in seen:
            train.append({"expression": text, "value": value})
    return train


def prompt_messages(expression: str) -> list[dict[str, str]]:
    """The chat prompt of one problem: one worked example as an earlier exchange, then the question."""
    question, worked = EXAMPLE
    return [
        {"role": "user", "content": f"What is {question}? {INSTRUCTION}"},
        {"role": "assistant", "content": worked},
        {"role": "user", "content": f"What is {expression}? {INSTRUCTION}"},
    ]


def choose_setting(results: dict[str, dict]) -> str:
    """The selection rule (module docstring): among ``results`` (name -> ``{"avg@4", "mean_tokens"}``), the
    setting with mean completion length >= ``MIN_MEAN_TOKENS`` and avg@4 in ``ACCURACY_RANGE`` nearest
    ``ACCURACY_TARGET``; ``ValueError`` naming every measurement when none qualifies."""
    low, high = ACCURACY_RANGE
    inside = {
        name: r["avg@4"] for name, r in results.items() if low <= r["avg@4"] <= high and r["mean_tokens"] >= MIN_MEAN_TOKENS
    }
    if not inside:
        measured = ", ".join(f"{n}: avg@4 {r['avg@4']:.3f}, {r['mean_tokens']:.1f} tokens" for n, r in results.items())
        raise ValueError(
            f"no candidate has avg@4 in [{low:.0%}, {high:.0%}] and >= {MIN_MEAN_TOKENS:.0f} tokens: {measured}"
        )
    return min(inside, key=lambda name: abs(inside[name] - ACCURACY_TARGET))
