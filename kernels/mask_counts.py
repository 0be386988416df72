"""Pieces shared by the fused mask-IoU Triton kernels (:mod:`samr1.kernels.mask_iou`: SAM,
:mod:`samr1.kernels.mask_iou_sam2`: SAM 2): counting one tile of predicted logits against the ground truth,
storing a program's partial counts, and launching a (mask, row block) grid.

Both kernels have the signature ``kernel(logits, gt_flat, img, idx, wts, meta, part, n_rb, LH, LW, threshold,
BLOCK_R, BLOCK_W)``: program (m, rb) scores output rows [rb * BLOCK_R, (rb + 1) * BLOCK_R) of mask m and writes
its |pred AND gt|, |pred OR gt| to ``part[m, rb]`` (int32; torch sums them: deterministic, no int64 atomics).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

__all__ = ["count_tile", "launch_counts", "store_counts"]


@triton.jit
def count_tile(v, threshold, rows, cols, rmask, cmask, gt_ptr, go, W, ci, cu):
    """(ci, cu) plus one BLOCK_R x BLOCK_W tile's AND / OR counts: pred = v > threshold inside the image
    (rows < H, cols < W), gt = the uint8 ground truth at ``gt_ptr + go``, W wide, row-major."""
    inside = rmask[:, None] & cmask[None, :]
    pred = (v > threshold) & inside
    g = tl.load(gt_ptr + go + rows[:, None].to(tl.int64) * W + cols[None, :], mask=inside, other=0) != 0
    return ci + (pred & g).to(tl.int32), cu + (pred | g).to(tl.int32)


@triton.jit
def store_counts(part_ptr, m, rb, n_rb, ci, cu):
    """Program (m, rb)'s totals of the tile counters ci, cu into ``part[m, rb, 0:2]``."""
    out = part_ptr + (m * n_rb + rb) * 2
    tl.store(out, tl.sum(tl.sum(ci, axis=1), axis=0))
    tl.store(out + 1, tl.sum(tl.sum(cu, axis=1), axis=0))


def launch_counts(kernel, tiles: dict[str, tuple[int, int, int]], guard, logits: torch.Tensor,
                  gt_flat: torch.Tensor, img: torch.Tensor, idx: torch.Tensor, wts: torch.Tensor, meta: torch.Tensor,
                  max_h: int, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Launch ``kernel`` once over (N masks, row blocks of the tallest image, ``max_h``) inside
    ``guard(logits.device)``, with ``tiles[device type]`` = (BLOCK_R, BLOCK_W, num_warps); return
    (intersection, union), int64 (N,) each, on the logits' device.

    ``guard`` is :func:`samr1.kernels.launch_guard` as the calling kernel module names it (each launcher
    passes its own module-level name, so that a test can watch one kernel's launches)."""
    n, lh, lw = logits.shape
    block_r, block_w, warps = tiles["cuda" if logits.device.type == "cuda" else "cpu"]
    n_rb = triton.cdiv(max_h, block_r)
    part = torch.empty((n, n_rb, 2), dtype=torch.int32, device=logits.device)
    with guard(logits.device):
        kernel[(n, n_rb)](
            logits, gt_flat, img, idx, wts, meta, part, n_rb, lh, lw, float(threshold),
            BLOCK_R=block_r, BLOCK_W=block_w, num_warps=warps,
        )
    counts = part.sum(dim=1, dtype=torch.int64)
    return counts[:, 0].clone(), counts[:, 1].clone()  # separate storages: custom ops may not alias outputs
