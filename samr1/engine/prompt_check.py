"""The one check of an answer's SAM prompts, run before anything is encoded or decoded.

An answer from :func:`samr1.answer.parse_answer` always passes the prompt check (and skips it: its numbers
were checked as they were parsed); the check is for answers built by hand (the Python API, a custom parser)
whose prompt the decoders cannot read. :func:`size_error` applies to every answer: one parsed for another
image size is refused. Without it, such an answer failed inside
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

__all__ = ["prompt_error", "prompt_labels", "prompt_points", "size_error"]


def prompt_points(answer: Any) -> list:
    """The points the decoders read of a single-object answer: ``answer.points`` as a list (None: none; a
    numpy array or a tensor works too, where ``points or ()`` would raise)."""
    pts = getattr(answer, "points", None)
    return [] if pts is None else list(pts)


def prompt_labels(answer: Any, n_points: int) -> list:
    """One SAM label per point: ``answer.labels`` as a list, or all 1 (foreground) when there are none."""
    lab = getattr(answer, "labels", None)
    lab = [] if lab is None else list(lab)
    return lab if lab else [1] * n_points


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


def _object_error(part: Any, where: str) -> str | None:
    """Why one object's prompt (an answer, or an :class:`samr1.answer.AnswerObject`) cannot be read, or None."""
    bbox, labels = getattr(part, "bbox", None), getattr(part, "labels", None)
    if bbox is not None:
        box = _numbers(bbox, 4)
        if box is None:
            return f"{where}.bbox must be None or [x1, y1, x2, y2] (4 finite numbers, original pixels), got {bbox!r}"
        if box[0] > box[2] or box[1] > box[3]:  # SAM reads corners 2 and 3 as top-left and bottom-right
            return (f"{where}.bbox {list(bbox)!r} has its corners reversed: SAM's box is [x1, y1, x2, y2] with "
                    "x1 <= x2 and y1 <= y2 (an [x, y, w, h] box must be converted)")
    try:
        pts = prompt_points(part)
    except TypeError:
        return f"{where}.points must be a list of [x, y] pairs, got {part.points!r}"
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

    if not hasattr(answer, "ok"):
        return InputError(f"{field}: expected a samr1.answer.Answer (parse the completion with "
                          f"samr1.answer.parse_answer(text, (H, W))), got {type(answer).__name__}")
    if _parsed(answer):  # parse_answer checked every number of every object: nothing to read again
        return None
    if n_objects(answer) == 0:
        return None
    for part, where in _parts(answer, field):
        why = _object_error(part, where)
        if why is not None:
            return InputError(why)
    return None


def _parsed(answer: Any) -> bool:
    """Whether ``answer`` came from :func:`samr1.answer.parse_answer` (only it sets ``syntax``, how the
    payload parsed, and ``image_size``): its prompts are finite, well formed, sorted and clipped to
    ``image_size`` by construction, so the per-number checks are skipped on the reward's hot path (about 10
    us an answer). A hand-built answer leaves ``syntax`` None."""
    return getattr(answer, "syntax", None) is not None and getattr(answer, "image_size", None) is not None


def _parts(answer: Any, field: str) -> list[tuple[Any, str]]:
    from samr1.engine.scoring import n_objects

    if n_objects(answer) > 1:
        return [(o, f"{field}.objects[{j}]") for j, o in enumerate(answer.objects)]
    return [(answer, field)]


def size_error(answer: Any, field: str, size: tuple[int, int], image_field: str | None = None) -> InputError | None:
    """The :class:`InputError` naming ``field`` when an answer (whose prompts passed :func:`prompt_error`) does
    not belong to an ``H x W`` = ``size`` image, else None:

    * it was parsed for another size (``Answer.image_size``; PIL's ``image.size`` is ``(W, H)``, and a
      ``(W, H)`` size gives boxes that look plausible but are stretched);
    * a box corner or a point lies outside ``[0, W] x [0, H]`` (model-frame numbers given as original
      pixels; :func:`samr1.answer.parse_answer` clips what it rescales, so its answers always lie inside).
    """
    from samr1.engine.scoring import n_objects

    if n_objects(answer) == 0:
        return None
    h, w = (int(v) for v in size)
    image = image_field or "its image"
    recorded = getattr(answer, "image_size", None)
    if recorded is not None and tuple(int(v) for v in recorded) != (h, w):
        rh, rw = (int(v) for v in recorded)
        field = field.split(".objects[", 1)[0]  # the size is the whole answer's, whichever object is checked
        return InputError(f"{field} was parsed for a {rh}x{rw} image (H x W) but {image} is {h}x{w}: pass "
                          "parse_answer the image's (H, W) (PIL's image.size is (W, H))")
    if _parsed(answer):  # clipped to image_size by parse_answer: the size is all there is to compare
        return None
    for part, where in _parts(answer, field):
        coords = []
        if getattr(part, "bbox", None) is not None:
            x1, y1, x2, y2 = (float(v) for v in part.bbox)
            coords += [("bbox", x1, y1), ("bbox", x2, y2)]
        coords += [(f"points[{j}]", float(x), float(y)) for j, (x, y) in enumerate(prompt_points(part))]
        for name, x, y in coords:
            if not (0.0 <= x <= w and 0.0 <= y <= h):
                value = list(part.bbox) if name == "bbox" else [x, y]
                return InputError(f"{where}.{name} {value!r} lies outside {image} ({h}x{w}, H x W): prompts are "
                                  f"in its original pixels, x in [0, {w}] and y in [0, {h}] (parse_answer "
                                  "rescales a model-frame answer)")
    return None
