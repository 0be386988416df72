"""SAM-R1 rewards for TRL's ``GRPOTrainer``: format rewards, tiered IoU, Seg-Zero's ablation rewards.

Use either the summed reward or one function per component (TRL then logs each apart, as
``rewards/<name>/mean``; the components share ONE parse and ONE engine call per batch)::

    from samr1.engine import SamEngine
    from samr1.rewards import SamR1Reward
    from samr1.sam import load_sam

    reward = SamR1Reward(SamEngine(load_sam("vit_h", checkpoint="sam_vit_h.pth", device="cuda")))
    trainer = GRPOTrainer(..., reward_funcs=reward.functions())   # think_format, answer_format, tiered_iou
    # or: GRPOTrainer(..., reward_funcs=[reward])                  # one summed reward, "samr1_reward"

The dataset needs an ``image`` column (what the policy sees; PIL image, ``H x W x 3`` uint8 array or path,
at ORIGINAL resolution; the policy is assumed to see it resized to ``model_size``) and a ``mask`` column
(ground truth at the same ``H x W``: bool/uint8 array, PIL image, COCO RLE dict or PNG path). TRL repeats
every column per completion, so they arrive as lists parallel to ``completions``.

Reward values (default tiers): think format 0/1 + answer format 0/1 + tiered IoU 0/2/3/4, so the sum is in
``[0, 6]``.

Conventions (Seg-Zero's, where it has one; ``bench/bench_fidelity.py`` measures the agreement):

* Seg-Zero's ablation rewards (box IoU > 0.5, box L1 < 10 px, point distance < 100 px) are measured in the
  policy's MODEL frame by default (``frame="model"``, 840 x 840): the answer's numbers as written against the
  ground truth resized to that frame, so an answer earns the same reward whatever the image's size.
  ``frame="original"`` measures them in original image pixels instead.
* Boxes are inclusive pixel indices on both sides (IoU with + 1 on widths and heights); a one-pixel box is
  a valid answer. The point reward uses the answer's FIRST TWO points (Seg-Zero's ``points_1``,
  ``points_2``): extra points still go to SAM but cannot earn the point reward. Reference points follow
  Seg-Zero's rule (:func:`samr1.geometry.mask_to_points`, ``rule="segzero"``).
* Empty ground truth: the mask IoU of an empty prediction with an empty ground truth is 1 (a model that
  correctly finds nothing earns the IoU reward; :func:`samr1.ops.mask_iou_from_logits`' convention). The
  box and point rewards need a ground-truth box and give 0 there. Evaluation offers all three peer
  conventions for that case (:mod:`samr1.metrics`).
* A list of several objects (VisionReasoner's form) is scored on the union of SAM's masks of its objects
  (``multi_object="union"``, the default); the box and point rewards use its first object.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import math
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache, partial
from typing import Any

import numpy as np

from samr1.answer import (
    DEFAULT_MODEL_SIZE,
    MULTI_OBJECT_MODES,
    REASON_CODES,
    Answer,
    check_size,
    parse_answer,
)
from samr1.config import ConfigError, check_bool, help_field, set_field, with_overrides
from samr1.geometry import POINT_RULES, box_iou, mask_to_box, mask_to_points, resize_mask_nearest
from samr1.hashing import mask_digest
from samr1.io import InputError, MaskSizeError, load_image, load_mask

__all__ = [
    "DEFAULT_TIERS",
    "COMPONENTS",
    "INPUT_CODES",
    "ALL_CODES",
    "completion_text",
    "think_format_ok",
    "think_format_reward",
    "answer_format_reward",
    "validate_tiers",
    "tiered_iou_reward",
    "box_iou_reward",
    "box_l1_reward",
    "matched_point_distance",
    "point_distance_reward",
    "FRAMES",
    "SamR1Reward",
    "SamR1RewardConfig",
]

FRAMES: tuple[str, ...] = ("model", "original")
"""Pixel frames the ablation rewards can be measured in: the policy's model frame (default) or the image's."""

DEFAULT_TIERS: tuple[tuple[float, float], ...] = ((0.8, 4.0), (0.7, 3.0), (0.5, 2.0))
"""SAM-R1's tiered IoU reward: (threshold, reward) pairs, thresholds strictly decreasing; IoU > thr -> reward."""

COMPONENTS: dict[str, str] = {
    "think": "think_format",  # 0/1: <think>...</think> then <answer>...</answer>
    "answer": "answer_format",  # 0/1: the answer parses (parse_answer(...).ok in the model frame)
    "iou": "tiered_iou",  # 0/2/3/4 by default: tiers over SAM's mask IoU
    "mask_iou": "mask_iou",  # continuous mask IoU in [0, 1]
    "box_iou": "box_iou",  # 0/1: Seg-Zero, predicted box IoU with the mask's box > 0.5
    "box_l1": "box_l1",  # 0/1: Seg-Zero, mean |coordinate difference| to the mask's box < 10 px
    "point_dist": "point_distance",  # 0/1: Seg-Zero, points in the box and matched mean distance < 100 px
}
"""Component name -> the ``__name__`` its TRL reward function gets (TRL logs ``rewards/<__name__>/mean``)."""

_ENGINE_COMPONENTS = frozenset({"iou", "mask_iou"})
_GT_COMPONENTS = frozenset({"iou", "mask_iou", "box_iou", "box_l1", "point_dist"})

INPUT_CODES: tuple[str, ...] = (
    "bad_completion",  # the completion is neither a str nor a TRL conversational message list
    "bad_image",  # the row's image could not be loaded
    "bad_mask",  # the row's mask could not be loaded
    "mask_size_mismatch",  # mask H x W differs from the image's
    "engine_input_error",  # the engine rejected this row (found by re-scoring rows one by one)
    "engine_non_finite",  # the engine returned a non-finite IoU for this row (scored 0)
)
"""Row-level failure codes counted by :class:`SamR1Reward` beside the parser's :data:`REASON_CODES`."""

ALL_CODES: tuple[str, ...] = tuple(REASON_CODES) + INPUT_CODES


# ----------------------------------------------------------------------------------------- completions
def completion_text(completion: Any) -> str | None:
    """The text of one TRL completion, or None when it has no recognisable form.

    A ``str`` is returned as is. TRL's conversational form is a list of message dicts: the content of the
    LAST message whose role is "assistant" is used; content may be a ``str`` or a list of parts
    (``{"type": "text", "text": ...}``, text parts concatenated, other parts ignored). A single message
    dict is accepted too.
    """
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        completion = [completion]
    if not isinstance(completion, (list, tuple)):
        return None
    for msg in reversed(completion):
        if isinstance(msg, dict) and msg.get("role", "assistant") == "assistant":
            content = msg.get("content")
            if content is None:
                return ""
            if isinstance(content, str):
                return content
            if isinstance(content, (list, tuple)):
                parts = []
                for part in content:
                    if isinstance(part, str):
                        parts.append(part)
                    elif isinstance(part, dict) and part.get("type", "text") == "text" and isinstance(part.get("text"), str):
                        parts.append(part["text"])
                return "".join(parts)
            return None
    return None


def think_format_ok(text: Any) -> bool:
    """True when ``text`` is exactly ``<think>...</think>`` then ``<answer>...</answer>``.

    Precisely: after stripping surrounding whitespace the text starts with ``<think>`` and ends with
    ``</answer>``; each of the four tags occurs exactly once (a second answer block is not a format, and
    would let a policy hedge); only whitespace lies between ``</think>`` and ``<answer>``. The think and
    answer contents are free (may be empty). Linear time: ``str.count`` / ``str.find``.
    """
    if not isinstance(text, str):
        return False
    s = text.strip()
    if not (s.startswith("<think>") and s.endswith("</answer>")):
        return False
    for tag in ("<think>", "</think>", "<answer>", "</answer>"):
        if s.count(tag) != 1:
            return False
    close_think = s.find("</think>") + len("</think>")
    open_answer = s.find("<answer>")
    return open_answer >= close_think and not s[close_think:open_answer].strip()


def think_format_reward(completions: Sequence[Any], **kwargs: Any) -> list[float]:
    """TRL reward: 1.0 per completion that passes :func:`think_format_ok`, else 0.0."""
    return [1.0 if think_format_ok(completion_text(c)) else 0.0 for c in completions]


def answer_format_reward(completions: Sequence[Any], model_size: tuple[int, int] = DEFAULT_MODEL_SIZE,
                         require_points: bool = True, multi_object: str = "union", **kwargs: Any) -> list[float]:
    """TRL reward: 1.0 per completion whose answer parses, else 0.0.

    "Parses" is exactly ``parse_answer(text, model_size=model_size, require_points=require_points,
    multi_object=multi_object).ok``
    (see :func:`samr1.answer.parse_answer`): the last ``<answer>`` block holds JSON (or a Python-style
    literal) with a 4-number box (``bbox``/``bbox_2d``) of positive area inside the model frame and, by
    default, 1 to 64 points of 2 numbers each. No image size is needed: ``ok`` never depends on it.
    """
    out = []
    for c in completions:
        text = completion_text(c)
        out.append(1.0 if text is not None and parse_answer(text, None, model_size, require_points=require_points,
                                                            multi_object=multi_object).ok else 0.0)
    return out


# ----------------------------------------------------------------------------------------- IoU rewards
@lru_cache(maxsize=64)
def _validate_tiers_cached(tiers: tuple[tuple[float, float], ...]) -> tuple[tuple[float, float], ...]:
    if not tiers:
        raise ValueError("tiers must hold at least one (threshold, reward) pair, e.g. ((0.5, 1.0),)")
    out = []
    for i, t in enumerate(tiers):
        if len(t) != 2:
            raise ValueError(f"tiers[{i}] must be a (threshold, reward) pair, got {t!r}")
        thr, rew = float(t[0]), float(t[1])
        if not (math.isfinite(thr) and 0.0 <= thr <= 1.0):
            raise ValueError(f"tiers[{i}]: threshold must be in [0, 1], got {t[0]!r}")
        if not math.isfinite(rew):
            raise ValueError(f"tiers[{i}]: reward must be finite, got {t[1]!r}")
        out.append((thr, rew))
    for i in range(1, len(out)):
        if not out[i][0] < out[i - 1][0]:
            raise ValueError(f"tier thresholds must be strictly decreasing (highest first), got {[t for t, _ in out]}; "
                             f"e.g. ((0.8, 4.0), (0.7, 3.0), (0.5, 2.0))")
        if out[i][1] > out[i - 1][1]:
            raise ValueError(f"tier rewards must not increase as the threshold falls, got {out}")
    return tuple(out)


def validate_tiers(tiers: Sequence[Sequence[float]]) -> tuple[tuple[float, float], ...]:
    """Check and normalise tiers: (threshold, reward) pairs, thresholds in [0, 1] strictly decreasing,
    rewards finite and non-increasing. Raises ValueError saying what is wrong."""
    try:
        key = tuple(tuple(t) for t in tiers)
    except TypeError:
        raise ValueError(f"tiers must be a sequence of (threshold, reward) pairs, got {tiers!r}") from None
    try:
        return _validate_tiers_cached(key)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ValueError) and str(exc).startswith(("tier", "tiers")):
            raise
        raise ValueError(f"tiers must hold numeric (threshold, reward) pairs, got {tiers!r}") from None


def tiered_iou_reward(iou: float, tiers: Sequence[Sequence[float]] = DEFAULT_TIERS) -> float:
    """SAM-R1's tiered reward: the reward of the first tier with ``iou > threshold`` (strict), else 0.0.

    Default: IoU > 0.8 -> 4, > 0.7 -> 3, > 0.5 -> 2, else 0 (an IoU of exactly 0.8 gets 3). A non-finite or
    non-numeric ``iou`` gives 0.0.
    """
    t = validate_tiers(tiers)
    try:
        x = float(iou)
    except (TypeError, ValueError):
        return 0.0
    if not math.isfinite(x):
        return 0.0
    for thr, rew in t:
        if x > thr:
            return rew
    return 0.0


def box_iou_reward(pred_box: Sequence[float] | None, gt_box: Sequence[float] | None, threshold: float = 0.5,
                   convention: str = "inclusive") -> float:
    """Seg-Zero's box IoU reward: 1.0 when ``box_iou(pred, gt, convention) > threshold`` (0.5), else 0.0.

    Both boxes XYXY in the same pixel frame; by default inclusive pixel indices (IoU with + 1), so the exact
    answer for a one-pixel-wide object earns IoU 1."""
    if pred_box is None or gt_box is None:
        return 0.0
    return 1.0 if box_iou(pred_box, gt_box, convention) > threshold else 0.0


def box_l1_reward(pred_box: Sequence[float] | None, gt_box: Sequence[float] | None, threshold: float = 10.0) -> float:
    """Seg-Zero's box L1 reward: 1.0 when the mean absolute difference of the 4 coordinates is ``< threshold``
    (10 px), else 0.0. Both boxes XYXY in the same pixel frame (:class:`SamR1Reward` uses the model frame by
    default, as Seg-Zero does)."""
    if pred_box is None or gt_box is None:
        return 0.0
    l1 = sum(abs(float(a) - float(b)) for a, b in zip(pred_box, gt_box, strict=True)) / 4.0
    return 1.0 if math.isfinite(l1) and l1 < threshold else 0.0


_MAX_PERMUTATIONS = 50_000


@lru_cache(maxsize=256)
def _permutations(n_large: int, n_small: int) -> np.ndarray:
    return np.array(list(itertools.permutations(range(n_large), n_small)), dtype=np.int64).reshape(-1, n_small)


def matched_point_distance(pred: Sequence[Sequence[float]], gt: Sequence[Sequence[float]]) -> float:
    """Mean Euclidean distance over the best one-to-one matching of predicted and ground-truth points.

    ``min(len(pred), len(gt))`` pairs are matched so that the summed distance is smallest (Seg-Zero's rule
    for two points: the better of the two pairings, divided by 2). Exact by enumeration when there are at
    most 50,000 assignments (always for 2 ground-truth points and up to 64 predicted ones); beyond that,
    greedy closest-pair-first. ``inf`` when either side is empty.
    """
    p = np.asarray(pred, dtype=np.float64).reshape(-1, 2)
    g = np.asarray(gt, dtype=np.float64).reshape(-1, 2)
    if len(p) == 0 or len(g) == 0:
        return math.inf
    small, large = (p, g) if len(p) <= len(g) else (g, p)
    d = np.sqrt(((small[:, None, :] - large[None, :, :]) ** 2).sum(-1))  # len(small) x len(large)
    ns, nl = d.shape
    if math.perm(nl, ns) <= _MAX_PERMUTATIONS:
        perms = _permutations(nl, ns)
        return float(d[np.arange(ns), perms].sum(axis=1).min() / ns)
    total = 0.0
    d = d.copy()
    for _ in range(ns):  # greedy: closest remaining pair first
        i, j = divmod(int(np.argmin(d)), nl)
        total += float(d[i, j])
        d[i, :] = np.inf
        d[:, j] = np.inf
    return total / ns


def point_distance_reward(pred_points: Sequence[Sequence[float]], gt_points: Sequence[Sequence[float]],
                          pred_box: Sequence[float] | None = None, threshold: float = 100.0,
                          max_points: int | None = 2) -> float:
    """Seg-Zero's point reward: 1.0 when the answer's first ``max_points`` points (2: Seg-Zero's ``points_1``,
    ``points_2``; None: all) all lie in ``pred_box`` (inclusive; skipped when None) and their
    :func:`matched_point_distance` to ``gt_points`` is ``< threshold`` (100 px), else 0.0.

    Only the first two points count so that spraying points cannot buy the reward (with all points matched,
    a grid of 62 extra points inside the box would always hold two near the reference points). One point is
    matched to the nearer reference point. All coordinates in one pixel frame."""
    if max_points is not None:
        pred_points = list(pred_points)[:max_points]
    if not len(pred_points) or not len(gt_points):
        return 0.0
    if pred_box is not None:
        x1, y1, x2, y2 = (float(v) for v in pred_box)
        if not all(x1 <= float(px) <= x2 and y1 <= float(py) <= y2 for px, py in pred_points):
            return 0.0
    dist = matched_point_distance(pred_points, gt_points)
    return 1.0 if math.isfinite(dist) and dist < threshold else 0.0


# ----------------------------------------------------------------------------------------- SamR1Reward
def _load_or_error(loader: Callable[..., np.ndarray], value: Any, field: str, source: str) -> np.ndarray | Exception:
    """``loader(value)``, or the exception that says why the row's image/mask is unusable (counted, not raised)."""
    try:
        return loader(value, field=field, source=source)
    except (InputError, ValueError, TypeError, OSError, OverflowError) as exc:
        return exc


def _same_as(error: Exception, first_row: int, row: int, field: str) -> str:
    """A load error's message for ``row`` when it was raised loading the same value for ``first_row``."""
    return str(error) if first_row == row else f"{error} (row {row} holds the same {field})"


class _Batch:
    """Everything computed once for one batch: per-component rewards, answers, IoUs, reasons."""

    __slots__ = ("key", "rewards", "answers", "ious", "row_codes")

    def __init__(self, key: tuple, rewards: dict[str, list[float]], answers: list[Answer], ious: list[float],
                 row_codes: list[list[str]]):
        self.key = key
        self.rewards = rewards  # component -> one value per completion
        self.answers = answers
        self.ious = ious  # mask IoU per completion (0.0 where not scored)
        self.row_codes = row_codes  # every failure code of each row (parse code first), [] when all went well

    @property
    def codes(self) -> list[str]:
        """One code per row: its first failure code, or "ok"."""
        return [c[0] if c else "ok" for c in self.row_codes]


class _ComponentReward:
    """One component of a :class:`SamR1Reward` as its own TRL reward function (distinct ``__name__``)."""

    def __init__(self, parent: SamR1Reward, component: str):
        self._parent = parent
        self.component = component
        self.__name__ = COMPONENTS[component]
        self.__qualname__ = self.__name__

    def __call__(self, prompts: Any = None, completions: Sequence[Any] | None = None, **kwargs: Any) -> list[float]:
        batch = self._parent._evaluate(completions, kwargs)
        return list(batch.rewards[self.component])

    def __repr__(self) -> str:
        return f"<samr1 reward component {self.__name__!r}>"


@dataclass(frozen=True)
class SamR1RewardConfig:
    """The settings of :class:`SamR1Reward`: which rewards to sum and how each is measured. Defaults are
    SAM-R1's (tiers, components) and Seg-Zero's (ablation thresholds, reference points)."""

    tiers: tuple[tuple[float, float], ...] = help_field(
        DEFAULT_TIERS, "(threshold, reward) pairs of the tiered IoU reward, thresholds in [0, 1] strictly "
                       "decreasing, rewards non-increasing: IoU > threshold earns the first matching reward "
                       "(SAM-R1: > 0.8 -> 4, > 0.7 -> 3, > 0.5 -> 2)")
    components: tuple[str, ...] = help_field(
        ("think", "answer", "iou"), "which rewards to sum (and log apart): think, answer, iou (tiered), mask_iou "
                                    "(continuous), box_iou, box_l1, point_dist (Seg-Zero's ablations, against the "
                                    "ground-truth mask's inclusive box and reference points)")
    model_size: tuple[int, int] = help_field(
        DEFAULT_MODEL_SIZE, "(h, w) of the frame the policy saw; answers are in its pixels")
    image_key: str = help_field("image", "dataset column holding the image (a non-empty list there, TRL's images "
                                         "column, gives its first image)")
    mask_key: str = help_field("mask", "dataset column holding the ground-truth mask, at the image's original size")
    require_points: bool = help_field(True, "an answer needs points to parse (passed to parse_answer)")
    box_iou_threshold: float = help_field(0.5, "box_iou earns 1 when the box IoU with the ground-truth box is "
                                               "above this (Seg-Zero: 0.5)")
    box_l1_threshold: float = help_field(10.0, "box_l1 earns 1 when the mean |corner difference| to the "
                                               "ground-truth box is below this many pixels (Seg-Zero: 10)")
    point_threshold: float = help_field(100.0, "point_dist earns 1 when the points lie in the box and their "
                                               "matched mean distance to the reference points is below this "
                                               "many pixels (Seg-Zero: 100)")
    gt_points: int = help_field(2, "reference points derived from the ground-truth mask for point_dist "
                                   "(Seg-Zero: 2)")
    frame: str = help_field("model", "pixel frame of the box and point rewards: model (Seg-Zero's: the answer "
                                     "as written against the mask resized to model_size, thresholds in model-frame "
                                     "pixels) or original (both in original image pixels)")
    point_rule: str = help_field("segzero", "how reference points come from the ground-truth mask: segzero or "
                                            "circles (see samr1.geometry.mask_to_points)")
    multi_object: str = help_field("union", "an answer listing several objects: union (scored on the union of "
                                            "SAM's masks of every object) or first (its first object only)")

    def __post_init__(self) -> None:
        comps = self.components
        if isinstance(comps, str) or not isinstance(comps, Iterable):
            raise ConfigError(f"components must be a sequence of names, e.g. ('think', 'answer', 'iou'), got "
                              f"{comps!r}", field="components")
        comps = tuple(comps)
        if not comps:
            raise ConfigError(f"components must not be empty; choose from {sorted(COMPONENTS)}", field="components")
        unknown = [c for c in comps if c not in COMPONENTS]
        if unknown:
            raise ConfigError(f"unknown reward components {unknown}; choose from {sorted(COMPONENTS)}",
                              field="components")
        if len(set(comps)) != len(comps):
            raise ConfigError(f"components must not repeat, got {comps}", field="components")
        set_field(self, "components", comps)
        for name, check in (("tiers", validate_tiers), ("model_size", lambda v: check_size(v, "model_size"))):
            try:
                set_field(self, name, check(getattr(self, name)))
            except ValueError as exc:  # the shared checks' messages; named by the field when they are not
                msg = str(exc) if str(exc).startswith(name) else f"{name}: {exc}"
                raise ConfigError(msg, field=name) from None
        for name in ("image_key", "mask_key"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ConfigError(f"{name} must be a dataset column name (a non-empty str), got "
                                  f"{getattr(self, name)!r}", field=name)
        set_field(self, "require_points", check_bool(self.require_points, "require_points"))
        for name in ("box_iou_threshold", "box_l1_threshold", "point_threshold"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v)):
                raise ConfigError(f"{name} must be a finite number, got {v!r}", field=name)
            set_field(self, name, float(v))
        if not isinstance(self.gt_points, int) or self.gt_points < 1:
            raise ConfigError(f"gt_points must be a positive int, got {self.gt_points!r}", field="gt_points")
        for name, choices in (("frame", FRAMES), ("point_rule", POINT_RULES), ("multi_object", MULTI_OBJECT_MODES)):
            if getattr(self, name) not in choices:
                raise ConfigError(f"{name} must be one of {choices}, got {getattr(self, name)!r}", field=name)
        if self.point_rule == "segzero" and self.gt_points > 2:
            raise ConfigError(f"point_rule='segzero' defines 2 reference points, got gt_points={self.gt_points}; "
                              "use point_rule='circles' for more", field="gt_points")


class SamR1Reward:
    """SAM-R1's reward as a TRL reward callable, summed over ``components``; see :meth:`functions`.

    Args:
        engine: a :class:`samr1.engine.SamEngine` (anything with ``score(images, answers, gt_masks) ->
            list[float]``); may be None when no component needs SAM ("think", "answer", and the box/point
            ablations need none).
        config: a :class:`SamR1RewardConfig` holding the settings below (default: its defaults). The settings
            may also be given by keyword (``SamR1Reward(engine, components=("iou",))``); keywords given
            together with ``config`` override its fields. ``reward.config`` is the effective config.
        tiers: (threshold, reward) pairs of the tiered IoU reward (see :func:`tiered_iou_reward`).
        components: which rewards to sum, from :data:`COMPONENTS`: "think", "answer", "iou" (tiered),
            "mask_iou" (continuous), "box_iou", "box_l1", "point_dist" (Seg-Zero's ablation rewards, computed
            against the inclusive box and the reference points of the ground-truth mask, see
            :mod:`samr1.geometry`).
        model_size: ``(h, w)`` of the frame the policy saw (answers are in its pixels).
        image_key, mask_key: dataset columns holding the image and the ground-truth mask. A row's value may
            also be a non-empty list/tuple of images (TRL's ``images`` column): its first image is used.
        require_points: passed to :func:`samr1.answer.parse_answer` (default: an answer needs points).
        box_iou_threshold, box_l1_threshold, point_threshold: Seg-Zero's 0.5, 10 px, 100 px.
        gt_points: how many reference points to derive from a mask for "point_dist" (Seg-Zero: 2).
        frame: pixel frame of the box and point rewards. "model" (default, Seg-Zero's): the answer's
            model-frame numbers as written (corners sorted, not clipped) against the ground-truth mask resized
            to ``model_size`` by nearest neighbour (:func:`samr1.geometry.resize_mask_nearest`; an object too
            thin to survive that resize gets its box and points from the original mask, scaled), so 10 px and
            100 px are model-frame pixels and the reward does not depend on the image's size. "original":
            both sides in original image pixels (the answer's model-frame numbers scaled by ``W / w``,
            ``H / h``), thresholds in original pixels.
        point_rule: how reference points are derived from the ground-truth mask, "segzero" (default) or
            "circles" (see :func:`samr1.geometry.mask_to_points`).
        multi_object: passed to :func:`samr1.answer.parse_answer`: "union" (default; a list of several objects
            is scored on the union of SAM's masks of every object) or "first".

    Calling it as ``reward(prompts, completions, image=[...], mask=[...], **kw)`` returns the summed reward
    per completion. The batch is parsed once and ``engine.score`` is called ONCE with the rows that have a
    valid answer and a loadable image and mask (all of them scored together; repeated images are the
    engine's business). A row whose image or mask is malformed gets 0 for the mask-based components, a
    ``RuntimeWarning`` naming the field and row (the first :attr:`MAX_ROW_WARNINGS`), and a counted reason;
    it never raises. Configuration errors (no ``image``/``mask`` column when a component needs them, lists
    of the wrong length) do raise, and so do engine failures other than ``InputError`` (CUDA OOM, bugs).

    An empty ground-truth mask is a valid row: the mask IoU of an empty SAM mask with it is 1 (the engine's
    convention), so a model that correctly finds nothing earns the IoU reward; the box and point rewards are
    0 there (no ground-truth box).

    Logging: ``stats`` holds cumulative counters (``batches``, ``completions``, ``answers_ok``, ``reasons``:
    a Counter over :data:`ALL_CODES`), ``last_mean_iou``/``last_answer_ok_fraction`` of the last batch and
    ``engine`` (a copy of ``engine.stats`` after the last call). When TRL passes ``log_metric`` (TRL >= 1.x
    gives every reward function ``log_metric(name, value)``, averaged over each logging step), every batch
    logs ``samr1/reason/<code>`` (this batch's count, every code every batch so the averages are per
    batch), ``samr1/answer_ok_fraction``, ``samr1/mean_iou`` (over all completions, 0 for failures) and
    numeric ``samr1/engine/<stat>``. With ``log_extra`` it adds the per-completion columns ``samr1_reason``
    and ``samr1_iou`` to TRL's completions table.
    """

    MAX_ROW_WARNINGS = 50
    """Row-level warnings (bad image/mask) issued per instance before they are suppressed (counts continue)."""

    def __init__(self, engine: Any, config: SamR1RewardConfig | None = None, **options: Any):
        cfg = self.config = with_overrides(SamR1RewardConfig, config, options, "SamR1Reward")
        if engine is None and _ENGINE_COMPONENTS.intersection(cfg.components):
            raise ValueError(f"components {sorted(_ENGINE_COMPONENTS.intersection(cfg.components))} need SAM: pass "
                             "engine=SamEngine(load_sam(...))")
        if engine is not None and not callable(getattr(engine, "score", None)):
            raise TypeError(f"engine must have a score(images, answers, gt_masks) method, got {type(engine).__name__}")
        self.engine = engine
        for f in dataclasses.fields(cfg):  # each setting is also an attribute (reward.components, .tiers, ...)
            setattr(self, f.name, getattr(cfg, f.name))
        self.__name__ = "samr1_reward"
        self.stats: dict[str, Any] = {
            "batches": 0, "completions": 0, "answers_ok": 0, "engine_calls": 0,
            "reasons": collections.Counter({c: 0 for c in ALL_CODES}),
            "last_mean_iou": 0.0, "last_answer_ok_fraction": 0.0, "engine": {},
        }
        self._last: _Batch | None = None
        self._warnings_left = self.MAX_ROW_WARNINGS
        # Ground-truth boxes/points per mask content (masks recur across epochs; the EDT costs ~0.1 s at 840^2).
        self._gt_geometry: collections.OrderedDict[str, tuple[Any, list]] = collections.OrderedDict()

    # ------------------------------------------------------------------ TRL entry points
    def __call__(self, prompts: Any = None, completions: Sequence[Any] | None = None, image: Any = None,
                 mask: Any = None, **kwargs: Any) -> list[float]:
        """Summed reward per completion (see the class docstring)."""
        kwargs = dict(kwargs)
        kwargs["image"] = image
        kwargs["mask"] = mask
        batch = self._evaluate(completions, kwargs)
        n = len(batch.answers)
        return [float(sum(batch.rewards[c][i] for c in self.components)) for i in range(n)]

    def functions(self) -> list[Callable[..., list[float]]]:
        """One TRL reward function per component, in ``components`` order, with distinct ``__name__``s
        (see :data:`COMPONENTS`): ``GRPOTrainer(reward_funcs=reward.functions())``. TRL calls them one
        after the other with the same ``completions`` list; the first call computes the whole batch (one
        parse, one engine call, one round of logging) and the others reuse it. Their sum (TRL's default
        ``reward_weights`` of 1) equals ``reward(...)``. A call with the very same list objects (and
        elements) as the previous call returns the memoised batch without recomputing or logging again."""
        return [_ComponentReward(self, c) for c in self.components]

    # ------------------------------------------------------------------ the batch
    def _column(self, kwargs: dict, key: str, n: int, needed: bool) -> Sequence[Any] | None:
        col = kwargs.get(key)
        if col is None:
            if needed:
                raise ValueError(f"SamR1Reward needs the dataset column {key!r} (components {self.components}); "
                                 f"TRL passes every dataset column to reward functions by name. Got columns "
                                 f"{sorted(k for k in kwargs if kwargs[k] is not None and not callable(kwargs[k]))}")
            return None
        if not isinstance(col, (list, tuple)):
            raise ValueError(f"column {key!r} must be a list parallel to completions, got {type(col).__name__}")
        if len(col) != n:
            raise ValueError(f"column {key!r} has {len(col)} rows but there are {n} completions")
        return col

    @staticmethod
    def _key(*columns: Any) -> tuple:
        # Each column by the identity of the list object AND of its elements: TRL builds new lists every
        # step and passes the very same list objects to every reward function of that step. The memo keeps
        # strong references, so ids cannot be reused while it lives; element identity also catches a list
        # mutated in place.
        return tuple(None if c is None else (c, tuple(c)) for c in columns)

    @staticmethod
    def _same(a: tuple, b: tuple) -> bool:
        for x, y in zip(a, b, strict=True):
            if x is None or y is None:
                if x is not y:
                    return False
                continue
            if x[0] is not y[0] or len(x[1]) != len(y[1]) or any(p is not q for p, q in zip(x[1], y[1], strict=True)):
                return False
        return True

    def _evaluate(self, completions: Sequence[Any] | None, kwargs: dict) -> _Batch:
        if completions is None:
            raise ValueError("completions must be given (TRL passes completions=...)")
        if not isinstance(completions, (list, tuple)):
            completions = list(completions)
        n = len(completions)
        needs_gt = bool(_GT_COMPONENTS.intersection(self.components))
        images = self._column(kwargs, self.image_key, n, needs_gt) if needs_gt else None
        masks = self._column(kwargs, self.mask_key, n, needs_gt) if needs_gt else None
        key = self._key(completions, images, masks)
        if self._last is not None and self._same(self._last.key, key):
            return self._last
        batch = self._compute(list(completions), None if images is None else list(images),
                              None if masks is None else list(masks), key)
        self._last = batch
        self._log(batch, kwargs.get("log_metric"), kwargs.get("log_extra"))
        return batch

    def _load_rows(self, images: list[Any], masks: list[Any], codes: list[list[str]]):
        """Load each distinct image/mask once; returns per-row (image array | None, mask array | None)."""
        img_cache: dict[Any, Any] = {}
        mask_cache: dict[Any, Any] = {}
        arrs: list[np.ndarray | None] = []
        gts: list[np.ndarray | None] = []
        for i, (img, m) in enumerate(zip(images, masks, strict=True)):
            if isinstance(img, (list, tuple)) and img and not isinstance(img, str):
                img = img[0]
            ik = img if isinstance(img, str) else id(img)
            if ik not in img_cache:  # (array or the error, the row that first loaded it: its message names it)
                img_cache[ik] = (_load_or_error(load_image, img, self.image_key, f"row {i}"), i)
            a, a_row = img_cache[ik]
            # the image's size goes to load_mask so a mismatched (e.g. huge) RLE is refused before decoding
            size = a.shape[:2] if isinstance(a, np.ndarray) else None
            mk = (m if isinstance(m, str) else id(m), size)
            if mk not in mask_cache:
                mask_cache[mk] = (_load_or_error(partial(load_mask, expected_size=size), m, self.mask_key,
                                                 f"row {i}"), i)
            g, g_row = mask_cache[mk]
            if isinstance(a, Exception):
                self._warn(i, "bad_image", _same_as(a, a_row, i, self.image_key))
                codes[i].append("bad_image")
                a = None
            if isinstance(g, Exception):
                code = "mask_size_mismatch" if isinstance(g, MaskSizeError) else "bad_mask"
                self._warn(i, code, _same_as(g, g_row, i, self.mask_key))
                codes[i].append(code)
                g = None
            if a is not None and g is not None and g.shape != a.shape[:2]:
                self._warn(i, "mask_size_mismatch", f"{self.mask_key} (row {i}): mask is {g.shape[0]}x{g.shape[1]} "
                           f"but {self.image_key} is {a.shape[0]}x{a.shape[1]} (H x W); the mask must be at the "
                           "original image size")
                codes[i].append("mask_size_mismatch")
                g = None
            arrs.append(a)
            gts.append(g)
        return arrs, gts

    def _warn(self, i: int, code: str, detail: Any) -> None:
        # Rate-limited: a dataset with many bad rows must not flood the training log; stats keep counting.
        self._warnings_left -= 1
        if self._warnings_left < 0:
            return
        tail = "" if self._warnings_left else " (further row warnings of this reward are suppressed; see .stats)"
        warnings.warn(f"SamR1Reward: {detail} [{code}]; the mask-based rewards of row {i} are 0{tail}",
                      RuntimeWarning, stacklevel=4)

    def _compute(self, completions: list[Any], images: list[Any] | None, masks: list[Any] | None, key: tuple) -> _Batch:
        n = len(completions)
        codes: list[list[str]] = [[] for _ in range(n)]
        if images is not None and masks is not None:
            arrs, gts = self._load_rows(images, masks, codes)
        else:
            arrs, gts = [None] * n, [None] * n

        answers: list[Answer] = []
        think = []
        for i, c in enumerate(completions):
            text = completion_text(c)
            if text is None:
                ans = Answer(ok=False, reason=f"bad_completion: expected a str or a list of messages, got "
                                                f"{type(c).__name__}")
            else:
                size = arrs[i].shape[:2] if arrs[i] is not None else None
                ans = parse_answer(text, size, self.model_size, require_points=self.require_points,
                                   multi_object=self.multi_object)
            answers.append(ans)
            if not ans.ok:
                codes[i].insert(0, ans.code)
            think.append(1.0 if think_format_ok(text) else 0.0)

        scorable = [i for i in range(n) if answers[i].ok and arrs[i] is not None and gts[i] is not None]
        ious = [0.0] * n
        if _ENGINE_COMPONENTS.intersection(self.components) and scorable:
            ious = self._score(scorable, arrs, gts, answers, codes)

        rewards: dict[str, list[float]] = {}
        for comp in self.components:
            if comp == "think":
                rewards[comp] = think
            elif comp == "answer":
                rewards[comp] = [1.0 if a.ok else 0.0 for a in answers]
            elif comp == "iou":
                rewards[comp] = [tiered_iou_reward(x, self.tiers) for x in ious]
            elif comp == "mask_iou":
                rewards[comp] = list(ious)
        if {"box_iou", "box_l1", "point_dist"}.intersection(self.components):
            in_scorable = set(scorable)
            geo = [self._geometry(gts[i]) if i in in_scorable else (None, []) for i in range(n)]
            pred = [self._pred_geometry(answers[i], gts[i]) if i in in_scorable else (None, []) for i in range(n)]
            for comp in ("box_iou", "box_l1", "point_dist"):
                if comp not in self.components:
                    continue
                vals = []
                for i in range(n):
                    (box, pts), (gt_box, gt_pts) = pred[i], geo[i]
                    if i not in in_scorable or gt_box is None or box is None:
                        vals.append(0.0)
                    elif comp == "box_iou":
                        vals.append(box_iou_reward(box, gt_box, self.box_iou_threshold))
                    elif comp == "box_l1":
                        vals.append(box_l1_reward(box, gt_box, self.box_l1_threshold))
                    else:
                        vals.append(point_distance_reward(pts, gt_pts, box, self.point_threshold))
                rewards[comp] = vals
        self._count(answers, codes, ious)
        return _Batch(key, rewards, answers, ious, codes)

    def _score(self, rows: list[int], arrs: list, gts: list, answers: list[Answer], codes: list[list[str]]) -> list[float]:
        """One engine call for all scorable rows; on an InputError, rows are re-scored one by one so only the
        offending row gets 0. Non-finite IoUs become 0; results are clipped to [0, 1]."""
        n = len(answers)
        ious = [0.0] * n
        self.stats["engine_calls"] += 1
        try:
            got = list(self.engine.score([arrs[i] for i in rows], [answers[i] for i in rows], [gts[i] for i in rows]))
            if len(got) != len(rows):
                raise RuntimeError(f"engine.score returned {len(got)} IoUs for {len(rows)} answers")
        except InputError as exc:
            warnings.warn(f"SamR1Reward: the engine rejected the batch ({exc}); re-scoring its rows one by one",
                          RuntimeWarning, stacklevel=4)
            got = []
            for i in rows:
                try:
                    got.append(float(self.engine.score([arrs[i]], [answers[i]], [gts[i]])[0]))
                except InputError as row_exc:
                    self._warn(i, "engine_input_error", row_exc)
                    codes[i].append("engine_input_error")
                    got.append(0.0)
        for i, v in zip(rows, got, strict=True):
            try:
                x = float(v)
            except (TypeError, ValueError):
                x = math.nan
            if not math.isfinite(x):
                codes[i].append("engine_non_finite")
                x = 0.0
            ious[i] = min(max(x, 0.0), 1.0)
        if self.engine is not None and hasattr(self.engine, "stats"):
            try:
                self.stats["engine"] = dict(self.engine.stats)
            except Exception:  # noqa: BLE001 - stats are informative only; never fail a training step on them
                self.stats["engine"] = {}
        return ious

    def _pred_geometry(self, a: Answer, gt: np.ndarray | None) -> tuple[Any, list]:
        """The answer's (box, points) in ``self.frame``: model-frame numbers as written (corners sorted, not
        clipped), or those scaled to the original image. Multi-object answers: the first object."""
        box, pts = a.model_bbox, list(a.model_points)
        if box is None or self.frame == "model" or gt is None:
            return box, pts
        (mh, mw), (H, W) = self.model_size, gt.shape
        sx, sy = W / mw, H / mh
        return ((box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy), [(x * sx, y * sy) for x, y in pts])

    def _frame_geometry(self, gt: np.ndarray) -> tuple[Any, list]:
        """(inclusive box, reference points) of a ground-truth mask in ``self.frame``."""
        if self.frame == "original":
            return mask_to_box(gt, "inclusive"), mask_to_points(gt, self.gt_points, rule=self.point_rule)
        small = resize_mask_nearest(gt, self.model_size)
        if small.any() or not gt.any():
            return mask_to_box(small, "inclusive"), mask_to_points(small, self.gt_points, rule=self.point_rule)
        # Thinner than one model-frame pixel: measure on the original mask and scale (x * w / W, y * h / H).
        (mh, mw), (H, W) = self.model_size, gt.shape
        sx, sy = mw / W, mh / H
        b = mask_to_box(gt, "inclusive")
        pts = mask_to_points(gt, self.gt_points, rule=self.point_rule)
        return (b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy), [(x * sx, y * sy) for x, y in pts]

    def _geometry(self, gt: np.ndarray | None) -> tuple[Any, list]:
        """(box, points) of a ground-truth mask in ``self.frame``, memoised by content (bounded LRU of 4096)."""
        if gt is None:
            return None, []
        k = mask_digest(gt)
        hit = self._gt_geometry.get(k)
        if hit is not None:
            self._gt_geometry.move_to_end(k)
            return hit
        val = self._frame_geometry(gt)
        self._gt_geometry[k] = val
        if len(self._gt_geometry) > 4096:
            self._gt_geometry.popitem(last=False)
        return val

    def _count(self, answers: list[Answer], codes: list[list[str]], ious: list[float]) -> None:
        n = len(answers)
        st = self.stats
        st["batches"] += 1
        st["completions"] += n
        n_ok = sum(1 for a in answers if a.ok)
        st["answers_ok"] += n_ok
        for cs in codes:
            for c in cs:
                st["reasons"][c] += 1
        st["last_mean_iou"] = float(sum(ious) / n) if n else 0.0
        st["last_answer_ok_fraction"] = float(n_ok / n) if n else 0.0

    def _log(self, batch: _Batch, log_metric: Any, log_extra: Any) -> None:
        """Report this batch through TRL's ``log_metric(name, value)`` / ``log_extra(column, values)``."""
        if callable(log_metric):
            n = len(batch.answers)
            counts: collections.Counter[str] = collections.Counter()
            for cs in batch.row_codes:
                counts.update(cs)
            for code in ALL_CODES:
                log_metric(f"samr1/reason/{code}", float(counts.get(code, 0)))
            log_metric("samr1/answer_ok_fraction", float(sum(a.ok for a in batch.answers) / n) if n else 0.0)
            log_metric("samr1/mean_iou", float(sum(batch.ious) / n) if n else 0.0)
            for k, v in sorted(self.stats["engine"].items()):
                if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                    log_metric(f"samr1/engine/{k}", float(v))
        if callable(log_extra):
            log_extra("samr1_reason", list(batch.codes))
            log_extra("samr1_iou", [float(x) for x in batch.ious])
