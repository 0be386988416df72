"""Ground truth in the policy's frame: the box and reference points a preset's box/point rewards compare with.

Two rules, named by ``SamR1RewardConfig.gt_rule``:

* ``"published"`` (the default, every preset): Seg-Zero's / VisionReasoner's published data preparation. The
  inclusive box and the reference points are computed on the ORIGINAL ``H x W`` mask
  (:func:`samr1.geometry.mask_to_box`, :func:`samr1.geometry.mask_to_points` with ``rule="segzero"``), then
  each coordinate is scaled to the ``h x w`` frame as ``int(v * w / W + 0.5)`` (x) and
  ``int(v * h / H + 0.5)`` (y): integers, as in the peers' training files.
* ``"resize"``: the mask is first resized to the frame by nearest neighbour
  (:func:`samr1.geometry.resize_mask_nearest`) and measured there (an object too thin to survive the resize
  is measured on the original and scaled). On 480 x 640 images its reference points lie a median 23 px from
  the published ones; kept for comparisons with earlier runs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from samr1.geometry import mask_to_box, mask_to_points, resize_mask_nearest
from samr1.io import InputError, load_mask

__all__ = ["GT_RULES", "is_instance_list", "load_instances", "scale_coordinate", "published_geometry",
           "resized_geometry"]

GT_RULES: tuple[str, ...] = ("published", "resize")
"""How ground-truth boxes and points reach the policy's frame (see the module docstring)."""


def is_instance_list(value: Any, image_size: tuple[int, int] | None = None) -> bool:
    """Whether a row's mask value holds several instance masks: a list/tuple of masks (arrays, PIL images,
    COCO RLE dicts, paths, or H x W nested lists), an ``N x H x W`` array (or tensor), or ``[]`` (no
    instance). A list of rows of numbers (one H x W mask as nested lists) is one mask, and so is an
    ``H x W x C`` array with ``C <= 4`` (a colour or alpha PNG read with ``np.array(Image.open(path))``,
    which :func:`samr1.io.load_mask` reads as one mask): with ``image_size`` = (H, W) known, an array whose
    first two sides are the image's is that; without it, one whose last side is 1-4 (no image is 4 px wide)."""
    if hasattr(value, "ndim") and hasattr(value, "shape") and not isinstance(value, (list, tuple)):
        if value.ndim != 3:
            return False
        shape = tuple(int(v) for v in value.shape)
        if image_size is not None:
            size = tuple(int(v) for v in image_size)
            if shape[:2] == size and shape[2] <= 4:
                return False
            if shape[1:] == size:
                return True
        return not shape[2] <= 4
    if not isinstance(value, (list, tuple)):
        return False
    if not value:
        return True
    first = value[0]
    if isinstance(first, (list, tuple)):  # a nested-list mask's rows hold numbers; an instance's rows lists
        return bool(first) and isinstance(first[0], (list, tuple))
    return not isinstance(first, (bool, int, float, np.generic))


def load_instances(value: Any, field: str = "mask", source: str | None = None,
                   expected_size: tuple[int, int] | None = None) -> tuple[np.ndarray | None, list[np.ndarray]]:
    """(union ``H x W`` bool | None, the non-empty instance masks) of a row's mask value: one mask (one
    instance, none when it is empty) or a list of instances (:func:`is_instance_list`). The union is None
    only for ``[]`` (the caller knows the image's size). Every instance must have the same ``H x W``
    (``expected_size`` when given).

    Raises:
        InputError: naming ``field`` (and the instance index), when a mask is malformed or sizes differ.
    """
    if not is_instance_list(value, expected_size):
        m = load_mask(value, field=field, source=source, expected_size=expected_size)
        return m, ([m] if m.any() else [])
    masks = []
    for k, v in enumerate(value):
        m = load_mask(v, field=f"{field}[{k}]", source=source, expected_size=expected_size)
        if masks and m.shape != masks[0].shape:
            raise InputError(f"{field}[{k}]: instance is {m.shape[0]}x{m.shape[1]} but {field}[0] is "
                             f"{masks[0].shape[0]}x{masks[0].shape[1]}; every instance is at the image's size")
        masks.append(m)
    if not masks:
        return None, []
    union = np.logical_or.reduce(masks) if len(masks) > 1 else masks[0].copy()
    return union, [m for m in masks if m.any()]


def scale_coordinate(v: float, factor: float) -> int:
    """``int(v * factor + 0.5)``: the peers' rounding of an original-pixel coordinate into the 840 frame
    (``factor = 840 / W`` for x, ``840 / H`` for y)."""
    return int(v * factor + 0.5)


def published_geometry(mask: np.ndarray, frame: tuple[int, int], k_points: int = 2,
                       point_rule: str = "segzero") -> tuple[tuple[int, int, int, int] | None, list[tuple[int, int]]]:
    """(inclusive box, ``k_points`` reference points) of an ``H x W`` mask, computed on the mask and scaled to
    ``frame = (h, w)`` coordinate by coordinate (:func:`scale_coordinate`); ``(None, [])`` for an empty mask."""
    m = np.asarray(mask, dtype=bool)
    H, W = m.shape
    h, w = frame
    fx, fy = w / W, h / H
    box = mask_to_box(m, "inclusive")
    if box is None:
        return None, []
    pts = mask_to_points(m, k_points, rule=point_rule)
    sbox = (scale_coordinate(box[0], fx), scale_coordinate(box[1], fy), scale_coordinate(box[2], fx),
            scale_coordinate(box[3], fy))
    return sbox, [(scale_coordinate(x, fx), scale_coordinate(y, fy)) for x, y in pts]


def resized_geometry(mask: np.ndarray, frame: tuple[int, int], k_points: int = 2,
                     point_rule: str = "segzero") -> tuple[tuple[float, ...] | None, list[tuple[float, float]]]:
    """(inclusive box, reference points) measured on the mask resized to ``frame`` (nearest neighbour); an
    object thinner than one frame pixel is measured on the original and scaled (``x * w / W``)."""
    m = np.asarray(mask, dtype=bool)
    small = resize_mask_nearest(m, frame)
    if small.any() or not m.any():
        return mask_to_box(small, "inclusive"), mask_to_points(small, k_points, rule=point_rule)
    (h, w), (H, W) = frame, m.shape
    sx, sy = w / W, h / H
    b = mask_to_box(m, "inclusive")
    pts = mask_to_points(m, k_points, rule=point_rule)
    return (b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy), [(x * sx, y * sy) for x, y in pts]
