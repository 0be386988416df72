"""Public ops of samr1: validated, dispatched to C++ (CPU) / Triton (CUDA) / torch (reference).

* :func:`mask_iou_from_logits` / :func:`mask_iou_grouped` -- SAM low-res logits -> postprocessed mask
  -> IoU against the ground truth, without materialising full-resolution masks (samr1/ops/mask_iou.py).
"""

from samr1.ops.mask_iou import (
    BACKENDS,
    last_backend,
    mask_iou_from_logits,
    mask_iou_grouped,
    mask_iou_grouped_reference,
    mask_iou_reference,
    postprocess_reference,
    select_backend,
)

__all__ = [
    "BACKENDS",
    "last_backend",
    "mask_iou_from_logits",
    "mask_iou_grouped",
    "mask_iou_grouped_reference",
    "mask_iou_reference",
    "postprocess_reference",
    "select_backend",
]
