"""Datasets as manifests: JSONL files with one sample a line.

Each line::

    {"image": "images/0001.jpg", "query": "the thing to sit on", "mask": "masks/0001.png"}
    {"image": "/abs/0002.jpg", "query": "...", "mask": {"size": [H, W], "counts": "<COCO RLE>"}}

``image`` and a string ``mask`` are paths (relative paths are relative to the manifest's folder); a mask
PNG is nonzero where the object is; a dict mask is a COCO RLE (compressed string or list counts). Extra
keys are kept in :attr:`Sample.extra`. Blank lines are skipped.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from samr1.io import InputError

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
    """

    image: str
    query: str
    mask: str | dict[str, Any] | None
    line: int
    source: str
    extra: dict[str, Any] = field(default_factory=dict)


def _check_rle(mask: dict[str, Any], where: str) -> None:
    size = mask.get("size")
    if (not isinstance(size, (list, tuple)) or len(size) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)):
        raise InputError(f"{where}: field 'mask': an RLE mask needs 'size': [H, W] with two positive integers, "
                         f"got {size!r}")
    counts = mask.get("counts")
    if isinstance(counts, str):
        return
    if isinstance(counts, list) and all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts):
        return
    raise InputError(f"{where}: field 'mask': RLE 'counts' must be a compressed string or a list of "
                     f"non-negative integers, got {type(counts).__name__}")


def read_manifest(path: str | os.PathLike, *, check_files: bool = True, require_mask: bool = True) -> list[Sample]:
    """Read a JSONL dataset manifest into :class:`Sample` rows (paths resolved against the manifest's folder).

    Args:
        path: the ``.jsonl`` file.
        check_files: verify that every image (and mask path) exists, so a typo fails here, up front, and not
            hours into training.
        require_mask: every row must have a mask (training, evaluation); False allows rows without one
            (``samr1 embed``, inference).

    Raises:
        InputError: the file is missing, or a row is malformed; the message names the file, the line and the
            field, and says what was expected.
    """
    path = os.fspath(path)
    base = os.path.dirname(os.path.abspath(path))
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.readlines()
    except FileNotFoundError:
        raise InputError(f"manifest not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"manifest {path} cannot be read: {exc}") from None

    def resolve(p: str) -> str:
        return os.path.normpath(os.path.join(base, os.path.expanduser(p)))

    samples: list[Sample] = []
    for lineno, raw in enumerate(lines, start=1):
        text = raw.strip()
        if not text:
            continue
        where = f"{path}:{lineno}"
        try:
            row = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno}); each line must be one "
                             'object like {"image": ..., "query": ..., "mask": ...}') from None
        if not isinstance(row, dict):
            raise InputError(f"{where}: expected a JSON object, got {type(row).__name__}")
        image = row.get("image")
        if not isinstance(image, str) or not image:
            raise InputError(f"{where}: field 'image' must be a non-empty path string, got {image!r}")
        image = resolve(image)
        if check_files and not os.path.isfile(image):
            raise InputError(f"{where}: field 'image': file not found: {image}")
        query = row.get("query")
        if not isinstance(query, str) or not query.strip():
            raise InputError(f"{where}: field 'query' must be a non-empty string, got {query!r}")
        mask = row.get("mask")
        if mask is None:
            if require_mask:
                raise InputError(f"{where}: field 'mask' is missing; give a mask PNG path or a COCO RLE dict "
                                 '{"size": [H, W], "counts": ...}')
        elif isinstance(mask, str):
            if not mask:
                raise InputError(f"{where}: field 'mask' is an empty path")
            mask = resolve(mask)
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
