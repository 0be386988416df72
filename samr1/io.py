"""Image and mask inputs: everything the API accepts, normalised to numpy.

Everywhere an image is taken, a PIL image, an ``H x W x 3`` uint8 array (RGB) or a path works; a mask may
be a bool/uint8/int array (nonzero = object), nested lists of bools or 0/1 numbers (``H`` rows of ``W``, the
``Sequence(Sequence(bool))`` column of Hugging Face datasets), a PIL image, a COCO RLE dict (``{"size": [H,
W], "counts": ...}``, compressed string or uncompressed list) or a path to a PNG. Bad input raises
:class:`InputError`, whose message names the file (when there is one) and the field.

Rules every loader applies, so that a hostile or unusual file is either read as a person would see it or
refused by name:

- **Pixel limit.** An image, mask or RLE larger than :func:`max_image_pixels` pixels (default
  :data:`DEFAULT_MAX_IMAGE_PIXELS`, Pillow's own warning threshold; environment variable
  ``SAMR1_MAX_IMAGE_PIXELS`` or :func:`set_max_image_pixels`) is an :class:`InputError`. Files are checked
  on their header, before any pixel is decoded, so a decompression bomb (a small PNG declaring 30000 x
  30000) costs nothing; an RLE is checked on its declared size before decoding.
- **EXIF orientation** is applied (the pixels are transposed as ``PIL.ImageOps.exif_transpose`` does), so
  an image is used the way viewers and annotation tools display it; ``H x W`` are those of the upright
  image.
- **High bit depth.** 16-bit images (``uint16`` arrays, PIL modes ``I;16*``) are scaled to 8 bits over the
  full 16-bit range, ``round(v * 255 / 65535)``; PIL mode ``I`` (32-bit integers) is treated the same when
  every value lies in ``0..65535`` (older Pillow opens 16-bit PNGs as ``I``) and otherwise scaled from its
  own minimum..maximum; PIL mode ``F`` (float) is scaled from its minimum..maximum (a constant image gives
  0) and must be finite. Nothing is clipped.
"""

from __future__ import annotations

import numbers
import os
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from PIL import Image

__all__ = [
    "DEFAULT_MAX_IMAGE_PIXELS",
    "InputError",
    "MaskSizeError",
    "MaskWarning",
    "warn_float_mask",
    "load_label_mask",
    "load_image",
    "load_mask",
    "max_image_pixels",
    "rle_decode",
    "rle_encode",
    "rle_size",
    "set_max_image_pixels",
]


class InputError(ValueError):
    """An image, mask or dataset row the user gave is malformed; the message says which and why."""


class MaskSizeError(InputError):
    """A mask's ``H x W`` is not its image's (raised by :func:`load_mask` when given ``expected_size``)."""


class MaskWarning(UserWarning):
    """A mask is read as documented, but it looks like it meant something else (a probability map, an
    alpha-only mask); once per process and kind, naming the first such mask."""


_warned_masks: set[str] = set()


def _warn_mask_once(kind: str, message: str) -> None:
    if kind not in _warned_masks:
        _warned_masks.add(kind)
        warnings.warn(message + " (further such masks are not reported)", MaskWarning, stacklevel=4)


def _where(field: str, source: str | None) -> str:
    return f"{field} ({source})" if source else field


# ------------------------------------------------------------------------------------------- pixel limit

DEFAULT_MAX_IMAGE_PIXELS = 89_478_485
"""Default pixel limit of every image, mask and RLE (H * W): Pillow's warning threshold, about 89.5 MP
(e.g. 9459 x 9459). An 840 x 840 policy frame is 0.7 MP and COCO/ReasonSeg images are under 16 MP."""

_ENV_MAX_PIXELS = "SAMR1_MAX_IMAGE_PIXELS"
_max_pixels_override: int | None = None


def set_max_image_pixels(limit: int | None) -> None:
    """Set the pixel limit of :func:`max_image_pixels` for this process (None: back to the environment
    variable ``SAMR1_MAX_IMAGE_PIXELS``, else :data:`DEFAULT_MAX_IMAGE_PIXELS`).

    Pillow refuses files over twice its own ``PIL.Image.MAX_IMAGE_PIXELS`` on its own; to read files
    larger than ~179 MP raise that too."""
    global _max_pixels_override
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, numbers.Integral) or limit < 1):
        raise ValueError(f"the pixel limit must be a positive integer (H * W), got {limit!r}")
    _max_pixels_override = None if limit is None else int(limit)


def max_image_pixels() -> int:
    """The largest ``H * W`` an image, mask or RLE may have: :func:`set_max_image_pixels`, else the
    environment variable ``SAMR1_MAX_IMAGE_PIXELS``, else :data:`DEFAULT_MAX_IMAGE_PIXELS`.

    Raises:
        RuntimeError: the environment variable is not a positive integer (a configuration error, not a bad
            row: it must stop the run, not zero every reward).
    """
    if _max_pixels_override is not None:
        return _max_pixels_override
    raw = os.environ.get(_ENV_MAX_PIXELS, "").strip()
    if not raw:
        return DEFAULT_MAX_IMAGE_PIXELS
    try:
        value = int(raw.replace("_", ""))
    except ValueError:
        value = 0
    if value < 1:
        raise RuntimeError(f"{_ENV_MAX_PIXELS} must be a positive integer number of pixels (H * W), got {raw!r}; "
                           f"unset it for the default {DEFAULT_MAX_IMAGE_PIXELS}")
    return value


def _check_pixels(h: int, w: int, what: str, where: str) -> None:
    limit = max_image_pixels()
    if h * w > limit:
        raise InputError(f"{where}: {what} is {h}x{w} = {h * w} pixels, over the limit of {limit} pixels "
                         f"(a decompression bomb or a mistake?); raise it with {_ENV_MAX_PIXELS} or "
                         "samr1.io.set_max_image_pixels() if the image is genuine")


# ------------------------------------------------------------------------------------------- files, PIL

# EXIF orientation -> the transpose that makes the image upright (the table of PIL.ImageOps.exif_transpose).
_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _upright(im: Image.Image, kind: str, where: str) -> Image.Image:
    """``im`` with its pixels loaded, its size checked against the pixel limit (on the header, before
    decoding) and its EXIF orientation applied."""
    w, h = im.size
    _check_pixels(h, w, kind, where)
    try:
        im.load()
        orientation = im.getexif().get(0x0112, 1)  # 0x0112: EXIF Orientation (also read from XMP by Pillow)
    except Exception as exc:  # noqa: BLE001 - a decoder fed hostile bytes may raise anything; name the field
        raise InputError(f"{where}: cannot decode the {kind}: {type(exc).__name__}: {exc}") from None
    method = _ORIENTATION.get(orientation) if isinstance(orientation, int) else None
    return im.transpose(method) if method is not None else im


def _read_file(path: Any, kind: str, field: str, source: str | None,
               convert: Callable[[Image.Image, str], np.ndarray]) -> np.ndarray:
    """Open an image file, make it upright and return ``convert(image, where)`` (run while the file is open:
    closing a PIL image frees its pixels); every failure is an InputError naming the file."""
    path = os.fspath(path)
    where = _where(field, source)
    try:
        im = Image.open(path)
    except FileNotFoundError:
        raise InputError(f"{where}: {kind} file not found: {path}") from None
    except Image.DecompressionBombError as exc:
        raise InputError(f"{where}: {kind} file {path} is refused by Pillow as a decompression bomb ({exc}); "
                         "raise PIL.Image.MAX_IMAGE_PIXELS and samr1.io.set_max_image_pixels() if it is genuine"
                         ) from None
    except Exception as exc:  # noqa: BLE001 - UnidentifiedImageError, OSError, ValueError (NUL in path), plugins' own
        raise InputError(f"{where}: cannot read {kind} file {path}: {type(exc).__name__}: {exc}") from None
    with im:
        return convert(_upright(im, kind, f"{where} [{path}]"), where)


def _scale_to_uint8(arr: np.ndarray, where: str) -> np.ndarray:
    """High-bit-depth pixels to uint8 by their range (see the module docstring); never clips."""
    if arr.dtype.kind == "u" and arr.dtype.itemsize == 2:
        v = arr.astype(np.uint32)
        return ((v * 255 + 32767) // 65535).astype(np.uint8)  # round(v * 255 / 65535), exact in integers
    if arr.dtype.kind in "iu":
        lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
        if lo >= 0 and hi <= 65535:
            return _scale_to_uint8(arr.astype(np.uint16), where)
        v = arr.astype(np.float64)
    else:
        v = arr.astype(np.float64)
        if not np.isfinite(v).all():
            raise InputError(f"{where}: a float image holds NaN or infinite values")
        lo, hi = (float(v.min()), float(v.max())) if v.size else (0.0, 0.0)
    if hi <= lo:
        return np.zeros(arr.shape, dtype=np.uint8)
    return np.rint((v - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def _pil_to_rgb(im: Image.Image, where: str) -> np.ndarray:
    if im.width == 0 or im.height == 0:
        raise InputError(f"{where}: image is empty, {im.width}x{im.height} (W x H)")
    if im.mode.startswith("I") or im.mode == "F":  # I, I;16, I;16L, I;16B, I;16N, F: scale, do not clip
        grey = _scale_to_uint8(np.asarray(im), where)
        return np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))
    try:
        return _own(np.asarray(im.convert("RGB")))
    except Exception as exc:  # noqa: BLE001 - e.g. a mode Pillow cannot convert to RGB
        raise InputError(f"{where}: cannot convert a PIL image of mode {im.mode!r} to RGB: {exc}") from None


def _own(arr: np.ndarray) -> np.ndarray:
    """C-contiguous and writable: arrays viewed from PIL images are read-only, and torch.from_numpy on them
    warns (and would alias memory PIL owns)."""
    arr = np.ascontiguousarray(arr)
    return arr if arr.flags.writeable else arr.copy()


def _tensor_to_numpy(x: Any, where: str) -> Any:
    if hasattr(x, "detach") and hasattr(x, "cpu") and hasattr(x, "numpy"):  # a torch tensor
        try:
            return x.detach().cpu().numpy()
        except Exception as exc:  # noqa: BLE001 - e.g. bfloat16 has no numpy dtype
            raise InputError(f"{where}: cannot convert a {type(x).__name__} to numpy: {exc}") from None
    return x


# ------------------------------------------------------------------------------------------- images


def load_image(image: Any, *, field: str = "image", source: str | None = None) -> np.ndarray:
    """Return ``image`` as a C-contiguous ``H x W x 3`` uint8 RGB array.

    Accepts a PIL image (any mode; converted to RGB, 16-bit and float modes scaled, EXIF orientation
    applied), an ``H x W x 3`` uint8 array, an ``H x W`` uint8 array (grey, replicated), an ``H x W x 4``
    array (alpha dropped), the same shapes in uint16 (scaled to 8 bits), a torch tensor of those, or a path
    to an image file. See the module docstring for the pixel limit, EXIF and bit-depth rules.
    ``field``/``source`` only shape the error message (e.g. ``field="image", source="train.jsonl:12"``).

    Raises:
        InputError: anything else, naming ``field`` (and ``source``/the file) and what was expected.
    """
    where = _where(field, source)
    if isinstance(image, (str, bytes, os.PathLike)):
        if isinstance(image, bytes):
            raise InputError(f"{where}: got bytes; pass a path, a PIL image (PIL.Image.open(io.BytesIO(data))) "
                             "or an array")
        return _read_file(image, "image", field, source, _pil_to_rgb)
    if isinstance(image, Image.Image):
        return _pil_to_rgb(_upright(image, "image", where), where)
    image = _tensor_to_numpy(image, where)
    if not isinstance(image, np.ndarray):
        raise InputError(f"{where}: expected a PIL image, an HxWx3 uint8 array or a path, got {type(image).__name__}")
    arr = image
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise InputError(f"{where}: expected shape HxWx3 (or HxW grey, HxWx4 RGBA), got {tuple(image.shape)}")
    if arr.dtype != np.uint8 and arr.dtype != np.uint16:
        raise InputError(
            f"{where}: expected dtype uint8 (0..255 RGB) or uint16, got {arr.dtype}; "
            "convert with (x * 255).clip(0, 255).astype(np.uint8) if it is a 0..1 float image"
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InputError(f"{where}: image is empty, shape {tuple(image.shape)}")
    _check_pixels(arr.shape[0], arr.shape[1], "image", where)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.shape[2] == 4:
        arr = arr[:, :, :3]
    if arr.dtype == np.uint16:
        arr = _scale_to_uint8(arr, where)
    return _own(arr)


# ------------------------------------------------------------------------------------------- masks


def load_mask(mask: Any, *, field: str = "mask", source: str | None = None,
              expected_size: Sequence[int] | None = None) -> np.ndarray:
    """Return ``mask`` as an ``H x W`` bool array (True = object).

    Accepts bool/integer/float arrays (nonzero = object), nested lists (``H`` lists of ``W`` bools or
    numbers), PIL images (EXIF orientation applied) and paths to image files, COCO RLE dicts and torch
    tensors. What each form means (docs/limits.md has the table):

    - bool: True = object; integer: nonzero = object (0/1, 0/255, a label id);
    - float: nonzero = object, so 0.01 is object: a probability map must be thresholded first (a float mask
      with values strictly between 0 and 1 warns once, :class:`MaskWarning`);
    - colour images (RGB, or ``H x W x C`` arrays): object where ANY colour channel is nonzero;
    - images with alpha (RGBA, LA, ``H x W x 4`` / ``x 2``): alpha is dropped, colour decides; a mask drawn
      only in alpha is therefore empty (warns once);
    - palette images (PIL mode ``P``): by palette INDEX, not colour: index 0 is background whatever its
      colour, any other index is object;
    - 16-bit and 32-bit grey images (``I;16``, ``I``, ``F``): nonzero = object;
    - COCO RLE: decoded as is (:func:`rle_decode`).

    Args:
        expected_size: ``(H, W)`` of the mask's image, when known: a mask of another size raises
            :class:`MaskSizeError`, and an RLE is checked on its declared size BEFORE it is decoded.

    Raises:
        InputError: a malformed mask (ragged lists, NaN, wrong shape or dtype, over the pixel limit, an
            unreadable file), naming ``field``/``source`` and what was expected; :class:`MaskSizeError` (an
            InputError) for a size mismatch.
    """
    where = _where(field, source)
    if isinstance(mask, (str, bytes, os.PathLike)):
        if isinstance(mask, bytes):
            raise InputError(f"{where}: got bytes; pass a path, a PIL image, an array or a COCO RLE dict")
        path = os.fspath(mask)
        arr = _read_file(path, "mask", field, source,
                         lambda im, _w: _array_to_mask(np.asarray(im), field, source or path))
    elif isinstance(mask, dict):
        return rle_decode(mask, field=field, source=source, expected_size=expected_size)
    elif isinstance(mask, Image.Image):
        arr = _array_to_mask(np.asarray(_upright(mask, "mask", where)), field, source)
    elif isinstance(mask, (list, tuple)):
        arr = _lists_to_mask(mask, where)
    else:
        mask = _tensor_to_numpy(mask, where)
        if not isinstance(mask, np.ndarray):
            raise InputError(f"{where}: expected a bool/uint8 array, nested lists of bools, a PIL image, a COCO RLE "
                             f"dict or a path, got {type(mask).__name__}")
        arr = _array_to_mask(mask, field, source)
    _check_expected(arr.shape, expected_size, where)
    return arr


def load_label_mask(mask: Any, *, field: str = "mask", source: str | None = None) -> np.ndarray:
    """An ``H x W`` mask whose VALUES are kept when they may code something: a one-channel image file or PIL
    image (grey, 16-bit, bilevel, palette indices) gives its integer values as they are (e.g. LISA's
    ReasonSeg masks: 1 = object, 255 = ignore), upright (EXIF) and checked against the pixel limit; every
    other form (an RGB file, an RLE, an array) is read by :func:`load_mask` (bool). For ground truths of
    :mod:`samr1.metrics`, whose ``ignore_value`` is a value of the mask.

    Raises:
        InputError: as :func:`load_mask`, naming ``field``/``source``.
    """
    def values(a: np.ndarray, where: str, name: str) -> np.ndarray:
        if a.ndim == 2 and a.dtype.kind in "biu":
            _check_pixels(a.shape[0], a.shape[1], "mask", where)
            return np.array(a)  # a copy: the file's pixels are freed when it closes
        return _array_to_mask(a, field, name)

    where = _where(field, source)
    if isinstance(mask, (str, os.PathLike)):
        path = os.fspath(mask)
        return _read_file(path, "mask", field, source, lambda im, w: values(np.asarray(im), w, source or path))
    if isinstance(mask, Image.Image):
        return values(np.asarray(_upright(mask, "mask", where)), where, source)
    return load_mask(mask, field=field, source=source)


def _check_expected(shape: Sequence[int], expected_size: Sequence[int] | None, where: str) -> None:
    if expected_size is None:
        return
    eh, ew = (int(v) for v in expected_size)
    if (int(shape[0]), int(shape[1])) != (eh, ew):
        raise MaskSizeError(f"{where}: mask is {shape[0]}x{shape[1]} but its image is {eh}x{ew} (H x W); masks are "
                            "at the original image size")


def _lists_to_mask(rows: Sequence[Any], where: str) -> np.ndarray:
    """Nested lists (H rows of W values) to an H x W bool mask; ragged or non-numeric lists are refused."""
    if len(rows) == 0:
        raise InputError(f"{where}: mask is an empty list; expected H lists of W bools")
    width = None
    for r, row in enumerate(rows):
        if isinstance(row, (str, bytes, dict)) or not hasattr(row, "__len__"):
            raise InputError(f"{where}: a mask given as lists must be H lists of W bools; row {r} is a "
                             f"{type(row).__name__}")
        if width is None:
            width = len(row)
        elif len(row) != width:
            raise InputError(f"{where}: ragged mask lists: row {r} has {len(row)} values but row 0 has {width}; "
                             "every row must have the image's width W")
    _check_pixels(len(rows), int(width or 0), "mask", where)
    try:
        arr = np.array(rows)
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise InputError(f"{where}: mask lists must hold only bools or numbers: {type(exc).__name__}: {exc}") from None
    if arr.ndim != 2 or arr.dtype.kind not in "biuf":
        raise InputError(f"{where}: mask lists must be H lists of W bools or numbers; they make an array of shape "
                         f"{tuple(arr.shape)} and dtype {arr.dtype}")
    return _array_to_mask(arr, "mask", None, where=where)


# Soft edges (a 0/255 mask resized with antialiasing, or saved as JPEG): the bright pixels (>= 128: the object)
# outnumber the dim nonzero ones (1..127: edge and compression noise), and the values strictly between 0 and
# 255 take at least this many distinct levels (3 to 57 measured on bicubic resizes and JPEGs of random
# rectangles). A label-id map (VOC: class ids 1-20 over whole regions, a thin 255 boundary) has more dim
# pixels than bright ones, so it is not taken for one.
_SOFT_EDGE_LEVELS = 3


def _warn_soft_edges(arr: np.ndarray, where: str) -> None:
    """Warn once when an 8-bit mask looks anti-aliased or JPEG-compressed, from every 4th row (edges run
    across many rows): a max and a count decide for plain 0/1 and 0/255 masks (~0.1 ms at 1080p), a
    histogram only runs when values between 0 and 255 sit beside 255; nothing once it has warned."""
    if "soft-edges" in _warned_masks:
        return
    sub = arr[::4]
    if sub.size == 0 or sub.max() < 128 or not np.count_nonzero((sub - np.uint8(1)) < 254):  # 1..254 -> 0..253
        return
    counts = np.bincount(sub.ravel(), minlength=256)
    low, high = int(counts[1:128].sum()), int(counts[128:].sum())  # edge / noise vs the object
    if high > low and int(np.count_nonzero(counts[1:255])) >= _SOFT_EDGE_LEVELS:
        _warn_mask_once("soft-edges", f"{where}: an 8-bit mask with pixels strictly between 0 and 255 (soft "
                                      "edges: resized with antialiasing, or saved as JPEG?) is read as nonzero = "
                                      "object, which widens the object by its edge; threshold it (mask > 127), "
                                      "resize masks with NEAREST and store them as PNG")


def _array_to_mask(arr: np.ndarray, field: str, source: str | None, *, where: str | None = None) -> np.ndarray:
    where = where or _where(field, source)
    if arr.dtype == np.uint8 and arr.ndim in (2, 3):
        _warn_soft_edges(arr if arr.ndim == 2 else arr[..., : 3 if arr.shape[2] >= 3 else 1], where)
    if arr.ndim == 3:  # a colour PNG: object where any colour channel is nonzero
        if not 1 <= arr.shape[2] <= 4:
            raise InputError(f"{where}: expected an HxW mask (or HxWxC with 1 to 4 channels), got shape "
                             f"{tuple(arr.shape)}")
        if arr.shape[2] in (2, 4):
            alpha = arr[..., -1]
            arr = arr[..., :-1]  # LA / RGBA: alpha is opacity, not object (an opaque background is not object)
            if arr.dtype.kind in "biuf" and not arr.any() and alpha.min() != alpha.max():
                _warn_mask_once("alpha", f"{where}: the mask's colour channels are all 0 and only its alpha channel "
                                         "varies; samr1 reads colour, not alpha, so this mask is EMPTY. Save the "
                                         "object as nonzero colour (or pass the alpha channel as the mask)")
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise InputError(f"{where}: mask holds NaN or infinite values")
        if arr.dtype.kind in "biuf":
            arr = arr.any(axis=2)
    if arr.ndim != 2:
        raise InputError(f"{where}: expected an HxW mask, got shape {tuple(arr.shape)}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InputError(f"{where}: mask is empty, shape {tuple(arr.shape)}")
    _check_pixels(arr.shape[0], arr.shape[1], "mask", where)
    if arr.dtype == bool:
        return _own(arr)
    if arr.dtype.kind not in "iuf":
        raise InputError(f"{where}: mask dtype {arr.dtype} is not bool or numeric")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise InputError(f"{where}: mask holds NaN or infinite values")
    if arr.dtype.kind == "f":
        warn_float_mask(arr, where)
    return np.ascontiguousarray(arr != 0)


def warn_float_mask(arr: np.ndarray, where: str) -> None:
    """Warn once (:class:`MaskWarning`) when a finite float mask looks like logits (negative values) or a
    probability map (values strictly between 0 and 1): it is read as nonzero = object, so those pixels all
    count as object. :func:`load_mask` and :mod:`samr1.metrics` call it on every float mask."""
    if (arr < 0).any():
        _warn_mask_once("logits", f"{where}: a float mask with negative values (logits?) is read as nonzero = "
                                  "object, so every negative pixel counts as object; threshold it first (e.g. "
                                  "logits > 0)")
    elif ((arr > 0) & (arr < 1)).any():
        _warn_mask_once("probability", f"{where}: a float mask with values strictly between 0 and 1 (a probability "
                                       "map?) is read as nonzero = object, so every such pixel counts as object; "
                                       "threshold it first (e.g. mask > 0.5)")


# --- COCO run-length encoding (column-major, counts alternate background/foreground from background) ---


_MAX_COUNT_GROUPS = 13  # 5-bit groups per count: 65 bits, twice what a COCO count can need


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
            if k == _MAX_COUNT_GROUPS:
                # COCO's counts are 32-bit (7 groups); without a bound, one count of n groups costs O(n^2)
                # big-int shifts (an 80 kB string took 0.3 s, a 400 kB one 8 s).
                raise InputError(f"{_where(field, source)}: RLE count {len(counts)} runs over {_MAX_COUNT_GROUPS} "
                                 "characters: not a COCO counts string")
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


def rle_size(size: Any, where: str = "mask") -> tuple[int, int]:
    """The declared ``(H, W)`` of an RLE as two Python ints: the ONE reading of an RLE's ``size`` that every
    check and the decoder share, so no form of the size reaches the decoder without passing the same limits.

    Accepted: a two-element sequence of positive integral numbers: ints, or integral floats as JSON may
    write them (``[480, 640]``, ``[480.0, 640.0]``, ``[4.8e2, 640]``, numpy scalars). Refused (InputError
    naming ``where`` and 'size'): bools, strings, fractions (``2.5``), NaN, infinities, zero or negative
    values, nested lists, any other length.
    """
    bad = InputError(f"{where}: an RLE mask needs 'size': [H, W] with two positive integers, got {size!r:.200}")
    if isinstance(size, (str, bytes, dict)) or not hasattr(size, "__len__") or len(size) != 2:
        raise bad
    out = []
    for v in size:
        if isinstance(v, bool) or not isinstance(v, (numbers.Integral, numbers.Real)):
            raise bad
        try:
            iv = int(v)
        except (ValueError, OverflowError, TypeError):
            raise bad from None
        if iv != v or iv <= 0:
            raise bad
        out.append(iv)
    return out[0], out[1]


def rle_decode(rle: dict, *, field: str = "mask", source: str | None = None,
               expected_size: Sequence[int] | None = None) -> np.ndarray:
    """Decode a COCO RLE dict into an ``H x W`` bool array.

    The declared size is checked BEFORE decoding: against the pixel limit (:func:`max_image_pixels`) and,
    when ``expected_size`` ``(H, W)`` is given, against the image's size (:class:`MaskSizeError`). The
    counts must be non-negative integers summing to ``H * W``.
    """
    where = _where(field, source)
    if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
        raise InputError(f"{where}: an RLE mask needs 'size': [H, W] and 'counts'")
    h, w = rle_size(rle["size"], where)
    _check_expected((h, w), expected_size, where)  # first: "not its image's size" says more than "too big"
    _check_pixels(h, w, "RLE mask", where)
    counts = rle["counts"]
    if isinstance(counts, (str, bytes)):
        counts = _decode_counts_string(counts, field, source)
    try:
        counts = np.asarray(counts)
    except (TypeError, ValueError, OverflowError, RecursionError):
        raise InputError(f"{where}: RLE counts must be a string or a list of integers") from None
    if counts.ndim != 1 or counts.dtype.kind not in "iuf" or (counts.dtype.kind == "f" and counts.size
                                                               and not (np.isfinite(counts).all()
                                                                        and (counts == np.round(counts)).all())):
        raise InputError(f"{where}: RLE counts must be a string or a flat list of non-negative integers")
    if counts.size and (counts < 0).any():
        raise InputError(f"{where}: RLE counts must be non-negative integers")
    # sum in Python ints: an int64 sum of huge counts can wrap around to H*W and pass a numpy check
    total = sum(int(c) for c in counts.tolist())
    if total != h * w:
        raise InputError(f"{where}: RLE counts sum to {total}, expected H*W = {h * w}")
    values = np.zeros(len(counts), dtype=bool)
    values[1::2] = True
    flat = np.repeat(values, counts.astype(np.int64))
    return np.ascontiguousarray(flat.reshape(w, h).T)


def rle_encode(mask: Any, compressed: bool = True) -> dict:
    """Encode a mask as a COCO RLE dict (compressed counts string by default). ``mask`` is any form
    :func:`load_mask` reads (an ``H x W`` bool array as is; a colour array, a float map, a path: read, and
    warned about, as everywhere else).

    Raises:
        InputError: a mask :func:`load_mask` refuses (naming ``mask``).
    """
    m = mask if isinstance(mask, np.ndarray) and mask.dtype == bool and mask.ndim == 2 else load_mask(mask)
    h, w = m.shape
    flat = m.T.reshape(-1)
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        counts = [0, *counts]
    counts_out: Any = _encode_counts_string(counts) if compressed else [int(c) for c in counts]
    return {"size": [h, w], "counts": counts_out}
