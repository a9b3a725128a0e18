#!/usr/bin/env bash
# Quick start 1/2: set up .venv (scripts/setup_env.sh) and run the offline CPU demo, recipes/configs/default.yaml:
# the embedded SmolLM2-135M-Instruct learns small arithmetic problems with coupled rhythm credit (5-8 minutes on
# 2 cores; about 2.2 GB under runs/default). Extra arguments go to the recipe, e.g. --max_steps 2.
# Running it again starts the demo over in runs/default (--overwrite_output_dir true).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
venv=${ATTNCREDIT_VENV:-$repo/.venv}
bash "$repo/scripts/setup_env.sh"
cd "$repo"
HF_HUB_OFFLINE=1 "$venv/bin/python" -m attncredit grpo --overwrite_output_dir true "$@"
