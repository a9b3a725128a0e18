"""See and measure the preplan-and-anchor rhythm of a model (Tables 1-2 of the paper; definitions in
"Analysis definitions" of docs/method.md).

    attncredit analyze                                  # SmolLM2-135M, 8 GSM8K test problems
    attncredit analyze --model Qwen/Qwen3-4B-Base --num-samples 70 --out runs/rhythm-qwen3
    attncredit analyze --perturbation 2                 # + the Table 1 perturbation test

Samples a response per prompt (the evaluation generator's HF backend, prompts and end tokens as in training,
temperature 0.7 as in the paper's analysis), runs ONE recorded forward per batch over prompt + response (per-head
statistics from the attention-statistics engine, entropy from the same forward's hidden states; no N x N map except
a small window for the heatmap), and writes to ``--out``:

* ``sample_XXX_traces.png``: WAAD (local heads), FAI (global and receiver heads), entropy and gamma over the
  response, preplan (top-q |Delta WAAD|, Eq. 14) and anchor (top-q FAI, Eq. 16) tokens marked;
* ``sample_XXX_attention.png``: the local- and global-group attention of a window of response rows (the sawtooth);
* ``heads.png``: head distance d of every recorded (layer, head), local / global groups marked;
* ``index.html``: every response's tokens coloured by WAAD / FAI / entropy / gamma of each strategy (select);
* ``summary.json`` / ``summary.md``: the Table 2 statistics with random baselines and lifts (+ Table 1 if run).

Defaults and their reasons are in the ``--help`` of each option and in ``docs/analysis.md``. This script only parses
the options; the analysis is ``attncredit.analysis.rhythm_analysis.run_rhythm_analysis``.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import fields

# OpenMP worker threads that spin while waiting make CPU decoding 10-100x slower when other processes share the
# cores (measured here: 16 tokens of SmolLM2 took 0.2 s or, at random, 20-30 s); sleeping workers cost nothing.
# OpenMP reads it when torch loads. `attncredit analyze` loads nothing that imports torch before this module
# (tests/test_cli.py checks it), so this reaches torch; so does scripts/analyze_rhythm.py, which sets it first.
# From the Python API (torch already loaded) it reaches child processes only.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from attncredit.errors import ConfigError  # noqa: E402


def _horizon(values: list[str]) -> tuple[int, int | None]:
    """``LO HI`` of a FAI horizon option as integers, ``HI = 'end'`` as None (the range is checked by the config)."""
    if len(values) != 2:
        raise ConfigError(f"a FAI horizon is two values LO HI (HI may be 'end'), got {' '.join(values)!r}")
    lo, hi = values
    try:
        return int(lo), None if hi.lower() == "end" else int(hi)
    except ValueError:
        raise ConfigError(f"a FAI horizon is two integers LO HI (HI may be 'end'), got {' '.join(values)!r}") from None


def build_parser() -> argparse.ArgumentParser:
    from attncredit.analysis.peaks import PEAK_HELP, PEAK_METHODS
    from attncredit.models import DEFAULT_MODEL

    p = argparse.ArgumentParser(
        prog="attncredit analyze",
        description="Generate responses and measure / plot the preplan-and-anchor rhythm (Tables 1-2 of the paper; "
                    "definitions in docs/method.md, options in docs/analysis.md).",
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
                   help="probe layers of the training-time gamma (5 evenly spaced in the middle third; "
                        "docs/method.md, 'Probe layers')")
    g.add_argument("--window", type=int, default=10, help="WAAD clipping window W (Eq. 9)")
    g.add_argument("--fai-horizon", nargs=2, default=["1", "end"], metavar=("LO", "HI"),
                   help="FAI receiver band of the analysis (Eq. 10). The paper's analysis takes each token's "
                        "influence 'from the token to the end of the response' (App. A.1); we start at LO=1 so a "
                        "token's attention to itself (the diagonal) does not count as future influence. HI='end'")
    g.add_argument("--credit-fai-horizon", nargs=2, default=["10", "100"], metavar=("LO", "HI"),
                   help="FAI band of the gamma colouring, as in training (credit_fai_horizon)")
    g.add_argument("--head-quantile", type=float, default=0.3, help="share of heads per group (Eq. 7-8)")
    g.add_argument("--head-grouping", default="sequence", choices=("sequence", "batch"),
                   help="rank heads per response or per batch (docs/method.md, 'Readings of the paper's "
                        "ambiguities')")
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


def _config(args):
    """The ``RhythmConfig`` of the parsed options (the FAI horizons parsed to integers)."""
    from attncredit.analysis.rhythm_analysis import RhythmConfig

    values = {f.name: getattr(args, f.name) for f in fields(RhythmConfig)}
    values.update(fai_horizon=_horizon(args.fai_horizon), credit_fai_horizon=_horizon(args.credit_fai_horizon))
    return RhythmConfig(**values)


def main(argv: list[str] | None = None) -> int:
    from attncredit.analysis.report import STAT_KEYS, fmt, fmt_lift
    from attncredit.analysis.rhythm_analysis import run_rhythm_analysis

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        summary = run_rhythm_analysis(_config(args))
    except (ConfigError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    t2 = summary["table2"]
    pngs = sum(len(s.get("images", [])) for s in summary["samples"]) + 1
    seconds = summary["runtime_s"]["total"]
    print(f"wrote {args.out}/index.html, summary.json, summary.md and {pngs} PNGs in {seconds:.1f} s")
    for key in STAT_KEYS:
        m = t2[key]
        print(f"  {key}: random {fmt(m['random'])}, observed {fmt(m['observed'])}, lift {fmt_lift(m['lift'])}")
    if "perturbation" in summary:
        p = summary["perturbation"]
        print(f"  perturbation: top {fmt(p['top_jaccard'])}, bottom {fmt(p['bottom_jaccard'])}, "
              f"Pr(top<bottom) {fmt(p['pr_top_lt_bottom'], True)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
