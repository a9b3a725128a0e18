"""The rhythm analysis end to end: sample responses, run the recorded forward, write plots, page and summaries.

:func:`run_rhythm_analysis` is what ``attncredit analyze`` runs. For a :class:`RhythmConfig` it

1. samples one response per prompt of the dataset through the evaluation generator (HF backend,
   :mod:`attncredit.analysis.responses`: the trainer's prompt ids and end tokens);
2. per batch of ``batch_size`` responses, runs ONE recorded forward over prompt + response
   (:func:`attncredit.analysis.forward.rhythm_forward`) and builds each response's traces, selected tokens, gamma
   and Table 2 counts (:func:`attncredit.analysis.rhythm.analyze_batch`);
3. optionally runs the perturbation test of Table 1 of the paper (:mod:`attncredit.analysis.perturbation`);
4. writes to ``out``: ``sample_XXX_traces.png``, ``sample_XXX_attention.png``, ``heads.png``, ``index.html``,
   ``summary.json`` and ``summary.md`` (:mod:`attncredit.analysis.report`).

The definitions (peaks, receiver heads, the perturbation test) are in "Analysis definitions" of
``docs/method.md``; the options and their defaults in ``docs/analysis.md``.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError
from . import coupling as cp
from . import perturbation as pt
from .report import clean_json, summary_intro_html, summary_markdown


@dataclass
class RhythmConfig:
    """Every setting of a rhythm analysis; the fields are the options of ``attncredit analyze`` (its
    ``--help`` says what each one means). ``fai_horizon`` / ``credit_fai_horizon``: ``(H_lo, H_hi)`` with
    ``H_hi = None`` meaning "to the end of the response"."""

    model: str
    dataset: str = "gsm8k"
    split: str = "test"
    template: str | None = None
    num_samples: int = 8
    out: str = "runs/rhythm"
    dtype: str = "float32"
    device: str | None = None
    seed: int = 0
    max_new_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 1.0
    batch_size: int = 8
    layers: str = "all"
    num_probe_layers: int = 5
    window: int = 10
    fai_horizon: tuple[int, int | None] = (1, None)
    credit_fai_horizon: tuple[int, int | None] = (10, 100)
    head_quantile: float = 0.3
    head_grouping: str = "sequence"
    backend: str = "auto"
    strategy: str = "coupled"
    top_quantile: float = 0.4
    gamma_amp: float = 1.5
    peak: str = "top_quantile"
    peak_quantile: float = 0.2
    peak_z: float = 0.0
    receiver_heads: int | None = None
    shuffles: int = 100
    heatmap_rows: int = 96
    heatmap_start: int = 0
    heatmap_context: int = 32
    perturbation: int = 0
    perturbation_alternatives: int = 3
    perturbation_tokens: int = 48

    def validate(self) -> None:
        """Raise a one-line ``ConfigError`` naming the first bad setting (option names as on the command line)."""
        for name in ("num_samples", "max_new_tokens", "batch_size", "window", "heatmap_rows", "num_probe_layers",
                     "perturbation_tokens", "perturbation_alternatives"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        for name in ("shuffles", "perturbation", "heatmap_start", "heatmap_context"):
            if getattr(self, name) < 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        if not self.temperature > 0:
            raise ConfigError(f"--temperature must be > 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"--top-p must be in (0, 1], got {self.top_p}")
        if not 0 < self.top_quantile <= 1:
            raise ConfigError(f"--top-quantile must be in (0, 1], got {self.top_quantile}")
        if self.receiver_heads is not None and self.receiver_heads < 1:
            raise ConfigError(f"--receiver-heads must be >= 1, got {self.receiver_heads}")
        for name in ("fai_horizon", "credit_fai_horizon"):
            lo, hi = getattr(self, name)
            if lo < 0 or (hi is not None and hi < lo):
                raise ConfigError(f"a FAI horizon needs 0 <= LO <= HI, got {name} = ({lo}, {hi})")
        from ..credit import list_strategies

        if self.strategy not in list_strategies():
            raise ConfigError(
                f"unknown credit strategy {self.strategy!r}; allowed: {', '.join(list_strategies())}"
            )


def analysis_layers(spec: str, num_layers: int, probes: list[int]) -> list[int]:
    """The layers whose heads are ranked into groups: ``all``, ``probe`` (the probe layers) or a comma list."""
    from ..attention import probe_layers

    if spec == "all":
        return list(range(num_layers))
    if spec == "probe":
        return list(probes)
    try:
        explicit = [int(x) for x in spec.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"--layers must be 'all', 'probe' or a comma list of layer ids, got {spec!r}") from None
    return probe_layers(num_layers, explicit=explicit)


def layer_segments(num_layers: int) -> dict[str, list[int]]:
    """Bottom / middle / top third of the layers (Table 10 of the paper), middle = [floor(L/3), floor(2L/3))."""
    lo, hi = num_layers // 3, (2 * num_layers) // 3
    parts = {"bottom": list(range(0, lo)), "middle": list(range(lo, hi)), "top": list(range(hi, num_layers))}
    return {k: v for k, v in parts.items() if v}


def _horizon_text(horizon: tuple[int, int | None]) -> list:
    return [horizon[0], "end" if horizon[1] is None else horizon[1]]


def run_rhythm_analysis(config: RhythmConfig) -> dict:
    """Run the analysis of ``config`` (see the module docstring) and return the summary written to
    ``summary.json``."""
    from tqdm.auto import tqdm

    from ..attention import enable_recording, model_probe_layers
    from ..credit import list_strategies
    from ..data import load_dataset_by_name
    from ..evaluation.generate import SamplingSettings, make_generator
    from .peaks import PeakRule
    from .responses import sample_responses

    config.validate()
    rule = PeakRule(config.peak, config.peak_quantile, config.peak_z)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    out = Path(config.out)

    rows = load_dataset_by_name(config.dataset, config.split, template=config.template, limit=config.num_samples)
    if len(rows) == 0:
        raise ConfigError(f"dataset {config.dataset!r} split {config.split!r} has no rows")
    generator = make_generator(
        config.model, backend="hf", dtype=config.dtype, device=config.device, batch_size=config.batch_size
    )
    model = enable_recording(generator.model)
    num_layers = model.config.get_text_config().num_hidden_layers
    probes = model_probe_layers(model, config.num_probe_layers)  # the middle third of the attention stack
    layers = analysis_layers(config.layers, num_layers, probes)
    segments = layer_segments(num_layers) if config.layers == "all" and num_layers >= 3 else {}
    out.mkdir(parents=True, exist_ok=True)
    timings["load"] = time.perf_counter() - start

    t = time.perf_counter()
    sampling = SamplingSettings(n=1, temperature=config.temperature, top_p=config.top_p,
                                max_new_tokens=config.max_new_tokens, seed=config.seed)
    with tqdm(total=len(rows), desc="generate", unit="response", dynamic_ncols=True) as bar:
        responses = sample_responses(generator, [row["prompt"] for row in rows], sampling, progress=bar)
    timings["generate"] = time.perf_counter() - t

    run = _RhythmRun(config, generator, rows, responses, layers, probes, segments, rule, out, list_strategies())
    timings.update(forward=0.0, plots=0.0, perturbation=0.0)
    with tqdm(total=len(rows), desc="rhythm", unit="sample", dynamic_ncols=True) as bar:
        for b0 in range(0, len(rows), config.batch_size):
            run.analyze_batch(range(b0, min(b0 + config.batch_size, len(rows))), timings, bar)
    t = time.perf_counter()
    heads = run.heads_summary()
    timings["plots"] += time.perf_counter() - t
    timings["total"] = time.perf_counter() - start
    summary = run.summary(num_layers, heads, timings)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / "summary.md").write_text(summary_markdown(summary), encoding="utf-8")
    from .html import write_token_page

    write_token_page(
        out / "index.html", run.page_samples, title=f"Preplan-and-anchor rhythm: {config.model} on {config.dataset}",
        default_mode=f"gamma:{config.strategy}", gamma_amp=config.gamma_amp, intro_html=summary_intro_html(summary),
    )
    return summary


class _RhythmRun:
    """The state of one :func:`run_rhythm_analysis` across batches: pooled counts, per-sample records, page."""

    def __init__(self, config, generator, rows, responses, layers, probes, segments, rule, out, strategies):
        self.config, self.generator, self.rows, self.responses = config, generator, rows, responses
        self.layers, self.probes, self.segments, self.rule, self.out = layers, probes, segments, rule, out
        self.strategies = strategies
        self.rng = np.random.default_rng(config.seed)
        self.credit_generator = torch.Generator().manual_seed(config.seed)
        self.samples, self.page_samples, self.perturbations = [], [], []
        self.total = cp.ResponseCoupling()
        self.seg_totals = {name: cp.ResponseCoupling() for name in segments}
        self.head_distances, self.receiver_masks = [], []

    def analyze_batch(self, indices, timings: dict, bar) -> None:
        """One recorded forward over the responses ``indices``, then each response's plots and record."""
        from .forward import BandWindow, rhythm_forward
        from .responses import pack_batch
        from .rhythm import analyze_batch

        c, res = self.config, self.responses
        input_ids, attention, response = pack_batch(
            [res.prompt_ids[i] for i in indices], [res.response_ids[i] for i in indices], res.pad_id
        )
        width = max(len(res.prompt_ids[i]) for i in indices)
        windows = []
        for j in range(len(indices)):
            n = int(response[j].sum())
            first_real = int(attention[j].nonzero()[0])
            r0 = width + min(c.heatmap_start, max(n - 1, 0))
            r1 = min(r0 + c.heatmap_rows, width + n)
            windows.append(BandWindow(r0, r1, max(first_real, r0 - c.heatmap_context)) if n else None)
        t = time.perf_counter()
        bar.set_postfix_str("recorded forward")
        device = self.generator.device
        fwd = rhythm_forward(
            self.generator.model, input_ids.to(device), attention.to(device), response.to(device),
            sorted(set(self.layers) | set(self.probes)), window=c.window, fai_horizon=c.fai_horizon,
            backend=c.backend, credit_layers=self.probes, credit_fai_horizon=c.credit_fai_horizon,
            band_windows=windows, band_layers=self.layers, num_candidates=c.perturbation_alternatives + 1,
        )
        rhythms = analyze_batch(
            fwd, input_ids, response, layers=self.layers, credit_layers=self.probes, fai_lo=c.fai_horizon[0],
            rule=self.rule, rng=self.rng, head_quantile=c.head_quantile, head_grouping=c.head_grouping,
            receivers=c.receiver_heads, top_quantile=c.top_quantile, strategies=self.strategies,
            credit_kwargs={"gamma_amp": c.gamma_amp}, credit_generator=self.credit_generator,
            shuffles=c.shuffles, segments=self.segments,
        )
        timings["forward"] += time.perf_counter() - t
        for j, (index, r) in enumerate(zip(indices, rhythms)):
            key = f"sample_{index:03d}"
            bar.set_postfix_str(f"{key}: plots")
            if r is None:  # empty response
                self.samples.append({"index": index, "key": key, "num_tokens": 0, "skipped": "empty response"})
                bar.update(1)
                continue
            self._analyze_sample(index, key, r, windows[j], width, timings, bar)
            bar.update(1)

    def _analyze_sample(self, index, key, r, window, width, timings, bar) -> None:
        from .html import TokenViewSample
        from .plots import plot_band, plot_traces

        c, tokenizer, out = self.config, self.generator.tokenizer, self.out
        row = self.rows[index]
        t = time.perf_counter()
        r.tokens = [tokenizer.decode([tok]) for tok in r.token_ids]
        r.prompt_length = len(self.responses.prompt_ids[index])
        self.total = self.total + r.coupling
        for name, counts in r.segments.items():
            self.seg_totals[name] = self.seg_totals[name] + counts
        self.head_distances.append(torch.from_numpy(r.head_distance))
        self.receiver_masks.append(r.receiver_mask)
        horizon = _horizon_text(c.fai_horizon)
        traces = plot_traces(
            out / f"{key}_traces.png", r.tokens, r.waad, r.fai, entropy=r.entropy,
            gamma=r.gammas.get(c.strategy), preplan=r.preplan, anchors=r.anchors,
            receiver_fai=r.receiver_fai, fai_eligible=r.fai_eligible, window=c.window,
            gamma_label=f"γ ({c.strategy})",
            title=f"{key}: {r.length} response tokens of {Path(str(c.model)).name} on {c.dataset} — "
                  f"WAAD (W={c.window}) and FAI (band [{horizon[0]}, {horizon[1]}]) of the {len(self.layers)}-layer "
                  f"head groups; top-{c.top_quantile:g} selections marked",
        )
        images = [traces.name]
        if r.band_local is not None:
            ro = int(window.row_start) - width
            co = int(window.col_start) - width
            band = plot_band(
                out / f"{key}_attention.png", r.band_local, r.band_global, row_offset=ro, col_offset=co,
                preplan=r.preplan, anchors=r.anchors, window=c.window,
                title=f"{key}: group-averaged attention probabilities (Eq. 8), response rows {ro}-"
                      f"{ro + r.band_local.shape[0] - 1}, keys from {co}, head groups of {len(self.layers)} layers\n"
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
            "truncated": self.responses.truncated[index],
            "images": images,
            "selected": {"preplan": int(r.preplan.sum()), "anchors": int(r.anchors.sum())},
            "peaks": {k: int(v.sum()) for k, v in r.peaks.items()},
            "receiver_heads_in_global_group": r.receiver_in_global,
            "table2": cp.table2(r.coupling),
            "counts": r.coupling.as_dict(),
        }
        if c.perturbation:
            bar.set_postfix_str(f"{key}: perturbation")
            t = time.perf_counter()
            res = pt.perturb_response(
                self.generator, self.responses.prompt_ids[index], r.token_ids, r.fai, r.fai_eligible, r.candidates,
                k=c.perturbation, alternatives=c.perturbation_alternatives,
                max_tokens=c.perturbation_tokens, min_following=c.perturbation_tokens,
                batch_size=max(c.batch_size, 2 * c.perturbation * c.perturbation_alternatives),
            )
            self.perturbations.append(res)
            record["perturbation"] = {
                "top_jaccard": res.top_mean, "bottom_jaccard": res.bottom_mean,
                "positions": {g: [{"position": p.position, "fai": p.fai, "original": p.original_token,
                                   "alternatives": p.alternatives, "jaccard": p.jaccards}
                                  for p in getattr(res, g)] for g in ("top", "bottom")},
            }
            timings["perturbation"] += time.perf_counter() - t
        self.samples.append(record)
        details = [("question", record["question"]), ("reference answer", record["answer"]),
                   ("response", f"{r.length} tokens" + (" (hit --max-new-tokens)" if record["truncated"] else ""))]
        self.page_samples.append(TokenViewSample(
            key=key,
            heading=f"{key} ({r.length} tokens)",
            tokens=r.tokens,
            values={"waad": r.waad.tolist(), "delta": r.delta.tolist(),
                    "fai": np.where(r.fai_eligible, r.fai, np.nan).tolist(),
                    "receiver_fai": np.where(r.fai_eligible, r.receiver_fai, np.nan).tolist(),
                    "entropy": r.entropy.tolist()},
            gammas={name: g.tolist() for name, g in r.gammas.items()},
            marks={"preplan": r.preplan.tolist(), "anchor": r.anchors.tolist()},
            details=details,
            images=images,
        ))

    def heads_summary(self) -> dict:
        """Head distance of every analysed head averaged over the responses, the groups of that mean, the share
        of responses in which each head is a receiver head; plotted to ``heads.png``."""
        from ..attention import select_head_groups
        from .plots import plot_heads

        if not self.head_distances:
            return {}
        c = self.config
        d = torch.stack(self.head_distances)  # [S, L, Hq]
        local, glob = select_head_groups(d, c.head_quantile, per="batch")
        share = np.mean(np.stack(self.receiver_masks), axis=0)
        plot_heads(self.out / "heads.png", d.mean(0).numpy(), local[0].numpy(), glob[0].numpy(), self.layers,
                   probe_layers=self.probes, receiver_share=share,
                   title=f"{Path(str(c.model)).name}: head distance d over {len(self.head_distances)} responses "
                         f"(mean per head); groups of the mean d, {c.head_quantile:g} of the heads each")
        return {
            "layers": self.layers,
            "probe_layers": self.probes,
            "mean_head_distance": d.mean(0).tolist(),
            "local": [[self.layers[li], h] for li, h in local[0].nonzero().tolist()],
            "global": [[self.layers[li], h] for li, h in glob[0].nonzero().tolist()],
            "receiver_share": share.tolist(),
        }

    def summary(self, num_layers: int, heads: dict, timings: dict) -> dict:
        """The ``summary.json`` content (JSON-safe)."""
        c, samples = self.config, self.samples
        summary = {
            "config": {
                **asdict(c),
                "fai_horizon": _horizon_text(c.fai_horizon),
                "credit_fai_horizon": _horizon_text(c.credit_fai_horizon),
                "analysis_layers": self.layers,
                "probe_layers": self.probes,
                "num_layers": num_layers,
                "num_query_heads": int(self.head_distances[0].shape[1]) if self.head_distances else None,
                "peak_rule": self.rule.describe(),
                "device": str(self.generator.device),
            },
            "num_responses": sum(1 for s in samples if s.get("num_tokens")),
            "num_response_tokens": int(sum(s.get("num_tokens", 0) for s in samples)),
            "truncated_responses": sum(1 for s in samples if s.get("truncated")),
            "table2": cp.table2(self.total),
            "receiver_heads_in_global_group": float(np.mean([s["receiver_heads_in_global_group"] for s in samples
                                                             if s.get("num_tokens")])) if self.head_distances else None,
            "paper_table2": {k: dict(zip(("random", "observed", "lift"), v)) for k, v in cp.PAPER_TABLE2.items()},
            "segments": {name: cp.table2(counts) for name, counts in self.seg_totals.items()},
            "heads": heads,
            "runtime_s": timings,
            "samples": samples,
        }
        if c.perturbation:
            summary["perturbation"] = {**pt.summarize(self.perturbations), "k": c.perturbation,
                                       "alternatives": c.perturbation_alternatives,
                                       "continuation_tokens": c.perturbation_tokens, "paper": pt.PAPER_TABLE1}
        return clean_json(summary)
