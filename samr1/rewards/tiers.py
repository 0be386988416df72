"""SAM-R1's tiered IoU reward over SAM's mask IoU (the SAM-backed reward every preset may sum).

:class:`samr1.rewards.SamR1Reward` gets the IoUs from ONE engine call per batch
(:func:`samr1.rewards.mask.engine_ious`) and maps them through :func:`tiered_iou_reward`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

__all__ = ["DEFAULT_TIERS", "validate_tiers", "tiered_iou_reward"]

DEFAULT_TIERS: tuple[tuple[float, float], ...] = ((0.8, 4.0), (0.7, 3.0), (0.5, 2.0))
"""SAM-R1's tiered IoU reward: (threshold, reward) pairs, thresholds strictly decreasing; IoU > thr -> reward."""


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

