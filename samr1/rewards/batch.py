"""What the presets read: one batch's completions, parsed answers, images, ground truths and mask IoUs.

:class:`samr1.rewards.SamR1Reward` loads and parses a batch ONCE (and calls the engine once); a preset module
(:mod:`samr1.rewards.samr1`, ...) turns a :class:`BatchInputs` into its components' values.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from samr1.answer import Answer
from samr1.hashing import mask_digest

__all__ = ["BatchInputs", "MaskMemo"]


@dataclass
class BatchInputs:
    """One batch, row by row (all lists parallel to the completions).

    Attributes:
        texts: the completion's text (None when the completion had no recognisable form).
        answers: samr1's parse of each text (:func:`samr1.answer.parse_answer`), in the ORIGINAL image frame
            where the row's image loaded, else in the model frame.
        images: the row's image, ``H x W x 3`` uint8 (None when the column is absent or did not load).
        gts: the row's ground-truth mask, ``H x W`` bool at the image's size (None when absent or unusable).
        scorable: rows whose answer parsed and whose image and mask loaded.
        ious: SAM's mask IoU per row (0.0 where not scored).
        codes: every failure code of each row (the parse code first).
        instances: the row's ground-truth instances (``H x W`` bool masks, the non-empty ones; ``[]`` for an
            empty target), None where the mask did not load. ``gts`` holds their union.
        ignores: the row's ignore region (``H x W`` bool, pixels in neither the intersection nor the union of
            the mask rewards), None where the row has none.
    """

    texts: list[str | None]
    answers: list[Answer]
    images: list[np.ndarray | None]
    gts: list[np.ndarray | None]
    scorable: list[int]
    ious: list[float] = field(default_factory=list)
    codes: list[list[str]] = field(default_factory=list)
    instances: list[list[np.ndarray] | None] = field(default_factory=list)
    ignores: list[np.ndarray | None] = field(default_factory=list)


class MaskMemo:
    """Values derived from a ground-truth mask, memoised by the mask's content (bounded LRU).

    Masks recur across epochs and the derivations are costly (a distance transform is ~0.1 s at 840^2).
    """

    def __init__(self, maxsize: int = 4096):
        self.maxsize = int(maxsize)
        self._items: collections.OrderedDict[tuple[str, Any], Any] = collections.OrderedDict()

    def get(self, mask: np.ndarray, tag: Any, compute: Callable[[np.ndarray], Any]) -> Any:
        """``compute(mask)``, remembered under (the mask's digest, ``tag``)."""
        k = (mask_digest(mask), tag)
        hit = self._items.get(k)
        if hit is not None:
            self._items.move_to_end(k)
            return hit
        val = compute(mask)
        self._items[k] = val
        if len(self._items) > self.maxsize:
            self._items.popitem(last=False)
        return val
