"""Cost of recording attention statistics in a no-grad forward, on a model of Qwen3-4B's shape (GPU).

Per sequence length N (batch B = tokens // N, so every row fills about the same tokens), ``--part model`` times
the no-grad forward of the model, alternating after a warm-up (median of ``--reps``):

  (a) ``sdpa``:    plain SDPA (time, peak memory);
  (b) ``regroup``: inside ``record_attention`` on the 5 probe layers (triton backend) with the head distance, the
                   row LSE taken from SDPA's own kernel: what a step that regroups the heads costs;
  (c) ``kept``:    the same without the head distance (band-only): a step with kept head groups
                   (``credit_head_regroup_every`` > 1);
  (d) ``own``:     (b) with the statistics computing the normaliser themselves (``kernel_lse=False``);
  (e) ``eager``:   the naive route, an eager forward with ``output_attentions=True`` (time, or OOM).

(b)-(d) are reported as ratios to (a) measured in the same run, with the number of probe layers whose LSE came
from SDPA's kernel. The model is randomly initialised from Qwen3-4B's config (36 layers, 32 query / 8 KV heads,
head_dim 128, hidden 2560, intermediate 9728, bf16), with a smaller vocabulary (32000 instead of 151936) to save
memory; the vocabulary only changes the embedding and the LM head, the same in every mode. The prompt is the first
``--prompt`` tokens of each row, the rest is the response; ``--left-pad`` left-pads every other row (SDPA then
gets a padding mask instead of its causal flag, as in a batch of rollouts).

``--part kernel`` times one layer's q/k of the same shapes: SDPA, SDPA with its LSE captured, and the statistics
kernel in the three modes (own / lse / band), the regroup mode also for a few block configurations, with each
mode's error against the chunked torch backend. The summary tables print last.

    python scripts/bench_attention_stats.py --part all --json out.json [--left-pad 37]
"""

from __future__ import annotations

import argparse
import datetime
import logging
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
KERNEL_CONFIGS = {  # name -> config override of the kernel with a given LSE (full and band-only); "default" first
    "default": {},
    "128x128w8s3": dict(block_m=128, block_n=128, num_warps=8, num_stages=3),
    "128x64w8s3": dict(block_m=128, block_n=64, num_warps=8, num_stages=3),
    "64x64w4s3": dict(block_m=64, block_n=64, num_warps=4, num_stages=3),
    "128x64w4s2": dict(block_m=128, block_n=64, num_warps=4, num_stages=2),
    "128x32w4s4": dict(block_m=128, block_n=32, num_warps=4, num_stages=4),
}


def bench_kernel(lengths, tokens, prompt, reps):
    """One layer of the Qwen3-4B shape: SDPA, SDPA with its row LSE captured, and the statistics kernel in its three
    modes: ``own`` (it computes the normaliser), ``lse`` (full sweep with the captured LSE: a regroup step) and
    ``band`` (band-only with the captured LSE: a kept-groups step); ``lse`` and ``band`` also for KERNEL_CONFIGS."""
    import torch.nn.functional as F

    from attncredit.attention.chunked import chunked_attention_stats
    from attncredit.attention.lse import RowLSECapture
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

        def sdpa():
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True, scale=scale)

        def sdpa_lse():
            with RowLSECapture() as capture:
                out = sdpa()
            return out, capture.lse

        out, lse = sdpa_lse()
        row["lse_captured"] = lse is not None
        row["lse_output_equal"] = bool(torch.equal(out, sdpa()))
        row["sdpa_ms"] = _time_ms(sdpa, reps)
        row["sdpa_lse_ms"] = _time_ms(sdpa_lse, reps)
        modes = {"own": dict(row_lse=None), "lse": dict(row_lse=lse), "band": dict(row_lse=lse, head_distance=False)}
        for mode, kwargs in modes.items():
            if mode != "own" and lse is None:
                continue
            for name, cfg in KERNEL_CONFIGS.items():
                if name != "default" and mode == "own":
                    continue
                try:
                    def fn(cfg=cfg, kwargs=kwargs):
                        return triton_attention_stats(q, k, attn, resp, scale, 10, (10, 100), config=cfg, **kwargs)

                    row[f"stats_{mode}_{name}_ms"] = _time_ms(fn, reps)
                except Exception as err:  # noqa: BLE001 - a config the GPU cannot run is reported, not fatal
                    row[f"stats_{mode}_{name}_error"] = f"{type(err).__name__}: {err}"[:300]
        # accuracy of each mode against the chunked torch backend (its own normaliser) on one sequence, 4 heads
        ref = chunked_attention_stats(q[:1, :4], k[:1, :1], attn[:1], resp[:1], scale, 10, (10, 100))
        for mode, kwargs in modes.items():
            if mode != "own" and lse is None:
                continue
            kw = dict(kwargs, row_lse=None if kwargs["row_lse"] is None else kwargs["row_lse"][:1, :4])
            got = triton_attention_stats(q[:1, :4], k[:1, :1], attn[:1], resp[:1], scale, 10, (10, 100), **kw)
            row[f"max_err_{mode}"] = {
                f: float((getattr(got, f) - getattr(ref, f)).abs().max())
                for f in ("waad", "fai", "head_distance") if getattr(got, f) is not None
            }
        print(json.dumps(row), flush=True)
        rows.append(row)
        del q, k, v, lse, out
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


# model modes: record_attention keywords of each recorded forward
MODEL_MODES = {
    "regroup": dict(head_distance=True),  # a regroup step: full sweep, row LSE from SDPA's kernel
    "kept": dict(head_distance=False),  # a step with kept head groups: band-only
    "own": dict(head_distance=True, kernel_lse=False),  # the statistics compute the normaliser themselves
}


def bench_model(lengths, tokens, prompt, left_pad, reps, vocab_size, eager, tiny=False):
    """No-grad forwards of the Qwen3-4B shape: plain SDPA and recording in each of MODEL_MODES, alternated."""
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
        attn[1::2, : min(left_pad, n // 2)] = 0  # every other row left-padded, as in a batch of rollouts
        resp = attn.clone()
        resp[:, : min(prompt, n - 1)] = 0
        lse_layers = {}

        def sdpa():
            with torch.no_grad():
                return model(input_ids=ids, attention_mask=attn, use_cache=False).logits

        def recorded(mode):
            def fn():
                with torch.no_grad(), record_attention(model, layers, attn, resp, backend=backend,
                                                       **MODEL_MODES[mode]) as rec:
                    logits = model(input_ids=ids, attention_mask=attn, use_cache=False).logits
                lse_layers[mode] = len(rec.kernel_lse_layers)
                return logits
            fn.__name__ = mode
            return fn

        fns = [sdpa] + [recorded(mode) for mode in MODEL_MODES]
        for _ in range(2):  # warm-up (kernel compilation, allocator)
            for fn in fns:
                fn()
        times = {fn.__name__: [] for fn in fns}
        for i in range(reps):  # alternate, and rotate which goes first
            for fn in fns[i % len(fns):] + fns[: i % len(fns)]:
                _sync()
                t0 = time.perf_counter()
                fn()
                _sync()
                times[fn.__name__].append((time.perf_counter() - t0) * 1e3)
        row = dict(n=n, batch=b, left_pad=left_pad, kernel_lse_layers=lse_layers, times_ms=times)
        row["sdpa_ms"] = statistics.median(times["sdpa"])
        for mode in MODEL_MODES:
            row[f"{mode}_ms"] = statistics.median(times[mode])
            row[f"{mode}_ratio"] = row[f"{mode}_ms"] / row["sdpa_ms"]
        row["sdpa_peak_gib"] = _peak_gib(sdpa)
        row["regroup_peak_gib"] = _peak_gib(fns[1])
        row["mem_ratio"] = row["regroup_peak_gib"] / row["sdpa_peak_gib"]
        if eager:
            row.update(_eager(model, ids, attn))
        print(json.dumps({k: v for k, v in row.items() if k != "times_ms"}), flush=True)
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

        model.set_attn_implementation("sdpa")  # back to SDPA: enable_recording keeps the route it finds
        enable_recording(model, verify=False)
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", default="all", choices=["all", "kernel", "model"])
    parser.add_argument("--lengths", default="1024,4096,8192,16384,32768")
    parser.add_argument("--tokens", type=int, default=32768, help="tokens per batch (batch = tokens // N)")
    parser.add_argument("--prompt", type=int, default=128, help="prompt tokens per row (not response rows)")
    parser.add_argument("--left-pad", type=int, default=0, help="left padding of every other row (model part)")
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
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("attncredit.attention.lse").setLevel(logging.INFO)  # which kernel gives the row LSE
    results = dict(meta=meta)
    if args.part in ("all", "kernel"):
        results["kernel"] = bench_kernel(lengths, args.tokens, args.prompt, args.reps)
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=1))
    if args.part in ("all", "model"):
        results["model"] = bench_model(
            lengths, args.tokens, args.prompt, args.left_pad, args.reps, args.vocab_size, not args.no_eager,
            tiny=args.smoke,
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    print(f"\n{meta['gpu']}, {meta['date']}, torch {meta['torch']}, triton {meta['triton']}, transformers "
          f"{meta['transformers']}; Qwen3-4B shape, {args.tokens} tokens/batch, prompt {args.prompt}")
    if "kernel" in results:
        print("one layer (B x 32q/8kv x N x 128, bf16), ms: SDPA, SDPA with its LSE kept, statistics own / lse / band")
        print(f"{'N':>6} {'B':>3} | {'sdpa':>7} {'+lse':>7} {'same':>5} | {'own':>7} {'lse':>7} {'band':>7} | "
              "fastest configs")
        for r in results["kernel"]:
            best = []
            for mode in ("lse", "band"):
                times = {k[len(f"stats_{mode}_"):-3]: v for k, v in r.items()
                         if k.startswith(f"stats_{mode}_") and k.endswith("_ms")}
                name = min(times, key=times.get) if times else "-"
                best.append(f"{mode} {name} {times.get(name, float('nan')):.2f}")
            print(f"{r['n']:>6} {r['batch']:>3} | {r['sdpa_ms']:>7.2f} {r['sdpa_lse_ms']:>7.2f} "
                  f"{str(r['lse_output_equal']):>5} | {r.get('stats_own_default_ms', float('nan')):>7.2f} "
                  f"{r.get('stats_lse_default_ms', float('nan')):>7.2f} "
                  f"{r.get('stats_band_default_ms', float('nan')):>7.2f}"
                  f" | {', '.join(best)}")
    if "model" in results:
        print(f"model, no-grad forward, 5 probe layers, left padding {args.left_pad} on every other row: time x SDPA")
        print(f"{'N':>6} {'B':>3} | {'sdpa ms':>8} {'GiB':>6} | {'regroup':>8} {'kept':>8} {'own':>8} | "
              f"{'LSE layers':>10} {'x mem':>6} | {'eager ms':>9}")
        for r in results["model"]:
            e_ms = r.get("eager_ms", "-")
            e_ms = f"{e_ms:.0f}" if isinstance(e_ms, float) else e_ms
            lse = r["kernel_lse_layers"]
            print(f"{r['n']:>6} {r['batch']:>3} | {r['sdpa_ms']:>8.1f} {r['sdpa_peak_gib']:>6.1f} | "
                  f"{r['regroup_ratio']:>8.4f} {r['kept_ratio']:>8.4f} {r['own_ratio']:>8.4f} | "
                  f"{lse.get('regroup', 0):>4}/{lse.get('kept', 0):<5} {r['mem_ratio']:>6.3f} | {e_ms:>9}")


if __name__ == "__main__":
    main()
