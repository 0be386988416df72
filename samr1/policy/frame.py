"""The answer frame must be the frame the model sees.

Qwen2.5-VL answers in absolute pixels of the image it is shown, and its image processor ``smart_resize``s
the policy's S x S image to a multiple of the patch size (x merge) within ``[min_pixels, max_pixels]``:
with Qwen2.5-VL-7B's defaults S = 840 stays 840, but 1000 becomes 1008, 600 becomes 588, and 840 with
``max_pixels=401408`` becomes 616 (a 36 % scale error on every reward). :func:`check_frame` refuses such a
setting up front, naming the side that would be kept.
"""

from __future__ import annotations

from typing import Any

from samr1.config import ConfigError

__all__ = ["seen_frame", "check_frame", "FrameError", "ANSWER_FRAMES", "NORM1000_MODEL_TYPES", "default_answer_frame",
           "model_type_of", "answer_frame_size"]

ANSWER_FRAMES: tuple[str, ...] = ("pixels", "norm1000")
"""Coordinate frames a policy answers in: absolute pixels of the ``S x S`` image it sees (Qwen2.5-VL), or
0..1000 on each axis relative to the image (Qwen2-VL, Qwen3-VL)."""

NORM1000_MODEL_TYPES: frozenset[str] = frozenset({"qwen2_vl", "qwen3_vl", "qwen3_vl_moe"})
"""transformers ``model_type``s whose grounding is relative to the image, 0..1000 on each axis."""


class FrameError(ConfigError):
    """The policy's answer frame differs from the image size its processor produces."""


def seen_frame(processor: Any, side: int) -> tuple[int, int]:
    """``(h, w)`` in pixels of the image the model sees when given an ``side x side`` image (from the
    processor's ``image_grid_thw`` x its patch size)."""
    from PIL import Image

    ip = getattr(processor, "image_processor", processor)
    grid = ip(images=[Image.new("RGB", (int(side), int(side)))], return_tensors="pt")["image_grid_thw"][0]
    patch = int(getattr(ip, "patch_size", 14))
    return int(grid[1]) * patch, int(grid[2]) * patch


def check_frame(processor: Any, side: int, *, answer_frame: str = "pixels", field: str = "policy_image_size") -> None:
    """Raise :class:`FrameError` when answers in the ``side x side`` pixel frame would not be in the pixels
    the model sees. A normalised answer frame (``"norm1000"``) does not depend on the image size."""
    if answer_frame != "pixels":
        return
    h, w = seen_frame(processor, side)
    if (h, w) != (side, side):
        ip = getattr(processor, "image_processor", processor)
        lo, hi = getattr(ip, "min_pixels", None), getattr(ip, "max_pixels", None)
        fix = str(h) if h == w else "a side the processor keeps"
        raise FrameError(f"{field}={side}: the policy's processor resizes a {side} x {side} image to {h} x {w} "
                         f"(min_pixels={lo}, max_pixels={hi}), and the policy answers in the pixels it sees, so "
                         f"every box would be read at the wrong scale; set {field} to {fix} or change the "
                         "processor's min_pixels / max_pixels", field=field)


def default_answer_frame(model_type: str | None) -> str:
    """The frame a model family grounds in: "norm1000" for Qwen2-VL and Qwen3-VL (:data:`NORM1000_MODEL_TYPES`),
    "pixels" otherwise (Qwen2.5-VL and unknown families)."""
    return "norm1000" if model_type in NORM1000_MODEL_TYPES else "pixels"


def model_type_of(path: Any) -> str | None:
    """The ``model_type`` in a model folder's ``config.json`` (None when there is no readable one)."""
    import json
    import os

    try:
        with open(os.path.join(os.fspath(path), "config.json"), encoding="utf-8") as f:
            value = json.load(f).get("model_type")
    except (OSError, ValueError, TypeError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def answer_frame_size(answer_frame: str, side: int) -> tuple[int, int]:
    """``(h, w)`` of the frame the answer's numbers are in: ``(side, side)`` for "pixels", ``(1000, 1000)``
    for "norm1000" (whatever the image's size: the parser and the rewards then scale 0..1000 to the image)."""
    if answer_frame not in ANSWER_FRAMES:
        raise ValueError(f"answer_frame must be one of {ANSWER_FRAMES}, got {answer_frame!r}")
    return (1000, 1000) if answer_frame == "norm1000" else (int(side), int(side))
