"""Is there anything for GRPO to follow? Per-step group statistics and the warnings they call for.

GRPO's advantage is a completion's reward minus its group's mean, over the group's spread: a group whose G
completions all earn the same reward teaches nothing, and a step where no completion parses earns the same
zero everywhere. :class:`GroupSignal` measures, for each reward step, the fraction of groups with zero reward
spread, the parse rate, and the fraction of completions whose parsed answer (box and points, after the frame
conversion) repeats another's in its group exactly (a collapsed sampler makes identical answers); it warns
once, naming the likely causes, when most groups carry no signal or almost nothing parses for many steps.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

__all__ = ["GroupSignal", "group_stats"]

ZERO_SPREAD_WARNING = (
    "samr1 train: in {frac:.0%} of the groups over the last {steps} steps every completion earned the same reward, "
    "so GRPO's advantages are zero and the policy does not move. Likely causes: no answer parses (see "
    "samr1/parse_failure_rate; warm-start the policy on the answer format, check --prompt matches what it was "
    "trained with, raise --max-completion-length if answers are cut), only binary components (add mask_iou for "
    "a continuous reward), a temperature too low or --num-generations too small for the group to differ.")
NO_PARSE_WARNING = (
    "samr1 train: {frac:.0%} of the completions over the last {steps} steps did not parse as an answer, so their "
    "reward is 0. Likely causes: a policy that was never taught the answer format (warm-start it: "
    "samr1.train.warmstart), a --prompt different from the one it was trained with, --max-completion-length "
    "cutting the answer, or an answer frame the parser does not expect (--policy-image-size).")


def group_stats(totals: Sequence[float], row_ids: Sequence[Any] | None, answers: Sequence[Any] | None
                ) -> dict[str, float]:
    """Zero-spread group fraction and exact-repeat answer fraction of one step.

    Args:
        totals: each completion's summed reward.
        row_ids: each completion's prompt id (its group); None treats the batch as one group.
        answers: parsed answers (``ok``, ``bbox``, ``points`` in original pixels) or None.
    """
    groups: dict[Any, list[int]] = {}
    for i in range(len(totals)):
        groups.setdefault(row_ids[i] if row_ids is not None else 0, []).append(i)
    zero = sum(1 for idx in groups.values() if len(idx) > 1 and max(totals[i] for i in idx) - min(totals[i] for i in idx)
               <= 1e-9)
    multi = sum(1 for idx in groups.values() if len(idx) > 1)
    dup = 0
    if answers is not None:
        for idx in groups.values():
            keys = [(tuple(answers[i].bbox), tuple(map(tuple, answers[i].points))) for i in idx
                    if getattr(answers[i], "ok", False) and answers[i].bbox is not None]
            seen: dict[Any, int] = {}
            for k in keys:
                seen[k] = seen.get(k, 0) + 1
            dup += sum(c for c in seen.values() if c > 1)
    n = max(1, len(totals))
    return {"zero_spread_frac": zero / multi if multi else 0.0, "dup_answer_frac": dup / n}


class GroupSignal:
    """Rolling group statistics with a warning when GRPO has nothing to follow for ``window`` steps.

    ``update(...)`` returns this step's figures (logged by the reward hub as ``samr1/zero_spread_frac``,
    ``samr1/dup_answer_frac``); ``warnings`` holds the messages issued (each at most once per run).
    """

    def __init__(self, window: int = 20, zero_spread_threshold: float = 0.8, parse_threshold: float = 0.02):
        self.window = int(window)
        self.zero_spread_threshold = float(zero_spread_threshold)
        self.parse_threshold = float(parse_threshold)
        self._zero: list[float] = []
        self._parse: list[float] = []
        self.warnings: list[str] = []
        self._warned: set[str] = set()  # kinds already warned about (each at most once per run)

    def update(self, totals: Sequence[float], row_ids: Sequence[Any] | None, answers: Sequence[Any] | None,
               parse_rate: float) -> dict[str, float]:
        stats = group_stats(totals, row_ids, answers)
        self._zero = (self._zero + [stats["zero_spread_frac"]])[-self.window:]
        self._parse = (self._parse + [parse_rate])[-self.window:]
        if len(self._zero) == self.window:
            zero = sum(self._zero) / self.window
            parse = sum(self._parse) / self.window
            if parse <= self.parse_threshold:
                self._warn("no_parse", NO_PARSE_WARNING.format(frac=1 - parse, steps=self.window))
            elif zero >= self.zero_spread_threshold:
                self._warn("zero_spread", ZERO_SPREAD_WARNING.format(frac=zero, steps=self.window))
        return stats

    def _warn(self, kind: str, message: str) -> None:
        if kind in self._warned:
            return
        self._warned.add(kind)
        self.warnings.append(message)
        warnings.warn(message, UserWarning, stacklevel=3)
