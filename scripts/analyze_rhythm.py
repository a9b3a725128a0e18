"""See and measure the preplan-and-anchor rhythm of a model (PAPER.md §4-5, Tables 1-2).

    python scripts/analyze_rhythm.py                                  # SmolLM2-135M, 8 GSM8K test problems
    python scripts/analyze_rhythm.py --model Qwen/Qwen3-4B-Base --num-samples 70 --out runs/rhythm-qwen3
    python scripts/analyze_rhythm.py --perturbation 2                 # + the Table 1 perturbation test

Samples a response per prompt (HF ``generate``, temperature 0.7 as in the paper's analysis), runs ONE recorded
forward per batch over prompt + response (per-head statistics from the attention-statistics engine, entropy from
the same forward's hidden states; no N x N map except a small window for the heatmap), and writes to ``--out``:

* ``sample_XXX_traces.png``: WAAD (local heads), FAI (global and receiver heads), entropy and gamma over the
  response, preplan (top-q |Delta WAAD|, Eq. 14) and anchor (top-q FAI, Eq. 16) tokens marked;
* ``sample_XXX_attention.png``: the local- and global-group attention of a window of response rows (the sawtooth);
* ``heads.png``: head distance d of every recorded (layer, head), local / global groups marked;
* ``index.html``: every response's tokens coloured by WAAD / FAI / entropy / gamma of each strategy (select);
* ``summary.json`` / ``summary.md``: the Table 2 statistics with random baselines and lifts (+ Table 1 if run).

Defaults and their reasons are in the ``--help`` of each option and in ``docs/analysis.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
# OpenMP worker threads that spin while waiting make CPU decoding 10-100x slower when other processes share the
# cores (measured here: 16 tokens of SmolLM2 took 0.2 s or, at random, 20-30 s); sleeping workers cost nothing.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from attncredit.errors import ConfigError  # noqa: E402

STAT_KEYS = ("waad_peak_entropy", "receiver_global_fai_cooccurrence", "fai_follows_waad")


def _horizon(values: list[str]) -> tuple[int, int | None]:
    if len(values) != 2:
        raise ConfigError(f"a FAI horizon is two values LO HI (HI may be 'end'), got {' '.join(values)!r}")
    lo, hi = values
    try:
        lo_i = int(lo)
        hi_i = None if hi.lower() == "end" else int(hi)
    except ValueError:
        raise ConfigError(f"a FAI horizon is two integers LO HI (HI may be 'end'), got {' '.join(values)!r}") from None
    if lo_i < 0 or (hi_i is not None and hi_i < lo_i):
        raise ConfigError(f"a FAI horizon needs 0 <= LO <= HI, got {' '.join(values)!r}")
    return lo_i, hi_i


def build_parser() -> argparse.ArgumentParser:
    from attncredit.analysis.peaks import PEAK_HELP, PEAK_METHODS
    from attncredit.models import DEFAULT_MODEL

    p = argparse.ArgumentParser(
        prog="analyze_rhythm.py",
        description="Generate responses and measure / plot the preplan-and-anchor rhythm (PAPER.md Tables 1-2).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    g = p.add_argument_group("model and data")
    g.add_argument("--model", default=DEFAULT_MODEL, help="hub id, local folder or embedded model name")
    g.add_argument("--dataset", default="gsm8k", help="dataset name of attncredit.data (prompts)")
    g.add_argument("--split", default="test")
    g.add_argument("--template", default=None, help="prompt template (default: the dataset's)")
    g.add_argument("--num-samples", type=int, default=8, help="number of prompts (one response each)")
    g.add_argument("--out", default="runs/rhythm", help="output folder")
    g.add_argument("--dtype", default="float32", help="model dtype (float32, bfloat16, float16, auto)")
    g.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    g.add_argument("--seed", type=int, default=0, help="seed of sampling, shuffles and random credit")
    g = p.add_argument_group("generation")
    g.add_argument("--max-new-tokens", type=int, default=256, help="response length cap")
    g.add_argument("--temperature", type=float, default=0.7, help="sampling temperature (paper's analysis: 0.7)")
    g.add_argument("--top-p", type=float, default=1.0)
    g.add_argument("--batch-size", type=int, default=8, help="prompts per generate call and per recorded forward")
    g = p.add_argument_group("attention statistics")
    g.add_argument("--layers", default="all",
                   help="layers whose heads are ranked into the local/global groups for the traces and Table 2: "
                        "'all' (every layer; adds per-third segment statistics as in Table 10), 'probe' (the "
                        "--num-probe-layers training probe layers) or a comma list of 0-indexed layers")
    g.add_argument("--num-probe-layers", type=int, default=5,
                   help="probe layers of the training-time gamma (5 evenly spaced in the middle third, §1)")
    g.add_argument("--window", type=int, default=10, help="WAAD clipping window W (Eq. 9)")
    g.add_argument("--fai-horizon", nargs=2, default=["1", "end"], metavar=("LO", "HI"),
                   help="FAI receiver band of the analysis (Eq. 10). The paper's analysis takes each token's "
                        "influence 'from the token to the end of the response' (App. A.1); we start at LO=1 so a "
                        "token's attention to itself (the diagonal) does not count as future influence. HI='end'")
    g.add_argument("--credit-fai-horizon", nargs=2, default=["10", "100"], metavar=("LO", "HI"),
                   help="FAI band of the gamma colouring, as in training (credit_fai_horizon)")
    g.add_argument("--head-quantile", type=float, default=0.3, help="share of heads per group (Eq. 7-8)")
    g.add_argument("--head-grouping", default="sequence", choices=("sequence", "batch"),
                   help="rank heads per response or per batch (PAPER.md §9 A1)")
    g.add_argument("--backend", default="auto", help="statistics backend: auto, torch, triton, dense")
    g = p.add_argument_group("credit (gamma colouring and selected tokens)")
    g.add_argument("--strategy", default="coupled", help="strategy whose gamma the page shows first")
    g.add_argument("--top-quantile", type=float, default=0.4,
                   help="q of the selected preplan (top-q |Delta WAAD|) and anchor (top-q FAI) tokens and of gamma")
    g.add_argument("--gamma-amp", type=float, default=1.5, help="gamma of a selected token (Eq. 15, 17, 19)")
    g = p.add_argument_group("peaks and Table 2")
    g.add_argument("--peak", default="top_quantile", choices=PEAK_METHODS, help=PEAK_HELP.replace("%", "%%"))
    g.add_argument("--peak-quantile", type=float, default=0.2, help="q of --peak top_quantile")
    g.add_argument("--peak-z", type=float, default=0.0, help="z of --peak local_max (threshold mean + z*std)")
    g.add_argument("--receiver-heads", type=int, default=None,
                   help="receiver heads per response: the heads with the highest excess kurtosis of their per-token "
                        "FAI (column means of attention from later response rows) over the response (Thought "
                        "Anchors' receiver heads at token level). Default: the size of the global group")
    g.add_argument("--shuffles", type=int, default=100, help="seeded FAI-peak shuffles per response for (iii)")
    g = p.add_argument_group("heatmap")
    g.add_argument("--heatmap-rows", type=int, default=96, help="response rows in the attention heatmap")
    g.add_argument("--heatmap-start", type=int, default=0, help="response offset of the first heatmap row")
    g.add_argument("--heatmap-context", type=int, default=32, help="keys shown before the first heatmap row")
    g = p.add_argument_group("perturbation test (Table 1)")
    g.add_argument("--perturbation", type=int, default=0, metavar="K",
                   help="perturb the top-K and bottom-K FAI positions of each response (0: off)")
    g.add_argument("--perturbation-alternatives", type=int, default=3,
                   help="forced next-token alternatives per position (the most likely tokens other than the original)")
    g.add_argument("--perturbation-tokens", type=int, default=48,
                   help="greedy continuation length; positions need at least this many tokens after them")
    return p


def _check_args(args) -> None:
    for name in ("num_samples", "max_new_tokens", "batch_size", "window", "heatmap_rows", "num_probe_layers",
                 "perturbation_tokens", "perturbation_alternatives"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    for name in ("shuffles", "perturbation", "heatmap_start", "heatmap_context"):
        if getattr(args, name) < 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(args, name)}")
    if not args.temperature > 0:
        raise ConfigError(f"--temperature must be > 0, got {args.temperature}")
    if not 0 < args.top_p <= 1:
        raise ConfigError(f"--top-p must be in (0, 1], got {args.top_p}")
    if not 0 < args.top_quantile <= 1:
        raise ConfigError(f"--top-quantile must be in (0, 1], got {args.top_quantile}")
    if args.receiver_heads is not None and args.receiver_heads < 1:
        raise ConfigError(f"--receiver-heads must be >= 1, got {args.receiver_heads}")


def _layers(spec: str, num_layers: int, probes: list[int]) -> list[int]:
    from attncredit.attention import probe_layers

    if spec == "all":
        return list(range(num_layers))
    if spec == "probe":
        return list(probes)
    try:
        explicit = [int(x) for x in spec.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"--layers must be 'all', 'probe' or a comma list of layer ids, got {spec!r}") from None
    return probe_layers(num_layers, explicit=explicit)


def _segments(num_layers: int) -> dict[str, list[int]]:
    """Bottom / middle / top third of the layers (PAPER.md Table 10), middle = [floor(L/3), floor(2L/3))."""
    lo, hi = num_layers // 3, (2 * num_layers) // 3
    parts = {"bottom": list(range(0, lo)), "middle": list(range(lo, hi)), "top": list(range(hi, num_layers))}
    return {k: v for k, v in parts.items() if v}


def _prompt_text(tokenizer, prompt) -> str:
    """The text generation starts from, as TRL renders it (an assistant prefill is continued)."""
    from attncredit.data.templates import chat_prompt_text

    if isinstance(prompt, str):
        return prompt
    if getattr(tokenizer, "chat_template", None):
        return chat_prompt_text(tokenizer, prompt)
    return "\n\n".join(m["content"] for m in prompt)


def _eos_ids(model, tokenizer) -> set[int]:
    eos = model.generation_config.eos_token_id
    eos = tokenizer.eos_token_id if eos is None else eos
    return set(eos if isinstance(eos, (list, tuple)) else [eos]) - {None}


def _fmt(v, pct: bool = False) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return f"{100 * v:.2f}%" if pct else f"{v:.4f}"


def _lift(v) -> str:
    return "n/a" if v is None else f"{100 * v:+.2f}%"


def _clean(obj):
    """JSON-safe: NaN/inf -> None, numpy scalars -> Python."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return float(obj) if math.isfinite(float(obj)) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def run(args) -> dict:
    from tqdm.auto import tqdm

    from attncredit.analysis import coupling as cp
    from attncredit.analysis import perturbation as pt
    from attncredit.analysis.forward import BandWindow, rhythm_forward
    from attncredit.analysis.html import TokenViewSample, write_token_page
    from attncredit.analysis.peaks import PeakRule
    from attncredit.analysis.plots import plot_band, plot_heads, plot_traces
    from attncredit.analysis.rhythm import analyze_batch
    from attncredit.attention import enable_recording, probe_layers, select_head_groups
    from attncredit.credit import list_strategies
    from attncredit.data import load_dataset_by_name
    from attncredit.models import load_model, load_tokenizer

    _check_args(args)
    fai_horizon = _horizon(args.fai_horizon)
    credit_horizon = _horizon(args.credit_fai_horizon)
    rule = PeakRule(args.peak, args.peak_quantile, args.peak_z)
    strategies = list_strategies()
    if args.strategy not in strategies:
        raise ConfigError(f"unknown credit strategy {args.strategy!r}; allowed: {', '.join(strategies)}")
    timings: dict[str, float] = {}
    start = time.perf_counter()
    out = Path(args.out)

    rows = load_dataset_by_name(args.dataset, args.split, template=args.template, limit=args.num_samples)
    if len(rows) == 0:
        raise ConfigError(f"dataset {args.dataset!r} split {args.split!r} has no rows")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    tokenizer = load_tokenizer(args.model)
    model = load_model(args.model, dtype=args.dtype).to(device).eval()
    enable_recording(model)
    num_layers = model.config.get_text_config().num_hidden_layers
    probes = probe_layers(num_layers, args.num_probe_layers)
    layers = _layers(args.layers, num_layers, probes)
    recorded = sorted(set(layers) | set(probes))
    segments = _segments(num_layers) if args.layers == "all" and num_layers >= 3 else {}
    eos = _eos_ids(model, tokenizer)
    pad = tokenizer.pad_token_id
    out.mkdir(parents=True, exist_ok=True)
    timings["load"] = time.perf_counter() - start

    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    credit_generator = torch.Generator().manual_seed(args.seed)
    samples, page_samples, perturbations = [], [], []
    total = cp.ResponseCoupling()
    seg_totals = {name: cp.ResponseCoupling() for name in segments}
    head_distances, receiver_masks = [], []
    timings.update(generate=0.0, forward=0.0, plots=0.0, perturbation=0.0)
    bar = tqdm(total=len(rows), desc="rhythm", unit="sample", dynamic_ncols=True)
    for b0 in range(0, len(rows), args.batch_size):
        batch = [rows[i] for i in range(b0, min(b0 + args.batch_size, len(rows)))]
        texts = [_prompt_text(tokenizer, r["prompt"]) for r in batch]
        enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        t = time.perf_counter()
        bar.set_postfix_str("generating")
        with torch.no_grad():
            gen = model.generate(
                **enc, do_sample=True, temperature=args.temperature, top_p=args.top_p, top_k=0,
                max_new_tokens=args.max_new_tokens, pad_token_id=pad,
            )
        timings["generate"] += time.perf_counter() - t
        width = enc["input_ids"].shape[1]
        completion = gen[:, width:].cpu()
        resp_mask = torch.zeros_like(completion, dtype=torch.bool)
        truncated = []
        for i in range(completion.shape[0]):
            ids = completion[i].tolist()
            stop = next((j + 1 for j, tok in enumerate(ids) if tok in eos), None)
            truncated.append(stop is None)
            resp_mask[i, : stop if stop is not None else len(ids)] = True
        keep = int(resp_mask.sum(1).max())
        completion, resp_mask = completion[:, :keep], resp_mask[:, :keep]
        input_ids = torch.cat([enc["input_ids"].cpu(), completion.masked_fill(~resp_mask, pad)], dim=1)
        attention = torch.cat([enc["attention_mask"].cpu().bool(), resp_mask], dim=1)
        response = torch.cat([torch.zeros_like(enc["attention_mask"].cpu(), dtype=torch.bool), resp_mask], dim=1)
        windows = []
        for i in range(len(batch)):
            n = int(resp_mask[i].sum())
            first_real = int(attention[i].nonzero()[0])
            r0 = width + min(args.heatmap_start, max(n - 1, 0))
            r1 = min(r0 + args.heatmap_rows, width + n)
            windows.append(BandWindow(r0, r1, max(first_real, r0 - args.heatmap_context)) if n else None)
        t = time.perf_counter()
        bar.set_postfix_str("recorded forward")
        fwd = rhythm_forward(
            model, input_ids.to(device), attention.to(device), response.to(device), recorded,
            window=args.window, fai_horizon=fai_horizon, backend=args.backend, credit_layers=probes,
            credit_fai_horizon=credit_horizon, band_windows=windows, band_layers=layers,
            num_candidates=args.perturbation_alternatives + 1,
        )
        rhythms = analyze_batch(
            fwd, input_ids, response, layers=layers, credit_layers=probes, fai_lo=fai_horizon[0], rule=rule,
            rng=rng, head_quantile=args.head_quantile, head_grouping=args.head_grouping,
            receivers=args.receiver_heads, top_quantile=args.top_quantile, strategies=strategies,
            credit_kwargs={"gamma_amp": args.gamma_amp}, credit_generator=credit_generator,
            shuffles=args.shuffles, segments=segments,
        )
        timings["forward"] += time.perf_counter() - t
        for i, (row, r) in enumerate(zip(batch, rhythms)):
            index = b0 + i
            key = f"sample_{index:03d}"
            bar.set_postfix_str(f"{key}: plots")
            if r is None:  # empty response
                samples.append({"index": index, "key": key, "num_tokens": 0, "skipped": "empty response"})
                bar.update(1)
                continue
            t = time.perf_counter()
            r.tokens = [tokenizer.decode([tok]) for tok in r.token_ids]
            r.prompt_length = int(enc["attention_mask"][i].sum())
            total = total + r.coupling
            for name, counts in r.segments.items():
                seg_totals[name] = seg_totals[name] + counts
            head_distances.append(torch.from_numpy(r.head_distance))
            receiver_masks.append(r.receiver_mask)
            horizon_text = f"[{fai_horizon[0]}, {'end' if fai_horizon[1] is None else fai_horizon[1]}]"
            traces = plot_traces(
                out / f"{key}_traces.png", r.tokens, r.waad, r.fai, entropy=r.entropy,
                gamma=r.gammas.get(args.strategy), preplan=r.preplan, anchors=r.anchors,
                receiver_fai=r.receiver_fai, fai_eligible=r.fai_eligible, window=args.window,
                gamma_label=f"γ ({args.strategy})",
                title=f"{key}: {r.length} response tokens of {Path(str(args.model)).name} on {args.dataset} — "
                      f"WAAD (W={args.window}) and FAI (band {horizon_text}) of the {len(layers)}-layer head groups; "
                      f"top-{args.top_quantile:g} selections marked",
            )
            images = [traces.name]
            if r.band_local is not None:
                ro = int(windows[i].row_start) - width
                co = int(windows[i].col_start) - width
                band = plot_band(
                    out / f"{key}_attention.png", r.band_local, r.band_global, row_offset=ro, col_offset=co,
                    preplan=r.preplan, anchors=r.anchors, window=args.window,
                    title=f"{key}: group-averaged attention probabilities (Eq. 8), response rows {ro}-"
                          f"{ro + r.band_local.shape[0] - 1}, keys from {co}, head groups of {len(layers)} layers\n"
                          "exact softmax over the whole row (prompt included); mass on keys further left is not shown",
                )
                images.append(band.name)
            timings["plots"] += time.perf_counter() - t
            record = {
                "index": index,
                "key": key,
                "question": row.get("question", ""),
                "answer": row.get("answer", ""),
                "response": tokenizer.decode(r.token_ids, skip_special_tokens=True),
                "num_tokens": r.length,
                "prompt_tokens": r.prompt_length,
                "truncated": truncated[i],
                "images": images,
                "selected": {"preplan": int(r.preplan.sum()), "anchors": int(r.anchors.sum())},
                "peaks": {k: int(v.sum()) for k, v in r.peaks.items()},
                "receiver_heads_in_global_group": r.receiver_in_global,
                "table2": cp.table2(r.coupling),
                "counts": r.coupling.as_dict(),
            }
            if args.perturbation:
                bar.set_postfix_str(f"{key}: perturbation")
                t = time.perf_counter()
                prompt_ids = enc["input_ids"][i][enc["attention_mask"][i].bool()].tolist()
                res = pt.perturb_response(
                    model, tokenizer, prompt_ids, r.token_ids, r.fai, r.fai_eligible, r.candidates,
                    k=args.perturbation, alternatives=args.perturbation_alternatives,
                    max_tokens=args.perturbation_tokens, min_following=args.perturbation_tokens,
                    batch_size=max(args.batch_size, 2 * args.perturbation * args.perturbation_alternatives),
                )
                perturbations.append(res)
                record["perturbation"] = {
                    "top_jaccard": res.top_mean, "bottom_jaccard": res.bottom_mean,
                    "positions": {g: [{"position": p.position, "fai": p.fai, "original": p.original_token,
                                       "alternatives": p.alternatives, "jaccard": p.jaccards}
                                      for p in getattr(res, g)] for g in ("top", "bottom")},
                }
                timings["perturbation"] += time.perf_counter() - t
            samples.append(record)
            page_samples.append(_page_sample(TokenViewSample, r, record, args))
            bar.update(1)
        del fwd
    bar.close()

    t = time.perf_counter()
    heads = {}
    if head_distances:
        d = torch.stack(head_distances)  # [S, L, Hq]
        local, glob = select_head_groups(d, args.head_quantile, per="batch")
        share = np.mean(np.stack(receiver_masks), axis=0)
        plot_heads(out / "heads.png", d.mean(0).numpy(), local[0].numpy(), glob[0].numpy(), layers,
                   probe_layers=probes, receiver_share=share,
                   title=f"{Path(str(args.model)).name}: head distance d over {len(head_distances)} responses "
                         f"(mean per head); groups of the mean d, {args.head_quantile:g} of the heads each")
        heads = {
            "layers": layers,
            "probe_layers": probes,
            "mean_head_distance": d.mean(0).tolist(),
            "local": [[layers[li], h] for li, h in local[0].nonzero().tolist()],
            "global": [[layers[li], h] for li, h in glob[0].nonzero().tolist()],
            "receiver_share": share.tolist(),
        }
    timings["plots"] += time.perf_counter() - t
    timings["total"] = time.perf_counter() - start
    summary = {
        "config": {
            **{k: v for k, v in vars(args).items()},
            "fai_horizon": [fai_horizon[0], "end" if fai_horizon[1] is None else fai_horizon[1]],
            "credit_fai_horizon": [credit_horizon[0], "end" if credit_horizon[1] is None else credit_horizon[1]],
            "analysis_layers": layers,
            "probe_layers": probes,
            "num_layers": num_layers,
            "num_query_heads": int(head_distances[0].shape[1]) if head_distances else None,
            "peak_rule": rule.describe(),
            "device": str(device),
        },
        "num_responses": sum(1 for s in samples if s.get("num_tokens")),
        "num_response_tokens": int(sum(s.get("num_tokens", 0) for s in samples)),
        "truncated_responses": sum(1 for s in samples if s.get("truncated")),
        "table2": cp.table2(total),
        "receiver_heads_in_global_group": float(np.mean([s["receiver_heads_in_global_group"] for s in samples
                                                         if s.get("num_tokens")])) if head_distances else None,
        "paper_table2": {k: dict(zip(("random", "observed", "lift"), v)) for k, v in cp.PAPER_TABLE2.items()},
        "segments": {name: cp.table2(c) for name, c in seg_totals.items()},
        "heads": heads,
        "runtime_s": timings,
        "samples": samples,
    }
    if args.perturbation:
        summary["perturbation"] = {**pt.summarize(perturbations), "k": args.perturbation,
                                   "alternatives": args.perturbation_alternatives,
                                   "continuation_tokens": args.perturbation_tokens, "paper": pt.PAPER_TABLE1}
    summary = _clean(summary)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / "summary.md").write_text(_markdown(summary), encoding="utf-8")
    write_token_page(
        out / "index.html", page_samples, title=f"Preplan-and-anchor rhythm: {args.model} on {args.dataset}",
        default_mode=f"gamma:{args.strategy}", gamma_amp=args.gamma_amp, intro_html=_intro_html(summary),
    )
    return summary


def _page_sample(cls, r, record, args):
    details = [("question", record["question"]), ("reference answer", record["answer"]),
               ("response", f"{r.length} tokens" + (" (hit --max-new-tokens)" if record["truncated"] else ""))]
    return cls(
        key=record["key"],
        heading=f"{record['key']} ({r.length} tokens)",
        tokens=r.tokens,
        values={"waad": r.waad.tolist(), "delta": r.delta.tolist(),
                "fai": np.where(r.fai_eligible, r.fai, np.nan).tolist(),
                "receiver_fai": np.where(r.fai_eligible, r.receiver_fai, np.nan).tolist(),
                "entropy": r.entropy.tolist()},
        gammas={name: g.tolist() for name, g in r.gammas.items()},
        marks={"preplan": r.preplan.tolist(), "anchor": r.anchors.tolist()},
        details=details,
        images=record["images"],
    )


def _table2_rows(t2: dict, paper: dict | None) -> list[str]:
    from attncredit.analysis.coupling import TABLE2_TITLES

    rows = []
    for key in STAT_KEYS:
        m = t2[key]
        pct = key != "waad_peak_entropy"
        cells = [TABLE2_TITLES[key], _fmt(m["random"], pct), _fmt(m["observed"], pct), _lift(m["lift"])]
        if paper is not None:
            pm = paper[key]
            cells += [_fmt(pm["random"], pct), _fmt(pm["observed"], pct), _lift(pm["lift"])]
        rows.append(cells)
    return rows


def _markdown(summary: dict) -> str:
    c = summary["config"]
    lines = [
        f"# Preplan-and-anchor rhythm: {c['model']} on {c['dataset']} ({c['split']})",
        "",
        f"{summary['num_responses']} responses, {summary['num_response_tokens']} response tokens "
        f"({summary['truncated_responses']} hit --max-new-tokens {c['max_new_tokens']}); sampling temperature "
        f"{c['temperature']}, seed {c['seed']}; runtime {summary['runtime_s']['total']:.1f} s on {c['device']}.",
        "",
        "## Table 2: coupling statistics (Lift = (Observed - Random) / Random)",
        "",
        "| Metric | Random | Observed | Lift | Paper random | Paper observed | Paper lift |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += ["| " + " | ".join(r) + " |" for r in _table2_rows(summary["table2"], summary["paper_table2"])]
    nxt = summary["table2"]["waad_peak_next_token_entropy"]
    lines += [
        "",
        "Paper: Qwen3-4B-Base, 70 GSM8K problems. Variant of (i) with the entropy of the distribution the peak "
        f"token's own row predicts: random {_fmt(nxt['random'])}, observed {_fmt(nxt['observed'])}, lift "
        f"{_lift(nxt['lift'])}.",
    ]
    if summary.get("segments"):
        lines += ["", "## By layer segment (PAPER.md Table 10: groups ranked within each third of the layers)", "",
                  "| Segment | Metric | Random | Observed | Lift |", "|---|---|---|---|---|"]
        for name, t2 in summary["segments"].items():
            for r in _table2_rows(t2, None):
                lines.append(f"| {name} | " + " | ".join(r) + " |")
    if "perturbation" in summary:
        p = summary["perturbation"]
        lines += [
            "", "## Table 1: perturbation test", "",
            f"Top-{p['k']} and bottom-{p['k']} FAI positions per response, {p['alternatives']} forced alternatives "
            f"each, greedy continuations of {p['continuation_tokens']} tokens, content-word Jaccard with the original "
            f"continuation ({p['continuations']} continuations, {p['responses']} responses, {p['ties']} ties).",
            "",
            "| | Top-k FAI | Bottom-k FAI | Pr(Top < Bottom) |", "|---|---|---|---|",
            f"| measured | {_fmt(p['top_jaccard'])} | {_fmt(p['bottom_jaccard'])} | "
            f"{_fmt(p['pr_top_lt_bottom'], True)} |",
            f"| paper (Qwen3-4B, 70 problems) | {p['paper']['top_jaccard']} | {p['paper']['bottom_jaccard']} | "
            f"{100 * p['paper']['pr_top_lt_bottom']:.2f}% |",
        ]
    lines += [
        "", "## Definitions", "",
        f"- Layers: {c['layers']} ({len(c['analysis_layers'])} of {c['num_layers']}); head groups: the "
        f"{c['head_quantile']:g} of the heads with the lowest / highest head distance d (Eq. 7), ranked per "
        f"{c['head_grouping']}. Probe layers of gamma: {c['probe_layers']}.",
        f"- WAAD window W = {c['window']}; FAI receiver band [{c['fai_horizon'][0]}, {c['fai_horizon'][1]}] (gamma: "
        f"[{c['credit_fai_horizon'][0]}, {c['credit_fai_horizon'][1]}]).",
        f"- Peak: {c['peak_rule']}; WAAD peaks over all response tokens, FAI peaks over tokens with an FAI.",
        "- Entropy at token t: entropy of p(. | q, o_<t), the distribution that sampled it.",
        "- Receiver heads: per response, the heads with the highest excess kurtosis of their per-token FAI "
        f"({c['receiver_heads'] or 'as many as the global group'} heads); receiver FAI = their mean FAI. On average "
        f"{_fmt(summary['receiver_heads_in_global_group'], True)} of the receiver heads are also global-group heads.",
        f"- (iii) random: FAI peaks moved to random FAI-eligible positions, {c['shuffles']} seeded shuffles.",
        "",
        "## Samples",
        "",
        "| Sample | Tokens | Truncated | Preplans | Anchors | Plots |",
        "|---|---|---|---|---|---|",
    ]
    for s in summary["samples"]:
        if not s.get("num_tokens"):
            lines.append(f"| {s['key']} | 0 | | | | |")
            continue
        plots = " ".join(f"[{Path(p).stem.split('_')[-1]}]({p})" for p in s["images"])
        lines.append(f"| {s['key']} | {s['num_tokens']} | {'yes' if s['truncated'] else 'no'} | "
                     f"{s['selected']['preplan']} | {s['selected']['anchors']} | {plots} |")
    lines.append("")
    return "\n".join(lines)


def _intro_html(summary: dict) -> str:
    import html

    head = "<tr><th>Metric</th><th>Random</th><th>Observed</th><th>Lift</th><th>Paper random</th>" \
           "<th>Paper observed</th><th>Paper lift</th></tr>"
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>"
                   for r in _table2_rows(summary["table2"], summary["paper_table2"]))
    c = summary["config"]
    text = (f"{summary['num_responses']} responses, {summary['num_response_tokens']} tokens; layers "
            f"{html.escape(str(c['layers']))}, W={c['window']}, "
            f"FAI band [{c['fai_horizon'][0]}, {c['fai_horizon'][1]}], "
            f"peak rule: {html.escape(c['peak_rule'])}. Details in summary.md / summary.json.")
    heads = '<p><a href="heads.png"><img src="heads.png" alt="head distances"></a></p>' if summary["heads"] else ""
    return f"<p>{text}</p><table>{head}{body}</table>{heads}"


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        summary = run(args)
    except (ConfigError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    t2 = summary["table2"]
    pngs = sum(len(s.get("images", [])) for s in summary["samples"]) + 1
    seconds = summary["runtime_s"]["total"]
    print(f"wrote {args.out}/index.html, summary.json, summary.md and {pngs} PNGs in {seconds:.1f} s")
    for key in STAT_KEYS:
        m = t2[key]
        print(f"  {key}: random {_fmt(m['random'])}, observed {_fmt(m['observed'])}, lift {_lift(m['lift'])}")
    if "perturbation" in summary:
        p = summary["perturbation"]
        print(f"  perturbation: top {_fmt(p['top_jaccard'])}, bottom {_fmt(p['bottom_jaccard'])}, "
              f"Pr(top<bottom) {_fmt(p['pr_top_lt_bottom'], True)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
