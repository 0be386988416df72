"""The reward under hostile answers and rows, where it used to fail in silence.

- Coordinates near the float limit (1e308) leaked numpy's overflow warnings into the training log: the
  geometry rewards compute squares and sums of unclipped model-frame numbers. They must score 0 and say
  nothing (a warning per step would flood the log; the answer is simply far from everything).
"""

from __future__ import annotations

import itertools
import json
import warnings

import numpy as np
import pytest

from samr1.rewards import SamR1Reward

# Magnitudes whose squares, differences or sums overflow float64 (1.35e154 is where a square does).
HUGE = ["1e308", "-1e308", "1.7976931348623157e308", "-1.7976931348623157e308", "9e307", "1e200", "-1e200",
        "1.4e154", "-1.4e154"]
PRESET_COMPONENTS = {
    "samr1": ("think", "answer", "iou", "mask_iou", "box_iou", "box_l1", "point_dist"),
    "segzero": ("think", "answer", "iou", "box_iou", "box_l1", "point_dist"),
    "visionreasoner": ("think", "answer", "iou", "accuracy", "non_repeat"),
}
GEOMETRY = ("box_iou", "box_l1", "point_dist", "accuracy")


def _answers(a: str, b: str) -> list[str]:
    """Answers in every form a preset reads, holding ``a`` and ``b`` (JSON number literals) in boxes and points."""
    forms = [
        '{"bbox": [%s, %s, %s, %s], "points_1": [%s, %s], "points_2": [%s, %s]}' % (a, b, a, b, a, b, b, a),
        '{"bbox": [0, 0, %s, %s], "points_1": [1, 1], "points_2": [%s, 2]}' % (a, b, a),
        '{"bbox": [%s, 0, 3, %s], "points_1": [%s, 1], "points_2": [1, 2]}' % (a, b, b),
        '[{"bbox_2d": [%s, %s, %s, %s], "point_2d": [%s, %s]}]' % (a, a, b, b, a, b),
        '[{"bbox_2d": [0, 0, %s, %s], "point_2d": [%s, 3]}, {"bbox_2d": [1, 1, 5, 5], "point_2d": [2, 3]}]' % (a, b, a),
    ]
    return [f"<think>far away</think><answer>{f}</answer>" for f in forms]


@pytest.mark.parametrize("preset", sorted(PRESET_COMPONENTS))
@pytest.mark.parametrize("frame", [(840, 840), (1000, 1000)], ids=["pixels", "norm1000"])
def test_huge_coordinates_score_zero_without_a_warning(shapes_engine, preset, frame):
    img = np.zeros((61, 83, 3), np.uint8)
    gt = np.zeros((61, 83), bool)
    gt[10:30, 20:50] = True
    comps = PRESET_COMPONENTS[preset]
    reward = SamR1Reward(shapes_engine, preset=preset, components=comps, model_size=frame)
    texts = [t for a, b in itertools.product(HUGE, repeat=2) for t in _answers(a, b)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning (numpy's RuntimeWarning included) fails the test
        fns = reward.functions()
        values = {f.component: f(None, texts, image=[img] * len(texts), mask=[gt] * len(texts)) for f in fns}
    for comp in GEOMETRY:
        if comp in values:
            assert values[comp] == [0.0] * len(texts), comp
    assert all(np.isfinite(v).all() for v in values.values())


def test_point_distance_overflows_to_inf_silently():
    from samr1.rewards.boxes import matched_point_distance, point_distance_reward

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for a, b in itertools.product([1e308, -1e308, 1.7e308, 1.4e154, -1e200], repeat=2):
            assert matched_point_distance([(a, b)], [(0.0, 0.0), (3.0, 4.0)]) == np.inf
            assert point_distance_reward([(a, b), (b, a)], [(0.0, 0.0), (3.0, 4.0)]) == 0.0
        # the reward still pays where it should
        assert point_distance_reward([(1.0, 1.0), (3.0, 4.0)], [(0.0, 0.0), (3.0, 4.0)]) == 1.0


def test_visionreasoner_pair_scores_overflow_silently():
    from samr1.rewards.visionreasoner import pair_scores

    gt_boxes = np.array([[10.0, 10.0, 50.0, 40.0]])
    gt_points = np.array([[30.0, 25.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for a, b in itertools.product([1e308, -1e308, 1.7976931348623157e308, 1.4e154], repeat=2):
            s = pair_scores(np.array([[a, b, a, b], [10.0, 10.0, 50.0, 40.0]]), np.array([[a, b], [30.0, 25.0]]),
                            gt_boxes, gt_points)
            assert s[0, 0] == 0.0 and s[1, 0] == 3.0, (a, b, s)


def test_huge_coordinates_are_json_numbers():
    # the forms above are what a policy can write: plain JSON numbers that parse to finite floats
    for a in HUGE:
        assert np.isfinite(json.loads(a))
