"""Time every credit strategy (and ``token_advantages``) on a batch of B x N tokens.

    python scripts/bench_credit.py                          # 64 x 8192 on the CPU
    python scripts/bench_credit.py --device cuda --repeats 20

Rows look like a TRL batch: a left-padded prompt of 64..1024 tokens, then a response that fills 25..100%
of the rest, then right padding. The statistics are random (their values do not change the work done).
The table printed last gives the median and the minimum over ``--repeats`` timed calls, after one warm-up.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from attncredit.credit import compute_token_weights, list_strategies, token_advantages  # noqa: E402


def make_batch(batch: int, length: int, device: str, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    prompt = torch.randint(64, min(1024, length // 2) + 1, (batch,), generator=g)
    room = length - prompt
    response = (room * (0.25 + 0.75 * torch.rand(batch, generator=g))).long().clamp(min=1)
    pos = torch.arange(length)
    mask = (pos >= prompt[:, None]) & (pos < (prompt + response)[:, None])
    return {
        "waad": (10 * torch.rand(batch, length, generator=g)).to(device),
        "fai": (0.01 * torch.rand(batch, length, generator=g)).to(device),
        "entropy": (3 * torch.rand(batch, length, generator=g)).to(device),
        "response_mask": mask.to(device),
    }


def timed(fn, device: str, repeats: int) -> list[float]:
    fn()
    times = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(1e3 * (time.perf_counter() - start))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--length", type=int, default=8192)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    inputs = make_batch(args.batch, args.length, args.device, args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    results = {}
    for name in list_strategies():
        results[name] = timed(
            lambda: compute_token_weights(name, **inputs, generator=generator), args.device, args.repeats
        )
    gamma = compute_token_weights("coupled", **inputs)
    advantages = torch.randn(args.batch, generator=generator).to(args.device)
    for sign, normalize in (("both", "none"), ("positive", "mean_one")):
        results[f"token_advantages({sign}, {normalize})"] = timed(
            lambda: token_advantages(advantages, gamma, inputs["response_mask"], sign, normalize),
            args.device,
            args.repeats,
        )

    response_tokens = int(inputs["response_mask"].sum())
    print(
        f"B x N = {args.batch} x {args.length} ({response_tokens} response tokens), device {args.device}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.repeats} repeats"
    )
    width = max(map(len, results))
    print(f"{'strategy':<{width}}  {'median ms':>10}  {'min ms':>8}")
    for name, times in results.items():
        print(f"{name:<{width}}  {statistics.median(times):>10.1f}  {min(times):>8.1f}")


if __name__ == "__main__":
    main()
