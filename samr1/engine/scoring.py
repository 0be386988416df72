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

**Ignore regions** (ReasonSeg's "ignore" polygons): ``score(..., ignore=[...])`` takes per row None or an
``H x W`` mask of pixels that count in neither the intersection nor the union, the rule of the evaluation
metrics (:func:`samr1.metrics.sample_counts`): ``I = |P & G & ~X|``, ``U = |(P | G) & ~X|``. On the fused
path the op runs a second time against the ignore masks: with ``G' = G & ~X`` (disjoint from ``X``),
``U = |P | G'| - |P & X|``, so the fused kernels are used unchanged.

IoU of two empty masks is 1.0 on both paths; so is the IoU of the answer "no object" (``Answer.no_object``,
an empty mask, no SAM call) with an empty ground truth (0.0 with a non-empty one).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from samr1.geometry import mask_iou_numpy
from samr1.io import InputError, load_mask

__all__ = ["STAGES", "ScoringEngine", "distinct_masks", "iou_excluding", "load_gt", "n_objects", "prompt_rows"]

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
                   sizes: Sequence[Sequence[int]], ignores: Sequence[Any] | None = None,
                   ignore_fields: Sequence[str] | None = None
                   ) -> tuple[list[int], list[np.ndarray], list[int], list[np.ndarray | None]]:
    """Load ground truths once per (mask object, ignore object, image) and check each against its image's size.

    Args:
        masks: one ground truth per prompt (TRL passes the same object for the G completions of a prompt).
        fields: the name of each mask in error messages (``"gt_masks[i]"``).
        img_index: the distinct-image index of each prompt.
        sizes: original (H, W) per distinct image.
        ignores: per prompt None or its ignore region (any mask form, the image's size); None: no ignores.
        ignore_fields: the name of each ignore mask in error messages (``"ignore[i]"``).

    Returns:
        (group index per prompt, distinct H x W bool ground truths with their ignore pixels removed,
        distinct-image index per group, the H x W bool ignore region per group or None).
    """
    by_obj: dict[tuple[int, int, int], int] = {}
    distinct: list[np.ndarray] = []
    group_ign: list[np.ndarray | None] = []
    group_img: list[int] = []
    index: list[int] = []
    if ignores is None:
        ignores = [None] * len(masks)
        ignore_fields = [""] * len(masks)
    assert ignore_fields is not None
    for m, field, j, x, x_field in zip(masks, fields, img_index, ignores, ignore_fields, strict=True):
        key = (id(m), id(x), j)
        g = by_obj.get(key)
        if g is None:
            g = by_obj[key] = len(distinct)
            gt = load_gt(m, field, sizes[j])
            ign = None if x is None else load_gt(x, x_field, sizes[j])
            distinct.append(gt if ign is None else gt & ~ign)
            group_ign.append(ign if ign is not None and ign.any() else None)
            group_img.append(j)
        index.append(g)
    return index, distinct, group_img, group_ign


def distinct_prompts(img_index: Sequence[int], answers: Sequence[Any]) -> tuple[list[int], list[int]]:
    """Positions of the first occurrence of each distinct SAM prompt, and per prompt the position of its
    distinct one among them (``inverse[i]`` indexes ``keep``).

    A prompt is (its image, the answer's box, points and point labels), compared exactly: the G answers of a
    group that agree to the coordinate (a low-entropy policy, a repeated object of a multi-object answer)
    share one decode. Answers are single-object; the key is :func:`samr1.engine.kept.prompt_key`'s, what the
    decoders read.

    The answers' prompts were checked first (:func:`samr1.engine.prompt_check.prompt_error`).
    """
    from samr1.engine.kept import prompt_key

    first: dict[tuple, int] = {}
    keep: list[int] = []
    inverse: list[int] = []
    for i, (j, a) in enumerate(zip(img_index, answers, strict=True)):
        key = (int(j), *prompt_key(a))
        k = first.get(key)
        if k is None:
            k = first[key] = len(keep)
            keep.append(i)
        inverse.append(k)
    return keep, inverse


def prompt_rows(logits: torch.Tensor, group: torch.Tensor, rows: list[int] | None,
                row_group: list[int] | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits, group index)`` of the prompts ``rows`` (N' x h x w, and ``row_group`` as a tensor on the
    logits' device), or the whole step's when ``rows`` is None: what a fused IoU op counts in
    :func:`iou_excluding`'s second pass."""
    if rows is None:
        return logits, group
    dev = logits.device
    return (logits.index_select(0, torch.as_tensor(rows, dtype=torch.long, device=dev)),
            torch.as_tensor(row_group, dtype=torch.long, device=dev))


def iou_excluding(count: Any, gts: list[np.ndarray], ignores: list[np.ndarray | None],
                  group_index: Sequence[int]) -> torch.Tensor:
    """IoU per prompt (float32) with each group's ignore pixels in neither count.

    Args:
        count: ``count(masks, groups, rows, row_group) -> (iou, intersection, union)``: the engine's fused op
            over the prompts ``rows`` (None: all, in order) against ``masks`` (H x W bool), where ``groups[k]`` is
            the group whose image ``masks[k]`` belongs to and ``row_group[r]`` the position in ``masks`` of
            row ``rows[r]``'s mask (None with ``rows`` None: the groups as they are).
        gts: per group the ground truth with its ignore pixels already removed (:func:`distinct_masks`).
        ignores: per group the ignore region or None.
        group_index: per prompt its group.

    Without any ignore region this is one op call. With some, a second call over the prompts of those groups
    only counts their predicted pixels inside the region, and as the ground truth holds no ignore pixel,
    ``U = |P | G| - |P & X|`` while ``I`` is unchanged.
    """
    from samr1.ops.mask_iou import counts_to_iou

    iou, inter, union = count(gts, list(range(len(gts))), None, None)
    with_ign = [g for g, x in enumerate(ignores) if x is not None]
    if not with_ign:
        return iou
    pos = {g: k for k, g in enumerate(with_ign)}
    rows = [r for r, g in enumerate(group_index) if g in pos]
    _, inside, _ = count([ignores[g] for g in with_ign], with_ign, rows, [pos[group_index[r]] for r in rows])
    union = union.clone()
    union[torch.as_tensor(rows, dtype=torch.long, device=union.device)] -= inside.to(union.device)
    return counts_to_iou(inter, union)


class _Once:
    """Checks memoised by object identity within one call (the G rows of a prompt share their objects): the
    first row's result, or its :class:`InputError` re-worded to name the asking row's own index."""

    def __init__(self) -> None:
        self.done: dict[tuple, tuple[Any, int]] = {}

    def __call__(self, key: tuple, i: int, check: Any) -> Any:
        if key not in self.done:
            try:
                self.done[key] = (check(i), i)
            except InputError as exc:
                self.done[key] = (exc, i)
        value, first = self.done[key]
        if isinstance(value, InputError) and first != i:  # the same object in another row: name this row
            value = InputError(str(value).replace(f"[{first}]", f"[{i}]", 1))
        return value


class ScoringEngine:
    """The ``score`` / multi-object skeleton of the engines (a mixin).

    An engine provides ``device`` (a ``torch.device``), ``_lock``, ``_counters`` and ``_last`` (dicts read
    by its ``stats``), ``segment_batch(images, answers) -> list of H x W bool masks``, :meth:`_segment_parts`
    (its single-object path, which the multi-object path calls) and :meth:`_score_rows`, its fused path.
    """

    device: torch.device
    _lock: Any
    _counters: dict[str, Any]
    _last: dict[str, Any]

    def segment_batch(self, images: Sequence[Any], answers: Sequence[Any]) -> list[np.ndarray]:  # pragma: no cover
        raise NotImplementedError

    def _segment_checked(self, images: Sequence[Any], answers: Sequence[Any]) -> list[np.ndarray]:
        """``segment_batch`` of both engines (inside the engine's own scope): parallel lists and the prompts
        checked up front, then the multi-object path (OR of each object's mask) or :meth:`_segment_parts`."""
        if len(images) != len(answers):
            raise InputError(f"images ({len(images)}) and answers ({len(answers)}) must be parallel lists")
        self.check_prompts(answers)
        names = [f"answers[{i}]" for i in range(len(answers))]
        fields = [f"images[{i}]" for i in range(len(images))]
        if any(n_objects(a) > 1 for a in answers):
            return self._segment_unions(images, answers, names, fields)
        return self._segment_parts(images, answers, names, fields)

    def _segment_parts(self, images: Sequence[Any], answers: Sequence[Any], names: Sequence[str],
                       fields: Sequence[str]) -> list[np.ndarray]:  # pragma: no cover - abstract
        """``segment_batch`` of single-object answers whose prompts were checked, naming answer ``i`` and its
        image ``names[i]`` / ``fields[i]`` in errors (the multi-object path names ``answers[i].objects[j]``)."""
        raise NotImplementedError

    def _score_rows(self, images: Sequence[Any], answers: Sequence[Any], gt_masks: Sequence[Any],
                    rows: list[int], ignore: Sequence[Any] | None = None
                    ) -> tuple[list[float], dict[str, Any]]:  # pragma: no cover - abstract
        """IoUs of ``answers[i]`` for ``i`` in ``rows`` (all ok, one object each; the lists are the caller's
        whole lists, so messages name the caller's indices), ignore pixels of ``ignore[i]`` (when given)
        excluded (:func:`iou_excluding`), and the call's stage record (:data:`STAGES`)."""
        raise NotImplementedError

    def _check_image(self, arr: np.ndarray, field: str) -> None:
        """Raise :class:`InputError` (naming ``field``) when the engine cannot encode the loaded ``H x W x 3``
        image ``arr``; the engine's encoder path runs the very same check. Default: every image is accepted."""

    def _decode_distinct(self, img_index: list[int], answers: list[Any],
                         decode: Callable[[list[int], list[Any]], torch.Tensor]) -> torch.Tensor:
        """``decode(img_index, answers) -> N x h x w`` logits, run on each distinct prompt once
        (:func:`distinct_prompts`) and expanded back to one row per answer, in order. Counts
        ``prompts_decoded`` and ``prompts_repeated`` in ``stats``. A repeated prompt's logits are those of its
        first occurrence, decoded in the same batch: what decoding it again would give, up to the round-off a
        different batch composition may bring (none measured on the CPU; on CUDA the decoder's batches are
        chunked differently once the repeats are gone)."""
        keep, inverse = distinct_prompts(img_index, answers)  # prompts were checked up front (check_prompts)
        with self._lock:
            self._counters["prompts_decoded"] = self._counters.get("prompts_decoded", 0) + len(keep)
            self._counters["prompts_repeated"] = (self._counters.get("prompts_repeated", 0)
                                                  + len(answers) - len(keep))
        if len(keep) == len(answers):
            return decode(img_index, answers)
        low = decode([img_index[i] for i in keep], [answers[i] for i in keep])
        return low.index_select(0, torch.as_tensor(inverse, dtype=torch.long, device=low.device))

    @staticmethod
    def check_prompts(answers: Sequence[Any]) -> None:
        """Raise the first :func:`samr1.engine.prompt_check.prompt_error` of ``answers`` (naming
        ``answers[i]``, the caller's own index), before anything is loaded, encoded or decoded."""
        from samr1.engine.prompt_check import prompt_error

        for i, a in enumerate(answers):
            err = prompt_error(a, f"answers[{i}]")
            if err is not None:
                raise err

    @staticmethod
    def check_sizes(answers: Sequence[Any], names: Sequence[str], sizes: Sequence[Sequence[int]],
                    image_fields: Sequence[str]) -> None:
        """Raise the first :func:`samr1.engine.prompt_check.size_error` of ``answers`` against their images'
        original ``(H, W)`` ``sizes`` (parallel lists), once the images are loaded and before any decode."""
        from samr1.engine.prompt_check import size_error

        for a, name, size, image in zip(answers, names, sizes, image_fields, strict=True):
            err = size_error(a, name, size, image)
            if err is not None:
                raise err

    def image_errors(self, images: Sequence[Any]) -> list[InputError | None]:
        """Per image, the :class:`InputError` the engine's encoder path raises for it (it does not load, or
        :meth:`_check_image` refuses it, e.g. a 1 x 3000 image for SAM), or None; nothing is encoded. Each
        distinct object is checked once; each message names the image's own index (``images[i]``)."""
        once = _Once()

        def check(i: int) -> None:
            from samr1.io import load_image

            self._check_image(load_image(images[i], field=f"images[{i}]"), f"images[{i}]")

        return [once(("image", id(img)), i, check) for i, img in enumerate(images)]

    def row_errors(self, images: Sequence[Any], answers: Sequence[Any], gt_masks: Sequence[Any],
                   rows: Sequence[int] | None = None, ignore: Sequence[Any] | None = None) -> list[InputError | None]:
        """Per row, the :class:`InputError` that :meth:`score` would raise for it, or None, by the very checks
        ``score`` runs and only those: a value that is not an :class:`samr1.answer.Answer`, or a prompt SAM
        cannot read (:func:`samr1.engine.prompt_check.prompt_error`); for an answer with objects, the image
        does not load or cannot be encoded (:meth:`_check_image`), the answer was parsed for another size or
        its prompts lie off the image (:func:`samr1.engine.prompt_check.size_error`), the ground truth (or the
        ``ignore`` region) does not load or is not of its image's size; for the answer "no object" (no image is
        read), the ground truth does not load or the ignore region is not of its size; an Answer that is not ok
        is never refused (``score`` skips it).
        Nothing is encoded or decoded (each distinct image and mask object is loaded once), so a caller can drop
        the refused rows and score the rest in ONE call. ``rows``: check only these indices (default: all; the
        result is parallel to ``rows``). Each message names the row's own field (``images[i]``,
        ``gt_masks[i]``, ``ignore[i]``), also when several rows share the refused object.

        Raises:
            InputError: the lists are not parallel (a caller's bug, not a row's).
        """
        from samr1.engine.prompt_check import prompt_error, size_error
        from samr1.io import load_image

        n = len(answers)
        if len(images) != n or len(gt_masks) != n or (ignore is not None and len(ignore) != n):
            raise InputError(f"images ({len(images)}), answers ({n}), gt_masks ({len(gt_masks)})"
                             + ("" if ignore is None else f" and ignore ({len(ignore)})") + " must be parallel lists")
        once = _Once()

        def image_size(i: int) -> tuple[int, int]:
            arr = load_image(images[i], field=f"images[{i}]")
            self._check_image(arr, f"images[{i}]")
            return tuple(arr.shape[:2])

        out: list[InputError | None] = []
        for i in range(n) if rows is None else rows:
            a, x = answers[i], None if ignore is None else ignore[i]
            bad_prompt = prompt_error(a, f"answers[{i}]")  # not an Answer, or a prompt SAM cannot read
            if bad_prompt is not None:
                out.append(bad_prompt)
                continue
            if getattr(a, "ok", False) and getattr(a, "no_object", False):
                def empty_path(i: int, x: Any = x) -> None:
                    gt = np.asarray(load_mask(gt_masks[i], field=f"gt_masks[{i}]"))
                    if x is not None:
                        load_gt(x, f"ignore[{i}]", gt.shape[:2])
                out.append(once(("empty", id(gt_masks[i]), id(x)), i, empty_path))
                continue
            if n_objects(a) == 0:
                out.append(None)  # not ok: score() skips it (0.0) without reading anything
                continue
            size = once(("image", id(images[i])), i, image_size)
            if isinstance(size, InputError):
                out.append(size)
                continue
            bad_size = size_error(a, f"answers[{i}]", size, f"images[{i}]")
            if bad_size is not None:
                out.append(bad_size)
                continue

            def masks_fit(i: int, x: Any = x, size: tuple[int, int] = size) -> None:
                load_gt(gt_masks[i], f"gt_masks[{i}]", size)
                if x is not None:
                    load_gt(x, f"ignore[{i}]", size)
            out.append(once(("masks", id(gt_masks[i]), id(x), id(images[i])), i, masks_fit))
        return out

    def _now(self) -> float:
        """A stage timestamp; on CUDA after a synchronize, so a stage's time holds its own kernels and not
        work launched by the stage before (asynchronous launches otherwise land in the next stage)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def _score(self, images: Sequence[Any], answers: Sequence[Any], gt_masks: Sequence[Any],
               ignore: Sequence[Any] | None = None) -> list[float]:
        n = len(answers)
        if len(images) != n or len(gt_masks) != n:
            raise InputError(f"images ({len(images)}), answers ({n}) and gt_masks ({len(gt_masks)}) must be "
                             "parallel lists (one image and one ground-truth mask per answer)")
        if ignore is not None:
            if not isinstance(ignore, (list, tuple)) or len(ignore) != n:
                raise InputError(f"ignore must be a list parallel to answers ({n}): per answer None or an H x W "
                                 f"mask of ignore pixels, got {type(ignore).__name__}"
                                 + (f" of {len(ignore)}" if isinstance(ignore, (list, tuple)) else ""))
            if all(x is None for x in ignore):
                ignore = None
        self.check_prompts(answers)
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
            gt = np.asarray(load_mask(gt_masks[i], field=f"gt_masks[{i}]"), dtype=bool)
            if ignore is not None and ignore[i] is not None:
                gt = gt & ~load_gt(ignore[i], f"ignore[{i}]", gt.shape)
            ious[i] = 0.0 if gt.any() else 1.0
        last: dict[str, Any] = dict.fromkeys(STAGES, 0.0)
        if single:
            values, last = self._score_rows(images, answers, gt_masks, single, ignore)
            for i, v in zip(single, values, strict=True):
                ious[i] = float(v)
        if multi:
            t0 = time.perf_counter()
            masks = self._segment_unions([images[i] for i in multi], [answers[i] for i in multi],
                                         [f"answers[{i}]" for i in multi], [f"images[{i}]" for i in multi])
            for i, m in zip(multi, masks, strict=True):
                gt = load_gt(gt_masks[i], f"gt_masks[{i}]", m.shape)
                ign = None if ignore is None or ignore[i] is None else load_gt(ignore[i], f"ignore[{i}]", m.shape)
                ious[i] = mask_iou_numpy(m, gt, ign)  # ignore pixels in neither count
            last = {**last, "time_union_s": time.perf_counter() - t0}
        with self._lock:
            self._last = last
        return ious

    def _segment_unions(self, images: Sequence[Any], answers: Sequence[Any], names: Sequence[str],
                        image_fields: Sequence[str]) -> list[np.ndarray]:
        """H x W bool masks when some answers hold several objects: every object's prompt goes through the
        plain batched path (each distinct image encoded once, one decode pass for all prompts) and each
        answer's masks are OR-ed. ``names`` / ``image_fields``: each answer's and image's name in errors."""
        flat_images, flat_answers, owner, flat_names, flat_fields = [], [], [], [], []
        for i, (img, a) in enumerate(zip(images, answers, strict=True)):
            parts = a.per_object() if n_objects(a) > 1 else [a]
            for j, part in enumerate(parts):
                flat_images.append(img)
                flat_answers.append(part)
                owner.append(i)
                flat_names.append(f"{names[i]}.objects[{j}]" if len(parts) > 1 else names[i])
                flat_fields.append(image_fields[i])
        out: list[np.ndarray | None] = [None] * len(answers)
        flat = self._segment_parts(flat_images, flat_answers, flat_names, flat_fields)
        for i, m in zip(owner, flat, strict=True):
            out[i] = m if out[i] is None else (out[i] | m)
        return out  # type: ignore[return-value]
