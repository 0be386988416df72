"""The low-res logits of an engine's last ``score`` call, kept on request so that masks of the answers it
scored can be made again without a second SAM decode.

The rollout log (:class:`samr1.train.rollouts.RolloutLog`) writes SAM's mask of a few answers the reward has
just scored. Decoding them again was most of the log's own work (bench/RESULTS.md, "Rollout logging"), while
the engine had already decoded every single-object answer of the step in its fused path and dropped the
logits after counting IoUs. With ``engine.keep_logits = True`` the fused path keeps a reference to them
(:class:`KeptLogits`), and :meth:`KeptLogits.masks` turns the rows asked for into masks with the engine's own
postprocess: the code path :meth:`segment_batch` uses on its own decode.

Bounds: the engine holds ONE record, the last fused call's (each call replaces it; nothing is kept while
``keep_logits`` is False, the default). A record is the N x h x w float32 logits the call decoded anyway
(a reference, not a copy: 256 KiB per answer at SAM's 256 x 256, 36 KiB at tiny-shapes' 96 x 96) plus a
few small Python values per row. Whoever takes the record (``kept_logits()``) keeps it alive as long as it
holds it.

Rows are found by content, not by position: (the image's content key, the answer's prompt). So a record is
never applied to another call's rows (another thread's ``score`` may replace it at any time; a missed row
is just decoded again by the caller), and the caller need not know how the reward ordered its engine call.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from samr1.engine.scoring import n_objects

__all__ = ["KeptLogits", "KeepsLogits", "prompt_key"]


def prompt_key(answer: Any) -> tuple:
    """What SAM's decoder reads of a single-object ``answer``: (box XYXY or None, points ((x, y), ...),
    labels), in original image pixels, as the engines' ``_decode`` reads them (labels default to 1). Two
    answers with equal keys on equal pixels decode to the same logits."""
    from samr1.engine.prompt_check import prompt_labels, prompt_points

    pts = tuple((float(x), float(y)) for x, y in prompt_points(answer))
    labels = tuple(int(v) for v in prompt_labels(answer, len(pts)))
    bbox = None if answer.bbox is None else tuple(float(v) for v in answer.bbox)
    return bbox, pts, labels


class KeptLogits:
    """One fused ``score`` call's low-res logits and what their postprocess needs, row by row.

    Args:
        engine: the engine that decoded them (its ``_image_key`` and ``_row_mask`` are used).
        logits: N x h x w float32, row r = the mask SAM chose for the r-th decoded answer (on the engine's
            device; the very tensor the fused IoU read).
        keys: N image content keys (the engine's ``_image_key`` of row r's image).
        prompts: N :func:`prompt_key` of row r's answer.
        input_sizes: N (h, w) resized sizes before padding to SAM's square frame (SAM; None for SAM 2, whose
            postprocess squashes the whole frame).
        original_sizes: N (H, W) original image sizes.
    """

    __slots__ = ("engine", "logits", "input_sizes", "original_sizes", "_rows")

    def __init__(self, engine: Any, logits: torch.Tensor, keys: Sequence[str], prompts: Sequence[tuple],
                 input_sizes: Sequence[Any], original_sizes: Sequence[tuple[int, int]]):
        self.engine = engine
        self.logits = logits
        self.input_sizes = list(input_sizes)
        self.original_sizes = list(original_sizes)
        # the first row of each (image, prompt): equal ones decoded to the same mask
        self._rows: dict[tuple[str, tuple], int] = {}
        for r, k in enumerate(zip(keys, prompts, strict=True)):
            self._rows.setdefault(k, r)

    def __len__(self) -> int:
        return len(self.original_sizes)

    def masks(self, images: Sequence[Any], answers: Sequence[Any]) -> list[np.ndarray | None]:
        """The H x W bool mask of each (image, answer) pair that this call decoded, None for the others (an
        answer without exactly one object, or one this call did not score): the mask ``engine.segment``
        gives (SAM's postprocess of the logits, ``> threshold``), from the logits the reward scored.

        ``images`` are H x W x 3 uint8 arrays, PIL images or paths (each distinct object hashed once)."""
        out: list[np.ndarray | None] = [None] * len(answers)
        by_obj: dict[int, str] = {}
        todo: list[tuple[int, int]] = []
        for i, (img, a) in enumerate(zip(images, answers, strict=True)):
            if n_objects(a) != 1:  # a union of several prompts' masks (or an empty one) is no single row
                continue
            key = by_obj.get(id(img))
            if key is None:
                key = by_obj[id(img)] = self.engine._image_key(img)
            r = self._rows.get((key, prompt_key(a)))
            if r is not None:
                todo.append((i, r))
        if todo:
            with torch.inference_mode():
                for i, r in todo:
                    out[i] = self.engine._row_mask(self.logits[r], self.input_sizes[r], self.original_sizes[r])
        return out


class KeepsLogits:
    """The opt-in keeping of :class:`KeptLogits` (a mixin of both engines).

    An engine provides ``_lock``, ``_image_key(image) -> str`` (the content key its cache uses) and
    ``_row_mask(logits h x w, input_size, original_size) -> H x W bool ndarray`` (its postprocess, also used by
    its ``segment_batch``), and calls :meth:`_keep` in its fused path.
    """

    keep_logits: bool = False
    """Keep the last fused ``score`` call's low-res logits (:meth:`kept_logits`); off by default: nothing is
    held between calls unless something (the rollout log) asks."""

    _kept: KeptLogits | None = None
    _lock: Any

    def kept_logits(self) -> KeptLogits | None:
        """The last fused ``score`` call's :class:`KeptLogits` (None when nothing is kept)."""
        with self._lock:
            return self._kept

    def _keep(self, logits: torch.Tensor, keys: Sequence[str], answers: Sequence[Any], input_sizes: Sequence[Any],
              original_sizes: Sequence[tuple[int, int]]) -> None:
        """Replace the kept record by this call's (or drop it when ``keep_logits`` is off); rows as in
        :class:`KeptLogits`, ``answers`` the decoded answers."""
        kept = (KeptLogits(self, logits, keys, [prompt_key(a) for a in answers], input_sizes, original_sizes)
                if self.keep_logits else None)
        with self._lock:
            self._kept = kept

    def _image_key(self, image: Any) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def _row_mask(self, logits: torch.Tensor, input_size: Any, original_size: tuple[int, int]) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError
