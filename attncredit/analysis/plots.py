"""PNG plots of the rhythm (matplotlib's object API on the Agg canvas: no pyplot state, no display needed).

* :func:`plot_traces`: WAAD, FAI, entropy and gamma over the response tokens, with the selected preplan
  (TopQ Delta WAAD, Eq. 14) and anchor (TopQ FAI, Eq. 16) tokens marked and the strongest ones labelled.
* :func:`plot_band`: the group-averaged attention near the diagonal (the "sawtooth") of a window of response rows.
* :func:`plot_heads`: head distance d (Eq. 7) of every recorded (layer, head), local and global groups marked.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

PREPLAN_COLOR = "#d95f02"
ANCHOR_COLOR = "#7570b3"
WAAD_COLOR = "#1b9e77"
FAI_COLOR = "#e7298a"
DPI = 110


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as a PNG with a 256-colour adaptive palette (about 3x smaller than RGBA; plots only have a few
    colours plus antialiasing), falling back to matplotlib's own writer without Pillow."""
    path = Path(path)
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow ships with matplotlib
        fig.savefig(path)
        return path
    canvas = fig.canvas
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())
    Image.fromarray(rgba[..., :3]).quantize(colors=256, method=Image.Quantize.FASTOCTREE).save(path, optimize=True)
    return path


def _label(token: str, limit: int = 14) -> str:
    """A token as plot text: visible whitespace (↵, ⇥, ␣ when the token is only whitespace), no mathtext
    (``$``), at most ``limit`` characters."""
    text = token.replace("\r", "").replace("\n", "↵").replace("\t", "⇥").replace("$", r"\$")
    if not text.strip():
        text = text.replace(" ", "␣") or "∅"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _annotate(ax, x, y, idx, tokens, color):
    for j in idx:
        ax.annotate(
            _label(tokens[j]),
            (x[j], y[j]),
            xytext=(0, 6),
            textcoords="offset points",
            rotation=60,
            fontsize=7,
            color=color,
            ha="left",
            va="bottom",
        )


def _rug(ax, sel, color, height=0.07):
    """Short ticks at the bottom of ``ax`` at x positions ``sel`` (selected tokens)."""
    if len(sel):
        ax.vlines(sel, 0.0, height, transform=ax.get_xaxis_transform(), color=color, lw=1.2, alpha=0.9)


def plot_traces(
    path: str | Path,
    tokens: list[str],
    waad,
    fai,
    *,
    entropy=None,
    gamma=None,
    preplan=None,
    anchors=None,
    receiver_fai=None,
    fai_eligible=None,
    title: str = "",
    gamma_label: str = "gamma",
    window: int | None = None,
    fai_label: str = "FAI, global-focused heads (Eq. 10)",
    annotate: int = 6,
) -> Path:
    """WAAD / FAI (/ entropy / gamma) traces of one response; returns ``path``.

    ``preplan`` / ``anchors`` are bool masks of selected tokens, drawn as ticks along the bottom of the WAAD / FAI
    panels; the ``annotate`` largest-|Delta WAAD| preplans and largest-FAI anchors are dotted and labelled with
    their token. ``receiver_fai`` is drawn on its own (right) axis. ``fai_eligible`` (bool) hides FAI where no
    response row receives from a token. Any array may be None (its panel or layer is left out), but not all of
    ``waad``, ``fai`` and ``gamma``.
    """
    from matplotlib.lines import Line2D

    n = len(tokens)
    x = np.arange(n)
    given = {"waad": waad, "fai": fai, "entropy": entropy, "gamma": gamma}
    panels = [p for p in ("waad", "fai", "entropy", "gamma") if given[p] is not None]
    if not panels:
        raise ValueError("plot_traces needs at least one of waad, fai, entropy, gamma")
    ratios = {"waad": 3, "fai": 3, "entropy": 1.8, "gamma": 1.2}
    fig = _figure(12, 1.2 + 1.1 * sum(ratios[p] for p in panels))
    axes = np.atleast_1d(fig.subplots(len(panels), 1, sharex=True,
                                      gridspec_kw={"height_ratios": [ratios[p] for p in panels]}))
    ax_of = dict(zip(panels, axes))
    if waad is not None:
        ax = ax_of["waad"]
        w = np.asarray(waad, dtype=float)
        handles = ax.plot(x, w, color=WAAD_COLOR, lw=1.1, label="WAAD, local-focused heads (Eq. 9)")
        if preplan is not None and np.any(preplan):
            sel = np.flatnonzero(preplan)
            _rug(ax, sel, PREPLAN_COLOR)
            delta = np.zeros(n)
            delta[:-1] = np.abs(w[:-1] - w[1:])
            top = sel[np.argsort(-delta[sel], kind="stable")[:annotate]]
            ax.scatter(top, w[top], s=16, color=PREPLAN_COLOR, zorder=3)
            _annotate(ax, x, w, top, tokens, PREPLAN_COLOR)
            handles.append(Line2D([], [], color=PREPLAN_COLOR, marker="|", ls="", markersize=9,
                                  label=f"preplan: top-q |ΔWAAD| (Eq. 14), {sel.size} tokens; "
                                        f"{len(top)} largest labelled"))
        finite = w[np.isfinite(w)]
        if finite.size:
            lo, hi = float(finite.min()), float(finite.max())
            pad = max(hi - lo, 0.5)
            ax.set_ylim(lo - 0.25 * pad, hi + 0.45 * pad)
        ax.set_ylabel("WAAD\n(expected clipped\ndistance, tokens)" + (f"\nW = {window}" if window else ""), fontsize=9)
        ax.legend(handles=handles, loc="upper right", fontsize=8, framealpha=0.85)
        ax.grid(alpha=0.3)
    if fai is not None:
        ax = ax_of["fai"]
        ok = np.ones(n, dtype=bool) if fai_eligible is None else np.asarray(fai_eligible, dtype=bool)
        f = np.where(ok, np.asarray(fai, dtype=float), np.nan)
        handles = ax.plot(x, f, color=FAI_COLOR, lw=1.1, label=fai_label)
        if receiver_fai is not None:
            r = np.where(ok, np.asarray(receiver_fai, dtype=float), np.nan)
            twin = ax.twinx()
            handles += twin.plot(x, r, color="0.35", lw=0.8, ls="--", alpha=0.8,
                                 label="FAI, receiver heads (right axis)")
            twin.set_ylabel("receiver FAI", fontsize=9, color="0.35")
            twin.tick_params(axis="y", labelsize=8, colors="0.35")
            ax.set_zorder(twin.get_zorder() + 1)
            ax.patch.set_visible(False)
        if anchors is not None and np.any(anchors):
            sel = np.flatnonzero(anchors)
            _rug(ax, sel, ANCHOR_COLOR)
            top = sel[np.argsort(-np.nan_to_num(f[sel], nan=-np.inf), kind="stable")[:annotate]]
            ax.scatter(top, f[top], s=16, color=ANCHOR_COLOR, zorder=3)
            _annotate(ax, x, f, top, tokens, ANCHOR_COLOR)
            handles.append(Line2D([], [], color=ANCHOR_COLOR, marker="|", ls="", markersize=9,
                                  label=f"anchor: top-q FAI (Eq. 16), {sel.size} tokens; {len(top)} largest labelled"))
        finite = f[np.isfinite(f)]
        if finite.size and finite.max() > 0:
            ax.set_ylim(0, finite.max() * 1.45)
        ax.set_ylabel("FAI\n(mean attention\nreceived later)", fontsize=9)
        ax.legend(handles=handles, loc="upper left", fontsize=8, framealpha=0.85)
        ax.grid(alpha=0.3)
    if entropy is not None:
        ax = ax_of["entropy"]
        e = np.asarray(entropy, dtype=float)
        ax.bar(x, np.nan_to_num(e), width=1.0, color="0.55", label="entropy of the distribution that sampled the token")
        ax.set_ylabel("entropy\n(nats)", fontsize=9)
        ax.legend(loc="upper right", fontsize=8, framealpha=0.85)
        ax.grid(alpha=0.3)
    if gamma is not None:
        ax = ax_of["gamma"]
        g = np.asarray(gamma, dtype=float)
        ax.fill_between(x, 1.0, g, step="mid", color="#984ea3", alpha=0.55, lw=0)
        ax.set_ylabel(gamma_label, fontsize=9)
        ax.set_ylim(0.95, max(1.5, float(g.max()) if n else 1.5) + 0.05)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("response token index")
    axes[-1].set_xlim(-1, max(n, 1))
    if 0 < n <= 64:  # short responses: the tokens themselves under the x axis
        axes[-1].set_xticks(x)
        axes[-1].set_xticklabels([f"{j}: {_label(t, 10)}" for j, t in enumerate(tokens)], rotation=90, fontsize=7)
        axes[-1].set_xlabel("response token (index: text)")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def lag_view(band, row_offset: int, col_offset: int, max_lag: int) -> np.ndarray:
    """[max_lag + 1, R] view of a band [R, K]: entry (l, r) is the probability of row r at distance l
    (key ``row_offset + r - l``), NaN where that key is not in the band."""
    band = np.asarray(band, dtype=float)
    r_count, k = band.shape
    out = np.full((max_lag + 1, r_count), np.nan)
    for r in range(r_count):
        t = row_offset + r
        for lag in range(max_lag + 1):
            c = t - lag - col_offset
            if 0 <= c < k:
                out[lag, r] = band[r, c]
    return out


def plot_band(
    path: str | Path,
    local,
    glob,
    *,
    row_offset: int,
    col_offset: int,
    title: str = "",
    preplan=None,
    anchors=None,
    window: int | None = None,
    max_lag: int = 40,
) -> Path:
    """The group-averaged attention (Eq. 8) of a window of response rows, local and global heads side by side.

    ``local`` / ``glob``: [R, K] probabilities; row r is response token ``row_offset + r``, column k is key
    ``col_offset + k`` (response offsets; negative = prompt). Top row: the map itself (query x key, keys after
    the query blank). Bottom row: the same numbers by distance ``t - s`` from the diagonal (0..``max_lag``), where
    the WAAD sawtooth reads as columns that reach up past W (dashed line). Log colour scale 1e-3..1.
    ``preplan`` / ``anchors`` (bool over the response) are marked on the edges.
    """
    named = ((local, "local-focused heads (→ WAAD)"), (glob, "global-focused heads (→ FAI)"))
    maps = [(m, name) for m, name in named if m is not None]
    if not maps:
        raise ValueError("plot_band needs at least one of local, glob")
    fig = Figure(figsize=(6.0 * len(maps) + 1.0, 10.0), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = np.asarray(fig.subplots(2, len(maps), squeeze=False, gridspec_kw={"height_ratios": [3, 1.4]}))
    norm = LogNorm(vmin=1e-3, vmax=1.0)
    image = None
    for j, (m, name) in enumerate(maps):
        m = np.asarray(m, dtype=float)
        r, k = m.shape
        shown = m.copy()
        rows = row_offset + np.arange(r)[:, None]
        cols = col_offset + np.arange(k)[None, :]
        shown[cols > rows] = np.nan
        ax = axes[0, j]
        extent = (col_offset - 0.5, col_offset + k - 0.5, row_offset + r - 0.5, row_offset - 0.5)
        image = ax.imshow(np.clip(shown, 1e-3, 1.0), cmap="magma", norm=norm, extent=extent, aspect="auto",
                          interpolation="nearest")
        ax.set_facecolor("white")
        if preplan is not None:
            sel = [t for t in np.flatnonzero(preplan) if row_offset <= t < row_offset + r]
            ax.scatter([col_offset - 0.5] * len(sel), sel, marker=">", s=14, color=PREPLAN_COLOR, clip_on=False,
                       label="preplan rows (top-q |ΔWAAD|)")
        if anchors is not None:
            sel = [t for t in np.flatnonzero(anchors) if col_offset <= t < col_offset + k]
            ax.scatter(sel, [row_offset - 0.5] * len(sel), marker="v", s=14, color=ANCHOR_COLOR, clip_on=False,
                       label="anchor columns (top-q FAI)")
        ax.set_title(f"Ā, {name}", fontsize=10)
        ax.set_xlabel("key position s (response token index; < 0 = prompt)")
        ax.set_ylabel("query position t (response token index)")
        if preplan is not None or anchors is not None:
            ax.legend(loc="upper right", fontsize=8, framealpha=0.9)
        lag = min(max_lag, k - 1)
        view = lag_view(m, row_offset, col_offset, lag)
        ax = axes[1, j]
        ax.imshow(np.clip(view, 1e-3, 1.0), cmap="magma", norm=norm, origin="lower", aspect="auto",
                  interpolation="nearest", extent=(row_offset - 0.5, row_offset + r - 0.5, -0.5, lag + 0.5))
        ax.set_facecolor("white")
        if window:
            ax.axhline(window, color="white", ls="--", lw=0.8)
        ax.set_xlabel("query position t (response token index)")
        ax.set_ylabel("distance t − s (tokens)")
        ax.set_title("same map by distance from the diagonal" + (f" (dashed: W = {window})" if window else ""),
                     fontsize=9)
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.6, label="attention probability (log scale)")
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def plot_heads(
    path: str | Path,
    head_distance,
    local_mask,
    global_mask,
    layers: list[int],
    *,
    probe_layers: list[int] | None = None,
    receiver_share=None,
    title: str = "",
) -> Path:
    """Head distance d [n_layers, Hq] of every recorded head as a layer x head map (log colour), with "L" / "G"
    on the local / global group and, if ``receiver_share`` [n_layers, Hq] is given, "r" on heads that were receiver
    heads in at least half of the responses; a second panel plots d per layer. Probe layers are starred."""
    d = np.asarray(head_distance, dtype=float)
    lm = np.asarray(local_mask, dtype=bool)
    gm = np.asarray(global_mask, dtype=bool)
    n_layers, hq = d.shape
    fig = _figure(13, max(4.0, 0.22 * n_layers + 1.8))
    ax, ax2 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [max(hq, 4) / 4 + 1, 3]})
    positive = d[d > 0]
    vmin = max(float(positive.min()) if positive.size else 1e-2, 1e-2)
    image = ax.imshow(np.clip(d, vmin, None), cmap="viridis", norm=LogNorm(vmin=vmin, vmax=max(vmin * 10, d.max())),
                      aspect="auto", interpolation="nearest")
    for li in range(n_layers):
        for h in range(hq):
            mark = "L" if lm[li, h] else "G" if gm[li, h] else ""
            if receiver_share is not None and receiver_share[li, h] >= 0.5:
                mark += "r"
            if mark:
                ax.text(h, li, mark, ha="center", va="center", fontsize=7,
                        color="white" if mark.startswith("L") else "black", fontweight="bold")
    probes = set(probe_layers or [])
    ax.set_yticks(range(n_layers))
    ax.set_yticklabels([f"{layer}*" if layer in probes else str(layer) for layer in layers], fontsize=7)
    ax.set_xticks(range(hq))
    ax.set_xticklabels([str(h) for h in range(hq)], fontsize=7)
    ax.set_xlabel("query head")
    ax.set_ylabel("layer (* = probe layer)")
    ax.set_title("head distance d (Eq. 7); L = local group, G = global group" +
                 (", r = receiver head" if receiver_share is not None else ""), fontsize=9)
    fig.colorbar(image, ax=ax, label="d (tokens, log scale)")
    ys = np.repeat(np.asarray(layers)[:, None], hq, axis=1)
    other = ~(lm | gm)
    ax2.scatter(d[other], ys[other], s=10, color="0.6", label="other heads")
    ax2.scatter(d[lm], ys[lm], s=14, color=WAAD_COLOR, label="local group (bottom d)")
    ax2.scatter(d[gm], ys[gm], s=14, color=FAI_COLOR, label="global group (top d)")
    ax2.set_xscale("log")
    ax2.invert_yaxis()
    ax2.set_xlabel("head distance d (tokens, log scale)")
    ax2.set_ylabel("layer")
    ax2.legend(fontsize=8, loc="best", framealpha=0.9)
    ax2.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)
