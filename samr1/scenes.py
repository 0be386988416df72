"""Synthetic scenes with instance masks and referring queries (no downloads; for demos, tests, training).

A scene is an RGB image of a few solid or textured shapes (circles, ellipses, rectangles, triangles,
polygons) on a noisy or gradient background, with one boolean mask per visible object (occlusion taken
into account: later shapes cover earlier ones) and a referring query per object ("the red circle on the
left"). Everything is drawn with numpy from a seed, so a scene is reproducible.
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


def _shape_mask(kind: str, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    s = min(h, w)
    size = rng.uniform(0.12, 0.35) * s
    cx, cy = rng.uniform(size, w - size), rng.uniform(size, h - size)
    if kind == "circle":
        return (xx - cx) ** 2 + (yy - cy) ** 2 <= size**2
    if kind == "ellipse":
        a, b = size, size * rng.uniform(0.4, 0.8)
        t = rng.uniform(0, np.pi)
        u = (xx - cx) * np.cos(t) + (yy - cy) * np.sin(t)
        v = -(xx - cx) * np.sin(t) + (yy - cy) * np.cos(t)
        return (u / a) ** 2 + (v / b) ** 2 <= 1.0
    if kind == "rectangle":
        hw, hh = size * rng.uniform(0.6, 1.0), size * rng.uniform(0.4, 1.0)
        return (np.abs(xx - cx) <= hw) & (np.abs(yy - cy) <= hh)
    n = 3 if kind == "triangle" else int(rng.integers(5, 8))
    angles = np.sort(rng.uniform(0, 2 * np.pi, n)) if kind == "polygon" else rng.uniform(0, 2 * np.pi) + np.arange(3) * 2 * np.pi / 3
    radii = size * (rng.uniform(0.7, 1.0, n) if kind == "polygon" else np.ones(n))
    px, py = cx + radii * np.cos(angles), cy + radii * np.sin(angles)
    inside = np.ones((h, w), dtype=bool)
    for i in range(n):  # convex polygon: inside every edge's half-plane (vertices counter-clockwise)
        x0, y0, x1, y1 = px[i], py[i], px[(i + 1) % n], py[(i + 1) % n]
        inside &= (x1 - x0) * (yy - y0) - (y1 - y0) * (xx - x0) >= 0
    return inside


def _background(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    kind = rng.integers(0, 3)
    base = rng.uniform(60, 200, 3)
    if kind == 0:  # flat + noise
        img = np.broadcast_to(base, (h, w, 3)).astype(np.float32)
    elif kind == 1:  # linear gradient
        t = np.linspace(0, 1, w, dtype=np.float32)[None, :, None]
        other = rng.uniform(40, 220, 3)
        img = np.broadcast_to(base * (1 - t) + other * t, (h, w, 3)).astype(np.float32)
    else:  # low-frequency blobs
        small = rng.uniform(40, 220, (4, 4, 3)).astype(np.float32)
        ys = np.linspace(0, 3, h)[:, None]
        xs = np.linspace(0, 3, w)[None, :]
        y0, x0 = np.floor(ys).astype(int).clip(0, 2), np.floor(xs).astype(int).clip(0, 2)
        fy, fx = (ys - y0)[..., None], (xs - x0)[..., None]
        img = (small[y0, x0] * (1 - fy) * (1 - fx) + small[y0 + 1, x0] * fy * (1 - fx)
               + small[y0, x0 + 1] * (1 - fy) * fx + small[y0 + 1, x0 + 1] * fy * fx)
    return img + rng.normal(0, rng.uniform(2, 18), (h, w, 3)).astype(np.float32)


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
        n_objects: number of shapes (1..5 random when None).
        min_visible: an object stays in ``objects`` only if at least this fraction of its area is visible
            after occlusion (hidden objects are still drawn).
    """
    rng = np.random.default_rng(seed)
    h, w = size if size is not None else (int(rng.integers(192, 641)), int(rng.integers(192, 641)))
    n = int(n_objects) if n_objects is not None else int(rng.integers(1, 6))
    img = _background(h, w, rng)
    drawn: list[tuple[str, str, np.ndarray, int]] = []
    colour_names = list(COLOURS)
    for _ in range(n):
        kind = SHAPES[int(rng.integers(len(SHAPES)))]
        colour = colour_names[int(rng.integers(len(colour_names)))]
        m = _shape_mask(kind, h, w, rng)
        if not m.any():
            continue
        rgb = np.asarray(COLOURS[colour], dtype=np.float32) + rng.normal(0, 12, 3).astype(np.float32)
        if rng.random() < 0.3:  # textured: stripes modulate the fill
            period = rng.uniform(4, 16)
            stripes = (np.sin(np.arange(w, dtype=np.float32) / period * 2 * np.pi) > 0)[None, :, None]
            fill = np.where(stripes, rgb, rgb * 0.6)
            img = np.where(m[..., None], fill, img)
        else:
            img[m] = rgb
        drawn = [(k, c, om & ~m, area) for k, c, om, area in drawn]
        drawn.append((kind, colour, m, int(m.sum())))
    image = np.clip(img, 0, 255).astype(np.uint8)
    objects = []
    for kind, colour, m, area in drawn:
        if m.sum() < max(1, min_visible * area):
            continue
        objects.append(SceneObject(kind, colour, m, f"the {colour} {kind} {_position_word(m)}"))
    return Scene(image, objects)
