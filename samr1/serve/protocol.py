"""What the server and :mod:`samr1.client` agree on: content keys, the upload encoding and input limits.

Nothing here imports FastAPI, so the client works without the ``[serve]`` extra.

- Image key: :func:`samr1.store.image_key` of the decoded ``H x W x 3`` uint8 RGB pixels with blake2b
  (fixed, so a client and a server agree whether or not ``xxhash`` is installed on either side). The server
  recomputes the key of every upload from its pixels: an upload can never sit under another image's key.
- Mask key: ``"m:<H>x<W>:<blake2b of the bit-packed mask>"`` of the ``H x W`` bool mask (nonzero = object).
- Uploads are PNG (lossless: the pixels the server scores are the client's pixels, bit for bit).
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from samr1.hashing import mask_digest
from samr1.io import InputError, load_image, load_mask
from samr1.store import image_key

__all__ = ["Limits", "image_content_key", "mask_content_key", "encode_png", "decode_upload", "parse_box",
           "parse_points", "MASK_KEY_PREFIX"]

MASK_KEY_PREFIX = "m:"
IMAGE_HASH = "blake2b"


@dataclass(frozen=True)
class Limits:
    """Bounds on what one request may carry (checked before any pixel is decoded).

    Attributes:
        max_body_bytes: largest request body (413 above it); counted while the body streams in, so a
            missing or false ``Content-Length`` does not get past it.
        max_side: longest image side in pixels accepted (400 above it).
        max_pixels: largest ``H * W`` accepted (400 above it): a PNG declaring 20,000 x 20,000 pixels in a
            few kB (a decompression bomb) is refused from its header, before it is inflated.
        max_items: most rows in one ``/score`` request.
        max_files: most uploaded files in one request.
    """

    max_body_bytes: int = 32 << 20
    max_side: int = 8192
    max_pixels: int = 40_000_000
    max_items: int = 4096
    max_files: int = 512

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_side", "max_pixels", "max_items", "max_files"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"Limits.{name} must be a positive int, got {v!r}")


def image_content_key(image: Any) -> str:
    """Content key of an image (PIL, ``H x W x 3`` uint8 array or path; loaded as RGB)."""
    return image_key(load_image(image), IMAGE_HASH)


def mask_content_key(mask: Any) -> str:
    """Content key of a mask (bool/uint8 array, PIL image, COCO RLE dict or path; nonzero = object)."""
    m = load_mask(mask)
    return f"{MASK_KEY_PREFIX}{m.shape[0]}x{m.shape[1]}:{mask_digest(m)}"


def encode_png(array: np.ndarray) -> bytes:
    """PNG bytes of an ``H x W x 3`` uint8 image or an ``H x W`` bool mask (255 = object).

    Compression level 1: uploads are read once; level 6 costs ~4x the CPU for ~10 % fewer bytes."""
    from PIL import Image

    arr = np.asarray(array)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def decode_upload(data: bytes, *, field: str, limits: Limits, kind: str = "image") -> np.ndarray:
    """Decode uploaded image bytes into ``H x W x 3`` uint8 RGB (``kind="image"``) or an ``H x W`` bool mask.

    The header is read first and the declared size checked against ``limits`` before any pixel data is
    inflated, so a decompression bomb costs a header read. Raises :class:`InputError` naming ``field`` for
    anything that is not a readable image: empty or non-image bytes, a truncated file, too large a size.
    """
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise InputError(f"{field}: the upload is empty")
    try:
        im = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise InputError(f"{field}: not an image file (PNG, JPEG, ... that PIL can read)") from None
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise InputError(f"{field}: cannot read the image header: {exc}") from None
    w, h = im.size
    if w < 1 or h < 1:
        raise InputError(f"{field}: image is empty ({w}x{h})")
    if max(w, h) > limits.max_side or w * h > limits.max_pixels:
        raise InputError(f"{field}: image is {w}x{h} (W x H); this server accepts at most {limits.max_side} px a "
                         f"side and {limits.max_pixels} pixels; downscale it before sending")
    try:
        im.load()  # PIL decodes lazily: a truncated file fails here, not at open()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise InputError(f"{field}: the image data is broken or truncated: {exc}") from None
    # The library's loaders, like every other input path: EXIF orientation, 16-bit scaling, mode checks.
    return load_image(im, field=field) if kind == "image" else load_mask(im, field=field)


def _numbers(text: Any, field: str) -> list[Any]:
    if isinstance(text, (list, tuple)):
        return list(text)
    if not isinstance(text, str):
        raise InputError(f"{field}: expected text, got {type(text).__name__}")
    s = text.strip()
    if s.startswith("["):
        try:
            val = json.loads(s)
        except json.JSONDecodeError as exc:
            raise InputError(f"{field}: invalid JSON ({exc.msg})") from None
        except RecursionError:  # json recurses once per level: thousands of "[" are hostile or broken
            raise InputError(f"{field}: invalid JSON (nested too deeply; expected a flat list of numbers)") from None
        except ValueError as exc:  # e.g. an integer of more than 4300 digits
            raise InputError(f"{field}: invalid JSON ({str(exc)[:120]})") from None
        if not isinstance(val, list):
            raise InputError(f"{field}: expected a JSON list")
        return val
    return [p for p in s.replace(";", ",").split(",") if p.strip()]


def _finite(v: Any, field: str) -> float:
    if isinstance(v, bool):
        raise InputError(f"{field}: expected a number, got {v!r}")
    try:
        x = float(v)
    except (TypeError, ValueError):
        raise InputError(f"{field}: expected a number, got {v!r}") from None
    if not math.isfinite(x):
        raise InputError(f"{field}: coordinates must be finite, got {v!r}")
    return x


def parse_box(text: Any, field: str = "box") -> list[float]:
    """``"x1,y1,x2,y2"`` or a JSON list of 4 numbers -> 4 floats (XYXY, original image pixels)."""
    vals = _numbers(text, field)
    if len(vals) != 4:
        raise InputError(f"{field}: expected 4 numbers x1,y1,x2,y2 (original pixels), got {len(vals)}")
    return [_finite(v, field) for v in vals]


def parse_points(text: Any, field: str = "points") -> list[list[float]]:
    """``"x,y;x,y"``, ``"x,y,x,y"`` or a JSON list ``[[x, y], ...]`` -> points (x, y) in original pixels."""
    vals = _numbers(text, field)
    if vals and all(isinstance(v, (list, tuple)) for v in vals):
        out = []
        for i, p in enumerate(vals):
            if len(p) != 2:
                raise InputError(f"{field}[{i}]: a point is 2 numbers [x, y], got {len(p)}")
            out.append([_finite(p[0], field), _finite(p[1], field)])
        return out
    if len(vals) % 2:
        raise InputError(f"{field}: expected pairs x,y; got {len(vals)} numbers")
    flat = [_finite(v, field) for v in vals]
    return [flat[i:i + 2] for i in range(0, len(flat), 2)]
