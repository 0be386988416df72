"""SAM-R1's reward as a TRL reward callable: :class:`SamR1Reward` (one parse, one engine call per batch)."""

from __future__ import annotations

import collections
import dataclasses
import math
import warnings
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import numpy as np

from samr1.answer import Answer, parse_answer
from samr1.config import with_overrides
from samr1.io import InputError, MaskSizeError, load_image, load_mask
from samr1.rewards.batch import BatchInputs, MaskMemo
from samr1.rewards.config import ALL_CODES, COMPONENTS, ENGINE_COMPONENTS, GT_COMPONENTS, SamR1RewardConfig
from samr1.rewards.mask import drop_refused_rows, engine_ious, mask_rewards
from samr1.rewards.presets import PRESETS
from samr1.rewards.text import completion_text
from samr1.rewards.truth import load_instances
from samr1.rewards.visionreasoner import matched_mask_values

__all__ = ["SamR1Reward"]


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



class SamR1Reward:
    """SAM-R1's reward as a TRL reward callable, summed over ``components``; see :meth:`functions`.

    Args:
        engine: a :class:`samr1.engine.SamEngine` (anything with ``score(images, answers, gt_masks) ->
            list[float]``); may be None when no component needs SAM ("think", "answer", and the box/point
            ablations need none).
        config: a :class:`SamR1RewardConfig` holding the settings below (default: its defaults). The settings
            may also be given by keyword (``SamR1Reward(engine, components=("iou",))``); keywords given
            together with ``config`` override its fields. ``reward.config`` is the effective config.
        preset: whose rules the components follow: "samr1" (default, :mod:`samr1.rewards.samr1`),
            "segzero" (Seg-Zero's training reward, :mod:`samr1.rewards.segzero`) or "visionreasoner"
            (VisionReasoner's multi-object reward, :mod:`samr1.rewards.visionreasoner`).
        tiers: (threshold, reward) pairs of the tiered IoU reward (see :func:`tiered_iou_reward`).
        components: which rewards to sum, from :data:`COMPONENTS` and defined by the preset (default: the
            preset's own sum): "think", "answer", "iou" (tiered), "mask_iou" (continuous), "box_iou",
            "box_l1", "point_dist" (Seg-Zero's ablation rewards, against the inclusive box and the reference
            points of the ground-truth mask, see :mod:`samr1.rewards.truth`), "accuracy", "non_repeat"
            (VisionReasoner's).
        model_size: ``(h, w)`` of the frame the policy saw (answers are in its pixels).
        image_key, mask_key: dataset columns holding the image and the ground-truth mask. A row's image may
            also be a non-empty list/tuple of images (TRL's ``images`` column): its first image is used. A
            row's mask may be a LIST of instance masks (or an ``N x H x W`` array): the instances of a
            multi-object target (their union is the target; ``[]`` is an empty target).
        ignore_key: an optional dataset column (default "ignore"; absent: no ignore regions; None: never read,
            for a dataset whose "ignore" column means something else) holding per row None or a mask of ignore
            pixels (ReasonSeg's "ignore" polygons) at the image's size. Those pixels
            count in neither the intersection nor the union of the mask rewards, and are no target pixels for
            the box and point rewards: the rule ``samr1 eval`` applies (:func:`samr1.metrics.sample_counts`).
        require_points: passed to :func:`samr1.answer.parse_answer` (default: an answer needs points).
        box_iou_threshold, box_l1_threshold, point_threshold: Seg-Zero's 0.5, 10 px, 100 px (the point
            threshold defaults to the preset's: VisionReasoner's is 30 px).
        gt_rule: how the ground truth's box and points reach the model frame: "published" (default: computed
            on the original mask, each coordinate scaled as ``int(v * 840 / W + 0.5)``) or "resize".
        mask_match: "visionreasoner" only: "union" (default) or "matched" (see :mod:`samr1.rewards.visionreasoner`).
        gt_points: how many reference points to derive from a mask for "point_dist" (Seg-Zero: 2).
        frame: pixel frame of the box and point rewards. "model" (default, Seg-Zero's): the answer's
            model-frame numbers as written (corners sorted, not clipped) against the ground truth in that frame
            (``gt_rule``), so 10 px and 100 px are model-frame pixels and the reward does not depend on the
            image's size. "original" (preset "samr1" only):
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

    An empty ground-truth mask is a valid row ("no target"): the answer ``[]`` ("no object", an empty
    mask) earns every accuracy component in full there and 0 on a non-empty target; each preset module
    states its rule. The mask IoU of SAM's (empty) mask with an empty ground truth is 1.

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
        if config is not None and "preset" in options and "components" not in options:
            options = {**options, "components": None}  # another preset: its own components unless named
        cfg = self.config = with_overrides(SamR1RewardConfig, config, options, "SamR1Reward")
        if engine is None and ENGINE_COMPONENTS.intersection(cfg.components):
            raise ValueError(f"components {sorted(ENGINE_COMPONENTS.intersection(cfg.components))} need SAM: pass "
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
        self._gt_memo = MaskMemo(4096)
        self._preset = PRESETS[cfg.preset]

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
        needs_gt = bool(GT_COMPONENTS.intersection(self.components))
        images = self._column(kwargs, self.image_key, n, needs_gt) if needs_gt else None
        masks = self._column(kwargs, self.mask_key, n, needs_gt) if needs_gt else None
        ignores = self._column(kwargs, self.ignore_key, n, False) if needs_gt and self.ignore_key else None
        key = self._key(completions, images, masks, ignores)
        if self._last is not None and self._same(self._last.key, key):
            return self._last
        batch = self._compute(list(completions), None if images is None else list(images),
                              None if masks is None else list(masks), key,
                              None if ignores is None else list(ignores))
        self._last = batch
        self._log(batch, kwargs.get("log_metric"), kwargs.get("log_extra"))
        return batch

    def _load_rows(self, images: list[Any], masks: list[Any], codes: list[list[str]], ignores: list[Any] | None):
        """Load each distinct image/mask once; returns per-row (image array | None, union mask | None,
        instance masks | None, ignore region | None)."""
        img_cache: dict[Any, Any] = {}
        mask_cache: dict[Any, Any] = {}
        ign_cache: dict[Any, Any] = {}
        cut_cache: dict[Any, Any] = {}  # (mask key, ignore key) -> the target without its ignore pixels, once
        arrs: list[np.ndarray | None] = []
        gts: list[np.ndarray | None] = []
        insts: list[list[np.ndarray] | None] = []
        igns: list[np.ndarray | None] = []
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
                mask_cache[mk] = (_load_or_error(partial(load_instances, expected_size=size), m, self.mask_key,
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
            if a is not None and g is not None and g[0] is not None and g[0].shape != a.shape[:2]:
                self._warn(i, "mask_size_mismatch", f"{self.mask_key} (row {i}): mask is {g[0].shape[0]}x"
                           f"{g[0].shape[1]} but {self.image_key} is {a.shape[0]}x{a.shape[1]} (H x W); the mask "
                           "must be at the original image size")
                codes[i].append("mask_size_mismatch")
                g = None
            x = None if ignores is None else ignores[i]
            ign = None
            if x is not None and a is not None and g is not None:
                xk = (x if isinstance(x, str) else id(x), size)
                if xk not in ign_cache:
                    ign_cache[xk] = (_load_or_error(partial(load_mask, expected_size=size), x, self.ignore_key,
                                                    f"row {i}"), i)
                ign, x_row = ign_cache[xk]
                if isinstance(ign, Exception) or ign.shape != a.shape[:2]:
                    code = "bad_mask" if isinstance(ign, Exception) and not isinstance(ign, MaskSizeError) \
                        else "mask_size_mismatch"
                    detail = (_same_as(ign, x_row, i, self.ignore_key) if isinstance(ign, Exception) else
                              f"{self.ignore_key} (row {i}): ignore mask is {ign.shape[0]}x{ign.shape[1]} but "
                              f"{self.image_key} is {a.shape[0]}x{a.shape[1]} (H x W)")
                    self._warn(i, code, detail)
                    codes[i].append(code)
                    g, ign = None, None
                elif not ign.any():
                    ign = None
            union, inst = (None, None) if g is None else g
            if g is not None and union is None:  # [] (no instance): an empty target of the image's size
                union = None if a is None else np.zeros(a.shape[:2], dtype=bool)
            if ign is not None and union is not None:  # ignore pixels are no target pixels (eval's rule)
                ck = (mk, xk)
                if ck not in cut_cache:  # one object per (mask, region): the G rows of a prompt share it
                    kept = None if inst is None else [t & ~ign for t in inst]
                    cut_cache[ck] = (union & ~ign, None if kept is None else [t for t in kept if t.any()])
                union, inst = cut_cache[ck]
            arrs.append(a)
            gts.append(union)
            insts.append(inst)
            igns.append(ign)
        return arrs, gts, insts, igns

    def _warn(self, i: int, code: str, detail: Any) -> None:
        # Rate-limited: a dataset with many bad rows must not flood the training log; stats keep counting.
        self._warnings_left -= 1
        if self._warnings_left < 0:
            return
        tail = "" if self._warnings_left else " (further row warnings of this reward are suppressed; see .stats)"
        warnings.warn(f"SamR1Reward: {detail} [{code}]; the mask-based rewards of row {i} are 0{tail}",
                      RuntimeWarning, stacklevel=4)

    def _compute(self, completions: list[Any], images: list[Any] | None, masks: list[Any] | None, key: tuple,
                 ignores: list[Any] | None = None) -> _Batch:
        n = len(completions)
        codes: list[list[str]] = [[] for _ in range(n)]
        if images is not None and masks is not None:
            arrs, gts, insts, igns = self._load_rows(images, masks, codes, ignores)
        else:
            arrs, gts, insts, igns = [None] * n, [None] * n, [None] * n, [None] * n

        answers: list[Answer] = []
        texts: list[str | None] = []
        for i, c in enumerate(completions):
            text = completion_text(c)
            texts.append(text)
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

        scorable = [i for i in range(n) if answers[i].ok and arrs[i] is not None and gts[i] is not None]
        inputs = BatchInputs(texts=texts, answers=answers, images=arrs, gts=gts, scorable=scorable, ious=[0.0] * n,
                             codes=codes, instances=insts, ignores=igns)
        mask_values: dict[str, list[float]] = {}
        engine_comps = ENGINE_COMPONENTS.intersection(self.components)
        if engine_comps and scorable:
            ign = igns if any(x is not None for x in igns) else None
            rows = drop_refused_rows(self.engine, scorable, arrs, gts, answers, codes, self._warn, ign)
            if self.mask_match == "matched":
                self.stats["engine_calls"] += 1
                tiered, plain = matched_mask_values(self.engine, inputs, rows, self.tiers)
                mask_values = {"iou": tiered, "mask_iou": plain}
                inputs.ious = plain
            else:
                inputs.ious = engine_ious(self.engine, rows, arrs, gts, answers, codes, self._warn, self.stats, ign)
        rewards: dict[str, list[float]] = {}
        own = self._preset.rewards(inputs, self.components, self.config, self._gt_memo)
        for comp in self.components:
            if comp in ENGINE_COMPONENTS:
                rewards[comp] = mask_values.get(comp) or mask_rewards(comp, inputs.ious, self.tiers)
            else:
                rewards[comp] = own[comp]
        self._count(answers, codes, inputs.ious)
        return _Batch(key, rewards, answers, inputs.ious, codes)

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
