"""``arithmetic_answer``: 1/0 accuracy of a worked arithmetic answer (the study task, ``attncredit`` dataset
``arithmetic``).

Score of one completion, given the row's ``answer`` (the integer value as a string): 1.0 when the completion's
last line of the form ``Answer: N`` (case-insensitive, spaces, ``**`` emphasis and a trailing period allowed)
holds the integer ``N`` equal to the answer, else 0.0. Only that line counts: a correct number elsewhere, or a
last ``Answer:`` line with a wrong or missing number, scores 0. Reads the last ``TAIL_CHARS`` characters.
"""

from __future__ import annotations

import re

from .extract import completion_text, tail

_ANSWER_LINE = re.compile(r"^[ \t*]*answer[ \t*]*:[ \t*]*(-?\d+)[ \t*.]*$", re.IGNORECASE | re.MULTILINE)
_ANSWER_START = re.compile(r"^[ \t*]*answer[ \t*]*:", re.IGNORECASE | re.MULTILINE)


def final_answer(text: str) -> int | None:
    """The integer of the last ``Answer:`` line of ``text``, or None (no such line, or the last one holds no
    single integer)."""
    starts = list(_ANSWER_START.finditer(text))
    if not starts:
        return None
    match = _ANSWER_LINE.match(text, starts[-1].start())
    return int(match.group(1)) if match else None


def arithmetic_answer(completions, answer, **kwargs) -> list[float]:
    """1.0 when the last ``Answer: N`` line's integer equals the row's ``answer``, else 0.0 (module docstring)."""
    return [float(final_answer(tail(completion_text(c))) == int(a)) for c, a in zip(completions, answer)]


arithmetic_answer.required_columns = ("answer",)
