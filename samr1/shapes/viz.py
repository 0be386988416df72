"""Figures of the toy world: contact sheets, mask outlines, overlays with a legend and the training curve.

Used by ``samr1 demo`` (:mod:`samr1.demo`), ``samr1 segment --model`` (its overlay), the checker's example
sheet (:mod:`samr1.shapes.check`) and the trainer's curve (:mod:`samr1.shapes.train`). Images are PIL RGB;
masks are H x W bool numpy arrays in the image's own pixels.

Overlays are drawn on a muted grey copy of the image (:func:`muted`): the scenes use every hue (a red
circle, a green square, a yellow star), so a coloured mark on the original colours could be taken for part
of the scene. On grey, the marks' colours (:data:`MARKS`) can only be marks, and :func:`with_legend` names
each one inside the figure.
"""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

__all__ = ["MARKS", "grid_sheet", "legend_bar", "mask_outline", "muted", "plot_curve", "tint", "title_bar",
           "with_legend"]

# The overlay marks: name -> RGB. Orange and blue tell apart for the common colour-vision deficiencies too.
MARKS: dict[str, tuple[int, int, int]] = {
    "SAM mask": (255, 110, 0),  # orange fill, 55 % opaque
    "ground truth": (0, 150, 255),  # blue outline, 2 px
    "box": (255, 0, 200),  # magenta rectangle
    "points": (255, 235, 0),  # yellow dots with a black ring
}


def muted(image: np.ndarray) -> np.ndarray:
    """``H x W x 3`` uint8 -> ``H x W x 3`` float32 grey copy at reduced contrast (luma mapped into 60..190),
    the backdrop of every overlay: no scene colour is left to be confused with a mark."""
    luma = image[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    grey = 60.0 + luma * (130.0 / 255.0)
    return np.repeat(grey[..., None], 3, axis=2)


def tint(out: np.ndarray, mask: np.ndarray, rgb: tuple[int, int, int], alpha: float = 0.55) -> np.ndarray:
    """Blend ``rgb`` into float image ``out`` (H x W x 3, modified in place and returned) where ``mask`` is set."""
    out[mask] = out[mask] * (1 - alpha) + np.asarray(rgb, np.float32) * alpha
    return out


def _font(size: int):
    """PIL's scalable default font at ``size`` px (Pillow >= 10.1 with FreeType), else its fixed bitmap font."""
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):
        return ImageFont.load_default()


def title_bar(im: Image.Image, title: str) -> Image.Image:
    """Write ``title`` in white on a black bar across the top of ``im`` (in place; returned). The text is about
    1/40 of the width high (at least 10 px)."""
    from PIL import ImageDraw

    size = max(10, im.width // 40)
    d = ImageDraw.Draw(im)
    d.rectangle([0, 0, im.width, size + 4], fill=(0, 0, 0))
    d.text((3, 2), title, fill=(255, 255, 255), font=_font(size))
    return im


def legend_bar(width: int, items: dict[str, tuple[int, int, int]] | None = None) -> Image.Image:
    """A dark strip ``width`` wide with a colour swatch and the name of each mark (default: :data:`MARKS`), in
    as many rows as the width needs; the text grows with the width (about 1/90 of it, at least 11 px) so that
    it stays legible on a wide sheet."""
    from PIL import ImageDraw

    items = MARKS if items is None else items
    size = max(11, width // 90)
    font = _font(size)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    rows: list[list[tuple[int, str, tuple[int, int, int]]]] = [[]]
    x = size // 2
    for name, rgb in items.items():
        step = size + 5 + int(probe.textlength(name, font=font)) + size
        if rows[-1] and x + step - size > width:  # does not fit: a new row
            rows.append([])
            x = size // 2
        rows[-1].append((x, name, rgb))
        x += step
    line = size + 8
    bar = Image.new("RGB", (max(1, width), line * len(rows) + 2), (20, 20, 20))
    d = ImageDraw.Draw(bar)
    for r, row in enumerate(rows):
        y = r * line + 5
        for x0, name, rgb in row:
            d.rectangle([x0, y, x0 + size, y + size - 1], fill=rgb, outline=(255, 255, 255))
            d.text((x0 + size + 5, y - 1), name, fill=(255, 255, 255), font=font)
    return bar


def with_legend(image: Image.Image, items: dict[str, tuple[int, int, int]] | None = None) -> Image.Image:
    """``image`` with :func:`legend_bar` below it, so the figure explains its own colours."""
    bar = legend_bar(image.width, items)
    out = Image.new("RGB", (image.width, image.height + bar.height), (20, 20, 20))
    out.paste(image.convert("RGB"), (0, 0))
    out.paste(bar, (0, image.height))
    return out


def grid_sheet(panels: list[Image.Image], cols: int = 4) -> Image.Image:
    """Paste ``panels`` (PIL images, all the size of the first) row by row, ``cols`` per row, on a dark sheet.

    Returns one RGB image of ``cols * w`` x ``ceil(len(panels) / cols) * h`` pixels.
    Raises ValueError for no panels or ``cols`` < 1 (there is nothing to size the sheet by).
    """
    if not panels:
        raise ValueError("grid_sheet needs at least one panel")
    if cols < 1:
        raise ValueError(f"cols must be >= 1, got {cols}")
    w, h = panels[0].size
    rows = (len(panels) + cols - 1) // cols
    sheet = Image.new("RGB", (cols * w, rows * h), (30, 30, 30))
    for i, p in enumerate(panels):
        sheet.paste(p, ((i % cols) * w, (i // cols) * h))
    return sheet


def mask_outline(mask: np.ndarray, width: int = 2) -> np.ndarray:
    """The ``width``-pixel inner band of an H x W bool mask (4-neighbour erosion; the image border counts as
    outside), H x W bool: what the overlays draw as the ground-truth outline."""
    inner = mask.copy()
    for _ in range(width):
        inner[1:-1, 1:-1] &= inner[:-2, 1:-1] & inner[2:, 1:-1] & inner[1:-1, :-2] & inner[1:-1, 2:]
        inner[[0, -1], :] = False
        inner[:, [0, -1]] = False
    return mask & ~inner


def plot_curve(history: str, out_png: str) -> str:
    """Draw a training run's ``history.jsonl`` (see :func:`samr1.shapes.train.train`): train IoU (mean of the
    last 50 steps) and the periodic held-out box / box + point / point IoU against the step, the learning
    rate on a second axis. Returns ``out_png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(history) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    tr = [r for r in rows if "train_iou" in r]
    ev = [r for r in rows if "eval" in r]
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    ax.plot([r["step"] for r in tr], [r["train_iou"] for r in tr], color="0.6", lw=1, label="train IoU (50-step mean)")
    for key, colour in (("box", "C0"), ("box+point", "C1"), ("point", "C2")):
        pts = [(r["step"], r["eval"][key]) for r in ev if r["eval"].get(key) is not None]
        if pts:
            ax.plot(*zip(*pts, strict=True), "o-", color=colour, label=f"held-out {key}")
    ax.axhline(0.85, color="k", ls=":", lw=1, label="goal 0.85")
    ax.set_xlabel("step")
    ax.set_ylabel("mean IoU")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax2 = ax.twinx()
    ax2.plot([r["step"] for r in tr], [r["lr"] for r in tr], color="C3", lw=0.8, ls="--")
    ax2.set_ylabel("learning rate", color="C3")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("tiny-shapes training (held-out: 20 scenes, multimask)")
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png
