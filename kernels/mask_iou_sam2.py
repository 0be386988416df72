"""Triton kernel: SAM 2 low-res logits -> postprocessed mask -> intersection / union counts.

SAM 2's mask is ONE bilinear resize (``align_corners=False``) of the h x w logits to the original H x W,
then ``> threshold`` (``samr1.ops.mask_iou_sam2``). One launch for a whole (grouped) call: grid = (N masks,
row blocks of the tallest image). Program (m, rb) scores output rows [rb * BLOCK_R, rb * BLOCK_R + BLOCK_R)
of mask m against the ground truth of image ``img[m]`` (rows past that image's H are masked off), looping
over the columns in BLOCK_W tiles. Per-image two-tap tables (``samr1.ops.mask_iou_sam2.sam2_plan``:
output row -> low-res rows y0, y1 and weights, output column -> low-res columns x0, x1 and weights) are
concatenated on the host with per-image offsets in ``meta``, as in :mod:`samr1.kernels.mask_iou` (one
grid for the B images of a GRPO step instead of B launches). Every output pixel gathers its 2 x 2 logits
(L1/L2-resident: a 256 KB plane) and computes x first, then y, like aten: nothing of the original size is
written to memory. Counting a tile, the per-program partial counts and the launch are shared with SAM v1's
kernel (:mod:`samr1.kernels.mask_counts`).

The two-tap sums are ``tl.fma(v0, w0, v1 * w1)``: torch's CUDA kernel is compiled with contraction; the
interpreter computes the fma as a float32 multiply-add (one extra rounding, 1 ulp at most), within the
near-threshold contract.

Launches run under the logits' CUDA device (``samr1.kernels.launch_guard``, entered by ``launch_counts``).
Do not call this directly: use ``samr1.ops.mask_iou_sam2`` / ``mask_iou_sam2_grouped``, which validate
inputs and build the tables. Runs on CUDA tensors, or on CPU tensors when TRITON_INTERPRET=1 was set before this module was imported.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from samr1.kernels import launch_guard
from samr1.kernels.mask_counts import count_tile, launch_counts, store_counts

__all__ = ["TILES", "mask_iou_sam2_counts_triton"]


@triton.jit
def _mask_iou_sam2_kernel(
    logits_ptr,  # (N, LH, LW) float32
    gt_ptr,  # flat uint8, image b at meta[b, 3], H_b x W_b row-major
    img_ptr,  # (N,) int32 image of each mask
    idx_ptr,  # concatenated int32 plans: [y0 (H), y1 (H), x0 (W), x1 (W)] per image
    wts_ptr,  # concatenated float32 plans: [wy0 (H), wy1 (H), wx0 (W), wx1 (W)] per image
    meta_ptr,  # (B, 5) int64: H, W, plan offset (idx and wts alike), gt offset, 0
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
    H = tl.load(meta_ptr + b * 5 + 0)
    W = tl.load(meta_ptr + b * 5 + 1)
    po = tl.load(meta_ptr + b * 5 + 2)
    go = tl.load(meta_ptr + b * 5 + 3)

    rows = rb * BLOCK_R + tl.arange(0, BLOCK_R)
    rmask = rows < H
    # output row -> low-res rows and weights (masked rows read row 0 with weight 0: in bounds)
    ly0 = tl.load(idx_ptr + po + rows, mask=rmask, other=0).to(tl.int64)
    ly1 = tl.load(idx_ptr + po + H + rows, mask=rmask, other=0).to(tl.int64)
    zero = tl.zeros([BLOCK_R, BLOCK_W], dtype=tl.float32)
    wy0 = tl.load(wts_ptr + po + rows, mask=rmask, other=0.0)[:, None] + zero
    wy1 = tl.load(wts_ptr + po + H + rows, mask=rmask, other=0.0)[:, None] + zero
    plane = logits_ptr + m * LH * LW
    p0 = (plane + ly0 * LW)[:, None]
    p1 = (plane + ly1 * LW)[:, None]

    ci = tl.zeros([BLOCK_R, BLOCK_W], dtype=tl.int32)
    cu = tl.zeros([BLOCK_R, BLOCK_W], dtype=tl.int32)
    xo = po + 2 * H
    for x0 in range(0, W, BLOCK_W):
        cols = x0 + tl.arange(0, BLOCK_W)
        cmask = cols < W
        xa = tl.load(idx_ptr + xo + cols, mask=cmask, other=0)[None, :]
        xb = tl.load(idx_ptr + xo + W + cols, mask=cmask, other=0)[None, :]
        wxa = tl.load(wts_ptr + xo + cols, mask=cmask, other=0.0)[None, :] + zero
        wxb = tl.load(wts_ptr + xo + W + cols, mask=cmask, other=0.0)[None, :] + zero
        # x first (per low-res row), then y: aten's order
        a0 = tl.fma(tl.load(p0 + xa), wxa, tl.load(p0 + xb) * wxb)
        a1 = tl.fma(tl.load(p1 + xa), wxa, tl.load(p1 + xb) * wxb)
        v = tl.fma(a0, wy0, a1 * wy1)
        ci, cu = count_tile(v, threshold, rows, cols, rmask, cmask, gt_ptr, go, W, ci, cu)
    store_counts(part_ptr, m, rb, n_rb, ci, cu)


# (BLOCK_R, BLOCK_W, num_warps) per device type, as in samr1.kernels.mask_iou: on CUDA 8 x 128 tiles
# (~1k pixels per program, 4 gathers each); the interpreter pays per op, not per element, so larger tiles
# are cheaper there. A table (not a branch) so that interpreter tests can run the CUDA configuration too.
TILES: dict[str, tuple[int, int, int]] = {"cuda": (8, 128, 4), "cpu": (16, 128, 1)}


def mask_iou_sam2_counts_triton(logits: torch.Tensor, gt_flat: torch.Tensor, img: torch.Tensor, idx: torch.Tensor,
                                wts: torch.Tensor, meta: torch.Tensor, max_h: int, threshold: float
                                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Launch the kernel once for all masks (inputs already validated and planned).

    Args:
        logits: N x h x w float32 contiguous. gt_flat: flat uint8 of all ground truths.
        img: (N,) int32 image of each row. idx / wts: concatenated plans (int32 / float32, same offsets).
        meta: (B, 5) int64 per image (H, W, plan offset, gt offset, 0).
        max_h: tallest H (sizes the grid). threshold: strict threshold on the resized logit.

    Returns:
        intersection, union: int64 (N,) on the logits' device.
    """
    return launch_counts(_mask_iou_sam2_kernel, TILES, launch_guard, logits, gt_flat, img, idx, wts, meta, max_h, threshold)
