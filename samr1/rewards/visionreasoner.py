"""The ``visionreasoner`` preset: VisionReasoner's multi-object reward (Seg-Zero repository, its
``vision_reasoner`` reward), rule for rule.

The answer is a JSON LIST of objects ``[{"bbox_2d": [x1, y1, x2, y2], "point_2d": [x, y]}, ...]`` in the
policy's 840 frame; the ground truth is one box and one point per instance (the published preparation:
inclusive box and the first reference point of each ORIGINAL instance mask, scaled with
``int(v * 840 / W + 0.5)``; :mod:`samr1.rewards.truth`). The answer is the FIRST ``<answer>`` block,
read with ``json.loads``.

* "think": the WHOLE text matches ``<think>.*?</think>\\s*<answer>.*?</answer>``;
* "answer" (0..2): per object, +1 for a 4-element ``bbox_2d`` list and +1 for a 2-element ``point_2d``
  list, divided by the number of objects ("think" + "answer" is VisionReasoner's format reward);
* "accuracy" (0..3): for every (predicted, ground-truth) pair, (box IoU > 0.5) + (box mean L1 < 10) +
  (point distance < 30 and the point inside its own predicted box); predicted and ground-truth objects are
  paired by the Hungarian algorithm (``scipy.optimize.linear_sum_assignment`` on 3 minus that sum) and the
  matched sum is divided by max(predicted, ground truth), so a missed object, a duplicate or a spurious
  extra costs; at most 120 objects a side;
* "non_repeat" (0/1): the text split on "." (pieces stripped, empty ones dropped) holds fewer than two
  repeated pieces.

Anything that raises scores 0, as there. The mask components ("iou", "mask_iou") compare the union of SAM's
masks of the answer's objects with the union of the instances (``mask_match="union"``, the default, one
engine call as for one object), or each object with the instance the Hungarian algorithm pairs it with on
mask IoU (``mask_match="matched"``: the matched values summed over max(objects, instances)).

No target (samr1's extension; VisionReasoner scores an empty list 0): the answer ``[]`` earns "answer" in
full (2) and, on an empty ground truth, "accuracy" in full (3) and the mask components in full; on a
non-empty one, 0. Any other answer earns 0 accuracy on an empty ground truth.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from samr1.rewards.batch import BatchInputs, MaskMemo
from samr1.rewards.boxes import pairwise_distances
from samr1.rewards.segzero import format_rewards
from samr1.rewards.text import search_json
from samr1.rewards.tiers import tiered_iou_reward
from samr1.rewards.truth import published_geometry, resized_geometry

__all__ = ["NAME", "COMPONENTS", "DEFAULT_COMPONENTS", "POINT_THRESHOLD", "MAX_OBJECTS", "format_value",
           "pair_scores", "accuracy_reward", "non_repeat_reward", "hungarian_total", "matched_mask_values",
           "rewards"]

NAME = "visionreasoner"
COMPONENTS: tuple[str, ...] = ("think", "answer", "accuracy", "non_repeat", "iou", "mask_iou")
"""Every component this preset can sum."""
DEFAULT_COMPONENTS: tuple[str, ...] = ("think", "answer", "accuracy", "non_repeat")
"""VisionReasoner's summed reward: format (think + per-object) + accuracy + non-repeat."""
POINT_THRESHOLD = 30.0
"""VisionReasoner's point threshold (one point per object), model-frame pixels."""
MAX_OBJECTS = 120
"""VisionReasoner's cap on the objects of each side before matching."""

_FIRST_ANSWER = re.compile(r"<answer>\s*(.*?)\s*</answer>", re.DOTALL)


def _answer_payload(text: str) -> Any:
    """The first answer block, decoded with ``json.loads``; raises when there is none or it is no JSON."""
    return search_json(_FIRST_ANSWER, text, 1)


def format_value(text: Any) -> float:
    """The per-object format reward (0..2): +1 per object for a 4-element ``bbox_2d`` list, +1 for a
    2-element ``point_2d`` list, each object's share divided by the number of objects (what was summed
    before a failure is kept, as there)."""
    total = 0.0
    try:
        data = _answer_payload(text)
        n = len(data)
        for item in data:
            share = 0.0
            if "bbox_2d" in item and isinstance(item["bbox_2d"], list) and len(item["bbox_2d"]) == 4:
                share += 1.0
            if "point_2d" in item and isinstance(item["point_2d"], list) and len(item["point_2d"]) == 2:
                share += 1.0
            total += share / n
    except Exception:  # noqa: BLE001 - a failure ends the sum, as in VisionReasoner's reward
        pass
    return total


def pair_scores(pred_boxes: np.ndarray, pred_points: np.ndarray, gt_boxes: np.ndarray, gt_points: np.ndarray,
                iou_threshold: float = 0.5, l1_threshold: float = 10.0, point_threshold: float = 30.0) -> np.ndarray:
    """``M x N`` float matrix of (box IoU > 0.5) + (mean L1 < 10) + (distance < 30 and point in its box).

    Boxes ``M x 4`` / ``N x 4`` inclusive XYXY (IoU with + 1), points ``M x 2`` / ``N x 2``, one frame.
    Raises on other shapes (VisionReasoner's reward fails, and scores 0, there too).
    """
    if pred_boxes.ndim != 2 or gt_boxes.ndim != 2 or pred_boxes.shape[1] != 4 or gt_boxes.shape[1] != 4:
        raise ValueError("boxes must be M x 4 and N x 4")
    if pred_points.ndim != 2 or gt_points.ndim != 2 or pred_points.shape[1] != 2 or gt_points.shape[1] != 2:
        raise ValueError("points must be M x 2 and N x 2")
    p, g = pred_boxes, gt_boxes
    with np.errstate(all="ignore"):  # a zero union gives inf / nan, compared as such (no exception there)
        iw = np.maximum(0, np.minimum(p[:, 2:3], g[:, 2][None]) - np.maximum(p[:, 0:1], g[:, 0][None]) + 1)
        ih = np.maximum(0, np.minimum(p[:, 3:4], g[:, 3][None]) - np.maximum(p[:, 1:2], g[:, 1][None]) + 1)
        inter = iw * ih
        area_p = (p[:, 2:3] - p[:, 0:1] + 1) * (p[:, 3:4] - p[:, 1:2] + 1)
        area_g = ((g[:, 2] - g[:, 0] + 1) * (g[:, 3] - g[:, 1] + 1))[None]
        iou = inter / (area_p + area_g - inter)
        # unclipped policy numbers (1e308) overflow to inf / nan here: compared as "too far", no warning
        l1 = np.mean(np.abs(p[:, None, :] - g[None, :, :]), axis=2)
    dist = pairwise_distances(pred_points, gt_points)
    inside = ((pred_points[:, 0] >= p[:, 0]) & (pred_points[:, 0] <= p[:, 2])
              & (pred_points[:, 1] >= p[:, 1]) & (pred_points[:, 1] <= p[:, 3]))
    return ((iou > iou_threshold).astype(float) + (l1 < l1_threshold).astype(float)
            + ((dist < point_threshold) & inside[:, None]).astype(float))


def hungarian_total(score: np.ndarray, best: float) -> float:
    """The largest total of ``score`` over a one-to-one pairing of rows and columns (each pair worth at most
    ``best``), by ``scipy.optimize.linear_sum_assignment`` on ``best - score``."""
    from scipy.optimize import linear_sum_assignment

    cost = best - score
    rows, cols = linear_sum_assignment(cost)
    return len(rows) * best - cost[rows, cols].sum()


def accuracy_reward(text: Any, gt_boxes: list, gt_points: list, iou_threshold: float = 0.5,
                    l1_threshold: float = 10.0, point_threshold: float = 30.0) -> float:
    """VisionReasoner's accuracy (0..3) of the answer's objects against ground-truth boxes and points (840
    frame): the Hungarian-matched sum of :func:`pair_scores` over max(predicted, ground truth)."""
    try:
        data = _answer_payload(text)
        boxes = [item["bbox_2d"] for item in data][:MAX_OBJECTS]
        points = [item["point_2d"] for item in data][:MAX_OBJECTS]
        gb, gp = gt_boxes[:MAX_OBJECTS], gt_points[:MAX_OBJECTS]
        score = pair_scores(np.array(boxes), np.array(points), np.array(gb), np.array(gp), iou_threshold,
                            l1_threshold, point_threshold)
        return float(hungarian_total(score, 3.0) / max(len(boxes), len(gb)))
    except Exception:  # noqa: BLE001 - any failure scores 0, as in VisionReasoner's reward
        return 0.0


def non_repeat_reward(text: Any) -> float:
    """0.0 when the text, split on ".", repeats pieces (stripped, non-empty) twice or more, else 1.0."""
    if not isinstance(text, str):
        return 0.0
    seen: set[str] = set()
    repeats = 0
    for piece in (s.strip() for s in text.split(".")):
        if not piece:
            continue
        if piece in seen:
            repeats += 1
            if repeats >= 2:
                return 0.0
        seen.add(piece)
    return 1.0


def ground_truth(instances: list[np.ndarray], config: Any, memo: MaskMemo) -> tuple[list, list]:
    """(boxes, points): one inclusive box and one reference point per instance, in the model frame."""
    rule = published_geometry if config.gt_rule == "published" else resized_geometry
    tag = ("visionreasoner", config.gt_rule, tuple(config.model_size), config.point_rule)
    boxes, points = [], []
    for m in instances:
        box, pts = memo.get(m, tag, lambda x: rule(x, config.model_size, 1, config.point_rule))
        if box is not None:
            boxes.append(list(box))
            points.append(list(pts[0]))
    return boxes, points


def matched_mask_values(engine: Any, inputs: BatchInputs, rows: list[int], tiers: Any) -> tuple[list, list]:
    """("iou", "mask_iou") per row with ``mask_match="matched"``: SAM's mask of every object of every row in
    ONE ``engine.segment_batch`` call, an objects x instances mask-IoU matrix per row, the Hungarian pairing
    that maximises the summed IoU; the matched IoUs (and their tiers) summed over max(objects, instances).
    A row's ignore pixels (``inputs.ignores``) count in neither the intersection nor the union.
    Empty answer and empty ground truth: the full values; exactly one empty: 0."""
    from samr1.geometry import mask_iou_numpy

    n = len(inputs.answers)
    tiered, plain = [0.0] * n, [0.0] * n
    flat_img, flat_ans, owner = [], [], []
    for i in rows:
        for part in inputs.answers[i].per_object():
            flat_img.append(inputs.images[i])
            flat_ans.append(part)
            owner.append(i)
    masks = list(engine.segment_batch(flat_img, flat_ans)) if flat_ans else []
    per_row: dict[int, list[np.ndarray]] = {i: [] for i in rows}
    for i, m in zip(owner, masks, strict=True):
        per_row[i].append(np.asarray(m, bool))
    top = tiered_iou_reward(1.0, tiers)
    for i in rows:
        preds, gts = per_row[i], inputs.instances[i] or []
        ign = inputs.ignores[i] if inputs.ignores else None
        if ign is not None:  # ignore pixels count in neither I nor U (the instances hold none already)
            preds = [p & ~ign for p in preds]
        if not preds or not gts:
            full = not preds and not gts
            tiered[i], plain[i] = (top, 1.0) if full else (0.0, 0.0)
            continue
        iou = np.array([[mask_iou_numpy(p, g) for g in gts] for p in preds])
        tier = np.vectorize(lambda x: tiered_iou_reward(x, tiers))(iou)
        den = max(len(preds), len(gts))
        plain[i] = float(hungarian_total(iou, 1.0)) / den
        tiered[i] = float(hungarian_total(tier, top)) / den if top > 0 else 0.0
    return tiered, plain


def rewards(inputs: BatchInputs, components: tuple[str, ...], config: Any, memo: MaskMemo) -> dict[str, list[float]]:
    """The values of this preset's own components (all but the shared mask ones) for every row."""
    n = len(inputs.texts)
    out = format_rewards(inputs, components, format_value, 2.0)
    if "non_repeat" in components:
        out["non_repeat"] = [non_repeat_reward(t) for t in inputs.texts]
    if "accuracy" in components:
        vals = [0.0] * n
        for i in range(n):
            if inputs.images[i] is None or inputs.instances[i] is None:
                continue
            boxes, points = ground_truth(inputs.instances[i], config, memo)
            if not boxes:  # no target: full for the answer "no object", else 0
                vals[i] = 3.0 if inputs.answers[i].no_object else 0.0
                continue
            vals[i] = accuracy_reward(inputs.texts[i], boxes, points, config.box_iou_threshold,
                                      config.box_l1_threshold, config.point_threshold)
        out["accuracy"] = vals
    return out
