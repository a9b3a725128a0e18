"""A self-contained HTML token view: each response's tokens coloured by WAAD, FAI, entropy or gamma.

One page holds any number of responses. The colour mode is chosen with a ``<select>`` (every strategy's gamma
is precomputed); hovering a token shows its numbers (the ``title`` attribute, so it works without JavaScript);
preplan / anchor tokens can be outlined. Inline CSS and a few lines of inline JavaScript, no external file;
images are linked by relative path or embedded as ``data:`` URIs (``embed_images=True``).
"""

from __future__ import annotations

import base64
import html
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

#: colour mode -> (RGB, description)
MODE_COLORS = {
    "waad": ((27, 158, 119), "WAAD of the local-focused heads (Eq. 9)"),
    "fai": ((231, 41, 138), "FAI of the global-focused heads (Eq. 10)"),
    "receiver_fai": ((102, 102, 102), "FAI of the receiver heads"),
    "entropy": ((230, 171, 2), "entropy of the sampling distribution"),
    "gamma": ((152, 78, 163), "gamma (advantage weight)"),
}
VALUE_LABELS = {"waad": "WAAD", "delta": "|ΔWAAD|", "fai": "FAI", "receiver_fai": "recv FAI", "entropy": "H"}


@dataclass
class TokenViewSample:
    """One response for :func:`render_token_page`. ``values`` maps a statistic name (``waad``, ``delta``,
    ``fai``, ``receiver_fai``, ``entropy``) to n numbers (NaN = undefined); ``gammas`` maps strategy -> n
    numbers; ``marks`` maps ``preplan`` / ``anchor`` to n bools."""

    key: str
    heading: str
    tokens: list[str]
    values: dict[str, list[float]]
    gammas: dict[str, list[float]] = field(default_factory=dict)
    marks: dict[str, list[bool]] = field(default_factory=dict)
    details: list[tuple[str, str]] = field(default_factory=list)  # (label, text) shown above the tokens
    images: list[str] = field(default_factory=list)  # paths relative to the page (or absolute with embed_images)


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    v = float(v)
    if v == 0:
        return "0"
    return f"{v:.3g}" if abs(v) < 1e-2 or abs(v) >= 1e3 else f"{v:.3f}"


def _finite_list(values) -> list[float | None]:
    return [float(v) if v is not None and math.isfinite(float(v)) else None for v in values]


def _modes(samples: list[TokenViewSample]) -> list[str]:
    modes = [m for m in ("waad", "fai", "receiver_fai", "entropy") if any(m in s.values for s in samples)]
    strategies = []
    for s in samples:
        for name in s.gammas:
            if name not in strategies:
                strategies.append(name)
    return modes + [f"gamma:{name}" for name in strategies]


def _scale(values: list[float | None], mode: str, gamma_amp: float) -> list[float]:
    """Values mapped to [0, 1] for colouring: gamma by (g - 1) / (gamma_amp - 1), the rest by min-max."""
    if mode.startswith("gamma:"):
        span = max(gamma_amp - 1.0, 1e-9)
        return [0.0 if v is None else min(max((v - 1.0) / span, 0.0), 1.0) for v in values]
    finite = [v for v in values if v is not None]
    if not finite:
        return [0.0] * len(values)
    lo, hi = min(finite), max(finite)
    span = hi - lo if hi > lo else 1.0
    return [0.0 if v is None else (v - lo) / span for v in values]


def _background(mode: str, level: float) -> str:
    rgb = MODE_COLORS["gamma" if mode.startswith("gamma:") else mode][0]
    return f"rgba({rgb[0]},{rgb[1]},{rgb[2]},{0.85 * level:.3f})"


def _token_text(token: str) -> tuple[str, bool]:
    """(escaped visible text, ends a line)."""
    newline = "\n" in token
    visible = token.replace("\r", "").replace("\n", "↵")
    return html.escape(visible) if visible else "∅", newline


def _image_src(src: str, base: Path | None, embed: bool) -> str:
    if not embed:
        return html.escape(src)
    path = Path(src) if base is None or Path(src).is_absolute() else base / src
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f"data:image/png;base64,{data}"


def _sample_html(s: TokenViewSample, mode: str, gamma_amp: float, base: Path | None, embed: bool) -> str:
    n = len(s.tokens)
    values = {k: _finite_list(v) for k, v in s.values.items()}
    gammas = {k: _finite_list(v) for k, v in s.gammas.items()}
    current = gammas[mode[6:]] if mode.startswith("gamma:") else values.get(mode, [None] * n)
    levels = _scale(current, mode, gamma_amp)
    parts = [f'<section class="sample" id="{html.escape(s.key)}">', f"<h2>{html.escape(s.heading)}</h2>"]
    if s.details:
        parts.append("<dl>")
        for label, text in s.details:
            parts.append(f"<dt>{html.escape(label)}</dt><dd>{html.escape(text)}</dd>")
        parts.append("</dl>")
    for src in s.images:
        parts.append(f'<a href="{html.escape(src)}"><img src="{_image_src(src, base, embed)}" '
                     f'alt="{html.escape(Path(src).name)}" loading="lazy"></a>')
    parts.append('<div class="tokens">')
    pre = s.marks.get("preplan", [False] * n)
    anc = s.marks.get("anchor", [False] * n)
    for j, tok in enumerate(s.tokens):
        text, newline = _token_text(tok)
        info = [f"#{j} {tok!r}"]
        for name in ("waad", "delta", "fai", "receiver_fai", "entropy"):
            if name in values:
                info.append(f"{VALUE_LABELS[name]} {_fmt(values[name][j])}")
        for name, g in gammas.items():
            info.append(f"γ[{name}] {_fmt(g[j])}")
        roles = [r for r, m in (("preplan", pre[j]), ("anchor", anc[j])) if m]
        if roles:
            info.append("selected: " + ", ".join(roles))
        classes = "t" + (" pp" if pre[j] else "") + (" an" if anc[j] else "")
        parts.append(f'<span class="{classes}" data-i="{j}" title="{html.escape(" | ".join(info))}" '
                     f'style="background:{_background(mode, levels[j])}">{text}</span>')
        if newline:
            parts.append("<br>")
    parts.append("</div></section>")
    return "\n".join(parts)


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:1.5em;max-width:1400px;color:#222}
.controls{position:sticky;top:0;background:#fff;padding:.5em 0;border-bottom:1px solid #ddd;z-index:2}
.sample{border-bottom:1px solid #ccc;padding:1em 0}
.tokens{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:13px;line-height:1.9;white-space:pre-wrap}
.t{border-radius:2px;padding:1px 0;cursor:default}
.t:hover{outline:1px solid #000}
body.show-pp .pp{border-bottom:3px solid #d95f02}
body.show-an .an{box-shadow:inset 0 0 0 1.5px #7570b3}
img{max-width:100%;border:1px solid #eee;margin:.3em 0}
dl{display:grid;grid-template-columns:max-content auto;gap:.2em 1em;font-size:13px}
dt{font-weight:600} dd{margin:0;white-space:pre-wrap}
table{border-collapse:collapse;font-size:13px} td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th:first-child,td:first-child{text-align:left}
.legend{font-size:12px;color:#555}
"""

_JS = """
(function(){
  var data = JSON.parse(document.getElementById('token-data').textContent);
  var colors = data.colors, amp = data.gamma_amp;
  function scale(vals, mode){
    if (mode.indexOf('gamma:') === 0){
      var span = Math.max(amp - 1, 1e-9);
      return vals.map(function(v){ return v === null ? 0 : Math.min(Math.max((v - 1) / span, 0), 1); });
    }
    var f = vals.filter(function(v){ return v !== null; });
    if (!f.length) return vals.map(function(){ return 0; });
    var lo = Math.min.apply(null, f), hi = Math.max.apply(null, f), span = hi > lo ? hi - lo : 1;
    return vals.map(function(v){ return v === null ? 0 : (v - lo) / span; });
  }
  function paint(mode){
    var rgb = colors[mode.indexOf('gamma:') === 0 ? 'gamma' : mode];
    data.samples.forEach(function(s){
      var vals = mode.indexOf('gamma:') === 0 ? s.gammas[mode.slice(6)] : s.values[mode];
      var sec = document.getElementById(s.key);
      if (!sec) return;
      var spans = sec.querySelectorAll('span.t');
      if (!vals){ spans.forEach(function(el){ el.style.background = 'transparent'; }); return; }
      var lv = scale(vals, mode);
      spans.forEach(function(el){
        var a = 0.85 * lv[+el.dataset.i];
        el.style.background = 'rgba(' + rgb[0] + ',' + rgb[1] + ',' + rgb[2] + ',' + a.toFixed(3) + ')';
      });
    });
    document.getElementById('mode-legend').textContent = data.descriptions[mode] || '';
  }
  var sel = document.getElementById('mode');
  sel.addEventListener('change', function(){ paint(sel.value); });
  ['pp', 'an'].forEach(function(k){
    var box = document.getElementById('show-' + k);
    box.addEventListener('change', function(){ document.body.classList.toggle('show-' + k, box.checked); });
  });
})();
"""


def render_token_page(
    samples: list[TokenViewSample],
    *,
    title: str,
    default_mode: str | None = None,
    gamma_amp: float = 1.5,
    intro_html: str = "",
    base: str | Path | None = None,
    embed_images: bool = False,
) -> str:
    """The whole HTML page as a string.

    ``default_mode``: the initial colouring, e.g. ``"gamma:coupled"`` or ``"fai"`` (default: the first gamma, else
    WAAD). ``intro_html``: trusted HTML inserted after the title (e.g. a summary table). ``base``: folder that
    relative image paths are read from when ``embed_images`` is set.
    """
    modes = _modes(samples)
    if not modes:
        raise ValueError("nothing to show: the samples carry no values and no gamma")
    if default_mode is None or default_mode not in modes:
        default_mode = next((m for m in modes if m.startswith("gamma:")), modes[0])
    descriptions = {m: MODE_COLORS["gamma" if m.startswith("gamma:") else m][1] + (
        f" of strategy {m[6:]!r}: white = 1, full colour = {gamma_amp:g}" if m.startswith("gamma:")
        else ", min-max scaled per response") for m in modes}
    options = "".join(
        f'<option value="{html.escape(m)}"{" selected" if m == default_mode else ""}>{html.escape(m)}</option>'
        for m in modes
    )
    payload = {
        "colors": {k: v[0] for k, v in MODE_COLORS.items()},
        "descriptions": descriptions,
        "gamma_amp": gamma_amp,
        "samples": [
            {"key": s.key, "values": {k: _finite_list(v) for k, v in s.values.items()},
             "gammas": {k: _finite_list(v) for k, v in s.gammas.items()}}
            for s in samples
        ],
    }
    data = json.dumps(payload, separators=(",", ":")).replace("</", "<\\/")
    base = Path(base) if base is not None else None
    body = "\n".join(_sample_html(s, default_mode, gamma_amp, base, embed_images) for s in samples)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>{_CSS}</style></head>
<body class="show-pp show-an">
<h1>{html.escape(title)}</h1>
{intro_html}
<div class="controls">
<label>colour tokens by <select id="mode">{options}</select></label>
<label><input type="checkbox" id="show-pp" checked> underline preplan tokens (top-q |ΔWAAD|, Eq. 14)</label>
<label><input type="checkbox" id="show-an" checked> box anchor tokens (top-q FAI, Eq. 16)</label>
<div class="legend" id="mode-legend">{html.escape(descriptions[default_mode])}</div>
<div class="legend">Hover a token for its numbers.</div>
</div>
{body}
<script type="application/json" id="token-data">{data}</script>
<script>{_JS}</script>
</body></html>
"""


def write_token_page(path: str | Path, samples: list[TokenViewSample], **kwargs) -> Path:
    """:func:`render_token_page` written to ``path`` (UTF-8); returns the path."""
    path = Path(path)
    path.write_text(render_token_page(samples, **kwargs), encoding="utf-8")
    return path


def as_list(x) -> list:
    """A 1-D array-like (tensor, ndarray, list) as a Python list of floats / bools."""
    if x is None:
        return []
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x).tolist()
