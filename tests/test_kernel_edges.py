"""The Triton statistics kernel at its block edges: WAAD window W and FAI horizons H_lo / H_hi in
{1, 2, BLOCK-1, BLOCK, BLOCK+1, BLOCK+2} for each block size the kernel uses, with and without a given row LSE
and band-only (given LSE, no head distance: only the blocks within max(W - 1, H_hi) of the diagonal are read),
against the dense reference (fp32, 1e-5). Sums that stop one block early or one key short only show when W or H
sits on a block edge, which random windows rarely hit."""

import pytest
import torch

pytest.importorskip("triton")

from test_triton_stats import DEVICE, FP32, _check, _inputs, _row_lse  # noqa: E402

# (block_m, block_n): the interpreter's default (CPU), and the CUDA defaults for float32 and 16-bit inputs
BLOCKS = [(32, 32), (64, 32)] + ([(128, 64)] if DEVICE == "cuda" else [])


def _edges(block: int) -> list[int]:
    return [1, 2, block - 1, block, block + 1, block + 2]


def _cases():
    for block_m, block_n in BLOCKS:
        for edge in sorted(set(_edges(block_n) + _edges(block_m))):
            yield block_m, block_n, "W", edge
            yield block_m, block_n, "H_lo", edge
            yield block_m, block_n, "H_hi", edge


@pytest.mark.parametrize("mode", ["lse-computed", "lse-given", "band-only"])
@pytest.mark.parametrize("block_m,block_n,knob,value", list(_cases()))
def test_window_and_horizons_on_block_edges(block_m, block_n, knob, value, mode):
    n = 2 * block_m + 5  # several query and key blocks, the last one partial
    q, k, attn, resp = _inputs(2, 1, 1, n, 16, torch.float32, pad="mixed", resp_from=0.2, seed=value)
    window, horizon = 10, (3, 40)
    if knob == "W":
        window = value
    elif knob == "H_lo":
        horizon = (value, value + block_n)
    else:
        horizon = (min(3, value), value)
    row_lse = _row_lse(q, k, attn, q.shape[-1] ** -0.5) if mode != "lse-computed" else None
    _check(q, k, attn, resp, window, horizon, config=dict(block_m=block_m, block_n=block_n), row_lse=row_lse,
           head_distance=mode != "band-only", **FP32)
