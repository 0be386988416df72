"""The SAM-backed mask rewards: one engine call per batch gives each row's mask IoU ("mask_iou"), and the
tiers of :mod:`samr1.rewards.tiers` map it to SAM-R1's reward ("iou")."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

from samr1.answer import Answer
from samr1.io import InputError
from samr1.rewards.tiers import tiered_iou_reward

__all__ = ["drop_refused_rows", "engine_ious", "mask_rewards"]


def drop_refused_rows(engine: Any, rows: list[int], images: list, gts: list, answers: list[Answer],
                      codes: list[list[str]], warn: Callable[[int, str, Any], None],
                      ignores: list | None = None) -> list[int]:
    """``rows`` without those the engine would refuse, found up front by its ``row_errors`` (an image SAM
    cannot encode, a mask not of its image's size; see :meth:`samr1.engine.scoring.ScoringEngine.row_errors`),
    so that one bad row costs only itself and the step stays one batched engine call. Each dropped row gets
    ``warn(row, "engine_input_error", error)`` and the code appended to ``codes[row]`` (its mask rewards stay
    0). An engine without ``row_errors`` keeps every row."""
    check = getattr(engine, "row_errors", None)
    if not callable(check) or not rows:
        return rows
    # the messages name images[i] with i the batch's row
    errors = check(images, answers, gts, rows=rows) if ignores is None else \
        check(images, answers, gts, rows=rows, ignore=ignores)
    for i, err in zip(rows, errors, strict=True):
        if err is not None:
            warn(i, "engine_input_error", err)
            codes[i].append("engine_input_error")
    return [i for i, err in zip(rows, errors, strict=True) if err is None]


def _score(engine: Any, rows: list[int], images: list, gts: list, answers: list[Answer], ignores: list | None):
    """``engine.score`` over ``rows``; ``ignore=`` only when some row has an ignore region (an engine of one's
    own needs to take it only then)."""
    args = ([images[i] for i in rows], [answers[i] for i in rows], [gts[i] for i in rows])
    if ignores is None or all(ignores[i] is None for i in rows):
        return engine.score(*args)
    if not _takes_ignore(engine):
        raise TypeError(f"{type(engine).__name__}.score takes no ignore= argument, but this batch has ignore regions "
                        "(the dataset's ignore column): give the engine score(images, answers, gt_masks, ignore=None) "
                        "as samr1's engines have, or SamR1Reward(..., ignore_key=None) to read no ignore column")
    return engine.score(*args, ignore=[ignores[i] for i in rows])


def _takes_ignore(engine: Any) -> bool:
    """Whether ``engine.score`` accepts ``ignore=`` (by name or through ``**kwargs``)."""
    import inspect

    try:
        params = inspect.signature(engine.score).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: let the call itself say
        return True
    return any(p.name == "ignore" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def engine_ious(engine: Any, rows: list[int], images: list, gts: list, answers: list[Answer],
                codes: list[list[str]], warn: Callable[[int, str, Any], None], stats: dict[str, Any],
                ignores: list | None = None) -> list[float]:
    """Mask IoU per row (0.0 for rows not in ``rows``) from ONE ``engine.score`` call over ``rows``; with
    ``ignores`` (per row None or an ignore region) the engine excludes those pixels from both counts.

    The caller drops the rows the engine would refuse first (:func:`drop_refused_rows`). Only an engine without
    ``row_errors`` (or an error it did not foresee) makes the rows be re-scored one by one after an
    :class:`samr1.io.InputError`, so that just the offending row gets 0 (``warn(row, "engine_input_error",
    error)`` and the code appended to ``codes[row]``).
    Non-finite IoUs become 0 (code ``engine_non_finite``); results are clipped to [0, 1]. ``stats["engine_calls"]`` is
    incremented and ``stats["engine"]`` gets a copy of ``engine.stats``.
    """
    n = len(answers)
    ious = [0.0] * n
    stats["engine_calls"] += bool(rows)  # a batch whose rows were all dropped makes no call
    try:
        got = list(_score(engine, rows, images, gts, answers, ignores)) if rows else []
        if len(got) != len(rows):
            raise RuntimeError(f"engine.score returned {len(got)} IoUs for {len(rows)} answers")
    except InputError as exc:
        warnings.warn(f"SamR1Reward: the engine rejected the batch ({exc}); re-scoring its rows one by one",
                      RuntimeWarning, stacklevel=5)
        got = []
        for i in rows:
            try:
                got.append(float(_score(engine, [i], images, gts, answers, ignores)[0]))
            except InputError as row_exc:
                warn(i, "engine_input_error", row_exc)
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
    if engine is not None and hasattr(engine, "stats"):
        try:
            stats["engine"] = dict(engine.stats)
        except Exception:  # noqa: BLE001 - stats are informative only; never fail a training step on them
            stats["engine"] = {}
    return ious


def mask_rewards(component: str, ious: list[float], tiers: Any) -> list[float]:
    """The values of a mask component over a batch's IoUs: "iou" (tiered) or "mask_iou" (the IoU itself)."""
    if component == "iou":
        return [tiered_iou_reward(x, tiers) for x in ious]
    if component == "mask_iou":
        return list(ious)
    raise ValueError(f"{component!r} is no mask component (iou, mask_iou)")
