"""Rule-based reward functions for GRPO, chosen by name (TRL reward signature).

Every function is ``fn(completions, **kwargs) -> list[float]``: ``completions`` are plain strings or
conversational message lists, and ``kwargs`` carry the dataset columns TRL forwards (``answer``, ``numbers``,
``target``, ...) plus ``prompts``. ``fn.__name__`` is the registry name (TRL logs ``rewards/<name>/mean``), and
``fn.required_columns`` lists the dataset columns it reads.

=================  ===============================================================  ==================
name               score                                                             columns
=================  ===============================================================  ==================
``math_accuracy``  1/0: final answer (``<answer>``, ``\\boxed{}``, last number) equals    ``answer``
                   the gold under math-verify, time-limited per completion
``countdown``      1 / 0.1 / 0: TinyZero's Countdown rule (exact, no ``eval``)         ``numbers``, ``target``
``format``         1/0: the answer format the row's prompt asks for (auto)            (prompt)
``format_r1``      1/0: ``<think>...</think> <answer>...</answer>``                    -
``format_boxed``   1/0: a non-empty ``\\boxed{...}``                                   -
``tag_count``      0.25 per R1 tag present exactly once (shaping for small models)     -
=================  ===============================================================  ==================

``arithmetic_answer`` (columns ``answer``): 1/0, the last ``Answer: N`` line of the completion holds the value
(the ``arithmetic`` study task, ``rewards/arithmetic.py``).

``countdown_accuracy`` is ``countdown`` without the 0.1 format score (1/0, the accuracy): give it reward weight 0 to
log the accuracy (``rewards/countdown_accuracy/mean``, ``eval_rewards/countdown_accuracy/mean``) without changing
training.

Factories for other settings: ``make_math_accuracy_reward(timeout_s=..., fallback=...)``,
``make_countdown_reward(format_score=...)``, ``make_format_reward(style=...)``.

Errors (``rewards.errors``; this package imports nothing from ``attncredit``): ``RewardConfigError`` (a
``ValueError``) for an unknown name, a bad option or a missing dataset column, ``GradingWorkerError`` when
``math_accuracy``'s grading worker cannot start (see ``_mathgrade``).

Example::

    from rewards import get_reward_funcs
    trainer = GRPOTrainer(..., reward_funcs=get_reward_funcs(["countdown", "format"]))
"""

from __future__ import annotations

from typing import Callable, Iterable

from .accuracy import make_math_accuracy_reward, math_accuracy
from .arithmetic import arithmetic_answer
from .countdown import countdown, make_countdown_reward
from .errors import GradingWorkerError, RewardConfigError
from .format import format_boxed, format_r1, format_reward, make_format_reward, tag_count

REWARD_FUNCS: dict[str, Callable[..., list[float]]] = {
    "math_accuracy": math_accuracy,
    "countdown": countdown,
    "countdown_accuracy": make_countdown_reward(format_score=0.0, name="countdown_accuracy"),
    "format": format_reward,
    "format_r1": format_r1,
    "format_boxed": format_boxed,
    "tag_count": tag_count,
    "arithmetic_answer": arithmetic_answer,
}

# A sensible reward set per dataset task (``attncredit.data`` rows carry a ``task`` column).
DEFAULT_REWARDS = {
    "countdown": ["countdown", "format"], "math": ["math_accuracy", "format"], "arithmetic": ["arithmetic_answer"]
}


def list_rewards() -> list[str]:
    return list(REWARD_FUNCS)


def _names(names) -> list:
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    if callable(names):
        names = [names]
    return list(names or [])


def get_reward_funcs(names: Iterable[str | Callable] | str) -> list[Callable[..., list[float]]]:
    """The reward functions called ``names`` (a list, or one comma-separated string), in order.

    Callables pass through unchanged, so custom rewards mix with named ones. Raises ``RewardConfigError`` for an
    unknown name or an empty list.
    """
    items = _names(names)
    if not items:
        raise RewardConfigError(f"no reward functions given; allowed: {', '.join(REWARD_FUNCS)}")
    funcs = []
    for item in items:
        if callable(item):
            funcs.append(item)
        elif item in REWARD_FUNCS:
            funcs.append(REWARD_FUNCS[item])
        else:
            raise RewardConfigError(f"unknown reward function '{item}'; allowed: {', '.join(REWARD_FUNCS)}")
    return funcs


def required_columns(names: Iterable[str | Callable] | str) -> list[str]:
    """Dataset columns the named rewards read (besides ``prompt``), without duplicates."""
    columns: list[str] = []
    for func in get_reward_funcs(names):
        for column in getattr(func, "required_columns", ()):
            if column not in columns:
                columns.append(column)
    return columns


__all__ = [
    "RewardConfigError",
    "GradingWorkerError",
    "REWARD_FUNCS",
    "DEFAULT_REWARDS",
    "get_reward_funcs",
    "list_rewards",
    "required_columns",
    "math_accuracy",
    "arithmetic_answer",
    "countdown",
    "format_reward",
    "format_r1",
    "format_boxed",
    "make_math_accuracy_reward",
    "make_countdown_reward",
    "make_format_reward",
]
