"""samr1.geometry against brute force: exact EDT, mask boxes, reference points (Seg-Zero's rule and circles),
box IoU in both conventions, nearest resize."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from samr1.geometry import (
    box_iou,
    distance_transform_edt,
    mask_to_box,
    mask_to_points,
    resize_mask_nearest,
    squared_edt,
)


def brute_squared_edt(mask: np.ndarray, border_is_background: bool) -> np.ndarray:
    """Squared distance from every object pixel to every background pixel, minimum taken: O((HW)^2)."""
    h, w = mask.shape
    bg = [(i, j) for i in range(h) for j in range(w) if not mask[i, j]]
    if border_is_background:
        bg += [(i, j) for i in range(-1, h + 1) for j in (-1, w)] + [(i, j) for i in (-1, h) for j in range(w)]
    out = np.zeros((h, w))
    if not bg:
        return np.full((h, w), np.inf)
    b = np.array(bg, dtype=np.float64)
    ii, jj = np.nonzero(mask)
    d = (ii[:, None] - b[None, :, 0]) ** 2 + (jj[:, None] - b[None, :, 1]) ** 2
    out[ii, jj] = d.min(axis=1)
    return out


def random_masks(rng, n, max_side=14):
    for _ in range(n):
        h, w = (int(v) for v in rng.integers(1, max_side + 1, size=2))
        kind = rng.integers(0, 3)
        if kind == 0:
            m = rng.random((h, w)) < rng.random()
        elif kind == 1:  # blobs: a few filled rectangles
            m = np.zeros((h, w), bool)
            for _ in range(rng.integers(1, 4)):
                y0, x0 = rng.integers(0, h), rng.integers(0, w)
                m[y0:y0 + rng.integers(1, h + 1), x0:x0 + rng.integers(1, w + 1)] = True
        else:
            m = rng.random((h, w)) < 0.9
        yield m


@pytest.mark.parametrize("border", [True, False])
def test_edt_matches_brute_force_on_random_masks(border):
    rng = np.random.default_rng()  # fresh inputs every run
    for m in random_masks(rng, 200):
        got = squared_edt(m, border_is_background=border)
        want = brute_squared_edt(m, border)
        assert got.dtype == np.float64 and got.shape == m.shape
        np.testing.assert_array_equal(got, want)  # exact: integer-valued squared distances


@pytest.mark.parametrize("shape", [(1, 1), (1, 17), (17, 1), (2, 3), (13, 7), (31, 29)])
@pytest.mark.parametrize("fill", ["empty", "full", "one", "random"])
@pytest.mark.parametrize("border", [True, False])
def test_edt_odd_shapes_and_extremes(shape, fill, border):
    rng = np.random.default_rng()
    m = {"empty": np.zeros(shape, bool), "full": np.ones(shape, bool), "random": rng.random(shape) < 0.6}.get(fill)
    if fill == "one":
        m = np.zeros(shape, bool)
        m[rng.integers(0, shape[0]), rng.integers(0, shape[1])] = True
    np.testing.assert_array_equal(squared_edt(m, border), brute_squared_edt(m, border))
    np.testing.assert_allclose(distance_transform_edt(m, border), np.sqrt(brute_squared_edt(m, border)))


def test_edt_accepts_integer_masks_and_rejects_wrong_rank():
    m = np.array([[0, 3, 3], [0, 5, 0]], dtype=np.uint8)
    np.testing.assert_array_equal(squared_edt(m), brute_squared_edt(m != 0, True))
    with pytest.raises(ValueError, match="2-D"):
        squared_edt(np.zeros((2, 3, 4), bool))


def test_edt_larger_mask_against_brute_force():
    rng = np.random.default_rng()
    m = np.zeros((61, 47), bool)
    yy, xx = np.ogrid[:61, :47]
    m |= (yy - 30) ** 2 / 400 + (xx - 20) ** 2 / 200 < 1
    m ^= rng.random(m.shape) < 0.02
    np.testing.assert_array_equal(squared_edt(m), brute_squared_edt(m, True))


# ------------------------------------------------------------------------------ boxes
def test_mask_to_box_conventions_against_brute_force():
    rng = np.random.default_rng()
    for m in random_masks(rng, 100, 20):
        ys, xs = np.nonzero(m)
        if len(xs) == 0:
            assert mask_to_box(m) is None and mask_to_box(m, "inclusive") is None
            continue
        assert mask_to_box(m, convention="edge") == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        assert mask_to_box(m) == (xs.min(), ys.min(), xs.max(), ys.max())  # inclusive is the default
        x1, y1, x2, y2 = mask_to_box(m, "edge")
        assert m[int(y1):int(y2), int(x1):int(x2)].sum() == m.sum()  # edge box covers every pixel
    assert mask_to_box(np.zeros((3, 3))) is None
    with pytest.raises(ValueError, match="convention"):
        mask_to_box(np.ones((2, 2)), convention="center")


def raster(box, size=24):
    g = np.zeros((size, size), bool)
    x1, y1, x2, y2 = box
    g[min(y1, y2):max(y1, y2), min(x1, x2):max(x1, x2)] = True
    return g


def test_box_iou_against_rasterised_boxes():
    rng = np.random.default_rng()
    for _ in range(300):
        a = [int(v) for v in rng.integers(0, 24, 4)]
        b = [int(v) for v in rng.integers(0, 24, 4)]
        ra, rb = raster(a), raster(b)
        union = (ra | rb).sum()
        want = (ra & rb).sum() / union if union else 0.0
        assert box_iou(a, b, convention="edge") == pytest.approx(want, abs=1e-12)


def raster_inclusive(box, size=24):
    """Inclusive pixel indices: columns x1..x2 and rows y1..y2, both ends included."""
    g = np.zeros((size, size), bool)
    x1, y1, x2, y2 = box
    g[min(y1, y2):max(y1, y2) + 1, min(x1, x2):max(x1, x2) + 1] = True
    return g


def test_box_iou_inclusive_against_rasterised_boxes():
    rng = np.random.default_rng()
    for _ in range(300):
        a = [int(v) for v in rng.integers(0, 23, 4)]
        b = [int(v) for v in rng.integers(0, 23, 4)]
        if rng.random() < 0.2:  # degenerate one-pixel-wide / -high boxes
            a[2] = a[0]
        ra, rb = raster_inclusive(a), raster_inclusive(b)
        want = (ra & rb).sum() / (ra | rb).sum()  # never empty: an inclusive box covers >= 1 pixel
        assert box_iou(a, b) == pytest.approx(want, abs=1e-12)


def test_box_iou_hand_cases():
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert box_iou((0, 0, 9, 9), (5, 0, 14, 9)) == pytest.approx(50 / 150)  # 10 px wide each, 5 shared
    assert box_iou((0, 0, 9, 9), (10, 0, 19, 9)) == 0.0  # adjacent columns, none shared
    assert box_iou((0, 0, 10, 10), (10, 0, 20, 10)) == pytest.approx(11 / 231)  # column 10 is shared
    assert box_iou((10, 10, 0, 0), (0, 0, 10, 10)) == 1.0  # corners sorted
    assert box_iou((0, 0, 0, 10), (0, 0, 0, 10)) == 1.0  # a one-pixel-wide box equals itself
    assert box_iou((3, 3, 3, 3), (3, 3, 3, 3)) == 1.0 and box_iou((3, 3, 3, 3), (4, 3, 4, 3)) == 0.0
    assert box_iou((0, 0, 0, 10), (0, 0, 0, 10), convention="edge") == 0.0  # zero union
    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10), convention="edge") == pytest.approx(50 / 150)
    assert box_iou((0, 0, float("nan"), 10), (0, 0, 10, 10)) == 0.0
    with pytest.raises(ValueError, match="convention"):
        box_iou((0, 0, 1, 1), (0, 0, 1, 1), convention="centre")


# ------------------------------------------------------------------------------ inscribed-circle points
def brute_points(mask, k, border):
    """The documented rule, by brute force: argmax of the EDT (row-major first), remove the open disc, repeat."""
    m = mask.copy()
    h, w = m.shape
    out = []
    for _ in range(k):
        if not m.any():
            break
        d2 = brute_squared_edt(m, border)
        best = max((d2[i, j], -i, -j) for i in range(h) for j in range(w) if m[i, j])
        r2, y, x = best[0], -best[1], -best[2]
        out.append((float(x), float(y)))
        for i, j in itertools.product(range(h), range(w)):
            if (i - y) ** 2 + (j - x) ** 2 < r2:
                m[i, j] = False
        m[y, x] = False
    return out


def test_circles_rule_matches_brute_force_rule():
    rng = np.random.default_rng()
    for m in random_masks(rng, 60, 16):
        for k in (1, 2, 3):
            assert mask_to_points(m, k, rule="circles") == brute_points(m, k, True)
        assert mask_to_points(m, 2, border_is_background=False, rule="circles") == brute_points(m, 2, False) or m.all()


def segzero_points_restated(mask):
    """Seg-Zero's rule, restated with loops over a brute-force EDT in scipy's semantics (the array border is
    not background): first = argmax EDT (row-major first); second = among mask pixels farther from the first
    than the median distance, the largest EDT (row-major first); else the largest EDT in the 20 x 20 window at
    the centroid truncated to ints, moved to the nearest mask pixel when off the mask."""
    h, w = mask.shape
    pix = [(i, j) for i in range(h) for j in range(w) if mask[i, j]]
    if not pix:
        return []
    d2 = brute_squared_edt(mask, False)
    if np.isinf(d2).any():  # no background pixel anywhere: the documented fallback counts the border
        d2 = brute_squared_edt(mask, True)
    best = None
    for i, j in pix:
        if best is None or d2[i, j] > d2[best]:
            best = (i, j)
    y1, x1 = best
    dist = [float(np.sqrt((i - y1) ** 2 + (j - x1) ** 2)) for i, j in pix]
    med = float(np.median(dist))
    second = None
    for (i, j), d in zip(pix, dist, strict=True):
        if d > med and (second is None or d2[i, j] > d2[second]):
            second = (i, j)
    if second is None:  # the published fallback: the largest EDT in a 20 x 20 window at the int centroid
        cy = int(sum(i for i, _ in pix) / len(pix))
        cx = int(sum(j for _, j in pix) / len(pix))
        for i in range(max(0, cy - 10), min(h, cy + 10)):
            for j in range(max(0, cx - 10), min(w, cx + 10)):
                if second is None or d2[i, j] > d2[second]:
                    second = (i, j)
        if not mask[second]:  # off the mask: the nearest mask pixel
            sy, sx = second
            second = min(pix, key=lambda p: (p[0] - sy) ** 2 + (p[1] - sx) ** 2)
    return [(float(x1), float(y1)), (float(second[1]), float(second[0]))]


def test_segzero_rule_matches_restatement_on_random_masks():
    rng = np.random.default_rng()
    for m in random_masks(rng, 120, 18):
        want = segzero_points_restated(m)
        assert mask_to_points(m) == want
        assert mask_to_points(m, 1) == want[:1]
        for x, y in want:
            assert m[int(y), int(x)]  # both points are object pixels


def test_segzero_rule_hand_cases():
    # a disc gives two points (the circles rule gives one: the disc is used up by its own circle)
    yy, xx = np.ogrid[:41, :41]
    disc = (yy - 20) ** 2 + (xx - 20) ** 2 <= 15 ** 2
    pts = mask_to_points(disc)
    assert len(pts) == 2 and pts[0] == (20.0, 20.0) and pts[1] != pts[0]
    assert len(mask_to_points(disc, rule="circles")) == 1
    # the array border is not background: a bar touching the left edge has its deepest pixel at that edge
    bar = np.zeros((9, 30), bool)
    bar[2:7, 0:20] = True
    assert mask_to_points(bar, 1) == [(0.0, 4.0)]
    assert mask_to_points(bar, 1, border_is_background=True)[0][1] == 4.0
    # one pixel: the farther-than-median set is empty -> the pixel nearest the centroid (itself)
    one = np.zeros((5, 5), bool)
    one[2, 3] = True
    assert mask_to_points(one) == [(3.0, 2.0), (3.0, 2.0)]
    # a full mask (no background under scipy's semantics) falls back to the border as background
    assert mask_to_points(np.ones((7, 7), bool), 1) == [(3.0, 3.0)]
    assert mask_to_points(np.zeros((4, 4), bool)) == [] and mask_to_points(disc, 0) == []
    with pytest.raises(ValueError, match="circles"):
        mask_to_points(disc, 3)
    with pytest.raises(ValueError, match="rule"):
        mask_to_points(disc, rule="centroid")


def test_resize_mask_nearest_against_restatement():
    rng = np.random.default_rng()
    for _ in range(40):
        H, W = (int(v) for v in rng.integers(1, 60, 2))
        h, w = (int(v) for v in rng.integers(1, 60, 2))
        m = rng.random((H, W)) < 0.5
        want = np.array([[m[min(int((i + 0.5) * H / h), H - 1), min(int((j + 0.5) * W / w), W - 1)]
                          for j in range(w)] for i in range(h)], dtype=bool).reshape(h, w)
        np.testing.assert_array_equal(resize_mask_nearest(m, (h, w)), want)
        # an integer upscale followed by the resize gives the mask back
        k = int(rng.integers(2, 4))
        np.testing.assert_array_equal(resize_mask_nearest(np.kron(m, np.ones((k, k), bool)), (H, W)), m)
    with pytest.raises(ValueError, match="size"):
        resize_mask_nearest(np.ones((3, 3)), (0, 3))


def test_mask_to_points_rectangle_and_two_discs():
    m = np.zeros((40, 60), bool)
    m[10:31, 5:26] = True  # 21 x 21 square: centre (15, 20), radius 11 to the nearest background
    yy, xx = np.ogrid[:40, :60]
    m |= (yy - 20) ** 2 + (xx - 45) ** 2 <= 36  # a disc of radius 6 around (45, 20)
    pts = mask_to_points(m, 2, rule="circles")
    assert pts[0] == (15.0, 20.0)
    assert pts[1] == (45.0, 20.0)
    for x, y in pts:
        assert m[int(y), int(x)]
    assert mask_to_points(np.zeros((5, 5), bool)) == []
    assert mask_to_points(m, 0) == []
    one = np.zeros((5, 5), bool)
    one[2, 3] = True
    assert mask_to_points(one, 2, rule="circles") == [(3.0, 2.0)]  # mask exhausted after the first circle
    with pytest.raises(ValueError, match="k"):
        mask_to_points(m, -1)


def test_resize_longest_side_equals_upstream_preprocess_shape():
    from segment_anything.utils.transforms import ResizeLongestSide

    from samr1.geometry import resize_longest_side

    rng = np.random.default_rng()
    sizes = [(1, 1), (1, 5000), (5000, 1), (480, 640), (3, 7)] + [tuple(rng.integers(1, 6000, 2)) for _ in range(3000)]
    for h, w in sizes:
        for frame in (1024, 256, 840, 1000):
            assert resize_longest_side(int(h), int(w), frame) == ResizeLongestSide.get_preprocess_shape(int(h), int(w), frame)


def test_mask_iou_numpy_with_an_ignore_region_is_the_metrics_rule():
    """``mask_iou_numpy(pred, gt, ignore)`` equals the evaluation's per-sample counts (gt 1 = object, 255 =
    ignore) on random masks of odd sizes, ignore regions overlapping both masks or neither, empty ones too."""
    from samr1.geometry import mask_iou_numpy
    from samr1.metrics import sample_counts

    rng = np.random.default_rng()
    for _ in range(40):
        h, w = (int(v) for v in rng.integers(1, 40, 2))
        pred, gt, ign = (rng.random((h, w)) < p for p in rng.random(3))
        gt &= ~ign  # the dataset's rule: an ignore pixel is no target pixel
        coded = gt.astype(np.uint8)
        coded[ign] = 255
        inter, union, _, _ = sample_counts(pred, coded)
        want = 1.0 if union == 0 else inter / union
        assert mask_iou_numpy(pred, gt, ign) == pytest.approx(want, abs=1e-12)
        assert mask_iou_numpy(pred, gt, np.zeros((h, w), bool)) == mask_iou_numpy(pred, gt)
