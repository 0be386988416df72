"""samr1.rewards: format rewards, tiers, Seg-Zero ablation rewards, and SamR1Reward on a real (tiny) SAM."""

from __future__ import annotations

import itertools
import json
import math
import warnings

import numpy as np
import pytest
from PIL import Image

from samr1.answer import REASON_CODES, parse_answer
from samr1.geometry import box_iou, mask_to_box, mask_to_points
from samr1.io import rle_encode
from samr1.rewards import (
    ALL_CODES,
    COMPONENTS,
    DEFAULT_TIERS,
    SamR1Reward,
    answer_format_reward,
    box_iou_reward,
    box_l1_reward,
    completion_text,
    matched_point_distance,
    point_distance_reward,
    think_format_ok,
    think_format_reward,
    tiered_iou_reward,
    validate_tiers,
)

GOOD = '<think>the chair</think>\n<answer>{"bbox": [100, 200, 500, 600], "points_1": [300, 400], "points_2": [350, 420]}</answer>'


# ------------------------------------------------------------------------------ format rewards
@pytest.mark.parametrize("text,ok", [
    (GOOD, True),
    ("  \n<think></think><answer></answer>\n ", True),  # contents free, surrounding whitespace allowed
    ("<think>a</think> \n\t <answer>b</answer>", True),
    ("<think>a</think>x<answer>b</answer>", False),  # text between
    ("pre <think>a</think><answer>b</answer>", False),
    ("<think>a</think><answer>b</answer> post", False),
    ("<answer>b</answer><think>a</think>", False),
    ("<think>a</think><answer>b</answer><answer>c</answer>", False),  # two answers: not the format
    ("<think>a<think>b</think><answer>c</answer>", False),
    ("<think>a</think></think><answer>c</answer>", False),
    ("<think>a<answer>b</think></answer>", False),
    ("<think>a</think><answer>b", False),
    ("", False),
])
def test_think_format(text, ok):
    assert think_format_ok(text) is ok
    assert think_format_reward([text]) == [1.0 if ok else 0.0]


def test_think_format_is_linear_on_hostile_text():
    big = "<think>" + "</think><answer>" * 20_000 + "</answer>"
    assert think_format_ok(big) is False
    assert think_format_ok("<think>" + "x" * 200_000 + "</think><answer>" + "y" * 100_000 + "</answer>") is True


def test_completion_text_forms():
    assert completion_text("abc") == "abc"
    assert completion_text([{"role": "assistant", "content": "abc"}]) == "abc"
    assert completion_text([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a1"},
                            {"role": "tool", "content": "t"}, {"role": "assistant", "content": "a2"}]) == "a2"
    parts = [{"type": "text", "text": "<think>x</think>"}, {"type": "image"}, {"type": "text", "text": "<answer>"}]
    assert completion_text([{"role": "assistant", "content": parts}]) == "<think>x</think><answer>"
    assert completion_text({"role": "assistant", "content": "one"}) == "one"
    assert completion_text([{"role": "assistant", "content": None}]) == ""
    for bad in (None, 3, [{"role": "user", "content": "q"}], [3], [{"role": "assistant", "content": 5}]):
        assert completion_text(bad) is None


@pytest.mark.parametrize("text", [
    GOOD,
    GOOD.replace("points_1", "pts"),
    "<answer>{'bbox': (1, 2, 3, 4), 'points': [[1, 2]]}</answer>",
    '<answer>{"bbox": [1, 2, 3, 4]}</answer>',
    '<answer>{"bbox": [1, 2, 3, NaN], "points": [[1, 2]]}</answer>',
    '<answer>{"bbox": [1, 2, 1, 4], "points": [[1, 2]]}</answer>',
    "<answer>```json\n{\"bbox_2d\": [1, 2, 3, 4], \"point_2d\": [1, 2]}\n```</answer>",
    "no answer",
])
def test_answer_format_is_parse_answer_ok(text):
    want = 1.0 if parse_answer(text).ok else 0.0
    assert answer_format_reward([text]) == [want]
    assert answer_format_reward([[{"role": "assistant", "content": text}]]) == [want]
    # the image size never changes the verdict
    assert parse_answer(text, (31, 1999)).ok == bool(want)


def test_answer_format_values():
    texts = [GOOD, "<answer>{}</answer>", '<answer>{"bbox": [1, 2, 3, 4]}</answer>', 17]
    assert answer_format_reward(texts) == [1.0, 0.0, 0.0, 0.0]
    assert answer_format_reward(texts, require_points=False) == [1.0, 0.0, 1.0, 0.0]


# ------------------------------------------------------------------------------ tiers
@pytest.mark.parametrize("iou,want", [
    (0.0, 0.0), (0.5, 0.0), (math.nextafter(0.5, 1), 2.0), (0.6, 2.0), (0.7, 2.0), (math.nextafter(0.7, 1), 3.0),
    (0.8, 3.0), (math.nextafter(0.8, 1), 4.0), (1.0, 4.0), (-1.0, 0.0), (float("nan"), 0.0), (float("inf"), 0.0),
    (float("-inf"), 0.0), (None, 0.0), ("x", 0.0), (np.float32(0.9), 4.0),
])
def test_tiered_iou_boundaries_give_the_lower_tier(iou, want):
    assert tiered_iou_reward(iou) == want


def test_custom_tiers_and_validation():
    tiers = ((0.9, 1.0), (0.0, 0.5))
    assert tiered_iou_reward(0.95, tiers) == 1.0
    assert tiered_iou_reward(0.9, tiers) == 0.5
    assert tiered_iou_reward(0.0, tiers) == 0.0
    assert validate_tiers([[0.8, 4], [0.7, 3], [0.5, 2]]) == DEFAULT_TIERS
    for bad, match in [((), "at least one"), (((1.5, 1.0),), r"\[0, 1\]"), (((-0.1, 1.0),), r"\[0, 1\]"),
                       (((0.5, 1.0), (0.7, 2.0)), "decreasing"), (((0.5, 1.0), (0.5, 1.0)), "decreasing"),
                       (((0.7, 1.0), (0.5, 2.0)), "not increase"), (((0.5, float("nan")),), "finite"),
                       (((0.5,),), "pair"), ((("a", 1.0),), "numeric"), (3, "pairs")]:
        with pytest.raises(ValueError, match=match):
            validate_tiers(bad)


# ------------------------------------------------------------------------------ Seg-Zero ablation rewards
def test_box_rewards_hand_cases():
    gt = (10.0, 10.0, 110.0, 110.0)
    assert box_iou_reward((10, 10, 110, 110), gt) == 1.0
    # inclusive pixel indices: columns 0..99 are 100 px, 0..49 are 50 px -> IoU exactly 0.5, not > 0.5
    assert box_iou_reward((0, 0, 49, 99), (0, 0, 99, 99)) == 0.0
    assert box_iou_reward((0, 0, 50, 99), (0, 0, 99, 99)) == 1.0
    assert box_iou_reward((10, 10, 60, 110), gt) == 1.0  # 51 / 101 columns > 0.5 (with + 1)
    assert box_iou_reward((10, 10, 60, 110), gt, convention="edge") == 0.0  # 50 / 100: not > 0.5
    assert box_iou_reward((10, 10, 61, 110), gt, convention="edge") == 1.0
    assert box_iou_reward(None, gt) == 0.0 and box_iou_reward(gt, None) == 0.0
    assert box_l1_reward((19.9, 10, 110, 110), gt) == 1.0  # mean |diff| = 2.475
    assert box_l1_reward((50, 10, 110, 110), gt) == 0.0  # mean exactly 10: not < 10
    assert box_l1_reward((49.9, 10, 110, 110), gt) == 1.0  # mean 9.975
    assert box_l1_reward((40, 20, 100, 100), gt) == 0.0  # mean (30 + 10 + 10 + 10) / 4 = 15
    assert box_l1_reward((20, 20, 100, 100), gt) == 0.0  # mean exactly 10: not < 10
    assert box_l1_reward((20, 20, 100, 101), gt) == 1.0


def test_matched_point_distance_against_brute_force():
    rng = np.random.default_rng()
    for _ in range(100):
        p = rng.uniform(0, 100, (int(rng.integers(1, 6)), 2))
        g = rng.uniform(0, 100, (int(rng.integers(1, 4)), 2))
        small, large = (p, g) if len(p) <= len(g) else (g, p)
        best = min(sum(np.hypot(*(small[i] - large[j])) for i, j in enumerate(perm))
                   for perm in itertools.permutations(range(len(large)), len(small)))
        assert matched_point_distance(p.tolist(), g.tolist()) == pytest.approx(best / len(small), rel=1e-12)
    # Seg-Zero's two-point rule: the better of the two pairings, halved
    assert matched_point_distance([[0, 0], [10, 0]], [[10, 0], [0, 0]]) == 0.0
    assert matched_point_distance([[0, 0], [0, 30]], [[0, 40], [0, 0]]) == pytest.approx(5.0)
    assert matched_point_distance([], [[1, 1]]) == math.inf
    # beyond 50,000 assignments: greedy (exact here, the pairs are far apart)
    g = [[i * 1000.0, 0.0] for i in range(10)]
    p = [[i * 1000.0 + 3.0, 4.0] for i in range(9)]
    assert matched_point_distance(p, g) == pytest.approx(5.0)


def test_point_distance_reward():
    gt = [[100, 100], [200, 200]]
    assert point_distance_reward([[110, 100], [200, 190]], gt, (0, 0, 300, 300)) == 1.0
    assert point_distance_reward([[110, 100], [200, 190]], gt, (150, 0, 300, 300)) == 0.0  # a point outside the box
    assert point_distance_reward([[110, 100], [200, 190]], gt) == 1.0
    assert point_distance_reward([[300, 100], [200, 390]], gt) == 0.0  # mean distance 200
    assert point_distance_reward([[100, 199.9], [200, 200]], [[100, 100]]) == 1.0  # 99.9 < 100
    assert point_distance_reward([[100, 150], [200, 200]], [[100, 100]]) == 1.0  # the closer one is matched
    assert point_distance_reward([[100, 200]], [[100, 100]]) == 0.0  # exactly 100 is not < 100
    assert point_distance_reward([], gt) == 0.0


# ------------------------------------------------------------------------------ SamR1Reward without SAM
def _answer_text(box_model, pts_model, key="bbox"):
    return f"<think>t</think><answer>{json.dumps({key: box_model, 'points': pts_model})}</answer>"


@pytest.mark.parametrize("gt_rule", ["published", "resize"])
def test_ablation_components_without_engine_non_square_image(gt_rule):
    H, W = 420, 1680
    img = np.zeros((H, W, 3), np.uint8)
    gt = np.zeros((H, W), bool)
    gt[84:210, 336:1008] = True
    if gt_rule == "published":
        # On the original mask, then each coordinate scaled with int(v * 840 / W + 0.5), int(v * 840 / H + 0.5):
        # box (336, 84, 1007, 209) -> (168, 168, 504, 418).
        pts = mask_to_points(gt, 2)
        gt_box = [168, 168, 504, 418]
        gt_pts = [(int(x * 0.5 + 0.5), int(y * 2 + 0.5)) for x, y in pts]
    else:
        # In the 840 x 840 model frame (nearest at pixel centres: row i <- floor((i + 0.5) / 2), column j <-
        # 2j + 1) the object covers rows 168..419 and columns 168..503: inclusive box (168, 168, 503, 419).
        model_gt = np.zeros((840, 840), bool)
        model_gt[168:420, 168:504] = True
        gt_pts = mask_to_points(model_gt, 2)
        gt_box = [168, 168, 503, 419]
    exact = _answer_text(gt_box, [list(p) for p in gt_pts])
    far = _answer_text([0, 0, 50, 50], [[10, 10], [20, 20]])
    near = _answer_text([gt_box[0] + 2, gt_box[1] + 2, gt_box[2] + 4, gt_box[3] + 2], [[x + 30, y] for x, y in gt_pts])
    reward = SamR1Reward(None, components=("think", "answer", "box_iou", "box_l1", "point_dist"), gt_rule=gt_rule)
    fns = reward.functions()
    assert [f.__name__ for f in fns] == ["think_format", "answer_format", "box_iou", "box_l1", "point_distance"]
    comps = [exact, far, near, "garbage"]
    kw = {"image": [img] * 4, "mask": [gt] * 4}
    got = {f.__name__: f(prompts=["q"] * 4, completions=comps, **kw) for f in fns}
    assert got["think_format"] == [1.0, 1.0, 1.0, 0.0]
    assert got["answer_format"] == [1.0, 1.0, 1.0, 0.0]
    assert got["box_iou"] == [1.0, 0.0, 1.0, 0.0]
    # "near": box off by (2, 2, 4, 2) model px -> mean L1 2.5 < 10; points off by 30 model px < 100
    assert got["box_l1"] == [1.0, 0.0, 1.0, 0.0]
    assert got["point_distance"] == [1.0, 0.0, 1.0, 0.0]
    assert mask_to_box(gt) == (336.0, 84.0, 1007.0, 209.0)  # inclusive pixel indices
    total = reward(["q"] * 4, comps, **kw)
    assert total == [sum(v[i] for v in got.values()) for i in range(4)]


def test_constructor_validation():
    with pytest.raises(ValueError, match="need SAM"):
        SamR1Reward(None)
    with pytest.raises(ValueError, match="unknown reward components"):
        SamR1Reward(None, components=("think", "format"))
    with pytest.raises(ValueError, match="repeat"):
        SamR1Reward(None, components=("think", "think"))
    with pytest.raises(ValueError, match="sequence of names"):
        SamR1Reward(None, components="think")
    with pytest.raises(ValueError, match="decreasing"):
        SamR1Reward(None, components=("think",), tiers=((0.5, 1.0), (0.8, 2.0)))
    with pytest.raises(ValueError, match="model_size"):
        SamR1Reward(None, components=("think",), model_size=(0, 840))
    with pytest.raises(TypeError, match="score"):
        SamR1Reward(object())
    r = SamR1Reward(None, components=("think", "box_iou"))
    with pytest.raises(ValueError, match="'image'"):
        r(["q"], [GOOD], mask=[np.zeros((4, 4), bool)])
    with pytest.raises(ValueError, match="rows"):
        r(["q"], [GOOD], image=[np.zeros((4, 4, 3), np.uint8)] * 2, mask=[np.zeros((4, 4), bool)])
    # format-only rewards need no columns at all
    assert SamR1Reward(None, components=("think", "answer"))(["q"], [GOOD]) == [2.0]


# ------------------------------------------------------------------------------ SamR1Reward on a real SAM
@pytest.fixture(scope="module")
def sam():
    import torch

    from samr1.sam import load_sam

    torch.manual_seed(0)
    return load_sam("tiny")


@pytest.fixture()
def engine(sam):
    from samr1.engine import SamEngine

    return SamEngine(sam)


def _img(h, w, seed):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    base[h // 4: 3 * h // 4, w // 4: 3 * w // 4] = (200, 30, 30)  # an "object" for the random SAM to find
    return base


def _gt_with_iou(pred: np.ndarray, target: float, seed: int) -> tuple[np.ndarray, float]:
    """A ground-truth mask whose IoU with ``pred`` is ~target: pred plus disjoint extra pixels."""
    rng = np.random.default_rng(seed)
    p = int(pred.sum())
    free = np.flatnonzero(~pred.reshape(-1))
    assert p > 0 and len(free) > 0
    extra = min(len(free), max(0, round(p / target - p)))
    gt = pred.copy().reshape(-1)
    gt[rng.choice(free, size=extra, replace=False)] = True
    gt = gt.reshape(pred.shape)
    return gt, p / (p + extra)


def _conv(text):
    return [{"role": "assistant", "content": text}]


def _conv_parts(text):
    half = len(text) // 2
    return [{"role": "assistant", "content": [{"type": "text", "text": text[:half]}, {"type": "text", "text": text[half:]}]}]


def test_samr1_reward_mixed_batch_matches_designed_ious(engine):
    imgs = [_img(37, 53, 1), _img(60, 45, 2)]  # odd, non-square; one as PIL, one as an array
    good_a = '<think>a</think><answer>{"bbox": [200, 200, 640, 640], "points_1": [420, 420], "points_2": [400, 430]}</answer>'
    good_b = '<think>b</think> <answer>[{"bbox_2d": [150, 100, 700, 760], "point_2d": [[420, 420]]}]</answer>'
    ans_a = parse_answer(good_a, imgs[0].shape[:2])
    ans_b = parse_answer(good_b, imgs[1].shape[:2])
    pred_a = engine.segment(imgs[0], ans_a)
    pred_b = engine.segment(imgs[1], ans_b)
    if not pred_a.any() or pred_a.all() or not pred_b.any() or pred_b.all():
        pytest.skip("the random tiny SAM gave an empty/full mask; IoU design needs a partial one")
    gt_a, iou_a = _gt_with_iou(pred_a, 0.75, 3)  # tier 3
    gt_b, iou_b = _gt_with_iou(pred_b, 1.0, 4)  # tier 4
    gt_a_rle = rle_encode(gt_a)  # a COCO RLE dict works as a mask
    pil_a = Image.fromarray(imgs[0])
    completions = [
        good_a,  # 0: ok, IoU iou_a
        _conv(good_a),  # 1: conversational
        _conv_parts(good_b.replace("<think>b</think> ", "<think>b</think>")),  # 2: content parts, on image b
        '<think>x</think><answer>{"bbox": [1, 2, 3</answer>',  # 3: invalid_json
        "I think it is the chair.",  # 4: no_answer_block
        '<think>x</think><answer>{"bbox": [900, 5, 950, 9], "points": [[5, 5]]}</answer>',  # 5: zero_area_box
        42,  # 6: bad_completion
        good_b,  # 7: ok on image b
    ]
    images = [pil_a, pil_a, imgs[1], pil_a, imgs[1], imgs[1], pil_a, imgs[1]]
    masks = [gt_a_rle, gt_a, gt_b, gt_a, gt_b, gt_b, gt_a, gt_b]
    reward = SamR1Reward(engine, components=("think", "answer", "iou", "mask_iou"))
    metrics: dict[str, list[float]] = {}
    extra: dict[str, list] = {}

    def log_metric(name, value):
        metrics.setdefault(name, []).append(value)

    def log_extra(column, values):
        extra.setdefault(column, []).extend(values)

    calls0 = engine.stats["score_calls"]
    # exactly the keyword arguments TRL 1.16's _calculate_rewards passes (plus the dataset columns)
    kw = dict(prompts=["p"] * 8, completions=completions, completion_ids=[[1]] * 8, trainer_state=None,
              log_extra=log_extra, log_metric=log_metric, image=images, mask=masks, query=["q"] * 8)
    fns = reward.functions()
    per = {f.__name__: f(**kw) for f in fns}
    assert engine.stats["score_calls"] == calls0 + 1  # ONE engine call for every component
    total = reward(**kw)
    assert engine.stats["score_calls"] == calls0 + 1  # memoised: same lists, same batch
    assert total == [sum(per[n][i] for n in per) for i in range(8)]
    assert all(math.isfinite(v) and 0.0 <= v <= 7.0 for v in total)

    assert per["think_format"] == [1, 1, 1, 1, 0, 1, 0, 1]
    assert per["answer_format"] == [1, 1, 1, 0, 0, 0, 0, 1]
    ious = per["mask_iou"]
    for i, want in [(0, iou_a), (1, iou_a), (2, iou_b), (7, iou_b)]:
        assert ious[i] == pytest.approx(want, abs=2e-3), (i, ious[i], want)
    assert [ious[i] for i in (3, 4, 5, 6)] == [0.0] * 4
    assert per["tiered_iou"] == [3.0, 3.0, 4.0, 0, 0, 0, 0, 4.0]
    assert total[0] == pytest.approx(1 + 1 + 3 + iou_a, abs=2e-3)

    # counters and TRL logging
    reasons = reward.stats["reasons"]
    assert (reasons["invalid_json"], reasons["no_answer_block"], reasons["zero_area_box"],
            reasons["bad_completion"]) == (1, 1, 1, 1)
    assert reward.stats["batches"] == 1 and reward.stats["completions"] == 8 and reward.stats["answers_ok"] == 4
    assert metrics["samr1/reason/invalid_json"] == [1.0]
    assert metrics["samr1/reason/bad_image"] == [0.0]
    assert all(f"samr1/reason/{c}" in metrics for c in ALL_CODES)
    assert len(metrics["samr1/mean_iou"]) == 1  # logged once per batch, not once per component
    assert metrics["samr1/answer_ok_fraction"] == [0.5]
    assert metrics["samr1/mean_iou"][0] == pytest.approx(sum(ious) / 8)
    assert extra["samr1_reason"] == ["ok", "ok", "ok", "invalid_json", "no_answer_block", "zero_area_box",
                                     "bad_completion", "ok"]
    assert extra["samr1_iou"] == pytest.approx(ious)
    assert "encoder_images" in reward.stats["engine"]

    # a new batch (new list objects) is computed again
    reward(**{**kw, "completions": list(completions)})
    assert engine.stats["score_calls"] == calls0 + 2
    assert reward.stats["batches"] == 2


def test_default_reward_range_and_names_for_trl(engine):
    from trl.trainer.utils import get_callable_name

    reward = SamR1Reward(engine)
    names = [get_callable_name(f) for f in reward.functions()]
    assert names == ["think_format", "answer_format", "tiered_iou"] == [COMPONENTS[c] for c in reward.components]
    assert get_callable_name(reward) == "samr1_reward"
    rng = np.random.default_rng()
    img = _img(29, 41, 5)
    gt = np.zeros((29, 41), bool)
    gt[5:20, 10:30] = True
    comps = []
    for _ in range(6):
        x1, y1 = (float(v) for v in rng.uniform(0, 400, 2))
        comps.append(f"<think>r</think><answer>{json.dumps({'bbox': [x1, y1, x1 + 300, y1 + 300], 'points': [[x1 + 5, y1 + 5]]})}</answer>")
    out = reward(["p"] * 6, comps, image=[img] * 6, mask=[gt] * 6)
    assert all(math.isfinite(v) and 0.0 <= v <= 6.0 for v in out)
    assert all(v >= 2.0 for v in out)  # both format rewards


def test_bad_image_and_mask_rows_score_zero_and_are_counted(engine, tmp_path):
    img = _img(33, 47, 7)
    gt = np.zeros((33, 47), bool)
    gt[5:25, 5:40] = True
    missing = str(tmp_path / "no_such_image.png")
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"not a png")
    rows = [
        (img, gt, "ok"),
        (missing, gt, "bad_image"),
        (str(corrupt), gt, "bad_image"),
        (np.zeros((33, 47, 3), np.float32), gt, "bad_image"),  # float image
        (img, np.zeros((3, 3, 3, 3), bool), "bad_mask"),  # 4-D mask
        (img, {"size": [33, 47], "counts": "not rle!"}, "bad_mask"),
        (img, np.zeros((10, 10), bool), "mask_size_mismatch"),
        (img, None, "bad_mask"),
    ]
    reward = SamR1Reward(engine)
    metrics: dict[str, float] = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = reward(["p"] * len(rows), [GOOD] * len(rows), image=[r[0] for r in rows], mask=[r[1] for r in rows],
                     log_metric=lambda k, v: metrics.__setitem__(k, v))
    msgs = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert any("image (row 1)" in m and "bad_image" in m for m in msgs), msgs
    assert any("mask (row 4)" in m for m in msgs), msgs
    assert any("mask_size_mismatch" in m for m in msgs), msgs
    assert out[1:] == [2.0] * (len(rows) - 1)  # think + answer only; the IoU part is 0
    assert 2.0 <= out[0] <= 6.0
    st = reward.stats["reasons"]
    assert (st["bad_image"], st["bad_mask"], st["mask_size_mismatch"]) == (3, 3, 1)
    assert (metrics["samr1/reason/bad_image"], metrics["samr1/reason/bad_mask"],
            metrics["samr1/reason/mask_size_mismatch"]) == (3.0, 3.0, 1.0)
    assert set(REASON_CODES) <= {k.rsplit("/", 1)[1] for k in metrics if k.startswith("samr1/reason/")}


def test_image_key_and_images_column(engine):
    img = _img(20, 30, 9)
    gt = np.zeros((20, 30), bool)
    gt[2:18, 3:27] = True
    reward = SamR1Reward(engine, image_key="images", mask_key="gt")
    out = reward(["p"], [GOOD], images=[[Image.fromarray(img)]], gt=[gt])
    assert len(out) == 1 and 2.0 <= out[0] <= 6.0
    with pytest.raises(ValueError, match="'gt'"):
        reward(["p"], [GOOD], images=[[img]], mask=[gt])


def test_row_warnings_are_capped_but_counted():
    reward = SamR1Reward(None, components=("think", "box_iou"))
    n = SamR1Reward.MAX_ROW_WARNINGS + 10
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = reward(["p"] * n, [GOOD] * n, image=[np.zeros((4, 4), np.float64)] * n, mask=[np.ones((4, 4), bool)] * n)
    assert out == [1.0] * n
    assert len([w for w in caught if issubclass(w.category, RuntimeWarning)]) == SamR1Reward.MAX_ROW_WARNINGS
    assert "suppressed" in str(caught[-1].message)
    assert reward.stats["reasons"]["bad_image"] == n


# ------------------------------------------------------------------------------ Seg-Zero fidelity
def _seg(box, pts):
    return "<think>t</think><answer>" + json.dumps({"bbox": box, "points_1": pts[0], "points_2": pts[1]}) + "</answer>"


_ABLATIONS = ("box_iou", "box_l1", "point_dist")


def _ablation_rewards(reward, comps, img, gt):
    fns = {f.__name__: f for f in reward.functions()}
    kw = {"image": [img] * len(comps), "mask": [gt] * len(comps)}
    return {name: f(["q"] * len(comps), comps, **kw) for name, f in fns.items()}


def test_frame_model_gives_the_same_rewards_at_840_and_1680():
    """Seg-Zero measures 10 px / 100 px in the 840 frame: the same answer on the same scene rendered at
    840 x 840 and at 1680 x 1680 earns the same ablation rewards under the "resize" ground-truth rule (the
    published rule measures the original mask and rounds, so its 1680 box ends one 840-frame pixel further
    right and down: see test_exact_answer_for_thin_objects_earns_box_iou_1)."""
    rng = np.random.default_rng()
    small = np.zeros((840, 840), bool)
    small[100:300, 200:500] = True  # inclusive box (200, 100, 499, 299)
    yy, xx = np.ogrid[:840, :840]
    small |= (yy - 200) ** 2 + (xx - 560) ** 2 < int(rng.integers(20, 60)) ** 2
    big = np.repeat(np.repeat(small, 2, axis=0), 2, axis=1)
    gt_box = mask_to_box(small)
    p1, p2 = mask_to_points(small)
    comps = []
    for _ in range(24):
        off = rng.uniform(-25, 25, 4) * rng.integers(0, 2)
        poff = rng.uniform(-120, 120, 4) * rng.integers(0, 2)
        comps.append(_seg([gt_box[i] + off[i] for i in range(4)],
                          [[p1[0] + poff[0], p1[1] + poff[1]], [p2[0] + poff[2], p2[1] + poff[3]]]))
    six_off = _seg([gt_box[0] + 6, gt_box[1] + 6, gt_box[2] + 6, gt_box[3] + 6], [list(p1), list(p2)])
    comps.append(six_off)
    reward = SamR1Reward(None, components=_ABLATIONS, gt_rule="resize")
    at_840 = _ablation_rewards(reward, comps, np.zeros((840, 840, 3), np.uint8), small)
    at_1680 = _ablation_rewards(reward, comps, np.zeros((1680, 1680, 3), np.uint8), big)
    assert at_840 == at_1680
    assert len({tuple(v) for v in at_840.values()}) > 1 or len(set(at_840["box_l1"])) > 1  # not all equal
    # the box 6 px off in the 840 frame: L1 6 < 10 -> 1 in the model frame; in original pixels it is 12 px off
    assert at_1680["box_l1"][-1] == 1.0
    orig = _ablation_rewards(SamR1Reward(None, components=_ABLATIONS, frame="original"), [six_off],
                             np.zeros((1680, 1680, 3), np.uint8), big)
    assert orig["box_l1"] == [0.0]


def test_frame_model_and_original_on_480_x_640():
    H, W = 480, 640
    gt = np.zeros((H, W), bool)
    gt[120:360, 160:480] = True
    # the ground truth in the 840 frame, restated: model pixel (i, j) <- original (floor((i+.5) H/840), ...)
    src_r = np.floor((np.arange(840) + 0.5) * H / 840).astype(int)
    src_c = np.floor((np.arange(840) + 0.5) * W / 840).astype(int)
    rows = np.flatnonzero((src_r >= 120) & (src_r < 360))
    cols = np.flatnonzero((src_c >= 160) & (src_c < 480))
    model_box = [int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])]
    ans_box = [v + 12 for v in model_box]  # 12 model px off: L1 12, not < 10
    text = _seg(ans_box, [[420, 420], [430, 430]])
    img = np.zeros((H, W, 3), np.uint8)
    model = _ablation_rewards(SamR1Reward(None, components=("box_l1",)), [text], img, gt)
    assert model["box_l1"] == [0.0]
    scaled = [ans_box[0] * W / 840, ans_box[1] * H / 840, ans_box[2] * W / 840, ans_box[3] * H / 840]
    l1_orig = np.mean(np.abs(np.array(scaled) - np.array([160, 120, 479, 359])))
    assert l1_orig < 10  # the scenario: under 10 original pixels
    orig = _ablation_rewards(SamR1Reward(None, components=("box_l1",), frame="original"), [text], img, gt)
    assert orig["box_l1"] == [1.0]


def test_point_reward_is_not_bought_by_spraying_points():
    """Two wrong points earn 0; the same two plus 62 grid points inside the box must still earn 0."""
    gt = np.zeros((840, 840), bool)
    gt[300:600, 300:600] = True
    box = [300, 300, 599, 599]
    wrong = [[310, 310], [590, 310]]  # inside the box, far (> 100 px mean) from the reference points
    ref = mask_to_points(gt)
    assert matched_point_distance(wrong, ref) >= 100
    grid = [[int(x), int(y)] for x in np.linspace(305, 595, 8) for y in np.linspace(305, 595, 8)][:62]
    plain = "<think>t</think><answer>" + json.dumps({"bbox": box, "points": wrong}) + "</answer>"
    sprayed = "<think>t</think><answer>" + json.dumps({"bbox": box, "points": wrong + grid}) + "</answer>"
    assert len(parse_answer(sprayed).points) == 64  # SAM still receives all of them
    got = _ablation_rewards(SamR1Reward(None, components=("point_dist",)), [plain, sprayed],
                            np.zeros((840, 840, 3), np.uint8), gt)
    assert got["point_distance"] == [0.0, 0.0]
    # matching every point would have paid the spray: the cap is what stops it
    assert point_distance_reward(wrong + grid, ref, box, max_points=None) == 1.0
    # the first two points decide: the right two first earn 1 whatever follows
    right = "<think>t</think><answer>" + json.dumps({"bbox": box, "points": [list(p) for p in ref] + wrong}) + "</answer>"
    assert _ablation_rewards(SamR1Reward(None, components=("point_dist",)), [right],
                             np.zeros((840, 840, 3), np.uint8), gt)["point_distance"] == [1.0]


@pytest.mark.parametrize("width", [1, 2, 3, 10])
@pytest.mark.parametrize("size", [(840, 840), (1680, 1680)])
def test_exact_answer_for_thin_objects_earns_box_iou_1(width, size):
    """Seg-Zero's inclusive boxes on both sides: the exact answer for a 1, 2, 3 or 10 px wide object (in the
    840 frame) has box IoU 1, and a one-pixel box is a valid answer."""
    k = size[0] // 840
    gt = np.zeros(size, bool)
    x1, y1, height = 400, 200, 37
    gt[y1 * k:(y1 + height) * k, x1 * k:(x1 + width) * k] = True
    # the published ground truth: the original mask's inclusive box, each coordinate scaled as
    # int(v * 840 / W + 0.5); at 1680 px the right/bottom edges (2 x + 1) land one 840-frame pixel further
    box = [int(v / k + 0.5) for v in (x1 * k, y1 * k, (x1 + width) * k - 1, (y1 + height) * k - 1)]
    text = _seg(box, [[x1, y1 + 5], [x1 + width - 1, y1 + 30]])
    a = parse_answer(text, size)
    assert a.ok and a.model_bbox == tuple(float(v) for v in box)
    reward = SamR1Reward(None, components=("answer", "box_iou", "box_l1"))
    got = _ablation_rewards(reward, [text], np.zeros((*size, 3), np.uint8), gt)
    assert got == {"answer_format": [1.0], "box_iou": [1.0], "box_l1": [1.0]}
    assert box_iou(box, mask_to_box(gt[::k, ::k])) == (1.0 if k == 1 else pytest.approx(
        width / (width + 1) * height / (height + 1)))
    box = [x1, y1, x1 + width - 1, y1 + height - 1]
    # one pixel narrower: IoU (width - 1) / width, 0 for a 1 px object's neighbour column
    if width > 1:
        assert box_iou([x1, y1, x1 + width - 2, y1 + height - 1], box) == pytest.approx((width - 1) / width)


def test_reference_points_rule_is_configurable():
    gt = np.zeros((840, 840), bool)
    yy, xx = np.ogrid[:840, :840]
    gt |= (yy - 400) ** 2 + (xx - 400) ** 2 <= 100 ** 2  # a disc: two Seg-Zero points, one circle
    assert len(mask_to_points(gt)) == 2 and len(mask_to_points(gt, rule="circles")) == 1
    with pytest.raises(ValueError, match="point_rule"):
        SamR1Reward(None, components=("point_dist",), point_rule="centres")
    with pytest.raises(ValueError, match="circles"):
        SamR1Reward(None, components=("point_dist",), gt_points=3)
    with pytest.raises(ValueError, match="frame"):
        SamR1Reward(None, components=("box_l1",), frame="image")
    with pytest.raises(ValueError, match="multi_object"):
        SamR1Reward(None, components=("box_l1",), multi_object="all")
    assert SamR1Reward(None, components=("point_dist",), gt_points=3, point_rule="circles").gt_points == 3


@pytest.fixture(scope="module")
def shapes_sam():
    from samr1.sam import load_sam

    return load_sam("tiny-shapes")


def test_empty_ground_truth_iou_is_one_when_sam_finds_nothing(shapes_sam):
    """IoU(empty, empty) = 1: a model that correctly finds nothing earns the reward. A real engine whose
    threshold no logit reaches makes every SAM mask empty."""
    from samr1.engine import SamEngine

    engine = SamEngine(shapes_sam, threshold=1e9)
    img = _img(40, 56, 11)
    empty = np.zeros((40, 56), bool)
    full = np.zeros((40, 56), bool)
    full[10:30, 10:40] = True
    assert not engine.segment(img, parse_answer(GOOD, (40, 56))).any()
    reward = SamR1Reward(engine, components=("iou", "mask_iou", "box_iou"))
    fns = {f.__name__: f for f in reward.functions()}
    kw = {"image": [img, img], "mask": [empty, full]}
    got = {n: f(["q"] * 2, [GOOD, GOOD], **kw) for n, f in fns.items()}
    assert got["mask_iou"] == [1.0, 0.0]
    assert got["tiered_iou"] == [4.0, 0.0]
    assert got["box_iou"][0] == 0.0  # no ground-truth box: the box reward needs one


def test_multi_object_union_with_a_decoy_first(shapes_sam):
    """VisionReasoner's list answer [decoy, target]: "union" ORs SAM's mask of every object (the target is
    found), "first" keeps the decoy only. Both equal IoUs restated from the engine's own per-object masks."""
    from samr1.engine import SamEngine
    from samr1.shapes.scenes import make_scene

    engine = SamEngine(shapes_sam)
    scene = next(sc for sc in (make_scene(s, size=(300, 420), n_objects=2) for s in range(700, 800))
                 if len(sc.objects) == 2 and not (sc.objects[0].mask & sc.objects[1].mask).any()
                 and all(o.mask.mean() > 0.02 for o in sc.objects))
    decoy, target = scene.objects
    H, W = target.mask.shape
    objs = []
    for o in (decoy, target):
        x1, y1, x2, y2 = mask_to_box(o.mask)
        (px, py), _ = mask_to_points(o.mask)
        objs.append({"bbox_2d": [x1 * 840 / W, y1 * 840 / H, x2 * 840 / W, y2 * 840 / H],
                     "point_2d": [px * 840 / W, py * 840 / H]})
    text = "<think>t</think><answer>" + json.dumps(objs) + "</answer>"
    union = SamR1Reward(engine, components=("mask_iou",))
    first = SamR1Reward(engine, components=("mask_iou",), multi_object="first")
    kw = {"image": [scene.image], "mask": [target.mask]}
    iou_union = union(["q"], [text], **kw)[0]
    iou_first = first(["q"], [text], **kw)[0]
    a = parse_answer(text, (H, W))
    parts = [engine.segment(scene.image, p) for p in a.per_object()]
    assert len(parts) == 2
    m_union = parts[0] | parts[1]
    np.testing.assert_array_equal(engine.segment(scene.image, a), m_union)
    want_union = (m_union & target.mask).sum() / (m_union | target.mask).sum()
    want_first = (parts[0] & target.mask).sum() / (parts[0] | target.mask).sum()
    assert iou_union == pytest.approx(want_union, abs=1e-9)
    assert iou_first == pytest.approx(want_first, abs=2e-3)  # the fused op on one prompt
    assert iou_union > iou_first + 0.2, (iou_union, iou_first)


def test_a_shared_bad_image_is_reported_for_the_row_that_has_it(engine):
    # G copies of one unreadable image: each row's warning names the row it is about, not only the first row
    bad = np.zeros((6, 6), dtype=np.float32)  # not an H x W x 3 uint8 image
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        SamR1Reward(engine)(["p"] * 3, [GOOD] * 3, image=[bad] * 3, mask=[np.zeros((6, 6), bool)] * 3)
    msgs = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(msgs) == 3
    assert "row 0" in msgs[0] and "holds the same" not in msgs[0]
    for i in (1, 2):
        assert f"row {i} holds the same image" in msgs[i] and f"rewards of row {i} are 0" in msgs[i], msgs[i]
