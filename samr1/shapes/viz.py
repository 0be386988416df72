"""Figures of the toy world: contact sheets, mask outlines and the training curve.

Used by ``samr1 demo`` (:mod:`samr1.demo`), the checker's example sheet (:mod:`samr1.shapes.check`) and the
trainer's curve (:mod:`samr1.shapes.train`). Images are PIL RGB; masks are H x W bool numpy arrays in the
image's own pixels.
"""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

__all__ = ["grid_sheet", "mask_outline", "plot_curve"]


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
