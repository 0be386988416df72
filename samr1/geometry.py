"""Geometry of ground truth: a mask's box, its reference points (inscribed circles), box IoU, exact EDT.

Conventions (shared with :mod:`samr1.answer`):

* Pixel ``(row i, col j)`` of an ``H x W`` mask is the unit square ``[j, j+1) x [i, i+1)`` of the image
  plane; x is the column, y the row.
* Boxes are XYXY floats in original pixels. :func:`mask_to_box` uses the pixel-EDGE convention by default:
  ``x1 = min col, y1 = min row, x2 = max col + 1, y2 = max row + 1``, so the box covers exactly the mask's
  pixels and its area ``(x2 - x1) * (y2 - y1)`` is a pixel count. ``convention="inclusive"`` gives SAM's
  ``batched_mask_to_box`` / Seg-Zero's min/max of pixel indices (``x2 = max col``); the two differ by one
  pixel on x2/y2.
* Points are ``(x, y)`` pixel indices (the pixel's centre, as SAM reads point prompts).

No scipy: :func:`distance_transform_edt` is an exact Euclidean distance transform in numpy (one vectorised
pass along rows, then Felzenszwalb & Huttenlocher's lower envelope of parabolas run in lockstep over all
columns).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["mask_to_box", "mask_to_points", "box_iou", "distance_transform_edt", "squared_edt"]


def _as_mask(mask: np.ndarray) -> np.ndarray:
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"mask must be a 2-D H x W array, got shape {m.shape}")
    if m.dtype != bool:
        m = m != 0
    return m


def mask_to_box(mask: np.ndarray, convention: str = "edge") -> tuple[float, float, float, float] | None:
    """Tight box of the nonzero pixels of an ``H x W`` mask, XYXY floats in pixels; None for an empty mask.

    ``convention="edge"`` (default): ``(min col, min row, max col + 1, max row + 1)``, pixel edges, area =
    pixel count of the box. ``"inclusive"``: ``(min col, min row, max col, max row)`` (SAM's
    ``batched_mask_to_box``, Seg-Zero's min/max of pixel coordinates).
    """
    if convention not in ("edge", "inclusive"):
        raise ValueError(f"convention must be 'edge' or 'inclusive', got {convention!r}")
    m = _as_mask(mask)
    cols = np.flatnonzero(m.any(axis=0))
    if cols.size == 0:
        return None
    rows = np.flatnonzero(m.any(axis=1))
    extra = 1.0 if convention == "edge" else 0.0
    return (float(cols[0]), float(rows[0]), float(cols[-1]) + extra, float(rows[-1]) + extra)


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two XYXY boxes (continuous areas ``(x2 - x1) * (y2 - y1)``, corners sorted first).

    Returns 0.0 when the union is zero (two degenerate boxes) or any coordinate is not finite.
    """
    ax1, ax2 = sorted((float(a[0]), float(a[2])))
    ay1, ay2 = sorted((float(a[1]), float(a[3])))
    bx1, bx2 = sorted((float(b[0]), float(b[2])))
    by1, by2 = sorted((float(b[1]), float(b[3])))
    iw = min(ax2, bx2) - max(ax1, bx1)
    ih = min(ay2, by2) - max(ay1, by1)
    inter = iw * ih if iw > 0 and ih > 0 else 0.0
    union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter
    if not np.isfinite(union) or union <= 0:
        return 0.0
    return float(inter / union)


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
    """
    m = _as_mask(mask)
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


def mask_to_points(mask: np.ndarray, k: int = 2, border_is_background: bool = True) -> list[tuple[float, float]]:
    """Centres of the ``k`` largest inscribed circles of a mask, as ``(x, y)`` pixel indices.

    Rule (Seg-Zero's reference points, made exact): compute the Euclidean distance transform ``D`` (see
    :func:`squared_edt`; the image border counts as background by default); the first centre is the
    argmax of ``D`` (ties: the first in row-major order, i.e. smallest y, then smallest x) and its radius
    is ``r = D`` there. The disc of radius ``r`` around it (pixels whose centre is at distance < ``r``) is
    then removed from the mask, the distance transform is recomputed on what is left, and the next centre is
    its argmax -- so the k circles do not overlap. Stops early (fewer than k points) when the mask is
    exhausted; an empty mask gives ``[]``.
    """
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 0:
        raise ValueError(f"k must be a non-negative int, got {k!r}")
    m = _as_mask(mask).copy()
    h, w = m.shape
    out: list[tuple[float, float]] = []
    if h == 0 or w == 0:
        return out
    yy, xx = np.ogrid[:h, :w]
    for _ in range(int(k)):
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
