"""Box and point geometry rewards (Seg-Zero's ablations, samr1's reading): box IoU, box L1, point distance.

All coordinates are XYXY boxes / ``(x, y)`` points in ONE pixel frame (the caller picks it); boxes are
inclusive pixel indices unless a convention says otherwise (see :mod:`samr1.geometry`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from samr1.geometry import box_iou

__all__ = ["box_iou_reward", "box_l1_reward", "matched_point_distance", "pairwise_distances", "point_distance_reward"]


def pairwise_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``len(a) x len(b)`` Euclidean distances of ``M x 2`` and ``N x 2`` float64 points (one frame).

    The coordinates are the policy's, unclipped: a policy can write 1e308, whose difference or square is past
    float64. Such a distance is ``inf`` (and an ``inf - inf`` is ``nan``), which every threshold test reads as
    "too far"; numpy's overflow warnings are silenced because the value already says it (a warning per
    answer would flood a training log)."""
    with np.errstate(over="ignore", invalid="ignore"):
        # sqrt of the summed squares, as the peers compute it (float-equal at a threshold, unlike hypot)
        return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))


def box_iou_reward(pred_box: Sequence[float] | None, gt_box: Sequence[float] | None, threshold: float = 0.5,
                   convention: str = "inclusive") -> float:
    """Seg-Zero's box IoU reward: 1.0 when ``box_iou(pred, gt, convention) > threshold`` (0.5), else 0.0.

    Both boxes XYXY in the same pixel frame; by default inclusive pixel indices (IoU with + 1), so the exact
    answer for a one-pixel-wide object earns IoU 1."""
    if pred_box is None or gt_box is None:
        return 0.0
    return 1.0 if box_iou(pred_box, gt_box, convention) > threshold else 0.0


def box_l1_reward(pred_box: Sequence[float] | None, gt_box: Sequence[float] | None, threshold: float = 10.0) -> float:
    """Seg-Zero's box L1 reward: 1.0 when the mean absolute difference of the 4 coordinates is ``< threshold``
    (10 px), else 0.0. Both boxes XYXY in the same pixel frame (:class:`SamR1Reward` uses the model frame by
    default, as Seg-Zero does)."""
    if pred_box is None or gt_box is None:
        return 0.0
    l1 = sum(abs(float(a) - float(b)) for a, b in zip(pred_box, gt_box, strict=True)) / 4.0
    return 1.0 if math.isfinite(l1) and l1 < threshold else 0.0


_MAX_PERMUTATIONS = 50_000


@lru_cache(maxsize=256)
def _permutations(n_large: int, n_small: int) -> np.ndarray:
    return np.array(list(itertools.permutations(range(n_large), n_small)), dtype=np.int64).reshape(-1, n_small)


def matched_point_distance(pred: Sequence[Sequence[float]], gt: Sequence[Sequence[float]]) -> float:
    """Mean Euclidean distance over the best one-to-one matching of predicted and ground-truth points.

    ``min(len(pred), len(gt))`` pairs are matched so that the summed distance is smallest (Seg-Zero's rule
    for two points: the better of the two pairings, divided by 2). Exact by enumeration when there are at
    most 50,000 assignments (always for 2 ground-truth points and up to 64 predicted ones); beyond that,
    greedy closest-pair-first. ``inf`` when either side is empty.
    """
    p = np.asarray(pred, dtype=np.float64).reshape(-1, 2)
    g = np.asarray(gt, dtype=np.float64).reshape(-1, 2)
    if len(p) == 0 or len(g) == 0:
        return math.inf
    small, large = (p, g) if len(p) <= len(g) else (g, p)
    d = pairwise_distances(small, large)  # len(small) x len(large); inf (or nan) where past float64
    d[np.isnan(d)] = np.inf
    ns, nl = d.shape
    if math.perm(nl, ns) <= _MAX_PERMUTATIONS:
        perms = _permutations(nl, ns)
        return float(d[np.arange(ns), perms].sum(axis=1).min() / ns)
    total = 0.0
    d = d.copy()
    for _ in range(ns):  # greedy: closest remaining pair first
        i, j = divmod(int(np.argmin(d)), nl)
        total += float(d[i, j])
        d[i, :] = np.inf
        d[:, j] = np.inf
    return total / ns


def point_distance_reward(pred_points: Sequence[Sequence[float]], gt_points: Sequence[Sequence[float]],
                          pred_box: Sequence[float] | None = None, threshold: float = 100.0,
                          max_points: int | None = 2) -> float:
    """Seg-Zero's point reward: 1.0 when the answer's first ``max_points`` points (2: Seg-Zero's ``points_1``,
    ``points_2``; None: all) all lie in ``pred_box`` (inclusive; skipped when None) and their
    :func:`matched_point_distance` to ``gt_points`` is ``< threshold`` (100 px), else 0.0.

    Only the first two points count so that spraying points cannot buy the reward (with all points matched,
    a grid of 62 extra points inside the box would always hold two near the reference points). One point is
    matched to the nearer reference point. All coordinates in one pixel frame."""
    if max_points is not None:
        pred_points = list(pred_points)[:max_points]
    if not len(pred_points) or not len(gt_points):
        return 0.0
    if pred_box is not None:
        x1, y1, x2, y2 = (float(v) for v in pred_box)
        if not all(x1 <= float(px) <= x2 and y1 <= float(py) <= y2 for px, py in pred_points):
            return 0.0
    dist = matched_point_distance(pred_points, gt_points)
    return 1.0 if math.isfinite(dist) and dist < threshold else 0.0
