"""The ``samr1`` preset: samr1's own reading of the format and of Seg-Zero's ablation rewards.

One parse per completion (:func:`samr1.answer.parse_answer`) serves every component: "answer" pays when it
parses, the box and point rewards read its first object. They are measured in the policy's MODEL frame by
default (``frame="model"``: the numbers as written against the ground truth in that frame) or in original
image pixels (``frame="original"``). Boxes are inclusive pixel indices; the point reward uses the answer's
first two points.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from samr1.answer import Answer
from samr1.geometry import mask_to_box, mask_to_points, resize_mask_nearest
from samr1.rewards.batch import BatchInputs, MaskMemo
from samr1.rewards.boxes import box_iou_reward, box_l1_reward, point_distance_reward

__all__ = ["GEOMETRY_COMPONENTS", "geometry_rewards", "pred_geometry", "frame_geometry"]

GEOMETRY_COMPONENTS: tuple[str, ...] = ("box_iou", "box_l1", "point_dist")
"""The box and point components this preset computes (the others are shared: format, mask IoU)."""


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
    """(inclusive box, reference points) of a ground-truth mask in ``config.frame``."""
    if config.frame == "original":
        return mask_to_box(gt, "inclusive"), mask_to_points(gt, config.gt_points, rule=config.point_rule)
    small = resize_mask_nearest(gt, config.model_size)
    if small.any() or not gt.any():
        return mask_to_box(small, "inclusive"), mask_to_points(small, config.gt_points, rule=config.point_rule)
    # Thinner than one model-frame pixel: measure on the original mask and scale (x * w / W, y * h / H).
    (mh, mw), (H, W) = config.model_size, gt.shape
    sx, sy = mw / W, mh / H
    b = mask_to_box(gt, "inclusive")
    pts = mask_to_points(gt, config.gt_points, rule=config.point_rule)
    return (b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy), [(x * sx, y * sy) for x, y in pts]


def geometry_rewards(inputs: BatchInputs, components: tuple[str, ...], config: Any,
                     memo: MaskMemo) -> dict[str, list[float]]:
    """The values of the chosen box/point components (of :data:`GEOMETRY_COMPONENTS`) for every row.

    A row that is not scorable, or whose ground truth is empty (no box), gets 0.
    """
    wanted = [c for c in GEOMETRY_COMPONENTS if c in components]
    if not wanted:
        return {}
    n = len(inputs.answers)
    tag = ("samr1", config.frame, tuple(config.model_size), config.gt_points, config.point_rule)
    scorable = set(inputs.scorable)
    geo = [memo.get(inputs.gts[i], tag, lambda m: frame_geometry(m, config)) if i in scorable else (None, [])
           for i in range(n)]
    pred = [pred_geometry(inputs.answers[i], inputs.gts[i], config) if i in scorable else (None, [])
            for i in range(n)]
    out: dict[str, list[float]] = {}
    for comp in wanted:
        vals = []
        for i in range(n):
            (box, pts), (gt_box, gt_pts) = pred[i], geo[i]
            if i not in scorable or gt_box is None or box is None:
                vals.append(0.0)
            elif comp == "box_iou":
                vals.append(box_iou_reward(box, gt_box, config.box_iou_threshold))
            elif comp == "box_l1":
                vals.append(box_l1_reward(box, gt_box, config.box_l1_threshold))
            else:
                vals.append(point_distance_reward(pts, gt_pts, box, config.point_threshold))
        out[comp] = vals
    return out
