"""The straightforward SAM 2 scoring path: the reference the SAM 2 engine is tested against.

A ``SAM2ImagePredictor`` loop: ``set_image`` when the image changes, one ``predict`` per answer
(``multimask_output=True``: the mask with the best predicted score is kept), SAM 2's own postprocessing
to the original size, numpy IoU. Exactly what SAM-R1 / Seg-Zero-style reward code does with SAM 2.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from samr1.engine.reference import predictor_loop

__all__ = ["predict_mask_sam2", "score_reference_sam2"]


def predict_mask_sam2(predictor: Any, answer: Any, multimask: bool = True) -> np.ndarray:
    """One ``SAM2ImagePredictor.predict`` call for ``answer`` (box XYXY + points (x, y), original pixels;
    labels from ``answer.labels`` or all foreground). Returns the H x W bool mask: with ``multimask`` the
    one of the three with the highest predicted score."""
    box = np.asarray(answer.bbox, dtype=np.float32) if answer.bbox is not None else None
    pts = np.asarray(answer.points, dtype=np.float32).reshape(-1, 2) if answer.points else None
    lab = None
    if pts is not None:
        labels = getattr(answer, "labels", None)
        lab = np.asarray(labels if labels is not None else [1] * len(pts), dtype=np.int64)
    masks, scores, _ = predictor.predict(point_coords=pts, point_labels=lab, box=box, multimask_output=multimask)
    return masks[int(np.argmax(scores))] > 0.5 if multimask else masks[0] > 0.5


def score_reference_sam2(sam2_model: Any, images: Sequence[np.ndarray], answers: Sequence[Any],
                         gt_masks: Sequence[np.ndarray], multimask: bool = True,
                         mask_threshold: float = 0.0) -> list[float]:
    """IoU per answer by the per-completion ``SAM2ImagePredictor`` loop.

    Args:
        sam2_model: a ``sam2.modeling.sam2_base.SAM2Base`` (e.g. ``samr1.sam.load_sam("sam2.1_hiera_t")``).
        images: H x W x 3 uint8 arrays parallel to ``answers`` (repeats allowed; compared by content).
        answers: :class:`samr1.answer.Answer` objects; one that is not ``ok`` scores 0.0.
        gt_masks: H x W bool arrays parallel to ``answers``, each the size of its image.
        mask_threshold: the predictor's ``mask_threshold`` (0.0 upstream).
    """
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    predictor = SAM2ImagePredictor(sam2_model, mask_threshold=mask_threshold)
    return predictor_loop(predictor, predict_mask_sam2, images, answers, gt_masks, multimask)
