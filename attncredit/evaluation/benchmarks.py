"""Benchmarks by name: which dataset and split, which scorer, and which metric the paper reports.

=================  ===================  ==========  =========  ============================================
benchmark          dataset / split      scorer      default k  source
=================  ===================  ==========  =========  ============================================
``gsm8k``          gsm8k / test         math        1          packaged (offline), 1319 problems
``aime2025``       aime2025 / test      math        16         packaged (offline), 30; paper: avg@16
``champ``          champ / test         math        1          packaged (offline), 270
``countdown``      countdown / test     countdown   1          generated (offline), 512, 4 numbers (Table 3)
``countdown3``     countdown3 / test    countdown   1          generated (offline), 512, 3 numbers (the demo)
``aime2024``       aime2024 / test      math        16         hub; paper: avg@16
``amc23``          amc23 / test         math        1          hub; paper: pass@1
``math500``        math500 / test       math        1          hub; paper: pass@1
``olympiadbench``  olympiadbench / test math        1          hub; paper: pass@1
``minerva``        minerva / test       math        1          hub (Tables 6/17/18)
=================  ===================  ==========  =========  ============================================

Prompts come from the training loaders (``attncredit.data.load_dataset_by_name``, same default template per task:
``boxed`` for math, ``r1`` for Countdown), and answers are scored by the training rewards: ``math_accuracy``
(math-verify) for math, and the ``countdown`` rule for Countdown, where a sample is correct only when its reward is
1.0 (the 0.1 format score is not an answer). Hub benchmarks raise the loaders' one-line ``ConfigError`` offline.

The Countdown test split is generated from a seed (``attncredit.data.countdown_split``); the recipes train with
``seed: 42``, so evaluating with seed 42 scores the split held out from training.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from attncredit.errors import ConfigError


@dataclass(frozen=True)
class Benchmark:
    """One evaluation benchmark: a dataset split, a scorer and the metric the paper reports for it."""

    name: str
    dataset: str
    split: str
    task: str  # "math" or "countdown": picks the scorer
    default_k: int  # samples per problem the paper uses (avg@16 for AIME, pass@1 otherwise)
    description: str = ""

    @property
    def headline(self) -> str:
        """The metric the paper reports: ``avg@16`` or ``pass@1``."""
        return f"avg@{self.default_k}" if self.default_k > 1 else "pass@1"

    def load(self, *, limit: int | None = None, seed: int = 42, template: str | None = None):
        """The benchmark's rows (``datasets.Dataset``), via the training loader; ``ConfigError`` if unavailable."""
        from attncredit.data import load_dataset_by_name

        return load_dataset_by_name(self.dataset, self.split, template=template, limit=limit, seed=seed)


BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in [
        Benchmark("gsm8k", "gsm8k", "test", "math", 1, "GSM8K test (1319), packaged"),
        Benchmark("aime2025", "aime2025", "test", "math", 16, "AIME 2025 I+II (30), packaged"),
        Benchmark("champ", "champ", "test", "math", 1, "CHAMP competition problems (270), packaged"),
        Benchmark("countdown", "countdown", "test", "countdown", 1, "Countdown test (512), 4 numbers, generated"),
        Benchmark("countdown3", "countdown3", "test", "countdown", 1, "Countdown test (512), 3 numbers, generated"),
        Benchmark("aime2024", "aime2024", "test", "math", 16, "AIME 2024 I+II (30), hub"),
        Benchmark("amc23", "amc23", "test", "math", 1, "AMC 2023 (40), hub"),
        Benchmark("math500", "math500", "test", "math", 1, "MATH-500, hub"),
        Benchmark("olympiadbench", "olympiadbench", "test", "math", 1, "OlympiadBench (674), hub"),
        Benchmark("minerva", "minerva", "test", "math", 1, "Minerva Math (272), hub"),
    ]
}

# The benchmark sets of the paper's tables.
PAPER_SETS = {
    "table3": ["countdown"],
    "table4": ["aime2024", "aime2025", "amc23", "math500", "olympiadbench"],
    "table6": ["amc23", "math500", "olympiadbench", "minerva", "gsm8k"],
    "offline": ["gsm8k", "aime2025", "champ", "countdown"],
}


def list_benchmarks() -> list[str]:
    return list(BENCHMARKS)


def parse_benchmarks(names: str | list[str]) -> list[Benchmark]:
    """Benchmarks from a comma-separated string or a list; set names (``table4``, ``offline``, ...) expand.

    Raises ``ConfigError`` for an unknown or empty name list; duplicates are dropped, order is kept.
    """
    items = [n.strip() for n in names.split(",")] if isinstance(names, str) else [str(n).strip() for n in names]
    items = [n for n in items if n]
    if not items:
        raise ConfigError(f"no benchmark given; allowed: {', '.join(BENCHMARKS)} (or a set: {', '.join(PAPER_SETS)})")
    out: list[Benchmark] = []
    for name in items:
        key = name.lower().replace("-", "_")
        expanded = PAPER_SETS.get(key, [key])
        for item in expanded:
            if item not in BENCHMARKS:
                raise ConfigError(
                    f"unknown benchmark '{name}'; allowed: {', '.join(BENCHMARKS)} (or a set: {', '.join(PAPER_SETS)})"
                )
            if BENCHMARKS[item] not in out:
                out.append(BENCHMARKS[item])
    return out


def score_completions(
    task: str, completions: list, rows: list[dict], strict: bool = False
) -> tuple[list[float], list[float]]:
    """(reward, correct) per completion, with the training reward of ``task``; ``rows`` are the problems' rows.

    ``completions`` are strings or TRL's conversational ``[{"role": "assistant", "content": ...}]`` lists, one per
    row. ``correct`` is 1.0 when the reward is 1.0: for math the reward is already 0/1; for Countdown it is
    TinyZero's 1 / 0.1 / 0, and only 1.0 counts.

    ``strict``: count only answers the prompt asked for, in ``\\boxed{}`` or an ``<answer>`` tag. The training
    rewards also read an untagged completion's last stated answer (math-verify's text extraction; Countdown's last
    line), which can credit a rambling or truncated completion whose text happens to contain the gold.
    """
    if len(completions) != len(rows):
        raise ValueError(f"{len(completions)} completions for {len(rows)} rows")
    if not completions:
        return [], []
    scorer = _scorer(task, strict)
    columns = {key: [row.get(key) for row in rows] for key in scorer.required_columns}
    rewards = [float(r) if r is not None else 0.0 for r in scorer(completions, **columns)]
    if strict and task == "countdown":
        rewards = [r if _has_final_answer(c) else 0.0 for r, c in zip(rewards, completions)]
    return rewards, [1.0 if r == 1.0 else 0.0 for r in rewards]


def _has_final_answer(completion) -> bool:
    from rewards.extract import completion_text, last_answer_tag, last_boxed, tail

    text = tail(completion_text(completion))
    return last_answer_tag(text) is not None or last_boxed(text) is not None


def _scorer(task: str, strict: bool = False) -> Callable[..., list[float]]:
    from rewards import countdown, make_math_accuracy_reward, math_accuracy

    scorers = {"math": math_accuracy, "countdown": countdown}
    if task not in scorers:
        raise ConfigError(f"no scorer for task '{task}'; allowed: {', '.join(scorers)}")
    if strict and task == "math":
        return make_math_accuracy_reward(fallback=False)
    return scorers[task]


def format_scores(completions: list, rows: list[dict]) -> list[float]:
    """The ``format`` reward (answer layout the row's prompt asks for) of each completion, for reporting."""
    from rewards import format_reward

    return [float(s) for s in format_reward(completions, prompts=[row["prompt"] for row in rows])]
