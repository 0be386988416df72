"""The settings of :class:`samr1.rewards.SamR1Reward` and the names its components and failure codes use."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from samr1.answer import DEFAULT_MODEL_SIZE, MULTI_OBJECT_MODES, REASON_CODES, check_size
from samr1.config import ConfigError, check_bool, help_field, set_field
from samr1.geometry import POINT_RULES
from samr1.rewards.presets import PRESETS
from samr1.rewards.tiers import DEFAULT_TIERS, validate_tiers
from samr1.rewards.truth import GT_RULES

__all__ = ["FRAMES", "COMPONENTS", "ENGINE_COMPONENTS", "GT_COMPONENTS", "MASK_MATCH_MODES", "INPUT_CODES",
           "ALL_CODES", "SamR1RewardConfig"]

FRAMES: tuple[str, ...] = ("model", "original")
"""Pixel frames the ablation rewards can be measured in: the policy's model frame (default) or the image's."""

COMPONENTS: dict[str, str] = {
    "think": "think_format",  # 0/1: <think>...</think> then <answer>...</answer> (each preset's rule)
    "answer": "answer_format",  # the answer's format (samr1, segzero: 0/1; visionreasoner: 0..2 per object)
    "iou": "tiered_iou",  # 0/2/3/4 by default: tiers over SAM's mask IoU
    "mask_iou": "mask_iou",  # continuous mask IoU in [0, 1]
    "box_iou": "box_iou",  # 0/1: Seg-Zero, predicted box IoU with the mask's box > 0.5
    "box_l1": "box_l1",  # 0/1: Seg-Zero, mean |coordinate difference| to the mask's box < 10 px
    "point_dist": "point_distance",  # 0/1: Seg-Zero, points in the box and matched mean distance < 100 px
    "accuracy": "accuracy",  # 0..3: VisionReasoner, Hungarian-matched box IoU + box L1 + point, over max(M, N)
    "non_repeat": "non_repeat",  # 0/1: VisionReasoner, fewer than two repeated sentences
}
"""Component name -> the ``__name__`` its TRL reward function gets (TRL logs ``rewards/<__name__>/mean``)."""

ENGINE_COMPONENTS = frozenset({"iou", "mask_iou"})
"""Components that need SAM (an engine)."""
GT_COMPONENTS = frozenset({"iou", "mask_iou", "box_iou", "box_l1", "point_dist", "accuracy"})
"""Components that need the image and ground-truth mask columns."""

MASK_MATCH_MODES: tuple[str, ...] = ("union", "matched")
"""How the mask components score several objects against several ground-truth instances: "union" (the
union of SAM's masks of the answer's objects against the union of the instances) or "matched" (per object,
after Hungarian matching on mask IoU; the matched IoUs summed over max(objects, instances))."""

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


@dataclass(frozen=True)
class SamR1RewardConfig:
    """The settings of :class:`SamR1Reward`: which rewards to sum and how each is measured. Defaults are
    SAM-R1's (tiers, components) and Seg-Zero's (ablation thresholds, reference points); ``preset`` picks
    whose rules the components follow (see :mod:`samr1.rewards.presets`)."""

    preset: str = help_field("samr1", "whose rules the components follow: samr1 (samr1's reading, the default), "
                                      "segzero (Seg-Zero's training reward: its format, strict box IoU, int() "
                                      "points, each component parsing on its own) or visionreasoner (a list of "
                                      "objects, Hungarian-matched accuracy, non-repeat)")

    tiers: tuple[tuple[float, float], ...] = help_field(
        DEFAULT_TIERS, "(threshold, reward) pairs of the tiered IoU reward, thresholds in [0, 1] strictly "
                       "decreasing, rewards non-increasing: IoU > threshold earns the first matching reward "
                       "(SAM-R1: > 0.8 -> 4, > 0.7 -> 3, > 0.5 -> 2)")
    components: tuple[str, ...] | None = help_field(
        None, "which rewards to sum (and log apart); default the preset's (samr1: think, answer, iou; segzero: "
              "think, answer, box_iou, box_l1, point_dist; visionreasoner: think, answer, accuracy, non_repeat). "
              "Names: think, answer, iou (tiered), mask_iou (continuous), box_iou, box_l1, point_dist (samr1, "
              "segzero), accuracy, non_repeat (visionreasoner)")
    model_size: tuple[int, int] = help_field(
        DEFAULT_MODEL_SIZE, "(h, w) of the frame the policy saw; answers are in its pixels")
    image_key: str = help_field("image", "dataset column holding the image (a non-empty list there, TRL's images "
                                         "column, gives its first image)")
    mask_key: str = help_field("mask", "dataset column holding the ground-truth mask, at the image's original size")
    ignore_key: str | None = help_field(
        "ignore", "optional dataset column of ignore regions (per row None or a mask at the image's size, e.g. "
                  "ReasonSeg's 'ignore' polygons): their pixels count in neither the intersection nor the union "
                  "of the mask rewards, as in samr1 eval; a batch without the column has none; None: never read "
                  "(a dataset whose 'ignore' column means something else)")
    require_points: bool = help_field(True, "an answer needs points to parse (passed to parse_answer)")
    box_iou_threshold: float = help_field(0.5, "box_iou earns 1 when the box IoU with the ground-truth box is "
                                               "above this (Seg-Zero: 0.5)")
    box_l1_threshold: float = help_field(10.0, "box_l1 earns 1 when the mean |corner difference| to the "
                                               "ground-truth box is below this many pixels (Seg-Zero: 10)")
    point_threshold: float | None = help_field(
        None, "point_dist earns 1 when the points lie in the box and their matched mean distance to the reference "
              "points is below this many pixels; visionreasoner's accuracy uses it for its single point; default "
              "the preset's (Seg-Zero: 100, VisionReasoner: 30)")
    gt_points: int = help_field(2, "reference points derived from the ground-truth mask for point_dist "
                                   "(Seg-Zero: 2)")
    frame: str = help_field("model", "pixel frame of the box and point rewards: model (Seg-Zero's: the answer "
                                     "as written against the mask resized to model_size, thresholds in model-frame "
                                     "pixels) or original (both in original image pixels)")
    point_rule: str = help_field("segzero", "how reference points come from the ground-truth mask: segzero or "
                                            "circles (see samr1.geometry.mask_to_points)")
    multi_object: str = help_field("union", "an answer listing several objects: union (scored on the union of "
                                            "SAM's masks of every object) or first (its first object only)")
    gt_rule: str = help_field("published", "how the ground truth's box and points reach the model frame: "
                                           "published (computed on the original mask, each coordinate scaled "
                                           "as int(v * 840 / W + 0.5), the peers' data preparation) or resize "
                                           "(measured on the mask resized to the frame)")
    mask_match: str = help_field("union", "visionreasoner, several objects and ground-truth instances: union "
                                          "(the masks' unions compared) or matched (per object after Hungarian "
                                          "matching on mask IoU, summed over max(objects, instances))")

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ConfigError(f"preset must be one of {tuple(PRESETS)}, got {self.preset!r}", field="preset")
        preset = PRESETS[self.preset]
        comps = preset.DEFAULT_COMPONENTS if self.components is None else self.components
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
        foreign = [c for c in comps if c not in preset.COMPONENTS]
        if foreign:
            raise ConfigError(f"components {foreign} are not defined by preset {self.preset!r}; it has "
                              f"{list(preset.COMPONENTS)}", field="components")
        if self.point_threshold is None:
            set_field(self, "point_threshold", preset.POINT_THRESHOLD)
        set_field(self, "components", comps)
        for name, check in (("tiers", validate_tiers), ("model_size", lambda v: check_size(v, "model_size"))):
            try:
                set_field(self, name, check(getattr(self, name)))
            except ValueError as exc:  # the shared checks' messages; named by the field when they are not
                msg = str(exc) if str(exc).startswith(name) else f"{name}: {exc}"
                raise ConfigError(msg, field=name) from None
        for name in ("image_key", "mask_key", "ignore_key"):
            if name == "ignore_key" and self.ignore_key is None:
                continue
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
        for name, choices in (("frame", FRAMES), ("point_rule", POINT_RULES), ("multi_object", MULTI_OBJECT_MODES),
                              ("gt_rule", GT_RULES), ("mask_match", MASK_MATCH_MODES)):
            if getattr(self, name) not in choices:
                raise ConfigError(f"{name} must be one of {choices}, got {getattr(self, name)!r}", field=name)
        if self.point_rule == "segzero" and self.gt_points > 2:
            raise ConfigError(f"point_rule='segzero' defines 2 reference points, got gt_points={self.gt_points}; "
                              "use point_rule='circles' for more", field="gt_points")
        if self.preset != "samr1" and self.frame != "model":
            raise ConfigError(f"preset {self.preset!r} measures in the model frame (its thresholds are model-frame "
                              f"pixels); frame={self.frame!r} is for preset 'samr1'", field="frame")
        if self.preset == "visionreasoner" and self.multi_object != "union":
            raise ConfigError("preset 'visionreasoner' scores every object of an answer; multi_object must be "
                              "'union'", field="multi_object")
        if self.mask_match == "matched" and self.preset != "visionreasoner":
            raise ConfigError("mask_match='matched' pairs objects with instances as VisionReasoner does; use it "
                              "with preset='visionreasoner'", field="mask_match")
