"""SAM 2 mode of the fused logits -> mask -> IoU op: every body against the one reference
(``mask_iou_sam2_reference``, SAM 2's own ``F.interpolate`` postprocess), no model needed.

Inputs are fresh random draws each run (the seed is in every assertion message). The contract of the fast
bodies ("fused" torch row blocks, "cpp", "triton"): the mask equals the reference's except at pixels within
``near_threshold_eps`` of the threshold (``near_threshold_pixels_sam2``); :func:`check_contract` checks it
pixel by pixel, :func:`check_counts` checks the counts against a random ground truth.

Triton: the ``@only_in_triton_interpreter`` tests run in a TRITON_INTERPRET=1 child pytest started by
``test_triton_interpreter_child`` (``conftest.run_in_triton_interpreter``); compiled Triton runs on
CUDA tensors in ``test_triton_cuda_*`` (skipped without a GPU).
"""

import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _markers import requires_cpp, requires_cuda
from conftest import only_in_triton_interpreter, run_in_triton_interpreter

from samr1.ops import backends
from samr1.ops.mask_iou_sam2 import (
    mask_iou_sam2,
    mask_iou_sam2_grouped,
    mask_iou_sam2_reference,
    near_threshold_pixels_sam2,
    postprocess_sam2_reference,
    resize_matrix,
    sam2_plan,
    select_backend_sam2,
)


def _gen() -> tuple[torch.Generator, int]:
    seed = int.from_bytes(os.urandom(4), "little")
    return torch.Generator().manual_seed(seed), seed


def make_logits(n: int, low: tuple[int, int], scale: float, gen: torch.Generator) -> torch.Tensor:
    """N x h x w float32 like a decoder's: smooth blobs crossing 0 (long runs near the threshold) times
    ``scale`` (tens for trained models) plus 10% noise."""
    smooth = F.interpolate(torch.randn(n, 1, 8, 8, generator=gen), low, mode="bilinear", align_corners=False)[:, 0]
    return (smooth * scale + 0.1 * scale * torch.randn(n, *low, generator=gen)).contiguous()


def make_gt(size: tuple[int, int], gen: torch.Generator, kind: str = "blob") -> torch.Tensor:
    """H x W bool: a random blob with a few flipped pixels, or all-empty / all-full."""
    if kind == "empty":
        return torch.zeros(size, dtype=torch.bool)
    if kind == "full":
        return torch.ones(size, dtype=torch.bool)
    field = F.interpolate(torch.randn(1, 1, 5, 5, generator=gen), size=size, mode="bilinear", align_corners=False)[0, 0]
    return (field > 0) ^ (torch.rand(size, generator=gen) < 0.02)


def check_counts(logits, gt, backend, seed, threshold=0.0):
    """Counts of ``backend`` vs the reference on ``gt``: within the near-threshold pixel count of each mask,
    and equal where a mask has no such pixel."""
    _, i_ref, u_ref = mask_iou_sam2_reference(logits.cpu(), gt.cpu(), threshold)
    near = near_threshold_pixels_sam2(logits.cpu(), tuple(gt.shape), threshold).flatten(1).sum(1)
    iou, inter, union = mask_iou_sam2(logits, gt, threshold, backend=backend)
    inter, union = inter.cpu(), union.cpu()
    msg = f"{backend} seed={seed} shape={tuple(logits.shape)}->{tuple(gt.shape)} thr={threshold} near={near.tolist()}"
    assert ((inter - i_ref).abs() <= near).all() and ((union - u_ref).abs() <= near).all(), \
        f"{msg}: inter {inter.tolist()} vs {i_ref.tolist()}, union {union.tolist()} vs {u_ref.tolist()}"
    exact = near == 0
    assert torch.equal(inter[exact], i_ref[exact]) and torch.equal(union[exact], u_ref[exact]), msg
    want = torch.where(u_ref > 0, i_ref.double() / u_ref.clamp_min(1).double(), torch.ones_like(i_ref.double()))
    assert iou.dtype == torch.float32 and iou.shape == (logits.shape[0],)
    # IoU differs only through the counts (at most `near` pixels each)
    tol = (2 * near.double() / u_ref.clamp_min(1).double()).max().item() + 1e-6
    assert torch.allclose(iou.cpu().double(), want, atol=tol), msg


def check_contract(logits, size, backend, seed, threshold=0.0):
    """The contract pixel by pixel: with ground truths lo = ref AND NOT near and hi = ref OR near, |pred AND lo|
    must be |lo| and |pred OR hi| must be |hi|; both hold iff pred == ref outside the near band."""
    n = logits.shape[0]
    ref = postprocess_sam2_reference(logits.cpu(), size) > threshold
    near = near_threshold_pixels_sam2(logits.cpu(), size, threshold)
    lo, hi = ref & ~near, ref | near
    dev = logits.device
    gts = [g.to(dev) for g in (*lo, *hi)]
    index = torch.arange(2 * n, device=dev)
    _, inter, union = mask_iou_sam2_grouped(torch.cat([logits, logits]), gts, index, threshold, backend=backend)
    inter, union = inter.cpu(), union.cpu()
    msg = f"{backend} seed={seed} shape={tuple(logits.shape)}->{size} thr={threshold}"
    assert torch.equal(inter[:n], lo.flatten(1).sum(1)), f"{msg}: a confidently-on pixel is off"
    assert torch.equal(union[n:], hi.flatten(1).sum(1)), f"{msg}: a confidently-off pixel is on"


# (N, low-res h x w, original H x W, logit scale, threshold): N = 1, a 1 x 1 original, prime sizes, a
# 1-pixel-wide strip, non-square low-res, downsampling (original smaller than the low-res) and upsampling,
# trained-looking magnitudes (tens) and a threshold away from 0.
CASES = [
    (3, (256, 256), (97, 131), 1.0, 0.0),
    (1, (256, 256), (1, 1), 10.0, 0.0),
    (2, (256, 256), (257, 3), 5.0, 0.0),
    (2, (256, 256), (61, 37), 30.0, 0.0),      # downsample, trained-looking
    (4, (17, 11), (23, 29), 5.0, 0.5),         # non-square low-res, primes, threshold != 0
    (2, (64, 64), (131, 61), 30.0, -2.0),      # portrait upsample
    (1, (13, 7), (13, 7), 3.0, 0.0),           # same size: aten's copy path
]
CASE_IDS = [f"N{c[0]}-{c[1][0]}x{c[1][1]}-{c[2][0]}x{c[2][1]}-s{c[3]:g}-t{c[4]:g}" for c in CASES]
CPU_BODIES = ["fused", pytest.param("cpp", marks=requires_cpp), "auto"]


def test_resize_matrix_equals_interpolate():
    for in_size, out_size in [(256, 97), (256, 640), (7, 1), (1, 5), (13, 13), (5, 3)]:
        x = torch.randn(3, in_size, dtype=torch.float64)
        ref = F.interpolate(x[:, None], out_size, mode="linear", align_corners=False)[:, 0]
        got = x @ resize_matrix(in_size, out_size).double().t()
        assert torch.allclose(got, ref, atol=1e-6), (in_size, out_size)


def test_plan_layout_and_weights():
    idx, wts = sam2_plan((17, 11), (23, 29), True)
    assert idx.dtype == np.int32 and wts.dtype == np.float32 and idx.shape == wts.shape == (2 * 23 + 2 * 29,)
    y0, y1, x0, x1 = np.split(idx, [23, 46, 75])
    wy0, wy1, wx0, wx1 = np.split(wts, [23, 46, 75])
    assert (y0 <= y1).all() and y1.max() < 17 and (x0 <= x1).all() and x1.max() < 11
    assert np.allclose(wy0 + wy1, 1) and np.allclose(wx0 + wx1, 1)
    # the same map as the dense resize matrix
    m = np.zeros((29, 11))
    np.add.at(m, (np.arange(29), x0), wx0)
    np.add.at(m, (np.arange(29), x1), wx1)
    assert np.allclose(m, resize_matrix(11, 29).numpy(), atol=1e-6)
    assert not idx.flags.writeable and not wts.flags.writeable


@pytest.mark.parametrize("backend", CPU_BODIES)
@pytest.mark.parametrize("n,low,size,scale,thr", CASES, ids=CASE_IDS)
def test_cpu_bodies_match_reference(backend, n, low, size, scale, thr):
    gen, seed = _gen()
    logits = make_logits(n, low, scale, gen)
    check_contract(logits, size, backend, seed, thr)
    for kind in ("blob", "empty", "full"):
        check_counts(logits, make_gt(size, gen, kind), backend, seed, thr)


@pytest.mark.parametrize("backend", CPU_BODIES)
def test_common_sizes_match_reference(backend):
    """SAM 2's own 256 x 256 logits at a camera size (the bench's): the pixel contract and the counts."""
    gen, seed = _gen()
    logits = make_logits(4, (256, 256), 12.0, gen)
    check_contract(logits, (480, 640), backend, seed)
    check_counts(logits, make_gt((480, 640), gen), backend, seed)


@pytest.mark.parametrize("backend", CPU_BODIES)
def test_grouped_matches_per_image_reference(backend):
    gen, seed = _gen()
    sizes = [(97, 131), (1, 1), (40, 256), (300, 17)]
    gts = [make_gt(s, gen) for s in sizes]
    index = torch.tensor([2, 0, 0, 3, 1, 2, 2, 0])  # image 1 once, rows out of image order
    logits = make_logits(len(index), (64, 48), 8.0, gen)
    iou, inter, union = mask_iou_sam2_grouped(logits, gts, index, backend=backend)
    for b, g in enumerate(gts):
        rows = (index == b).nonzero().flatten()
        _, i_ref, u_ref = mask_iou_sam2_reference(logits[rows], g)
        near = near_threshold_pixels_sam2(logits[rows], g.shape).flatten(1).sum(1)
        assert ((inter[rows] - i_ref).abs() <= near).all() and ((union[rows] - u_ref).abs() <= near).all(), \
            f"{backend} seed={seed} image {b}"
    assert iou.shape == (len(index),)


@requires_cpp
def test_cpp_plain_arithmetic_equals_torch_row_blocks_bit_for_bit():
    """The C++ body without fma computes exactly the torch row-block path's float32 sums (same tables, same
    order, each product rounded), so the counts are equal for any logits and ground truth."""
    C = backends.cpp_module()
    gen, seed = _gen()
    for n, low, size in [(3, (256, 256), (480, 640)), (2, (17, 11), (23, 29)), (2, (256, 256), (61, 37))]:
        logits = make_logits(n, low, 20.0, gen)
        gt = make_gt(size, gen)
        plan = (*sam2_plan(low, size, True), gt.numpy().view(np.uint8))
        _, i_t, u_t = mask_iou_sam2(logits, gt, backend="fused")
        i_c, u_c = C.mask_iou_sam2_counts(logits.numpy(), np.empty(0, np.int64), [plan], 0.0, False, 1)
        assert np.array_equal(i_c, i_t.numpy()) and np.array_equal(u_c, u_t.numpy()), f"seed={seed} {low}->{size}"


@requires_cpp
def test_cpp_variants_and_threads_agree():
    """The AVX2 variant (forced) equals the best one, and two forced OpenMP threads equal one."""
    C = backends.cpp_module()
    if not C.mask_iou_fma_supported():
        pytest.skip("this CPU has no AVX2+FMA: only the plain variant exists")
    gen, seed = _gen()
    sizes = [(480, 640), (37, 53)]
    gts = [make_gt(s, gen) for s in sizes]
    logits = make_logits(6, (256, 256), 10.0, gen).numpy()
    index = np.array([0, 1, 0, 1, 1, 0], np.int64)
    plans = [(*sam2_plan((256, 256), s, True), g.numpy().view(np.uint8)) for s, g in zip(sizes, gts, strict=True)]
    base = C.mask_iou_sam2_counts(logits, index, plans, 0.0, True, 1)
    for isa, threads in [("avx2", 1), ("auto", 2)]:
        got = C.mask_iou_sam2_counts(logits, index, plans, 0.0, True, threads, isa, 0)  # 0: wake every thread
        assert np.array_equal(got[0], base[0]) and np.array_equal(got[1], base[1]), f"seed={seed} {isa} x{threads}"


@requires_cpp
def test_cpp_binding_rejects_bad_plans():
    C = backends.cpp_module()
    x = np.zeros((2, 16, 16), np.float32)
    idx, wts = sam2_plan((16, 16), (9, 7), True)
    gt = np.zeros((9, 7), np.uint8)
    none = np.empty(0, np.int64)
    with pytest.raises(TypeError):
        C.mask_iou_sam2_counts(x.astype(np.float64), none, [(idx, wts, gt)], 0.0, False)
    with pytest.raises(ValueError, match="wrong length"):
        C.mask_iou_sam2_counts(x, none, [(idx[:-1], wts, gt)], 0.0, False)
    with pytest.raises(ValueError, match="image_index"):
        C.mask_iou_sam2_counts(x, np.array([0, 1]), [(idx, wts, gt)], 0.0, False)
    with pytest.raises(ValueError, match="out of range"):
        C.mask_iou_sam2_counts(np.zeros((2, 8, 16), np.float32), none, [(idx, wts, gt)], 0.0, False)
    bad = idx.copy()
    bad[2 * 9 + 2] = 1  # x0 = 0, 2, 1, ...: going backwards
    with pytest.raises(ValueError, match="column plan must be non-decreasing"):
        C.mask_iou_sam2_counts(x, none, [(bad, wts, gt)], 0.0, False)
    with pytest.raises(ValueError, match="isa"):
        C.mask_iou_sam2_counts(x, none, [(idx, wts, gt)], 0.0, False, 1, "sse")


def test_backend_selection_and_record(monkeypatch):
    cpp_ok = backends.cpp_status()[0]
    assert select_backend_sam2("auto", "cpu") == ("cpp" if cpp_ok else "fused")
    assert select_backend_sam2("fused", "cpu") == "fused" and select_backend_sam2("torch", "cpu") == "torch"
    logits, gt = torch.zeros(1, 8, 8), torch.zeros(5, 5, dtype=torch.bool)
    mask_iou_sam2(logits, gt, backend="fused")
    assert backends.last("mask_iou_sam2") == "torch"
    mask_iou_sam2(logits, gt)
    assert backends.last("mask_iou_sam2") == ("cpp" if cpp_ok else "torch")
    if not backends.interpreting():
        with pytest.raises(ValueError, match="CUDA tensors"):
            select_backend_sam2("triton", "cpu")
    monkeypatch.setenv("SAMR1_DISABLE_CPP", "1")
    assert select_backend_sam2("auto", "cpu") == "fused"
    with pytest.raises(RuntimeError, match="SAMR1_DISABLE_CPP=1"):
        mask_iou_sam2(logits, gt, backend="cpp")


def test_threshold_and_empty_masks():
    logits = torch.full((2, 16, 16), -5.0)
    logits[1] = 5.0
    gt_empty = torch.zeros(9, 7, dtype=torch.bool)
    for backend in ("fused", "auto", "torch"):
        iou, inter, union = mask_iou_sam2(logits, gt_empty, 0.0, backend=backend)
        assert iou.tolist() == [1.0, 0.0] and union.tolist() == [0, 63], backend
        iou, _, _ = mask_iou_sam2(logits, gt_empty, 6.0, backend=backend)  # threshold above every logit
        assert iou.tolist() == [1.0, 1.0], backend
        assert mask_iou_sam2(logits, ~gt_empty, 0.0, backend=backend)[0].tolist() == [0.0, 1.0], backend
    empty = mask_iou_sam2(torch.zeros(0, 16, 16), gt_empty)
    assert [t.shape for t in empty] == [(0,), (0,), (0,)]


def test_postprocess_is_one_resize_of_the_whole_frame():
    # SAM 2 squashes the image into the square frame: a logit map that is positive on its left half gives a
    # mask on the left half of ANY aspect ratio (SAM v1 would crop the padded frame first)
    logits = torch.full((1, 64, 64), -8.0)
    logits[:, :, :32] = 8.0
    for hw in [(30, 90), (90, 30), (41, 41)]:
        m = postprocess_sam2_reference(logits, hw)[0] > 0
        cols = m.any(0).nonzero().flatten()
        assert m.all(0)[: hw[1] // 2 - 1].all() and cols.max().item() <= (hw[1] + 1) // 2


def test_validation_messages():
    gt = torch.zeros(4, 4, dtype=torch.bool)
    with pytest.raises(ValueError, match="N x h x w"):
        mask_iou_sam2(torch.zeros(4, 4), gt)
    with pytest.raises(ValueError, match="H x W"):
        mask_iou_sam2(torch.zeros(1, 4, 4), torch.zeros(1, 4, 4))
    with pytest.raises(ValueError, match="h, w, H, W > 0"):
        mask_iou_sam2(torch.zeros(1, 4, 4), torch.zeros(0, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="backend must be one of"):
        mask_iou_sam2(torch.zeros(1, 4, 4), gt, backend="cuda")
    with pytest.raises(ValueError, match="threshold"):
        mask_iou_sam2(torch.zeros(1, 4, 4), gt, threshold="x")
    with pytest.raises(ValueError, match="at least one"):
        mask_iou_sam2_grouped(torch.zeros(2, 4, 4), [], torch.tensor([0, 0]))
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        mask_iou_sam2_grouped(torch.zeros(2, 4, 4), [gt], torch.tensor([0]))
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        mask_iou_sam2_grouped(torch.zeros(2, 4, 4), [gt], torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="integer"):
        mask_iou_sam2_grouped(torch.zeros(2, 4, 4), [gt], torch.tensor([0.0, 0.0]))
    with pytest.raises(ValueError, match=r"\[image 1\] gt"):
        mask_iou_sam2_grouped(torch.zeros(2, 4, 4), [gt, torch.zeros(4)], torch.tensor([0, 1]))
    assert np.isfinite(mask_iou_sam2(torch.zeros(1, 4, 4), gt)[0].numpy()).all()


@pytest.mark.parametrize("backend", ["auto", "torch", "fused", pytest.param("cpp", marks=requires_cpp)])
def test_mask_iou_from_logits_sam2_mode(backend):
    from samr1.ops import mask_iou_from_logits

    gen, seed = _gen()
    logits = make_logits(3, (64, 64), 12.0, gen)
    gt = make_gt((37, 91), gen)
    want = mask_iou_sam2_reference(logits, gt)
    near = near_threshold_pixels_sam2(logits, gt.shape).flatten(1).sum(1)
    got = mask_iou_from_logits(logits, gt, None, gt.shape, backend=backend, resize="sam2")
    assert ((got[1] - want[1]).abs() <= near).all() and ((got[2] - want[2]).abs() <= near).all(), seed
    with pytest.raises(ValueError, match="resize"):
        mask_iou_from_logits(logits, gt, (37, 91), gt.shape, resize="sam3")
    with pytest.raises(ValueError, match="original_size"):
        mask_iou_from_logits(logits, gt, None, (36, 91), resize="sam2")


# ----------------------------------------------------------------------------- Triton
@only_in_triton_interpreter
@pytest.mark.parametrize("n,low,size,scale,thr", CASES, ids=CASE_IDS)
def test_triton_interp_matches_reference(n, low, size, scale, thr):
    gen, seed = _gen()
    logits = make_logits(n, low, scale, gen)
    check_contract(logits, size, "triton", seed, thr)
    for kind in ("blob", "empty", "full"):
        check_counts(logits, make_gt(size, gen, kind), "triton", seed, thr)
    assert backends.last("mask_iou_sam2") == "triton"


@only_in_triton_interpreter
def test_triton_interp_grouped_and_cuda_tiles(monkeypatch):
    """Several images in one launch, with the CPU tiles and with the CUDA configuration's tiles."""
    from samr1.kernels import mask_iou_sam2 as kernel

    gen, seed = _gen()
    sizes = [(45, 131), (1, 1), (20, 17)]
    gts = [make_gt(s, gen) for s in sizes]
    index = torch.tensor([2, 0, 1, 0, 2])
    logits = make_logits(len(index), (32, 24), 8.0, gen)
    want = mask_iou_sam2_grouped(logits, gts, index, backend="cpp" if backends.cpp_status()[0] else "fused")
    for tiles in (kernel.TILES["cpu"], kernel.TILES["cuda"]):
        monkeypatch.setitem(kernel.TILES, "cpu", tiles)
        got = mask_iou_sam2_grouped(logits, gts, index, backend="triton")
        near = torch.stack([near_threshold_pixels_sam2(logits[r:r + 1], sizes[int(index[r])]).sum()
                            for r in range(len(index))])
        assert ((got[1] - want[1]).abs() <= near).all() and ((got[2] - want[2]).abs() <= near).all(), \
            f"seed={seed} tiles={tiles}"


@only_in_triton_interpreter
def test_triton_interp_launches_under_the_tensor_device(monkeypatch):
    """The launcher enters samr1.kernels.launch_guard with the logits' device (the real guard still runs)."""
    from samr1.kernels import mask_iou_sam2 as kernel

    seen = []
    real = kernel.launch_guard
    monkeypatch.setattr(kernel, "launch_guard", lambda device: seen.append(torch.device(device)) or real(device))
    mask_iou_sam2(torch.zeros(1, 16, 16), torch.zeros(5, 6, dtype=torch.bool), backend="triton")
    assert seen == [torch.device("cpu")]


def test_triton_interpreter_child():
    """The ``@only_in_triton_interpreter`` tests of this file, in a TRITON_INTERPRET=1 child pytest."""
    run_in_triton_interpreter(__file__)


@requires_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("size,n", [((97, 131), 1), ((480, 640), 64), ((1080, 1920), 16), ((257, 3), 5)])
def test_triton_cuda_matches_reference(size, n):
    gen, seed = _gen()
    logits = make_logits(n, (256, 256), 12.0, gen).cuda()
    gt = make_gt(size, gen).cuda()
    check_counts(logits, gt, "auto", seed)
    assert backends.last("mask_iou_sam2") == "triton"
    check_contract(logits, size, "triton", seed)
    check_counts(logits, gt, "fused", seed)  # the torch row blocks on CUDA too


@requires_cuda
@pytest.mark.gpu
def test_triton_cuda_grouped():
    gen, seed = _gen()
    sizes = [(480, 640), (333, 517), (1, 1)]
    gts = [make_gt(s, gen).cuda() for s in sizes]
    index = torch.randint(0, len(sizes), (24,), generator=gen).cuda()
    logits = make_logits(24, (256, 256), 12.0, gen).cuda()
    got = mask_iou_sam2_grouped(logits, gts, index, backend="triton")
    for b, g in enumerate(gts):
        rows = (index == b).nonzero().flatten()
        if rows.numel():
            _, i_ref, u_ref = mask_iou_sam2_reference(logits[rows].cpu(), g.cpu())
            near = near_threshold_pixels_sam2(logits[rows].cpu(), g.shape).flatten(1).sum(1)
            assert ((got[1][rows].cpu() - i_ref).abs() <= near).all(), f"seed={seed} image {b}"
            assert ((got[2][rows].cpu() - u_ref).abs() <= near).all(), f"seed={seed} image {b}"
