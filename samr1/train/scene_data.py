"""Synthetic training data on disk: ``samr1.shapes.scenes`` written as a JSONL manifest (for tests, benches, smoke runs).

Each row is one object of one scene: ``img<scene>.png`` (H x W x 3), ``mask<scene>.png`` (0/255) and the
object's query ("the red circle on the left"). The tiny-shapes SAM was trained on the same generator, so its
reward is meaningful on these rows.

Modes (``mode=``):

- ``"plain"``: two objects, the front-most one is the target (fully visible; its box is a good proxy for
  its mask);
- ``"hard"``: four objects, the target is one whose box is a poor proxy for its mask: other visible objects
  cover at least ``HARD_OTHER_IN_BOX`` of its box, or it fills less than ``HARD_FILL`` of its box (concave,
  thin or partly hidden), so SAM given the box alone can segment something else and the points decide.
"""

from __future__ import annotations

import json
import os

import numpy as np
from PIL import Image

__all__ = ["write_scene_manifest", "is_hard_target", "SCENE_MODES", "HARD_OTHER_IN_BOX", "HARD_FILL"]

SCENE_MODES = ("plain", "hard")
HARD_OTHER_IN_BOX = 0.25
"""hard mode: fraction of the target's box covered by other visible objects at or above which it qualifies"""
HARD_FILL = 0.55
"""hard mode: the target's mask area over its box area below which it qualifies"""


def is_hard_target(objects: list, k: int) -> bool:
    """Whether ``objects[k]`` (a scene's visible objects) is a poor fit for its box (see the module doc)."""
    from samr1.geometry import mask_to_box

    m = objects[k].mask
    x1, y1, x2, y2 = (int(v) for v in mask_to_box(m))
    box_area = (x2 - x1 + 1) * (y2 - y1 + 1)
    others = np.zeros_like(m)
    for j, o in enumerate(objects):
        if j != k:
            others |= o.mask
    covered = others[y1:y2 + 1, x1:x2 + 1].sum() / box_area
    return bool(covered >= HARD_OTHER_IN_BOX or m.sum() / box_area < HARD_FILL)


def write_scene_manifest(folder: str | os.PathLike, n_rows: int, *, size: tuple[int, int] | None = (72, 96),
                         seed: int = 0, objects_per_scene: int | None = None, name: str = "train.jsonl",
                         mode: str = "plain") -> str:
    """Write ``n_rows`` rows (one object each, one row per image) and return the manifest path.

    ``size``: (H, W) of every image, or None for the generator's random sizes. ``mode``: ``"plain"`` or
    ``"hard"`` (module docstring); ``objects_per_scene`` defaults to 2 (plain) / 4 (hard). Scene seeds run from
    ``seed`` upwards (a scene without a qualifying target is skipped), so two sets from seeds far apart are
    disjoint."""
    from samr1.shapes.scenes import make_scene

    if mode not in SCENE_MODES:
        raise ValueError(f"mode={mode!r}: choose one of {SCENE_MODES}")
    n_obj = objects_per_scene or (2 if mode == "plain" else 4)
    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, name)
    written = 0
    scene_seed = seed
    with open(path, "w", encoding="utf-8") as f:
        while written < n_rows:
            sc = make_scene(scene_seed, size=size, n_objects=n_obj)
            scene_seed += 1
            if not sc.objects:
                continue
            if mode == "plain":
                obj = sc.objects[-1]  # the front-most object: fully visible, the least ambiguous query
            else:
                hard = [k for k in range(len(sc.objects)) if is_hard_target(sc.objects, k)]
                queries = [o.query for o in sc.objects]
                hard = [k for k in hard if queries.count(queries[k]) == 1]  # the query names one object
                if not hard:
                    continue
                obj = sc.objects[hard[-1]]
            img_name = f"img{scene_seed - 1}.png"
            mask_name = f"mask{scene_seed - 1}.png"
            Image.fromarray(sc.image).save(os.path.join(folder, img_name))
            Image.fromarray(obj.mask.astype(np.uint8) * 255).save(os.path.join(folder, mask_name))
            f.write(json.dumps({"image": img_name, "query": obj.query, "mask": mask_name}) + "\n")
            written += 1
    return path
