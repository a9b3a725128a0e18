r"""The row log-sum-exp of a probe layer's softmax, taken from the attention kernel that SDPA runs anyway.

Every fused kernel behind ``torch.nn.functional.scaled_dot_product_attention`` (cuDNN, FlashAttention,
memory-efficient, and FlashAttention for CPU) computes, for each query row ``t``, the natural-log normaliser

    ``L_t = log sum_{s allowed} exp(scale q_t . k_s + bias_ts)``

and returns it next to the output when asked (it is what the backward reads). With ``L_t`` given, the attention
statistics need no causal sweep of their own for the normaliser (docs/method.md, "Attention statistics";
``attncredit.attention.triton_stats``).

:class:`RowLSECapture` is a ``TorchFunctionMode``: while it is active around transformers' ``sdpa_attention_forward``
of a probe layer, the SDPA call is answered by the kernel SDPA itself chooses (``torch._fused_sdp_choice`` on the
same arguments), called as SDPA calls it (its boolean-mask conversion, its mask padding for the efficient kernel),
but with ``compute_log_sumexp=True``. The first call of each kind (kernel, device, dtype, mask type, causal flag,
GQA flag, grad mode) is checked against SDPA itself: the output must be bit-identical (``torch.equal``) and the
returned ``L`` must match a direct log-sum-exp of one row per head. A kind that passes is used from then on; one
that fails, or a kernel that gives no ``L`` (SDPA's math kernel, dropout), runs plain SDPA, and the statistics
compute the normaliser themselves. Each decision is logged once. Gradients flow through the same kernel op that
SDPA's autograd would record, so the backward is SDPA's too.
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from ..errors import first_line

logger = logging.getLogger(__name__)

# torch's SDPBackend numbering, as returned by torch._fused_sdp_choice
_FLASH, _EFFICIENT, _CUDNN = 1, 2, 3
_NAMES = {-1: "error", 0: "math", _FLASH: "flash", _EFFICIENT: "efficient", _CUDNN: "cudnn", 4: "overrideable"}
# the value a boolean mask's False becomes in the additive mask, per kernel, in the order tried: SDPA fills
# -inf, except for cuDNN, where torch 2.10 fills -65504 (a cuDNN work-around) and later versions may not
_MASK_FILLS = {_CUDNN: (-65504.0, -math.inf)}
_DEFAULT_FILLS = (-math.inf,)

_DECISIONS: dict[tuple, float | None] = {}  # kind -> the mask fill that reproduced SDPA, or None: plain SDPA


def _sdpa_arguments(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    """SDPA's signature, to read its arguments however they were passed."""
    return query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa


def _additive(mask, dtype, fill):
    """SDPA's conversion of a boolean mask (True = attend) into an additive one; float masks pass through."""
    if mask is None or mask.dtype != torch.bool:
        return mask
    return torch.where(mask.logical_not(), torch.tensor(fill, dtype=dtype, device=mask.device),
                       torch.tensor(0.0, dtype=dtype, device=mask.device))


def _efficient_bias(mask, query, key):
    """SDPA's preparation of the efficient kernel's bias: a view whose rows are 16-element aligned, expanded."""
    if any(stride % 16 for stride in mask.stride()[:-1]):
        n = mask.shape[-1]
        mask = F.pad(mask, (0, 16 - n % 16))[..., :n]
    return mask.expand(query.shape[0], query.shape[1], query.shape[2], key.shape[2])


def _run_kernel(choice, fill, query, key, value, mask, dropout_p, is_causal, scale):
    """(output, lse [B, H, >=N]) of the fused kernel ``choice`` called as SDPA calls it, with the LSE requested."""
    aten = torch.ops.aten
    mask = _additive(mask, query.dtype, fill)
    if choice == _CUDNN:
        out, lse = aten._scaled_dot_product_cudnn_attention(
            query, key, value, mask, True, dropout_p, is_causal, False, scale=scale
        )[:2]
    elif choice == _FLASH and query.device.type == "cpu":
        out, lse = aten._scaled_dot_product_flash_attention_for_cpu(
            query, key, value, dropout_p, is_causal, attn_mask=mask, scale=scale
        )
    elif choice == _FLASH:  # CUDA flash takes no mask; SDPA passes the scale of the unpadded head dim
        if query.shape[-1] % 8:
            return None
        scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
        out, lse = aten._scaled_dot_product_flash_attention(
            query, key, value, dropout_p, is_causal, False, scale=scale
        )[:2]
    elif choice == _EFFICIENT:
        if mask is not None:
            mask = _efficient_bias(mask, query, key)
        out, lse = aten._scaled_dot_product_efficient_attention(
            query, key, value, mask, True, dropout_p, is_causal, scale=scale
        )[:2]
    else:
        return None
    if lse.dim() == 4:  # cuDNN: [B, H, N, 1]
        lse = lse[..., 0]
    return out, lse


def _lse_matches(lse, query, key, mask, is_causal, scale, fill) -> bool:
    """Whether ``lse`` is the natural-log normaliser: checked on the last query row of sequence 0, every head."""
    b, hq, n, d = query.shape
    t = n - 1
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    k = key[0].float().repeat_interleave(hq // key.shape[1], dim=0)  # [Hq, Nk, D]
    scores = torch.einsum("hd,hsd->hs", query[0, :, t].float(), k) * scale
    if mask is not None:
        row = torch.broadcast_to(mask, (b, hq, n, key.shape[2]))[0, :, t]  # [Hq, Nk]
        scores = scores + _additive(row, torch.float32, fill)
    if is_causal:
        scores[:, t + 1 :] = -math.inf
    want = torch.logsumexp(scores, dim=-1)
    got = lse[0, :, t].float()
    return bool(torch.allclose(got, want, rtol=1e-3, atol=1e-3))


class RowLSECapture(TorchFunctionMode):
    """While active, the first SDPA call inside is run by its own fused kernel with the row LSE kept in :attr:`lse`
    ([B, H, >=N] float32, natural log; None where no checked kernel gives it). Use around one attention call."""

    def __init__(self):
        super().__init__()
        self.lse: torch.Tensor | None = None
        self._done = False

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is not F.scaled_dot_product_attention or self._done:
            return func(*args, **kwargs)
        self._done = True
        result = _with_lse(func, args, kwargs)
        if result is None:
            return func(*args, **kwargs)
        out, self.lse = result
        return out


def _with_lse(sdpa, args, kwargs):
    """(output, lse) through SDPA's own kernel, or None (unsupported or failed check: plain SDPA runs)."""
    query, key, value, mask, dropout_p, is_causal, scale, enable_gqa = _sdpa_arguments(*args, **kwargs)
    grad = torch.is_grad_enabled() and any(x.requires_grad for x in (query, key, value))
    choice = int(
        torch._fused_sdp_choice(query, key, value, mask, dropout_p, is_causal, scale=scale, enable_gqa=enable_gqa)
    )
    kind = (_NAMES.get(choice, str(choice)), query.device.type, query.dtype, None if mask is None else mask.dtype,
            bool(is_causal), bool(enable_gqa), grad)
    if kind not in _DECISIONS:
        _DECISIONS[kind] = _decide(sdpa, kind, choice, args, kwargs)
    fill = _DECISIONS[kind]
    if fill is None:
        return None
    return _run_kernel(choice, fill, query, key, value, mask, dropout_p, is_causal, scale)


def _decide(sdpa, kind, choice, args, kwargs) -> float | None:
    """Check the kernel of ``choice`` against SDPA on this first call of ``kind``; log the decision once."""
    query, key, value, mask, dropout_p, is_causal, scale, _ = _sdpa_arguments(*args, **kwargs)
    dtype = str(kind[2]).removeprefix("torch.")
    what = f"SDPA's {kind[0]} kernel ({kind[1]}, {dtype}, mask {kind[3]}, causal {kind[4]})"
    fallback = "; the attention statistics compute the row normaliser themselves (a causal sweep per probe layer)"
    if dropout_p:
        logger.info("attncredit: attention dropout %s draws random numbers; %s", dropout_p, fallback.lstrip("; "))
        return None
    with torch.no_grad():
        reference = sdpa(*args, **kwargs)
        for fill in _MASK_FILLS.get(choice, _DEFAULT_FILLS):
            try:
                result = _run_kernel(choice, fill, query, key, value, mask, dropout_p, is_causal, scale)
            except RuntimeError as err:  # the private op refused these inputs
                logger.info("attncredit: %s refused a direct call (%s)%s", what, first_line(err), fallback)
                return None
            if result is None:
                break
            out, lse = result
            if torch.equal(out, reference) and _lse_matches(lse, query, key, mask, is_causal, scale, fill):
                logger.info("attncredit: the attention statistics read the row log-sum-exp from %s: the attention "
                            "output is bit-identical to SDPA's", what)
                return fill
    logger.info("attncredit: %s gives no row log-sum-exp with an output bit-identical to SDPA's%s", what, fallback)
    return None


__all__ = ["RowLSECapture"]
