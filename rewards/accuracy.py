"""``math_accuracy``: 1.0 when the completion's final answer equals the gold answer (math-verify), else 0.0.

Final answer, in order of preference, read from the last ``TAIL_CHARS`` of the completion:

1. the last ``<answer>...</answer>`` (R1 template); a ``\\boxed{}`` inside it wins over the rest of the tag;
2. else the last ``\\boxed{...}`` (boxed template);
3. else (unless ``fallback=False``) the last 1,000 characters as text: math-verify's own extraction ("the
   answer is ...", LaTeX spans, then the last number). A rollout cut off mid-reasoning can score here; pass
   ``make_math_accuracy_reward(fallback=False)`` to count only boxed / tagged answers.

An explicit answer longer than ``MAX_ANSWER_CHARS`` scores 0.

Gold answers (the ``answer`` column) may be GSM8K solutions (``... #### 1,000``), LaTeX (``\\frac{5}{6}``,
``336^\\circ``), plain expressions (``2^(n-1)``, ``sqrt(3)/3``), integers with leading zeros (AIME ``070``), or
words (CHAMP's ``No``). Rules, applied to both sides:

* ``$`` delimiters, thousands separators (``1,000`` = ``1000``) and unit words (``72 clips`` = ``72``,
  ``$18.00`` = ``18``) are dropped; ``%`` follows math-verify (``18\\%`` = ``0.18`` = ``18``).
* numbers compare by value: ``070`` = ``70``, ``5/6`` = ``\\frac{5}{6}`` = ``0.833333``; math-verify rounds floats
  to 6 decimals, so a truncated decimal such as ``0.8333`` is wrong for ``5/6``.
* worded golds (``No``, ``No integer solutions``) compare as case- and space-insensitive text, ``\\text{}``
  removed; other golds are tried as text first, then symbolically (``2^{n-1}`` = ``2^(n-1)``, intervals, sets,
  equations).

Each completion gets at most ``timeout_s`` seconds of math-verify (see ``_mathgrade``: a signal timer in the main
thread, an isolated child process elsewhere). Empty, ``None``, non-text or malformed completions score 0; the
function never raises for a completion. An answer that runs out of its time scores 0 and is counted: a warning,
and under TRL the metric ``math_accuracy/timed_out`` (answers per call). Off the main thread, a grading worker
that cannot start raises ``rewards.GradingWorkerError`` instead of scoring anything.
"""

from __future__ import annotations

import logging

from .errors import RewardConfigError

from ._mathgrade import DEFAULT_BUDGET_S, grade_many
from .extract import MAX_ANSWER_CHARS, completion_text, last_answer_tag, last_boxed, tail

FALLBACK_CHARS = 1_000
logger = logging.getLogger(__name__)


def extract_final_answer(text: str, fallback: bool = True) -> tuple[str, str] | None:
    """(candidate, kind) for ``_mathgrade.grade``: ``kind`` is ``"final"`` (boxed / tag) or ``"text"``."""
    if not isinstance(text, str) or not text.strip():
        return None
    text = tail(text)
    tagged = last_answer_tag(text)
    if tagged is not None:
        boxed = last_boxed(tagged)
        candidate = boxed if boxed is not None else tagged
    else:
        candidate = last_boxed(text)
    if candidate is not None:
        if not candidate or len(candidate) > MAX_ANSWER_CHARS:
            return None
        return candidate, "final"
    return (tail(text, FALLBACK_CHARS), "text") if fallback else None


def make_math_accuracy_reward(timeout_s: float = DEFAULT_BUDGET_S, fallback: bool = True, name: str = "math_accuracy"):
    """A TRL reward ``fn(completions, answer, **kwargs) -> list[float]``.

    ``timeout_s``: math-verify time per completion. ``fallback``: also grade completions with neither an
    ``<answer>`` tag nor a ``\\boxed{}`` (by their last stated answer / number).
    """
    if not timeout_s or timeout_s <= 0:
        raise RewardConfigError(f"math_accuracy timeout_s must be > 0 seconds, got {timeout_s!r}")

    def reward(completions, answer=None, **kwargs) -> list[float]:
        if answer is None:
            raise RewardConfigError(
                f"reward '{name}' needs the dataset column 'answer' (the gold final answer); "
                f"got columns: {', '.join(sorted(k for k in kwargs if k not in _TRL_KWARGS)) or 'none'}"
            )
        if isinstance(answer, str):
            answer = [answer] * len(completions)
        scores = [0.0] * len(completions)
        items, where = [], []
        for i, (completion, gold) in enumerate(zip(completions, answer)):
            if gold is None:
                continue
            found = extract_final_answer(completion_text(completion), fallback)
            if found is not None:
                items.append((found[0], found[1], str(gold)))
                where.append(i)
        stats: dict = {}
        for i, score in zip(where, grade_many(items, timeout_s, stats)):
            scores[i] = score
        timed_out = stats.get("timed_out", 0)
        if timed_out:
            logger.warning("%s: %d of %d answers ran out of their %.1f s grading budget and score 0", name, timed_out, len(items), timeout_s)
        log_metric = kwargs.get("log_metric")
        if callable(log_metric):  # TRL's GRPOTrainer: averaged over the logging period
            log_metric(f"{name}/timed_out", float(timed_out))
        return scores

    reward.__name__ = reward.__qualname__ = name
    reward.required_columns = ("answer",)
    return reward


# Keyword arguments TRL passes besides the dataset columns.
_TRL_KWARGS = {"prompts", "completion_ids", "trainer_state", "log_extra", "log_metric", "environments"}

math_accuracy = make_math_accuracy_reward()
