"""SAM 2 mode of the fused logits -> mask -> IoU op against SAM 2's own postprocess (torch only, no model)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from samr1.ops.mask_iou_sam2 import (
    mask_iou_sam2,
    mask_iou_sam2_reference,
    near_threshold_pixels_sam2,
    postprocess_sam2_reference,
    resize_matrix,
)


def _sam2_postprocess_restated(logits: torch.Tensor, hw) -> torch.Tensor:
    """SAM2Transforms.postprocess_masks restated from its source: masks N x C x h x w, one bilinear resize."""
    return F.interpolate(logits[:, None].float(), hw, mode="bilinear", align_corners=False)[:, 0]


@pytest.mark.parametrize("in_size,out_size", [(256, 97), (256, 640), (7, 1), (1, 5), (13, 13), (5, 3)])
def test_resize_matrix_equals_interpolate(in_size, out_size):
    x = torch.randn(3, in_size, dtype=torch.float64)
    ref = F.interpolate(x[:, None], out_size, mode="linear", align_corners=False)[:, 0]
    got = x @ resize_matrix(in_size, out_size).double().t()
    assert torch.allclose(got, ref, atol=1e-6)


@pytest.mark.parametrize("n,low,hw,scale", [
    (3, (256, 256), (97, 131), 1.0),   # odd, landscape
    (2, (256, 256), (131, 61), 30.0),  # odd, portrait, trained-looking magnitudes (tens)
    (1, (256, 256), (1, 1), 10.0),     # 1 x 1 image
    (4, (17, 11), (23, 29), 5.0),      # non-square low-res, prime sizes
])
def test_fused_counts_equal_sam2_postprocess_except_near_threshold(n, low, hw, scale):
    g = torch.Generator().manual_seed(int(torch.randint(0, 2**31, ())))
    logits = torch.randn(n, *low, generator=g) * scale
    # smooth logits too (upsampled noise), as a decoder makes them: long runs close to the threshold
    smooth = F.interpolate(torch.randn(n, 1, 8, 8, generator=g), low, mode="bilinear", align_corners=False)[:, 0]
    logits = logits * 0.1 + smooth * scale
    gt = torch.rand(hw, generator=g) > 0.5
    thr = 0.0
    mask = _sam2_postprocess_restated(logits, hw) > thr
    inter_ref = (mask & gt).flatten(1).sum(1)
    union_ref = (mask | gt).flatten(1).sum(1)
    near = near_threshold_pixels_sam2(logits, hw, thr).flatten(1).sum(1)
    for backend in ("torch", "fused", "auto"):
        iou, inter, union = mask_iou_sam2(logits, gt, thr, backend=backend)
        assert ((inter - inter_ref).abs() <= near).all(), backend
        assert ((union - union_ref).abs() <= near).all(), backend
        exact = near == 0
        assert torch.equal(inter[exact], inter_ref[exact]) and torch.equal(union[exact], union_ref[exact]), backend
        want = inter_ref.double() / union_ref.clamp_min(1).double()
        want[union_ref == 0] = 1.0
        assert torch.allclose(iou.double(), want, atol=near.max().item() / max(1, hw[0] * hw[1]) * 2 + 1e-6)


def test_threshold_and_empty_masks():
    logits = torch.full((2, 16, 16), -5.0)
    logits[1] = 5.0
    gt_empty = torch.zeros(9, 7, dtype=torch.bool)
    iou, inter, union = mask_iou_sam2(logits, gt_empty, 0.0, backend="fused")
    assert iou.tolist() == [1.0, 0.0] and union.tolist() == [0, 63]
    iou, _, _ = mask_iou_sam2(logits, gt_empty, 6.0, backend="fused")  # threshold above every logit
    assert iou.tolist() == [1.0, 1.0]
    ref = mask_iou_sam2_reference(logits, ~gt_empty, 0.0)[0]
    assert ref.tolist() == [0.0, 1.0]


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
    with pytest.raises(ValueError, match="backend"):
        mask_iou_sam2(torch.zeros(1, 4, 4), gt, backend="cuda")
    with pytest.raises(RuntimeError, match="no body for the SAM 2 mode"):
        mask_iou_sam2(torch.zeros(1, 4, 4), gt, backend="cpp")
    with pytest.raises(ValueError, match="threshold"):
        mask_iou_sam2(torch.zeros(1, 4, 4), gt, threshold="x")
    assert np.isfinite(mask_iou_sam2(torch.zeros(1, 4, 4), gt)[0].numpy()).all()


def test_mask_iou_from_logits_sam2_mode():
    from samr1.ops import mask_iou_from_logits

    g = torch.Generator().manual_seed(int(torch.randint(0, 2**31, ())))
    logits = torch.randn(3, 64, 64, generator=g) * 12
    gt = torch.rand(37, 91, generator=g) > 0.4
    want = mask_iou_sam2_reference(logits, gt)
    near = near_threshold_pixels_sam2(logits, gt.shape).flatten(1).sum(1)
    for backend in ("auto", "torch"):
        got = mask_iou_from_logits(logits, gt, None, gt.shape, backend=backend, resize="sam2")
        assert ((got[1] - want[1]).abs() <= near).all() and ((got[2] - want[2]).abs() <= near).all()
    with pytest.raises(ValueError, match="resize"):
        mask_iou_from_logits(logits, gt, (37, 91), gt.shape, resize="sam3")
    with pytest.raises(ValueError, match="original_size"):
        mask_iou_from_logits(logits, gt, None, (36, 91), resize="sam2")
