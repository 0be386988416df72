"""Persistent embedding store: precomputed SAM image embeddings for a dataset, memory-mapped from disk.

Layout of a store folder::

    embeddings.f16   raw float16 array, rows x C x h x w (numpy memmap; grows by doubling)
    index.json       {"format", "model_id", "encoder", "shape": [C, h, w], "dtype": "float16", "frame",
                      "hash", "rows": n, "keys": {image key: row}, "input_sizes": [[h, w] per row]}

``samr1 embed`` fills a store; :class:`samr1.engine.cache.EmbeddingCache` reads it before encoding, so
training on a known dataset never runs the encoder. A store is tied to one model id: opening it for another
model is refused (embeddings of other weights would silently give wrong masks). It also records the encoder
that wrote it (``ImageEncoder.name``: ``"torch-fp32"``, ``"onnxruntime-cpu"``, ``"tensorrt-fp16"``, ...).
What matters of it is the compute precision (:func:`encoder_precision`): resuming a store with an encoder
of another precision is refused (one store, one precision; fp32 backends mix freely, the store keeps
float16 anyway), and reading it from an engine that encodes misses at another precision warns (store hits
and fresh encodes then differ at the less precise of the two).

Writes are resumable: rows are written to the memmap and flushed first, and only then does the index
(written atomically) point at them, so a crash loses at most the rows since the last :meth:`flush`.
Embeddings are stored as float16 (2 MB per 256 x 64 x 64 embedding instead of 4 MB); SAM's embeddings
come out of a LayerNorm, so float16's ~5e-4 relative precision is far below what changes a mask.

Image keys (:func:`image_key`) hash the pixel content and shape, so equal pixels hit whatever object or
file they come from.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from samr1.artifacts import atomic_write_json

__all__ = ["EmbeddingStore", "StoreError", "image_key", "default_hash", "HASHES"]

_FORMAT = 1
_DATA = "embeddings.f16"
_INDEX = "index.json"
HASHES = ("xxh3_128", "blake2b")


class StoreError(ValueError):
    """An embedding store cannot be used as asked (other model, other shape, missing or damaged files)."""


def default_hash() -> str:
    """``"xxh3_128"`` when the optional xxhash package is installed (about 10x faster), else ``"blake2b"``."""
    try:
        import xxhash  # noqa: F401

        return "xxh3_128"
    except ImportError:
        return "blake2b"


def encoder_precision(name: str) -> str:
    """Compute precision of an encoder from its ``ImageEncoder.name``: "bf16", "fp16" or "fp32" (backends
    without a precision in their name, such as ``"onnxruntime-cpu"``, run the fp32 export)."""
    for p in ("bf16", "fp16"):
        if p in name.split("-"):
            return p
    return "fp32"


def image_key(image: np.ndarray, algorithm: str | None = None) -> str:
    """Content key of an ``H x W x 3`` uint8 image: ``"<alg>:<H>x<W>x<C>:<hex digest of shape + pixels>"``.

    Equal pixels give equal keys whatever the object; a different shape with the same bytes gives another
    key. ``algorithm`` is "xxh3_128" or "blake2b" (default :func:`default_hash`); keys of different
    algorithms never compare equal, so a store records the one it was built with.
    """
    arr = np.ascontiguousarray(image)
    algorithm = algorithm or default_hash()
    header = f"{arr.dtype.str}:{'x'.join(map(str, arr.shape))}".encode()
    if algorithm == "xxh3_128":
        import xxhash

        h = xxhash.xxh3_128()
    elif algorithm == "blake2b":
        h = hashlib.blake2b(digest_size=16)
    else:
        raise ValueError(f"unknown image hash {algorithm!r}; choose one of {list(HASHES)}")
    h.update(header)
    h.update(memoryview(arr).cast("B"))
    short = "x".join(map(str, arr.shape))
    return f"{'xxh3' if algorithm == 'xxh3_128' else 'b2'}:{short}:{h.hexdigest()}"


class EmbeddingStore:
    """Memory-mapped float16 embeddings keyed by :func:`image_key`, for one SAM model id.

    Use :meth:`create` (new or resumed store for writing) or :meth:`open` (existing store; read-only by
    default). ``get`` is safe from several threads; ``put`` serialises on a lock.

    Attributes:
        path: the store folder.
        model_id: the SAM model id the embeddings belong to.
        shape: ``(C, h, w)`` of one embedding.
        frame: the model frame the images were resized into (input sizes are in this frame).
        hash: the image-key algorithm (use ``store.key(image)`` to compute matching keys).
        encoder: the encoder name (backend and precision) that wrote the embeddings, or None for a store
            written before this was recorded.
    """

    def __init__(self, path: Path, meta: dict[str, Any], writable: bool) -> None:
        self.path = path
        self.model_id: str = meta["model_id"]
        self.shape: tuple[int, int, int] = tuple(int(v) for v in meta["shape"])
        self.frame: int = int(meta["frame"])
        self.hash: str = meta["hash"]
        self.encoder: str | None = meta.get("encoder")
        self.writable = writable
        self._keys: dict[str, int] = dict(meta["keys"])
        self._sizes: list[tuple[int, int]] = [tuple(s) for s in meta["input_sizes"]]
        self._rows = int(meta["rows"])
        if len(self._sizes) != self._rows or any(not 0 <= r < self._rows for r in self._keys.values()):
            raise StoreError(f"{path / _INDEX} is inconsistent (rows={self._rows}, {len(self._sizes)} input "
                             f"sizes, {len(self._keys)} keys); delete the folder and run samr1 embed again")
        self._row_bytes = int(np.prod(self.shape)) * 2
        self._lock = threading.Lock()
        self._mm: np.memmap | None = None
        self._capacity = 0
        self._map()

    # --- construction ---

    @classmethod
    def create(cls, path: str | os.PathLike, model_id: str, shape: Sequence[int], frame: int,
               hash: str | None = None, encoder: str | None = None) -> EmbeddingStore:
        """Open ``path`` for writing: a new store, or an existing one for ``model_id`` (resume).

        ``encoder`` (e.g. ``ImageEncoder.name``) is recorded in a new store; a resumed one must have been
        written at the same precision (:func:`encoder_precision`).

        Raises:
            StoreError: the folder holds a store for another model id, embedding shape or precision.
        """
        path = Path(path)
        if (path / _INDEX).exists():
            store = cls.open(path, model_id, writable=True)
            if store.shape != tuple(int(v) for v in shape) or store.frame != int(frame):
                raise StoreError(f"store {path} holds {store.shape} embeddings at frame {store.frame}, not "
                                 f"{tuple(shape)} at frame {frame}; use another --out folder")
            if encoder is not None and store.encoder is not None and (
                    encoder_precision(store.encoder) != encoder_precision(encoder)):
                raise StoreError(f"store {path} was written by encoder {store.encoder!r} "
                                 f"({encoder_precision(store.encoder)}); resuming it with {encoder!r} "
                                 f"({encoder_precision(encoder)}) would mix two precisions in one store. Use "
                                 "the same dtype, or another --out folder")
            if store.encoder is None and encoder is not None:
                if len(store):
                    warnings.warn(f"store {path} predates encoder records: its {len(store)} embeddings were "
                                  f"written by an unknown encoder; resuming it with {encoder!r}", stacklevel=2)
                else:
                    store.encoder = encoder  # nothing written yet: adopt
            return store
        path.mkdir(parents=True, exist_ok=True)
        if (path / _DATA).exists():
            os.unlink(path / _DATA)  # rows without an index are unreachable: start clean
        meta = {"format": _FORMAT, "model_id": model_id, "encoder": encoder, "shape": [int(v) for v in shape],
                "dtype": "float16", "frame": int(frame), "hash": hash or default_hash(), "rows": 0, "keys": {}, "input_sizes": []}
        atomic_write_json(path / _INDEX, meta)
        return cls(path, meta, writable=True)

    @classmethod
    def open(cls, path: str | os.PathLike, model_id: str | None, writable: bool = False) -> EmbeddingStore:
        """Open an existing store built for ``model_id`` (None skips the check, e.g. to inspect a store).

        Raises:
            StoreError: no store there, a damaged index, or a store built with another model id (the message
                names both ids).
        """
        path = Path(path)
        try:
            meta = json.loads((path / _INDEX).read_text())
        except FileNotFoundError:
            raise StoreError(f"no embedding store at {path} ({_INDEX} is missing); build one with "
                             "`samr1 embed --data MANIFEST --out DIR`") from None
        except (OSError, ValueError) as exc:
            raise StoreError(f"{path / _INDEX} is unreadable ({exc}); delete the folder and run samr1 embed "
                             "again") from None
        missing = [k for k in ("format", "model_id", "shape", "frame", "hash", "rows", "keys", "input_sizes")
                   if k not in meta]
        if missing or meta.get("format") != _FORMAT or meta.get("dtype", "float16") != "float16":
            raise StoreError(f"{path / _INDEX} is not a samr1 embedding store of format {_FORMAT} "
                             f"(missing {missing or 'nothing'}, format {meta.get('format')!r})")
        if model_id is not None and meta["model_id"] != model_id:
            raise StoreError(
                f"embedding store {path} was built with SAM model {meta['model_id']!r}, but the model in use is "
                f"{model_id!r}; its embeddings would give wrong masks. Use the matching model or rebuild the "
                "store with `samr1 embed` for this one")
        if meta["hash"] not in HASHES or (meta["hash"] == "xxh3_128" and default_hash() != "xxh3_128"):
            raise StoreError(f"store {path} keys images with {meta['hash']!r}, which is not available here "
                             "(pip install xxhash, or rebuild the store)")
        return cls(path, meta, writable=writable)

    # --- memory map ---

    def _map(self, min_rows: int = 0) -> None:
        """(Re)map the data file, first growing it to ``min_rows`` rows when writable."""
        data = self.path / _DATA
        if self._mm is not None and self.writable:
            self._mm.flush()
        if self.writable:
            if not data.exists():
                data.touch()
            if data.stat().st_size < min_rows * self._row_bytes:
                with open(data, "r+b") as f:
                    f.truncate(min_rows * self._row_bytes)  # extends with zeros: unused rows
        size = data.stat().st_size if data.exists() else 0
        if size < self._rows * self._row_bytes:
            raise StoreError(f"{data} holds {size} bytes but the index lists {self._rows} rows of "
                             f"{self._row_bytes} bytes; the store is damaged, rebuild it with samr1 embed")
        self._capacity = size // self._row_bytes
        # Readers holding the old map keep a valid view; new reads go through the new one.
        self._mm = None
        if self._capacity:
            self._mm = np.memmap(data, dtype=np.float16, mode="r+" if self.writable else "r",
                                 shape=(self._capacity, *self.shape))

    # --- reading ---

    def key(self, image: np.ndarray) -> str:
        """:func:`image_key` of ``image`` with this store's hash algorithm."""
        return image_key(image, self.hash)

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: str) -> bool:
        return key in self._keys

    def keys(self) -> list[str]:
        return list(self._keys)

    def get(self, key: str) -> torch.Tensor | None:
        """The embedding for ``key`` as a ``C x h x w`` float16 CPU tensor (a copy), or None if absent."""
        row = self._keys.get(key)
        if row is None:
            return None
        return torch.from_numpy(np.array(self._mm[row]))

    def get_with_size(self, key: str) -> tuple[torch.Tensor, tuple[int, int]] | None:
        """``(embedding, input_size)`` for ``key`` or None; input_size is the resized (h, w) before padding."""
        row = self._keys.get(key)
        if row is None:
            return None
        return torch.from_numpy(np.array(self._mm[row])), self._sizes[row]

    # --- writing ---

    def put(self, keys: Sequence[str], embeddings: torch.Tensor | np.ndarray,
            input_sizes: Iterable[Sequence[int]]) -> int:
        """Append embeddings (``B x C x h x w``, any float dtype/device) for ``keys``; keys already present are
        skipped. Returns the number of rows written. Call :meth:`flush` to make them durable."""
        if not self.writable:
            raise StoreError(f"store {self.path} was opened read-only; use EmbeddingStore.create to write")
        sizes = [tuple(int(v) for v in s) for s in input_sizes]
        if len(keys) != len(embeddings) or len(keys) != len(sizes):
            raise ValueError(f"put needs as many keys ({len(keys)}), embeddings ({len(embeddings)}) and input "
                             f"sizes ({len(sizes)})")
        if tuple(embeddings.shape[1:]) != self.shape:
            raise ValueError(f"embeddings of shape {tuple(embeddings.shape[1:])} do not fit store {self.path} "
                             f"of shape {self.shape}")
        if isinstance(embeddings, torch.Tensor):
            embeddings = embeddings.detach().to("cpu", torch.float16).numpy()
        embeddings = np.asarray(embeddings, dtype=np.float16)
        written = 0
        with self._lock:
            for key, emb, size in zip(keys, embeddings, sizes, strict=True):
                if key in self._keys:
                    continue
                if self._rows >= self._capacity:
                    self._map(max(2 * self._capacity, self._rows + 1, 16))
                self._mm[self._rows] = emb
                self._keys[key] = self._rows
                self._sizes.append(size)
                self._rows += 1
                written += 1
        return written

    def flush(self) -> None:
        """Flush the rows to disk, then atomically write the index that points at them."""
        if not self.writable:
            return
        with self._lock:
            if self._mm is not None:
                self._mm.flush()
            meta = {"format": _FORMAT, "model_id": self.model_id, "encoder": self.encoder,
                    "shape": list(self.shape), "dtype": "float16",
                    "frame": self.frame, "hash": self.hash, "rows": self._rows, "keys": self._keys,
                    "input_sizes": [list(s) for s in self._sizes]}
            atomic_write_json(self.path / _INDEX, meta)

    def close(self) -> None:
        self.flush()
        self._mm = None

    def __enter__(self) -> EmbeddingStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"EmbeddingStore({str(self.path)!r}, model_id={self.model_id!r}, encoder={self.encoder!r}, "
                f"entries={len(self)})")
