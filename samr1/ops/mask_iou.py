"""Fused SAM low-res logits -> mask -> IoU against a ground-truth mask.

The mask is segment_anything's ``Sam.postprocess_masks(logits, input_size, original_size) >
threshold`` (segment_anything/modeling/sam.py): bilinear (``align_corners=False``) upsample of the
h x w low-res logits to ``frame x frame`` (1024 for upstream SAM), crop to ``[:input_h, :input_w]``
(the image resized by ``ResizeLongestSide`` before padding), bilinear resize to the original
``H x W``, strict ``> threshold``. IoU = |pred AND gt| / |pred OR gt|, and 1.0 when both are empty.

Backends (``backend=``):

* ``"torch"`` -- :func:`mask_iou_reference`, THE reference (tests and benches import it); it
  materialises the frame and the full-resolution masks, with the same two ``F.interpolate`` calls as
  SAM, so its masks are SAM's bit for bit.
* ``"cpp"`` -- ``samr1._C.mask_iou_counts`` (csrc/mask_iou.cpp): OpenMP over (mask, row block),
  streams rows, never materialises a frame x frame or H x W mask. CPU tensors. One thread unless
  ``SAMR1_CPP_THREADS`` or ``OMP_WAIT_POLICY=passive`` allows more (``samr1.ops.backends.cpp_threads``:
  why, with the measurement).
* ``"triton"`` -- :mod:`samr1.kernels.mask_iou`: one launch for the whole (grouped) call. CUDA
  tensors, or CPU tensors under ``TRITON_INTERPRET=1`` (tests).
* ``"auto"`` -- Triton on CUDA tensors, C++ on CPU tensors, torch otherwise (or when the fast path is
  missing: a warning says so once; never the Triton interpreter). ``SAMR1_DISABLE_TRITON=1`` /
  ``SAMR1_DISABLE_CPP=1`` switch the fast paths off; an explicitly requested backend that is
  unavailable raises with how to get it. The rule is :mod:`samr1.ops.backends`' (every op shares it).

Which backend ran: :func:`last_backend` (the most recent call in this thread) and
:func:`select_backend` (what a call on a device would use, without running it) -- the engine puts
the former in its ``stats``.

**Contract of the fast paths.** Their mask equals the reference's at every pixel whose reference
postprocessed logit ``v`` satisfies ``|v - threshold| > eps``, with ``eps = NEAR_THRESHOLD_RTOL *
max(1, max |logits of that mask|)`` (:func:`near_threshold_eps`, 1e-5 relative); pixels within eps of
the threshold may land on either side, so counts may differ by at most the number of such pixels
(:func:`near_threshold_pixels`). They are not bit-identical in general: the fast paths interpolate
with small per-image index/weight tables (:func:`image_plan`, host side, cached) computed like aten's
CPU kernel (``area_pixel_compute_scale`` = in / out in float32, ``src = scale * (dst + 0.5) - 0.5``
clamped at 0, ``lambda = src - floor(src)``) and combine values in aten's order with fused
multiply-adds where torch's AVX2/AVX-512 build contracts them, but aten picks other code paths for
some shapes and CUDA's kernel orders its arithmetic its own way, so a value can differ by an ulp or
two. Example (AVX2 CPU, torch 2.14): constant logits 0.1, original size 20 x 30, threshold 0.1 --
torch upsamples 53 pixels to 0.1 + 2 ulp (mask on), the C++ kernel keeps them at 0.1 (mask off),
union 53 vs 0. On random SAM-like logits the counts usually agree exactly (bench/RESULTS.md). Tests
check the contract pixel by pixel.

The ops are registered with ``torch.library`` (``samr1::mask_iou``, ``samr1::mask_iou_grouped``)
with fake implementations, so they compose with ``torch.compile(fullgraph=True)``. Not
differentiable (the logits are detached).
"""

from __future__ import annotations

import functools
import math
import numbers
import platform
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from samr1.ops import backends

__all__ = [
    "BACKENDS",
    "NEAR_THRESHOLD_RTOL",
    "axis_table",
    "counts_to_iou",
    "image_plan",
    "last_backend",
    "mask_iou_from_logits",
    "mask_iou_grouped",
    "mask_iou_grouped_reference",
    "mask_iou_reference",
    "near_threshold_eps",
    "near_threshold_pixels",
    "postprocess_reference",
    "select_backend",
]

BACKENDS = backends.BACKENDS

# Relative width of the band around the threshold where the fast paths may disagree with the
# reference. A postprocessed value is a convex combination of 16 logits computed with ~8 roundings, so
# two evaluation orders differ by a few ulp of the largest |logit| (2^-24 relative each); 1e-5 leaves
# a margin of ~20x over that bound. Measured: 2 ulp (0.1 + 1.5e-8, constant logits 0.1).
NEAR_THRESHOLD_RTOL = 1e-5

# ----------------------------------------------------------------------------- the reference
def postprocess_reference(logits: torch.Tensor, input_size: Sequence[int], original_size: Sequence[int],
                          frame: int = 1024) -> torch.Tensor:
    """SAM's ``postprocess_masks`` for one image: N x h x w float32 logits -> N x H x W float32 logits.

    The same two ``F.interpolate`` calls as segment_anything (bilinear, ``align_corners=False``) on an
    N x 1 x h x w batch; ``input_size`` = (h, w) of the resized image inside the ``frame x frame`` model
    input, ``original_size`` = (H, W). Materialises everything: this is the reference, not the fast path.
    """
    x = F.interpolate(logits[:, None], (frame, frame), mode="bilinear", align_corners=False)
    x = x[..., : int(input_size[0]), : int(input_size[1])]
    x = F.interpolate(x, (int(original_size[0]), int(original_size[1])), mode="bilinear", align_corners=False)
    return x[:, 0]


def near_threshold_eps(logits: torch.Tensor) -> torch.Tensor:
    """Per-mask width of the near-threshold band of the fast-path contract: (N,) float32,
    ``NEAR_THRESHOLD_RTOL * max(1, max |logits[i]|)`` for N x h x w logits (non-finite logits ignored)."""
    a = logits.detach().abs().flatten(1)
    a = torch.where(torch.isfinite(a), a, torch.zeros_like(a))
    return (NEAR_THRESHOLD_RTOL * a.amax(dim=1).clamp_min(1.0)).to(torch.float32)


def near_threshold_pixels(logits: torch.Tensor, input_size: Sequence[int], original_size: Sequence[int],
                          threshold: float = 0.0, frame: int = 1024) -> torch.Tensor:
    """N x H x W bool: the pixels where a fast path's mask may differ from the reference's, i.e. whose
    reference postprocessed logit is within :func:`near_threshold_eps` of ``threshold``. Materialises the
    reference (tests and benches)."""
    post = postprocess_reference(logits, input_size, original_size, frame)
    eps = near_threshold_eps(logits).to(post.device)[:, None, None]
    return (post - threshold).abs() <= eps


def counts_to_iou(inter: torch.Tensor, union: torch.Tensor) -> torch.Tensor:
    """IoU (float32) from int64 counts; 1.0 where the union is empty (both masks empty). Every backend
    uses this, so equal counts give bit-equal IoU."""
    iou = inter.to(torch.float64) / union.clamp_min(1).to(torch.float64)
    return torch.where(union > 0, iou, torch.ones_like(iou)).to(torch.float32)


def mask_iou_reference(logits: torch.Tensor, gt: torch.Tensor, input_size: Sequence[int],
                       original_size: Sequence[int], threshold: float = 0.0,
                       frame: int = 1024) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """THE torch reference: ``(iou float32 (N,), intersection int64 (N,), union int64 (N,))`` of
    ``postprocess_reference(...) > threshold`` against ``gt`` (H x W, nonzero = object)."""
    pred = postprocess_reference(logits, input_size, original_size, frame) > threshold
    g = gt.to(torch.bool)[None]
    inter = (pred & g).sum(dim=(1, 2), dtype=torch.int64)
    union = (pred | g).sum(dim=(1, 2), dtype=torch.int64)
    return counts_to_iou(inter, union), inter, union


def mask_iou_grouped_reference(logits: torch.Tensor, gts: Sequence[torch.Tensor], image_index: torch.Tensor,
                               input_sizes: Sequence[Sequence[int]], original_sizes: Sequence[Sequence[int]],
                               threshold: float = 0.0, frame: int = 1024
                               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The grouped form by the per-image reference: row i uses ``gts[image_index[i]]`` and its sizes."""
    n = logits.shape[0]
    inter = torch.zeros(n, dtype=torch.int64, device=logits.device)
    union = torch.zeros(n, dtype=torch.int64, device=logits.device)
    idx = image_index.to(device=logits.device, dtype=torch.int64)
    for b in range(len(gts)):
        rows = (idx == b).nonzero().flatten()
        if rows.numel() == 0:
            continue
        _, i, u = mask_iou_reference(logits[rows], gts[b], input_sizes[b], original_sizes[b], threshold, frame)
        inter[rows] = i
        union[rows] = u
    return counts_to_iou(inter, union), inter, union


# ----------------------------------------------------------------------------- interpolation tables
def torch_cpu_fuses() -> bool:
    """Whether torch's CPU ``upsample_bilinear2d`` computes with fused multiply-adds here.

    aten's CPU kernels are compiled per capability; the AVX2/AVX-512 builds have FMA enabled and the
    compiler contracts ``t0 * w0 + t1 * w1`` (and the source-index arithmetic) into fma. Checked here
    on AVX-512: emulating fma reproduces torch bit for bit, plain float32 arithmetic differs in ~1/3
    of the values by 1 ulp. aarch64 has FMA in the base ISA, so GCC contracts there too.
    """
    machine = platform.machine().lower()
    if machine in ("aarch64", "arm64"):
        return True
    try:
        cap = torch.backends.cpu.get_cpu_capability()
    except Exception:  # noqa: BLE001 - very old torch: assume the plain build
        return False
    return cap in ("AVX2", "AVX512")


@functools.lru_cache(maxsize=512)
def axis_table(in_size: int, out_size: int, fused: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """aten's ``compute_source_index_and_lambda`` for one axis (bilinear, align_corners=False, no scale
    factor): (i0, i1 int64 (out,), w0, w1 float32 (out,)) with out[d] = in[i0] * w0 + in[i1] * w1."""
    if in_size == out_size:  # aten: "scale_factor = 1, simply copy"
        i = np.arange(out_size, dtype=np.int64)
        return i, i.copy(), np.ones(out_size, np.float32), np.zeros(out_size, np.float32)
    scale = np.float32(in_size) / np.float32(out_size)  # area_pixel_compute_scale<float>: in / out
    d = np.arange(out_size, dtype=np.float32) + np.float32(0.5)
    if fused:
        # fma(scale, d + 0.5, -0.5): the float64 product of two float32 is exact and so is the sum
        # (< 53 bits), so one rounding to float32 is exactly the fma's.
        src = (np.float64(scale) * d.astype(np.float64) - 0.5).astype(np.float32)
    else:
        src = scale * d - np.float32(0.5)
    src = np.maximum(src, np.float32(0.0))
    i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    w1 = np.clip(src - i0.astype(np.float32), np.float32(0.0), np.float32(1.0)).astype(np.float32)
    i1 = i0 + (i0 < in_size - 1)
    w0 = (np.float32(1.0) - w1).astype(np.float32)
    return i0, i1, w0, w1


@functools.lru_cache(maxsize=256)
def image_plan(low_res: tuple[int, int], input_size: tuple[int, int], original_size: tuple[int, int],
               frame: int, fused: bool) -> tuple[np.ndarray, np.ndarray]:
    """Index/weight tables of one (low-res h x w, input_size, original_size, frame): (idx int32, wts
    float32), read-only, cached. Layout (csrc/mask_iou.h, kernels/mask_iou.py)::

        idx = [r2_i0 (H), r2_i1 (H), r1_i0 (ih), r1_i1 (ih), ca0 (W), ca1 (W), cb0 (W), cb1 (W)]
        wts = [r2_w0 (H), r2_w1 (H), r1_w0 (ih), r1_w1 (ih), ua0, ua1, ub0, ub1, vx0, vx1 (W each)]

    r2: output row -> rows of the cropped frame (second resize); r1: frame row -> low-res rows (first
    resize); output column X reads frame columns c0(X), c1(X) with weights vx0, vx1, and
    (ca0, ca1, ua0, ua1) / (cb0, cb1, ub0, ub1) are the low-res columns and weights of c0(X) / c1(X).
    The column maps are composed here so that kernels gather only from a low-res row.
    """
    h, w = low_res
    ih, iw = input_size
    H, W = original_size
    r2 = axis_table(ih, H, fused)
    r1 = [a[:ih] for a in axis_table(h, frame, fused)]  # crop: frame rows >= ih are never read
    c2 = axis_table(iw, W, fused)
    c1 = axis_table(w, frame, fused)
    c0, cc1 = c2[0], c2[1]
    idx = np.concatenate([r2[0], r2[1], r1[0], r1[1], c1[0][c0], c1[1][c0], c1[0][cc1], c1[1][cc1]]).astype(np.int32)
    wts = np.concatenate([r2[2], r2[3], r1[2], r1[3], c1[2][c0], c1[3][c0], c1[2][cc1], c1[3][cc1],
                          c2[2], c2[3]]).astype(np.float32)
    idx.setflags(write=False)
    wts.setflags(write=False)
    return idx, wts


# ----------------------------------------------------------------------------- backend selection
_BODIES = ("cpp", "triton")


def select_backend(backend: str, device: torch.device | str) -> str:
    """The backend a call with ``backend`` on tensors of ``device`` uses: "torch", "cpp" or "triton",
    without running it (:func:`samr1.ops.backends.resolve` for this op: "auto" is Triton on CUDA, C++ on
    CPU, torch otherwise, never the Triton interpreter; an explicit backend that cannot run raises
    RuntimeError when unusable, with how to get it, or ValueError on the wrong device)."""
    return backends.resolve("mask_iou", backend, device, _BODIES)


def last_backend() -> str | None:
    """The backend ("torch" / "cpp" / "triton") that ran the most recent mask-IoU call of this thread
    (None before the first). Under torch.compile it is set when the compiled graph runs the op."""
    return backends.last("mask_iou")


# ----------------------------------------------------------------------------- validation
def _pair(v, name: str) -> tuple[int, int]:
    try:
        a, b = v
        a, b = int(a), int(b)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair of ints (h, w), got {v!r}") from None
    return a, b


def _check_threshold(threshold) -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real):
        raise TypeError(f"threshold must be a real number (float), got {type(threshold).__name__}")
    t = float(threshold)
    if not math.isfinite(t):
        raise ValueError(f"threshold must be finite, got {threshold!r}")
    return t


def _check_logits(logits) -> None:
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"logits must be a torch.Tensor (N x h x w float32), got {type(logits).__name__}")
    if logits.ndim != 3:
        raise ValueError(f"logits must be N x h x w (one low-res mask per prompt), got shape {tuple(logits.shape)}; "
                         "for SAM's B x C x h x w output select one mask per prompt or reshape to (B*C) x h x w")
    if logits.dtype != torch.float32:
        raise TypeError(f"logits must be float32, got {logits.dtype}; convert with .float()")
    if logits.shape[0] == 0 or logits.shape[1] == 0 or logits.shape[2] == 0:
        raise ValueError(f"logits must have N, h, w > 0, got shape {tuple(logits.shape)}")


def _check_image(gt, input_size, original_size, frame: int, device: torch.device, where: str
                 ) -> tuple[tuple[int, int], tuple[int, int]]:
    if not isinstance(gt, torch.Tensor):
        raise TypeError(f"{where}gt must be a torch.Tensor (H x W bool or uint8), got {type(gt).__name__}")
    if gt.ndim != 2:
        raise ValueError(f"{where}gt must be H x W, got shape {tuple(gt.shape)}")
    if gt.dtype not in (torch.bool, torch.uint8):
        raise TypeError(f"{where}gt must be bool or uint8 (nonzero = object), got {gt.dtype}")
    if gt.device != device:
        raise ValueError(f"{where}gt is on {gt.device} but logits are on {device}; put them on the same device")
    ih, iw = _pair(input_size, f"{where}input_size")
    H, W = _pair(original_size, f"{where}original_size")
    if H <= 0 or W <= 0:
        raise ValueError(f"{where}original_size must be positive, got {(H, W)}")
    if tuple(gt.shape) != (H, W):
        raise ValueError(f"{where}gt has shape {tuple(gt.shape)} but original_size is {(H, W)}; the ground truth "
                         "must be at the original image resolution")
    if not (0 < ih <= frame and 0 < iw <= frame):
        raise ValueError(f"{where}input_size {(ih, iw)} must be within (0, frame={frame}]: it is the image size after "
                         "ResizeLongestSide, before padding to the frame")
    from samr1.geometry import resize_longest_side

    want = resize_longest_side(H, W, frame)
    if (ih, iw) != want:  # swapped, or made for another frame: the crop would cut the wrong pixels
        raise ValueError(f"{where}input_size {(ih, iw)} is not the ResizeLongestSide size {want} of original_size "
                         f"{(H, W)} at frame={frame} (both are (H, W); is input_size swapped, or is frame not the "
                         "SAM's image_encoder.img_size?)")
    return (ih, iw), (H, W)


def _check_common(threshold, backend: str, frame) -> tuple[float, int]:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if isinstance(frame, bool) or not isinstance(frame, int) or frame <= 0:
        raise ValueError(f"frame must be a positive int (the model input size, 1024 for SAM), got {frame!r}")
    return _check_threshold(threshold), frame


# ----------------------------------------------------------------------------- backends
def _u8(gt: torch.Tensor) -> torch.Tensor:
    g = gt.contiguous()
    return g.view(torch.uint8) if g.dtype == torch.bool else g


def _counts_torch(logits, gts, image_index, input_sizes, threshold, frame):
    if image_index is None:
        _, i, u = mask_iou_reference(logits, gts[0], input_sizes[0], tuple(gts[0].shape), threshold, frame)
        return i, u
    _, i, u = mask_iou_grouped_reference(logits, gts, image_index, input_sizes, [tuple(g.shape) for g in gts],
                                         threshold, frame)
    return i, u


def _counts_cpp(logits, gts, image_index, input_sizes, threshold, frame):
    C = backends.cpp_module()
    fused = torch_cpu_fuses() and C.mask_iou_fma_supported()
    lowres = (int(logits.shape[1]), int(logits.shape[2]))
    plans = []
    for g, isz in zip(gts, input_sizes, strict=True):
        idx, wts = image_plan(lowres, tuple(isz), tuple(g.shape), frame, fused)
        plans.append((idx, wts, _u8(g).numpy(), int(isz[0])))
    ii = (np.empty(0, np.int64) if image_index is None
          else image_index.to(device="cpu", dtype=torch.int64).contiguous().numpy())
    # threads: 1 unless SAMR1_CPP_THREADS / OMP_WAIT_POLICY=passive say otherwise (samr1.ops.backends.cpp_threads)
    inter, union = C.mask_iou_counts(logits.contiguous().numpy(), ii, plans, threshold, fused, backends.cpp_threads())
    return torch.from_numpy(inter), torch.from_numpy(union)


@functools.lru_cache(maxsize=64)
def _device_plans(key: tuple, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Concatenated tables of several images on ``device`` + per-image metadata (int64 B x 8:
    H, W, ih, idx offset, wts offset, offset in the concatenated ground truths, 0, 0) + max H.
    Cached by the images' shape keys (everything here depends on shapes only)."""
    lowres, sizes, frame, fused = key
    idxs, wtss, meta = [], [], []
    io = wo = go = 0
    max_h = 0
    for isz, osz in sizes:
        idx, wts = image_plan(lowres, isz, osz, frame, fused)
        meta.append([osz[0], osz[1], isz[0], io, wo, go, 0, 0])
        idxs.append(idx)
        wtss.append(wts)
        io += idx.size
        wo += wts.size
        go += osz[0] * osz[1]
        max_h = max(max_h, osz[0])
    idx_t = torch.from_numpy(np.concatenate(idxs)).to(device)
    wts_t = torch.from_numpy(np.concatenate(wtss)).to(device)
    meta_t = torch.tensor(meta, dtype=torch.int64).to(device)
    return idx_t, wts_t, meta_t, max_h


def _counts_triton(logits, gts, image_index, input_sizes, threshold, frame):
    from samr1.kernels.mask_iou import mask_iou_counts_triton

    lowres = (int(logits.shape[1]), int(logits.shape[2]))
    # CUDA's upsample kernel computes its indices and lerps with (contracted) fma as well
    fused = True if logits.device.type == "cuda" else torch_cpu_fuses()
    shapes = tuple((tuple(int(v) for v in s), tuple(int(v) for v in g.shape))
                   for s, g in zip(input_sizes, gts, strict=True))
    key = (lowres, shapes, frame, fused)
    idx_t, wts_t, meta_t, max_h = _device_plans(key, logits.device)
    # ground truths: one flat uint8 buffer (for B > 1 a copy of B bool masks, i.e. H*W bytes each: cheap
    # next to the kernel, and simpler and interpreter-safe compared with a table of raw pointers)
    if len(gts) == 1:
        gt_flat = _u8(gts[0]).reshape(-1)
    else:
        gt_flat = torch.cat([_u8(g).reshape(-1) for g in gts])
    if image_index is None:
        img = torch.zeros(logits.shape[0], dtype=torch.int32, device=logits.device)
    else:
        img = image_index.to(device=logits.device, dtype=torch.int32)
    return mask_iou_counts_triton(logits.contiguous(), gt_flat, img, idx_t, wts_t, meta_t, max_h, threshold)


_COUNTERS = {"torch": _counts_torch, "cpp": _counts_cpp, "triton": _counts_triton}


def _run(logits, gts, image_index, input_sizes, threshold, frame, backend):
    chosen = select_backend(backend, logits.device)
    inter, union = _COUNTERS[chosen](logits, gts, image_index, input_sizes, threshold, frame)
    backends.record("mask_iou", chosen)
    inter = inter.to(logits.device)
    union = union.to(logits.device)
    return counts_to_iou(inter, union), inter, union


# ----------------------------------------------------------------------------- torch.library ops
@torch.library.custom_op("samr1::mask_iou", mutates_args=())
def _mask_iou_op(logits: torch.Tensor, gt: torch.Tensor, input_h: int, input_w: int, threshold: float,
                 frame: int, backend: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return _run(logits, [gt], None, [(input_h, input_w)], threshold, frame, backend)


@_mask_iou_op.register_fake
def _(logits, gt, input_h, input_w, threshold, frame, backend):
    n = logits.shape[0]
    return (logits.new_empty((n,), dtype=torch.float32), logits.new_empty((n,), dtype=torch.int64),
            logits.new_empty((n,), dtype=torch.int64))


@torch.library.custom_op("samr1::mask_iou_grouped", mutates_args=())
def _mask_iou_grouped_op(logits: torch.Tensor, gts: list[torch.Tensor], image_index: torch.Tensor,
                         input_sizes: list[int], threshold: float, frame: int, backend: str
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    n_img = len(gts)
    idx = image_index.to(torch.int64)
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n_img):
        raise ValueError(f"image_index values must be in [0, {n_img}) (one per gt mask), got range "
                         f"[{int(idx.min())}, {int(idx.max())}]")
    sizes = [(input_sizes[2 * b], input_sizes[2 * b + 1]) for b in range(n_img)]
    return _run(logits, list(gts), idx, sizes, threshold, frame, backend)


@_mask_iou_grouped_op.register_fake
def _(logits, gts, image_index, input_sizes, threshold, frame, backend):
    n = logits.shape[0]
    return (logits.new_empty((n,), dtype=torch.float32), logits.new_empty((n,), dtype=torch.int64),
            logits.new_empty((n,), dtype=torch.int64))


# ----------------------------------------------------------------------------- public API
def mask_iou_from_logits(logits: torch.Tensor, gt: torch.Tensor, input_size: Sequence[int],
                         original_size: Sequence[int], threshold: float = 0.0, backend: str = "auto",
                         frame: int = 1024, resize: str = "sam") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """IoU of SAM's postprocessed masks against one ground truth, without full-resolution masks.

    Args:
        logits: N x h x w float32, SAM's low-res mask logits (h = w = 256 upstream), one row per prompt.
        gt: H x W bool or uint8 (nonzero = object) at the ORIGINAL image resolution, same device.
        input_size: (h, w) of the image after ``ResizeLongestSide(frame)``, before padding
            (``ResizeLongestSide.get_preprocess_shape(H, W, frame)``).
        original_size: (H, W) of the original image; must equal ``gt.shape``.
        threshold: mask = postprocessed logit > threshold (strict; SAM's ``mask_threshold`` is 0.0).
        backend: "auto", "torch" (reference), "cpp" (CPU tensors) or "triton" (CUDA tensors).
        frame: the model's square input size (``sam.image_encoder.img_size``, 1024 upstream).
        resize: "sam" (SAM v1: upsample to the frame, crop ``input_size``, resize to the original) or "sam2"
            (SAM 2: the image was squashed to the square frame, so ONE bilinear resize of the logits to
            ``original_size``; ``input_size`` and ``frame`` are not used; :mod:`samr1.ops.mask_iou_sam2`,
            whose backends are these plus "fused", the torch row-block path).

    Returns:
        (iou float32 (N,), intersection int64 (N,), union int64 (N,)) on the logits' device; IoU of
        two empty masks is 1.0. :func:`last_backend` tells which backend ran. "torch" counts SAM's mask
        exactly; "cpp" / "triton" may differ from it only at pixels within :func:`near_threshold_eps`
        of the threshold (see the module docstring).

    Raises:
        TypeError / ValueError: malformed inputs (the message says which and how to fix it);
        RuntimeError: an explicitly requested backend is unavailable (with how to get it).
    """
    if resize == "sam2":
        from samr1.ops.mask_iou_sam2 import mask_iou_sam2

        if tuple(int(v) for v in original_size) != tuple(getattr(gt, "shape", ())):
            raise ValueError(f"original_size {tuple(original_size)} must equal gt.shape {tuple(getattr(gt, 'shape', ()))}")
        return mask_iou_sam2(logits.detach(), gt.detach(), threshold, backend)
    if resize != "sam":
        raise ValueError(f"resize must be 'sam' (SAM v1 postprocess) or 'sam2' (SAM 2's), got {resize!r}")
    _check_logits(logits)
    t, frame = _check_common(threshold, backend, frame)
    (ih, iw), _ = _check_image(gt, input_size, original_size, frame, logits.device, "")
    return torch.ops.samr1.mask_iou(logits.detach(), gt.detach(), ih, iw, t, frame, backend)


def mask_iou_grouped(logits: torch.Tensor, gts: Sequence[torch.Tensor], image_index: torch.Tensor,
                     input_sizes: Sequence[Sequence[int]], original_sizes: Sequence[Sequence[int]],
                     threshold: float = 0.0, backend: str = "auto", frame: int = 1024
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`mask_iou_from_logits` for a whole rollout step: several images in one call.

    Args:
        logits: N x h x w float32 over all prompts of the step.
        gts: B ground-truth masks (H_b x W_b bool/uint8, sizes may differ), on the logits' device.
        image_index: (N,) integer tensor, row i is scored against ``gts[image_index[i]]``.
        input_sizes, original_sizes: B pairs, per ground truth (``original_sizes[b] == gts[b].shape``).
        threshold, backend, frame: as in :func:`mask_iou_from_logits`.

    Returns:
        (iou float32 (N,), intersection int64 (N,), union int64 (N,)), rows in the order of ``logits``.
        The C++ backend does the whole step in one OpenMP loop over (mask, row block); Triton in one
        launch (per-image tables concatenated, per-row image index).
    """
    _check_logits(logits)
    t, frame = _check_common(threshold, backend, frame)
    gts = list(gts)
    if len(gts) == 0:
        raise ValueError("gts must hold at least one ground-truth mask")
    if len(input_sizes) != len(gts) or len(original_sizes) != len(gts):
        raise ValueError(f"gts ({len(gts)}), input_sizes ({len(input_sizes)}) and original_sizes "
                         f"({len(original_sizes)}) must have one entry per image")
    if not isinstance(image_index, torch.Tensor):
        raise TypeError(f"image_index must be an integer torch.Tensor of shape (N,), got {type(image_index).__name__}")
    if image_index.ndim != 1 or image_index.shape[0] != logits.shape[0]:
        raise ValueError(f"image_index must have shape ({logits.shape[0]},) (one entry per logits row), "
                         f"got {tuple(image_index.shape)}")
    if image_index.dtype.is_floating_point or image_index.dtype.is_complex or image_index.dtype == torch.bool:
        raise TypeError(f"image_index must be an integer tensor, got {image_index.dtype}")
    flat: list[int] = []
    for b, g in enumerate(gts):
        (ih, iw), _ = _check_image(g, input_sizes[b], original_sizes[b], frame, logits.device, f"[image {b}] ")
        flat += [ih, iw]
    return torch.ops.samr1.mask_iou_grouped(logits.detach(), [g.detach() for g in gts], image_index, flat, t, frame,
                                            backend)
