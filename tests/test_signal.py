"""GroupSignal: GRPO's "nothing to follow" figures and warnings (zero-spread groups, no parse, repeats)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from samr1.answer import parse_answer
from samr1.train.signal import GroupSignal, group_stats


def _answer(box, pts):
    return parse_answer(f'<answer>{{"bbox": {list(box)}, "points_1": {list(pts[0])}, "points_2": {list(pts[1])}}}'
                        "</answer>", image_size=(100, 100), model_size=(100, 100))


def test_group_stats_match_a_direct_count():
    rng = np.random.default_rng()
    for _ in range(20):
        g, n_groups = int(rng.integers(2, 6)), int(rng.integers(1, 5))
        ids = [k for k in range(n_groups) for _ in range(g)]
        totals = [float(rng.integers(0, 3)) for _ in ids]  # few values: ties happen
        boxes = [tuple(int(v) for v in sorted(rng.integers(0, 50, 2))) for _ in ids]
        answers = [_answer((b[0], b[0], b[1] + 1, b[1] + 1), [(b[0], b[0]), (b[1], b[1])]) for b in boxes]
        st = group_stats(totals, ids, answers)
        zero = sum(1 for k in range(n_groups) if len({totals[i] for i in range(len(ids)) if ids[i] == k}) == 1)
        assert st["zero_spread_frac"] == pytest.approx(zero / n_groups)
        dup = sum(1 for i in range(len(ids)) if any(j != i and ids[j] == ids[i] and boxes[j] == boxes[i]
                                                   for j in range(len(ids))))
        assert st["dup_answer_frac"] == pytest.approx(dup / len(ids))


def test_warns_once_when_nothing_parses_and_when_groups_are_flat():
    sig = GroupSignal(window=5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(12):
            sig.update([0.0] * 4, [0, 0, 1, 1], None, parse_rate=0.0)
    assert len(sig.warnings) == 1 and "did not parse" in sig.warnings[0] and "warm-start" in sig.warnings[0]
    assert sum("did not parse" in str(w.message) for w in caught) == 1
    flat = GroupSignal(window=5)
    for _ in range(4):
        flat.update([1.0, 1.0, 2.0, 2.0], [0, 0, 1, 1], None, parse_rate=1.0)
    assert not flat.warnings  # not yet a full window
    with pytest.warns(UserWarning, match="earned the same reward"):
        flat.update([1.0, 1.0, 2.0, 2.0], [0, 0, 1, 1], None, parse_rate=1.0)
    healthy = GroupSignal(window=5)
    for _ in range(10):
        healthy.update([0.0, 1.0, 2.0, 0.5], [0, 0, 1, 1], None, parse_rate=0.9)
    assert not healthy.warnings
