"""Public ops of samr1: validated, dispatched to C++ (CPU) / Triton (CUDA) / torch (reference).

* :func:`mask_iou_from_logits` / :func:`mask_iou_grouped` -- SAM low-res logits -> postprocessed mask
  -> IoU against the ground truth, without materialising full-resolution masks (samr1/ops/mask_iou.py);
  equal to SAM's mask except within :func:`near_threshold_eps` of the threshold.
* :func:`mask_iou_sam2` / :func:`mask_iou_sam2_grouped` -- the same under SAM 2's postprocess (one bilinear
  resize to the original size; samr1/ops/mask_iou_sam2.py), same contract.
* :func:`pack_prompts` -- a ragged prompt batch -> the mask decoder's padded sparse tokens, as upstream
  ``PromptEncoder`` makes them (samr1/ops/prompt_pack.py; reference :func:`pack_prompts_reference`).

Which backend an op runs ("auto" included), and which one it ran last, is decided in one place:
:mod:`samr1.ops.backends`.
"""

from samr1.ops.mask_iou import (
    BACKENDS,
    NEAR_THRESHOLD_RTOL,
    last_backend,
    mask_iou_from_logits,
    mask_iou_grouped,
    mask_iou_grouped_reference,
    mask_iou_reference,
    near_threshold_eps,
    near_threshold_pixels,
    postprocess_reference,
    select_backend,
)
from samr1.ops.mask_iou_sam2 import (
    mask_iou_sam2,
    mask_iou_sam2_grouped,
    mask_iou_sam2_reference,
    postprocess_sam2_reference,
)
from samr1.ops.prompt_pack import pack_prompts, pack_prompts_reference

__all__ = [
    "BACKENDS",
    "NEAR_THRESHOLD_RTOL",
    "last_backend",
    "mask_iou_from_logits",
    "mask_iou_grouped",
    "mask_iou_grouped_reference",
    "mask_iou_reference",
    "near_threshold_eps",
    "near_threshold_pixels",
    "postprocess_reference",
    "select_backend",
    "mask_iou_sam2",
    "mask_iou_sam2_grouped",
    "mask_iou_sam2_reference",
    "postprocess_sam2_reference",
    "pack_prompts",
    "pack_prompts_reference",
]
