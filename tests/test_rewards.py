"""Reward functions on real, tricky answers: math-verify accuracy, TinyZero Countdown, format; registry."""

import multiprocessing
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import rewards
from attncredit.data import packaged
from attncredit.data.countdown import generate_countdown, solve_countdown
from rewards import (
    RewardConfigError,
    countdown,
    format_boxed,
    format_r1,
    format_reward,
    get_reward_funcs,
    make_countdown_reward,
    make_math_accuracy_reward,
    math_accuracy,
    required_columns,
)
from rewards.countdown import evaluate_equation

HUGE = "x" * 1_000_000  # 1 MB


def acc(completion, gold):
    return math_accuracy([completion], answer=[gold])[0]


# ---------------------------------------------------------------------------------------------- math_accuracy


@pytest.mark.parametrize(
    "completion, gold, expected",
    [
        # fractions: exact forms match; a truncated decimal does not (math-verify rounds to 6 places)
        ("\\boxed{\\frac{5}{6}}", "5/6", 1.0),
        ("\\boxed{5/6}", "\\frac{5}{6}", 1.0),
        ("\\boxed{\\dfrac{5}{6}}", "5/6", 1.0),
        ("\\boxed{0.833333}", "\\frac{5}{6}", 1.0),
        ("\\boxed{0.8333}", "5/6", 0.0),
        ("\\boxed{\\frac{6}{5}}", "5/6", 0.0),
        # units and currency
        ("\\boxed{72 clips}", "72", 1.0),
        ("\\boxed{72\\text{ clips}}", "72", 1.0),
        ("\\boxed{\\$18.00}", "18", 1.0),
        ("She makes 9 * 2 = $18.00 every day.", "#### 18", 1.0),
        # GSM8K golds with thousands separators
        ("\\boxed{1,000}", "#### 1,000", 1.0),
        ("\\boxed{1000}", "He pays 10 * 100 = <<10*100=1000>>1000 dollars.\n#### 1,000", 1.0),
        ("\\boxed{100}", "#### 1,000", 0.0),
        ("\\boxed{1,450,000}", "1450000", 1.0),
        # AIME: integers compare by value, so leading zeros do not matter; 336^\circ is 336
        ("\\boxed{070}", "70", 1.0),
        ("\\boxed{70}", "070", 1.0),
        ("\\boxed{71}", "70", 0.0),
        ("\\boxed{336}", "336^\\circ", 1.0),
        ("\\boxed{336^\\circ}", "336^\\circ", 1.0),
        # LaTeX vs plain golds
        ("\\boxed{2^{n-1}}", "2^(n-1)", 1.0),
        ("\\boxed{\\frac{1}{\\sqrt{3}}}", "sqrt(3)/3", 1.0),
        ("\\boxed{[-1,1]}", "[-1, 1]", 1.0),
        ("\\boxed{\\frac{n(n+1)}{2}}", "n(n+1)/2", 1.0),
        ("\\boxed{x^4+x^2+1}", "(x^2+x+1)(x^2-x+1)", 1.0),
        # worded answers
        ("\\boxed{\\text{No}}", "No", 1.0),
        ("\\boxed{no.}", "No", 1.0),
        ("\\boxed{Yes}", "No", 0.0),
        # where the final answer is read from
        ("<think>5 + 67 = 72</think> <answer>72</answer>", "72", 1.0),
        ("<think>maybe \\boxed{5}</think> <answer>\\boxed{72}</answer>", "72", 1.0),
        ("<think>...</think> <answer>The answer is 72 clips.</answer>", "72", 1.0),
        ("<think>72</think> <answer>73</answer>", "72", 0.0),
        ("First \\boxed{5}, then correcting: \\boxed{72}", "72", 1.0),
        ("48 + 24 = 72, so Natalia sold 72 clips.", "72", 1.0),  # last number fallback
        ("Therefore the final answer is $\\frac{5}{6}$. I hope it is correct.", "5/6", 1.0),
        ("no number at all", "72", 0.0),
    ],
)
def test_math_accuracy_tricky_answers(completion, gold, expected):
    assert acc(completion, gold) == expected


CHAMP_CASES = [  # (problem id, completion, expected): the golds are CHAMP's own free-form answers
    ("P_Combinatorics_2", "\\boxed{252}", 1.0),  # 'C(10, 5), or equivalently 252'
    ("P_Combinatorics_2", "\\boxed{251}", 0.0),
    ("P_Inequality_18", "\\boxed{\\frac{\\sqrt{3}}{3}}", 1.0),  # 'sqrt(3)/3, or equivalently 1/sqrt(3)'
    ("P_Combinatorics_14", "\\boxed{\\frac{5}{14}}", 1.0),  # '5/14, or approximately 35.7%'
    ("P_Inequality_14", "\\boxed{100}", 1.0),  # '100 (i.e., all values)'
    ("P_Number-Theory_19", "\\boxed{0}", 1.0),  # '0 is the only possible value'
    ("P_Sequence_29", "\\boxed{\\frac{2}{3}}", 1.0),  # 'The limit exists and is equal to 2/3'
    ("P_Number-Theory_7", "\\boxed{\\text{No integer solutions}}", 1.0),
    ("P_Number-Theory_7", "\\boxed{7}", 0.0),
    ("P_Combinatorics_6", "\\boxed{2^{n-1}}", 1.0),  # '2^(n-1)'
    ("P_Polynomial_14", "\\boxed{x^4+x^2+1}", 1.0),  # '(x^2+x+1)(x^2-x+1)'
    ("P_Inequality_33", "\\boxed{98}", 1.0),  # '98 values'
    ("P_Number-Theory_3", "\\boxed{376, 625}", 1.0),  # '376 and 625'
    ("P_Combinatorics_17", "\\boxed{No}", 1.0),  # 'No'
]


@pytest.fixture(scope="module")
def champ():
    return {row["id"]: row for row in packaged.load_champ()}


@pytest.mark.parametrize("problem, completion, expected", CHAMP_CASES)
def test_math_accuracy_on_champ_answers(champ, problem, completion, expected):
    assert acc(completion, champ[problem]["answer"]) == expected


def test_gold_formatted_like_a_model_scores_one_on_real_rows(champ):
    gsm8k = packaged.load_gsm8k_test()[::10]  # 132 rows
    raw = [row["solution"].rsplit("####", 1)[1].strip() for row in gsm8k]  # as written, e.g. "1,450,000"
    assert any("," in r for r in raw)
    assert math_accuracy([f"\\boxed{{{r}}}" for r in raw], answer=[row["answer"] for row in gsm8k]) == [1.0] * len(gsm8k)
    assert math_accuracy([f"So the answer is {r}." for r in raw], answer=[row["solution"] for row in gsm8k]) == [
        1.0
    ] * len(gsm8k)

    aime = packaged.load_aime2025()
    assert math_accuracy([f"\\boxed{{{r['answer']}}}" for r in aime], answer=[r["answer"] for r in aime]) == [1.0] * 30
    padded = [f"<answer>{int(r['answer']):03d}</answer>" for r in aime if r["answer"].isdigit()]
    assert len(padded) == 29
    assert math_accuracy(padded, answer=[r["answer"] for r in aime if r["answer"].isdigit()]) == [1.0] * 29

    rows = list(champ.values())
    assert math_accuracy([f"\\boxed{{{r['answer']}}}" for r in rows], answer=[r["answer"] for r in rows]) == [1.0] * 270


def test_math_accuracy_conversational_and_odd_completions():
    golds = ["72"] * 8
    completions = [
        [{"role": "assistant", "content": "\\boxed{72}"}],
        [{"role": "assistant", "content": [{"type": "text", "text": "\\boxed{72}"}]}],
        "",
        None,
        123,
        [{"role": "assistant"}],
        [{"role": "user", "content": "\\boxed{72}"}],  # not the model's text
        {"unexpected": "dict"},
    ]
    assert math_accuracy(completions, answer=golds) == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    assert math_accuracy(["\\boxed{72}"], answer=[None]) == [0.0]
    assert math_accuracy([], answer=[]) == []


def test_math_accuracy_huge_and_hostile_inputs_finish_fast():
    start = time.monotonic()
    out = math_accuracy(
        [HUGE, HUGE + "\\boxed{72}", "\\boxed{" * 100_000, "{" * 1_000_000, "<answer>" * 100_000, "\\boxed{" + "9" * 600 + "}"],
        answer=["72"] * 6,
    )
    assert out == [0.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    assert time.monotonic() - start < 5


def test_math_accuracy_time_limit_main_thread_and_threads():
    reward = make_math_accuracy_reward(timeout_s=0.5)
    slow = "\\boxed{9^{9^{99}}}"  # math-verify needs seconds to refute this
    start = time.monotonic()
    assert reward([slow, "\\boxed{5}"], answer=["5", "5"]) == [0.0, 1.0]
    assert time.monotonic() - start < 3

    results = {}

    def run():
        results["thread"] = reward([slow, "\\boxed{\\frac{5}{6}}", "\\boxed{70}"], answer=["5", "5/6", "070"])

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=60)
    assert results["thread"] == [0.0, 1.0, 1.0]

    with ThreadPoolExecutor(2) as pool:  # concurrent callers share one isolated worker safely
        outs = list(pool.map(lambda g: math_accuracy([f"\\boxed{{{g}}}", "\\boxed{1}"], answer=[g, "2"]), ["3", "4", "5"]))
    assert outs == [[1.0, 0.0]] * 3


def _in_thread(fn):
    out = []
    thread = threading.Thread(target=lambda: out.append(fn()))
    thread.start()
    thread.join(timeout=60)
    return out[0]


def _child(queue):
    grade = lambda: math_accuracy(["\\boxed{\\frac{5}{6}}", "\\boxed{1}"], answer=["5/6", "2"])  # noqa: E731
    queue.put((grade(), _in_thread(grade)))  # main thread of the child, then a thread (its own worker)


def test_math_accuracy_in_a_forked_subprocess():
    assert _in_thread(lambda: math_accuracy(["\\boxed{3}"], answer=["3"])) == [1.0]  # parent's worker is running
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(queue,))
    proc.start()
    assert queue.get(timeout=60) == ([1.0, 0.0], [1.0, 0.0])
    proc.join(timeout=10)


def _fresh_worker(monkeypatch, sitecustomize: str, tmp_path):
    """Make the next grading worker start with ``sitecustomize`` run at its interpreter's start-up."""
    import os

    from rewards import _mathgrade

    (tmp_path / "sitecustomize.py").write_text(sitecustomize)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    with _mathgrade._worker_lock:
        if _mathgrade._worker is not None:
            _mathgrade._worker.close()
        _mathgrade._worker = None
    return _mathgrade


def test_math_accuracy_worker_ignores_what_the_child_prints(monkeypatch, tmp_path):
    # The child prints on stdout at import, including lines that look like replies: scores must not change.
    noisy = 'import sys\nprint("hello from sitecustomize")\nprint("[0.0, 0.0, 0.0]")\nsys.stdout.flush()\n'
    mathgrade = _fresh_worker(monkeypatch, noisy, tmp_path)
    try:
        graded = _in_thread(lambda: math_accuracy(["\\boxed{3}", "\\boxed{\\frac{5}{6}}", "\\boxed{1}"], answer=["3", "5/6", "2"]))
        assert graded == [1.0, 1.0, 0.0]
        assert any("hello from sitecustomize" in line for line in mathgrade._worker.output)
    finally:
        _fresh_worker(monkeypatch, "", tmp_path)


def test_math_accuracy_worker_that_cannot_start_raises(monkeypatch, tmp_path):
    broken = 'import os, sys\nprint("cannot import the grader")\nsys.stdout.flush()\nos._exit(3)\n'
    _fresh_worker(monkeypatch, broken, tmp_path)
    errors = []

    def grade():
        try:
            math_accuracy(["\\boxed{3}"], answer=["3"])
        except rewards.GradingWorkerError as e:
            errors.append(str(e))

    try:
        _in_thread(lambda: grade() or True)
        assert len(errors) == 1 and "exited before it was ready (exit code 3" in errors[0] and "cannot import the grader" in errors[0], errors
        assert "\n" not in errors[0]
    finally:
        _fresh_worker(monkeypatch, "", tmp_path)


def test_math_accuracy_counts_answers_out_of_time():
    reward = make_math_accuracy_reward(timeout_s=0.5)
    slow = "\\boxed{9^{9^{99}}}"
    logged = []
    log = lambda name, value: logged.append((name, value))  # noqa: E731  (TRL's log_metric)
    assert reward([slow, "\\boxed{5}"], answer=["5", "5"], log_metric=log) == [0.0, 1.0]
    assert _in_thread(lambda: reward([slow, slow, "\\boxed{5}"], answer=["5"] * 3, log_metric=log)) == [0.0, 0.0, 1.0]
    assert logged == [("math_accuracy/timed_out", 1.0), ("math_accuracy/timed_out", 2.0)]


def test_rewards_import_nothing_from_attncredit():
    import subprocess
    import sys

    code = "import sys, rewards; print(sorted({m.split('.')[0] for m in sys.modules} & {'attncredit', 'torch', 'trl'}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr[-2000:]


def test_math_accuracy_keeps_an_outer_alarm():
    fired = []
    old = signal.signal(signal.SIGALRM, lambda *a: fired.append(True))
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        assert math_accuracy(["\\boxed{2}"], answer=["2"]) == [1.0]
        time.sleep(0.6)
        assert fired == [True]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def test_math_accuracy_without_fallback_needs_an_explicit_answer():
    strict = make_math_accuracy_reward(fallback=False)
    assert strict(["so the total is 72", "\\boxed{72}", "<answer>72</answer>"], answer=["72"] * 3) == [0.0, 1.0, 1.0]


def test_math_accuracy_needs_answer_column():
    with pytest.raises(RewardConfigError, match="'answer'"):
        math_accuracy(["\\boxed{1}"], prompts=["q"])
    with pytest.raises(RewardConfigError):
        make_math_accuracy_reward(timeout_s=0)


# ---------------------------------------------------------------------------------------------------- countdown

NUMS, TARGET = [19, 36, 55, 7], 65


def cd(*completions, numbers=NUMS, target=TARGET, reward=countdown):
    return reward(list(completions), numbers=[numbers] * len(completions), target=[target] * len(completions))


@pytest.mark.parametrize(
    "completion, expected",
    [
        ("<think>...</think> <answer>55 + 36 - 7 - 19</answer>", 1.0),
        ("<answer>(55 + 36) - (7 + 19)</answer>", 1.0),
        ("<answer> 55 + 36 - 7 - 19 = 65 </answer>", 1.0),
        ("<answer>65 = 55 + 36 - 7 - 19</answer>", 1.0),
        ("<answer>-(-55) + 36 - 7 - 19</answer>", 1.0),
        ("\\boxed{55 + 36 - 7 - 19}", 1.0),
        ("Let me check.\n55 + 36 - 7 - 19 = 65.", 1.0),  # no tag: the last line still counts when correct
        ("Let me check.\n55 + 36 - 7 - 18", 0.0),  # ... but earns no format score
        # well formed in the tag but wrong: TinyZero's format score
        ("<answer>55 + 36 - 7 - 18</answer>", 0.1),  # wrong number (18 not given), wrong value
        ("<answer>55 + 36 - 7 - 19 = 66</answer>", 0.1),  # a false equation is wrong, whatever the expression hits
        ("<answer>55 + 36 - 19</answer>", 0.1),  # 7 missing
        ("<answer>55 + 36 - 7 - 19 + 7 - 7</answer>", 0.1),  # 7 used three times, value still 65
        ("<answer>55 + 36 - 7 - 19 + 0</answer>", 0.1),  # extra number
        ("<answer>55 + 36 - 7 - 19 * 1</answer>", 0.1),  # extra number
        ("<answer>36 + 36 - 7</answer>", 0.1),  # 36 twice, 55 and 19 missing
        ("<answer>55 + 36 + 7 + 19</answer>", 0.1),  # right numbers, wrong value
        # disallowed syntax: nothing
        ("<answer>55 ** 1 + 36 - 7 - 19</answer>", 0.0),
        ("<answer>55 // 1 + 36 - 7 - 19</answer>", 0.0),
        ("<answer>55 ^ 1 + 36 - 7 - 19</answer>", 0.0),
        ("<answer>55 + 36 - 7 - 19 + x</answer>", 0.0),
        ("<answer>55 + 36 - 7 - 19.0</answer>", 0.0),
        ("<answer>55 + 36 - 7 - 19 % 20</answer>", 0.0),
        ("<answer>55 × 36</answer>", 0.0),
        ("<answer>__import__('os')</answer>", 0.0),
        ("<answer>1 + 2 = 3 = 3</answer>", 0.0),
        ("<answer>(55 + 36 - 7 - 19</answer>", 0.0),
        ("<answer></answer>", 0.0),
        # division by zero
        ("<answer>(55 + 36 + 7) / (19 - 19)</answer>", 0.0),
        ("<answer>55 / (36 - 36) + 7 - 19</answer>", 0.0),
        # no equation, unfinished tag, empty
        ("I give up.", 0.0),
        ("<think>55 + 36 - 7 - 19</think> <answer> 55 + 36 - 7 - 19", 0.0),
        ("", 0.0),
        (None, 0.0),
    ],
)
def test_countdown_scores(completion, expected):
    assert cd(completion) == [expected]


def test_countdown_exact_rational_arithmetic_and_repeated_numbers():
    assert cd("<answer>8 / (3 - 8 / 3)</answer>", numbers=[3, 3, 8, 8], target=24) == [1.0]  # floats give 23.999...
    assert cd("<answer>8 / (3 - 8 / 3)</answer>", numbers=[3, 8, 8], target=24) == [0.1]  # a 3 used twice
    assert cd("<answer>(3 + 3) * 8 / 2</answer>", numbers=[3, 3, 8, 8], target=24) == [0.1]  # 2 not given
    assert cd("<answer>3 + 3 + 8 + 8</answer>", numbers=[3, 3, 8, 8], target=22) == [1.0]
    assert evaluate_equation("(1 + 2) / 3")[0] == 1


def test_countdown_hostile_inputs_are_fast_and_safe():
    start = time.monotonic()
    out = cd(
        HUGE,
        HUGE + "<answer>55 + 36 - 7 - 19</answer>",
        "<answer>" + "(" * 10_000 + "1" + ")" * 10_000 + "</answer>",
        "<answer>" + "-" * 100_000 + "1</answer>",
        "<answer>" + "9" * 100_000 + "</answer>",
        "\n".join(["1 + 1"] * 100_000),
    )
    assert out == [0.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    assert time.monotonic() - start < 2


def test_countdown_conversational_extra_kwargs_and_format_score():
    completions = [[{"role": "assistant", "content": "<answer>55 + 36 - 7 - 19</answer>"}], [{"role": "assistant", "content": "<answer>1</answer>"}]]
    out = countdown(completions, numbers=[NUMS, NUMS], target=[TARGET, TARGET], prompts=["p", "p"], completion_ids=[[1], [2]], trainer_state=None, log_metric=print)
    assert out == [1.0, 0.1]
    strict = make_countdown_reward(format_score=0.0)
    assert cd("<answer>55 + 36 - 7 - 18</answer>", reward=strict) == [0.0]
    with pytest.raises(RewardConfigError):
        make_countdown_reward(format_score=1.5)
    with pytest.raises(RewardConfigError, match="target"):
        countdown(["<answer>1</answer>"], numbers=[[1]])


def test_countdown_solver_solutions_score_one():
    puzzles = generate_countdown(50, seed=7)
    solutions = [f"<answer>{solve_countdown(p['numbers'], p['target'])}</answer>" for p in puzzles]
    assert countdown(solutions, numbers=[p["numbers"] for p in puzzles], target=[p["target"] for p in puzzles]) == [1.0] * 50
    generated = [f"<answer>{p['solution']}</answer>" for p in puzzles]
    assert countdown(generated, numbers=[p["numbers"] for p in puzzles], target=[p["target"] for p in puzzles]) == [1.0] * 50


# ------------------------------------------------------------------------------------------------------- format

R1_PROMPT = [{"role": "user", "content": "... And return the final answer in <answer> </answer> tags."}]
BOXED_PROMPT = [{"role": "user", "content": "... put your final answer within \\boxed{}."}]


@pytest.mark.parametrize(
    "completion, expected",
    [
        ("<think>reasoning</think>\n<answer>42</answer>", 1.0),
        ("reasoning</think> <answer>42</answer>\n", 1.0),  # <think> prefilled by the chat template
        ("<think>reasoning</think> <answer>42</answer> trailing text", 0.0),
        ("<think>reasoning</think> text <answer>42</answer>", 0.0),
        ("<think></think><answer>42</answer>", 0.0),
        ("<think>reasoning</think><answer> </answer>", 0.0),
        ("<think>a</think><answer>1</answer><answer>2</answer>", 0.0),
        ("<answer>42</answer><think>reasoning</think>", 0.0),
        ("<think>reasoning <answer>42</answer>", 0.0),
        ("\\boxed{42}", 0.0),
        ("", 0.0),
        (None, 0.0),
        (HUGE, 0.0),
    ],
)
def test_format_r1(completion, expected):
    assert format_r1([completion]) == [expected]


@pytest.mark.parametrize(
    "completion, expected",
    [("so \\boxed{42}.", 1.0), ("\\boxed{\\frac{1}{2}}", 1.0), ("\\boxed{}", 0.0), ("\\boxed{42", 0.0), ("42", 0.0), (None, 0.0), (HUGE, 0.0)],
)
def test_format_boxed(completion, expected):
    assert format_boxed([completion]) == [expected]


def test_format_auto_follows_the_prompt():
    r1, boxed = "<think>a</think><answer>1</answer>", "\\boxed{1}"
    assert format_reward([r1, boxed], prompts=[R1_PROMPT, R1_PROMPT]) == [1.0, 0.0]
    assert format_reward([r1, boxed], prompts=[BOXED_PROMPT, BOXED_PROMPT]) == [0.0, 1.0]
    assert format_reward([r1, boxed, "plain"]) == [1.0, 1.0, 0.0]  # no prompts: either style


# ----------------------------------------------------------------------------------------------------- registry


def test_registry_names_and_errors():
    assert list(rewards.REWARD_FUNCS) == [
        "math_accuracy", "countdown", "countdown_accuracy", "format", "format_r1", "format_boxed", "tag_count",
        "arithmetic_answer",
    ]
    for name, func in rewards.REWARD_FUNCS.items():
        assert func.__name__ == name
    assert get_reward_funcs(["countdown", "format"]) == [countdown, format_reward]
    assert get_reward_funcs("math_accuracy, format_boxed") == [math_accuracy, format_boxed]
    custom = lambda completions, **kw: [0.0] * len(completions)  # noqa: E731
    assert get_reward_funcs(["countdown", custom])[1] is custom
    with pytest.raises(RewardConfigError, match="unknown reward function 'accuracy'; allowed: math_accuracy, countdown"):
        get_reward_funcs(["accuracy"])
    with pytest.raises(RewardConfigError, match="no reward functions"):
        get_reward_funcs([])
    assert required_columns(["math_accuracy", "countdown", "format"]) == ["answer", "numbers", "target"]


def test_tag_count_grades_each_r1_tag_present_once():
    from rewards import get_reward_funcs

    (tag_count,) = get_reward_funcs(["tag_count"])
    completions = [
        "<think> 3 + 5 = 8 </think> <answer> 3 + 5 </answer>",
        "no tags at all",
        "the answer is <answer> </answer>",
        "<answer> 1 </answer> <answer> 2 </answer>",  # repeated tags earn nothing
        [{"role": "assistant", "content": "<think> x </think>"}],
        None,
    ]
    assert tag_count(completions) == [1.0, 0.0, 0.5, 0.0, 0.5, 0.0]
