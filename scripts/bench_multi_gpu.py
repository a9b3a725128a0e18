"""Two GPUs, every shipped accelerate config: train, save, SIGKILL, resume, and check; prints a table last.

For each config of recipes/accelerate/ (``multi_gpu`` = DDP, ``fsdp2``, ``zero2``, ``zero3``) with 2 processes and
each trainer (GRPO with coupled credit; PPO, which refuses DeepSpeed in one line: that refusal is checked instead),
on a tiny random Qwen3 (``attncredit.testing.save_tiny_model``, 8 layers, hidden 256, bf16):

1. a run of 4 steps with a checkpoint every 2 and ``credit_head_regroup_every`` 4 (head groups ranked at step 1,
   kept for steps 2-4) is SIGKILLed, launcher and ranks together, once ``checkpoint-2`` is complete (its ranks wait
   after that save, so the kill always lands between steps 2 and 3);
2. it is started again with ``resume_from_checkpoint=last`` and trains steps 3-4;
3. checks, per (config, trainer):
   * ``trains_saves``: the first run reached a complete checkpoint-2 (PPO under DeepSpeed: refused with the
     documented one-line reason, ``refused`` in every column);
   * ``resumes``: the resumed run exits 0;
   * ``steps_continue``: the resumed run trains global steps 2 and 3 (steps 3-4) on both ranks and metrics.jsonl holds
     steps 1-4 once each reader keeps the last entry;
   * ``ranks_equal``: the policy's (and PPO's critic's) full parameters have the same sha256 on both ranks after the
     resume (gathered under FSDP2 and ZeRO-3);
   * ``stats_1proc``: each rank's ``attncredit`` amplified share and gamma mean of step 1 equal a one-process
     recomputation on the same rows (``--reference``, GPU 0) within bf16 tolerance (amplified share ±0.05 absolute,
     gamma mean ±2% relative), and the logged ``attncredit/*`` values of step 1 are the mean over the ranks;
   * ``kept_groups``: the resumed run's first step is a kept-groups step (no regroup) whose head groups, on each rank,
     are that rank's entry of checkpoint-2's ``attncredit_head_groups.json`` and the groups that rank ranked at step 1.

    python scripts/bench_multi_gpu.py                     # 2 GPUs: all four configs, GRPO and PPO
    python scripts/bench_multi_gpu.py --configs fsdp2 --trainers ppo --out runs/bench_multi_gpu
    python scripts/bench_multi_gpu.py --cpu               # 2 CPU processes (gloo, recipes/accelerate/cpu_2proc.yaml)

ZeRO-2/3 need ``pip install deepspeed``; without it their cases are ``skipped`` (said in the table). Results go to
``OUT/results.json``; exit status 1 if any check failed. ``--worker`` and ``--reference`` are the script's own
subprocess modes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ACCELERATE = ROOT / "recipes" / "accelerate"
GPU_CONFIGS = ("multi_gpu", "fsdp2", "zero2", "zero3")
CPU_CONFIGS = ("cpu_2proc",)
DEEPSPEED_CONFIGS = ("zero2", "zero3")
TRAINERS = ("grpo", "ppo")
CHECKS = ("trains_saves", "resumes", "steps_continue", "ranks_equal", "stats_1proc", "kept_groups")
MAX_STEPS, SAVE_STEPS, REGROUP_EVERY = 4, 2, 4
AMPLIFIED_TOL = 0.05  # absolute, on the share of amplified tokens (bf16 moves a few tokens across the quantile)
GAMMA_TOL = 0.02  # relative, on the mean gamma
LOGGED_TOL = 1e-4  # relative: the logged value is the mean of the ranks' own values


# ------------------------------------------------------------------------------------------------------------------
# Checks: pure functions of the records the runs wrote (tested on CPU with fake records)
# ------------------------------------------------------------------------------------------------------------------
def ok(detail: str = "") -> tuple[str, str]:
    return ("ok", detail)


def fail(detail: str) -> tuple[str, str]:
    return ("FAIL", detail)


def check_steps_continue(resumed: list[dict], metric_steps: list[int]) -> tuple[str, str]:
    """The resumed run trained global steps SAVE_STEPS..MAX_STEPS-1 on every rank; metrics.jsonl has steps 1..MAX_STEPS."""
    want = list(range(SAVE_STEPS, MAX_STEPS))
    for r, record in enumerate(resumed):
        steps = sorted({x["step"] for x in record["records"]})
        if steps != want:
            return fail(f"rank {r} trained global steps {steps}, expected {want}")
    if sorted(set(metric_steps)) != list(range(1, MAX_STEPS + 1)):
        return fail(f"metrics.jsonl steps {sorted(set(metric_steps))}, expected 1-{MAX_STEPS}")
    return ok()


def check_ranks_equal(resumed: list[dict]) -> tuple[str, str]:
    """Same full-parameter sha256 on every rank, for the policy and (PPO) the critic."""
    for key in ("policy_hash", "critic_hash"):
        hashes = [record.get(key) for record in resumed]
        if any(h is None for h in hashes):
            if all(h is None for h in hashes) and key == "critic_hash":
                continue
            return fail(f"{key} missing on some rank")
        if len(set(hashes)) != 1:
            return fail(f"{key} differs across ranks: {[h[:12] for h in hashes]}")
    return ok()


def check_stats(first: list[dict], reference: list[dict], logged: dict | None) -> tuple[str, str]:
    """Each rank's step-1 amplified share and gamma mean vs the one-process recomputation on its rows; the logged
    step-1 ``attncredit/*`` values vs the mean over ranks."""
    if len(first) != len(reference):
        return fail(f"{len(first)} rank records, {len(reference)} reference records")
    for r, (run, ref) in enumerate(zip(first, reference)):
        if abs(run["amplified_frac"] - ref["amplified_frac"]) > AMPLIFIED_TOL:
            return fail(f"rank {r} amplified share {run['amplified_frac']:.4f} vs one process {ref['amplified_frac']:.4f}")
        if abs(run["gamma_mean"] - ref["gamma_mean"]) > GAMMA_TOL * abs(ref["gamma_mean"]):
            return fail(f"rank {r} gamma mean {run['gamma_mean']:.5f} vs one process {ref['gamma_mean']:.5f}")
    if logged is None:
        return fail("no logged step 1 in metrics.jsonl")
    for name in ("amplified_frac", "gamma_mean"):
        mean = sum(run[name] for run in first) / len(first)
        value = logged.get(f"attncredit/{name}")
        if value is None or abs(value - mean) > LOGGED_TOL * max(abs(mean), 1e-6):
            return fail(f"logged attncredit/{name} {value} is not the mean over ranks {mean}")
    gammas = ", ".join(f"{run['gamma_mean']:.4f}/{ref['gamma_mean']:.4f}" for run, ref in zip(first, reference))
    return ok(f"gamma mean run/1-proc per rank {gammas}")


def check_kept_groups(first: list[dict], checkpoint_groups: dict | None, resumed: list[dict]) -> tuple[str, str]:
    """The resumed run's first step keeps head groups (no regroup), and they are each rank's entry of the checkpoint's
    head-group file, which are the groups that rank ranked at step 1 of the killed run."""
    if checkpoint_groups is None:
        return fail("checkpoint has no attncredit_head_groups.json")
    saved = checkpoint_groups.get("ranks")
    if saved is None or len(saved) != len(resumed):
        return fail(f"checkpoint's head groups are not per rank (ranks: {None if saved is None else len(saved)})")
    for r, (before, record) in enumerate(zip(first, resumed)):
        entry = record["records"][0]
        if entry["regroup"]:
            return fail(f"rank {r}: the resumed run ranked the heads again at global step {entry['step']}")
        from_checkpoint = [saved[r]["local"], saved[r]["global"]]
        if entry["heads"] != from_checkpoint:
            return fail(f"rank {r}: kept groups differ from the checkpoint's")
        if before["heads"] != from_checkpoint:
            return fail(f"rank {r}: the checkpoint's groups differ from those ranked at step 1")
    differ = saved[0] != saved[1] if len(saved) > 1 else False
    return ok("ranks' groups differ" if differ else "ranks' groups equal")


def format_table(results: dict[tuple[str, str], dict[str, tuple[str, str]]]) -> str:
    """Markdown table: one row per (config, trainer), one column per check, status in each cell."""
    lines = ["| config | trainer | " + " | ".join(CHECKS) + " |", "|---|---|" + "---|" * len(CHECKS)]
    for (config, trainer), checks in results.items():
        cells = [checks.get(name, ("-", ""))[0] for name in CHECKS]
        lines.append(f"| {config} | {trainer} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_details(results) -> str:
    """One line per check that has something to say (failures first)."""
    rows = [
        (status != "FAIL", f"{config} {trainer} {name}: {status}: {detail}")
        for (config, trainer), checks in results.items()
        for name, (status, detail) in checks.items()
        if detail
    ]
    return "\n".join(text for _, text in sorted(rows, key=lambda row: row[0]))


def any_failed(results) -> bool:
    return any(status == "FAIL" for checks in results.values() for status, _ in checks.values())


# ------------------------------------------------------------------------------------------------------------------
# The worker: one rank of a training run (under accelerate launch), and the one-process reference
# ------------------------------------------------------------------------------------------------------------------
def digit_reward(completions, **kwargs):
    """Share of digits in the completion: random models get reward spread inside every group."""
    texts = [c[0]["content"] if isinstance(c, list) else c for c in completions]
    return [sum(ch.isdigit() for ch in t) / max(len(t), 1) for t in texts]


def prompt_dataset(n: int = 64):
    from datasets import Dataset

    return Dataset.from_list(
        [{"prompt": [{"role": "user", "content": f"What is {i} + {2 * i + 1}? Answer with a number."}]} for i in range(n)]
    )


def training_args(trainer: str, out: Path, cpu: bool, **extra):
    from attncredit import AnchorGRPOConfig, AnchorPPOConfig

    fields = dict(
        output_dir=str(out), max_steps=MAX_STEPS, per_device_train_batch_size=8, num_generations=4,
        max_completion_length=32, learning_rate=1e-4, logging_steps=1, save_strategy="steps", save_steps=SAVE_STEPS,
        report_to="none", use_cpu=cpu, bf16=not cpu, seed=0, beta=0.0, credit_strategy="coupled",
        credit_head_regroup_every=REGROUP_EVERY,
    )  # fmt: skip
    if trainer == "ppo":
        fields["critic_learning_rate"] = 1e-4
    fields.update(extra)
    return (AnchorPPOConfig if trainer == "ppo" else AnchorGRPOConfig)(**fields)


def recording_trainer(trainer: str):
    """AnchorGRPOTrainer / AnchorPPOTrainer noting each recorded forward: step, regroup or kept groups, the kept
    groups after it, this rank's amplified share and gamma mean; the first one also with its rows."""
    import torch

    from attncredit import AnchorGRPOTrainer, AnchorPPOTrainer

    class Recording(AnchorPPOTrainer if trainer == "ppo" else AnchorGRPOTrainer):
        bench_records: list

        def _recorded_forward(self, model, input_ids, attention_mask, logits_to_keep, *args, **kwargs):
            regroup = self._regroups_now()
            out = super()._recorded_forward(model, input_ids, attention_mask, logits_to_keep, *args, **kwargs)
            gamma, mask = out[3], attention_mask[:, -logits_to_keep:].bool()
            n = mask.sum().clamp(min=1)
            entry = {
                "step": self.state.global_step,
                "regroup": regroup,
                "heads": None if self._fixed_heads is None else [m.int().tolist() for m in self._fixed_heads],
                "amplified_frac": float((gamma != 1)[mask].float().sum() / n),
                "gamma_mean": float(gamma[mask].sum() / n),
            }
            records = self.__dict__.setdefault("bench_records", [])
            if not records:
                entry.update(input_ids=input_ids.tolist(), attention_mask=attention_mask.tolist(), logits_to_keep=logits_to_keep)
            records.append(entry)
            return out

    return Recording


def params_sha256(trainer, model) -> str:
    """sha256 (float32 bytes, names included) of ``model``'s full parameters as this rank sees them: gathered under
    FSDP2 (every rank calls it) and ZeRO-3 (``GatheredParameters``), plain under DDP and ZeRO-2."""
    import contextlib

    digest = hashlib.sha256()
    if trainer.is_fsdp_enabled:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))
        items = sorted(state.items())
        gather = contextlib.nullcontext()
    else:
        module = trainer.accelerator.unwrap_model(model)
        items = sorted(module.named_parameters())
        gather = contextlib.nullcontext()
        if trainer.is_deepspeed_enabled:
            import deepspeed

            gather = deepspeed.zero.GatheredParameters([p for _, p in items], modifier_rank=None)
    with gather:
        for name, tensor in items:
            digest.update(name.encode())
            digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def worker(opts) -> None:
    """One rank: train (phase ``killed``: wait after the checkpoint-2 save until killed; ``resume``: from the newest
    complete checkpoint to the end) and write ``rank<i>-<phase>.json``."""
    from transformers import TrainerCallback

    from attncredit.models import load_tokenizer

    out = Path(opts.out)
    resume = opts.phase == "resume"
    args = training_args(opts.trainer, out, opts.cpu, **({"resume_from_checkpoint": "last"} if resume else {}))
    trainer = recording_trainer(opts.trainer)(
        model=opts.model, reward_funcs=digit_reward, args=args, train_dataset=prompt_dataset(),
        processing_class=load_tokenizer(opts.model),
    )  # fmt: skip
    rank = trainer.accelerator.process_index

    def write(name: str, record: dict) -> None:
        (out / f"rank{rank}-{name}.json").write_text(json.dumps(record))

    class FirstForward(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 1 and not resume:
                write("first", trainer.bench_records[0])

        def on_save(self, args, state, control, **kwargs):
            if state.global_step == SAVE_STEPS and not resume:
                print(f"rank {rank}: checkpoint-{SAVE_STEPS} saved, waiting for the kill", flush=True)
                while True:
                    time.sleep(1)

    trainer.add_callback(FirstForward())
    trainer.train()
    record = {
        "process_index": rank,
        "num_processes": trainer.accelerator.num_processes,
        "distributed_type": trainer.accelerator.distributed_type.value,
        "records": [{k: v for k, v in x.items() if k not in ("input_ids", "attention_mask")} for x in trainer.bench_records],
        "policy_hash": params_sha256(trainer, trainer.model_wrapped),
    }
    if opts.trainer == "ppo":
        record["critic_hash"] = params_sha256(trainer, trainer.critic)
    write(opts.phase, record)
    trainer.accelerator.end_training()  # as the recipe does: a gloo group left to the exit can abort the rank


def reference(opts) -> None:
    """One process: each rank's step-1 rows through the same recorded forward, head groups ranked afresh per rank's
    rows (as each rank did), bf16 autocast on the GPU; writes ``reference.json``."""
    import torch

    from attncredit.models import load_tokenizer

    out = Path(opts.out)
    firsts = [json.loads((out / f"rank{r}-first.json").read_text()) for r in range(2)]
    args = training_args(opts.trainer, out / "reference", opts.cpu, save_strategy="no", overwrite_output_dir=True)
    trainer = recording_trainer(opts.trainer)(
        model=opts.model, reward_funcs=digit_reward, args=args, train_dataset=prompt_dataset(),
        processing_class=load_tokenizer(opts.model),
    )  # fmt: skip
    device = trainer.accelerator.device
    results = []
    for first in firsts:
        trainer._fixed_heads = None  # rank the groups on this rank's rows, as the rank did at step 1
        trainer.bench_records = []
        ids = torch.tensor(first["input_ids"], device=device)
        mask = torch.tensor(first["attention_mask"], device=device)
        with torch.no_grad(), trainer.accelerator.autocast():
            trainer._recorded_forward(trainer.model, ids, mask, first["logits_to_keep"])
        entry = trainer.bench_records[0]
        results.append({"amplified_frac": entry["amplified_frac"], "gamma_mean": entry["gamma_mean"], "heads": entry["heads"]})
    (out / "reference.json").write_text(json.dumps(results))


# ------------------------------------------------------------------------------------------------------------------
# The driver
# ------------------------------------------------------------------------------------------------------------------
def subprocess_env(cpu: bool) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    if cpu:
        env["OMP_NUM_THREADS"] = "1"
    return env


def launch_command(config: str, opts, trainer: str, out: Path, phase: str) -> list[str]:
    """`accelerate launch` of this script's worker with the shipped config, 2 processes (CPU: no mixed precision)."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ACCELERATE / f"{config}.yaml"),
           "--num_processes", "2", "--main_process_port", str(opts.port or free_port())]  # fmt: skip
    if opts.cpu:
        cmd += ["--mixed_precision", "no"]
    cmd += [str(Path(__file__).resolve()), "--worker", "--trainer", trainer, "--model", str(opts.model_dir),
            "--out", str(out), "--phase", phase]  # fmt: skip
    return cmd + (["--cpu"] if opts.cpu else [])


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the launcher and every process under it (torch's elastic agent starts each rank in its own session)."""
    import psutil

    try:
        tree = [psutil.Process(proc.pid)]
        tree += tree[0].children(recursive=True)
    except psutil.NoSuchProcess:
        return
    for p in tree:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass


def complete(checkpoint: Path) -> bool:
    try:
        json.loads((checkpoint / "trainer_state.json").read_text())
        return True
    except (FileNotFoundError, json.JSONDecodeError):
        return False


FAULT_LINE = re.compile(r"\w+Error\b|terminate called|what\(\):|Fatal Python error|exitcode\s*:")


def log_evidence(text: str) -> str:
    """What a failed launch's log says about the failure: its error, C++ abort and exit-code lines (each once, the
    first five), else its last 400 characters. The tail alone is often only the elastic agent's summary."""
    lines = [line.strip() for line in text.splitlines() if FAULT_LINE.search(line) and "Warning" not in line]
    found = list(dict.fromkeys(lines))[:5]
    return " | ".join(found) if found else f"log tail: {text[-400:]!r}"


def metric_entries(out: Path) -> dict[int, dict]:
    """Last metrics.jsonl entry with a loss per step (a resumed run logs steps again)."""
    path = out / "metrics.jsonl"
    entries = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return {e["step"]: e for e in entries if "loss" in e}


def run_case(config: str, trainer: str, opts) -> dict[str, tuple[str, str]]:
    out = Path(opts.out) / f"{config}-{trainer}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    env = subprocess_env(opts.cpu)
    log = open(out / "killed.log", "w")
    proc = subprocess.Popen(launch_command(config, opts, trainer, out, "killed"), env=env, stdout=log, stderr=subprocess.STDOUT)
    checkpoint = out / f"checkpoint-{SAVE_STEPS}"
    deadline = time.monotonic() + opts.timeout
    while not complete(checkpoint) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    if complete(checkpoint):
        time.sleep(0.5)  # the ranks wait in on_save after the whole checkpoint (every rank past its RNG barrier)
    kill_tree(proc)
    proc.wait()
    log.close()
    text = (out / "killed.log").read_text(errors="replace")
    if trainer == "ppo" and config in DEEPSPEED_CONFIGS:
        if "AnchorPPOTrainer does not support DeepSpeed" in text:
            return {name: ("refused", "") for name in CHECKS} | {
                "trains_saves": ("refused", "AnchorPPOTrainer does not support DeepSpeed (one line, documented)")
            }
        return {"trains_saves": fail(f"expected the DeepSpeed refusal; {log_evidence(text)}")}
    if not complete(checkpoint):
        return {"trains_saves": fail(f"no complete {checkpoint.name}; {log_evidence(text)}")}
    checks = {"trains_saves": ok()}
    with open(out / "resume.log", "w") as log:
        code = subprocess.run(
            launch_command(config, opts, trainer, out, "resume"), env=env, stdout=log, stderr=subprocess.STDOUT,
            timeout=opts.timeout,
        ).returncode  # fmt: skip
    if code != 0:
        text = (out / "resume.log").read_text(errors="replace")
        return checks | {"resumes": fail(f"exit {code}; {log_evidence(text)}")}
    checks["resumes"] = ok()
    resumed = [json.loads((out / f"rank{r}-resume.json").read_text()) for r in range(2)]
    first = [json.loads((out / f"rank{r}-first.json").read_text()) for r in range(2)]
    metrics = metric_entries(out)
    checks["steps_continue"] = check_steps_continue(resumed, list(metrics))
    checks["ranks_equal"] = check_ranks_equal(resumed)
    ref_cmd = [sys.executable, str(Path(__file__).resolve()), "--reference", "--trainer", trainer, "--model",
               str(opts.model_dir), "--out", str(out)] + (["--cpu"] if opts.cpu else [])  # fmt: skip
    ref_env = env if opts.cpu else {**env, "CUDA_VISIBLE_DEVICES": env.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0]}
    with open(out / "reference.log", "w") as log:
        code = subprocess.run(ref_cmd, env=ref_env, stdout=log, stderr=subprocess.STDOUT, timeout=opts.timeout).returncode
    if code != 0:
        checks["stats_1proc"] = fail(f"reference run exit {code} (see {out / 'reference.log'})")
    else:
        ref = json.loads((out / "reference.json").read_text())
        checks["stats_1proc"] = check_stats(first, ref, metrics.get(1))
    groups_file = checkpoint / "attncredit_head_groups.json"
    groups = json.loads(groups_file.read_text()) if groups_file.exists() else None
    checks["kept_groups"] = check_kept_groups(first, groups, resumed)
    return checks


def deepspeed_missing() -> bool:
    import importlib.util

    return importlib.util.find_spec("deepspeed") is None


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--configs", nargs="+", help=f"accelerate configs (default {' '.join(GPU_CONFIGS)}; --cpu: cpu_2proc)")
    parser.add_argument("--trainers", nargs="+", choices=TRAINERS, default=list(TRAINERS))
    parser.add_argument("--out", default="runs/bench_multi_gpu", help="folder for the runs and results.json")
    parser.add_argument("--cpu", action="store_true", help="2 CPU processes over gloo (cpu_2proc.yaml), fp32")
    parser.add_argument("--layers", type=int, help="tiny Qwen3 layers (default 8; --cpu: 6)")
    parser.add_argument("--hidden", type=int, help="tiny Qwen3 hidden size (default 256; --cpu: 128)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per launched run")
    parser.add_argument("--port", type=int, default=0, help="main process port of the launched runs (0: a free one each)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--reference", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--trainer", choices=TRAINERS, help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--phase", choices=("killed", "resume"), help=argparse.SUPPRESS)
    opts = parser.parse_args(argv)
    allowed = CPU_CONFIGS if opts.cpu else GPU_CONFIGS
    opts.configs = opts.configs or list(allowed)
    for config in opts.configs:
        if config not in allowed:
            parser.error(f"--configs {config} is invalid{' with --cpu' if opts.cpu else ''}; allowed: {', '.join(allowed)}")
    opts.layers = opts.layers or (6 if opts.cpu else 8)
    opts.hidden = opts.hidden or (128 if opts.cpu else 256)
    if opts.hidden % 64:
        parser.error(f"--hidden {opts.hidden} is invalid; allowed: a multiple of 64 (4 heads of 64 dims at most)")
    return opts


def main(argv=None) -> int:
    opts = parse_args(argv)
    if opts.worker:
        worker(opts)
        return 0
    if opts.reference:
        reference(opts)
        return 0
    import torch

    if not opts.cpu and torch.cuda.device_count() < 2:
        print(f"error: {torch.cuda.device_count()} GPU(s) visible, 2 needed (or --cpu)", file=sys.stderr)
        return 2
    from attncredit.testing import save_tiny_model

    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    opts.model_dir = save_tiny_model(
        out / "model", arch="qwen3", num_layers=opts.layers, hidden_size=opts.hidden, num_heads=opts.hidden // 64
    )
    results = {}
    for config in opts.configs:
        for trainer in opts.trainers:
            started = time.perf_counter()
            if config in DEEPSPEED_CONFIGS and deepspeed_missing():
                results[config, trainer] = {name: ("skipped", "") for name in CHECKS} | {
                    "trains_saves": ("skipped", "deepspeed is not installed (pip install deepspeed)")
                }
            else:
                results[config, trainer] = run_case(config, trainer, opts)
            print(f"{config} {trainer}: {time.perf_counter() - started:.0f} s", flush=True)
    (out / "results.json").write_text(
        json.dumps([{"config": c, "trainer": t, "checks": checks} for (c, t), checks in results.items()], indent=1)
    )
    details = format_details(results)
    if details:
        print(details)
    print(format_table(results))
    return 1 if any_failed(results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
