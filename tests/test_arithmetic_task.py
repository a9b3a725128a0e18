"""The study task without a model: the 'arithmetic' dataset (held-out split, train stream, options), its reward
``arithmetic_answer`` and the difficulty selection rule (attncredit/data/arithmetic.py)."""

import re

import pytest

from attncredit.data import load_dataset_by_name
from attncredit.data.arithmetic import CANDIDATES, arithmetic_split, choose_setting, evaluate
from attncredit.errors import ConfigError
from rewards import arithmetic_answer, get_reward_funcs


@pytest.mark.parametrize("name", list(CANDIDATES))
def test_held_out_problems_are_distinct_correct_shared_by_seeds_and_never_trained_on(name):
    settings = CANDIDATES[name]
    test = arithmetic_split("test", 640, seed=0, **settings)
    assert test == arithmetic_split("test", 640, seed=5, **settings)  # every run evaluates on the same problems
    assert len({p["expression"] for p in test}) == 640
    assert all(eval(p["expression"]) == p["value"] for p in test)  # plain Python arithmetic
    train = arithmetic_split("train", 3000, seed=0, num_test=640, **settings)
    assert not {p["expression"] for p in train} & {p["expression"] for p in test}
    assert train != arithmetic_split("train", 3000, seed=1, num_test=640, **settings)
    assert train[:100] == arithmetic_split("train", 100, seed=0, num_test=640, **settings)


def test_multiplication_binds_tighter():
    assert evaluate([2, 3, 4, 5], ["+", "*", "-"]) == 2 + 3 * 4 - 5
    problems = arithmetic_split("test", 50, num_operands=4, min_operand=1, max_operand=9, operators="+-*")
    assert all(eval(p["expression"]) == p["value"] for p in problems)


def test_dataset_rows_and_option_errors():
    rows = load_dataset_by_name("arithmetic", "test", limit=3)
    row = rows[0]
    assert row["task"] == "arithmetic" and row["answer"] == str(eval(row["expression"]))
    assert row["prompt"][-1] == {"role": "user", "content": row["prompt"][-1]["content"]}
    assert row["prompt"][-1]["content"].startswith(f"What is {row['expression']}?")
    assert [m["role"] for m in row["prompt"]] == ["user", "assistant", "user"]  # one worked example first
    assert len(load_dataset_by_name("arithmetic", "test")) == 640
    for options, message in [
        ({"operators": "+/"}, "operators must be a non-empty string of '+-*'"),
        ({"operators": 3}, "dataset option operators must be a string"),
        ({"num_operands": 1}, "num_operands must be >= 2"),
        ({"num_operands": 2, "max_operand": 9, "operators": "+"}, "num_test 640 is more than a quarter of the 81"),
        ({"colour": 1}, "unknown option 'colour' for dataset 'arithmetic'"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_dataset_by_name("arithmetic", "test", **options)
    with pytest.raises(ConfigError, match="prompt_template must be unset"):
        load_dataset_by_name("arithmetic", "test", template="boxed")


def test_reward_reads_only_the_last_answer_line():
    completions = [
        [{"role": "assistant", "content": "Step 1: 2 + 3 = 5\nStep 2: 5 + 4 = 9\nAnswer: 9"}],
        [{"role": "assistant", "content": "**Answer:** 9."}],
        [{"role": "assistant", "content": "Answer: 9\nAnswer: 8"}],  # the last Answer line counts
        [{"role": "assistant", "content": "2 + 3 + 4 = 9"}],  # no Answer line
        [{"role": "assistant", "content": "Answer: 9 apples"}],
        "answer: -4",
    ]
    assert arithmetic_answer(completions, ["9", "9", "9", "9", "9", "-4"]) == [1.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    assert get_reward_funcs("arithmetic_answer") == [arithmetic_answer]


def test_selection_rule_takes_the_one_nearest_30_percent_with_enough_tokens():
    results = {"a": {"avg@4": 0.62, "mean_tokens": 60}, "b": {"avg@4": 0.45, "mean_tokens": 50},
               "c": {"avg@4": 0.28, "mean_tokens": 30}, "d": {"avg@4": 0.12, "mean_tokens": 80}}
    assert choose_setting(results) == "b"  # c is nearest 30% but too short
    with pytest.raises(ValueError, match=r"no candidate has avg@4 in \[10%, 50%\] and >= 40 tokens: a: avg@4 0.620"):
        choose_setting({"a": results["a"], "c": results["c"]})
