"""Image and mask inputs: everything the API accepts, normalised to numpy.

Everywhere an image is taken, a PIL image, an ``H x W x 3`` uint8 array (RGB) or a path works; a mask may
be a bool/uint8/int array (nonzero = object), a PIL image, a COCO RLE dict (``{"size": [H, W], "counts":
...}``, compressed string or uncompressed list) or a path to a PNG. Bad input raises
:class:`InputError`, whose message names the file (when there is one) and the field.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError


class InputError(ValueError):
    """An image, mask or dataset row the user gave is malformed; the message says which and why."""


def _where(field: str, source: str | None) -> str:
    return f"{field} ({source})" if source else field


def load_image(image: Any, *, field: str = "image", source: str | None = None) -> np.ndarray:
    """Return ``image`` as a C-contiguous ``H x W x 3`` uint8 RGB array.

    Accepts a PIL image (any mode; converted to RGB), an ``H x W x 3`` uint8 array, an ``H x W`` uint8
    array (grey, replicated), an ``H x W x 4`` array (alpha dropped) or a path. ``field``/``source`` only
    shape the error message (e.g. ``field="image", source="train.jsonl:12"``).
    """
    if isinstance(image, (str, os.PathLike)):
        path = os.fspath(image)
        try:
            with Image.open(path) as im:
                return np.ascontiguousarray(np.asarray(im.convert("RGB")))
        except FileNotFoundError:
            raise InputError(f"{_where(field, source)}: image file not found: {path}") from None
        except (UnidentifiedImageError, OSError) as exc:
            raise InputError(f"{_where(field, source)}: cannot read image file {path}: {exc}") from None
    if isinstance(image, Image.Image):
        return np.ascontiguousarray(np.asarray(image.convert("RGB")))
    if hasattr(image, "detach") and hasattr(image, "cpu"):  # a torch tensor: accept HWC uint8 only
        image = image.detach().cpu().numpy()
    if not isinstance(image, np.ndarray):
        raise InputError(
            f"{_where(field, source)}: expected a PIL image, an HxWx3 uint8 array or a path, got {type(image).__name__}"
        )
    arr = image
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise InputError(f"{_where(field, source)}: expected shape HxWx3, got {tuple(image.shape)}")
    if arr.shape[2] == 4:
        arr = arr[:, :, :3]
    if arr.dtype != np.uint8:
        raise InputError(
            f"{_where(field, source)}: expected dtype uint8 (0..255 RGB), got {arr.dtype}; "
            "convert with (x * 255).clip(0, 255).astype(np.uint8) if it is a 0..1 float image"
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InputError(f"{_where(field, source)}: image is empty, shape {tuple(image.shape)}")
    return np.ascontiguousarray(arr)


def load_mask(mask: Any, *, field: str = "mask", source: str | None = None) -> np.ndarray:
    """Return ``mask`` as an ``H x W`` bool array (True = object).

    Accepts bool/integer/float arrays (nonzero = object), PIL images (any mode; nonzero in any channel),
    COCO RLE dicts and paths to image files.
    """
    if isinstance(mask, (str, os.PathLike)):
        path = os.fspath(mask)
        try:
            with Image.open(path) as im:
                arr = np.asarray(im)
        except FileNotFoundError:
            raise InputError(f"{_where(field, source)}: mask file not found: {path}") from None
        except (UnidentifiedImageError, OSError) as exc:
            raise InputError(f"{_where(field, source)}: cannot read mask file {path}: {exc}") from None
        return _array_to_mask(arr, field, source or path)
    if isinstance(mask, dict):
        return rle_decode(mask, field=field, source=source)
    if isinstance(mask, Image.Image):
        return _array_to_mask(np.asarray(mask), field, source)
    if hasattr(mask, "detach") and hasattr(mask, "cpu"):
        mask = mask.detach().cpu().numpy()
    if isinstance(mask, np.ndarray):
        return _array_to_mask(mask, field, source)
    raise InputError(
        f"{_where(field, source)}: expected a bool/uint8 array, a PIL image, a COCO RLE dict or a path, "
        f"got {type(mask).__name__}"
    )


def _array_to_mask(arr: np.ndarray, field: str, source: str | None) -> np.ndarray:
    if arr.ndim == 3:  # a colour PNG: object where any colour channel is nonzero
        if arr.shape[2] in (2, 4):
            arr = arr[..., :-1]  # LA / RGBA: alpha is opacity, not object (an opaque background is not object)
        arr = arr.any(axis=2)
    if arr.ndim != 2:
        raise InputError(f"{_where(field, source)}: expected an HxW mask, got shape {tuple(arr.shape)}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InputError(f"{_where(field, source)}: mask is empty, shape {tuple(arr.shape)}")
    if arr.dtype == bool:
        return np.ascontiguousarray(arr)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise InputError(f"{_where(field, source)}: mask dtype {arr.dtype} is not bool or numeric")
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        raise InputError(f"{_where(field, source)}: mask holds NaN or infinite values")
    return np.ascontiguousarray(arr != 0)


# --- COCO run-length encoding (column-major, counts alternate background/foreground from background) ---


def _decode_counts_string(s: str | bytes, field: str, source: str | None) -> list[int]:
    """COCO's compressed counts: LEB128-like 5-bit groups offset by 48, deltas from the count two back."""
    if isinstance(s, bytes):
        try:
            s = s.decode("ascii", errors="strict")
        except UnicodeDecodeError:
            raise InputError(f"{_where(field, source)}: RLE counts must be ASCII") from None
    counts: list[int] = []
    p = 0
    n = len(s)
    while p < n:
        x = 0
        k = 0
        more = True
        while more:
            if p >= n:
                raise InputError(f"{_where(field, source)}: truncated RLE counts string")
            c = ord(s[p]) - 48
            if c < 0 or c > 63:
                raise InputError(f"{_where(field, source)}: invalid character {s[p]!r} in RLE counts")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def _encode_counts_string(counts: Sequence[int]) -> str:
    out = []
    for i, c in enumerate(counts):
        x = int(c)
        if i > 2:
            x -= int(counts[i - 2])
        more = True
        while more:
            ch = x & 0x1F
            x >>= 5
            more = not ((ch & 0x10 == 0 and x == 0) or (ch & 0x10 != 0 and x == -1))
            if more:
                ch |= 0x20
            out.append(chr(ch + 48))
    return "".join(out)


def rle_decode(rle: dict, *, field: str = "mask", source: str | None = None) -> np.ndarray:
    """Decode a COCO RLE dict into an ``H x W`` bool array."""
    try:
        h, w = (int(v) for v in rle["size"])
        counts = rle["counts"]
    except (KeyError, TypeError, ValueError):
        raise InputError(f"{_where(field, source)}: an RLE mask needs 'size': [H, W] and 'counts'") from None
    if h <= 0 or w <= 0:
        raise InputError(f"{_where(field, source)}: RLE size must be positive, got {[h, w]}")
    if isinstance(counts, (str, bytes)):
        counts = _decode_counts_string(counts, field, source)
    try:
        counts = np.asarray(counts, dtype=np.int64)
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"{_where(field, source)}: RLE counts must be a string or a list of integers") from None
    if counts.ndim != 1 or (counts < 0).any():
        raise InputError(f"{_where(field, source)}: RLE counts must be non-negative integers")
    # sum in Python ints: an int64 sum of huge counts can wrap around to H*W and pass a numpy check
    total = sum(int(c) for c in counts)
    if total != h * w:
        raise InputError(f"{_where(field, source)}: RLE counts sum to {total}, expected H*W = {h * w}")
    values = np.zeros(len(counts), dtype=bool)
    values[1::2] = True
    flat = np.repeat(values, counts)
    return np.ascontiguousarray(flat.reshape(w, h).T)


def rle_encode(mask: np.ndarray, compressed: bool = True) -> dict:
    """Encode an ``H x W`` mask as a COCO RLE dict (compressed counts string by default)."""
    m = np.asarray(mask, dtype=bool)
    h, w = m.shape
    flat = m.T.reshape(-1)
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        counts = [0, *counts]
    counts_out: Any = _encode_counts_string(counts) if compressed else [int(c) for c in counts]
    return {"size": [h, w], "counts": counts_out}
