"""Fused logits -> mask -> IoU under SAM 2's postprocessing (``sam2.utils.transforms.SAM2Transforms``).

SAM 2 resizes the image to its square ``frame x frame`` input WITHOUT keeping the aspect ratio (no
padding), so its low-res logits (N x h x w, 256 x 256 upstream) cover the whole image and go to the
original size H x W in ONE bilinear resize (``align_corners=False``); the mask is ``resized > threshold``
(``mask_threshold`` 0.0). SAM v1's two-step rule (pad crop + second resize) is
:func:`samr1.ops.mask_iou_from_logits`; this file is the SAM 2 mode (``mask_iou_from_logits(...,
resize="sam2")`` routes here).

A bilinear resize is separable, two taps per output row and column (:func:`resize_matrix` is the same map
as a matrix), so no body but the reference materialises N x H x W: each resizes the logits along x and then
produces, thresholds and counts blocks of output rows. The taps come from one table per image,
:func:`sam2_plan` (aten's own index and weight arithmetic, ``samr1.ops.mask_iou.axis_table``; cached), and
every body sums ``l[y][x0] * wx0 + l[y][x1] * wx1`` first, then ``a[y0] * wy0 + a[y1] * wy1``, aten's order.

Backends (``backend=``):

* ``"torch"`` -- :func:`mask_iou_sam2_reference`, THE reference (``F.interpolate`` as SAM 2 calls it;
  materialises N x H x W).
* ``"fused"`` -- the torch row-block path (any device): x-resized N x h x W, then 64-row blocks.
* ``"cpp"`` -- ``samr1._C.mask_iou_sam2_counts`` (csrc/mask_iou_sam2.cpp): OpenMP over (mask, row block),
  two x-resized rows in flight per thread. CPU tensors; threads from
  :func:`samr1.ops.backends.cpp_threads`.
* ``"triton"`` -- :mod:`samr1.kernels.mask_iou_sam2`: one launch per (grouped) call. CUDA tensors, or CPU
  tensors under ``TRITON_INTERPRET=1`` (tests).
* ``"auto"`` -- :func:`samr1.ops.backends.resolve`'s rule with both fast bodies: Triton on CUDA, C++ on
  CPU; where neither can run, ``"fused"`` (not the reference). C++ rather than the torch row blocks on the
  CPU because it measured 14-51x faster there, one thread each (``_AUTO_BODIES`` has the numbers).

What ran is recorded with :func:`samr1.ops.backends.record` under the op name ``"mask_iou_sam2"``
("torch" for both torch bodies): ``backends.last("mask_iou_sam2")``.

**Contract of the fast paths** (the same as SAM v1's, :mod:`samr1.ops.mask_iou`): their mask equals the
reference's at every pixel whose reference value ``v`` has ``|v - threshold| > eps``,
``eps = NEAR_THRESHOLD_RTOL * max(1, max |logits of that mask|)`` (:func:`near_threshold_eps`); pixels
within eps (:func:`near_threshold_pixels_sam2`) may land on either side. How close they are in practice
(AVX2 CPU, torch 2.14): the C++ body computes the two-tap sums with fma like torch's AVX2/AVX-512 kernel and
equals ``F.interpolate`` bit for bit for 256 x 256 logits at 480 x 640, 1080 x 1920, 97 x 131, 257 x 3
(aten takes another code path for small logits, e.g. 17 x 11: 1-ulp differences); the torch row-block
path rounds each product separately (max difference 4e-6 at logits ~ N(0, 10), 1% of eps); Triton uses
fma like torch's CUDA kernel. Tables with the float32 source index ``(dst + 0.5) * scale - 0.5`` rounded
twice instead of aten's (fma) arithmetic were measured 100x worse (3.7e-4, beyond eps for rough logits),
which is why every body shares :func:`sam2_plan`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from samr1.ops import backends
from samr1.ops.mask_iou import axis_table, counts_to_iou, near_threshold_eps, torch_cpu_fuses

__all__ = ["BACKENDS", "postprocess_sam2_reference", "mask_iou_sam2_reference", "mask_iou_sam2",
           "mask_iou_sam2_grouped", "near_threshold_pixels_sam2", "resize_matrix", "sam2_plan",
           "select_backend_sam2"]

OP = "mask_iou_sam2"
BACKENDS = ("auto", "torch", "fused", "cpp", "triton")

# The fast bodies this op has (for explicit backends) and those "auto" may pick: both. On the CPU, C++ beats
# the torch row blocks everywhere measured (`OMP_NUM_THREADS=1 python -m samr1.bench.bench_mask_iou --resize
# sam2 --quick`, AVX2 2-core box at load 4-6, 256 x 256 logits, process CPU time per call, two runs): 480 x 640
# N=8 1.3-1.7 vs 24-36 ms (14-28x), N=32 5.8-6.2 vs 160-226 ms (28-37x); 1080 x 1920 N=8 4.8-7.3 vs 177-244 ms
# (24-51x), N=32 18-25 vs 923-1162 ms (47-51x). (The row blocks ran at 0.7-2.3x the reference's speed.) If a
# body ever lost, "auto" would drop it here while explicit requests keep working.
_BODIES = ("cpp", "triton")
_AUTO_BODIES = ("cpp", "triton")

# Output rows per block of the torch row-block path: bounds the transient N x rows x W buffer (64 rows of a
# 640-wide image for 8 prompts is 1.3 MB) while keeping each op large enough to run at full speed.
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
    if logits.shape[1] == 0 or logits.shape[2] == 0 or gt.shape[0] == 0 or gt.shape[1] == 0:
        raise ValueError(f"logits (N x h x w) and gt (H x W) need h, w, H, W > 0, got logits {tuple(logits.shape)} and "
                         f"gt {tuple(gt.shape)}")
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


@functools.lru_cache(maxsize=256)
def sam2_plan(low_res: tuple[int, int], original_size: tuple[int, int], fused: bool) -> tuple[np.ndarray, np.ndarray]:
    """Two-tap tables of one (low-res h x w, original H x W): (idx int32, wts float32), read-only, cached.
    Layout (csrc/mask_iou_sam2.h, kernels/mask_iou_sam2.py)::

        idx = [y0 (H), y1 (H), x0 (W), x1 (W)]      wts = [wy0 (H), wy1 (H), wx0 (W), wx1 (W)]

    Output pixel (Y, X) = a[y0][X] * wy0 + a[y1][X] * wy1 with a[y][X] = l[y][x0] * wx0 + l[y][x1] * wx1.
    Indices and weights are aten's (:func:`samr1.ops.mask_iou.axis_table`; ``fused``: the source index
    computed with fma, as torch's AVX2/AVX-512 CPU build and its CUDA kernel compute it).
    """
    (h, w), (big_h, big_w) = low_res, original_size
    ry, rx = axis_table(h, big_h, fused), axis_table(w, big_w, fused)
    idx = np.concatenate([ry[0], ry[1], rx[0], rx[1]]).astype(np.int32)
    wts = np.concatenate([ry[2], ry[3], rx[2], rx[3]]).astype(np.float32)
    idx.setflags(write=False)
    wts.setflags(write=False)
    return idx, wts


def _fused_tables(device: torch.device) -> bool:
    """Whether the tables should use the fma source index: what torch's own kernel does on ``device``."""
    return True if device.type == "cuda" else torch_cpu_fuses()


# ----------------------------------------------------------------------------- backend selection
def select_backend_sam2(backend: str, device: torch.device | str) -> str:
    """The body a call with ``backend`` on tensors of ``device`` runs: "torch" (the reference), "fused"
    (torch row blocks), "cpp" or "triton", without running it. "auto" follows
    :func:`samr1.ops.backends.resolve` with this op's auto bodies and takes "fused" where that says
    torch; explicit "cpp" / "triton" raise as ``resolve`` does when they cannot run (RuntimeError:
    unusable, with how to get it; ValueError: wrong device)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS} for the SAM 2 mode, got {backend!r}")
    if backend in ("torch", "fused"):
        return backend
    if backend == "auto":
        chosen = backends.resolve(OP, "auto", device, _AUTO_BODIES)
        return "fused" if chosen == "torch" else chosen
    return backends.resolve(OP, backend, device, _BODIES)


# ----------------------------------------------------------------------------- bodies
# Each takes validated inputs (float32 contiguous N x h x w logits, bool/uint8 ground truths on the
# logits' device, image_index None or int64 (N,)) and returns (intersection, union) int64 (N,).
def _counts_reference(logits, gts, image_index, threshold):
    if image_index is None:
        _, i, u = mask_iou_sam2_reference(logits, gts[0], threshold)
        return i, u
    inter = torch.zeros(logits.shape[0], dtype=torch.int64, device=logits.device)
    union = torch.zeros_like(inter)
    for b, g in enumerate(gts):
        rows = (image_index == b).nonzero().flatten()
        if rows.numel():
            _, inter[rows], union[rows] = mask_iou_sam2_reference(logits[rows], g, threshold)
    return inter, union


def _counts_fused_one(logits, gt, threshold):
    """The torch row-block body for one image: N x h x W along x, then blocks of output rows."""
    n, h, w = logits.shape
    big_h, big_w = gt.shape
    dev = logits.device
    idx, wts = sam2_plan((h, w), (big_h, big_w), _fused_tables(dev))
    idx = torch.from_numpy(idx.astype(np.int64)).to(dev)
    wts = torch.from_numpy(wts.copy()).to(dev)
    y0, y1, x0, x1 = idx.split([big_h, big_h, big_w, big_w])
    wy0, wy1, wx0, wx1 = wts.split([big_h, big_h, big_w, big_w])
    # x first, then y, two taps each: aten's order; each product is rounded (no fma), the only difference
    along_x = logits.index_select(2, x0) * wx0 + logits.index_select(2, x1) * wx1  # N x h x W
    g = gt.bool()
    inter = torch.zeros(n, dtype=torch.int64, device=dev)
    pred_count = torch.zeros(n, dtype=torch.int64, device=dev)
    for r0 in range(0, big_h, _ROW_BLOCK):
        r1 = min(big_h, r0 + _ROW_BLOCK)
        block = (along_x.index_select(1, y0[r0:r1]) * wy0[r0:r1, None]
                 + along_x.index_select(1, y1[r0:r1]) * wy1[r0:r1, None]) > threshold  # N x rows x W
        inter += (block & g[r0:r1]).flatten(1).sum(1)
        pred_count += block.flatten(1).sum(1)
    return inter, pred_count + g.sum() - inter


def _counts_fused(logits, gts, image_index, threshold):
    if image_index is None:
        return _counts_fused_one(logits, gts[0], threshold)
    inter = torch.zeros(logits.shape[0], dtype=torch.int64, device=logits.device)
    union = torch.zeros_like(inter)
    for b, g in enumerate(gts):
        rows = (image_index == b).nonzero().flatten()
        if rows.numel():
            inter[rows], union[rows] = _counts_fused_one(logits[rows], g, threshold)
    return inter, union


def _u8(gt: torch.Tensor) -> torch.Tensor:
    g = gt.contiguous()
    return g.view(torch.uint8) if g.dtype == torch.bool else (g != 0).view(torch.uint8)


def _counts_cpp(logits, gts, image_index, threshold):
    C = backends.cpp_module()
    # fma arithmetic where torch's CPU kernel has it (then the values are torch's, see the module docstring)
    fused = torch_cpu_fuses() and C.mask_iou_fma_supported()
    low_res = (int(logits.shape[1]), int(logits.shape[2]))
    plans = [(*sam2_plan(low_res, tuple(g.shape), fused), _u8(g).numpy()) for g in gts]
    ii = np.empty(0, np.int64) if image_index is None else image_index.contiguous().numpy()
    inter, union = C.mask_iou_sam2_counts(logits.numpy(), ii, plans, threshold, fused, backends.cpp_threads())
    return torch.from_numpy(inter), torch.from_numpy(union)


@functools.lru_cache(maxsize=64)
def _device_plans(low_res: tuple[int, int], sizes: tuple[tuple[int, int], ...], fused: bool,
                  device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Concatenated tables of several images on ``device`` + per-image metadata (int64 B x 5: H, W, plan
    offset, offset in the concatenated ground truths, 0) + max H. Shapes only, so cached by them."""
    idxs, wtss, meta = [], [], []
    po = go = 0
    for big_h, big_w in sizes:
        idx, wts = sam2_plan(low_res, (big_h, big_w), fused)
        meta.append([big_h, big_w, po, go, 0])
        idxs.append(idx)
        wtss.append(wts)
        po += idx.size
        go += big_h * big_w
    return (torch.from_numpy(np.concatenate(idxs)).to(device), torch.from_numpy(np.concatenate(wtss)).to(device),
            torch.tensor(meta, dtype=torch.int64).to(device), max(hw[0] for hw in sizes))


def _counts_triton(logits, gts, image_index, threshold):
    from samr1.kernels.mask_iou_sam2 import mask_iou_sam2_counts_triton

    low_res = (int(logits.shape[1]), int(logits.shape[2]))
    sizes = tuple((int(g.shape[0]), int(g.shape[1])) for g in gts)
    idx, wts, meta, max_h = _device_plans(low_res, sizes, _fused_tables(logits.device), logits.device)
    # one flat uint8 buffer of the ground truths (a copy for B > 1: H*W bytes each, cheap next to the kernel)
    gt_flat = _u8(gts[0]).reshape(-1) if len(gts) == 1 else torch.cat([_u8(g).reshape(-1) for g in gts])
    if image_index is None:
        img = torch.zeros(logits.shape[0], dtype=torch.int32, device=logits.device)
    else:
        img = image_index.to(torch.int32)
    return mask_iou_sam2_counts_triton(logits, gt_flat, img, idx, wts, meta, max_h, threshold)


_COUNTERS = {"torch": _counts_reference, "fused": _counts_fused, "cpp": _counts_cpp, "triton": _counts_triton}


def _run(logits, gts, image_index, threshold, backend):
    chosen = select_backend_sam2(backend, logits.device)
    logits = logits.detach().to(torch.float32).contiguous()
    if logits.shape[0] == 0:
        inter = torch.zeros(0, dtype=torch.int64, device=logits.device)
        union = inter.clone()
    else:
        inter, union = _COUNTERS[chosen](logits, [g.detach() for g in gts], image_index, threshold)
    backends.record(OP, "torch" if chosen == "fused" else chosen)
    inter, union = inter.to(logits.device), union.to(logits.device)
    return counts_to_iou(inter, union), inter, union


# ----------------------------------------------------------------------------- public API
def mask_iou_sam2(logits: torch.Tensor, gt: torch.Tensor, threshold: float = 0.0,
                  backend: str = "auto") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(iou, intersection, union)`` of SAM 2's mask (one bilinear resize to the original size, then
    ``> threshold``) for N x h x w float logits against one H x W ground truth, without materialising the
    N x H x W masks (except backend "torch", the reference).

    Args:
        logits: N x h x w float low-res logits (256 x 256 upstream), one row per prompt, all of one image
            (computed in float32).
        gt: H x W bool/uint8 mask (nonzero = object) at the original image size, on the logits' device.
        threshold: mask logit threshold (SAM 2's ``mask_threshold`` is 0.0).
        backend: "auto", "torch" (the reference), "fused" (torch row blocks), "cpp" (CPU tensors) or
            "triton" (CUDA tensors); see the module docstring.

    Returns:
        (iou float32 (N,), intersection int64 (N,), union int64 (N,)) on the logits' device. IoU of two
        empty masks is 1.0. Counts equal the reference's except at pixels within
        :func:`samr1.ops.mask_iou.near_threshold_eps` of the threshold.
    """
    thr = _check(logits, gt, threshold)
    return _run(logits, [gt], None, thr, backend)


def mask_iou_sam2_grouped(logits: torch.Tensor, gts: Sequence[torch.Tensor], image_index: torch.Tensor,
                          threshold: float = 0.0, backend: str = "auto"
                          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`mask_iou_sam2` for a whole rollout step: several images in one call (one OpenMP loop in C++,
    one launch in Triton).

    Args:
        logits: N x h x w float low-res logits over all prompts of the step.
        gts: B ground-truth masks (H_b x W_b bool/uint8, sizes may differ), on the logits' device.
        image_index: (N,) integer tensor; row i is scored against ``gts[image_index[i]]``.
        threshold, backend: as in :func:`mask_iou_sam2`.

    Returns:
        (iou float32 (N,), intersection int64 (N,), union int64 (N,)), rows in the order of ``logits``.
    """
    gts = list(gts)
    if not gts:
        raise ValueError("gts must hold at least one ground-truth mask (one per image)")
    thr = 0.0
    for b, g in enumerate(gts):
        try:
            thr = _check(logits, g, threshold)
        except ValueError as exc:
            raise ValueError(f"[image {b}] {exc}") from None
    if not isinstance(image_index, torch.Tensor) or image_index.dim() != 1 or image_index.shape[0] != logits.shape[0]:
        raise ValueError(f"image_index must be an integer tensor of shape ({logits.shape[0]},) (one entry per logits "
                         f"row), got {tuple(getattr(image_index, 'shape', ())) or type(image_index).__name__}")
    if image_index.is_floating_point() or image_index.is_complex() or image_index.dtype == torch.bool:
        raise ValueError(f"image_index must be an integer tensor, got {image_index.dtype}")
    idx = image_index.to(device=logits.device, dtype=torch.int64)
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= len(gts)):
        raise ValueError(f"image_index values must be in [0, {len(gts)}) (one per gt mask), got range "
                         f"[{int(idx.min())}, {int(idx.max())}]")
    return _run(logits, gts, idx, thr, backend)
