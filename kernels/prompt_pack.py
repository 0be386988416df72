"""Triton kernel: pack a ragged SAM prompt batch into the mask decoder's padded sparse tokens.

One launch for the whole batch, one program per prompt. Each program counts its real points, then for
every token slot ``t < T`` works out what the slot holds (point ``t``, the not-a-point pad of a box-less
prompt, box corner 1 or 2, or nothing) and writes ``D`` values: the random-Fourier positional encoding
(sin/cos of ``2*pi*(2*c - 1) @ G`` with ``c`` the +0.5-shifted frame coordinate normalised by the frame)
plus the label embedding; the not-a-point token has its PE zeroed like upstream. Original -> frame
coordinates use the per-image scale from ``samr1.sam.prompts.frame_scales`` (in float32 here; the torch
reference multiplies in float64 like ResizeLongestSide does, a difference of ~1 ulp of the coordinate).

The launch runs under the batch's CUDA device (``samr1.kernels.launch_guard``). Do not call this
directly: use ``samr1.ops.pack_prompts(sam, batch, backend="triton")``, which validates the batch. Runs on CUDA tensors, or on CPU tensors when TRITON_INTERPRET=1 was set before this
module was imported (the test suite does that in a subprocess).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from samr1.kernels import launch_guard

__all__ = ["prompt_pack_triton"]


@triton.jit
def _prompt_pack_kernel(
    points_ptr,  # (N, K, 2) float32, original pixels
    labels_ptr,  # (N, K) int64, 1 fg / 0 bg / -1 padding (trailing)
    boxes_ptr,  # (N, 4) float32, XYXY original pixels
    has_box_ptr,  # (N,) int32
    img_ptr,  # (N,) int64
    scale_ptr,  # (B, 2) float32 (sx, sy): original -> frame pixels
    gauss_ptr,  # (2, D/2) float32
    emb_ptr,  # (5, D) float32: bg, fg, corner 1, corner 2, not-a-point
    out_ptr,  # (N, T, D) float32
    counts_ptr,  # (N,) int64
    K,
    T,
    H_IN,
    W_IN,
    D_HALF: tl.constexpr,
    BLOCK_F: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    n = tl.program_id(0).to(tl.int64)
    offs_k = tl.arange(0, BLOCK_K)
    lab_row = tl.load(labels_ptr + n * K + offs_k, mask=offs_k < K, other=-1)
    npts = tl.sum((lab_row >= 0).to(tl.int32), axis=0)
    hb = tl.load(has_box_ptr + n)
    count = npts + tl.where(hb != 0, 2, 1)
    tl.store(counts_ptr + n, count.to(tl.int64))

    img = tl.load(img_ptr + n)
    sx = tl.load(scale_ptr + img * 2)
    sy = tl.load(scale_ptr + img * 2 + 1)

    f = tl.arange(0, BLOCK_F)
    fmask = f < D_HALF
    g0 = tl.load(gauss_ptr + f, mask=fmask, other=0.0)
    g1 = tl.load(gauss_ptr + D_HALF + f, mask=fmask, other=0.0)
    bx1 = tl.load(boxes_ptr + n * 4)
    by1 = tl.load(boxes_ptr + n * 4 + 1)
    bx2 = tl.load(boxes_ptr + n * 4 + 2)
    by2 = tl.load(boxes_ptr + n * 4 + 3)
    two_pi = 2.0 * 3.141592653589793
    D = 2 * D_HALF

    for t in range(0, T):
        is_pt = t < npts
        is_c1 = (hb != 0) & (t == npts)
        is_c2 = (hb != 0) & (t == npts + 1)
        is_pad = (hb == 0) & (t == npts)
        valid = t < count
        # Clamp the point index so the (unused) load of a non-point slot stays inside the row.
        tp = tl.minimum(t, K - 1)
        px = tl.load(points_ptr + (n * K + tp) * 2)
        py = tl.load(points_ptr + (n * K + tp) * 2 + 1)
        plab = tl.load(labels_ptr + n * K + tp)
        x = tl.where(is_pt, px, tl.where(is_c1, bx1, bx2))
        y = tl.where(is_pt, py, tl.where(is_c1, by1, by2))
        # Same op order as the reference: frame coords, +0.5 pixel centre, / frame, 2c - 1, @ G, * 2 pi.
        x = x * sx + 0.5
        y = y * sy + 0.5
        u = 2.0 * (x / W_IN) - 1.0
        v = 2.0 * (y / H_IN) - 1.0
        ang = two_pi * (u * g0 + v * g1)
        pe_on = tl.where(is_pad, 0.0, 1.0)
        row = tl.where(is_pt, plab, tl.where(is_c1, 2, tl.where(is_c2, 3, 4)))
        row = tl.where(valid, row, 4)  # any in-bounds row; the slot is written as zeros below
        e_lo = tl.load(emb_ptr + row * D + f, mask=fmask, other=0.0)
        e_hi = tl.load(emb_ptr + row * D + D_HALF + f, mask=fmask, other=0.0)
        lo = tl.where(valid, tl.sin(ang) * pe_on + e_lo, 0.0)
        hi = tl.where(valid, tl.cos(ang) * pe_on + e_hi, 0.0)
        base = out_ptr + (n * T + t) * D
        tl.store(base + f, lo, mask=fmask)
        tl.store(base + D_HALF + f, hi, mask=fmask)


def prompt_pack_triton(points: torch.Tensor, point_labels: torch.Tensor, boxes: torch.Tensor, has_box: torch.Tensor,
                       image_index: torch.Tensor, scale: torch.Tensor, gauss: torch.Tensor, label_embed: torch.Tensor,
                       input_size: tuple[int, int], num_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Launch the packing kernel once for the whole (already validated) batch.

    Args:
        points (N, K, 2) float32, point_labels (N, K) int, boxes (N, 4) float32, has_box (N,) bool,
            image_index (N,) int: a ``samr1.sam.prompts.PromptBatch``'s tensors (ORIGINAL pixels), on the
            kernel's device.
        scale: (B, 2) original -> frame scales (sx, sy); read as float32.
        gauss: (2, D/2) float32 Fourier matrix. label_embed: (5, D) float32 (see ``prompt_tables``).
        input_size: (H_in, W_in) the PE normalises by.
        num_tokens: T, the largest token count of the batch (sizes the output; read on the host by the op).

    Returns:
        tokens (N, T, D) float32 and counts (N,) int64, like ``samr1.ops.pack_prompts_reference``.
    """
    dev = label_embed.device
    n, k = point_labels.shape
    d = label_embed.shape[1]
    if d % 2:
        raise ValueError(f"prompt embedding dim must be even (sin/cos halves), got {d}")
    t = int(num_tokens)
    tokens = torch.empty((n, t, d), dtype=torch.float32, device=dev)
    counts = torch.empty((n,), dtype=torch.int64, device=dev)
    if n == 0:
        return tokens, counts
    with launch_guard(dev):  # Triton launches on the current CUDA device, not the tensors'
        _prompt_pack_kernel[(n,)](
            points.contiguous(),
            point_labels.to(torch.int64).contiguous(),
            boxes.contiguous(),
            has_box.to(torch.int32).contiguous(),
            image_index.to(torch.int64).contiguous(),
            scale.to(device=dev, dtype=torch.float32).contiguous(),
            gauss.contiguous(),
            label_embed.contiguous(),
            tokens,
            counts,
            k,
            t,
            float(input_size[0]),
            float(input_size[1]),
            D_HALF=d // 2,
            BLOCK_F=triton.next_power_of_2(d // 2),
            BLOCK_K=triton.next_power_of_2(max(k, 1)),
        )
    return tokens, counts
