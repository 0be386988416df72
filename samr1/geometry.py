"""Geometry of ground truth: a mask's box, its reference points, box IoU, exact EDT, nearest resize.

Conventions (shared with :mod:`samr1.answer` and :mod:`samr1.rewards`):

* Pixel ``(row i, col j)`` of an ``H x W`` mask has its centre at ``(x, y) = (j, i)``; x is the column,
  y the row. Points are ``(x, y)`` pixel indices (the pixel's centre, as SAM reads point prompts).
* Boxes are XYXY floats in pixels. samr1's box convention is Seg-Zero's: INCLUSIVE pixel indices,
  ``(min col, min row, max col, max row)``, so a box covers ``x2 - x1 + 1`` columns and a one-pixel-wide
  object has ``x1 == x2`` (a valid box, not a zero-area one). :func:`mask_to_box` returns that by default
  and :func:`box_iou` measures it with the ``+ 1`` on widths and heights. ``convention="edge"`` (``x2 =
  max col + 1``, continuous areas) is kept for callers that want pixel edges.
* Reference points follow Seg-Zero's data preparation by default (``rule="segzero"``, see
  :func:`mask_to_points`); ``rule="circles"`` gives centres of non-overlapping inscribed circles.

No scipy: :func:`distance_transform_edt` is an exact Euclidean distance transform in numpy (one vectorised
pass along rows, then Felzenszwalb & Huttenlocher's lower envelope of parabolas run in lockstep over all
columns); ``border_is_background=False`` gives ``scipy.ndimage.distance_transform_edt``'s semantics (only
zero pixels are background).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "resize_longest_side",
    "mask_iou_numpy",
    "BOX_CONVENTIONS",
    "POINT_RULES",
    "mask_to_box",
    "mask_to_points",
    "box_iou",
    "distance_transform_edt",
    "squared_edt",
    "resize_mask_nearest",
]

BOX_CONVENTIONS: tuple[str, ...] = ("inclusive", "edge")
"""Box conventions: "inclusive" (Seg-Zero's pixel indices, IoU with + 1; the default) and "edge"."""

POINT_RULES: tuple[str, ...] = ("segzero", "circles")
"""Reference-point rules of :func:`mask_to_points`: "segzero" (the default) and "circles"."""


def _as_mask(mask: np.ndarray) -> np.ndarray:
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"mask must be a 2-D H x W array, got shape {m.shape}")
    if m.dtype != bool:
        m = m != 0
    return m


def mask_to_box(mask: np.ndarray, convention: str = "inclusive") -> tuple[float, float, float, float] | None:
    """Tight box of the nonzero pixels of an ``H x W`` mask, XYXY floats in pixels; None for an empty mask.

    ``convention="inclusive"`` (default; Seg-Zero's min/max of pixel indices, SAM's ``batched_mask_to_box``):
    ``(min col, min row, max col, max row)``; a one-pixel object gives ``x1 == x2``. ``"edge"``:
    ``(min col, min row, max col + 1, max row + 1)``, pixel edges, area = pixel count of the box.
    """
    if convention not in BOX_CONVENTIONS:
        raise ValueError(f"convention must be one of {BOX_CONVENTIONS}, got {convention!r}")
    m = _as_mask(mask)
    cols = np.flatnonzero(m.any(axis=0))
    if cols.size == 0:
        return None
    rows = np.flatnonzero(m.any(axis=1))
    extra = 1.0 if convention == "edge" else 0.0
    return (float(cols[0]), float(rows[0]), float(cols[-1]) + extra, float(rows[-1]) + extra)


def box_iou(a: Sequence[float], b: Sequence[float], convention: str = "inclusive") -> float:
    """IoU of two XYXY boxes given in the same pixel frame (corners sorted first).

    ``convention="inclusive"`` (default, Seg-Zero's): coordinates are inclusive pixel indices, so a side
    spans ``x2 - x1 + 1`` pixels and the intersection ``min(x2) - max(x1) + 1`` (none when that is <= 0);
    two equal one-pixel boxes have IoU 1. ``"edge"``: continuous areas ``(x2 - x1) * (y2 - y1)``.
    Returns 0.0 when the union is zero (two degenerate "edge" boxes) or any coordinate is not finite.
    """
    if convention not in BOX_CONVENTIONS:
        raise ValueError(f"convention must be one of {BOX_CONVENTIONS}, got {convention!r}")
    ax1, ax2 = sorted((float(a[0]), float(a[2])))
    ay1, ay2 = sorted((float(a[1]), float(a[3])))
    bx1, bx2 = sorted((float(b[0]), float(b[2])))
    by1, by2 = sorted((float(b[1]), float(b[3])))
    one = 1.0 if convention == "inclusive" else 0.0
    iw = min(ax2, bx2) - max(ax1, bx1) + one
    ih = min(ay2, by2) - max(ay1, by1) + one
    inter = iw * ih if iw > 0 and ih > 0 else 0.0
    union = (ax2 - ax1 + one) * (ay2 - ay1 + one) + (bx2 - bx1 + one) * (by2 - by1 + one) - inter
    if not np.isfinite(union) or not np.isfinite(inter) or union <= 0:
        return 0.0
    return float(inter / union)


def resize_mask_nearest(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``H x W`` mask -> ``h x w`` bool mask by nearest neighbour at pixel centres.

    Output pixel ``(i, j)`` takes input pixel ``(floor((i + 0.5) H / h), floor((j + 0.5) W / w))``: an
    integer upscale followed by this resize gives the original mask back exactly, so a scene rendered at
    840 x 840 and at 1680 x 1680 has the same ground truth in the 840 frame. Objects thinner than one
    output pixel may vanish (callers check for an empty result).
    """
    m = _as_mask(mask)
    h, w = (int(v) for v in size)
    if h < 1 or w < 1:
        raise ValueError(f"size must be (h, w) positive ints, got {size!r}")
    H, W = m.shape
    if (H, W) == (h, w):
        return m.copy()
    # Integer arithmetic: floor((2i + 1) H / 2h) avoids float rounding at exact pixel boundaries.
    rows = ((2 * np.arange(h, dtype=np.int64) + 1) * H) // (2 * h)
    cols = ((2 * np.arange(w, dtype=np.int64) + 1) * W) // (2 * w)
    return m[np.minimum(rows, H - 1)[:, None], np.minimum(cols, W - 1)[None, :]]


def _row_distance_sq(bg: np.ndarray, border_is_background: bool) -> np.ndarray:
    """Squared distance along each row to the nearest background pixel (float64; ``inf`` when none).

    Vectorised: the index of the last background pixel at or left of each pixel is a running maximum of
    ``where(bg, col, -big)``; the first at or right of it a reversed running minimum.
    """
    h, w = bg.shape
    cols = np.arange(w, dtype=np.int64)
    big = np.int64(1) << 40
    left_default = -1 if border_is_background else -big  # column -1 is background when the border is
    right_default = w if border_is_background else big
    left = np.where(bg, cols, left_default)
    np.maximum.accumulate(left, axis=1, out=left)
    right = np.where(bg, cols, right_default)
    right = np.minimum.accumulate(right[:, ::-1], axis=1)[:, ::-1]
    d = np.minimum(cols - left, right - cols).astype(np.float64)
    d[d >= big // 2] = np.inf
    return d * d


def _envelope_min_axis0(f: np.ndarray) -> np.ndarray:
    """``out[q, c] = min_p f[p, c] + (q - p)^2`` for every column c, exact.

    Felzenszwalb & Huttenlocher's lower envelope of parabolas, with every column advancing in lockstep: the
    loop runs over rows (n iterations, plus the few extra pops/advances), each step a numpy op over all
    columns. Columns whose ``f`` is infinite everywhere stay infinite. ``f`` float64 ``n x m``.
    """
    n, m = f.shape
    if n == 0 or m == 0:
        return f.copy()
    finite = np.isfinite(f)
    # Infinite values are replaced by a sentinel larger than any real result so the parabola arithmetic
    # stays finite and exact in float64 (values < 2**53); outputs >= sentinel are mapped back to inf.
    real_max = float(f[finite].max()) if finite.any() else 0.0
    sentinel = real_max + float(n) * float(n) + 1.0
    g = np.where(finite, f, sentinel)
    cols = np.arange(m)
    v = np.zeros((n, m), dtype=np.int64)  # parabola apexes in the envelope, per column
    z = np.empty((n + 1, m), dtype=np.float64)  # boundaries between consecutive envelope parabolas
    z[0] = -np.inf
    z[1] = np.inf
    k = np.zeros(m, dtype=np.int64)  # index of the last envelope parabola, per column
    for q in range(1, n):
        gq = g[q] + float(q * q)
        while True:
            vk = v[k, cols]
            s = (gq - (g[vk, cols] + (vk * vk).astype(np.float64))) / (2.0 * (q - vk))
            pop = s <= z[k, cols]
            if not pop.any():
                break
            k[pop] -= 1  # never below 0: z[0] = -inf
        k += 1
        v[k, cols] = q
        z[k, cols] = s
        z[k + 1, cols] = np.inf
    out = np.empty((n, m), dtype=np.float64)
    k[:] = 0
    for q in range(n):
        while True:
            adv = z[k + 1, cols] < q
            if not adv.any():
                break
            k[adv] += 1
        vk = v[k, cols]
        out[q] = (q - vk) ** 2 + g[vk, cols]
    out[out >= sentinel] = np.inf
    return out


def squared_edt(mask: np.ndarray, border_is_background: bool = True) -> np.ndarray:
    """Exact squared Euclidean distance from each nonzero pixel to the nearest zero pixel (``H x W`` float64).

    Zero pixels get 0. With ``border_is_background`` (default) the outside of the image counts as
    background (a pixel at the edge is at distance 1 from it), so every disc of radius ``d`` around a pixel
    lies inside the object AND the image. With False only zero pixels of the mask count (scipy's
    ``distance_transform_edt`` semantics); a mask without any zero pixel is then ``inf`` everywhere.
    Distances between pixel centres.

    Only the object's box grown by one pixel is transformed (the nearest zero pixel of an object pixel lies
    in it: the zero ring around the box is nearer than anything beyond), so the cost follows the object,
    not the image: a small object in a 1920 x 1080 image costs what it costs alone.
    """
    m = _as_mask(mask)
    h, w = m.shape
    cols = np.flatnonzero(m.any(axis=0))
    if cols.size:
        rows_ = np.flatnonzero(m.any(axis=1))
        y0, y1 = max(int(rows_[0]) - 1, 0), min(int(rows_[-1]) + 2, h)
        x0, x1 = max(int(cols[0]) - 1, 0), min(int(cols[-1]) + 2, w)
        if (y1 - y0) * (x1 - x0) < h * w:
            out = np.zeros((h, w), dtype=np.float64)
            out[y0:y1, x0:x1] = _squared_edt_full(m[y0:y1, x0:x1], border_is_background)
            return out
    return _squared_edt_full(m, border_is_background)


def _squared_edt_full(m: np.ndarray, border_is_background: bool) -> np.ndarray:
    """:func:`squared_edt` over the whole array (a crop's edge that is not the image's edge holds zeros)."""
    rows = _row_distance_sq(~m, border_is_background)
    if border_is_background:
        # Rows above and below the image are background too: include them as two extra rows of zeros.
        h, w = m.shape
        padded = np.zeros((h + 2, w), dtype=np.float64)
        padded[1:-1] = rows
        return _envelope_min_axis0(padded)[1:-1]
    return _envelope_min_axis0(rows)


def distance_transform_edt(mask: np.ndarray, border_is_background: bool = True) -> np.ndarray:
    """Exact Euclidean distance transform (the square root of :func:`squared_edt`), ``H x W`` float64."""
    return np.sqrt(squared_edt(mask, border_is_background))


def mask_to_points(mask: np.ndarray, k: int = 2, border_is_background: bool | None = None,
                   rule: str = "segzero") -> list[tuple[float, float]]:
    """Reference points of a mask, as ``(x, y)`` pixel indices (floats), in the mask's own pixel frame.

    ``rule="segzero"`` (default; Seg-Zero's data preparation, two points at most):

    1. ``D`` = Euclidean distance transform of the mask with ``scipy.ndimage.distance_transform_edt``'s
       semantics: only zero pixels are background, the array border is NOT (``border_is_background``
       defaults to False for this rule). The first point is the argmax of ``D`` (ties: the first in
       row-major order, i.e. smallest y, then smallest x).
    2. Among the mask pixels whose Euclidean distance to the first point is strictly greater than the
       median of those distances (over all mask pixels, the first point included), the second point is the
       one with the largest ``D`` (ties: row-major first).
    3. When that set is empty (e.g. a one-pixel mask), the second point is the largest ``D`` in the window
       ``[cy - 10, cy + 10) x [cx - 10, cx + 10)`` around the centroid truncated to ints (row-major first),
       moved to the nearest mask pixel (row-major first) when it lies off the mask: Seg-Zero's published
       data-preparation code.

    A mask without any zero pixel has an infinite ``D`` under scipy's semantics; the image border is then
    taken as background so the first point is the middle of the mask rather than its first pixel.
    ``k`` may be 0, 1 or 2 for this rule.

    ``rule="circles"``: centres of the ``k`` largest non-overlapping inscribed circles. The EDT counts the
    image border as background by default; the first centre is the argmax of ``D`` (row-major first) with
    radius ``r = D`` there; the open disc of radius ``r`` around it is removed from the mask (the centre
    always goes), the EDT is recomputed on what is left and the next centre is its argmax. Stops early
    (fewer than k points) when the mask is exhausted, so a disc may give one point.

    An empty mask gives ``[]`` under both rules.
    """
    if rule not in POINT_RULES:
        raise ValueError(f"rule must be one of {POINT_RULES}, got {rule!r}")
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 0:
        raise ValueError(f"k must be a non-negative int, got {k!r}")
    if rule == "segzero":
        if k > 2:
            raise ValueError(f"rule='segzero' defines two points, got k={k}; use rule='circles' for more")
        return _segzero_points(_as_mask(mask), int(k), False if border_is_background is None else border_is_background)
    return _circle_points(_as_mask(mask), int(k), True if border_is_background is None else border_is_background)


def _segzero_points(m: np.ndarray, k: int, border_is_background: bool) -> list[tuple[float, float]]:
    h, w = m.shape
    if k == 0 or h == 0 or w == 0 or not m.any():
        return []
    d2 = squared_edt(m, border_is_background)
    if not np.isfinite(d2).all():  # no background pixel at all: scipy's EDT is undefined there
        d2 = squared_edt(m, True)
    first = int(np.argmax(d2))  # d2 is 0 outside the mask, > 0 inside: the argmax is a mask pixel
    y1, x1 = divmod(first, w)
    out = [(float(x1), float(y1))]
    if k == 1:
        return out
    ys, xs = np.nonzero(m)  # row-major order, so argmax / argmin ties resolve to the row-major first
    dist = np.sqrt((xs - x1).astype(np.float64) ** 2 + (ys - y1).astype(np.float64) ** 2)
    far = dist > np.median(dist)
    if far.any():
        fy, fx = ys[far], xs[far]
        j = int(np.argmax(d2[fy, fx]))
        out.append((float(fx[j]), float(fy[j])))
    else:
        # Seg-Zero's published fallback: the largest D in the 20 x 20 window [c - 10, c + 10) around the
        # centroid truncated to ints (first in row-major order), moved to the nearest mask pixel if it is off
        # the mask (ties: row-major first).
        cy, cx = int(np.mean(ys)), int(np.mean(xs))
        y0, x0 = max(0, cy - 10), max(0, cx - 10)
        win = d2[y0:min(h, cy + 10), x0:min(w, cx + 10)]
        wy, wx = divmod(int(np.argmax(win)), win.shape[1])
        y2, x2 = wy + y0, wx + x0
        if not m[y2, x2]:
            j = int(np.argmin((xs - x2) ** 2 + (ys - y2) ** 2))
            y2, x2 = int(ys[j]), int(xs[j])
        out.append((float(x2), float(y2)))
    return out


def _circle_points(m: np.ndarray, k: int, border_is_background: bool) -> list[tuple[float, float]]:
    m = m.copy()
    h, w = m.shape
    out: list[tuple[float, float]] = []
    if h == 0 or w == 0:
        return out
    yy, xx = np.ogrid[:h, :w]
    for _ in range(k):
        if not m.any():
            break
        d2 = squared_edt(m, border_is_background)
        if not np.isfinite(d2).all():  # no background at all (border_is_background=False, full mask)
            d2 = np.where(np.isfinite(d2), d2, 0.0)
            idx = (h // 2) * w + w // 2  # no circle is defined; the image centre is the natural choice
            r2 = float(min(h, w) // 2) ** 2
        else:
            idx = int(np.argmax(d2))
            r2 = float(d2.flat[idx])
        y, x = divmod(idx, w)
        out.append((float(x), float(y)))
        m &= (xx - x) ** 2 + (yy - y) ** 2 >= r2
        m[y, x] = False  # the centre itself always goes, so the loop always makes progress
    return out


def mask_iou_numpy(pred: np.ndarray, gt: np.ndarray, ignore: np.ndarray | None = None) -> float:
    """IoU of two H x W bool masks; two empty masks have IoU 1.0 (nothing to find, nothing found).

    ``ignore``: an optional H x W bool mask of pixels in neither the intersection nor the union (ReasonSeg's
    ignore regions; the rule of :func:`samr1.metrics.sample_counts`)."""
    inter = np.logical_and(pred, gt)
    union = np.logical_or(pred, gt)
    if ignore is not None:
        inter &= ~ignore
        union &= ~ignore
    union_n = union.sum(dtype=np.int64)
    return 1.0 if union_n == 0 else float(inter.sum(dtype=np.int64)) / float(union_n)


def resize_longest_side(h: int, w: int, frame: int) -> tuple[int, int]:
    """SAM's resized ``(h', w')`` of an ``h x w`` image whose longest side becomes ``frame`` (before padding).

    The same arithmetic as segment-anything's ``ResizeLongestSide.get_preprocess_shape`` (Python doubles,
    round half up), so every module that needs the input size agrees with ``SamPredictor`` to the pixel.
    """
    scale = frame * 1.0 / max(h, w)
    return int(h * scale + 0.5), int(w * scale + 0.5)
