"""``attncredit env``: what this environment runs, and where it leaves the tested stacks.

    attncredit env                # versions, GPU, then one line per combination outside what is tested/supported
    attncredit env --json         # the same as one JSON object (for bug reports and scripts)
    attncredit env --lock cpu     # exit 1 unless this environment is exactly the lock (used by the set-up scripts)

Paste the plain output into bug reports. The checks (attncredit.stacks): installed packages outside attncredit's
declared ranges; a vLLM outside the range the installed TRL supports, or torch/transformers outside what the
installed vLLM requires; and every reported package whose version appears in no tested stack (the CI lock, the vLLM
test lock, the GPU stack of the benchmarks), each line naming the version to use.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys

from attncredit import stacks


def _torch_info() -> dict:
    try:
        import torch
    except ImportError:
        return {"torch": None}
    info = {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "gpus": [],
    }
    if torch.cuda.is_available():
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def collect() -> dict:
    """Versions of Python, attncredit and every reported package, torch's CUDA/cuDNN and the GPUs, the findings."""
    versions = {
        name: (found[1] + (f" ({found[0]})" if found[0] != name else "")) if found else None
        for name, found in stacks.reported_versions().items()
    }
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "attncredit": stacks.installed_version("attncredit"),
        **{k: v for k, v in _torch_info().items() if k != "torch"},
        "packages": versions,
        "findings": [f.message for f in stacks.all_findings()],
    }


def _print_report(report: dict) -> None:
    gpus = report.get("gpus") or []
    rows = [
        ("Python", f"{report['python']} ({report['platform']})"),
        ("attncredit", report["attncredit"] or "not installed (running from a checkout)"),
    ]
    for package, version in report["packages"].items():
        rows.append((package, version or "not installed"))
        if package == "torch" and version:
            rows.append(("  CUDA / cuDNN", f"{report.get('cuda') or 'none (CPU build)'} / {report.get('cudnn') or 'none'}"))
    rows.append(("GPU", ", ".join(gpus) if gpus else "none visible"))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"- {key:<{width}}  {value}")
    print()
    if report["findings"]:
        print(f"{len(report['findings'])} combination(s) outside the tested stacks or a dependency's supported range:")
        for line in report["findings"]:
            print(f"  ! {line}")
    else:
        print("Every reported package is at a version of a tested stack and inside the supported ranges.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="attncredit env",
        description="Print the versions this environment runs (Python, torch with CUDA/cuDNN, transformers, trl, "
        "accelerate, peft, datasets, vllm, triton, deepspeed, the GPUs) and flag combinations outside what "
        "attncredit tests or TRL supports, each with the version to use.",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--lock", choices=sorted(n for n in stacks.STACKS if n != "gpu"),
                        help="check that this environment is exactly this lock: one line per differing package, "
                        "exit 1 if any (scripts/setup_env.sh and scripts/setup_vllm_cpu_env.sh run it)")
    args = parser.parse_args(argv)
    if args.lock:
        differences = stacks.lock_differences(args.lock)
        for finding in differences:
            print(f"error: {finding.message}", file=sys.stderr)
        if differences:
            print(f"error: this environment is not the {args.lock} lock; rebuild it from the lock, or regenerate "
                  "the lock with scripts/lock_env.sh", file=sys.stderr)
            return 1
        print(f"+ this environment is exactly the {args.lock} lock ({len(stacks.read_stack(args.lock))} packages)")
        return 0
    report = collect()
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        _print_report(report)
    return 0
