"""Datasets as manifests: JSONL files with one sample a line.

Each line::

    {"image": "images/0001.jpg", "query": "the thing to sit on", "mask": "masks/0001.png"}
    {"image": "/abs/0002.jpg", "query": "...", "mask": {"size": [H, W], "counts": "<COCO RLE>"}}

``image`` and a string ``mask`` are paths; a mask PNG is nonzero where the object is; a dict mask is a COCO
RLE (compressed string or list counts). A target of several instances (VisionReasoner's multi-object rows)
is written ``"masks": [mask, mask, ...]`` instead of ``"mask"`` (each a path or an RLE dict; ``[]`` is a row
whose query names no object). Extra keys are kept in :attr:`Sample.extra`. Blank lines are
skipped; the file is UTF-8 (a byte-order mark is allowed).

Paths: a relative path is relative to the manifest's folder, an absolute path is used as is, ``~`` is
expanded and ``..`` is allowed (``../images/x.jpg`` beside a ``splits/`` folder is common), so by default a
manifest can name ANY file the process can read. A server that reads manifests from users should pass
``root=``: every image and mask path must then resolve, after following symbolic links, inside that
folder, and a row whose path escapes it is an :class:`~samr1.io.InputError` naming the file, line and
field.

Every malformed row (bad JSON, a number of thousands of digits, nesting thousands deep, bytes that are not
UTF-8, a wrong field) is an :class:`~samr1.io.InputError` whose message starts with ``<manifest>:<line>:``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from samr1.io import InputError, max_image_pixels, rle_size

__all__ = ["Sample", "read_manifest"]


# ------------------------------------------------------------------------------------- manifest reader


@dataclass(frozen=True)
class Sample:
    """One manifest row.

    Attributes:
        image: absolute path of the image file.
        query: the text query (non-empty).
        mask: absolute path of a mask image, a COCO RLE dict ``{"size": [H, W], "counts": ...}``, or None
            when the manifest was read with ``require_mask=False`` and the row has no mask.
        line: 1-based line number in the manifest (for error messages).
        source: ``"<manifest path>:<line>"``.
        extra: the row's other keys, unchanged.
        masks: the instance masks of a ``"masks"`` row (each a path or an RLE dict; ``[]``: no target), whose
            ``mask`` is then None; None for a ``"mask"`` row.
    """

    image: str
    query: str
    mask: str | dict[str, Any] | None
    line: int
    source: str
    extra: dict[str, Any] = field(default_factory=dict)
    masks: list[str | dict[str, Any]] | None = None


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_rle(mask: dict[str, Any], where: str) -> None:
    """The RLE's shape, checked without decoding it: size, pixel limit, and list counts summing to H * W."""
    h, w = rle_size(mask.get("size"), f"{where}: field 'mask'")  # the decoder's own reading of the size
    limit = max_image_pixels()
    if h * w > limit:
        raise InputError(f"{where}: field 'mask': the RLE declares {h}x{w} = {h * w} pixels, over the limit of "
                         f"{limit} (samr1.io.max_image_pixels(); SAMR1_MAX_IMAGE_PIXELS raises it)")
    counts = mask.get("counts")
    if isinstance(counts, str):
        return  # compressed: decoded (and checked) when the mask is loaded
    if isinstance(counts, list) and all(_is_int(c) and c >= 0 for c in counts):
        if sum(counts) != h * w:
            raise InputError(f"{where}: field 'mask': RLE counts sum to {sum(counts)}, expected H*W = {h * w}")
        return
    raise InputError(f"{where}: field 'mask': RLE 'counts' must be a compressed string or a list of "
                     f"non-negative integers, got {type(counts).__name__}")


_BLANK = object()


def _parse_line(raw: bytes, lineno: int, where: str) -> Any:
    """One manifest line to a JSON value (``_BLANK`` for a blank line); every failure an InputError starting
    with ``where``."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{where}: not UTF-8 text (byte {exc.start + 1} of the line); save the manifest as "
                         "UTF-8") from None
    if lineno == 1:
        text = text.removeprefix("\ufeff")
    text = text.strip()
    if not text:
        return _BLANK
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno}); each line must be one "
                         'object like {"image": ..., "query": ..., "mask": ...}') from None
    except RecursionError:
        # json recurses once per nesting level; a line nested thousands deep is hostile or broken
        raise InputError(f"{where}: not usable JSON: nested too deeply; a row is one flat object like "
                         '{"image": ..., "query": ..., "mask": ...}') from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits (Python's int-from-string limit)
        raise InputError(f"{where}: not usable JSON: {str(exc)[:200]}") from None


def read_manifest(path: str | os.PathLike, *, check_files: bool = True, require_mask: bool = True,
                  root: str | os.PathLike | None = None) -> list[Sample]:
    """Read a JSONL dataset manifest into :class:`Sample` rows (paths resolved against the manifest's folder).

    Args:
        path: the ``.jsonl`` file.
        check_files: verify that every image (and mask path) exists, so a typo fails here, up front, and not
            hours into training.
        require_mask: every row must have a mask (training, evaluation); False allows rows without one
            (``samr1 embed``, inference).
        root: confine every image and mask path to this folder (for manifests from untrusted users): a
            path that resolves outside it, after following symbolic links (``..``, an absolute path, ``~``,
            a link pointing out), is an error naming the line. The returned paths are then the resolved
            ones. None (default): any path is allowed (see the module docstring).

    Raises:
        InputError: the file is missing, or a row is malformed; the message names the file, the line and the
            field, and says what was expected.
    """
    path = os.fspath(path)
    base = os.path.dirname(os.path.abspath(path))
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise InputError(f"manifest not found: {path}") from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        raise InputError(f"manifest {path} cannot be read: {exc}") from None
    root_real = None
    if root is not None:
        root_real = os.path.realpath(os.fspath(root))
        if not os.path.isdir(root_real):
            raise InputError(f"read_manifest(root=...): {root_real} is not a folder")

    def resolve(p: str, name: str, where: str) -> str:
        if "\x00" in p:
            raise InputError(f"{where}: field '{name}': the path contains a NUL byte")
        full = os.path.normpath(os.path.join(base, os.path.expanduser(p)))
        if root_real is None:
            return full
        real = os.path.realpath(full)
        if os.path.commonpath([root_real, real]) != root_real:
            raise InputError(f"{where}: field '{name}': path {p!r} resolves to {real}, outside the allowed root "
                             f"{root_real}")
        return real

    samples: list[Sample] = []
    for lineno, raw in enumerate(data.splitlines(), start=1):
        where = f"{path}:{lineno}"
        row = _parse_line(raw, lineno, where)
        if row is _BLANK:
            continue
        if not isinstance(row, dict):
            raise InputError(f"{where}: expected a JSON object, got {type(row).__name__}")
        image = row.get("image")
        if not isinstance(image, str) or not image:
            raise InputError(f"{where}: field 'image' must be a non-empty path string, got {image!r}"[:300])
        image = resolve(image, "image", where)
        if check_files and not os.path.isfile(image):
            raise InputError(f"{where}: field 'image': file not found: {image}")
        query = row.get("query")
        if not isinstance(query, str) or not query.strip():
            raise InputError(f"{where}: field 'query' must be a non-empty string, got {query!r}"[:300])
        mask = row.get("mask")
        masks = row.get("masks")
        if masks is not None:
            if mask is not None:
                raise InputError(f"{where}: give 'mask' (one object) or 'masks' (its instances), not both")
            if not isinstance(masks, list):
                raise InputError(f"{where}: field 'masks' must be a list of mask paths / COCO RLE dicts ([] for no "
                                 f"target), got {type(masks).__name__}")
            resolved = []
            for k, m in enumerate(masks):
                if isinstance(m, str) and m:
                    m = resolve(m, f"masks[{k}]", where)
                    if check_files and not os.path.isfile(m):
                        raise InputError(f"{where}: field 'masks[{k}]': file not found: {m}")
                elif isinstance(m, dict):
                    _check_rle(m, f"{where} (masks[{k}])")
                else:
                    raise InputError(f"{where}: field 'masks[{k}]' must be a path string or a COCO RLE dict, got "
                                     f"{type(m).__name__}")
                resolved.append(m)
            extra = {k: v for k, v in row.items() if k not in ("image", "query", "masks")}
            samples.append(Sample(image, query, None, lineno, where, extra, masks=resolved))
            continue
        if mask is None:
            if require_mask:
                raise InputError(f"{where}: field 'mask' is missing; give a mask PNG path or a COCO RLE dict "
                                 '{"size": [H, W], "counts": ...} (or "masks": [...], the instances of a target)')
        elif isinstance(mask, str):
            if not mask:
                raise InputError(f"{where}: field 'mask' is an empty path")
            mask = resolve(mask, "mask", where)
            if check_files and not os.path.isfile(mask):
                raise InputError(f"{where}: field 'mask': file not found: {mask}")
        elif isinstance(mask, dict):
            _check_rle(mask, where)
        else:
            raise InputError(f"{where}: field 'mask' must be a path string or a COCO RLE dict, got "
                             f"{type(mask).__name__}")
        extra = {k: v for k, v in row.items() if k not in ("image", "query", "mask")}
        samples.append(Sample(image, query, mask, lineno, where, extra))
    return samples
