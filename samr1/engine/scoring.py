"""The scoring skeleton both reward engines share (:class:`samr1.engine.SamEngine` for SAM,
:class:`samr1.engine.sam2_engine.Sam2Engine` for SAM 2), so ``score`` means the same whatever the model:

* ``images``, ``answers`` and ``gt_masks`` are parallel lists (checked first, one message for both engines);
* an answer that is not ``ok`` scores 0.0 and is counted in ``answers_skipped``; ok answers are counted in
  ``answers_scored``, one ``score_calls`` per call (under the engine's lock: ``score`` may run on several
  threads at once);
* single-object answers go through the engine's fused path (:meth:`ScoringEngine._score_rows`: batched
  decode, IoU counted from the low-res logits);
* a multi-object answer (``Answer.objects``, VisionReasoner's list form) is scored on the UNION of SAM's
  masks of its objects (each object one prompt through ``segment_batch``, the masks OR-ed at the original
  size), IoU by :func:`samr1.geometry.mask_iou_numpy` (a union is no single logit map, so the fused op
  cannot count it). ``multi_object="first"`` in :func:`samr1.answer.parse_answer` keeps one object, which
  then takes the fused path.

:meth:`ScoringEngine.row_errors` says, without encoding or decoding anything, which rows ``score`` would
refuse with an :class:`samr1.io.InputError` (an image SAM cannot resize, a mask not of its image's size), so
a caller drops those rows alone and keeps one batched call for the others.

IoU of two empty masks is 1.0 on both paths; so is the IoU of the answer "no object" (``Answer.no_object``,
an empty mask, no SAM call) with an empty ground truth (0.0 with a non-empty one).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from samr1.geometry import mask_iou_numpy
from samr1.io import InputError, load_mask

__all__ = ["STAGES", "ScoringEngine", "distinct_masks", "load_gt", "n_objects"]

STAGES = ("time_encode_s", "time_load_s", "time_decode_s", "time_iou_s")
"""Per-stage seconds of the last ``score`` call, in ``stats`` of both engines: image loading + embeddings
(cache, store, encoder), ground-truth loading, batched decode, fused IoU. ``time_union_s`` is added when the
call held multi-object answers (their segment + OR + numpy IoU)."""


def n_objects(answer: Any) -> int:
    """How many objects an ok answer holds (``Answer.objects``; 1 for answers without that field), 0 if not ok
    and for the answer "no object" (``Answer.no_object``, whose mask is empty)."""
    if not getattr(answer, "ok", False) or getattr(answer, "no_object", False):
        return 0
    return max(1, len(getattr(answer, "objects", None) or ()))


def load_gt(mask: Any, field: str, size: Sequence[int]) -> np.ndarray:
    """The H x W bool ground truth ``mask`` (array, PIL image, COCO RLE dict or path) of the image whose
    original size is ``size`` = (H, W); an RLE's size is checked before it is decoded.

    Raises:
        InputError: naming ``field``, when the mask is malformed or not of its image's size.
    """
    h, w = (int(v) for v in size)
    arr = load_mask(mask, field=field, expected_size=(h, w))
    if arr.shape != (h, w):
        raise InputError(f"{field}: mask is {arr.shape[0]}x{arr.shape[1]} but its image is {h}x{w} (H x W); "
                         "masks are at the original image size")
    return arr


def distinct_masks(masks: Sequence[Any], fields: Sequence[str], img_index: Sequence[int],
                   sizes: Sequence[Sequence[int]]) -> tuple[list[int], list[np.ndarray], list[int]]:
    """Load ground truths once per (mask object, image) and check each against its image's size.

    Args:
        masks: one ground truth per prompt (TRL passes the same object for the G completions of a prompt).
        fields: the name of each mask in error messages (``"gt_masks[i]"``).
        img_index: the distinct-image index of each prompt.
        sizes: original (H, W) per distinct image.

    Returns:
        (group index per prompt, distinct H x W bool masks, distinct-image index per group).
    """
    by_obj: dict[tuple[int, int], int] = {}
    distinct: list[np.ndarray] = []
    group_img: list[int] = []
    index: list[int] = []
    for m, field, j in zip(masks, fields, img_index, strict=True):
        g = by_obj.get((id(m), j))
        if g is None:
            g = by_obj[(id(m), j)] = len(distinct)
            distinct.append(load_gt(m, field, sizes[j]))
            group_img.append(j)
        index.append(g)
    return index, distinct, group_img


class ScoringEngine:
    """The ``score`` / multi-object skeleton of the engines (a mixin).

    An engine provides ``device`` (a ``torch.device``), ``_lock``, ``_counters`` and ``_last`` (dicts read
    by its ``stats``), ``segment_batch(images, answers) -> list of H x W bool masks`` for single-object
    answers, and :meth:`_score_rows`, its fused path.
    """

    device: torch.device
    _lock: Any
    _counters: dict[str, Any]
    _last: dict[str, Any]

    def segment_batch(self, images: Sequence[Any], answers: Sequence[Any]) -> list[np.ndarray]:  # pragma: no cover
        raise NotImplementedError

    def _score_rows(self, images: Sequence[Any], answers: Sequence[Any], gt_masks: Sequence[Any],
                    rows: list[int]) -> tuple[list[float], dict[str, Any]]:  # pragma: no cover - abstract
        """IoUs of ``answers[i]`` for ``i`` in ``rows`` (all ok, one object each; the lists are the caller's
        whole lists, so messages name the caller's indices), and the call's stage record (:data:`STAGES`)."""
        raise NotImplementedError

    def _check_image(self, arr: np.ndarray, field: str) -> None:
        """Raise :class:`InputError` (naming ``field``) when the engine cannot encode the loaded ``H x W x 3``
        image ``arr``; the engine's encoder path runs the very same check. Default: every image is accepted."""

    def row_errors(self, images: Sequence[Any], answers: Sequence[Any], gt_masks: Sequence[Any],
                   rows: Sequence[int] | None = None) -> list[InputError | None]:
        """Per row, the :class:`InputError` that :meth:`score` would raise for it, or None: the image does not
        load or cannot be encoded (:meth:`_check_image`), the ground truth does not load or is not of its
        image's size. Nothing is encoded or decoded (each distinct image and mask object is checked once), so
        a caller can drop the refused rows and score the rest in ONE call. ``rows``: check only these indices
        (default: all; the result is parallel to ``rows``). Messages name ``images[i]`` / ``gt_masks[i]`` with
        the row's index in these lists.

        Raises:
            InputError: the lists are not parallel (a caller's bug, not a row's).
        """
        from samr1.io import load_image

        n = len(answers)
        if len(images) != n or len(gt_masks) != n:
            raise InputError(f"images ({len(images)}), answers ({n}) and gt_masks ({len(gt_masks)}) must be "
                             "parallel lists (one image and one ground-truth mask per answer)")
        sizes: dict[int, tuple[int, int] | InputError] = {}
        masks: dict[tuple[int, int], InputError | None] = {}
        out: list[InputError | None] = []
        for i in range(n) if rows is None else rows:
            img, gt = images[i], gt_masks[i]
            size = sizes.get(id(img))
            if size is None:
                try:
                    arr = load_image(img, field=f"images[{i}]")
                    self._check_image(arr, f"images[{i}]")
                    size = tuple(arr.shape[:2])
                except InputError as exc:
                    size = exc
                sizes[id(img)] = size
            if isinstance(size, InputError):
                out.append(size)
                continue
            if n_objects(answers[i]) == 0 and not getattr(answers[i], "no_object", False):
                out.append(None)  # not scored: score() never reads its mask
                continue
            key = (id(gt), id(img))
            if key not in masks:
                try:
                    load_gt(gt, f"gt_masks[{i}]", size)
                    masks[key] = None
                except InputError as exc:
                    masks[key] = exc
            out.append(masks[key])
        return out

    def _now(self) -> float:
        """A stage timestamp; on CUDA after a synchronize, so a stage's time holds its own kernels and not
        work launched by the stage before (asynchronous launches otherwise land in the next stage)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def _score(self, images: Sequence[Any], answers: Sequence[Any], gt_masks: Sequence[Any]) -> list[float]:
        n = len(answers)
        if len(images) != n or len(gt_masks) != n:
            raise InputError(f"images ({len(images)}), answers ({n}) and gt_masks ({len(gt_masks)}) must be "
                             "parallel lists (one image and one ground-truth mask per answer)")
        objects = [n_objects(a) for a in answers]
        single = [i for i, k in enumerate(objects) if k == 1]
        multi = [i for i, k in enumerate(objects) if k > 1]
        empty = [i for i, a in enumerate(answers) if getattr(a, "ok", False) and getattr(a, "no_object", False)]
        with self._lock:
            self._counters["score_calls"] += 1
            self._counters["answers_scored"] += len(single) + len(multi) + len(empty)
            self._counters["answers_skipped"] += n - len(single) - len(multi) - len(empty)
            if multi:
                self._counters["union_answers"] = self._counters.get("union_answers", 0) + len(multi)
        ious = [0.0] * n
        for i in empty:  # "no object": an empty mask, IoU 1 with an empty ground truth, else 0
            ious[i] = 0.0 if np.asarray(load_mask(gt_masks[i], field=f"gt_masks[{i}]")).any() else 1.0
        last: dict[str, Any] = dict.fromkeys(STAGES, 0.0)
        if single:
            values, last = self._score_rows(images, answers, gt_masks, single)
            for i, v in zip(single, values, strict=True):
                ious[i] = float(v)
        if multi:
            t0 = time.perf_counter()
            masks = self._segment_unions([images[i] for i in multi], [answers[i] for i in multi])
            for i, m in zip(multi, masks, strict=True):
                ious[i] = mask_iou_numpy(m, load_gt(gt_masks[i], f"gt_masks[{i}]", m.shape))
            last = {**last, "time_union_s": time.perf_counter() - t0}
        with self._lock:
            self._last = last
        return ious

    def _segment_unions(self, images: Sequence[Any], answers: Sequence[Any]) -> list[np.ndarray]:
        """H x W bool masks when some answers hold several objects: every object's prompt goes through the
        plain batched path (each distinct image encoded once, one decode pass for all prompts) and each
        answer's masks are OR-ed."""
        flat_images, flat_answers, owner = [], [], []
        for i, (img, a) in enumerate(zip(images, answers, strict=True)):
            for part in (a.per_object() if n_objects(a) > 1 else [a]):
                flat_images.append(img)
                flat_answers.append(part)
                owner.append(i)
        out: list[np.ndarray | None] = [None] * len(answers)
        for i, m in zip(owner, self.segment_batch(flat_images, flat_answers), strict=True):
            out[i] = m if out[i] is None else (out[i] | m)
        return out  # type: ignore[return-value]
