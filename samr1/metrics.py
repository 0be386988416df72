"""Evaluation metrics for reasoning / referring segmentation: gIoU, cIoU and per-sample rows.

Per sample, ``intersection`` and ``union`` are pixel counts of the predicted mask and the ground truth at
the ORIGINAL image resolution:

* **gIoU** = mean over samples of ``intersection / union``;
* **cIoU** = ``sum(intersection) / sum(union)`` over samples (large objects weigh more).

Conventions, each as the peers use them:

* **Parse failure** (no usable answer, ``pred=None``): intersection 0, union ``|gt|`` (the ground truth's
  pixel count, ignore pixels excluded), IoU 0 -- also when the ground truth is empty: a failure never counts
  as "correctly found nothing".
* **Empty union** (an empty prediction for an empty ground truth) -- ``empty_union``:
  ``"lisa"`` counts IoU 1 in gIoU (LISA's evaluation: no object, none predicted, is a success);
  ``"visionreasoner"`` counts IoU 0; ``"segzero"`` skips the sample (its per-sample IoU is no number, so it
  enters neither the mean nor the count). cIoU is the same under all three (the sample adds 0 to both sums).
  The training reward (:mod:`samr1.rewards`) uses LISA's rule: IoU(empty, empty) = 1.
* **Ignore regions** (ReasonSeg's "ignore" polygons, value 255 in LISA's masks): ground-truth pixels equal
  to ``ignore_value`` count in neither the intersection nor the union, whatever the prediction says there.
  A ground truth given as bool has none. Seg-Zero's published ReasonSeg parquet cast its masks to bool, so
  there the ignore regions count as target and cannot be recovered.

Use :func:`evaluate` on lists, or :class:`SegmentationMetrics` to accumulate sample by sample.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "EMPTY_UNION_RULES",
    "DEFAULT_IGNORE_VALUE",
    "SampleRow",
    "MetricsResult",
    "SegmentationMetrics",
    "sample_counts",
    "no_target_rates",
    "evaluate",
]

EMPTY_UNION_RULES: tuple[str, ...] = ("lisa", "visionreasoner", "segzero")
"""The three empty-union conventions: IoU 1 (LISA), IoU 0 (VisionReasoner), sample skipped (Seg-Zero)."""

DEFAULT_IGNORE_VALUE = 255
"""Ground-truth value that marks an ignore region in LISA's ReasonSeg masks."""


@dataclass(frozen=True)
class SampleRow:
    """One evaluated sample.

    Attributes:
        index: position in the evaluation order (0-based).
        id: the caller's identifier (e.g. image id + query), None when not given.
        parsed: False for a parse failure (no prediction).
        intersection, union: pixel counts (ignore pixels excluded).
        gt_pixels: ground-truth object pixels (ignore pixels excluded).
        pred_pixels: predicted pixels outside ignore regions (0 for a parse failure).
        iou: the sample's IoU under the chosen empty-union rule; None when the sample is skipped.
        skipped: True when the Seg-Zero rule skipped it (empty union).
    """

    index: int
    id: Any
    parsed: bool
    intersection: int
    union: int
    gt_pixels: int
    pred_pixels: int
    iou: float | None
    skipped: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "id": self.id, "parsed": self.parsed, "intersection": self.intersection,
                "union": self.union, "gt_pixels": self.gt_pixels, "pred_pixels": self.pred_pixels,
                "iou": self.iou, "skipped": self.skipped}


@dataclass(frozen=True)
class MetricsResult:
    """gIoU, cIoU and the rows they came from.

    Attributes:
        giou: mean IoU over the samples not skipped (``nan`` when there are none).
        ciou: ``sum(intersection) / sum(union)`` over the samples not skipped (``nan`` when the union sum is 0).
        n: samples evaluated (skipped ones included); ``n_scored`` = those in gIoU; ``n_skipped``;
            ``n_parse_failures``.
        empty_union: the rule used; ``rows``: one :class:`SampleRow` per sample, in order.
        no_target: :func:`no_target_rates` of the rows (no-target accuracy, false-empty rate and their counts).
    """

    giou: float
    ciou: float
    n: int
    n_scored: int
    n_skipped: int
    n_parse_failures: int
    empty_union: str
    rows: list[SampleRow] = field(default_factory=list, repr=False)
    no_target: dict[str, Any] = field(default_factory=dict)

    def as_dict(self, rows: bool = False) -> dict[str, Any]:
        out = {"giou": self.giou, "ciou": self.ciou, "n": self.n, "n_scored": self.n_scored,
               "n_skipped": self.n_skipped, "n_parse_failures": self.n_parse_failures,
               "empty_union": self.empty_union, **self.no_target}
        if rows:
            out["rows"] = [r.as_dict() for r in self.rows]
        return out


def no_target_rates(rows: Iterable[Any]) -> dict[str, Any]:
    """How a policy handles queries that name no object, from per-sample rows (:class:`SampleRow` or their
    dicts: ``parsed``, ``gt_pixels``, ``pred_pixels``).

    Returns ``{"n_no_target", "no_target_accuracy", "n_target", "false_empty_rate"}``: among samples with an
    EMPTY ground truth, the share answered with an empty mask (a parsed answer whose mask is empty, e.g. the
    answer ``[]``; a parse failure is not an answer); among samples with a non-empty ground truth, the share
    answered with an empty mask (a missed target). A rate over no samples is ``nan``.
    """
    def get(r: Any, k: str) -> Any:
        return r[k] if isinstance(r, dict) else getattr(r, k)

    rows = list(rows)
    empty_gt = [r for r in rows if get(r, "gt_pixels") == 0]
    target = [r for r in rows if get(r, "gt_pixels") > 0]
    answered_empty = [get(r, "parsed") and get(r, "pred_pixels") == 0 for r in rows]
    hit = sum(1 for r, e in zip(rows, answered_empty, strict=True) if e and get(r, "gt_pixels") == 0)
    miss = sum(1 for r, e in zip(rows, answered_empty, strict=True) if e and get(r, "gt_pixels") > 0)
    return {"n_no_target": len(empty_gt), "no_target_accuracy": hit / len(empty_gt) if empty_gt else math.nan,
            "n_target": len(target), "false_empty_rate": miss / len(target) if target else math.nan}


def _check_rule(empty_union: str) -> str:
    if empty_union not in EMPTY_UNION_RULES:
        raise ValueError(f"empty_union must be one of {EMPTY_UNION_RULES} (LISA: IoU 1, VisionReasoner: 0, "
                         f"Seg-Zero: skip the sample), got {empty_union!r}")
    return empty_union


def _as_2d(value: Any, what: str, values: bool = False) -> np.ndarray:
    """An H x W array of ``value``: arrays (and nested lists, tensors) as they are; a path or a PIL image read
    by :func:`samr1.io.load_label_mask` with ``values`` (a ground truth: a one-channel image keeps its values,
    so its ``ignore_value`` survives), else by :func:`samr1.io.load_mask` (nonzero = object), as is a COCO RLE
    dict. A float mask that looks like logits or probabilities warns once (nonzero = object)."""
    import os

    from samr1.io import load_label_mask, load_mask, warn_float_mask

    if isinstance(value, (str, bytes, os.PathLike, dict)) or hasattr(value, "getpixel"):
        return (load_label_mask if values else load_mask)(value, field=what)
    a = np.asarray(value)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim != 2:
        raise ValueError(f"{what} must be an H x W mask, got shape {a.shape}")
    if a.dtype == object or not (a.dtype == bool or np.issubdtype(a.dtype, np.number)):
        raise ValueError(f"{what} must be a bool or numeric H x W mask, got dtype {a.dtype}")
    if a.dtype.kind == "f":
        if not np.isfinite(a).all():
            raise ValueError(f"{what} holds NaN or infinite values")
        warn_float_mask(a, what)
    return a


def sample_counts(pred: Any, gt: Any, ignore_value: int | None = DEFAULT_IGNORE_VALUE,
                  where: str = "sample", ignore: Any = None) -> tuple[int, int, int, int]:
    """``(intersection, union, gt_pixels, pred_pixels)`` of one sample, ignore pixels excluded.

    Args:
        pred: H x W predicted mask (bool, or numeric: nonzero = object; a path, PIL image or COCO RLE is read
            by :func:`samr1.io.load_mask`), or None for a parse failure (then intersection 0, union =
            gt_pixels).
        gt: H x W ground truth: bool, or numeric where nonzero = object and ``ignore_value`` (255 by default;
            None: no ignore value) = ignore region. Same size as ``pred``. A numeric ground truth holding
            ``ignore_value`` pixels and no other nonzero value (a plain 0/255 PNG) warns: all of it would be
            an ignore region and the sample would have no target.
        ignore_value: the ground-truth value marking ignore pixels.
        where: names the sample in error messages.
        ignore: an explicit H x W ignore region (nonzero = ignore); then ``gt`` is a plain mask (nonzero =
            object) and ``ignore_value`` is not used.

    Raises:
        ValueError: a mask is not H x W or the sizes differ (the message names ``where`` and the field).
    """
    g = _as_2d(gt, f"{where}: gt", values=ignore is None and ignore_value is not None)
    if ignore is not None:
        x = _as_2d(ignore, f"{where}: ignore") != 0
        if x.shape != g.shape:
            raise ValueError(f"{where}: ignore is {x.shape[0]}x{x.shape[1]} but gt is {g.shape[0]}x{g.shape[1]} "
                             "(H x W)")
        target = (g != 0) & ~x
        valid = ~x
    elif g.dtype == bool or ignore_value is None:
        target = g != 0
        valid = None
    else:
        in_ignore = g == ignore_value
        target = (g != 0) & ~in_ignore
        valid = ~in_ignore
        if not target.any() and in_ignore.any():
            warnings.warn(f"a ground truth holds only 0 and {ignore_value} (first: {where}): with ignore_value="
                          f"{ignore_value} all of it is an ignore region and the sample has no target. If "
                          f"{ignore_value} marks the object (a 0/255 PNG), pass the mask as bool (gt > 0) or "
                          "ignore_value=None; a ReasonSeg sample with no target passes its region as ignore=",
                          UserWarning, stacklevel=3)
    gt_pixels = int(np.count_nonzero(target))
    if pred is None:
        return 0, gt_pixels, gt_pixels, 0
    p = _as_2d(pred, f"{where}: pred")
    if p.shape != g.shape:
        raise ValueError(f"{where}: pred is {p.shape[0]}x{p.shape[1]} but gt is {g.shape[0]}x{g.shape[1]} (H x W); "
                         "evaluate at the ground truth's (original) size")
    p = p != 0
    if valid is not None:
        p = p & valid  # a prediction inside an ignore region is neither right nor wrong
    inter = int(np.count_nonzero(p & target))
    pred_pixels = int(np.count_nonzero(p))
    return inter, pred_pixels + gt_pixels - inter, gt_pixels, pred_pixels


class SegmentationMetrics:
    """Accumulates samples one at a time (for evaluation loops that stream); :meth:`result` gives gIoU/cIoU.

    Args:
        empty_union: "lisa" (default; IoU 1), "visionreasoner" (0) or "segzero" (skip); see the module doc.
        ignore_value: ground-truth value of ignore regions (255, LISA's ReasonSeg masks); None disables.
    """

    def __init__(self, empty_union: str = "lisa", ignore_value: int | None = DEFAULT_IGNORE_VALUE):
        self.empty_union = _check_rule(empty_union)
        self.ignore_value = ignore_value
        self.rows: list[SampleRow] = []

    def add(self, pred: Any, gt: Any, id: Any = None, ignore: Any = None) -> SampleRow:
        """Evaluate one sample (``pred`` None = parse failure) and keep its row; ``ignore``: an explicit ignore
        region (see :func:`sample_counts`)."""
        index = len(self.rows)
        where = f"sample {index}" + ("" if id is None else f" ({id!r})")
        inter, union, gt_pixels, pred_pixels = sample_counts(pred, gt, self.ignore_value, where, ignore)
        skipped = False
        if pred is None:
            iou: float | None = 0.0  # a parse failure scores 0 even on an empty ground truth
        elif union == 0:
            if self.empty_union == "lisa":
                iou = 1.0
            elif self.empty_union == "visionreasoner":
                iou = 0.0
            else:
                iou, skipped = None, True
        else:
            iou = inter / union
        row = SampleRow(index, id, pred is not None, inter, union, gt_pixels, pred_pixels, iou, skipped)
        self.rows.append(row)
        return row

    def result(self) -> MetricsResult:
        """gIoU and cIoU over the samples added so far."""
        scored = [r for r in self.rows if not r.skipped]
        giou = float(sum(r.iou for r in scored) / len(scored)) if scored else math.nan  # type: ignore[misc]
        inter = sum(r.intersection for r in scored)
        union = sum(r.union for r in scored)
        ciou = float(inter / union) if union else math.nan
        return MetricsResult(giou=giou, ciou=ciou, n=len(self.rows), n_scored=len(scored),
                             n_skipped=len(self.rows) - len(scored),
                             n_parse_failures=sum(1 for r in self.rows if not r.parsed),
                             empty_union=self.empty_union, rows=list(self.rows), no_target=no_target_rates(self.rows))


def evaluate(preds: Sequence[Any], gts: Sequence[Any], empty_union: str = "lisa",
             ignore_value: int | None = DEFAULT_IGNORE_VALUE, ids: Iterable[Any] | None = None,
             ignores: Sequence[Any] | None = None) -> MetricsResult:
    """gIoU, cIoU and per-sample rows over parallel lists.

    Args:
        preds: per sample an H x W predicted mask at the ground truth's size, or None (parse failure).
        gts: per sample the H x W ground truth (bool, or uint8 with ``ignore_value`` marking ignore pixels).
        empty_union: "lisa" (IoU 1), "visionreasoner" (IoU 0) or "segzero" (skip the sample).
        ignore_value: ground-truth value of ignore regions (255); None: no ignore regions.
        ids: optional identifiers, one per sample, copied into the rows and error messages.
        ignores: optional, per sample None or an explicit H x W ignore region (then that sample's gt is a
            plain mask and ``ignore_value`` is not used; see :func:`sample_counts`).
    """
    if len(preds) != len(gts):
        raise ValueError(f"preds ({len(preds)}) and gts ({len(gts)}) must be parallel lists")
    if ignores is not None and len(ignores) != len(preds):
        raise ValueError(f"ignores ({len(ignores)}) must be parallel to preds ({len(preds)})")
    id_list = list(ids) if ids is not None else [None] * len(preds)
    if len(id_list) != len(preds):
        raise ValueError(f"ids ({len(id_list)}) must be parallel to preds ({len(preds)})")
    acc = SegmentationMetrics(empty_union, ignore_value)
    for p, g, i, x in zip(preds, gts, id_list, ignores if ignores is not None else [None] * len(preds), strict=True):
        acc.add(p, g, i, x)
    return acc.result()
