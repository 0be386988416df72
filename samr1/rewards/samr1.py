"""The ``samr1`` preset (the default): samr1's own reading of the format and of Seg-Zero's ablation rewards.

One parse per completion (:func:`samr1.answer.parse_answer`: the LAST ``<answer>`` block, JSON or a
Python-style literal, every key form) serves every component. "think" is :func:`samr1.rewards.text.
think_format_ok` (one think block then one answer block); "answer" pays when the answer parses. The box and
point rewards read the answer's first object and compare it with the ground truth's inclusive box and
reference points (:mod:`samr1.rewards.truth`), in the policy's MODEL frame by default (``frame="model"``:
the numbers as written) or in original image pixels (``frame="original"``); the point reward uses the
answer's first two points.

No target: the answer ``[]`` ("no object") parses, so "answer" pays 1; on an empty ground truth it earns
every box/point component in full (and the mask IoU is 1), on a non-empty one 0. Any other answer earns
0 from the box/point components on an empty ground truth.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from samr1.answer import Answer
from samr1.geometry import mask_to_box, mask_to_points
from samr1.rewards.batch import BatchInputs, MaskMemo
from samr1.rewards.boxes import box_iou_reward, box_l1_reward, point_distance_reward
from samr1.rewards.text import think_format_ok
from samr1.rewards.truth import published_geometry, resized_geometry

__all__ = ["NAME", "COMPONENTS", "DEFAULT_COMPONENTS", "POINT_THRESHOLD", "GEOMETRY_COMPONENTS", "rewards", "pred_geometry",
           "frame_geometry", "no_target_value"]

NAME = "samr1"
GEOMETRY_COMPONENTS: tuple[str, ...] = ("box_iou", "box_l1", "point_dist")
"""The box and point components (0/1 each)."""
COMPONENTS: tuple[str, ...] = ("think", "answer", "iou", "mask_iou", *GEOMETRY_COMPONENTS)
"""Every component this preset can sum ("iou" and "mask_iou" are the shared SAM-backed ones)."""
DEFAULT_COMPONENTS: tuple[str, ...] = ("think", "answer", "iou")
"""SAM-R1's reward: think format + answer format + tiered mask IoU."""
POINT_THRESHOLD = 100.0
"""Seg-Zero's point-distance threshold, model-frame pixels."""


def no_target_value(answer: Answer, gt: np.ndarray, full: float) -> float | None:
    """The no-target rule of an accuracy component: ``full`` for the answer "no object" on an empty ground
    truth, 0 when exactly one of them is empty, None when neither is (the component's own rule decides)."""
    empty_gt = not gt.any()
    if answer.no_object:
        return full if empty_gt else 0.0
    return 0.0 if empty_gt else None


def pred_geometry(a: Answer, gt: np.ndarray | None, config: Any) -> tuple[Any, list]:
    """The answer's (box, points) in ``config.frame``: model-frame numbers as written (corners sorted, not
    clipped), or those scaled to the original image. Multi-object answers: the first object."""
    box, pts = a.model_bbox, list(a.model_points)
    if box is None or config.frame == "model" or gt is None:
        return box, pts
    (mh, mw), (H, W) = config.model_size, gt.shape
    sx, sy = W / mw, H / mh
    return ((box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy), [(x * sx, y * sy) for x, y in pts])


def frame_geometry(gt: np.ndarray, config: Any) -> tuple[Any, list]:
    """(inclusive box, reference points) of a ground-truth mask in ``config.frame`` (in the model frame by
    ``config.gt_rule``, see :mod:`samr1.rewards.truth`)."""
    if config.frame == "original":
        return mask_to_box(gt, "inclusive"), mask_to_points(gt, config.gt_points, rule=config.point_rule)
    rule = published_geometry if config.gt_rule == "published" else resized_geometry
    return rule(gt, config.model_size, config.gt_points, config.point_rule)


def rewards(inputs: BatchInputs, components: tuple[str, ...], config: Any, memo: MaskMemo) -> dict[str, list[float]]:
    """The values of this preset's own components (all but the shared mask ones) for every row."""
    out: dict[str, list[float]] = {}
    if "think" in components:
        out["think"] = [1.0 if think_format_ok(t) else 0.0 for t in inputs.texts]
    if "answer" in components:
        out["answer"] = [1.0 if a.ok else 0.0 for a in inputs.answers]
    wanted = [c for c in GEOMETRY_COMPONENTS if c in components]
    if not wanted:
        return out
    n = len(inputs.answers)
    tag = ("samr1", config.frame, config.gt_rule, tuple(config.model_size), config.gt_points, config.point_rule)
    scorable = set(inputs.scorable)
    for comp in wanted:
        out[comp] = [0.0] * n
    for i in scorable:
        a, gt = inputs.answers[i], inputs.gts[i]
        fixed = no_target_value(a, gt, 1.0)
        if fixed is not None:
            for comp in wanted:
                out[comp][i] = fixed
            continue
        gt_box, gt_pts = memo.get(gt, tag, lambda m: frame_geometry(m, config))
        box, pts = pred_geometry(a, gt, config)
        if gt_box is None or box is None:
            continue
        for comp in wanted:
            if comp == "box_iou":
                out[comp][i] = box_iou_reward(box, gt_box, config.box_iou_threshold)
            elif comp == "box_l1":
                out[comp][i] = box_l1_reward(box, gt_box, config.box_l1_threshold)
            else:
                out[comp][i] = point_distance_reward(pts, gt_pts, box, config.point_threshold)
    return out
