"""samr1.geometry against brute force: exact EDT, mask boxes, inscribed-circle points, box IoU."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from samr1.geometry import box_iou, distance_transform_edt, mask_to_box, mask_to_points, squared_edt


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
        assert mask_to_box(m) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        assert mask_to_box(m, convention="inclusive") == (xs.min(), ys.min(), xs.max(), ys.max())
        x1, y1, x2, y2 = mask_to_box(m)
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
        assert box_iou(a, b) == pytest.approx(want, abs=1e-12)


def test_box_iou_hand_cases():
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert box_iou((0, 0, 10, 10), (10, 0, 20, 10)) == 0.0  # touching edges
    assert box_iou((10, 10, 0, 0), (0, 0, 10, 10)) == 1.0  # corners sorted
    assert box_iou((0, 0, 0, 10), (0, 0, 0, 10)) == 0.0  # zero union
    assert box_iou((0, 0, float("nan"), 10), (0, 0, 10, 10)) == 0.0


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


def test_mask_to_points_matches_brute_force_rule():
    rng = np.random.default_rng()
    for m in random_masks(rng, 60, 16):
        for k in (1, 2, 3):
            assert mask_to_points(m, k) == brute_points(m, k, True)
        assert mask_to_points(m, 2, border_is_background=False) == brute_points(m, 2, False) or m.all()


def test_mask_to_points_rectangle_and_two_discs():
    m = np.zeros((40, 60), bool)
    m[10:31, 5:26] = True  # 21 x 21 square: centre (15, 20), radius 11 to the nearest background
    yy, xx = np.ogrid[:40, :60]
    m |= (yy - 20) ** 2 + (xx - 45) ** 2 <= 36  # a disc of radius 6 around (45, 20)
    pts = mask_to_points(m, 2)
    assert pts[0] == (15.0, 20.0)
    assert pts[1] == (45.0, 20.0)
    for x, y in pts:
        assert m[int(y), int(x)]
    assert mask_to_points(np.zeros((5, 5), bool)) == []
    assert mask_to_points(m, 0) == []
    one = np.zeros((5, 5), bool)
    one[2, 3] = True
    assert mask_to_points(one, 2) == [(3.0, 2.0)]  # mask exhausted after the first circle
    with pytest.raises(ValueError, match="k"):
        mask_to_points(m, -1)
