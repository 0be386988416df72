"""Triton kernel: SAM low-res logits -> postprocessed mask -> intersection / union counts.

One launch for a whole (grouped) call: grid = (N masks, row blocks of the tallest image). Program
(m, rb) scores output rows [rb * BLOCK_R, rb * BLOCK_R + BLOCK_R) of mask m against the ground truth of
image ``img[m]`` (rows past that image's H are masked off), looping over the columns in BLOCK_W tiles.
Per-image index/weight tables (``samr1.ops.mask_iou.image_plan``: output row -> frame rows, frame row
-> low-res rows, output column -> frame columns and their composed low-res columns) are concatenated
on the host with per-image offsets in ``meta``; a single launch with per-row metadata was chosen over
one launch per image because a GRPO step has B ~ 2-16 images of different sizes, and one grid covers
them all with ~10 us of launch overhead instead of B times that. Every output pixel recomputes its
2 x 2 frame values from the 4 x 4 low-res logits they depend on (16 L1/L2-resident gathers from a
256 KB logit plane, ~30 flops): nothing of frame or original size is ever written to memory; the counts
of a program go to a (N, n_blocks, 2) int32 buffer that torch sums (deterministic, no int64 atomics).

Arithmetic follows aten's order (``v0 * w0 + v1 * w1`` along x per row, then along y, both resizes)
with explicit ``tl.fma(v0, w0, v1 * w1)``: torch's CUDA kernel is compiled with contraction too; the
interpreter computes the fma as a float32 multiply-add (one extra rounding, 1 ulp at most).

Launches run under the logits' CUDA device (``samr1.kernels.launch_guard``), so tensors on ``cuda:1``
work whichever device is current. Do not call this directly: use ``samr1.ops.mask_iou_from_logits`` /
``mask_iou_grouped``, which validate inputs and build the tables. Runs on CUDA tensors, or on CPU
tensors when TRITON_INTERPRET=1 was set before this module was imported (the tests do that in a
subprocess).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from samr1.kernels import launch_guard
from samr1.kernels.mask_counts import count_tile, launch_counts, store_counts

__all__ = ["TILES", "mask_iou_counts_triton"]


@triton.jit
def _frame_row_at(row_a, row_b, wa, wb, c0, c1, u0, u1):
    """Frame values of frame row (low-res rows a, b with weights wa, wb) at frame columns whose
    low-res columns / weights are (c0, c1, u0, u1): first resize, x then y, like aten."""
    ta = tl.fma(tl.load(row_a + c0), u0, tl.load(row_a + c1) * u1)
    tb = tl.fma(tl.load(row_b + c0), u0, tl.load(row_b + c1) * u1)
    return tl.fma(ta, wa, tb * wb)


@triton.jit
def _mask_iou_kernel(
    logits_ptr,  # (N, LH, LW) float32
    gt_ptr,  # flat uint8, image b at meta[b, 5], H_b x W_b row-major
    img_ptr,  # (N,) int32 image of each mask
    idx_ptr,  # concatenated int32 plans
    wts_ptr,  # concatenated float32 plans
    meta_ptr,  # (B, 8) int64: H, W, ih, idx offset, wts offset, gt offset, -, -  (see samr1.ops.mask_iou)
    part_ptr,  # (N, n_rb, 2) int32 partial counts
    n_rb,
    LH,
    LW,
    threshold,
    BLOCK_R: tl.constexpr,
    BLOCK_W: tl.constexpr,
):
    m = tl.program_id(0).to(tl.int64)
    rb = tl.program_id(1)
    b = tl.load(img_ptr + m).to(tl.int64)
    H = tl.load(meta_ptr + b * 8 + 0)
    W = tl.load(meta_ptr + b * 8 + 1)
    IH = tl.load(meta_ptr + b * 8 + 2)
    io = tl.load(meta_ptr + b * 8 + 3)
    wo = tl.load(meta_ptr + b * 8 + 4)
    go = tl.load(meta_ptr + b * 8 + 5)

    rows = rb * BLOCK_R + tl.arange(0, BLOCK_R)
    rmask = rows < H
    # second resize, vertical: output row -> cropped-frame rows (masked rows read row 0: in bounds)
    fy0 = tl.load(idx_ptr + io + rows, mask=rmask, other=0)
    fy1 = tl.load(idx_ptr + io + H + rows, mask=rmask, other=0)
    vy0 = tl.load(wts_ptr + wo + rows, mask=rmask, other=0.0)
    vy1 = tl.load(wts_ptr + wo + H + rows, mask=rmask, other=0.0)
    # first resize, vertical: frame row -> low-res rows
    r1i = io + 2 * H
    r1w = wo + 2 * H
    ly00 = tl.load(idx_ptr + r1i + fy0).to(tl.int64)
    ly01 = tl.load(idx_ptr + r1i + IH + fy0).to(tl.int64)
    uy00 = tl.load(wts_ptr + r1w + fy0)
    uy01 = tl.load(wts_ptr + r1w + IH + fy0)
    ly10 = tl.load(idx_ptr + r1i + fy1).to(tl.int64)
    ly11 = tl.load(idx_ptr + r1i + IH + fy1).to(tl.int64)
    uy10 = tl.load(wts_ptr + r1w + fy1)
    uy11 = tl.load(wts_ptr + r1w + IH + fy1)

    plane = logits_ptr + m * LH * LW
    p00 = (plane + ly00 * LW)[:, None]
    p01 = (plane + ly01 * LW)[:, None]
    p10 = (plane + ly10 * LW)[:, None]
    p11 = (plane + ly11 * LW)[:, None]
    zero = tl.zeros([BLOCK_R, BLOCK_W], dtype=tl.float32)
    wy00 = uy00[:, None] + zero
    wy01 = uy01[:, None] + zero
    wy10 = uy10[:, None] + zero
    wy11 = uy11[:, None] + zero
    wv0 = vy0[:, None] + zero
    wv1 = vy1[:, None] + zero

    ci = tl.zeros([BLOCK_R, BLOCK_W], dtype=tl.int32)
    cu = tl.zeros([BLOCK_R, BLOCK_W], dtype=tl.int32)
    ci_ = io + 2 * H + 2 * IH
    cw_ = wo + 2 * H + 2 * IH
    for x0 in range(0, W, BLOCK_W):
        cols = x0 + tl.arange(0, BLOCK_W)
        cmask = cols < W
        # output column -> low-res columns of its two frame columns c0 (a) and c1 (b), and weights
        a0 = tl.load(idx_ptr + ci_ + cols, mask=cmask, other=0)[None, :]
        a1 = tl.load(idx_ptr + ci_ + W + cols, mask=cmask, other=0)[None, :]
        b0 = tl.load(idx_ptr + ci_ + 2 * W + cols, mask=cmask, other=0)[None, :]
        b1 = tl.load(idx_ptr + ci_ + 3 * W + cols, mask=cmask, other=0)[None, :]
        ua0 = tl.load(wts_ptr + cw_ + cols, mask=cmask, other=0.0)[None, :] + zero
        ua1 = tl.load(wts_ptr + cw_ + W + cols, mask=cmask, other=0.0)[None, :] + zero
        ub0 = tl.load(wts_ptr + cw_ + 2 * W + cols, mask=cmask, other=0.0)[None, :] + zero
        ub1 = tl.load(wts_ptr + cw_ + 3 * W + cols, mask=cmask, other=0.0)[None, :] + zero
        vx0 = tl.load(wts_ptr + cw_ + 4 * W + cols, mask=cmask, other=0.0)[None, :] + zero
        vx1 = tl.load(wts_ptr + cw_ + 5 * W + cols, mask=cmask, other=0.0)[None, :] + zero
        # frame values at (fy0 | fy1) x (c0 | c1); then the second resize, x then y
        f0a = _frame_row_at(p00, p01, wy00, wy01, a0, a1, ua0, ua1)
        f0b = _frame_row_at(p00, p01, wy00, wy01, b0, b1, ub0, ub1)
        f1a = _frame_row_at(p10, p11, wy10, wy11, a0, a1, ua0, ua1)
        f1b = _frame_row_at(p10, p11, wy10, wy11, b0, b1, ub0, ub1)
        t0 = tl.fma(f0a, vx0, f0b * vx1)
        t1 = tl.fma(f1a, vx0, f1b * vx1)
        v = tl.fma(t0, wv0, t1 * wv1)
        ci, cu = count_tile(v, threshold, rows, cols, rmask, cmask, gt_ptr, go, W, ci, cu)
    store_counts(part_ptr, m, rb, n_rb, ci, cu)


# (BLOCK_R, BLOCK_W, num_warps) per device type. On CUDA 8 x 128 tiles keep ~1k pixels per program (16
# gathers each, all hitting L1/L2); the interpreter pays per op, not per element, so larger tiles are
# cheaper there. A table (not a branch) so that the interpreter tests can run the CUDA configuration too.
TILES: dict[str, tuple[int, int, int]] = {"cuda": (8, 128, 4), "cpu": (16, 128, 1)}


def mask_iou_counts_triton(logits: torch.Tensor, gt_flat: torch.Tensor, img: torch.Tensor, idx: torch.Tensor,
                           wts: torch.Tensor, meta: torch.Tensor, max_h: int, threshold: float
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Launch the kernel once for all masks (inputs already validated and planned).

    Args:
        logits: N x h x w float32 contiguous. gt_flat: flat uint8 of all ground truths.
        img: (N,) int32 image of each row. idx / wts: concatenated plans (int32 / float32).
        meta: (B, 8) int64 per image (H, W, ih, idx offset, wts offset, gt offset, 0, 0).
        max_h: tallest H (sizes the grid). threshold: strict threshold on the postprocessed logit.

    Returns:
        intersection, union: int64 (N,) on the logits' device.
    """
    return launch_counts(_mask_iou_kernel, TILES, launch_guard, logits, gt_flat, img, idx, wts, meta, max_h, threshold)
