"""Text of a rhythm analysis: ``summary.md``, the HTML page's introduction, JSON cleaning and number formats.

Everything here reads the ``summary`` dict that :func:`attncredit.analysis.rhythm_analysis.run_rhythm_analysis`
returns (and writes to ``summary.json``); the definitions it states are those of "Analysis definitions" in
``docs/method.md``.
"""

from __future__ import annotations

import html
import math
from pathlib import Path

import numpy as np

from .coupling import TABLE2_TITLES

#: The three rows of Table 2 of the paper, in its order.
STAT_KEYS = ("waad_peak_entropy", "receiver_global_fai_cooccurrence", "fai_follows_waad")


def fmt(v, pct: bool = False) -> str:
    """A statistic as text: 4 decimals, or a percentage with 2; ``n/a`` for a missing or non-finite value."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return f"{100 * v:.2f}%" if pct else f"{v:.4f}"


def fmt_lift(v) -> str:
    """A lift as a signed percentage; ``n/a`` when missing."""
    return "n/a" if v is None else f"{100 * v:+.2f}%"


def clean_json(obj):
    """JSON-safe: NaN/inf -> None, numpy scalars -> Python."""
    if isinstance(obj, dict):
        return {str(k): clean_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean_json(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return float(obj) if math.isfinite(float(obj)) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def table2_rows(t2: dict, paper: dict | None) -> list[list[str]]:
    """Cells of the Table 2 rows (title, random, observed, lift, and the paper's three when ``paper`` is given)."""
    rows = []
    for key in STAT_KEYS:
        m = t2[key]
        pct = key != "waad_peak_entropy"
        cells = [TABLE2_TITLES[key], fmt(m["random"], pct), fmt(m["observed"], pct), fmt_lift(m["lift"])]
        if paper is not None:
            pm = paper[key]
            cells += [fmt(pm["random"], pct), fmt(pm["observed"], pct), fmt_lift(pm["lift"])]
        rows.append(cells)
    return rows


def summary_markdown(summary: dict) -> str:
    """``summary.md``: Table 2 (with the paper's), per-segment Table 2, Table 1 if run, definitions, samples."""
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
    lines += ["| " + " | ".join(r) + " |" for r in table2_rows(summary["table2"], summary["paper_table2"])]
    nxt = summary["table2"]["waad_peak_next_token_entropy"]
    lines += [
        "",
        "Paper: Qwen3-4B-Base, 70 GSM8K problems. Variant of (i) with the entropy of the distribution the peak "
        f"token's own row predicts: random {fmt(nxt['random'])}, observed {fmt(nxt['observed'])}, lift "
        f"{fmt_lift(nxt['lift'])}.",
    ]
    if summary.get("segments"):
        lines += ["", "## By layer segment (Table 10 of the paper: groups ranked within each third of the layers)",
                  "", "| Segment | Metric | Random | Observed | Lift |", "|---|---|---|---|---|"]
        for name, t2 in summary["segments"].items():
            for r in table2_rows(t2, None):
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
            f"| measured | {fmt(p['top_jaccard'])} | {fmt(p['bottom_jaccard'])} | "
            f"{fmt(p['pr_top_lt_bottom'], True)} |",
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
        f"{fmt(summary['receiver_heads_in_global_group'], True)} of the receiver heads are also global-group heads.",
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


def summary_intro_html(summary: dict) -> str:
    """The introduction of ``index.html``: the run in one line, Table 2 (with the paper's) and the heads plot."""
    head = "<tr><th>Metric</th><th>Random</th><th>Observed</th><th>Lift</th><th>Paper random</th>" \
           "<th>Paper observed</th><th>Paper lift</th></tr>"
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>"
                   for r in table2_rows(summary["table2"], summary["paper_table2"]))
    c = summary["config"]
    text = (f"{summary['num_responses']} responses, {summary['num_response_tokens']} tokens; layers "
            f"{html.escape(str(c['layers']))}, W={c['window']}, "
            f"FAI band [{c['fai_horizon'][0]}, {c['fai_horizon'][1]}], "
            f"peak rule: {html.escape(c['peak_rule'])}. Details in summary.md / summary.json.")
    heads = '<p><a href="heads.png"><img src="heads.png" alt="head distances"></a></p>' if summary["heads"] else ""
    return f"<p>{text}</p><table>{head}{body}</table>{heads}"
