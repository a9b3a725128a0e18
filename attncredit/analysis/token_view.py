"""Token views during training: one sample's WAAD / FAI / gamma as HTML + PNG, logged to the active trackers.

``log_token_view(output_dir, step, tokens, waad, fai, gamma)`` writes
``<output_dir>/token_views/step_XXXXX.html`` (self-contained: the PNG is embedded) and ``step_XXXXX.png``, then
logs them to every tracker that is active in this process:

* **wandb** (a run is active: ``wandb.run``): ``attncredit/token_view`` as ``wandb.Html`` and
  ``attncredit/token_view_plot`` as ``wandb.Image``, with ``train/global_step`` as TRL/transformers log it;
* **trackio** (a run is active): ``attncredit/token_view_plot`` as ``trackio.Image``;
* **tensorboard** (a ``SummaryWriter`` is passed, e.g. transformers' ``TensorBoardCallback.tb_writer``): the
  PNG as an image and the token/gamma table as text.

A tracker that is not installed, not initialised, or fails is skipped (the failure is logged as a warning); the
files are always written. :func:`trainer_token_view` does the same from inside a ``transformers.Trainer``.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np

from .html import TokenViewSample, as_list, write_token_page
from .rhythm import chunk_delta

logger = logging.getLogger(__name__)

TRACKERS = ("wandb", "trackio", "tensorboard")


def _array(x, n: int | None = None):
    if x is None:
        return None
    a = np.asarray(as_list(x), dtype=np.float64).reshape(-1)
    if n is not None and a.shape[0] != n:
        raise ValueError(f"expected {n} values (one per token), got {a.shape[0]}")
    return a


def _selected(score, q: float):
    from .peaks import top_quantile_peaks

    return top_quantile_peaks(score, np.isfinite(score), q)


def _wandb_run():
    wandb = sys.modules.get("wandb")
    return wandb if wandb is not None and getattr(wandb, "run", None) is not None else None


def _trackio_run():
    trackio = sys.modules.get("trackio")
    if trackio is None:
        return None
    try:
        run = trackio.context_vars.current_run.get()
    except Exception:  # noqa: BLE001 - an old or partial trackio: treat as inactive
        return None
    return trackio if run is not None else None


def log_token_view(
    output_dir: str | Path,
    step: int,
    tokens: list[str],
    waad=None,
    fai=None,
    gamma=None,
    *,
    entropy=None,
    strategy: str = "gamma",
    top_quantile: float = 0.4,
    gamma_amp: float = 1.5,
    trackers="auto",
    tensorboard_writer=None,
    title: str | None = None,
) -> dict:
    """Write and log the token view of one response (arrays over its n tokens, completion only).

    Args:
        output_dir: the trainer's output directory; files go to ``<output_dir>/token_views/``.
        step: the global step (file name and tracker step).
        tokens: the n token strings (e.g. ``tokenizer.convert_ids_to_tokens`` or per-token ``decode``).
        waad, fai, gamma, entropy: n numbers each (tensor, array or list) or None.
        strategy: name of the credit strategy that produced ``gamma`` (page labels).
        top_quantile: q of the preplan (TopQ |Delta WAAD|) and anchor (TopQ FAI) marks.
        gamma_amp: the amplification, for the gamma colour scale.
        trackers: ``"auto"`` (every active one of :data:`TRACKERS`), a list of names, or ``()`` for files only.
        tensorboard_writer: a ``torch.utils.tensorboard.SummaryWriter`` (tensorboard needs one).

    Returns:
        ``{"html": path, "png": path or None, "logged": [tracker names]}``.
    """
    n = len(tokens)
    waad, fai, gamma, entropy = (_array(x, n) for x in (waad, fai, gamma, entropy))
    if waad is None and fai is None and gamma is None:
        raise ValueError("log_token_view needs at least one of waad, fai, gamma")
    if trackers == "auto":
        trackers = TRACKERS
    unknown = sorted(set(trackers) - set(TRACKERS))
    if unknown:
        raise ValueError(f"unknown trackers {unknown}; allowed: {', '.join(TRACKERS)}")
    folder = Path(output_dir) / "token_views"
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"step_{int(step):05d}"
    title = title or f"attncredit token view, step {step} ({strategy})"
    preplan = anchors = None
    values = {}
    if waad is not None:
        delta = chunk_delta(waad)
        preplan = _selected(delta, top_quantile)
        values.update(waad=waad.tolist(), delta=delta.tolist())
    if fai is not None:
        anchors = _selected(fai, top_quantile)
        values["fai"] = fai.tolist()
    if entropy is not None:
        values["entropy"] = entropy.tolist()
    png = folder / f"{stem}.png"
    try:
        from .plots import plot_traces

        plot_traces(png, list(tokens), waad, fai, entropy=entropy, gamma=gamma, preplan=preplan, anchors=anchors,
                    title=title, gamma_label=f"γ ({strategy})")
    except Exception as err:  # noqa: BLE001 - a plot failure must not stop training
        logger.warning("attncredit: token view plot failed at step %s: %s", step, err)
        png = None
    marks = {}
    if preplan is not None:
        marks["preplan"] = preplan.tolist()
    if anchors is not None:
        marks["anchor"] = anchors.tolist()
    sample = TokenViewSample(
        key=stem,
        heading=f"step {step}: first completion of the batch ({n} tokens)",
        tokens=list(tokens),
        values=values,
        gammas={strategy: gamma.tolist()} if gamma is not None else {},
        marks=marks,
        images=[png.name] if png is not None else [],
    )
    page = write_token_page(folder / f"{stem}.html", [sample], title=title, gamma_amp=gamma_amp, base=folder,
                            embed_images=True)
    logged = []
    for name in trackers:
        try:
            if _log_to(name, page, png, step, tensorboard_writer, tokens, gamma):
                logged.append(name)
        except Exception as err:  # noqa: BLE001 - a tracker failure must not stop training
            logger.warning("attncredit: could not log the token view to %s: %s", name, err)
    return {"html": page, "png": png, "logged": logged}


def _log_to(name: str, page: Path, png: Path | None, step: int, writer, tokens, gamma) -> bool:
    if name == "wandb":
        wandb = _wandb_run()
        if wandb is None:
            return False
        payload = {"attncredit/token_view": wandb.Html(page.read_text(encoding="utf-8")), "train/global_step": step}
        if png is not None:
            payload["attncredit/token_view_plot"] = wandb.Image(str(png))
        wandb.log(payload)
        return True
    if name == "trackio":
        trackio = _trackio_run()
        if trackio is None or png is None:
            return False
        trackio.log({"attncredit/token_view_plot": trackio.Image(str(png)), "train/global_step": step})
        return True
    if name == "tensorboard":
        if writer is None:
            return False
        if png is not None:
            from matplotlib.image import imread

            image = imread(str(png))[..., :3]
            writer.add_image("attncredit/token_view", image, global_step=step, dataformats="HWC")
        rows = ["| # | token | gamma |", "|---|---|---|"]
        for j, tok in enumerate(tokens):
            g = "" if gamma is None else f"{gamma[j]:.3f}"
            rows.append(f"| {j} | {tok!r} | {g} |")
        writer.add_text("attncredit/token_view", "\n".join(rows), global_step=step)
        return True
    raise ValueError(f"unknown tracker {name!r}")


def tensorboard_writer_of(trainer):
    """The ``SummaryWriter`` of a transformers Trainer's ``TensorBoardCallback``, or None."""
    for callback in getattr(getattr(trainer, "callback_handler", None), "callbacks", []):
        writer = getattr(callback, "tb_writer", None)
        if writer is not None:
            return writer
    return None


def trainer_token_view(trainer, completion_ids, waad, fai, gamma, completion_mask, *, strategy: str) -> dict | None:
    """:func:`log_token_view` for the first completion of a trainer's batch (main process only; returns None
    elsewhere). ``completion_ids`` / ``waad`` / ``fai`` / ``gamma`` / ``completion_mask`` are [B, C] (waad / fai
    may be None); tokens are decoded one by one with the trainer's ``processing_class``."""
    if not trainer.accelerator.is_main_process:
        return None
    keep = completion_mask[0].bool().cpu()
    ids = completion_ids[0].cpu()[keep].tolist()
    tok = getattr(trainer.processing_class, "tokenizer", trainer.processing_class)
    tokens = [tok.decode([t]) for t in ids]

    def row(x):
        return None if x is None else x[0].detach().float().cpu()[keep]

    return log_token_view(
        trainer.args.output_dir,
        trainer.state.global_step,
        tokens,
        row(waad),
        row(fai),
        row(gamma),
        strategy=strategy,
        top_quantile=trainer.args.credit_top_quantile,
        gamma_amp=trainer.args.credit_gamma_amp,
        tensorboard_writer=tensorboard_writer_of(trainer),
    )
