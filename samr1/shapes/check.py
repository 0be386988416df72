"""Held-out quality of a ``tiny-shapes`` checkpoint on two scene generators (the card's ``heldout_*`` and
``alt_generator`` numbers), and the resolution ceiling an input frame puts on any model. The command line is
``samr1 shapes-check`` (:mod:`samr1.cli.shapes_check`); these are its library functions.

* :func:`check`: mean IoU for box, box + centre point and centre point prompts, best-of-3 (multimask, the
  engine's default) and single-mask, overall and by object size, on ``own`` scenes
  (:func:`samr1.shapes.scenes.make_scene`, seeds 0..N-1; training only draws seeds >= 1,000,000) and ``alt``
  scenes (:func:`samr1.shapes.scenes_alt.make_alt_scene`, an independent generator the model never saw).
  Any checkpoint of the tiny-shapes spec loads; the default is the shipped file.
* :func:`resolution_ceiling`: evaluates no model. On the own held-out scenes, the IoU of the training target
  itself (the ground truth area-downsampled to the low-res grid of a SAM at that input frame) pushed through
  SAM's postprocessing: what a model that predicts its target exactly would score, the practical bound the
  frame choice puts on every number of :func:`check`.
* :func:`examples_figure`: a sheet of box-prompted masks on scenes of both generators.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

__all__ = ["check", "check_frame", "resolution_ceiling", "examples_figure"]


def check(weights: str | None = None, n_scenes: int = 100,
          progress: Callable[[str, str, dict[str, Any], float], None] | None = None) -> dict[str, Any]:
    """Evaluate ``weights`` (default: the shipped tiny-shapes file) on both generators, both output modes.

    ``progress(generator, mode, result, seconds)``, when given, is called after each of the four entries
    (generator "own" / "alt", mode "multimask" / "single_mask"), so a caller can report as they come.

    Returns {"own": {"multimask": evaluate(...), "single_mask": ...}, "alt": {...}} (see
    :func:`samr1.shapes.train.evaluate` for one entry's fields)."""
    from samr1.sam import load_sam
    from samr1.shapes.scenes import make_scene
    from samr1.shapes.scenes_alt import make_alt_scene
    from samr1.shapes.train import evaluate

    if n_scenes < 1:
        raise ValueError(f"n_scenes must be >= 1, got {n_scenes}")

    sam = load_sam("tiny-shapes", weights)
    out: dict[str, Any] = {}
    for name, fn in (("own", make_scene), ("alt", make_alt_scene)):
        out[name] = {}
        for mode, multi in (("multimask", True), ("single_mask", False)):
            t = time.time()
            out[name][mode] = evaluate(sam, n_scenes=n_scenes, first_seed=0, multimask=multi, scene_fn=fn)
            if progress is not None:
                progress(name, mode, out[name][mode], time.time() - t)
    return out


def check_frame(frame: int) -> None:
    """Raise ValueError unless ``frame`` (an input side in pixels) is a positive multiple of the tiny-shapes
    patch size, the frames :func:`resolution_ceiling` can build a model at."""
    from samr1.sam import SAM_KINDS

    patch = SAM_KINDS["tiny-shapes"].patch_size
    if frame < patch or frame % patch:
        raise ValueError(f"frame {frame} is not a positive multiple of the patch size {patch}; use e.g. "
                         f"{max(patch, round(frame / patch) * patch)}")


def resolution_ceiling(frame: int, n_scenes: int = 100, first_seed: int = 0) -> dict[str, Any]:
    """Mean IoU of the ground truth itself pushed through SAM's mask resolution at input frame ``frame``.

    Each held-out object's mask (:func:`samr1.shapes.scenes.make_scene`, seeds ``first_seed ..``) is resized to
    the frame and zero-padded as training targets are (area-weighted), average-pooled to the low-res grid
    of the tiny-shapes spec at that frame (``4 * frame / patch_size`` a side), shifted so 0 is the 0.5
    level, then upsampled back by ``Sam.postprocess_masks`` of a model built at that frame and thresholded
    at 0, exactly as predicted logits are. The IoU with the original mask is what a model predicting its
    training target exactly would score: the resolution ceiling of the recipe (logits shaped otherwise,
    e.g. a sub-pixel signed distance, could beat it slightly; it is a practical bound, not a theorem).

    Raises ValueError when ``frame`` is not a positive multiple of the patch size.

    Returns {"frame", "grid", "scenes", "objects", "all": mean IoU, "by_size": {"small"/"medium"/"large":
    {"iou", "n"}}} (sizes as in :func:`samr1.shapes.train.evaluate`: < 1 %, < 5 %, >= 5 % of the image).
    """
    import dataclasses

    import numpy as np
    import torch
    import torch.nn.functional as F

    from samr1.geometry import mask_iou_numpy, resize_longest_side
    from samr1.sam import SAM_KINDS, build_sam
    from samr1.shapes.scenes import make_scene
    from samr1.shapes.train import frame_mask, size_bucket

    check_frame(frame)
    if n_scenes < 1:
        raise ValueError(f"n_scenes must be >= 1, got {n_scenes}")
    spec = dataclasses.replace(SAM_KINDS["tiny-shapes"], img_size=frame)
    sam = build_sam(spec)
    grid = 4 * frame // spec.patch_size
    sizes: dict[str, list[float]] = {"small": [], "medium": [], "large": []}
    for seed in range(first_seed, first_seed + n_scenes):
        scene = make_scene(seed)
        h, w = scene.image.shape[:2]
        for o in scene.objects:
            t = torch.from_numpy(frame_mask(o.mask, frame))[None, None]
            low = F.adaptive_avg_pool2d(t, grid) - 0.5
            with torch.no_grad():
                up = sam.postprocess_masks(low, resize_longest_side(h, w, frame), (h, w))[0, 0] > 0
            frac = o.mask.sum() / (h * w)
            sizes[size_bucket(frac)].append(mask_iou_numpy(up.numpy(), o.mask))
    every = [v for vs in sizes.values() for v in vs]
    return {"frame": frame, "grid": grid, "scenes": n_scenes, "objects": len(every),
            "all": round(float(np.mean(every)), 4),
            "by_size": {k: {"iou": round(float(np.mean(v)), 4) if v else None, "n": len(v)}
                        for k, v in sizes.items()}}


def examples_figure(weights: str | None, out_png: str, n: int = 6, first_seed: int = 0) -> str:
    """A sheet of ``n`` scenes from each generator (top row: own held-out, bottom: alt): every object
    segmented from its tight box, on a grey copy of the scene: predicted masks tinted orange, ground-truth
    outlines blue, boxes magenta (:data:`samr1.shapes.viz.MARKS`, named in a legend strip), the scene's mean box
    IoU in the title. Returns ``out_png``."""
    import numpy as np
    from PIL import Image, ImageDraw
    from segment_anything import SamPredictor

    from samr1.geometry import mask_iou_numpy
    from samr1.sam import load_sam
    from samr1.shapes.scenes import make_scene
    from samr1.shapes.scenes_alt import make_alt_scene
    from samr1.shapes.train import box_prompt
    from samr1.shapes.viz import MARKS, grid_sheet, mask_outline, muted, tint, title_bar, with_legend

    pred = SamPredictor(load_sam("tiny-shapes", weights))
    side = 256
    panels = []
    for name, fn in (("own", make_scene), ("alt", make_alt_scene)):
        for seed in range(first_seed, first_seed + n):
            scene = fn(seed)
            pred.set_image(scene.image)
            img = muted(scene.image)  # grey backdrop: no scene colour can pass for a mark
            ious, boxes, outline = [], [], np.zeros(scene.image.shape[:2], bool)
            for o in scene.objects:
                box = box_prompt(o.mask)  # the box evaluate() prompts with
                masks, scores, _ = pred.predict(box=box, multimask_output=True)
                m = masks[int(np.argmax(scores))]
                ious.append(mask_iou_numpy(m, o.mask))
                tint(img, m, MARKS["SAM mask"])
                outline |= mask_outline(o.mask, 3)  # 3 px: still a line after the tile is scaled down
                boxes.append(box)
            img[outline] = MARKS["ground truth"]
            im = Image.fromarray(img.clip(0, 255).astype(np.uint8))
            d = ImageDraw.Draw(im)
            for b in boxes:
                d.rectangle(list(map(float, b)), outline=MARKS["box"], width=1)
            scale = side / max(im.size)
            im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))))
            tile = Image.new("RGB", (side, side + 14), (30, 30, 30))
            tile.paste(im, (0, 14))
            title_bar(tile, f"{name} {seed}: box IoU " + (f"{np.mean(ious):.2f}" if ious else "-"))
            panels.append(tile)
    with_legend(grid_sheet(panels, cols=n), {k: v for k, v in MARKS.items() if k != "points"}).save(out_png)
    return out_png
