"""Issue 21 (part B) reward edges: a false Countdown equation is wrong; math answers that overrun their first share
of the grading budget are graded in parallel workers, not one after another."""

import time

import pytest

from rewards import _mathgrade
from rewards.countdown import countdown, equation_claim


def as_completion(text):
    return [{"role": "assistant", "content": text}]


@pytest.mark.parametrize(
    "text, score",
    [
        ("<answer>1+2+3=7</answer>", 0.1),  # the expression hits 6, the stated result is false: wrong
        ("<answer>7 = 1+2+3</answer>", 0.1),
        ("So 1+2+3 = 7", 0.0),  # last-line answers earn 1.0 or nothing
        ("<answer>1+2+3=6</answer>", 1.0),
        ("<answer>6 = 3*2*1</answer>", 1.0),
        ("<answer>1+2+3</answer>", 1.0),
        ("So 1+2+3 = 6", 1.0),
    ],
)
def test_countdown_a_false_equation_is_a_wrong_answer(text, score):
    assert countdown([as_completion(text)], numbers=[[1, 2, 3]], target=[6]) == [score]
    assert equation_claim("1+2+3=7") == 7 and equation_claim("1+2+3") is None


def test_math_answers_that_overrun_are_graded_in_parallel(monkeypatch):
    hostile = r"\boxed{10^{10^{10}}}"  # math-verify uses its whole budget on it
    items = [(r"5", "final", "5"), (hostile, "final", "5"), (r"\frac{1}{2}", "final", "0.5"), (hostile, "final", "5"),
             (hostile, "final", "7")]  # fmt: skip
    calls = []
    parallel = _mathgrade._grade_parallel

    def spy(batch, budget_s, stats=None):
        calls.append((len(batch), budget_s))
        return parallel(batch, budget_s, stats)

    monkeypatch.setattr(_mathgrade, "_grade_parallel", spy)
    stats = {}
    start = time.perf_counter()
    scores = _mathgrade.grade_many(items, 1.0, stats)
    elapsed = time.perf_counter() - start
    assert scores == [1.0, 0.0, 1.0, 0.0, 0.0] and stats == {"timed_out": 3}
    assert calls == [(3, 1.0 - _mathgrade.QUICK_S)]  # only the three that overran the quick in-process pass
    print(f"5 answers (3 hostile, 1 s budget each): {elapsed:.1f} s")
