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
  ground truth in that frame, so an answer earns the same reward whatever the image's size.
  ``frame="original"`` measures them in original image pixels instead.
* Boxes are inclusive pixel indices on both sides (IoU with + 1 on widths and heights); a one-pixel box is
  a valid answer. The point reward uses the answer's FIRST TWO points (Seg-Zero's ``points_1``,
  ``points_2``): extra points still go to SAM but cannot earn the point reward. Reference points follow
  Seg-Zero's rule (:func:`samr1.geometry.mask_to_points`, ``rule="segzero"``).
* Empty ground truth ("no target"): the answer ``[]`` ("no object", an empty mask) earns the mask IoU 1
  and the box and point rewards in full there, 0 on a non-empty target; any other answer earns 0 from the
  box and point rewards there. Evaluation offers all three peer conventions for an empty union
  (:mod:`samr1.metrics`).
* A list of several objects (VisionReasoner's form) is scored on the union of SAM's masks of its objects
  (``multi_object="union"``, the default); the box and point rewards use its first object.

Presets (``SamR1Reward(engine, preset=...)``, :mod:`samr1.rewards.presets`): whose rules the components
follow. ``"samr1"`` (the default; the conventions above), ``"segzero"`` (Seg-Zero's training reward, rule for
rule: its format, strict box IoU, ``int()`` points, each component parsing on its own) and
``"visionreasoner"`` (a list of objects, Hungarian-matched accuracy, non-repeat). Ground-truth boxes and
points come from the published pipeline by default (computed on the ORIGINAL mask, each coordinate scaled
to the 840 frame as ``int(v * 840 / W + 0.5)``; :mod:`samr1.rewards.truth`). The answer ``[]`` means "no
object"; each preset module states its no-target rule. A row's mask may be a list of instance masks.

The package: :mod:`~samr1.rewards.reward` (:class:`SamR1Reward`), :mod:`~samr1.rewards.config` (its settings,
component names, failure codes), and the shared pieces every preset module builds on:
:mod:`~samr1.rewards.text` (format checks), :mod:`~samr1.rewards.boxes` (box/point geometry rewards),
:mod:`~samr1.rewards.truth` (ground truth in the policy's frame), :mod:`~samr1.rewards.tiers` and
:mod:`~samr1.rewards.mask` (the SAM-backed mask rewards). Each preset is one module:
:mod:`~samr1.rewards.samr1`, :mod:`~samr1.rewards.segzero`, :mod:`~samr1.rewards.visionreasoner`.
"""

from __future__ import annotations

from samr1.rewards.boxes import box_iou_reward, box_l1_reward, matched_point_distance, point_distance_reward
from samr1.rewards.config import ALL_CODES, COMPONENTS, FRAMES, INPUT_CODES, SamR1RewardConfig
from samr1.rewards.presets import PRESETS
from samr1.rewards.reward import SamR1Reward
from samr1.rewards.text import answer_format_reward, completion_text, think_format_ok, think_format_reward
from samr1.rewards.tiers import DEFAULT_TIERS, tiered_iou_reward, validate_tiers

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
    "PRESETS",
]
