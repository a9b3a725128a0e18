"""`attncredit grpo` and its script form recipes/grpo_anchor.py: bad input ends with one error line and exit code 2;
the default run (the packaged default config) trains."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "grpo_anchor.py"


def load_recipe():
    """recipes/grpo_anchor.py, the thin script over attncredit.cli.grpo (not installed: loaded by path)."""
    spec = importlib.util.spec_from_file_location("grpo_anchor", RECIPE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve field types through the module
    spec.loader.exec_module(module)
    return module


def run_main(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        load_recipe().main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    return exit_info.value.code, err


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


BASE = "output_dir: {out}\nreport_to: none\nuse_cpu: true\nmax_steps: 1\n"


@pytest.mark.parametrize(
    "config, expected",
    [
        ("model_name_or_path: no-such-model\n", "unknown model 'no-such-model'"),
        ("model_name_or_path: {tiny}\ndataset_name: no_such_set\n", "unknown dataset 'no_such_set'"),
        ("model_name_or_path: {tiny}\nreward_funcs: [telepathy]\n", "unknown reward function 'telepathy'"),
        ("model_name_or_path: {tiny}\nlearning_rat: 0.1\n", "unknown config key 'learning_rat'"),
        ("model_name_or_path: {tiny}\ncredit_strategy: anchors\n", "credit_strategy='anchors' is invalid"),
        ("model_name_or_path: {tiny}\ncredit_window: 0\n", "credit_window=0 is invalid"),
        ("model_name_or_path: {tiny}\ndataset_name: {nocols}\nreward_funcs: [math_accuracy]\n", "train_dataset is missing column 'answer' (needed by reward 'math_accuracy'); required: prompt, answer; found: prompt"),
        ("model_name_or_path: [unclosed\n", "malformed YAML"),
    ],
    ids=["model", "dataset", "reward", "config-key", "strategy", "window", "columns", "yaml"],
)
def test_bad_input_is_one_error_line_with_exit_code_2(tmp_path, tiny_qwen2, capsys, config, expected):
    nocols = write(tmp_path, "questions.jsonl", json.dumps({"prompt": "What is 2 + 2?"}) + "\n")
    text = BASE.format(out=tmp_path / "out") + config.format(tiny=tiny_qwen2, nocols=nocols)
    code, err = run_main(["--config", write(tmp_path, "bad.yaml", text)], capsys)
    errors = [line for line in err if line.startswith("error: ")]
    assert code == 2
    assert len(errors) == 1 and err[-1] == errors[0] and expected in errors[0], err
    assert not any("Traceback" in line for line in err)


def _setup_existing_run(out):
    out.mkdir()
    (out / "metrics.jsonl").write_text('{"step": 1, "loss": 0.5}\n')


def _setup_torn_checkpoint(out):
    (out / "checkpoint-2").mkdir(parents=True)
    (out / "checkpoint-2" / "trainer_state.json").write_text('{"global_st')  # killed while writing it


def _setup_file_in_the_way(out):
    out.write_text("a file where a folder should be")


@pytest.mark.parametrize(
    "setup, extra, config, expected",
    [
        (_setup_existing_run, [], "", "holds another run's outputs (metrics.jsonl); resume it with --resume_from_checkpoint true, start over with --overwrite_output_dir true"),
        (_setup_torn_checkpoint, ["--resume_from_checkpoint", "true"], "", "only incomplete checkpoint-2 in"),
        (_setup_file_in_the_way, [], "", "is not a writable folder"),
        (None, [], "model_name_or_path: {tmp}/no/such/model\n", "model folder '{tmp}/no/such/model' does not exist"),
        (None, [], "dataset_name: {tmp}/empty.jsonl\n", "dataset file '{tmp}/empty.jsonl' is empty"),
        (None, [], "dataset_name: {tmp}/broken.jsonl\n", "dataset file '{tmp}/broken.jsonl' cannot be read as json"),
    ],
    ids=["rerun", "torn-checkpoint", "output-dir-under-a-file", "model-folder", "empty-dataset", "broken-dataset"],
)
def test_paths_and_reruns_are_one_error_line_before_the_model_loads(tmp_path, tiny_qwen2, capsys, monkeypatch, setup, extra, config, expected):
    import transformers

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the error")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", no_model)
    out = tmp_path / "out"
    if setup is not None:
        setup(out)
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "broken.jsonl").write_text('{"prompt": "unclosed\n')
    text = BASE.format(out=out) + f"model_name_or_path: {tiny_qwen2}\n" + config.format(tmp=tmp_path)
    code, err = run_main(["--config", write(tmp_path, "run.yaml", text), *extra], capsys)
    errors = [line for line in err if line.startswith("error: ")]
    assert code == 2 and len(errors) == 1 and expected.format(tmp=tmp_path) in errors[0], err


def test_unknown_command_line_flag_is_one_error_line(tmp_path, tiny_qwen2, capsys):
    config = write(tmp_path, "ok.yaml", BASE.format(out=tmp_path / "out") + f"model_name_or_path: {tiny_qwen2}\n")
    code, err = run_main(["--config", config, "--credit_windw", "5"], capsys)
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and "credit_windw" in err[0], err


def test_bad_config_in_a_subprocess_prints_no_traceback(tmp_path):
    config = write(tmp_path, "bad.yaml", "model_name_or_path: no-such-model\n" + BASE.format(out=tmp_path / "o"))
    proc = subprocess.run(
        [sys.executable, str(RECIPE), "--config", config],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=300,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: unknown model")


@pytest.mark.slow
def test_default_run_trains_the_embedded_model_and_reuses_its_conversion(tmp_path, monkeypatch):
    """The README's demo on the real embedded SmolLM2 (the packaged default.yaml: arithmetic, 8 completions of up to
    64 tokens per step), shortened to 2 steps; the untrained model already solves some problems, so the first
    step's group has reward spread and credit scales real advantages. Then the conversion is reused."""
    cache = tmp_path / "cache"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "ATTNCREDIT_CACHE": str(cache)}
    out = tmp_path / "run"
    short = ["--max_steps", "2", "--save_steps", "1", "--eval_strategy", "no"]
    proc = subprocess.run(  # the console command, on its packaged default config
        [sys.executable, "-m", "attncredit", "grpo", "--output_dir", str(out), *short],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Warning" not in proc.stderr, proc.stderr[-3000:]  # e.g. torch's pin_memory one on a CPU
    # the demo keeps one resumable checkpoint (save_total_limit: 1) beside the final model
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2"]
    assert (out / "checkpoint-2" / "model.safetensors").exists() and (out / "model.safetensors").exists()
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [m for m in metrics if "loss" in m]
    assert [m["step"] for m in steps] == [1, 2]
    # reward spread inside a group at the first step (frac_reward_zero_std < 1): real advantages, a real gradient
    first = steps[0]
    assert first["frac_reward_zero_std"] < 1 and first["grad_norm"] > 0 and 0 < first["reward"] < 1, first
    assert all(m["attncredit/gamma_mean"] > 1.0 and 0 < m["attncredit/amplified_frac"] < 1 for m in steps)
    # the run folder's model card and config name the embedded model's hub id, not its local conversion folder
    hub_id = "HuggingFaceTB/SmolLM2-135M-Instruct"
    card = (out / "README.md").read_text()
    assert f"base_model: {hub_id}" in card and "- attncredit" in card and "2510.13554" in card
    assert json.loads((out / "config.json").read_text())["_name_or_path"] == hub_id

    from attncredit.models import resolve_model_name

    converted = cache / "models" / "smollm2-135m-instruct" / "model.safetensors"
    stamp = converted.stat().st_mtime_ns
    monkeypatch.setenv("ATTNCREDIT_CACHE", str(cache))
    assert resolve_model_name("smollm2-135m-instruct") == str(converted.parent)
    assert converted.stat().st_mtime_ns == stamp


def test_console_shows_one_progress_bar_and_no_future_warnings(tmp_path, tiny_qwen2):
    """Per step the bar's postfix carries loss, reward, gamma...; the full logs go to metrics.jsonl only."""
    config = write(
        tmp_path,
        "run.yaml",
        BASE.format(out=tmp_path / "out").replace("max_steps: 1", "max_steps: 2")
        + f"model_name_or_path: {tiny_qwen2}\ndataset_name: countdown\n"
        "dataset_options: {num_numbers: 3, num_train: 16, num_test: 4}\nreward_funcs: [digits]\n"
        "per_device_train_batch_size: 4\nnum_generations: 4\nmax_completion_length: 8\nlogging_steps: 1\nbf16: false\ncredit_log_every: 0\n",
    )
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "scripts" / "run_recipe.py"), "--config", config],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    console = proc.stdout + proc.stderr
    assert "Warning" not in console, console[-3000:]
    assert "{'loss'" not in console and "'train_runtime'" not in console, console[-3000:]
    assert "Loading weights" not in console and "Writing model shards" not in console, console[-3000:]
    assert "2/2" in proc.stderr and "loss=" in proc.stderr and "gamma=" in proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1])["global_step"] == 2
    assert len((tmp_path / "out" / "metrics.jsonl").read_text().splitlines()) == 3  # two steps and the summary


def test_a_finished_run_ends_its_process_group(tmp_path, tiny_qwen2, monkeypatch, capsys):
    """After the final save the recipe ends torch.distributed's group itself (Accelerator.end_training): a gloo
    group left to the interpreter's exit once aborted a finished 2-process run with SIGABRT."""
    import rewards
    from accelerate import Accelerator

    from tiny_training import digit_reward

    monkeypatch.setitem(rewards.REWARD_FUNCS, "digits", digit_reward)
    ended = []
    monkeypatch.setattr(Accelerator, "end_training", lambda self: ended.append(self))
    config = write(
        tmp_path,
        "run.yaml",
        BASE.format(out=tmp_path / "out") + f"model_name_or_path: {tiny_qwen2}\ndataset_name: countdown\n"
        "dataset_options: {num_numbers: 3, num_train: 8, num_test: 4}\nreward_funcs: [digits]\n"
        "per_device_train_batch_size: 4\nnum_generations: 4\nmax_completion_length: 8\nbf16: false\n",
    )
    load_recipe().main(["--config", config])
    assert (tmp_path / "out" / "model.safetensors").exists() and len(ended) == 1
