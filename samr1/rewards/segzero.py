"""The ``segzero`` preset: Seg-Zero's training reward (its ``seg_strict`` reward), rule for rule.

Each component reads the completion ON ITS OWN, as Seg-Zero's does, so one malformed part costs only the
components that need it (a box reward pays even when the points are malformed):

* "think": the WHOLE text matches ``<think>.*?</think>\\s*<answer>.*?</answer>`` (dot matches newlines);
* "answer": the first ``{...}`` without an inner ``}`` anywhere in the text is JSON with keys ``bbox``
  (a 4-element list), ``points_1`` and ``points_2`` (2-element lists): structure only, element types are
  not checked;
* "box_iou": that object's ``bbox`` (4 elements) has IoU > 0.5 with the ground-truth box, where an
  intersection counts only when it is STRICTLY positive on both axes (``x1 < x2`` and ``y1 < y2`` of the
  overlap; a one-pixel-wide exact box scores 0) and areas are inclusive (``+ 1``);
* "box_l1": the mean of the 4 absolute corner differences is < 10;
* "point_dist": ``points_1`` and ``points_2`` truncated with ``int()`` both lie in the (4-element) box, and
  the better of the two pairings with the reference points has mean distance < 100.

Anything that raises (a missing key, a string where a number belongs, a zero union) scores 0, as there.
Numbers are compared as written, in the policy's 840 frame; the ground truth is the published one
(:mod:`samr1.rewards.truth`): inclusive box and two reference points of the ORIGINAL mask, scaled with
``int(v * 840 / W + 0.5)``. Several ground-truth instances: their union's box and points (Seg-Zero trains
on one object).

No target (samr1's extension; Seg-Zero's data has no empty target): the answer ``[]`` counts as a
well-formed answer ("answer" 1) and earns "box_iou", "box_l1" and "point_dist" in full on an empty ground
truth, 0 on a non-empty one; any other answer earns 0 from them on an empty ground truth.
"""

from __future__ import annotations

import math
import re
from typing import Any

from samr1.rewards.batch import BatchInputs, MaskMemo
from samr1.rewards.samr1 import no_target_value
from samr1.rewards.text import search_json
from samr1.rewards.truth import published_geometry, resized_geometry

__all__ = ["NAME", "COMPONENTS", "DEFAULT_COMPONENTS", "POINT_THRESHOLD", "think_reward", "format_reward",
           "box_iou_value", "box_iou_reward", "box_l1_reward", "point_reward", "format_rewards", "rewards"]

NAME = "segzero"
COMPONENTS: tuple[str, ...] = ("think", "answer", "iou", "mask_iou", "box_iou", "box_l1", "point_dist")
"""Every component this preset can sum."""
DEFAULT_COMPONENTS: tuple[str, ...] = ("think", "answer", "box_iou", "box_l1", "point_dist")
"""Seg-Zero's summed reward: think format + segmentation format + box IoU + box L1 + points."""
POINT_THRESHOLD = 100.0

_THINK_ANSWER = re.compile(r"<think>.*?</think>\s*<answer>.*?</answer>", re.DOTALL)
_FIRST_OBJECT = re.compile(r"{[^}]+}")


def _first_object(text: str) -> Any:
    """The first ``{...}`` (no inner ``}``) of the text, decoded as JSON; raises when there is none."""
    return search_json(_FIRST_OBJECT, text)


def think_reward(text: Any) -> float:
    """1.0 when the whole text is ``<think>...</think>`` + whitespace + ``<answer>...</answer>``, else 0.0."""
    return 1.0 if isinstance(text, str) and _THINK_ANSWER.fullmatch(text) else 0.0


def format_reward(text: Any) -> float:
    """1.0 when the first ``{...}`` holds ``bbox`` (a 4-element list), ``points_1`` and ``points_2``
    (2-element lists), else 0.0."""
    try:
        obj = _first_object(text)
        if any(k not in obj for k in ("bbox", "points_1", "points_2")):
            return 0.0
        shapes = ((obj["bbox"], 4), (obj["points_1"], 2), (obj["points_2"], 2))
        return 1.0 if all(isinstance(v, list) and len(v) == n for v, n in shapes) else 0.0
    except Exception:  # noqa: BLE001 - any failure is a format failure, as in Seg-Zero's reward
        return 0.0


def box_iou_value(pred: Any, gt: Any) -> float:
    """IoU of two inclusive XYXY boxes, the overlap counted only when strictly positive on both axes
    (raises on a zero union or non-numbers)."""
    ix1, iy1 = max(pred[0], gt[0]), max(pred[1], gt[1])
    ix2, iy2 = min(pred[2], gt[2]), min(pred[3], gt[3])
    inter = (ix2 - ix1 + 1) * (iy2 - iy1 + 1) if ix1 < ix2 and iy1 < iy2 else 0
    area_p = (pred[2] - pred[0] + 1) * (pred[3] - pred[1] + 1)
    area_g = (gt[2] - gt[0] + 1) * (gt[3] - gt[1] + 1)
    return float(inter) / (area_p + area_g - inter)


def box_iou_reward(text: Any, gt_box: Any, threshold: float = 0.5) -> float:
    """1.0 when the first object's 4-element ``bbox`` has :func:`box_iou_value` > ``threshold`` with
    ``gt_box``, else 0.0."""
    try:
        box = _first_object(text)["bbox"]
        return 1.0 if len(box) == 4 and box_iou_value(box, gt_box) > threshold else 0.0
    except Exception:  # noqa: BLE001
        return 0.0


def box_l1_reward(text: Any, gt_box: Any, threshold: float = 10.0) -> float:
    """1.0 when the first object's 4-element ``bbox`` is within a mean absolute corner difference of
    ``threshold`` of ``gt_box``, else 0.0."""
    try:
        box = _first_object(text)["bbox"]
        if len(box) != 4:
            return 0.0
        l1 = (abs(box[0] - gt_box[0]) + abs(box[1] - gt_box[1]) + abs(box[2] - gt_box[2])
              + abs(box[3] - gt_box[3])) / 4
        return 1.0 if l1 < threshold else 0.0
    except Exception:  # noqa: BLE001
        return 0.0


def _pair_distance(p: list, g: Any) -> float:
    """The better pairing of two points with two reference points: its mean Euclidean distance."""
    straight = (math.sqrt((p[0][0] - g[0][0]) ** 2 + (p[0][1] - g[0][1]) ** 2)
                + math.sqrt((p[1][0] - g[1][0]) ** 2 + (p[1][1] - g[1][1]) ** 2))
    crossed = (math.sqrt((p[0][0] - g[1][0]) ** 2 + (p[0][1] - g[1][1]) ** 2)
               + math.sqrt((p[1][0] - g[0][0]) ** 2 + (p[1][1] - g[0][1]) ** 2))
    return min(straight, crossed) / 2


def point_reward(text: Any, gt_points: Any, threshold: float = 100.0) -> float:
    """1.0 when ``points_1`` and ``points_2``, truncated with ``int()``, lie in the first object's 4-element
    ``bbox`` (inclusive) and their better pairing with ``gt_points`` is closer than ``threshold``."""
    try:
        obj = _first_object(text)
        box = obj["bbox"]
        if len(box) != 4:
            return 0.0
        pts = [[int(p[0]), int(p[1])] for p in (obj["points_1"], obj["points_2"])]
        inside = all(box[0] <= x <= box[2] and box[1] <= y <= box[3] for x, y in pts)
        return 1.0 if inside and _pair_distance(pts, gt_points) < threshold else 0.0
    except Exception:  # noqa: BLE001
        return 0.0


def format_rewards(inputs: BatchInputs, components: tuple[str, ...], answer_format: Any,
                   no_object_value: float) -> dict[str, list[float]]:
    """"think" (:func:`think_reward`) and "answer" (``answer_format(text)``; ``no_object_value`` for the
    answer ``[]``, the no-target extension) of every row, those of the two that ``components`` holds."""
    out: dict[str, list[float]] = {}
    if "think" in components:
        out["think"] = [think_reward(t) for t in inputs.texts]
    if "answer" in components:
        out["answer"] = [no_object_value if a.no_object else answer_format(t)
                         for t, a in zip(inputs.texts, inputs.answers, strict=True)]
    return out


def ground_truth(gt: Any, config: Any) -> tuple[Any, list]:
    """(box, two reference points) of a mask in the model frame, by ``config.gt_rule``."""
    rule = published_geometry if config.gt_rule == "published" else resized_geometry
    return rule(gt, config.model_size, 2, config.point_rule)


def rewards(inputs: BatchInputs, components: tuple[str, ...], config: Any, memo: MaskMemo) -> dict[str, list[float]]:
    """The values of this preset's own components (all but the shared mask ones) for every row."""
    n = len(inputs.texts)
    out = format_rewards(inputs, components, format_reward, 1.0)
    wanted = [c for c in ("box_iou", "box_l1", "point_dist") if c in components]
    for comp in wanted:
        out[comp] = [0.0] * n
    if not wanted:
        return out
    tag = ("segzero", config.gt_rule, tuple(config.model_size), config.point_rule)
    rows = [i for i in range(n) if inputs.images[i] is not None and inputs.gts[i] is not None]
    for i in rows:
        text, gt = inputs.texts[i], inputs.gts[i]
        fixed = no_target_value(inputs.answers[i], gt, 1.0)
        if fixed is not None:
            for comp in wanted:
                out[comp][i] = fixed
            continue
        gt_box, gt_pts = memo.get(gt, tag, lambda m: ground_truth(m, config))
        if "box_iou" in wanted:
            out["box_iou"][i] = box_iou_reward(text, gt_box, config.box_iou_threshold)
        if "box_l1" in wanted:
            out["box_l1"][i] = box_l1_reward(text, gt_box, config.box_l1_threshold)
        if "point_dist" in wanted:
            out["point_dist"][i] = point_reward(text, gt_pts, config.point_threshold)
    return out
