"""samr1.metrics on hand-made masks: gIoU, cIoU, the three empty-union rules, parse failures, ignore regions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from samr1.metrics import EMPTY_UNION_RULES, SegmentationMetrics, evaluate, sample_counts


def box_mask(h, w, y0, y1, x0, x1, value=1, dtype=bool):
    m = np.zeros((h, w), dtype)
    m[y0:y1, x0:x1] = value
    return m


# Four hand-made samples on 10 x 10 images:
#   A: pred 4x4 at (0,0), gt 4x4 at (0,2): I = 8, U = 24, IoU 1/3
#   B: pred = gt = 2x5: I = U = 10, IoU 1
#   C: empty pred, empty gt: I = U = 0 (the empty union)
#   D: parse failure (None), gt 3x3: I = 0, U = 9, IoU 0
A = (box_mask(10, 10, 0, 4, 0, 4), box_mask(10, 10, 0, 4, 2, 6))
B = (box_mask(10, 10, 5, 7, 1, 6), box_mask(10, 10, 5, 7, 1, 6))
C = (np.zeros((10, 10), bool), np.zeros((10, 10), bool))
D = (None, box_mask(10, 10, 7, 10, 7, 10))
SAMPLES = [A, B, C, D]


@pytest.mark.parametrize("rule,giou,n_scored", [
    ("lisa", (1 / 3 + 1 + 1 + 0) / 4, 4),
    ("visionreasoner", (1 / 3 + 1 + 0 + 0) / 4, 4),
    ("segzero", (1 / 3 + 1 + 0) / 3, 3),
])
def test_empty_union_rules_on_hand_made_masks(rule, giou, n_scored):
    res = evaluate([p for p, _ in SAMPLES], [g for _, g in SAMPLES], empty_union=rule, ids=["a", "b", "c", "d"])
    assert res.giou == pytest.approx(giou, abs=1e-12)
    assert res.ciou == pytest.approx((8 + 10 + 0 + 0) / (24 + 10 + 0 + 9), abs=1e-12)  # same under every rule
    assert (res.n, res.n_scored, res.n_skipped, res.n_parse_failures) == (4, n_scored, 4 - n_scored, 1)
    rows = res.rows
    assert [(r.intersection, r.union) for r in rows] == [(8, 24), (10, 10), (0, 0), (0, 9)]
    assert [r.id for r in rows] == ["a", "b", "c", "d"] and [r.parsed for r in rows] == [True, True, True, False]
    assert rows[2].iou == {"lisa": 1.0, "visionreasoner": 0.0, "segzero": None}[rule]
    assert rows[2].skipped == (rule == "segzero")
    assert rows[3].iou == 0.0 and rows[3].gt_pixels == 9 and rows[3].pred_pixels == 0
    assert res.as_dict(rows=True)["rows"][0]["iou"] == pytest.approx(1 / 3)


def test_parse_failure_on_empty_ground_truth_scores_zero_under_every_rule():
    for rule in EMPTY_UNION_RULES:
        res = evaluate([None], [np.zeros((4, 4), bool)], empty_union=rule)
        assert res.rows[0].iou == 0.0 and not res.rows[0].skipped
        assert res.giou == 0.0 and math.isnan(res.ciou)  # no pixel anywhere: cIoU undefined


def test_ignore_regions_are_excluded_from_intersection_and_union():
    gt = np.zeros((6, 8), np.uint8)
    gt[1:3, 1:5] = 1  # 8 object pixels
    gt[4:6, 0:8] = 255  # 16 ignore pixels
    pred = np.zeros((6, 8), bool)
    pred[1:3, 1:3] = True  # 4 right
    pred[3:6, 0:8] = True  # 8 wrong pixels in row 3, 16 inside the ignore band
    inter, union, gt_px, pred_px = sample_counts(pred, gt)
    assert (inter, gt_px, pred_px) == (4, 8, 4 + 8)
    assert union == 8 + 8  # the gt's 8 plus the 8 wrong pixels outside the ignore band
    # without the ignore value, 255 is object: 24 gt pixels, and the band counts as right
    assert sample_counts(pred, gt, ignore_value=None) == (4 + 16, 24 + 8, 24, 28)
    # a bool ground truth has no ignore regions
    assert sample_counts(pred, gt != 0) == (20, 32, 24, 28)
    # a parse failure: union = the object pixels only
    assert sample_counts(None, gt) == (0, 8, 8, 0)
    res = evaluate([pred], [gt])
    assert res.giou == pytest.approx(4 / 16)


def test_ignore_only_ground_truth_is_an_empty_union_when_nothing_else_is_predicted():
    gt = np.full((3, 3), 255, np.uint8)
    pred = np.ones((3, 3), bool)  # everything predicted is inside the ignore region
    with pytest.warns(UserWarning, match="only 0 and 255"):  # it may be a plain 0/255 mask: said, not silent
        assert evaluate([pred], [gt], empty_union="lisa").giou == 1.0
    # given as an explicit region (how samr1 eval passes ReasonSeg's), the same sample says nothing
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for rule, want in (("lisa", 1.0), ("visionreasoner", 0.0)):
            assert evaluate([pred], [np.zeros((3, 3), bool)], empty_union=rule, ignores=[gt != 0]).giou == want
        assert evaluate([pred], [np.zeros((3, 3), bool)], empty_union="segzero", ignores=[gt != 0]).n_scored == 0


def test_a_plain_0_255_mask_is_not_read_as_an_ignore_region_in_silence():
    """``np.array(Image.open(mask_png))`` of a 0/255 mask under the default ignore_value=255 is all ignore: the
    sample has no target, and an empty prediction scored 1.0 without a word. It warns now (bool or
    ignore_value=None read it as the object); a 255-coded ReasonSeg mask that holds a target does not warn."""
    import warnings

    rng = np.random.default_rng()
    for _ in range(5):
        h, w = (int(v) for v in rng.integers(4, 30, 2))
        obj = rng.random((h, w)) < 0.3
        obj[0, 0] = True
        plain = obj.astype(np.uint8) * 255
        with pytest.warns(UserWarning, match="only 0 and 255"):
            sample_counts(np.zeros((h, w), bool), plain)
        assert sample_counts(obj, plain, ignore_value=None) == sample_counts(obj, obj)
        coded = np.where(rng.random((h, w)) < 0.2, 255, obj).astype(np.uint8)
        coded[0, 0] = 1
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            got = sample_counts(obj, coded)
        # and the explicit region gives the same counts as the 255 coding
        assert got == sample_counts(obj, coded == 1, ignore=coded == 255)


def test_logits_probabilities_paths_and_rles_are_read_as_masks_are(tmp_path):
    """A float prediction with negative values (logits) or values in (0, 1) counts every nonzero pixel as
    object: it warns (once per kind, as samr1.io's masks do) instead of passing in silence; a ground truth
    given as a PNG path or a COCO RLE is read by load_mask (it used to fail with 'shape ()')."""
    import warnings

    from PIL import Image

    import samr1.io as io_mod
    from samr1.io import MaskWarning, rle_encode

    rng = np.random.default_rng()
    gt = rng.random((12, 17)) < 0.4
    for pred, kind in ((np.where(gt, 4.0, -4.0), "negative values"), (np.where(gt, 0.9, 0.1), "between 0 and 1")):
        io_mod._warned_masks.clear()
        with pytest.warns(MaskWarning, match=kind):
            sample_counts(pred, gt)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sample_counts(gt.astype(np.float32), gt)  # 0/1 floats: a mask
    Image.fromarray(gt.astype(np.uint8)).save(tmp_path / "gt.png")
    want = sample_counts(gt, gt)
    assert sample_counts(gt, str(tmp_path / "gt.png")) == want == sample_counts(gt, rle_encode(gt))
    # a ReasonSeg-coded ground truth (1 object, 255 ignore) keeps its ignore region as an array, a PIL image
    # or a PNG path alike (a path or PIL image read as bool would make the region object)
    coded = np.where(rng.random((12, 17)) < 0.2, 255, gt).astype(np.uint8)
    coded[0, 0] = 1
    Image.fromarray(coded).save(tmp_path / "coded.png")
    pred = rng.random((12, 17)) < 0.5
    assert (sample_counts(pred, Image.fromarray(coded)) == sample_counts(pred, str(tmp_path / "coded.png"))
            == sample_counts(pred, coded) == sample_counts(pred, coded == 1, ignore=coded == 255))
    with pytest.raises(ValueError, match="NaN"):
        sample_counts(np.full((12, 17), np.nan), gt)


def test_streaming_equals_batch_on_random_masks():
    rng = np.random.default_rng()
    preds, gts = [], []
    for _ in range(30):
        h, w = (int(v) for v in rng.integers(1, 20, 2))
        gts.append(np.where(rng.random((h, w)) < 0.1, 255, rng.random((h, w)) < 0.4).astype(np.uint8))
        preds.append(None if rng.random() < 0.1 else rng.random((h, w)) < rng.random())
    acc = SegmentationMetrics("segzero")
    for p, g in zip(preds, gts, strict=True):
        acc.add(p, g)
    res = evaluate(preds, gts, empty_union="segzero")
    assert acc.result().as_dict() == res.as_dict()
    # restated: per-sample counts straight from the definitions
    ious, inters, unions = [], 0, 0
    for p, g in zip(preds, gts, strict=True):
        valid, target = g != 255, (g != 0) & (g != 255)
        q = np.zeros_like(target) if p is None else (p & valid)
        i, u = int((q & target).sum()), int((q | target).sum())
        if p is not None and u == 0:
            continue  # Seg-Zero's rule: skipped
        ious.append(i / u if u else 0.0)
        inters, unions = inters + i, unions + u
    assert res.giou == pytest.approx(np.mean(ious), abs=1e-12)
    assert res.ciou == pytest.approx(inters / unions, abs=1e-12)


def test_bad_inputs_name_the_sample_and_field():
    with pytest.raises(ValueError, match="empty_union"):
        evaluate([], [], empty_union="coco")
    with pytest.raises(ValueError, match=r"sample 1 \('x'\): pred is 3x4 but gt is 4x3"):
        evaluate([np.ones((2, 2)), np.ones((3, 4))], [np.ones((2, 2)), np.ones((4, 3))], ids=["w", "x"])
    with pytest.raises(ValueError, match="sample 0: gt must be an H x W mask"):
        evaluate([None], [np.ones((2, 2, 2))])
    with pytest.raises(ValueError, match="parallel"):
        evaluate([None], [])
    with pytest.raises(ValueError, match="dtype"):
        evaluate([np.array([["a"]])], [np.ones((1, 1))])
    assert math.isnan(evaluate([], []).giou)
