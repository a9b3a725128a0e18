"""One registry of datasets by name, each yielding TRL-ready rows.

Row format (every dataset):

* ``prompt``: conversational messages, ``[{"role": "system", ...}?, {"role": "user", "content": ...}]``, rendered
  by the prompt template (``templates.py``);
* ``answer``: the gold answer as a string (Countdown: one reference solution);
* ``task``: ``"countdown"``, ``"math"`` or ``"arithmetic"`` (which rewards apply: ``rewards.DEFAULT_REWARDS[task]``);
* Countdown: ``numbers`` (list of int), ``target`` (int); math: ``question`` (the raw problem) plus per-dataset
  extras (``solution``, ``id``, ``category``, ``answer_original``); arithmetic: ``expression`` (its prompt is
  its own, ``arithmetic.prompt_messages``: no template applies).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from attncredit.errors import ConfigError

from . import arithmetic, hub, packaged
from .countdown import countdown_split
from .templates import PromptTemplate, get_template

_COUNTDOWN_OPTIONS = {
    "num_train": 20_000,
    "num_test": 512,
    "num_numbers": 4,
    "min_number": 1,
    "max_number": 99,
    "min_target": 1,
    "max_target": 100,
}

# The study task's default difficulty: the setting chosen by arithmetic.py's selection rule.
_ARITHMETIC_OPTIONS = {"num_train": 20_000, "num_test": 640, **arithmetic.CANDIDATES["4x1-9+"]}


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    task: str
    splits: dict[str, str]  # split -> where it comes from: "generated", "packaged" or "hub"
    description: str
    options: dict = field(default_factory=dict)


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in [
        DatasetSpec("countdown", "countdown", {"train": "generated", "test": "generated"},
                    "TinyZero Countdown, 4 numbers in 1..99, targets 1..100, 20000 train / 512 test",
                    dict(_COUNTDOWN_OPTIONS)),
        DatasetSpec("countdown3", "countdown", {"train": "generated", "test": "generated"},
                    "easy Countdown demo: 3 numbers", {**_COUNTDOWN_OPTIONS, "num_numbers": 3}),
        DatasetSpec("arithmetic", "arithmetic", {"train": "generated", "test": "generated"},
                    "integer arithmetic answered with worked steps and 'Answer: N'; fixed held-out set (640)",
                    dict(_ARITHMETIC_OPTIONS)),
        DatasetSpec("gsm8k", "math", {"train": "hub", "test": "packaged"},
                    "GSM8K: test (1319) packaged, train (7473) from openai/gsm8k"),
        DatasetSpec("aime2025", "math", {"test": "packaged"}, "AIME 2025 I+II (30), packaged"),
        DatasetSpec("champ", "math", {"test": "packaged"}, "CHAMP competition problems (270), packaged"),
        DatasetSpec("dapo_math_17k", "math", {"train": "hub"}, "DAPO-Math-17k, the paper's math training set"),
        DatasetSpec("math500", "math", {"test": "hub"}, "MATH-500"),
        DatasetSpec("aime2024", "math", {"test": "hub"}, "AIME 2024 I+II (30)"),
        DatasetSpec("amc23", "math", {"test": "hub"}, "AMC 2023 (40)"),
        DatasetSpec("olympiadbench", "math", {"test": "hub"}, "OlympiadBench, text-only English maths (674)"),
        DatasetSpec("minerva", "math", {"test": "hub"}, "Minerva Math (272)"),
    ]
}


def list_datasets(offline_only: bool = False) -> list[str]:
    """Dataset names; ``offline_only`` keeps those with at least one split that needs no hub."""
    return [n for n, s in DATASETS.items() if not offline_only or any(v != "hub" for v in s.splits.values())]


def _offline_summary() -> str:
    parts = []
    for name, spec in DATASETS.items():
        offline = [split for split, where in spec.splits.items() if where != "hub"]
        if offline and len(offline) < len(spec.splits):
            parts.append(f"{name} ({'/'.join(offline)})")
        elif offline:
            parts.append(name)
    return ", ".join(parts)


def _check_options(spec: DatasetSpec, options: dict) -> dict:
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        allowed = ", ".join(spec.options) if spec.options else "none"
        raise ConfigError(f"unknown option '{unknown[0]}' for dataset '{spec.name}'; allowed: {allowed}")
    merged = {**spec.options, **options}
    for key, value in options.items():
        if isinstance(spec.options[key], str):
            if not isinstance(value, str):
                raise ConfigError(f"dataset option {key} must be a string, got {value!r}")
        elif isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"dataset option {key} must be an integer, got {value!r}")
    if spec.task == "countdown":
        m = merged
        if not 2 <= m["num_numbers"] <= 6:
            raise ConfigError(f"countdown num_numbers must be in 2..6, got {m['num_numbers']}")
        if not 0 <= m["min_number"] <= m["max_number"]:
            raise ConfigError(f"countdown needs 0 <= min_number <= max_number, got {m['min_number']}..{m['max_number']}")
        if m["min_target"] > m["max_target"]:
            raise ConfigError(f"countdown needs min_target <= max_target, got {m['min_target']}..{m['max_target']}")
        for key in ("num_train", "num_test"):
            if m[key] < 0:
                raise ConfigError(f"countdown {key} must be >= 0, got {m[key]}")
    return merged


def _countdown_rows(split: str, limit: int | None, seed: int, opts: dict) -> list[dict]:
    ranges = {k: opts[k] for k in ("num_numbers", "min_number", "max_number", "min_target", "max_target")}
    size = opts["num_train" if split == "train" else "num_test"]
    n = size if limit is None else min(limit, size)
    try:
        return countdown_split(split, n, seed=seed, num_test=opts["num_test"], **ranges)
    except ValueError as exc:  # ranges that admit too few distinct puzzles
        raise ConfigError(str(exc)) from None


def _arithmetic_dataset(split: str, limit: int | None, seed: int, opts: dict):
    import datasets

    settings = {k: opts[k] for k in ("num_operands", "min_operand", "max_operand", "operators")}
    size = opts["num_train" if split == "train" else "num_test"]
    n = size if limit is None else min(limit, size)
    try:
        problems = arithmetic.arithmetic_split(split, n, seed=seed, num_test=opts["num_test"], **settings)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    rows = [
        {"prompt": arithmetic.prompt_messages(p["expression"]), "answer": str(p["value"]), "task": "arithmetic",
         "expression": p["expression"]}
        for p in problems
    ]
    return datasets.Dataset.from_list(rows) if rows else datasets.Dataset.from_dict({"prompt": [], "answer": [], "task": []})


_PACKAGED = {
    ("gsm8k", "test"): packaged.load_gsm8k_test,
    ("aime2025", "test"): packaged.load_aime2025,
    ("champ", "test"): packaged.load_champ,
}


def load_dataset_by_name(
    name: str,
    split: str = "train",
    *,
    template: str | PromptTemplate | None = None,
    limit: int | None = None,
    seed: int = 0,
    **options,
):
    """A ``datasets.Dataset`` of TRL-ready rows (see the module docstring) for dataset ``name``.

    ``template``: prompt template name (``r1``, ``boxed``) or a ``PromptTemplate``; default per task (countdown:
    ``r1``, math: ``boxed``). ``limit``: keep the first ``limit`` rows (same rows as the full split's prefix).
    ``seed``: the Countdown generator seed (fixed datasets ignore it). ``options``: per-dataset settings, e.g.
    ``countdown``: ``num_train``, ``num_test``, ``num_numbers``, ``min_number``, ``max_number``,
    ``min_target``, ``max_target``. Raises ``ConfigError`` for an unknown name, split or option, a missing data
    package, or a hub dataset the hub cannot serve.
    """
    import datasets

    if name not in DATASETS:
        raise ConfigError(f"unknown dataset '{name}'; allowed: {', '.join(DATASETS)}")
    spec = DATASETS[name]
    if split not in spec.splits:
        raise ConfigError(f"dataset '{name}' has no split '{split}'; allowed: {', '.join(spec.splits)}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ConfigError(f"limit must be a non-negative integer or None, got {limit!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"seed must be an integer, got {seed!r}")
    opts = _check_options(spec, options)
    if spec.task == "arithmetic":
        if template is not None:
            raise ConfigError(f"dataset '{name}' writes its own prompts; prompt_template must be unset, got {template!r}")
        return _arithmetic_dataset(split, limit, seed, opts)
    tmpl = get_template(template, spec.task)
    tmpl.render(spec.task, numbers=[1, 2], target=3, question="?")  # fail fast on a template without this task

    if spec.task == "countdown":
        rows = [
            {
                "prompt": tmpl.render("countdown", numbers=p["numbers"], target=p["target"]),
                "answer": p["solution"],
                "task": "countdown",
                "numbers": p["numbers"],
                "target": p["target"],
            }
            for p in _countdown_rows(split, limit, seed, opts)
        ]
    else:
        if spec.splits[split] == "packaged":
            raw = _PACKAGED[(name, split)]()
            raw = raw if limit is None else raw[:limit]
        else:
            raw = hub.load_hub(name, split, limit, _offline_summary())
        rows = [
            {
                "prompt": tmpl.render("math", question=r["question"]),
                "answer": str(r["answer"]),
                "task": "math",
                **{k: v for k, v in r.items() if k != "answer"},
            }
            for r in raw
        ]
    if not rows:
        return datasets.Dataset.from_dict({"prompt": [], "answer": [], "task": []})
    return datasets.Dataset.from_list(rows)
