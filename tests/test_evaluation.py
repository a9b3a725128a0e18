"""Evaluation: pass@k / avg@k by hand, scoring of real benchmark answers, evaluate.py end to end on a tiny model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from math import comb
from pathlib import Path

import pytest

from attncredit.errors import ConfigError
from attncredit.evaluation import (
    BENCHMARKS,
    EvalPlan,
    avg_at_k,
    benchmark_metrics,
    default_ks,
    parse_benchmarks,
    pass_at_k,
    sample_and_score,
    score_completions,
)
from attncredit.evaluation.generate import SamplingSettings, resolve_backend

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "n, c, k, expected",
    [
        (5, 2, 1, 2 / 5),
        (5, 2, 2, 1 - 3 / 10),  # 1 - C(3,2)/C(5,2)
        (5, 2, 3, 1 - 1 / 10),  # 1 - C(3,3)/C(5,3)
        (5, 2, 4, 1.0),  # fewer than k wrong answers: some correct one is always drawn
        (16, 0, 16, 0.0),
        (16, 16, 1, 1.0),
        (16, 4, 1, 0.25),
        (16, 4, 4, 1 - 495 / 1820),  # 1 - C(12,4)/C(16,4)
        (1, 1, 1, 1.0),
        (1, 0, 1, 0.0),
    ],
)
def test_pass_at_k_hand_values(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_matches_binomials_everywhere():
    for n in range(1, 21):
        for c in range(n + 1):
            for k in range(1, n + 1):
                exact = 1 - comb(n - c, k) / comb(n, k)
                assert pass_at_k(n, c, k) == pytest.approx(exact, abs=1e-12)


@pytest.mark.parametrize("n, c, k", [(4, 1, 0), (4, 1, 5), (0, 0, 1), (4, 5, 1), (4, -1, 1), (4, 1, 1.5)])
def test_pass_at_k_rejects_bad_input(n, c, k):
    with pytest.raises(ConfigError):
        pass_at_k(n, c, k)


def test_avg_at_k_and_benchmark_metrics():
    assert avg_at_k([1, 0, 0, 1]) == 0.5
    assert avg_at_k([True] * 16) == 1.0
    with pytest.raises(ConfigError):
        avg_at_k([])
    problems = [[1, 0, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]]
    m = benchmark_metrics(problems)
    assert m["avg@4"] == pytest.approx((0.25 + 1 + 0) / 3)
    assert m["pass@1"] == pytest.approx(m["avg@4"])  # pass@1 from n samples is the mean accuracy
    assert m["pass@2"] == pytest.approx((0.5 + 1 + 0) / 3)  # 1 - C(3,2)/C(4,2) = 1/2 for the first problem
    assert m["pass@4"] == pytest.approx(2 / 3)
    assert (m["num_problems"], m["num_samples"]) == (3, 4)
    assert benchmark_metrics([[1], [0], [1], [1]])["pass@1"] == 0.75
    assert default_ks(16) == [1, 2, 4, 8, 16] and default_ks(6) == [1, 2, 4, 6] and default_ks(1) == [1]
    with pytest.raises(ConfigError, match="k in 1..4"):
        benchmark_metrics(problems, ks=[8])
    with pytest.raises(ConfigError):
        benchmark_metrics([[1, 0], [1]])


# ---------------------------------------------------------------------------------------------------------------
# Benchmarks and scoring on real answers
# ---------------------------------------------------------------------------------------------------------------
def test_parse_benchmarks():
    assert [b.name for b in parse_benchmarks("gsm8k, AIME2025,gsm8k")] == ["gsm8k", "aime2025"]
    assert [b.name for b in parse_benchmarks("table4")] == ["aime2024", "aime2025", "amc23", "math500", "olympiadbench"]
    assert BENCHMARKS["aime2025"].default_k == 16 and BENCHMARKS["aime2025"].headline == "avg@16"
    assert BENCHMARKS["gsm8k"].headline == "pass@1"
    with pytest.raises(ConfigError, match="unknown benchmark 'gsm9k'"):
        parse_benchmarks("gsm9k")
    with pytest.raises(ConfigError, match="no benchmark"):
        parse_benchmarks(" , ")


def _rows(benchmark: str, limit: int | None = None):
    return BENCHMARKS[benchmark].load(limit=limit, seed=42).to_list()


def _as_chat(texts):
    return [[{"role": "assistant", "content": t}] for t in texts]


def test_gsm8k_scoring_on_real_golds():
    row = _rows("gsm8k", 1)[0]  # Janet's ducks: 16 - 3 - 4 = 9 eggs at $2
    assert row["answer"] == "18" and row["solution"].rstrip().endswith("#### 18")
    completions = [
        "She sells 16 - 3 - 4 = 9 eggs for 9 * 2 = 18 dollars.\n\nThe answer is \\boxed{18}.",
        "9 * 2 = \\boxed{\\$18.00}",
        "9 eggs at $2 each is \\boxed{18 \\text{ dollars}}",
        "She makes \\boxed{20} dollars.",
        "She makes \\boxed{18} dollars... wait, no: \\boxed{16}",  # the last boxed answer counts
        "",
    ]
    rewards, correct = score_completions("math", _as_chat(completions), [row] * len(completions))
    assert correct == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0]
    assert rewards == correct
    # The raw GSM8K solution ("... #### 18") also works as the gold.
    gold_solution = dict(row, answer=row["solution"])
    _, correct = score_completions("math", ["\\boxed{18}", "\\boxed{9}"], [gold_solution] * 2)
    assert correct == [1.0, 0.0]


def test_aime2025_scoring_on_real_golds():
    row = _rows("aime2025", 1)[0]
    assert row["answer"] == "70"
    texts = ["So the sum of bases is \\boxed{70}.", "\\boxed{070}", "\\boxed{71}", "The answer is 70"]
    _, correct = score_completions("math", _as_chat(texts), [row] * len(texts))
    assert correct == [1.0, 1.0, 0.0, 1.0]  # the last one: the reward's last-number fallback, as in training


def test_champ_scoring_on_real_golds():
    rows = {r["answer"]: r for r in _rows("champ", 24)}
    cases = [
        ("239", "\\boxed{239}", 1.0),
        ("239", "\\boxed{238}", 0.0),
        ("2^(n-1)", "The count doubles each time, so \\boxed{2^{n-1}}.", 1.0),
        ("2^(n-1)", "\\boxed{2^{n}}", 0.0),
        ("No", "Such a coloring cannot exist. \\boxed{\\text{No}}", 1.0),
        ("No", "\\boxed{Yes}", 0.0),
        ("5/14", "\\boxed{\\frac{5}{14}}", 1.0),
        ("5/14", "\\boxed{\\frac{5}{13}}", 0.0),
    ]
    texts = [c[1] for c in cases]
    _, correct = score_completions("math", _as_chat(texts), [rows[c[0]] for c in cases])
    assert correct == [c[2] for c in cases]


def test_countdown_scoring_accuracy_is_reward_one():
    row = _rows("countdown", 1)[0]
    nums, target = row["numbers"], row["target"]
    assert len(nums) == 4
    texts = [
        f"<think> try it </think> <answer> {row['answer']} </answer>",  # the reference solution: 1.0
        f"<think> close </think> <answer> {' + '.join(map(str, nums))} </answer>",  # all numbers, wrong value
        f"<answer> {nums[0]} + {nums[1]} </answer>",  # misses numbers: format score only
        f"The equation is {row['answer']}",  # no tags, correct on the last line: still 1.0 (training rule)
        "<think> no idea </think>",
    ]
    if sum(nums) == target:  # keep case 2 wrong
        texts[1] = f"<answer> {' * '.join(map(str, nums))} + 1 </answer>"
    rewards, correct = score_completions("countdown", _as_chat(texts), [row] * len(texts))
    assert rewards == [1.0, 0.1, 0.1, 1.0, 0.0]
    assert correct == [1.0, 0.0, 0.0, 1.0, 0.0]


def test_strict_scoring_counts_only_boxed_or_tagged_answers():
    gsm8k = _rows("gsm8k", 1)[0]
    # A real false positive of the text fallback (SmolLM2 on GSM8K problem 2, gold 3): math-verify reads the
    # stated "2 * 1.5" as the answer, although the completion concludes 2.
    bolts = dict(_rows("gsm8k", 2)[1])
    text = "6. The final answer is 2 * 1.5 = 2 bolts of blue fiber.\n\nSo, the answer is 2."
    texts = ["She makes 18 dollars.", "\\boxed{18}", "<answer> 18 </answer>"]
    rows = [gsm8k] * 3
    assert score_completions("math", texts + [text], rows + [bolts])[1] == [1.0, 1.0, 1.0, 1.0]
    assert score_completions("math", texts + [text], rows + [bolts], strict=True)[1] == [0.0, 1.0, 1.0, 0.0]
    row = _rows("countdown", 1)[0]
    texts = [f"The equation is {row['answer']}", f"<answer> {row['answer']} </answer>", f"\\boxed{{{row['answer']}}}"]
    assert score_completions("countdown", texts, [row] * 3, strict=True) == ([0.0, 1.0, 1.0], [0.0, 1.0, 1.0])


def test_countdown_benchmark_is_the_split_held_out_in_training():
    from attncredit.data import load_dataset_by_name

    held_out = load_dataset_by_name("countdown", "test", limit=5, seed=42)  # recipes train with seed 42
    assert BENCHMARKS["countdown"].load(limit=5, seed=42)["prompt"] == held_out["prompt"]


def test_prompt_and_end_ids_are_the_trainers(tiny_qwen2, tmp_path):
    """Evaluation (both backends) and the rhythm analysis feed the model the prompt ids the trainer generates from
    (AnchorGRPOTrainer._tokenize_prompts) and stop at TRL's end tokens, for both templates (r1 with its assistant
    prefill, boxed without). The model's generation config names an end token other than the tokenizer's EOS, where
    TRL's rule (tokenizer EOS first, then the config's) differs from the config's alone."""
    import shutil

    from datasets import Dataset
    from transformers import GenerationConfig

    from attncredit import AnchorGRPOConfig, AnchorGRPOTrainer
    from attncredit.analysis.responses import sample_responses
    from attncredit.evaluation.generate import end_token_ids, make_generator
    from attncredit.models import load_tokenizer

    path = tmp_path / "model"
    shutil.copytree(tiny_qwen2, path)
    tokenizer = load_tokenizer(str(path))
    other_end = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    config = GenerationConfig.from_pretrained(path)
    config.eos_token_id = other_end
    config.save_pretrained(path)
    trainer = AnchorGRPOTrainer(
        model=str(path),
        reward_funcs=lambda completions, **kw: [0.0] * len(completions),
        args=AnchorGRPOConfig(output_dir=str(tmp_path / "out"), report_to="none", use_cpu=True,
                              per_device_train_batch_size=2, num_generations=2, max_completion_length=4),
        train_dataset=Dataset.from_list(_rows("gsm8k", 2)),
        processing_class=tokenizer,
    )
    assert trainer.eos_token_ids == [tokenizer.eos_token_id, other_end]
    generator = make_generator(str(path), backend="hf")
    assert generator.end_ids == trainer.eos_token_ids
    assert end_token_ids(tokenizer, GenerationConfig.from_pretrained(path)) == trainer.eos_token_ids  # vLLM's
    for name in ("countdown", "gsm8k"):
        prompts = [row["prompt"] for row in _rows(name, 2)]
        ids, _, _ = trainer._tokenize_prompts(prompts)
        ids = [list(x) for x in ids]
        assert generator.render(prompts) == ids
        analysed = sample_responses(generator, prompts, SamplingSettings(n=1, temperature=1.0, max_new_tokens=3))
        assert analysed.prompt_ids == ids and analysed.end_ids == trainer.eos_token_ids
        assert tokenizer.decode(ids[0]).endswith("<think>") == (name == "countdown")  # the prefill stays open
    generator.tokenizer.chat_template = None
    with pytest.raises(ConfigError, match="no chat template"):
        generator.render([[{"role": "user", "content": "2 + 2?"}]])


def test_sample_and_score_keeps_each_problems_answers_with_their_scores(tiny_qwen2):
    """The loop under evaluate_benchmark and the learning study: n answers per row in row order, each scored with
    its own row, the score names merged into the answer's record; a scorer that drops answers is refused."""
    from attncredit.evaluation.generate import make_generator

    generator = make_generator(str(tiny_qwen2), backend="hf", batch_size=4)
    rows = [{"prompt": [{"role": "user", "content": f"What is {i} + 1?"}], "answer": str(i + 1)} for i in range(3)]
    sampling = SamplingSettings(n=2, temperature=1.0, max_new_tokens=3)
    seen = []

    def score(completions, flat_rows):
        seen.extend(zip(completions, flat_rows))
        return [{"reward": float(row["answer"]), "chars": len(c[0]["content"])} for c, row in zip(completions, flat_rows)]

    records, seconds = sample_and_score(generator, rows, sampling, score)
    assert seconds > 0 and [len(group) for group in records] == [2, 2, 2]
    assert [row["answer"] for _, row in seen] == ["1", "1", "2", "2", "3", "3"]
    assert [c[0]["content"] for c, _ in seen] == [r["completion"] for group in records for r in group]
    for row, group in zip(rows, records):
        for r in group:
            assert list(r) == ["completion", "reward", "chars", "num_tokens", "finish_reason"]
            assert r["reward"] == float(row["answer"]) and r["chars"] == len(r["completion"]) and 1 <= r["num_tokens"] <= 3
    with pytest.raises(ValueError, match="score returned 5 results for 6 answers"):
        sample_and_score(generator, rows, sampling, lambda completions, flat_rows: [{}] * 5)


# ---------------------------------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------------------------------
def test_sampling_settings_and_plan_validation():
    with pytest.raises(ConfigError, match="greedy"):
        SamplingSettings(n=4, temperature=0.0)
    for bad in (dict(n=0), dict(top_p=0.0), dict(temperature=-1.0), dict(max_new_tokens=0)):
        with pytest.raises(ConfigError):
            SamplingSettings(**bad)
    plan = EvalPlan(parse_benchmarks("gsm8k,aime2025"))
    assert [plan.sampling_for(b).n for b in plan.benchmarks] == [1, 16]  # the paper's k per benchmark
    assert plan.sampling_for(plan.benchmarks[1]).temperature == 0.6
    greedy = EvalPlan(parse_benchmarks("aime2025"), temperature=0.0)
    assert greedy.sampling_for(greedy.benchmarks[0]).n == 1
    with pytest.raises(ConfigError, match="k in 1..n-samples=1"):
        EvalPlan(parse_benchmarks("gsm8k"), pass_ks=[4]).check()
    with pytest.raises(ConfigError):
        EvalPlan(parse_benchmarks("gsm8k"), limit=0).check()
    with pytest.raises(ConfigError, match="unknown backend"):
        resolve_backend("tgi")


# ---------------------------------------------------------------------------------------------------------------
# attncredit eval (scripts/evaluate.py is a thin wrapper of it)
# ---------------------------------------------------------------------------------------------------------------
def test_evaluate_script_end_to_end(tiny_qwen2, tmp_path):
    out = tmp_path / "eval"
    cmd = [
        sys.executable, "-m", "attncredit", "eval", "--model", str(tiny_qwen2),
        "--benchmarks", "gsm8k,countdown", "--limit", "2", "--n-samples", "2", "--max-new-tokens", "6",
        "--backend", "hf", "--out", str(out), "--seed", "1", "--threads", "1",
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "benchmark" in proc.stdout and "gsm8k" in proc.stdout and "pass@2" in proc.stdout
    results = json.loads((out / "results.json").read_text())
    settings = results["settings"]
    assert settings["backend"] == "hf" and settings["model"] == str(tiny_qwen2)
    assert settings["samples_per_benchmark"] == {"gsm8k": 2, "countdown": 2}
    assert settings["max_new_tokens"] == 6 and settings["temperature"] == 0.6 and settings["seed"] == 1
    assert settings["command"].startswith("attncredit eval --model ")
    for name in ("gsm8k", "countdown"):
        entry = results["benchmarks"][name]
        metrics, problems = entry["metrics"], entry["problems"]
        assert metrics["num_problems"] == 2 and metrics["num_samples"] == 2
        assert {"avg@2", "pass@1", "pass@2", "value", "headline", "format", "mean_tokens"} <= set(metrics)
        assert len(problems) == 2 and all(len(p["samples"]) == 2 for p in problems)
        for p in problems:
            assert p["prompt"][0]["role"] in ("system", "user") and isinstance(p["answer"], str)
            assert p["num_correct"] == sum(s["correct"] for s in p["samples"])
            for s in p["samples"]:
                assert isinstance(s["completion"], str) and 1 <= s["num_tokens"] <= 6
                assert s["finish_reason"] in ("stop", "length") and s["reward"] in (0.0, 0.1, 1.0)
        # the aggregate is recomputable from the stored generations
        recomputed = benchmark_metrics([[s["correct"] for s in p["samples"]] for p in problems])
        assert metrics["avg@2"] == pytest.approx(recomputed["avg@2"])
        assert metrics["pass@2"] == pytest.approx(recomputed["pass@2"])
    assert "numbers" in results["benchmarks"]["countdown"]["problems"][0]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--benchmarks", "gsm9k"], "unknown benchmark 'gsm9k'"),
        (["--benchmarks", "math500"], "hub"),  # a hub benchmark offline: the loader's one-line error
        (["--n-samples", "0"], "samples per problem"),
        (["--n-samples", "2", "--pass-k", "4"], "pass@k needs k"),
        (["--pass-k", "x"], "comma-separated integers"),
        (["--temperature", "0", "--n-samples", "4"], "greedy"),
        (["--limit", "-1"], "limit"),
        (["--model", "no-such-model"], "unknown model"),
        (["--backend", "tgi"], "invalid choice"),
        (["--dtype", "int3"], "unknown dtype"),
    ],
)
def test_evaluate_script_bad_input(tiny_qwen2, capsys, monkeypatch, args, message):
    from attncredit.cli import eval as evaluate

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    argv = ["--model", str(tiny_qwen2), "--limit", "1", "--max-new-tokens", "2", "--backend", "hf", *args]
    try:
        code = evaluate.main(argv)
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("ATTNCREDIT_VLLM_PYTHON"), reason="set ATTNCREDIT_VLLM_PYTHON to a vLLM venv's python")
def test_evaluate_script_vllm_backend(tiny_qwen2, tmp_path):
    """The same run through vLLM (its CPU build here): same results.json layout, backend recorded."""
    out = tmp_path / "eval-vllm"
    cmd = [
        os.environ["ATTNCREDIT_VLLM_PYTHON"], str(ROOT / "scripts" / "evaluate.py"), "--model", str(tiny_qwen2),
        "--benchmarks", "gsm8k,countdown", "--limit", "2", "--n-samples", "2", "--max-new-tokens", "6",
        "--backend", "vllm", "--out", str(out),
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "VLLM_CPU_KVCACHE_SPACE": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["settings"]["backend"] == "vllm" and "vllm_version" in results["settings"]
    for name in ("gsm8k", "countdown"):
        problems = results["benchmarks"][name]["problems"]
        assert len(problems) == 2 and all(len(p["samples"]) == 2 for p in problems)
        assert all(1 <= s["num_tokens"] <= 6 for p in problems for s in p["samples"])


def test_evaluate_script_caps_answers_on_a_cpu(tiny_qwen2, tmp_path, capsys, monkeypatch):
    """Without --max-new-tokens, HF generate on a CPU writes 256-token answers (1024 took minutes per problem)."""
    from attncredit.cli import eval as evaluate
    import torch

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "eval"
    argv = ["--model", str(tiny_qwen2), "--benchmarks", "countdown3", "--limit", "1", "--backend", "hf", "--out", str(out), "--quiet"]
    assert evaluate.main(argv) == 0
    assert json.loads((out / "results.json").read_text())["settings"]["max_new_tokens"] == 256
    assert "capped at 256 new tokens" in capsys.readouterr().err


def test_evaluate_refuses_to_replace_an_earlier_results_json(tiny_qwen2, tmp_path, capsys, monkeypatch):
    """A second evaluation into the same folder is one error line naming --overwrite, before the model loads; with
    --overwrite it replaces results.json."""
    from attncredit.cli import eval as evaluate
    from attncredit import evaluation

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "eval"
    out.mkdir()
    (out / "results.json").write_text('{"earlier": true}')
    argv = ["--model", str(tiny_qwen2), "--benchmarks", "countdown3", "--limit", "1", "--max-new-tokens", "2",
            "--backend", "hf", "--out", str(out), "--quiet"]  # fmt: skip
    make_generator = evaluation.make_generator
    monkeypatch.setattr(evaluation, "make_generator", lambda *a, **k: pytest.fail("model loaded"))
    assert evaluate.main(argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error: ") and "results.json exists" in err[0] and "--overwrite" in err[0], err
    assert json.loads((out / "results.json").read_text()) == {"earlier": True}
    monkeypatch.setattr(evaluation, "make_generator", make_generator)
    assert evaluate.main([*argv, "--overwrite"]) == 0
    assert "benchmarks" in json.loads((out / "results.json").read_text())
