"""Fused logits -> mask -> IoU under SAM 2's postprocessing (``sam2.utils.transforms.SAM2Transforms``).

SAM 2 resizes the image to its square ``frame x frame`` input WITHOUT keeping the aspect ratio (no
padding), so its low-res logits (N x h x w, 256 x 256 upstream) cover the whole image and go to the
original size H x W in ONE bilinear resize (``align_corners=False``); the mask is ``resized > threshold``
(``mask_threshold`` 0.0). SAM v1's two-step rule (pad crop + second resize) is
:func:`samr1.ops.mask_iou_from_logits`; this file is the SAM 2 mode.

The fast path never materialises N x H x W: a bilinear resize is separable, two taps per output row and
column (:func:`resize_matrix` is the same map as a matrix), so the logits are first resized along x
(N x h x W) and then blocks of output rows are produced, thresholded and counted against the ground truth.
The sums may round differently from ``F.interpolate``'s (measured: equal bits on the CPU), so a pixel whose reference value lies within
:func:`samr1.ops.mask_iou.near_threshold_eps` of the threshold may fall on the other side; every other
pixel is counted exactly as the reference counts it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from samr1.ops.mask_iou import counts_to_iou, near_threshold_eps

__all__ = ["postprocess_sam2_reference", "mask_iou_sam2_reference", "mask_iou_sam2", "near_threshold_pixels_sam2",
           "resize_matrix"]

# Output rows per block of the fast path: bounds the transient N x rows x W buffer (64 rows of a 640-wide
# image for 8 prompts is 1.3 MB) while keeping each matmul large enough to run at full speed.
_ROW_BLOCK = 64


def _size(v, name: str) -> tuple[int, int]:
    try:
        h, w = (int(x) for x in v)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be (H, W) ints, got {v!r}") from None
    if h <= 0 or w <= 0:
        raise ValueError(f"{name} must be positive (H, W), got {(h, w)}")
    return h, w


def _check(logits: torch.Tensor, gt: torch.Tensor, threshold) -> float:
    if not isinstance(logits, torch.Tensor) or logits.dim() != 3 or not logits.is_floating_point():
        raise ValueError(f"logits must be a float N x h x w tensor (low-res SAM 2 masks), got "
                         f"{getattr(logits, 'dtype', type(logits).__name__)} {tuple(getattr(logits, 'shape', ()))}")
    if not isinstance(gt, torch.Tensor) or gt.dim() != 2:
        raise ValueError(f"gt must be an H x W tensor at the original image size, got {tuple(getattr(gt, 'shape', ()))}")
    if gt.device != logits.device:
        raise ValueError(f"gt is on {gt.device} but logits are on {logits.device}; move both to one device")
    try:
        thr = float(threshold)
    except (TypeError, ValueError):
        raise ValueError(f"threshold must be a float (SAM 2's mask_threshold is 0.0), got {threshold!r}") from None
    if thr != thr:
        raise ValueError("threshold must not be NaN")
    return thr


def postprocess_sam2_reference(logits: torch.Tensor, original_size: Sequence[int]) -> torch.Tensor:
    """SAM 2's postprocess (the reference): N x h x w logits -> N x H x W float32 logits at the original
    size, one bilinear resize with ``align_corners=False`` (``SAM2Transforms.postprocess_masks`` without
    hole filling, which is off by default)."""
    h, w = _size(original_size, "original_size")
    return F.interpolate(logits.float()[:, None], (h, w), mode="bilinear", align_corners=False)[:, 0]


def mask_iou_sam2_reference(logits: torch.Tensor, gt: torch.Tensor,
                            threshold: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The one torch reference: ``(iou, intersection, union)`` (N float32, N int64, N int64) of
    ``postprocess_sam2_reference(logits, gt.shape) > threshold`` against the H x W mask ``gt``."""
    thr = _check(logits, gt, threshold)
    mask = postprocess_sam2_reference(logits, gt.shape) > thr
    g = gt.bool()[None]
    inter = (mask & g).flatten(1).sum(1)
    union = (mask | g).flatten(1).sum(1)
    return counts_to_iou(inter, union), inter, union


def near_threshold_pixels_sam2(logits: torch.Tensor, original_size: Sequence[int], threshold: float = 0.0) -> torch.Tensor:
    """N x H x W bool: pixels whose reference value is within :func:`near_threshold_eps` of ``threshold``,
    the only pixels where :func:`mask_iou_sam2` may count differently. Materialises the reference (tests)."""
    post = postprocess_sam2_reference(logits, original_size)
    eps = near_threshold_eps(logits).to(post.device)[:, None, None]
    return (post - float(threshold)).abs() <= eps


def resize_matrix(in_size: int, out_size: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """out_size x in_size float32 matrix of a 1-D bilinear resize with ``align_corners=False``, as
    ``F.interpolate`` computes it: source = (dst + 0.5) * in/out - 0.5, clamped at 0; two taps per row."""
    scale = in_size / out_size
    dst = torch.arange(out_size, dtype=torch.float64)
    src = ((dst + 0.5) * scale - 0.5).clamp_min(0.0)
    i0 = src.floor().long().clamp_max(in_size - 1)
    i1 = (i0 + 1).clamp_max(in_size - 1)
    l1 = src - i0.double()
    m = torch.zeros(out_size, in_size, dtype=torch.float64)
    rows = torch.arange(out_size)
    m.index_put_((rows, i0), 1.0 - l1, accumulate=True)
    m.index_put_((rows, i1), l1, accumulate=True)
    return m.to(device=device, dtype=torch.float32)


def _taps(in_size: int, out_size: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """(i0, i1, w0, w1) of a 1-D bilinear resize (``align_corners=False``), float32 like torch's kernel:
    source = (dst + 0.5) * in/out - 0.5 clamped at 0, i1 = min(i0 + 1, in - 1), w1 = source - i0."""
    scale = torch.tensor(in_size / out_size, dtype=torch.float32)
    src = ((torch.arange(out_size, dtype=torch.float32) + 0.5) * scale - 0.5).clamp_min(0.0)
    i0 = src.long().clamp_max(in_size - 1)
    i1 = (i0 + 1).clamp_max(in_size - 1)
    w1 = src - i0.float()
    w0 = 1.0 - w1
    return i0.to(device), i1.to(device), w0.to(device), w1.to(device)


def mask_iou_sam2(logits: torch.Tensor, gt: torch.Tensor, threshold: float = 0.0,
                  backend: str = "auto") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(iou, intersection, union)`` of SAM 2's mask (one bilinear resize to the original size, then
    ``> threshold``) for N x h x w float logits against one H x W ground truth, without materialising the
    N x H x W masks.

    Args:
        logits: N x h x w float low-res logits (256 x 256 upstream), one row per prompt, all of one image.
        gt: H x W bool/uint8 mask at the original image size, on the logits' device.
        threshold: mask logit threshold (SAM 2's ``mask_threshold`` is 0.0).
        backend: "torch" (the reference, materialises N x H x W), "fused" (separable row blocks) or
            "auto" (= "fused"; there is no C++ / Triton body for this mode yet).

    IoU of two empty masks is 1.0. Counts equal the reference's except at pixels within
    :func:`samr1.ops.mask_iou.near_threshold_eps` of the threshold.
    """
    if backend in ("cpp", "triton"):
        raise RuntimeError(f"backend {backend!r} has no body for the SAM 2 mode yet; use backend='auto' (torch row "
                           "blocks, any device) or 'torch' (the reference)")
    if backend not in ("auto", "torch", "fused"):
        raise ValueError(f"backend must be 'auto', 'torch' or 'fused' for the SAM 2 mode, got {backend!r}")
    if backend == "torch":
        return mask_iou_sam2_reference(logits, gt, threshold)
    thr = _check(logits, gt, threshold)
    n, h, w = logits.shape
    big_h, big_w = gt.shape
    dev = logits.device
    x0, x1, wx0, wx1 = _taps(w, big_w, dev)
    y0, y1, wy0, wy1 = _taps(h, big_h, dev)
    lf = logits.float()
    # x first, then y, two taps each: the order of upsample_bilinear2d's own sums, so only rounding differs
    along_x = lf.index_select(2, x0) * wx0 + lf.index_select(2, x1) * wx1  # N x h x W
    g = gt.bool()
    inter = torch.zeros(n, dtype=torch.int64, device=dev)
    g_count = torch.zeros((), dtype=torch.int64, device=dev)
    pred_count = torch.zeros(n, dtype=torch.int64, device=dev)
    for r0 in range(0, big_h, _ROW_BLOCK):
        r1 = min(big_h, r0 + _ROW_BLOCK)
        block = (along_x.index_select(1, y0[r0:r1]) * wy0[r0:r1, None]
                 + along_x.index_select(1, y1[r0:r1]) * wy1[r0:r1, None]) > thr  # N x rows x W
        gb = g[r0:r1]
        inter += (block & gb).flatten(1).sum(1)
        pred_count += block.flatten(1).sum(1)
        g_count += gb.sum()
    union = pred_count + g_count - inter
    return counts_to_iou(inter, union), inter, union
