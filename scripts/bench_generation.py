"""Generation speed without vLLM: transformers ``generate`` with the dynamic cache (the default), the static cache
(what ``cache_implementation: static`` gives the trainer and ``--cache static`` evaluate.py), the static cache
compiled, and transformers' paged continuous batching (``generate_batch``, TRL's
``use_transformers_continuous_batching``).

    python scripts/bench_generation.py                        # random SmolLM2-135M-shaped Llama, bf16, 64 x 192
    python scripts/bench_generation.py --model smollm2-135m-instruct --prompts 64 --new-tokens 192

Every mode samples (temperature 1) ``--new-tokens`` tokens for each of ``--prompts`` prompts of ``--prompt-len``
random tokens (``min_new_tokens`` = ``max_new_tokens``: no early end, so every mode makes the same number of
tokens). Each mode runs once to warm up (and compile), then ``--repeats`` timed runs; tokens/s is
prompts x new tokens / mean seconds. Writes ``--out`` (JSON) and prints a markdown table last.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

MODES = ("dynamic", "static", "static_compiled", "paged")


def smollm2_shaped(dtype, device):
    """A random-init Llama with SmolLM2-135M's shape (30 layers, 9 query / 3 KV heads of 64, hidden 576)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
        num_key_value_heads=3, max_position_embeddings=8192, tie_word_embeddings=True, rms_norm_eps=1e-5,
    )
    torch.manual_seed(0)
    return LlamaForCausalLM(config).to(device=device, dtype=dtype).eval()


def run_mode(model, mode: str, prompts, new_tokens: int) -> float:
    """Seconds to sample ``new_tokens`` tokens for every prompt with generation ``mode``."""
    import torch
    from transformers import GenerationConfig

    config = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=True, temperature=1.0, top_k=0,
                  top_p=1.0, pad_token_id=0, eos_token_id=1)
    device = model.device
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    if mode == "paged":
        out = model.generate_batch([list(p) for p in prompts.tolist()],
                                   generation_config=GenerationConfig(**config), progress_bar=False)
        made = sum(len(o.generated_tokens) for o in out.values())
    else:
        generation = GenerationConfig(**config, disable_compile=mode != "static_compiled",
                                      cache_implementation=None if mode == "dynamic" else "static")
        ids = prompts.to(device)
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=generation)
        made = (out.shape[1] - ids.shape[1]) * ids.shape[0]
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    if made != prompts.shape[0] * new_tokens:
        raise RuntimeError(f"mode {mode} made {made} tokens, expected {prompts.shape[0] * new_tokens}")
    return seconds


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="model name or folder (default: random SmolLM2-135M-shaped Llama)")
    p.add_argument("--prompts", type=int, default=64)
    p.add_argument("--prompt-len", type=int, default=128)
    p.add_argument("--new-tokens", type=int, default=192)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--modes", default=",".join(MODES), help=f"comma-separated subset of {', '.join(MODES)}")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--out", default="runs/bench_generation.json")
    args = p.parse_args(argv)
    modes = [m for m in args.modes.split(",") if m]
    bad = [m for m in modes if m not in MODES]
    if bad:
        print(f"error: unknown mode '{bad[0]}'; allowed: {', '.join(MODES)}", file=sys.stderr)
        return 2

    import torch

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = getattr(torch, args.dtype)
    if args.model:
        from attncredit.models import load_model

        model = load_model(args.model, dtype=dtype).to(device).eval()
    else:
        model = smollm2_shaped(dtype, device)
    torch.manual_seed(1)
    prompts = torch.randint(2, model.config.vocab_size, (args.prompts, args.prompt_len))
    rows = []
    for mode in modes:
        try:
            warm = run_mode(model, mode, prompts, args.new_tokens)
            times = [run_mode(model, mode, prompts, args.new_tokens) for _ in range(args.repeats)]
        except Exception as e:  # a mode a transformers version lacks is reported, not fatal for the others
            rows.append({"mode": mode, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"})
            print(json.dumps(rows[-1]), flush=True)
            continue
        mean = sum(times) / len(times)
        rows.append({"mode": mode, "first_run_s": warm, "seconds": mean,
                     "tokens_per_s": args.prompts * args.new_tokens / mean})
        print(json.dumps(rows[-1]), flush=True)
    import transformers

    info = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "torch": torch.__version__,
            "transformers": transformers.__version__, "model": args.model or "random SmolLM2-135M-shaped Llama",
            "dtype": args.dtype, "prompts": args.prompts, "prompt_len": args.prompt_len, "new_tokens": args.new_tokens}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"settings": info, "results": rows}, indent=1))
    base = next((r["tokens_per_s"] for r in rows if r["mode"] == "dynamic" and "tokens_per_s" in r), None)
    print(f"\n{info['model']}, {info['dtype']}, {args.prompts} prompts x {args.prompt_len} tokens, "
          f"{args.new_tokens} new tokens, {info['device']}, transformers {info['transformers']}")
    print("| mode | tokens/s | vs dynamic | first run (s) |\n|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['mode']} | failed: {r['error']} | | |")
            continue
        ratio = f"{r['tokens_per_s'] / base:.1f}x" if base else "-"
        print(f"| {r['mode']} | {r['tokens_per_s']:,.0f} | {ratio} | {r['first_run_s']:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
