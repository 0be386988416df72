"""A second, independent scene generator, used only to check that ``tiny-shapes`` generalises.

``tiny-shapes`` is trained on :mod:`samr1.shapes.scenes`; a model that only learnt that generator's look would
score well on its held-out scenes and fail on anyone else's. This module draws the same *kind* of content
with different code and different choices: PIL ``ImageDraw`` primitives (anti-aliasing off, so masks are
exact), regular polygons and stars, rounded rectangles, one solid colour per shape at RGB distance >= 80
from the background's base colour (a linear grade can move the background up to 60 per channel toward
it; shapes are not kept apart from each other), and Gaussian or uniform pixel noise over the flat or graded
background (applied to the shapes too in half of the scenes). Like :func:`samr1.shapes.scenes.make_scene` it
keeps objects at least half visible. It is never used for training.

    make_alt_scene(seed) -> samr1.shapes.scenes.Scene   (image H x W x 3 uint8, visible masks, queries)
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from samr1.shapes.scenes import Scene, SceneObject, nearest_colour_name

__all__ = ["make_alt_scene", "ALT_SHAPES"]

ALT_SHAPES = ("ellipse", "rectangle", "rounded-rectangle", "regular-polygon", "star")


def _draw(kind: str, draw: ImageDraw.ImageDraw, cx: float, cy: float, r: float, rng: np.random.Generator) -> None:
    """Draw one filled shape of "radius" ``r`` centred at (cx, cy) with fill 255."""
    if kind == "ellipse":
        rx, ry = r, r * rng.uniform(0.4, 1.0)
        if rng.random() < 0.5:
            rx, ry = ry, rx
        draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=255)
    elif kind in ("rectangle", "rounded-rectangle"):
        hw, hh = r, r * rng.uniform(0.3, 1.0)
        if rng.random() < 0.5:
            hw, hh = hh, hw
        box = [cx - hw, cy - hh, cx + hw, cy + hh]
        if kind == "rectangle":
            draw.rectangle(box, fill=255)
        else:
            draw.rounded_rectangle(box, radius=max(1.0, 0.3 * min(hw, hh)), fill=255)
    elif kind == "regular-polygon":
        n = int(rng.integers(3, 9))
        draw.regular_polygon((cx, cy, r), n_sides=n, rotation=float(rng.uniform(0, 360)), fill=255)
    else:  # star: alternating outer / inner radius
        n, inner = int(rng.integers(4, 8)), rng.uniform(0.4, 0.65)
        t0 = rng.uniform(0, 2 * math.pi)
        pts = [(cx + (r if i % 2 == 0 else r * inner) * math.cos(t0 + i * math.pi / n),
                cy + (r if i % 2 == 0 else r * inner) * math.sin(t0 + i * math.pi / n)) for i in range(2 * n)]
        draw.polygon(pts, fill=255)


def make_alt_scene(seed: int, n_objects: int | None = None) -> Scene:
    """Scene ``seed``: 1..4 solid shapes (``n_objects`` if given) on a noisy background, image sides
    200..720 px; objects less than half visible after occlusion, or under 30 px, are dropped."""
    rng = np.random.default_rng([7919, seed])
    h, w = int(rng.integers(200, 721)), int(rng.integers(200, 721))
    base = rng.integers(0, 256, 3).astype(np.float32)
    img = np.broadcast_to(base, (h, w, 3)).copy()
    if rng.random() < 0.4:  # linear grade across the image
        d = rng.uniform(-60, 60, 3).astype(np.float32)
        t = np.linspace(0, 1, w if rng.random() < 0.5 else h, dtype=np.float32)
        img += (t[None, :, None] if t.size == w else t[:, None, None]) * d
    masks, kinds, colours, drawn = [], [], [], []
    s = min(h, w)
    for _ in range(n_objects if n_objects is not None else int(rng.integers(1, 5))):
        kind = ALT_SHAPES[int(rng.integers(len(ALT_SHAPES)))]
        r = s * float(np.exp(rng.uniform(math.log(0.05), math.log(0.3))))
        cx, cy = rng.uniform(r * 0.5, w - r * 0.5), rng.uniform(r * 0.5, h - r * 0.5)
        layer = Image.new("L", (w, h), 0)
        _draw(kind, ImageDraw.Draw(layer), cx, cy, r, rng)
        m = np.asarray(layer) > 127
        while True:  # a colour that stands out from the background base (RGB distance >= 80)
            c = rng.integers(0, 256, 3).astype(np.float32)
            if np.linalg.norm(c - base) >= 80:
                break
        img[m] = c
        masks = [old & ~m for old in masks] + [m]
        drawn.append(int(m.sum()))
        kinds.append(kind)
        colours.append(c)
    sigma = rng.uniform(4, 30)
    noise = rng.normal(0, sigma, (h, w, 3)) if rng.random() < 0.7 else rng.uniform(-1.7, 1.7, (h, w, 3)) * sigma
    if rng.random() < 0.5:  # noise on the background only
        fg = np.zeros((h, w), bool)
        for m in masks:
            fg |= m
        noise[fg] = 0
    image = np.clip(img + noise, 0, 255).astype(np.uint8)
    objects = []
    for kind, c, m, full in zip(kinds, colours, masks, drawn, strict=True):
        if m.sum() < max(30, 0.5 * full):
            continue
        name = nearest_colour_name(c)
        objects.append(SceneObject(shape=kind, colour=name, mask=m, query=f"the {name} {kind}"))
    return Scene(image=image, objects=objects)
