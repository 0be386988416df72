"""The straightforward scoring path: the reference every fast path of the engine is tested against.

One ``SamPredictor.set_image`` per distinct image, one ``predict`` call per answer, SAM's own
postprocessing to the original size, numpy IoU. Slow on purpose: it is exactly what Seg-Zero-style reward
code does, minus re-encoding repeated images.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from segment_anything import SamPredictor
from segment_anything.modeling import Sam

from samr1.geometry import mask_iou_numpy
from samr1.store import image_key


def predict_mask(predictor: SamPredictor, answer: Any, multimask: bool) -> np.ndarray:
    """One upstream ``predict`` call for ``answer`` (box + foreground points, original pixels).

    Returns the H x W bool mask; with ``multimask`` SAM gives three and the one with the highest
    predicted IoU is kept (Seg-Zero's evaluation convention).
    """
    box = np.asarray(answer.bbox, dtype=np.float32) if answer.bbox is not None else None
    pts = np.asarray(answer.points, dtype=np.float32).reshape(-1, 2) if answer.points else None
    labels = getattr(answer, "labels", None)
    lab = None
    if pts is not None:
        lab = np.asarray(labels if labels is not None else [1] * len(pts), dtype=np.int64)
    masks, scores, _ = predictor.predict(point_coords=pts, point_labels=lab, box=box, multimask_output=multimask)
    return masks[int(np.argmax(scores))] if multimask else masks[0]


def score_reference(sam: Sam, images: Sequence[np.ndarray], answers: Sequence[Any], gt_masks: Sequence[np.ndarray],
                    multimask: bool = True) -> list[float]:
    """IoU per answer by the straightforward path.

    Args:
        sam: a segment-anything ``Sam``.
        images: H x W x 3 uint8 arrays, parallel to ``answers`` (repeats allowed; compared by content).
        answers: :class:`samr1.answer.Answer` objects; one that is not ``ok`` scores 0.0.
        gt_masks: H x W bool arrays parallel to ``answers``, each the size of its image.
    """
    return predictor_loop(SamPredictor(sam), predict_mask, images, answers, gt_masks, multimask)


def predictor_loop(predictor: Any, predict: Any, images: Sequence[np.ndarray], answers: Sequence[Any],
                   gt_masks: Sequence[np.ndarray], multimask: bool = True) -> list[float]:
    """The straightforward loop every reference shares: answers sorted by image content, ``set_image`` once
    per run of equal images, ``predict(predictor, answer, multimask) -> H x W bool`` per answer, numpy IoU
    against its ground truth. An answer that is not ``ok`` scores 0.0."""
    keys = [image_key(img) for img in images]  # one hash per image, used to sort and to detect a change
    order = sorted(range(len(answers)), key=keys.__getitem__)
    ious = [0.0] * len(answers)
    current = None
    for i in order:
        if not answers[i].ok:
            continue
        if getattr(answers[i], "no_object", False):  # "no object": an empty mask
            ious[i] = 0.0 if np.asarray(gt_masks[i], bool).any() else 1.0
            continue
        if keys[i] != current:
            predictor.set_image(images[i])
            current = keys[i]
        ious[i] = mask_iou_numpy(predict(predictor, answers[i], multimask), np.asarray(gt_masks[i], bool))
    return ious

