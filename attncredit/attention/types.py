"""The result type of the attention statistics and the table of their backends (no imports from this package).

The statistics of one causal layer (docs/method.md, "Attention statistics", Eq. 7, 9, 10) are computed by
one of the backends in :data:`BACKENDS`; :func:`attncredit.attention.stats.attention_stats` chooses and
validates, every backend returns an :class:`AttentionStats`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class AttentionStats:
    """Statistics of one attention layer. ``waad`` and ``fai`` are [B, Hq, N]; ``head_distance`` is [B, Hq], or None
    when it was not asked for (band-only statistics, the head groups kept from an earlier forward)."""

    waad: torch.Tensor
    fai: torch.Tensor
    head_distance: torch.Tensor | None

    def keep_heads(self, waad_heads: torch.Tensor, fai_heads: torch.Tensor) -> AttentionStats:
        """These statistics with WAAD kept only for ``waad_heads`` and FAI only for ``fai_heads`` (bool [Hq] each),
        0 elsewhere: what a backend returns when asked for a head subset (``heads``)."""
        waad_heads = waad_heads.to(self.waad.device, torch.bool)[None, :, None]
        fai_heads = fai_heads.to(self.fai.device, torch.bool)[None, :, None]
        return AttentionStats(
            waad=self.waad * waad_heads, fai=self.fai * fai_heads, head_distance=self.head_distance
        )


# backend name -> what computes it; "auto" is "triton" on CUDA tensors and "torch" elsewhere
BACKENDS = {
    "auto": "triton on CUDA tensors, torch elsewhere",
    "dense": "the reference: builds the [B, Hq, N, N] probabilities (attention/stats.py)",
    "torch": "chunked PyTorch, no N x N matrix (attention/chunked.py)",
    "triton": "fused Triton kernels, CUDA or TRITON_INTERPRET=1 (attention/triton_stats.py)",
}
