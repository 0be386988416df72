"""Parse a policy completion into a SAM prompt: box + foreground points in ORIGINAL image pixels.

This is the one parser of the project: the answer-format reward, the IoU reward, evaluation and the CLI all
call :func:`parse_answer`, so "the answer is well formed" means the same thing everywhere.

The policy writes ``<think>...</think><answer>{...}</answer>`` about an image it saw resized to the
*model frame* (840 x 840 by default). Accepted answer payloads (all coordinates in model-frame pixels)::

    {"bbox": [x1, y1, x2, y2], "points_1": [x, y], "points_2": [x, y]}   # Seg-Zero
    {"bbox": [x1, y1, x2, y2], "points": [[x, y], [x, y], ...]}
    {"bbox_2d": [x1, y1, x2, y2], "point_2d": [x, y]}                     # VisionReasoner (one point
    {"bbox_2d": [x1, y1, x2, y2], "point_2d": [[x, y], ...]}              #  or a list of points)
    [{"bbox_2d": ..., "point_2d": ...}, ...]                              # VisionReasoner: several objects

Boxes are Seg-Zero's inclusive pixel indices (``x1 == x2`` is a valid one-pixel-wide box; see
:mod:`samr1.geometry`). A list of several objects is kept whole by default (``multi_object="union"``: SAM
segments every object and the masks are OR-ed, as VisionReasoner evaluates); ``multi_object="first"`` keeps
the first object only. See :func:`parse_answer` for the exact rules, :data:`REASON_CODES` for the failure
codes.
"""

from __future__ import annotations

import ast
import json
import math
import re
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "Answer",
    "AnswerObject",
    "parse_answer",
    "extract_answer_block",
    "extract_think",
    "REASON_CODES",
    "MAX_ANSWER_CHARS",
    "MAX_DEPTH",
    "MAX_POINTS",
    "MAX_OBJECTS",
    "MULTI_OBJECT_MODES",
    "DEFAULT_MODEL_SIZE",
]

DEFAULT_MODEL_SIZE: tuple[int, int] = (840, 840)
"""(h, w) of the frame the policy sees (Seg-Zero / SAM-R1 resize every image to 840 x 840)."""

MAX_ANSWER_CHARS = 8192
"""Longest ``<answer>`` payload parsed (characters, after the tags). A Seg-Zero answer is ~80 characters;
64 points with 4-digit decimals fit in ~2,000. Longer payloads are rejected (``answer_too_long``) without
being parsed, which bounds the parse cost whatever the policy writes."""

MAX_DEPTH = 8
"""Deepest bracket nesting (``[``, ``{``, ``(`` counted, strings included) allowed before parsing. The
deepest legitimate form, ``[{"points": [[x, y]]}]``, has depth 4. Checked before ``json``/``ast`` see the
text, so their recursion limits are never reached."""

MAX_POINTS = 64
"""Most points accepted. More is REJECTED (``too_many_points``), not truncated: a policy that emits
hundreds of points is degenerate and should not be rewarded, and SAM's decode cost grows with them."""

MAX_OBJECTS = 16
"""Most objects accepted in a list answer (VisionReasoner's form). More is rejected (``too_many_objects``):
each object costs one SAM prompt. Points of all objects together are bounded by :data:`MAX_POINTS`."""

MULTI_OBJECT_MODES: tuple[str, ...] = ("union", "first")
"""How a list of several objects is read: "union" (every object kept; SAM masks OR-ed) or "first"."""

REASON_CODES: tuple[str, ...] = (
    "not_text",  # input is not a str
    "no_answer_block",  # no complete <answer>...</answer>
    "answer_too_long",  # payload longer than MAX_ANSWER_CHARS
    "empty_answer",  # payload empty (after whitespace and a code fence are removed)
    "too_deep",  # bracket nesting deeper than MAX_DEPTH
    "invalid_json",  # neither JSON, JSON with trailing commas, nor a Python literal
    "not_object",  # not a dict, or a list whose first element is not a dict
    "missing_bbox",  # no "bbox" / "bbox_2d" key
    "bad_bbox",  # box is not a list of exactly 4 numbers (bools and strings are not numbers)
    "non_finite",  # a NaN / Infinity / overflowing coordinate
    "zero_area_box",  # the box covers no pixel of the frame (it lies entirely outside it)
    "missing_points",  # no point given (and require_points=True)
    "bad_points",  # a point is not a list of exactly 2 numbers
    "too_many_points",  # more than MAX_POINTS points (all objects together)
    "too_many_objects",  # a list of more than MAX_OBJECTS objects (multi_object="union")
)
"""Every failure code :func:`parse_answer` can put first in ``Answer.reason`` (stable; for counters)."""

_FENCE = "```"
_STEP = np.zeros(256, dtype=np.int32)  # byte -> nesting step
_STEP[[ord(c) for c in "[{("]] = 1
_STEP[[ord(c) for c in "]})"]] = -1
_PY_TO_JSON = str.maketrans({"'": '"', "(": "[", ")": "]"})
# ",  ]" -> "]": trailing commas. Linear: each comma's whitespace run is scanned once.
_TRAILING_COMMA = re.compile(r",\s*([\]}])")
_OPERATORS = "+-*/%@<>&|^~"
_MAX_OPERATORS = 4 * MAX_POINTS + 16  # a sign and an exponent sign per coordinate, with room to spare
# ast.literal_eval costs ~0.5 us per character (3.8 ms on an 8k-character tuple in bench_parse); only
# payloads that neither JSON nor the quote/paren translation could read get there, and they are short.
_MAX_LITERAL_CHARS = 2048
_NUMBER_TYPES = (int, float)


@dataclass(frozen=True)
class AnswerObject:
    """One object of an answer: a box and its points, in both frames.

    Attributes:
        bbox: ``(x1, y1, x2, y2)``, ORIGINAL image pixels, sorted and clipped to ``[0, W] x [0, H]`` (the SAM
            prompt).
        points: ``[(x, y), ...]``, ORIGINAL image pixels, clipped to ``[0, W-1] x [0, H-1]`` (SAM prompts).
        labels: one SAM label per point, all 1 (foreground).
        model_bbox: the box as the policy wrote it, in MODEL-frame pixels, corners sorted, NOT clipped
            (Seg-Zero's rewards compare the numbers the policy wrote; inclusive pixel indices).
        model_points: the points as written, MODEL-frame pixels, in the order written, not clipped.
    """

    bbox: tuple[float, float, float, float]
    points: list[tuple[float, float]] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    model_bbox: tuple[float, float, float, float] | None = None
    model_points: list[tuple[float, float]] = field(default_factory=list)


@dataclass(frozen=True)
class Answer:
    """A parsed completion.

    Attributes:
        ok: True when ``bbox`` (and, with ``require_points``, at least one point) is usable as a SAM prompt,
            or when the answer is ``[]`` ("no object", :attr:`no_object`).
        reason: None when ok, else ``"<code>"`` or ``"<code>: <detail>"`` with ``<code>`` in
            :data:`REASON_CODES`; :attr:`code` gives the code alone.
        think: the text inside the first ``<think>...</think>`` (stripped), None when absent.
        bbox: ``(x1, y1, x2, y2)`` floats, XYXY, ORIGINAL image pixels, sorted (x1 <= x2, y1 <= y2; equal for
            a one-pixel-wide box) and clipped to ``[0, W] x [0, H]``; None when not ok. For a multi-object
            answer: the FIRST object's box.
        points: ``[(x, y), ...]`` floats, ORIGINAL image pixels, clipped to ``[0, W-1] x [0, H-1]`` (pixel
            indices: SAM treats a point as the centre of the pixel it names); empty when not ok. For a
            multi-object answer: the first object's points.
        labels: one SAM label per point, all 1 (foreground).
        model_bbox, model_points: the first object's box (corners sorted, not clipped) and points (as
            written), in MODEL-frame pixels: what Seg-Zero's ablation rewards measure.
        objects: every object of the answer (:class:`AnswerObject`), the first one first; one for a dict
            answer or with ``multi_object="first"``; empty when not ok, and for the answer ``[]`` ("no
            object", :attr:`no_object`: ok, ``bbox`` None, an empty mask). Several objects mean the answer's
            mask is the union of SAM's mask per object (see :meth:`per_object`).
        syntax: how the payload parsed: "json", "json_trailing_comma" or "python_literal" (None on failure).
        fenced: the payload was wrapped in a ```` ``` ```` code fence.
        raw: the decoded payload object (dict or list), for debugging; not part of equality.
        image_size: ``(H, W)`` of the image whose ORIGINAL pixels ``bbox`` and ``points`` are in (what
            :func:`parse_answer` was given; the model frame when it was given None); None for an answer
            built by hand. The engines refuse an answer whose ``image_size`` is not its image's (e.g. PIL's
            ``image.size``, which is ``(W, H)``, passed as the size). Not part of equality.
    """

    ok: bool
    reason: str | None = None
    think: str | None = None
    bbox: tuple[float, float, float, float] | None = None
    points: list[tuple[float, float]] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    syntax: str | None = None
    fenced: bool = False
    raw: Any = field(default=None, compare=False, repr=False)
    model_bbox: tuple[float, float, float, float] | None = None
    model_points: list[tuple[float, float]] = field(default_factory=list)
    objects: tuple[AnswerObject, ...] = ()
    image_size: tuple[int, int] | None = field(default=None, compare=False)

    @property
    def no_object(self) -> bool:
        """True for a parsed "no object" answer (an empty list ``[]``): the predicted mask is empty. An ok
        answer built by hand with points and no box is a prompt, not "no object"."""
        return self.ok and not self.objects and self.bbox is None and not self.points

    @property
    def code(self) -> str | None:
        """The reason code alone (an element of :data:`REASON_CODES`), None when ok."""
        if self.reason is None:
            return None
        return self.reason.split(":", 1)[0]

    def per_object(self) -> list[Answer]:
        """One ok single-object :class:`Answer` per object (what SAM segments one by one before the masks are
        OR-ed); ``[self]`` when the answer has one object, ``[]`` when it is not ok or names no object."""
        if not self.ok or self.no_object:
            return []
        if len(self.objects) <= 1:
            return [self]
        return [Answer(ok=True, think=self.think, bbox=o.bbox, points=list(o.points), labels=list(o.labels),
                       syntax=self.syntax, fenced=self.fenced, model_bbox=o.model_bbox,
                       model_points=list(o.model_points), objects=(o,), image_size=self.image_size)
                for o in self.objects]


def _fail(code: str, detail: str | None = None, think: str | None = None, syntax: str | None = None,
          fenced: bool = False, raw: Any = None) -> Answer:
    return Answer(ok=False, reason=code if detail is None else f"{code}: {detail}", think=think, syntax=syntax,
                  fenced=fenced, raw=raw)


def extract_think(text: str) -> str | None:
    """Content of the first ``<think>...</think>`` (stripped), or None. Linear (``str.find``)."""
    a = text.find("<think>")
    if a < 0:
        return None
    a += len("<think>")
    b = text.find("</think>", a)
    if b < 0:
        return None
    return text[a:b].strip()


def extract_answer_block(text: str) -> str | None:
    """Raw content of the LAST complete ``<answer>...</answer>`` block, or None.

    The last ``</answer>`` is found first, then the last ``<answer>`` before it, so an unclosed trailing
    ``<answer>`` (a truncated generation) does not hide an earlier complete block. Tags are case-sensitive.
    Linear: two ``str.rfind`` calls.
    """
    end = text.rfind("</answer>")
    if end < 0:
        return None
    start = text.rfind("<answer>", 0, end)
    if start < 0:
        return None
    return text[start + len("<answer>"):end]


def _strip_fence(payload: str) -> tuple[str, bool]:
    """Remove one surrounding Markdown code fence (```` ```json ... ``` ````); returns (inner, was_fenced)."""
    if not payload.startswith(_FENCE):
        return payload, False
    body = payload[len(_FENCE):]
    # Skip the info string ("json", "python", ...) up to the end of the line, or up to the first bracket when
    # the fence and the payload share a line (```json {"bbox": ...}```).
    nl = body.find("\n")
    first = min((i for i in (body.find("{"), body.find("[")) if i >= 0), default=-1)
    if nl >= 0 and (first < 0 or nl < first):
        body = body[nl + 1:]
    elif first >= 0:
        body = body[first:]
    else:
        body = ""
    body = body.rstrip()
    if body.endswith(_FENCE):
        body = body[: -len(_FENCE)]
    return body.strip(), True


def _max_depth(payload: str) -> int:
    """Deepest bracket nesting, counting brackets inside strings too (an upper bound; cheap, linear)."""
    openers = payload.count("[") + payload.count("{") + payload.count("(")
    if openers <= MAX_DEPTH:  # cannot be deeper than the number of opening brackets (typical answers)
        return openers
    # Running sum of +1 / -1 over the UTF-8 bytes (multi-byte characters never contain ASCII bytes;
    # surrogatepass keeps lone surrogates encodable). numpy: ~20 us for 8k brackets, where a Python
    # accumulate over re.findall took ~800 us in bench_parse's "deep nesting 8k" case.
    b = np.frombuffer(payload.encode("utf-8", "surrogatepass"), dtype=np.uint8)
    step = _STEP[b]
    return int(np.cumsum(step).max())


def _decode(payload: str) -> tuple[Any, str | None, str | None]:
    """(object, syntax, error detail). Tried in order, cheapest first:

    1. JSON;
    2. when the payload uses one quote style only, a Python-style literal translated to JSON (``'`` ->
       ``"``, ``()`` -> ``[]``): ~15 us instead of ~440 us for ``ast.literal_eval`` on a 64-point answer;
    3. 1 or 2 with trailing commas removed (``[1, 2,]``);
    4. ``ast.literal_eval`` (True/None, mixed quotes, escapes, ...), never ``eval``: it only builds
       literals. Only for payloads of at most ``_MAX_LITERAL_CHARS`` (2048) characters with at most
       ``_MAX_OPERATORS`` operator characters (a chain like ``1+1+...+1`` is no literal and made the parser
       spend ~2 ms before its recursion limit), which bounds its cost to ~1.5 ms (bench_parse).
    """
    try:
        # strict=False: raw control characters (tabs, newlines, NULs) inside strings are accepted
        return json.loads(payload, strict=False), "json", None
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError; so is a >4300-digit int
        err = f"{type(exc).__name__}: {exc}"[:120]
    pyish = not ("'" in payload and '"' in payload)  # one quote style (or none): translation is safe
    text = payload
    if pyish:
        text = payload.translate(_PY_TO_JSON)
        if text != payload:
            try:
                return json.loads(text, strict=False), "python_literal", None
            except (ValueError, RecursionError):
                pass
        else:
            pyish = False
    if "," in text:
        fixed = _TRAILING_COMMA.sub(r"\1", text)
        if fixed != text:
            try:
                return json.loads(fixed, strict=False), "python_literal" if pyish else "json_trailing_comma", None
            except (ValueError, RecursionError):
                pass
    if len(payload) <= _MAX_LITERAL_CHARS and sum(payload.count(c) for c in _OPERATORS) <= _MAX_OPERATORS:
        try:
            # The compiler warns (SyntaxWarning "invalid decimal literal" for `4a`, ...) before it fails: a
            # policy's garbled answer is a parse failure with a counted reason, not noise on stderr.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", SyntaxWarning)
                return ast.literal_eval(payload), "python_literal", None
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError, OverflowError):
            pass
    return None, None, err


def _number(v: Any) -> float | None:
    """A JSON/Python number as float; None for bools, strings, None, containers. May return inf/nan."""
    if isinstance(v, bool) or not isinstance(v, _NUMBER_TYPES):
        return None
    try:
        return float(v)
    except OverflowError:  # an int too large for a float
        return math.inf


def _coords(value: Any, n: int, what: str) -> tuple[list[float] | None, str | None, str | None]:
    """Exactly ``n`` finite numbers from a list/tuple -> (floats, None, None) or (None, code, detail)."""
    bad = "bad_bbox" if what == "bbox" else "bad_points"
    if not isinstance(value, (list, tuple)):
        return None, bad, f"{what} must be a list of {n} numbers, got {type(value).__name__}"
    if len(value) != n:
        return None, bad, f"{what} must have {n} numbers, got {len(value)}"
    out = []
    for i, v in enumerate(value):
        f = _number(v)
        if f is None:
            return None, bad, f"{what}[{i}] is {type(v).__name__}, not a number"
        if not math.isfinite(f):
            return None, "non_finite", f"{what}[{i}] is {f}"
        out.append(f)
    return out, None, None


def _is_point_like(value: Any) -> bool:
    """A single point is a list whose first element is a number (or an empty list); else a list of points."""
    return isinstance(value, (list, tuple)) and (not value or not isinstance(value[0], (list, tuple)))


def _point_values(v: Any) -> list[Any]:
    """One key's value -> raw points: ``[x, y]`` is one point, ``[[x, y], ...]`` a list, ``[]`` none."""
    if isinstance(v, (list, tuple)):
        if not v:
            return []
        return [v] if _is_point_like(v) else list(v)
    return [v]  # a scalar, string, dict...: one malformed point, reported as bad_points


def _collect_points(obj: dict) -> tuple[list[Any], str]:
    """Raw point values and the key form used. Precedence: "points" > "points_<n>" > "point_2d"."""
    if "points" in obj:
        return _point_values(obj["points"]), "points"
    numbered = [(k, v) for k, v in obj.items() if isinstance(k, str) and k.startswith("points_") and k[7:].isdigit()]
    if numbered:
        numbered.sort(key=lambda kv: (len(kv[0]), kv[0]))  # numeric order without int() on huge digit runs
        return [p for _, v in numbered for p in _point_values(v)], "points_N"
    if "point_2d" in obj:
        return _point_values(obj["point_2d"]), "point_2d"
    return [], "none"


def check_size(size: Any, name: str) -> tuple[int, int]:
    """``(h, w)`` as positive ints from a 2-sequence, or ValueError naming ``name`` and what was wrong."""
    try:
        h, w = size
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be (height, width), got {size!r}") from None
    if isinstance(h, bool) or isinstance(w, bool):
        raise ValueError(f"{name} must be (height, width) positive numbers, got {size!r}")
    try:
        hf, wf = float(h), float(w)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be (height, width) positive numbers, got {size!r}") from None
    if not (math.isfinite(hf) and math.isfinite(wf) and hf > 0 and wf > 0):
        raise ValueError(f"{name} must be (height, width) positive and finite, got {size!r}")
    return h, w


def _clip(v: float, lo: float, hi: float) -> float:
    return lo if v < lo else hi if v > hi else v


def parse_answer(text: Any, image_size: tuple[int, int] | None = None,
                 model_size: tuple[int, int] = DEFAULT_MODEL_SIZE, *, require_points: bool = True,
                 multi_object: str = "union") -> Answer:
    """Parse a completion into a box and foreground points in ORIGINAL image pixels. Never raises on input text.

    Args:
        text: the completion (a ``str``; anything else gives ``ok=False``, reason ``not_text``).
        image_size: ``(H, W)`` of the original image; None means the model frame itself (no rescaling),
            which is what the answer-format reward uses.
        model_size: ``(h, w)`` of the frame the policy saw (840 x 840 for Seg-Zero / SAM-R1).
        require_points: when True (default, Seg-Zero's answer format: a box AND points), an answer without
            points fails with ``missing_points``; False accepts box-only answers (SAM can segment from a box).
        multi_object: how a LIST of objects is read: "union" (default; every object is checked and kept in
            ``objects``, SAM's masks of the objects are OR-ed, as VisionReasoner evaluates) or "first" (the
            first object only, the others ignored unchecked).

    Raises:
        ValueError: only for a bad ``image_size`` / ``model_size`` / ``multi_object`` (a programming error,
            not policy output).

    Rules, in order:

    1. ``think`` = content of the first ``<think>...</think>``. The answer is the LAST complete
       ``<answer>...</answer>`` block (tags case-sensitive); none -> ``no_answer_block``.
    2. The payload longer than :data:`MAX_ANSWER_CHARS` -> ``answer_too_long``. Surrounding whitespace and
       one surrounding code fence (```` ```json ... ``` ````) are removed; nothing left -> ``empty_answer``.
       Prose around the JSON is NOT accepted (``invalid_json``): the payload must be one value.
    3. Bracket nesting deeper than :data:`MAX_DEPTH` -> ``too_deep`` (checked before any parser runs).
    4. Decoded as JSON (NaN/Infinity literals are read, then rejected as ``non_finite``; raw control
       characters inside strings are accepted); failing that as a Python-style literal (single quotes,
       tuples) and/or with trailing commas removed, and finally by ``ast.literal_eval`` (never ``eval``);
       else ``invalid_json``.
    5. A list is VisionReasoner's one-object-per-target form. ``multi_object="union"``: at most
       :data:`MAX_OBJECTS` objects (``too_many_objects``), EVERY element must be a valid object (rules 6-8;
       a failure's detail names ``objects[i]``) and all are kept; ``"first"``: only the first element is
       used. An object must be a dict, else ``not_object``. An empty list ``[]`` is the answer "no object":
       ``ok`` with ``no_object`` True, no box, no points, no objects (its mask is empty).
    6. Box: ``"bbox"``, else ``"bbox_2d"`` (missing -> ``missing_bbox``): exactly 4 numbers (ints/floats;
       bools, strings, None are not numbers -> ``bad_bbox``; NaN/inf/overflow -> ``non_finite``).
    7. Points: ``"points"``, else ``"points_1"``, ``"points_2"``, ... (in numeric order), else ``"point_2d"``.
       Each such value is one point ``[x, y]`` or a list of points. Each point: exactly 2 finite numbers
       (``bad_points`` / ``non_finite``). More than :data:`MAX_POINTS` (all objects together) ->
       ``too_many_points``. None given and ``require_points`` -> ``missing_points``. Other keys are ignored.
    8. In the model frame: corners sorted (x1 <= x2, y1 <= y2). Coordinates are inclusive pixel indices
       (Seg-Zero's convention), so ``x1 == x2`` is a valid one-pixel-wide box. A box that covers no pixel
       of the frame (``x2 < 0``, ``x1 > w - 1``, ``y2 < 0`` or ``y1 > h - 1``) -> ``zero_area_box``.
       ``model_bbox`` / ``model_points`` keep these sorted, unclipped values. ``ok`` and ``reason`` are
       decided in the model frame only and do NOT depend on ``image_size``.
    9. The SAM prompt: box clipped to ``[0, w] x [0, h]``, rescaled to the image (``x * W / w``, ``y * H /
       h``) and clipped again to ``[0, W] x [0, H]`` (float rounding); points rescaled and clipped to
       ``[0, W-1] x [0, H-1]`` (out-of-frame points are moved to the border, not rejected).

    Cost: two ``rfind`` scans of the text plus work bounded by :data:`MAX_ANSWER_CHARS`; see
    ``bench/bench_parse.py`` for measured times (200 kB of junk included).
    """
    mh, mw = check_size(model_size, "model_size")
    if multi_object not in MULTI_OBJECT_MODES:
        raise ValueError(f"multi_object must be one of {MULTI_OBJECT_MODES}, got {multi_object!r}")
    if image_size is None:
        ih, iw = mh, mw
    else:
        ih, iw = check_size(image_size, "image_size")
    if not isinstance(text, str):
        return _fail("not_text", f"expected str, got {type(text).__name__}")

    think = extract_think(text)
    block = extract_answer_block(text)
    if block is None:
        return _fail("no_answer_block", think=think)
    if len(block) > MAX_ANSWER_CHARS:
        return _fail("answer_too_long", f"{len(block)} > {MAX_ANSWER_CHARS} characters", think=think)
    payload, fenced = _strip_fence(block.strip())
    if not payload:
        return _fail("empty_answer", think=think, fenced=fenced)
    depth = _max_depth(payload)
    if depth > MAX_DEPTH:
        return _fail("too_deep", f"bracket depth {depth} > {MAX_DEPTH}", think=think, fenced=fenced)
    obj, syntax, err = _decode(payload)
    if syntax is None:
        return _fail("invalid_json", err, think=think, fenced=fenced)
    raw = obj
    if isinstance(obj, (list, tuple)):
        if not obj:  # "there is no such object": ok, no box, an empty mask
            return Answer(ok=True, reason=None, think=think, syntax=syntax, fenced=fenced, raw=raw,
                          image_size=(ih, iw))
        if not isinstance(obj[0], dict):
            return _fail("not_object", f"objects[0] is a {type(obj[0]).__name__}, not a dict", think, syntax, fenced, raw)
        items = list(obj) if multi_object == "union" else [obj[0]]
        if len(items) > MAX_OBJECTS:
            return _fail("too_many_objects", f"{len(items)} > {MAX_OBJECTS}", think, syntax, fenced, raw)
        listed = True
    else:
        items, listed = [obj], False

    sx, sy = float(iw) / float(mw), float(ih) / float(mh)
    objects: list[AnswerObject] = []
    n_points = 0
    for k, item in enumerate(items):
        where = f"objects[{k}]: " if listed and len(items) > 1 else ""
        got = _parse_object(item, require_points, mw, mh, iw, ih, sx, sy)
        if isinstance(got, tuple):
            code, detail = got
            return _fail(code, where + detail if where else detail, think, syntax, fenced, raw)
        n_points += len(got.points)
        if n_points > MAX_POINTS:
            return _fail("too_many_points", f"{n_points} > {MAX_POINTS}" + (" (all objects together)" if k else ""),
                         think, syntax, fenced, raw)
        objects.append(got)
    first = objects[0]
    return Answer(ok=True, reason=None, think=think, bbox=first.bbox, points=list(first.points),
                  labels=list(first.labels), syntax=syntax, fenced=fenced, raw=raw, model_bbox=first.model_bbox,
                  model_points=list(first.model_points), objects=tuple(objects), image_size=(ih, iw))


def _parse_object(obj: Any, require_points: bool, mw: int, mh: int, iw: int, ih: int, sx: float,
                  sy: float) -> AnswerObject | tuple[str, str]:
    """One answer object (rules 5-9 of :func:`parse_answer`) -> :class:`AnswerObject` or (code, detail)."""
    if not isinstance(obj, dict):
        return "not_object", f"expected a dict, got {type(obj).__name__}"
    # --- box
    if "bbox" in obj:
        box_val = obj["bbox"]
    elif "bbox_2d" in obj:
        box_val = obj["bbox_2d"]
    else:
        return "missing_bbox", "no 'bbox' or 'bbox_2d' key"
    box, code, detail = _coords(box_val, 4, "bbox")
    if box is None:
        return code, detail

    # --- points
    pvals, form = _collect_points(obj)
    if len(pvals) > MAX_POINTS:
        return "too_many_points", f"{len(pvals)} > {MAX_POINTS}"
    pts: list[list[float]] = []
    for i, pv in enumerate(pvals):
        p, code, detail = _coords(pv, 2, f"{form}[{i}]")
        if p is None:
            return code, detail
        pts.append(p)
    if require_points and not pts:
        return "missing_points", "no 'points', 'points_<n>' or 'point_2d' point"

    # --- model frame: sort; the box must cover a pixel (decides ok independently of the image size)
    x1, x2 = (box[0], box[2]) if box[0] <= box[2] else (box[2], box[0])
    y1, y2 = (box[1], box[3]) if box[1] <= box[3] else (box[3], box[1])
    if x2 < 0 or y2 < 0 or x1 > mw - 1 or y1 > mh - 1:
        return "zero_area_box", (f"box {[x1, y1, x2, y2]} covers no pixel of the {mw}x{mh} frame (inclusive "
                                 f"pixel indices 0..{mw - 1} x 0..{mh - 1})")
    model_bbox = (x1, y1, x2, y2)
    cx1, cx2 = _clip(x1, 0.0, float(mw)), _clip(x2, 0.0, float(mw))
    cy1, cy2 = _clip(y1, 0.0, float(mh)), _clip(y2, 0.0, float(mh))

    # --- original image frame (the SAM prompt)
    W, H = float(iw), float(ih)
    bbox = (_clip(cx1 * sx, 0.0, W), _clip(cy1 * sy, 0.0, H), _clip(cx2 * sx, 0.0, W), _clip(cy2 * sy, 0.0, H))
    xmax, ymax = max(W - 1.0, 0.0), max(H - 1.0, 0.0)
    points = [(_clip(px * sx, 0.0, xmax), _clip(py * sy, 0.0, ymax)) for px, py in pts]
    return AnswerObject(bbox=bbox, points=points, labels=[1] * len(points), model_bbox=model_bbox,
                        model_points=[(px, py) for px, py in pts])
