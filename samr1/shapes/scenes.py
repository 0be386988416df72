"""Synthetic scenes with instance masks and referring queries (no downloads; for demos, tests, training).

A scene is an RGB image of a few solid or textured shapes (circles, ellipses, rectangles, triangles,
polygons) on a flat, noisy, gradient, blotchy or textured background, with one boolean mask per visible
object (occlusion taken into account: later shapes cover earlier ones) and a referring query per object
("the red circle on the left"). Everything is drawn with numpy from a seed, so a scene is reproducible.

The distribution is deliberately wide, because ``tiny-shapes`` (the SAM trained on these scenes, see
:mod:`samr1.shapes.train`) must also segment simple shapes drawn by other generators: image sizes
192..640 per side (any aspect ratio in that box), objects from ~4 % to ~80 % of the short side, aspect
ratios down to 1:4, named palette colours with jitter or arbitrary RGB colours (named after the nearest
palette colour), about one object in five in a LOW-contrast colour close to the background under it,
stripes / checker / noise textures, and soft or hard edges.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 215, 40),
    "purple": (150, 60, 190),
    "orange": (245, 140, 30),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
    "gray": (128, 128, 128),
    "brown": (130, 80, 40),
    "pink": (240, 130, 180),
    "cyan": (40, 200, 210),
}
SHAPES = ("circle", "ellipse", "rectangle", "triangle", "polygon")


@dataclass
class SceneObject:
    """One shape of a scene: its kind, colour name, visible mask (H x W bool) and query."""

    shape: str
    colour: str
    mask: np.ndarray
    query: str


@dataclass
class Scene:
    """An H x W x 3 uint8 image and its objects (visible masks, back to front)."""

    image: np.ndarray
    objects: list[SceneObject] = field(default_factory=list)


def nearest_colour_name(rgb) -> str:
    """The palette name closest (Euclidean in RGB) to ``rgb`` (3 numbers 0..255)."""
    rgb = np.asarray(rgb, dtype=np.float32)
    names = list(COLOURS)
    d = [float(((np.asarray(COLOURS[n], np.float32) - rgb) ** 2).sum()) for n in names]
    return names[int(np.argmin(d))]


def _shape_mask(kind: str, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    s = min(h, w)
    # log-uniform "radius": small objects as well as large ones (0.04..0.4 of the short side)
    size = float(np.exp(rng.uniform(np.log(0.04), np.log(0.4)))) * s
    size = max(size, 4.0)
    cx, cy = rng.uniform(size * 0.6, w - size * 0.6), rng.uniform(size * 0.6, h - size * 0.6)
    if kind == "circle":
        return (xx - cx) ** 2 + (yy - cy) ** 2 <= size**2
    if kind == "ellipse":
        a, b = size, size * rng.uniform(0.25, 0.85)
        t = rng.uniform(0, np.pi)
        u = (xx - cx) * np.cos(t) + (yy - cy) * np.sin(t)
        v = -(xx - cx) * np.sin(t) + (yy - cy) * np.cos(t)
        return (u / a) ** 2 + (v / b) ** 2 <= 1.0
    if kind == "rectangle":
        hw, hh = size * rng.uniform(0.5, 1.0), size * rng.uniform(0.25, 1.0)
        if rng.random() < 0.5:
            hw, hh = hh, hw
        if rng.random() < 0.25:  # rotated rectangle
            t = rng.uniform(0, np.pi)
            u = (xx - cx) * np.cos(t) + (yy - cy) * np.sin(t)
            v = -(xx - cx) * np.sin(t) + (yy - cy) * np.cos(t)
            return (np.abs(u) <= hw) & (np.abs(v) <= hh)
        return (np.abs(xx - cx) <= hw) & (np.abs(yy - cy) <= hh)
    n = 3 if kind == "triangle" else int(rng.integers(5, 9))
    if kind == "polygon":
        angles = np.sort(rng.uniform(0, 2 * np.pi, n))
        radii = size * rng.uniform(0.6, 1.0, n)
    else:  # triangles of varied shape, not only equilateral
        angles = np.sort(rng.uniform(0, 2 * np.pi) + np.array([0.0, 2 * np.pi / 3, 4 * np.pi / 3])
                         + rng.uniform(-0.5, 0.5, 3))
        radii = size * np.ones(n)
    px, py = cx + radii * np.cos(angles), cy + radii * np.sin(angles)
    inside = np.ones((h, w), dtype=bool)
    # vertices sorted by angle with varied radii give a star-shaped polygon that may be concave: the
    # half-plane intersection is exact only when every turn is counter-clockwise (convex); otherwise use
    # the even-odd rule
    cross = [(px[(i + 1) % n] - px[i]) * (py[(i + 2) % n] - py[(i + 1) % n])
             - (py[(i + 1) % n] - py[i]) * (px[(i + 2) % n] - px[(i + 1) % n]) for i in range(n)]
    if all(c >= 0 for c in cross):
        for i in range(n):  # convex polygon: inside every edge's half-plane (vertices counter-clockwise)
            x0, y0, x1, y1 = px[i], py[i], px[(i + 1) % n], py[(i + 1) % n]
            inside &= (x1 - x0) * (yy - y0) - (y1 - y0) * (xx - x0) >= 0
        return inside
    inside[:] = False
    for i in range(n):  # even-odd rule
        x0, y0, x1, y1 = px[i], py[i], px[(i + 1) % n], py[(i + 1) % n]
        cond = (y0 > yy) != (y1 > yy)
        xint = x0 + (yy - y0) * (x1 - x0) / ((y1 - y0) if y1 != y0 else 1e-6)
        inside ^= cond & (xx < xint)
    return inside


def _smooth_field(h: int, w: int, cells: int, rng: np.random.Generator, channels: int = 3) -> np.ndarray:
    """Bilinear upsampling of a cells x cells random grid to h x w (values 0..1)."""
    small = rng.uniform(0, 1, (cells + 1, cells + 1, channels)).astype(np.float32)
    ys = np.linspace(0, cells, h, dtype=np.float32)[:, None]
    xs = np.linspace(0, cells, w, dtype=np.float32)[None, :]
    y0, x0 = np.floor(ys).astype(int).clip(0, cells - 1), np.floor(xs).astype(int).clip(0, cells - 1)
    fy, fx = (ys - y0)[..., None], (xs - x0)[..., None]
    return (small[y0, x0] * (1 - fy) * (1 - fx) + small[y0 + 1, x0] * fy * (1 - fx)
            + small[y0, x0 + 1] * (1 - fy) * fx + small[y0 + 1, x0 + 1] * fy * fx)


def _pattern(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A 0..1 texture (h x w x 1): oriented stripes, checker or fine noise."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    kind = int(rng.integers(0, 3))
    period = rng.uniform(4, 24)
    if kind == 0:
        t = rng.uniform(0, np.pi)
        p = np.sin((xx * np.cos(t) + yy * np.sin(t)) / period * 2 * np.pi) > 0
    elif kind == 1:
        p = ((xx // period).astype(int) + (yy // period).astype(int)) % 2 == 0
    else:
        p = _smooth_field(h, w, int(rng.integers(8, 40)), rng, 1)[..., 0] > 0.5
    return p.astype(np.float32)[..., None]


def _background(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    kind = int(rng.integers(0, 5))
    base = rng.uniform(0, 255, 3)
    if kind == 0:  # flat (+ noise below)
        img = np.broadcast_to(base, (h, w, 3)).astype(np.float32)
    elif kind == 1:  # linear gradient in a random direction
        t = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        r = xx * np.cos(t) + yy * np.sin(t)
        r = ((r - r.min()) / max(float(np.ptp(r)), 1.0))[..., None]
        other = rng.uniform(0, 255, 3)
        img = (base * (1 - r) + other * r).astype(np.float32)
    elif kind == 2:  # low-frequency blobs
        img = 30 + 200 * _smooth_field(h, w, int(rng.integers(2, 7)), rng)
    elif kind == 3:  # textured: two colours through a pattern
        other = rng.uniform(0, 255, 3)
        p = _pattern(h, w, rng)
        img = base * p + other * (1 - p)
    else:  # blobs with a faint texture on top
        img = 30 + 200 * _smooth_field(h, w, int(rng.integers(2, 6)), rng)
        img = img + (_pattern(h, w, rng) - 0.5) * rng.uniform(10, 50)
    noise = rng.uniform(0, 30) if rng.random() < 0.8 else 0.0
    return img + rng.normal(0, 1, (h, w, 3)).astype(np.float32) * noise


def _pick_colour(rng: np.random.Generator, under: np.ndarray) -> np.ndarray:
    """Fill colour: palette + jitter, any RGB, or (1 in 5) low contrast against ``under`` (mean RGB)."""
    r = rng.random()
    if r < 0.2:  # low contrast: 25..60 RGB units away from what is under the shape
        d = rng.normal(0, 1, 3)
        d = d / max(np.linalg.norm(d), 1e-6) * rng.uniform(25, 60)
        return np.clip(under + d, 0, 255).astype(np.float32)
    if r < 0.6:
        names = list(COLOURS)
        return (np.asarray(COLOURS[names[int(rng.integers(len(names)))]], np.float32)
                + rng.normal(0, 15, 3).astype(np.float32))
    return rng.uniform(0, 255, 3).astype(np.float32)


def _position_word(mask: np.ndarray) -> str:
    ys, xs = np.nonzero(mask)
    cx, cy = xs.mean() / mask.shape[1], ys.mean() / mask.shape[0]
    if cx < 0.4:
        return "on the left"
    if cx > 0.6:
        return "on the right"
    return "at the top" if cy < 0.4 else ("at the bottom" if cy > 0.6 else "in the middle")


def make_scene(seed: int, size: tuple[int, int] | None = None, n_objects: int | None = None,
               min_visible: float = 0.5) -> Scene:
    """Draw a reproducible scene.

    Args:
        seed: everything (size, shapes, colours, background, noise) follows from it.
        size: (H, W) of the image; random in [192, 640] per side when None.
        n_objects: number of shapes (1..6 random when None).
        min_visible: an object stays in ``objects`` only if at least this fraction of its area is visible
            after occlusion (hidden objects are still drawn).

    Returns:
        :class:`Scene`: ``image`` H x W x 3 uint8; ``objects`` back to front, each ``mask`` H x W bool
        (the visible pixels; every listed mask is non-empty) and a ``query`` naming colour, shape and
        position.
    """
    rng = np.random.default_rng(seed)
    h, w = size if size is not None else (int(rng.integers(192, 641)), int(rng.integers(192, 641)))
    n = int(n_objects) if n_objects is not None else int(rng.integers(1, 7))
    img = _background(h, w, rng)
    drawn: list[tuple[str, str, np.ndarray, int]] = []
    for _ in range(n):
        kind = SHAPES[int(rng.integers(len(SHAPES)))]
        m = _shape_mask(kind, h, w, rng)
        if not m.any():
            continue
        rgb = _pick_colour(rng, img[m].mean(axis=0))
        colour = nearest_colour_name(rgb)
        u = rng.random()
        if u < 0.25:  # textured: a pattern modulates the fill
            p = _pattern(h, w, rng)
            fill = rgb * (1 - p * rng.uniform(0.2, 0.5))
            img = np.where(m[..., None], fill, img)
        elif u < 0.4:  # shaded: a smooth brightness ramp over the shape
            shade = 0.75 + 0.5 * _smooth_field(h, w, 2, rng, 1)
            img = np.where(m[..., None], rgb * shade, img)
        else:
            img[m] = rgb
        if rng.random() < 0.2:  # some shapes carry their own fine noise
            img[m] += rng.normal(0, rng.uniform(5, 20), (int(m.sum()), 3)).astype(np.float32)
        drawn = [(k, c, om & ~m, area) for k, c, om, area in drawn]
        drawn.append((kind, colour, m, int(m.sum())))
    image = np.clip(img, 0, 255).astype(np.uint8)
    objects = []
    for kind, colour, m, area in drawn:
        if m.sum() < max(1, min_visible * area):
            continue
        objects.append(SceneObject(kind, colour, m, f"the {colour} {kind} {_position_word(m)}"))
    return Scene(image, objects)
