"""Content hashing: the one place samr1 turns bytes (files, arrays, masks, state dicts) into keys.

Two algorithms: ``"xxh3_128"`` (the optional ``xxhash`` package, ~10 GB/s) and ``"blake2b"`` (stdlib,
~1 GB/s, 16-byte digest unless a caller asks for another size). Keys that are persisted (embedding stores,
artefact caches, model ids) record which algorithm made them, so either reads back correctly and keys of
different algorithms never compare equal.

Every function here hashes the SHAPE (and dtype where it matters) together with the bytes, so equal bytes
in another shape give another key.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["ALGORITHMS", "default_algorithm", "new_hasher", "file_digest", "array_digest", "mask_digest",
           "state_dict_digest"]

ALGORITHMS = ("xxh3_128", "blake2b")
_CHUNK = 1 << 22  # 4 MiB reads: large enough to run at the hash's speed, small enough to stay out of RAM


def default_algorithm() -> str:
    """``"xxh3_128"`` when the optional xxhash package is installed (about 10x faster), else ``"blake2b"``."""
    try:
        import xxhash  # noqa: F401

        return "xxh3_128"
    except ImportError:
        return "blake2b"


def new_hasher(algorithm: str, digest_size: int = 16) -> Any:
    """A fresh hash object of ``algorithm`` (``update`` / ``hexdigest``); ``digest_size`` is blake2b's.

    Raises:
        ValueError: unknown algorithm. ImportError: "xxh3_128" without the xxhash package.
    """
    if algorithm == "blake2b":
        return hashlib.blake2b(digest_size=digest_size)
    if algorithm == "xxh3_128":
        import xxhash

        return xxhash.xxh3_128()
    raise ValueError(f"unknown hash {algorithm!r}; choose one of {list(ALGORITHMS)}")


def file_digest(path: str | os.PathLike, algorithm: str = "blake2b", digest_size: int = 16) -> str:
    """Hex digest of a file's bytes, read in 4 MiB chunks."""
    h = new_hasher(algorithm, digest_size)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def array_digest(array: Any, algorithm: str = "blake2b", header: bytes | None = None) -> str:
    """Hex digest of an array's dtype, shape and bytes (C order).

    ``header`` replaces the default ``b"<dtype>:<d0>x<d1>x..."`` prefix; it must name the shape.
    """
    arr = np.ascontiguousarray(array)
    if header is None:
        header = f"{arr.dtype.str}:{'x'.join(map(str, arr.shape))}".encode()
    h = new_hasher(algorithm)
    h.update(header)
    h.update(memoryview(arr).cast("B") if arr.size else b"")
    return h.hexdigest()


def mask_digest(mask: np.ndarray) -> str:
    """blake2b-128 hex digest of a bool ``H x W`` mask (its size + packed bits: 1 bit per pixel)."""
    m = np.asarray(mask, dtype=bool)
    h = new_hasher("blake2b")
    h.update("x".join(map(str, m.shape)).encode())
    h.update(np.packbits(m).tobytes())
    return h.hexdigest()


def state_dict_digest(state: Mapping[str, Any], as_float32: bool = False, digest_size: int = 12) -> str:
    """blake2b hex digest of a state dict's names and tensor bytes, sorted by name: equal weights, equal digest.

    ``as_float32`` hashes every tensor cast to float32 (so an fp16 and an fp32 copy of the same values
    agree); otherwise each tensor's own dtype bytes are hashed.
    """
    h = new_hasher("blake2b", digest_size)
    for name in sorted(state):
        t = state[name].detach()
        if as_float32:
            t = t.float()
        h.update(name.encode())
        h.update(t.cpu().contiguous().numpy().tobytes())
    return h.hexdigest()
