"""scripts/study_learning.py without a model: the task generator, its held-out split, the reward and the level rule."""

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "study_learning.py"


@pytest.fixture(scope="module")
def study():
    spec = importlib.util.spec_from_file_location("study_learning", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("level", [1, 2, 3, 4])
def test_held_out_problems_are_distinct_correct_and_never_trained_on(study, level):
    test = study.test_problems(level, 128)
    assert len({text for text, _ in test}) == 128
    assert test == study.test_problems(level, 128)  # the same set for every run
    for text, value in test:
        assert eval(text) == value  # the expressions are plain Python arithmetic
    train = study.train_problems(level, 2000, seed=0, exclude={text for text, _ in test})
    assert not {text for text, _ in train} & {text for text, _ in test}
    assert train != study.train_problems(level, 2000, seed=1, exclude=set())


def test_a_held_out_set_larger_than_a_quarter_of_the_level_is_refused(study, capsys):
    with pytest.raises(SystemExit) as info:
        study.test_problems(1, study.distinct_problems(1) // 4 + 1)
    assert info.value.code == 2
    assert "num-test 226 is more than a quarter of level 1's 900 distinct problems" in capsys.readouterr().err


def test_accuracy_reads_the_last_integer(study):
    completions = [
        [{"role": "assistant", "content": "12 + 3 = 15. The answer is 15."}],
        [{"role": "assistant", "content": "First 12 + 3 = 15, so 16"}],
        [{"role": "assistant", "content": "The result is -6"}],
        [{"role": "assistant", "content": "no number"}],
        [{"role": "assistant", "content": "It is 1,170."}],
    ]
    assert study.accuracy(completions, ["15", "15", "-6", "0", "1170"]) == [1.0, 0.0, 1.0, 0.0, 1.0]


def test_level_rule_takes_the_one_nearest_30_percent_within_10_to_50(study, capsys):
    results = {1: {"avg@k": 0.62}, 2: {"avg@k": 0.45}, 3: {"avg@k": 0.22}, 4: {"avg@k": 0.04}}
    assert study.choose_level(results) == 3
    with pytest.raises(SystemExit):
        study.choose_level({1: {"avg@k": 0.9}, 2: {"avg@k": 0.05}})
    assert "no level has an untrained held-out accuracy in [10%, 50%]" in capsys.readouterr().err


def test_start_accuracy_averages_each_problems_answers_with_the_study_reward(study, tiny_qwen2, tmp_path, monkeypatch):
    """``start``: k answers per held-out problem through the evaluation loop, each scored against its own problem's
    answer; avg@k is their mean, groups_with_spread the share of problems with both right and wrong answers."""
    answers = []

    def every_other(completions, answer, **kwargs):  # a random tiny model answers nothing right: a known pattern
        answers.extend(answer)
        return [float(i % 2 == 0) for i in range(len(completions))]

    monkeypatch.setattr(study, "accuracy", every_other)
    args = argparse.Namespace(model=str(tiny_qwen2), levels=[1, 2], num_test=3, k=2, temperature=0.6, max_new_tokens=3,
                              batch_size=8, cache="auto", threads=None, out=str(tmp_path))
    results = study.start_accuracy(args)
    assert answers == [str(value) for level in (1, 2) for _, value in study.test_problems(level, 3) for _ in range(2)]
    for level in (1, 2):
        assert results[level]["avg@k"] == 0.5 and results[level]["groups_with_spread"] == 1.0
        assert isinstance(results[level]["example"], str)
    saved = json.loads((tmp_path / "start_accuracy.json").read_text())
    assert saved["k"] == 2 and saved["results"]["2"]["avg@k"] == 0.5
