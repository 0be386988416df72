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

__all__ = ["seen_frame", "check_frame", "FrameError"]


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
