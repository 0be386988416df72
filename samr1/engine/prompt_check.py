"""The one check of an answer's SAM prompts, run before anything is encoded or decoded.

An answer from :func:`samr1.answer.parse_answer` always passes; the check is for answers built by hand (the
Python API, a custom parser) whose prompt the decoders cannot read. Without it, such an answer failed inside
the batched decode with a message that named its position among the decoded prompts rather than the
caller's index (SAM), or with an unpacking error, or not at all (SAM 2 decoded a NaN coordinate into an
empty mask). Both engines now refuse it up front with a message that names ``answers[i]`` (and
``.objects[j]`` for one object of a multi-object answer); :meth:`samr1.engine.scoring.ScoringEngine.row_errors`
reports the same message for the row, so the reward drops that row alone.

A prompt, per object (the frame is the ORIGINAL image's pixels, as the engines read it):

* ``bbox``: None, or 4 finite numbers ``(x1, y1, x2, y2)``;
* ``points``: a (possibly empty) list of 2 finite numbers each ``(x, y)``;
* ``labels``: empty or None (every point foreground), or one label per point, each 1 (foreground) or 0
  (background);
* at least a box or one point.
"""

from __future__ import annotations

import math
from typing import Any

from samr1.io import InputError

__all__ = ["prompt_error"]


def _numbers(value: Any, n: int) -> list[float] | None:
    """``value`` as ``n`` finite floats, or None when it is not that."""
    if value is None or isinstance(value, (str, bytes)):
        return None
    try:
        items = list(value)
    except TypeError:
        return None
    if len(items) != n:
        return None
    try:
        out = [float(v) for v in items]
    except (TypeError, ValueError, OverflowError):
        return None
    return out if all(math.isfinite(v) for v in out) else None


def _object_error(bbox: Any, points: Any, labels: Any, where: str) -> str | None:
    if bbox is not None and _numbers(bbox, 4) is None:
        return f"{where}.bbox must be None or [x1, y1, x2, y2] (4 finite numbers, original pixels), got {bbox!r}"
    try:
        pts = list(points or ())
    except TypeError:
        return f"{where}.points must be a list of [x, y] pairs, got {points!r}"
    for j, p in enumerate(pts):
        if _numbers(p, 2) is None:
            return f"{where}.points[{j}] must be [x, y] (2 finite numbers, original pixels), got {p!r}"
    try:
        labs = [] if labels is None else list(labels)
    except TypeError:
        return f"{where}.labels must be a list of 0/1 labels, got {labels!r}"
    if labs:
        if len(labs) != len(pts):
            return (f"{where}.labels has {len(labs)} entries but {where}.points has {len(pts)}; give one label "
                    "(1 foreground, 0 background) per point, or none for all foreground")
        for j, v in enumerate(labs):
            if isinstance(v, bool) or v not in (0, 1):
                return f"{where}.labels[{j}] = {v!r}; use 1 (foreground) or 0 (background)"
    if bbox is None and not pts:
        return f"{where}: an ok answer needs a box or at least one point (SAM has nothing to segment)"
    return None


def prompt_error(answer: Any, field: str) -> InputError | None:
    """The :class:`InputError` naming ``field`` (e.g. ``"answers[3]"``) when an answer with objects holds a
    prompt SAM cannot read, else None. Answers that are not ok, and the answer "no object", hold no prompt
    (None). A multi-object answer is checked object by object (``field.objects[j]``)."""
    from samr1.engine.scoring import n_objects

    k = n_objects(answer)
    if k == 0:
        return None
    if k == 1:
        parts = [(answer, field)]
    else:
        parts = [(o, f"{field}.objects[{j}]") for j, o in enumerate(answer.objects)]
    for part, where in parts:
        why = _object_error(getattr(part, "bbox", None), getattr(part, "points", None),
                            getattr(part, "labels", None), where)
        if why is not None:
            return InputError(why)
    return None
