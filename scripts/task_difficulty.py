"""The study task's difficulty measurement (attncredit/data/arithmetic.py: selection rule).

    HF_HUB_OFFLINE=1 python scripts/task_difficulty.py --out docs/study/arithmetic_difficulty.json

For every candidate setting of ``attncredit.data.arithmetic.CANDIDATES`` (or ``--candidates a,b``): the untrained
model's held-out avg@k (k samples per problem at ``--temperature``, scored by ``rewards.arithmetic_answer``) and
mean completion length in tokens, on the first ``--num-test`` held-out problems; then the setting the selection
rule chooses. Writes the command, settings and numbers to ``--out`` (JSON), and with ``--write-config CONFIG`` puts
the chosen setting into that recipe config's ``dataset_options`` (its other options, e.g. ``num_test``, stay).
Bad input: one ``error:`` line, exit 2; no candidate inside the rule: exit 1, the config untouched.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing


def measure(args) -> dict:
    import torch

    from attncredit.data import arithmetic, load_dataset_by_name
    from attncredit.evaluation import SamplingSettings, benchmark_metrics, make_generator, sample_and_score
    from rewards import arithmetic_answer

    def score(completions, rows):
        return [{"reward": r} for r in arithmetic_answer(completions, [row["answer"] for row in rows])]

    if args.threads:
        torch.set_num_threads(args.threads)
    generator = make_generator(args.model, "hf", batch_size=args.batch_size, dtype=args.dtype)
    sampling = SamplingSettings(n=args.k, temperature=args.temperature, top_p=1.0, max_new_tokens=args.max_new_tokens,
                                seed=0)
    results = {}
    for name in args.candidates:
        rows = list(load_dataset_by_name("arithmetic", "test", limit=args.num_test, **arithmetic.CANDIDATES[name]))
        start = time.perf_counter()
        records, _ = sample_and_score(generator, rows, sampling, score)
        scores = [[r["reward"] for r in per] for per in records]
        results[name] = {
            "settings": arithmetic.CANDIDATES[name],
            f"avg@{args.k}": benchmark_metrics(scores)[f"avg@{args.k}"],
            "mean_tokens": statistics.fmean(r["num_tokens"] for per in records for r in per),
            "truncated": statistics.fmean(r["finish_reason"] == "length" for per in records for r in per),
            "groups_with_spread": statistics.fmean(0 < sum(s) < len(s) for s in scores),
            "seconds": round(time.perf_counter() - start, 1),
            "example": records[0][0]["completion"],
        }
        print(json.dumps({"candidate": name, **results[name]}), flush=True)
    generator.close()
    return results


def generator_device() -> str:
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"


def main(argv: list[str] | None = None) -> int:
    from attncredit.data import arithmetic

    argv = sys.argv[1:] if argv is None else list(argv)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--candidates", default=",".join(arithmetic.CANDIDATES),
                   type=lambda text: [c for c in text.split(",") if c])
    p.add_argument("--num-test", type=int, default=128)
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--max-new-tokens", type=int, default=160)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--dtype", default="auto", help="auto: float32 on a CPU, the checkpoint's dtype on a GPU")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--out", default=None, help="JSON file for the command, settings and numbers")
    p.add_argument("--write-config", default=None, metavar="CONFIG",
                   help="recipe config whose dataset_options get the chosen setting (e.g. the study's)")
    args = p.parse_args(argv)
    bad = [c for c in args.candidates if c not in arithmetic.CANDIDATES]
    if bad:
        print(f"error: unknown candidate {bad[0]!r}; allowed: {', '.join(arithmetic.CANDIDATES)}", file=sys.stderr)
        return 2
    results = measure(args)
    try:
        chosen = arithmetic.choose_setting({n: {"avg@4": r[f"avg@{args.k}"], **r} for n, r in results.items()})
    except ValueError as exc:
        chosen = None
        print(f"no choice: {exc}", flush=True)
    summary = {"command": "python scripts/task_difficulty.py " + " ".join(argv), "model": args.model,
               "device": generator_device(),
               "num_test": args.num_test, "k": args.k, "temperature": args.temperature,
               "max_new_tokens": args.max_new_tokens, "results": results, "chosen": chosen}
    print(json.dumps({"chosen": chosen}))
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=1) + "\n")
    if chosen is None:
        return 1
    if args.write_config:
        write_setting(Path(args.write_config), arithmetic.CANDIDATES[chosen])
    return 0


def write_setting(config: Path, setting: dict) -> None:
    """Replace the difficulty keys of ``config``'s one-line ``dataset_options: {...}`` mapping by ``setting``,
    keeping its other keys and the rest of the file (comments included)."""
    import re

    import yaml

    text = config.read_text()
    line = re.search(r"^dataset_options:.*$", text, flags=re.M)
    if line is None:
        raise SystemExit(f"error: {config} has no 'dataset_options:' line to write the chosen setting into")
    value, _, comment = line.group(0).partition("#")
    options = {**(yaml.safe_load(value.split(":", 1)[1]) or {}), **setting}
    new = "dataset_options: {" + ", ".join(
        f"{k}: {json.dumps(v) if isinstance(v, str) else v}" for k, v in options.items()) + "}"
    text = text[: line.start()] + new + (f"  #{comment}" if comment else "") + text[line.end():]
    config.write_text(text)
    print(f"wrote {new} into {config}", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
