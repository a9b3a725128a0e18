"""Local- and global-focused head groups and their averaged token statistics (docs/method.md, "Head groups",
Eq. 7-8; the per-sequence/per-batch ranking is one of the "Readings of the paper's ambiguities").

Every (probe layer, query head) pair is one head; with ``M = n_layers * Hq`` heads:

* heads are ranked by their head distance ``d`` (Eq. 7), ascending; ties are broken by the flat index
  ``layer_position * Hq + head`` (the lower index ranks as the more local head), so the ranking is a total order;
* ``k = max(1, floor(quantile * M + 1/2))`` heads per group (``quantile * M`` rounded half up, computed with a
  1e-9 guard against float error, so 0.3 * 160 = 48), capped at ``floor(M / 2)`` so the groups never overlap
  (``M == 1``: the one head is both groups);
* the first ``k`` heads of the ranking form the local group H_loc, the last ``k`` the global group H_glob;
* ``per="sequence"``: each sequence ranks its own ``d``; ``per="batch"``: one ranking of the batch-mean ``d``
  (a sequence with no response has ``d = 0`` on every head, which shifts all heads equally and leaves that ranking
  unchanged), shared by every sequence.

WAAD and FAI are linear in the attention map, so the group average of Eq. 8 followed by Eq. 9/10 equals the
mean of the per-head statistics over the group: ``waad = mean_{H_loc} WAAD^(l,h)``, ``fai = mean_{H_glob} FAI^(l,h)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from .types import AttentionStats

GROUPING_MODES = ("sequence", "batch")


@dataclass
class HeadGroups:
    """Group-averaged token statistics plus what was selected, for logging.

    Attributes:
        waad: [B, N] float32, mean WAAD over the local group (0 on non-response tokens).
        fai: [B, N] float32, mean FAI over the global group (0 where no response token receives from the token).
        local_mask: [B, n_layers, Hq] bool, the local-focused heads of each sequence.
        global_mask: [B, n_layers, Hq] bool, the global-focused heads of each sequence.
        head_distance: [B, n_layers, Hq] float32, d of Eq. 7 per sequence and head; None when fixed groups were
            given and the statistics skipped it (band-only).
        layers: the probe layers, in the order of the ``n_layers`` axis.
        quantile: the group fraction used.
    """

    waad: torch.Tensor
    fai: torch.Tensor
    local_mask: torch.Tensor
    global_mask: torch.Tensor
    head_distance: torch.Tensor | None
    layers: list[int]
    quantile: float = 0.3

    fixed: bool = False

    def batch_masks(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(local, global) bool [n_layers, Hq]: the groups of the batch-mean head distance, or the fixed groups
        every sequence used when they were given to :func:`group_token_stats`."""
        if self.fixed:
            return self.local_mask[0], self.global_mask[0]
        local, glob = select_head_groups(self.head_distance, self.quantile, per="batch")
        return local[0], glob[0]

    def batch_groups(self, layers: list[int] | None = None) -> dict[str, list[list[int]]]:
        """:meth:`batch_masks` for logging: ``{"local": [[layer, head], ...], "global": [...]}`` (sorted;
        ``layers`` relabels the layer axis, default ``self.layers``). With ``per="batch"`` or fixed groups these
        are the groups every sequence used. Copies to the host (synchronises)."""
        layers = self.layers if layers is None else list(layers)
        return {
            name: [[layers[i], h] for i, h in mask.nonzero().tolist()]
            for name, mask in zip(("local", "global"), self.batch_masks())
        }


def group_size(num_heads: int, quantile: float) -> int:
    """Heads per group: ``max(1, floor(quantile * num_heads + 1/2))``, at most ``num_heads // 2`` (if >= 2 heads)."""
    k = max(1, int(quantile * num_heads + 0.5 + 1e-9))
    return min(k, num_heads // 2) if num_heads >= 2 else 1


def _check_quantile_per(quantile, per):
    if isinstance(quantile, bool) or not isinstance(quantile, (int, float)) or not 0.0 < quantile <= 0.5:
        raise ValueError(f"head quantile must be a number in (0, 0.5], got {quantile!r}")
    if per not in GROUPING_MODES:
        raise ValueError(f"head grouping must be one of {GROUPING_MODES}, got {per!r}")


def select_head_groups(
    head_distance: torch.Tensor, quantile: float = 0.3, per: str = "sequence"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Local and global head masks from head distances.

    Args:
        head_distance: [B, ...] head distance d per sequence; the trailing dims (e.g. [n_layers, Hq]) are the heads,
            ranked in their flattened (row-major) order for ties.
        quantile: fraction of heads per group, in (0, 0.5]; see :func:`group_size` for the rounding.
        per: ``"sequence"`` (each row ranked on its own) or ``"batch"`` (the batch-mean d ranked once).

    Returns:
        (local_mask, global_mask), bool, same shape as ``head_distance``; exactly ``group_size(M, quantile)`` heads
        are set per sequence in each.
    """
    _check_quantile_per(quantile, per)
    if head_distance.dim() < 2 or head_distance[0].numel() == 0:
        raise ValueError(f"head_distance must be [B, heads...] with at least one head, got {tuple(head_distance.shape)}")
    b = head_distance.shape[0]
    d = head_distance.reshape(b, -1).float()
    m = d.shape[1]
    if per == "batch":
        d = d.mean(0, keepdim=True)
    k = group_size(m, quantile)
    order = torch.sort(d, dim=1, stable=True).indices  # ascending d, ties by flat index
    local = torch.zeros_like(d, dtype=torch.bool).scatter_(1, order[:, :k], True)
    glob = torch.zeros_like(d, dtype=torch.bool).scatter_(1, order[:, m - k :], True)
    if per == "batch":
        local, glob = local.repeat(b, 1), glob.repeat(b, 1)
    return local.reshape(head_distance.shape), glob.reshape(head_distance.shape)


def group_token_stats(
    stats: Mapping[int, AttentionStats],
    quantile: float = 0.3,
    per: str = "sequence",
    heads: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> HeadGroups:
    """Select the local/global head groups (Eq. 7) and average their WAAD / FAI (Eq. 8-10).

    Args:
        stats: per probe layer statistics, e.g. ``record_attention(...).stats``; each ``waad``/``fai`` is
            [B, Hq, N] and ``head_distance`` [B, Hq], the same B, Hq and N for every layer (``head_distance`` may be
            None for every layer when ``heads`` is given).
        quantile: fraction of all (layer, head) pairs in each group, paper default 0.3.
        per: ``"sequence"`` or ``"batch"`` (docs/method.md, "Readings of the paper's ambiguities").
        heads: fixed groups (local, global), bool [n_layers, Hq] each with the same number of heads (e.g. an
            earlier forward's :meth:`HeadGroups.batch_masks`), used for every sequence instead of ranking d.

    Returns:
        :class:`HeadGroups` with token statistics [B, N] and the group masks [B, n_layers, Hq].
    """
    _check_quantile_per(quantile, per)
    if not stats:
        raise ValueError("no attention statistics to group: the stats mapping is empty")
    layers = sorted(stats)
    first = stats[layers[0]]
    shape = tuple(first.waad.shape)
    has_distance = [stats[layer].head_distance is not None for layer in layers]
    if not all(has_distance) and (heads is None or any(has_distance)):
        missing = [layer for layer, has in zip(layers, has_distance) if not has]
        raise ValueError(
            f"head_distance is None for probe layers {missing}: it may be skipped only for every layer, and only "
            "when fixed head groups are given"
        )
    for layer in layers:
        s = stats[layer]
        distance_shape = tuple(s.head_distance.shape) if s.head_distance is not None else shape[:2]
        if tuple(s.waad.shape) != shape or tuple(s.fai.shape) != shape or distance_shape != shape[:2]:
            raise ValueError(
                f"layer {layer} statistics have shapes waad {tuple(s.waad.shape)}, fai {tuple(s.fai.shape)}, "
                f"head_distance {distance_shape}; expected {shape}, {shape}, {shape[:2]} as for layer {layers[0]}"
            )
    head_distance = (
        torch.stack([stats[layer].head_distance.float() for layer in layers], dim=1) if all(has_distance) else None
    )  # [B, L, Hq]
    if heads is None:
        local, glob = select_head_groups(head_distance, quantile, per)
        k = group_size(local[0].numel(), quantile)  # the same count for every sequence
    else:
        k = int(heads[0].sum())
        want = (shape[0], len(layers), shape[1])
        if any(tuple(m.shape) != want[1:] for m in heads) or int(heads[1].sum()) != k or k < 1:
            raise ValueError(
                f"fixed head groups must be two bool [n_layers, Hq] = {want[1:]} masks with the same number of heads, "
                f"got {tuple(heads[0].shape)} and {tuple(heads[1].shape)} with {k} and {int(heads[1].sum())} heads"
            )
        local, glob = (m.to(device=first.waad.device, dtype=torch.bool).expand(want) for m in heads)
    w_local = local.float() / k
    w_global = glob.float() / k
    waad = sum(torch.einsum("bh,bhn->bn", w_local[:, i], stats[layer].waad.float()) for i, layer in enumerate(layers))
    fai = sum(torch.einsum("bh,bhn->bn", w_global[:, i], stats[layer].fai.float()) for i, layer in enumerate(layers))
    return HeadGroups(
        waad=waad,
        fai=fai,
        local_mask=local,
        global_mask=glob,
        head_distance=head_distance,
        layers=layers,
        quantile=quantile,
        fixed=heads is not None,
    )
