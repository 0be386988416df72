"""Synthetic training data on disk: ``samr1.shapes.scenes`` written as a JSONL manifest (for tests, benches, smoke runs).

Each row is one object of one scene: ``img<scene>.png`` (H x W x 3), ``mask<scene>_<object>.png`` (0/255)
and the object's query ("the red circle on the left"). The tiny-shapes SAM was trained on the same
generator, so its reward is meaningful on these rows.
"""

from __future__ import annotations

import json
import os

import numpy as np
from PIL import Image

__all__ = ["write_scene_manifest"]


def write_scene_manifest(folder: str | os.PathLike, n_rows: int, *, size: tuple[int, int] | None = (72, 96),
                         seed: int = 0, objects_per_scene: int = 2, name: str = "train.jsonl") -> str:
    """Write ``n_rows`` rows (one object each; ``objects_per_scene`` objects per image, one row per image)
    and return the manifest path. ``size``: (H, W) of every image, or None for the generator's random sizes."""
    from samr1.shapes.scenes import make_scene

    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, name)
    written = 0
    scene_seed = seed
    with open(path, "w", encoding="utf-8") as f:
        while written < n_rows:
            sc = make_scene(scene_seed, size=size, n_objects=objects_per_scene)
            scene_seed += 1
            if not sc.objects:
                continue
            obj = sc.objects[-1]  # the front-most object: fully visible, the least ambiguous query
            img_name = f"img{scene_seed - 1}.png"
            mask_name = f"mask{scene_seed - 1}.png"
            Image.fromarray(sc.image).save(os.path.join(folder, img_name))
            Image.fromarray(obj.mask.astype(np.uint8) * 255).save(os.path.join(folder, mask_name))
            f.write(json.dumps({"image": img_name, "query": obj.query, "mask": mask_name}) + "\n")
            written += 1
    return path
