"""Cost of recording attention statistics in a no-grad forward, on a model of Qwen3-4B's shape (GPU).

Three measurements per sequence length N (batch B = tokens // N, so every row fills about the same tokens):

  (a) ``sdpa``:   the no-grad SDPA forward of the model (time, peak memory);
  (b) ``record``: the same forward inside ``record_attention`` on the 5 probe layers (triton backend), as a ratio
                  to (a), measured in the same run: the two alternate after a warm-up and the median is taken;
  (c) ``eager``:  the naive route, an eager forward with ``output_attentions=True`` (time, memory, or OOM).

The model is randomly initialised from Qwen3-4B's config (36 layers, 32 query / 8 KV heads, head_dim 128,
hidden 2560, intermediate 9728, bf16), with a smaller vocabulary (32000 instead of 151936) to save memory; the
vocabulary only changes the embedding and the LM head, which are the same in (a) and (b). The prompt is the first
``--prompt`` tokens of each row, the rest is the response; there is no padding.

``--part kernel`` times the statistics kernel alone on one layer's q/k of the same shapes, next to that layer's
SDPA (and tries a few block configurations). Run: ``python scripts/bench_attention_stats.py --part all``.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GIB = 1024**3
DEVICE = "cuda"


def _sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def _time_ms(fn, reps=5, warmup=2):
    """Median wall time (ms) of ``fn`` between CUDA synchronisations."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        _sync()
        t0 = time.perf_counter()
        fn()
        _sync()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def qwen3_4b_config(vocab_size: int, tiny: bool = False):
    """Qwen3-4B's shape; ``tiny``: a 6-layer toy of the same family, for a CPU smoke run of this script."""
    from transformers import Qwen3Config

    return Qwen3Config(
        vocab_size=vocab_size,
        hidden_size=128 if tiny else 2560,
        intermediate_size=256 if tiny else 9728,
        num_hidden_layers=6 if tiny else 36,
        num_attention_heads=4 if tiny else 32,
        num_key_value_heads=2 if tiny else 8,
        head_dim=32 if tiny else 128,
        max_position_embeddings=40960,
        rope_theta=1_000_000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        attention_bias=False,
        use_cache=False,
    )


# ----------------------------------------------------------------------------------------------------------------
# kernel alone
# ----------------------------------------------------------------------------------------------------------------
KERNEL_CONFIGS = {  # name -> config override (the default config is tried first, as "default")
    "default": {},
    "128x128w4s3": dict(block_m=128, block_n=128, num_warps=4, num_stages=3),
    "128x64w8s3": dict(block_m=128, block_n=64, num_warps=8, num_stages=3),
    "64x64w4s3": dict(block_m=64, block_n=64, num_warps=4, num_stages=3),
    "128x64w4s2": dict(block_m=128, block_n=64, num_warps=4, num_stages=2),
    "128x32w4s3": dict(block_m=128, block_n=32, num_warps=4, num_stages=3),
}


def bench_kernel(lengths, tokens, prompt, reps):
    import torch.nn.functional as F

    from attncredit.attention.triton_stats import triton_attention_stats

    rows = []
    for n in lengths:
        b = max(1, tokens // n)
        g = torch.Generator(device="cuda").manual_seed(n)
        q = torch.randn(b, 32, n, 128, device="cuda", dtype=torch.bfloat16, generator=g)
        k = torch.randn(b, 8, n, 128, device="cuda", dtype=torch.bfloat16, generator=g)
        v = torch.randn(b, 8, n, 128, device="cuda", dtype=torch.bfloat16, generator=g)
        attn = torch.ones(b, n, dtype=torch.bool, device="cuda")
        resp = attn.clone()
        resp[:, : min(prompt, n - 1)] = False
        scale = 128**-0.5
        row = dict(n=n, batch=b)
        row["sdpa_ms"] = _time_ms(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True), reps)
        lse = None
        try:  # the flash kernel returns the row log-sum-exp that the stats could reuse
            flash = torch.ops.aten._scaled_dot_product_flash_attention
            try:
                out = flash(q, k, v, 0.0, True, False, scale=scale)  # GQA without repeating K/V
                kr, vr = k, v
                row["flash_op_gqa_native"] = True
            except Exception as err:  # noqa: BLE001
                row["flash_op_gqa_native"] = f"{type(err).__name__}: {err}"[:200]
                kr, vr = k.repeat_interleave(4, 1), v.repeat_interleave(4, 1)
                out = flash(q, kr, vr, 0.0, True, False, scale=scale)
            lse = out[1]
            row["flash_op_ms"] = _time_ms(
                lambda: flash(q, kr, vr, 0.0, True, False, scale=scale), reps
            )
            ref = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
            row["flash_op_equals_sdpa"] = bool(torch.equal(out[0], ref))
            row["lse_shape"] = list(lse.shape)
            del kr, vr, out, ref
        except Exception as err:  # noqa: BLE001 - informative only
            row["flash_op_error"] = f"{type(err).__name__}: {err}"[:200]
        for name, cfg in KERNEL_CONFIGS.items():
            for tag, row_lse in (("", None), ("+lse", lse)):
                if tag and (row_lse is None or name != "default"):
                    continue
                try:
                    fn = lambda: triton_attention_stats(  # noqa: E731
                        q, k, attn, resp, scale, 10, (10, 100), row_lse=row_lse, config=cfg
                    )
                    row[f"stats_{name}{tag}_ms"] = _time_ms(fn, reps)
                except Exception as err:  # noqa: BLE001
                    row[f"stats_{name}{tag}_error"] = f"{type(err).__name__}: {err}"[:300]
        # a check of the default config against the chunked torch backend on the first rows
        from attncredit.attention.stats import attention_stats

        nb = min(b, 1)
        out = attention_stats(q[:nb, :4], k[:nb, :1], attention_mask=attn[:nb], response_mask=resp[:nb], backend="triton")
        ref = attention_stats(q[:nb, :4], k[:nb, :1], attention_mask=attn[:nb], response_mask=resp[:nb], backend="torch")
        row["max_err_vs_torch"] = {
            f: float((getattr(out, f) - getattr(ref, f)).abs().max()) for f in ("waad", "fai", "head_distance")
        }
        row["max_ref"] = {f: float(getattr(ref, f).abs().max()) for f in ("waad", "fai", "head_distance")}
        print(json.dumps(row), flush=True)
        rows.append(row)
        del q, k, v, lse
        gc.collect()
        torch.cuda.empty_cache()
    return rows


# ----------------------------------------------------------------------------------------------------------------
# whole model
# ----------------------------------------------------------------------------------------------------------------
def _peak_gib(fn):
    gc.collect()
    if DEVICE != "cuda":
        fn()
        return float("nan")
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    fn()
    _sync()
    return torch.cuda.max_memory_allocated() / GIB


def best_alternative(kernel_rows, lengths=(8192, 32768), margin=0.95):
    """(name, config) of the kernel variant fastest at ``lengths`` if it beats the default by 5%, else None."""
    rows = [r for r in kernel_rows if r["n"] in lengths] or kernel_rows
    totals = {}
    for name in KERNEL_CONFIGS:
        times = [r.get(f"stats_{name}_ms") for r in rows]
        if all(isinstance(t, float) for t in times):
            totals[name] = sum(times)
    if "default" not in totals:
        return None
    best = min(totals, key=totals.get)
    if best != "default" and totals[best] < margin * totals["default"]:
        return best, KERNEL_CONFIGS[best]
    return None


def bench_model(lengths, tokens, prompt, reps, vocab_size, eager, tiny=False, alternative=None):
    from transformers import AutoModelForCausalLM

    from attncredit.attention.probes import probe_layers
    from attncredit.attention.recording import enable_recording, record_attention

    config = qwen3_4b_config(vocab_size, tiny)
    torch.manual_seed(0)
    with torch.device(DEVICE):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16, attn_implementation="sdpa").eval()
    enable_recording(model)
    layers = probe_layers(config.num_hidden_layers)
    backend = "triton" if DEVICE == "cuda" else "torch"
    weights_gib = sum(p.numel() * p.element_size() for p in model.parameters()) / GIB
    print(f"model ready: {sum(p.numel() for p in model.parameters()) / 1e9:.2f} B params, {weights_gib:.1f} GiB, "
          f"probe layers {layers}", flush=True)
    rows = []
    for n in lengths:
        b = max(1, tokens // n)
        ids = torch.randint(0, vocab_size, (b, n), device=DEVICE)
        attn = torch.ones(b, n, dtype=torch.long, device=DEVICE)
        resp = attn.clone()
        resp[:, : min(prompt, n - 1)] = 0
        rec_holder = {}
        import attncredit.attention.triton_stats as ts

        default_config = ts._default_config

        def sdpa():
            with torch.no_grad():
                return model(input_ids=ids, attention_mask=attn, use_cache=False).logits

        def record():
            with torch.no_grad(), record_attention(model, layers, attn, resp, backend=backend) as rec:
                logits = model(input_ids=ids, attention_mask=attn, use_cache=False).logits
            rec_holder["stats"] = rec.stats
            return logits

        def record_alt():  # the same, with the kernel variant that the kernel part found faster
            ts._default_config = lambda query: {**default_config(query), **alternative[1]}
            try:
                return record()
            finally:
                ts._default_config = default_config

        fns = [sdpa, record] + ([record_alt] if alternative else [])

        for _ in range(2):  # warm-up (kernel compilation, allocator)
            for fn in fns:
                fn()
        times = {fn: [] for fn in fns}
        for i in range(reps):  # alternate, and rotate which goes first
            for fn in fns[i % len(fns):] + fns[: i % len(fns)]:
                _sync()
                t0 = time.perf_counter()
                fn()
                _sync()
                times[fn].append((time.perf_counter() - t0) * 1e3)
        t_sdpa, t_rec = times[sdpa], times[record]
        rec_holder.clear()
        mem_sdpa = _peak_gib(sdpa)
        mem_rec = _peak_gib(record)
        row = dict(n=n, batch=b, sdpa_ms=statistics.median(t_sdpa), record_ms=statistics.median(t_rec),
                   sdpa_ms_all=t_sdpa, record_ms_all=t_rec, sdpa_peak_gib=mem_sdpa, record_peak_gib=mem_rec)
        row["time_ratio"] = row["record_ms"] / row["sdpa_ms"]
        row["mem_ratio"] = mem_rec / mem_sdpa
        if alternative:
            row["alt_name"] = alternative[0]
            row["record_alt_ms"] = statistics.median(times[record_alt])
            row["time_ratio_alt"] = row["record_alt_ms"] / row["sdpa_ms"]
        rec_holder.clear()
        if eager:
            row.update(_eager(model, ids, attn))
        print(json.dumps({k: v for k, v in row.items() if not k.endswith("_all")}), flush=True)
        rows.append(row)
        del ids, attn, resp
        gc.collect()
        if DEVICE == "cuda":
            torch.cuda.empty_cache()
    return rows


def _eager(model, ids, attn):
    """Naive eager forward with output_attentions=True: time, peak memory, or OOM."""
    model.set_attn_implementation("eager")
    result = {}
    try:
        def fn():
            with torch.no_grad():
                out = model(input_ids=ids, attention_mask=attn, use_cache=False, output_attentions=True)
            return out.logits

        result["eager_peak_gib"] = _peak_gib(fn)
        result["eager_ms"] = _time_ms(fn, reps=2, warmup=0)
    except torch.OutOfMemoryError:
        result["eager_ms"] = "OOM"
        result["eager_peak_gib"] = "OOM"
    finally:
        gc.collect()
        if DEVICE == "cuda":
            torch.cuda.empty_cache()
        from attncredit.attention.recording import enable_recording

        enable_recording(model, verify=False)
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", default="all", choices=["all", "kernel", "model"])
    parser.add_argument("--lengths", default="1024,4096,8192,16384,32768")
    parser.add_argument("--tokens", type=int, default=32768, help="tokens per batch (batch = tokens // N)")
    parser.add_argument("--prompt", type=int, default=128, help="prompt tokens per row (not response rows)")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--vocab-size", type=int, default=32000)
    parser.add_argument("--no-eager", action="store_true")
    parser.add_argument("--json", default=None, help="write all results to this file")
    parser.add_argument("--smoke", action="store_true", help="CPU smoke run of the model part on a tiny Qwen3")
    args = parser.parse_args(argv)
    global DEVICE
    if args.smoke:
        DEVICE = "cpu"
        args.part, args.lengths, args.tokens, args.prompt, args.reps = "model", "64,128", 256, 16, 2
    elif not torch.cuda.is_available():
        sys.exit("bench_attention_stats.py needs a CUDA GPU (or --smoke for a CPU check of the script)")
    import transformers

    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None

    lengths = [int(x) for x in args.lengths.split(",")]
    meta = dict(
        date=datetime.date.today().isoformat(),
        gpu=torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu (smoke)",
        torch=torch.__version__,
        triton=triton_version,
        transformers=transformers.__version__,
        tokens=args.tokens,
        prompt=args.prompt,
        reps=args.reps,
        vocab_size=args.vocab_size,
    )
    print(json.dumps(meta), flush=True)
    results = dict(meta=meta)
    alternative = None
    if args.part in ("all", "kernel"):
        results["kernel"] = bench_kernel(lengths, args.tokens, args.prompt, args.reps)
        alternative = best_alternative(results["kernel"])
        results["alternative"] = alternative
        print(f"kernel variant faster than the default: {alternative}", flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=1))
    if args.part in ("all", "model"):
        results["model"] = bench_model(
            lengths, args.tokens, args.prompt, args.reps, args.vocab_size, not args.no_eager, tiny=args.smoke,
            alternative=alternative,
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    if "model" in results:
        print(f"\n{meta['gpu']}, {meta['date']}, torch {meta['torch']}, triton {meta['triton']}; "
              f"Qwen3-4B shape (vocab {args.vocab_size}), {args.tokens} tokens/batch, 5 probe layers")
        print(f"{'N':>6} {'B':>3} | {'sdpa ms':>8} {'GiB':>6} | {'record ms':>9} {'x sdpa':>7} {'GiB':>6} {'x mem':>6} | "
              f"{'eager ms':>9} {'GiB':>6}")
        for r in results["model"]:
            e_ms, e_mem = r.get("eager_ms", "-"), r.get("eager_peak_gib", "-")
            e_ms = f"{e_ms:.0f}" if isinstance(e_ms, float) else e_ms
            e_mem = f"{e_mem:.1f}" if isinstance(e_mem, float) else e_mem
            print(f"{r['n']:>6} {r['batch']:>3} | {r['sdpa_ms']:>8.1f} {r['sdpa_peak_gib']:>6.1f} | {r['record_ms']:>9.1f} "
                  f"{r['time_ratio']:>7.3f} {r['record_peak_gib']:>6.1f} {r['mem_ratio']:>6.3f} | {e_ms:>9} {e_mem:>6}"
                  + (f" | {r['alt_name']}: x {r['time_ratio_alt']:.3f}" if "alt_name" in r else ""))


if __name__ == "__main__":
    main()
