"""The reward presets: whose rules :class:`samr1.rewards.SamR1Reward`'s components follow.

Each preset is one module that defines ``NAME``, ``COMPONENTS`` (what it can sum), ``DEFAULT_COMPONENTS``,
``POINT_THRESHOLD`` and ``rewards(inputs, components, config, memo)``, the values of its own components
(the SAM-backed mask components "iou" and "mask_iou" are shared, :mod:`samr1.rewards.mask`):

* ``samr1`` (:mod:`samr1.rewards.samr1`, the default): samr1's reading;
* ``segzero`` (:mod:`samr1.rewards.segzero`): Seg-Zero's training reward, rule for rule;
* ``visionreasoner`` (:mod:`samr1.rewards.visionreasoner`): VisionReasoner's multi-object reward.
"""

from __future__ import annotations

from types import ModuleType

from samr1.rewards import samr1, segzero, visionreasoner

__all__ = ["PRESETS"]

PRESETS: dict[str, ModuleType] = {m.NAME: m for m in (samr1, segzero, visionreasoner)}
"""Preset name -> its module."""
