"""EmbeddingCache: SAM image embeddings by pixel content, LRU-bounded in bytes, on the engine's device.

SAM is frozen during SAM-R1 training, so an image's embedding never changes: in a GRPO step the G
completions of a prompt share one image (encode it once, not G times), and an image seen in an earlier
step needs no encoder at all. The cache keys by content (equal pixels hit even when they are different
objects, or were loaded twice from disk), batches every miss of one call into ONE encoder call (the
encoder chunks by its ``max_batch``), and reads a persistent :class:`samr1.store.EmbeddingStore` before
encoding when one is given.

How the engine uses it::

    cache = EmbeddingCache(make_encoder(sam, "torch"), cache_bytes=2 << 30)
    batch = cache.lookup(images)          # unique images only: batch.embeddings U x C x h x w
    emb_rows = batch.index                # for each input image, its row in batch.embeddings
    emb, sizes = cache.get_or_encode(images)   # or: one row per input image (B x C x h x w)

Thread-safety: every table operation holds one lock; encoding runs outside it. A key being encoded by
one thread is marked in flight, and other threads that need it wait for that result instead of encoding it
again, so each distinct image is encoded once however many threads ask for it.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import torch

from samr1.io import InputError, load_image
from samr1.lru import ByteLRU
from samr1.store import (
    EmbeddingStore,
    StoreError,
    StoreRowError,
    StoreWarning,
    default_hash,
    encoder_precision,
    image_key,
)

__all__ = ["EmbeddingCache", "EmbeddingBatch", "DEFAULT_CACHE_BYTES", "check_resizable"]

# 2 GiB holds 512 float32 256x64x64 embeddings (4 MiB each): several GRPO steps' worth of distinct images.
DEFAULT_CACHE_BYTES = 2 << 30

_Entry = tuple[torch.Tensor, tuple[int, int]]


def check_resizable(arr: Any, frame: int | None, field: str) -> None:
    """Raise :class:`InputError` when an ``H x W (x C)`` image cannot be encoded at model frame ``frame``: its
    short side resizes to 0 px (e.g. 1 x 3000 at frame 1024). Said as an input error naming ``field`` instead
    of failing deep inside the resize. ``frame`` None (unknown) checks nothing."""
    if frame is None:
        return
    h, w = arr.shape[:2]
    scale = frame / max(h, w)
    if int(h * scale + 0.5) < 1 or int(w * scale + 0.5) < 1:
        raise InputError(f"{field}: a {h}x{w} image resizes to less than 1 px on its short side in the "
                         f"{frame} x {frame} model frame; its aspect ratio is too extreme for SAM")


@dataclass
class EmbeddingBatch:
    """The result of :meth:`EmbeddingCache.lookup`.

    Attributes:
        embeddings: ``U x C x h x w`` float32 on the cache device, one row per distinct image, in order of
            first occurrence.
        input_sizes: ``U`` resized ``(h, w)`` before padding to the model frame (for postprocessing).
        index: ``B`` ints: ``index[i]`` is the row of ``embeddings`` for the i-th requested image.
        keys: ``U`` cache keys (content key of each distinct image).
        original_sizes: ``U`` ``(H, W)`` of each distinct image as given (for postprocessing and for
            checking ground-truth masks against their image).
    """

    embeddings: torch.Tensor
    input_sizes: list[tuple[int, int]]
    index: list[int]
    keys: list[str]
    original_sizes: list[tuple[int, int]]


class EmbeddingCache:
    """Content-keyed LRU cache of SAM image embeddings in front of an image encoder (and optionally a store).

    Args:
        encoder: a :class:`samr1.sam.encoder.ImageEncoder` (``make_encoder(...)``).
        cache_bytes: budget for resident embeddings (float32 bytes on ``device``). A budget smaller than one
            embedding still works: results are returned, nothing is kept. 0 disables keeping anything.
        device: where embeddings are kept and returned (default: the encoder's device).
        store: an :class:`~samr1.store.EmbeddingStore` read before encoding (same model id required).
            Store hits are float16-rounded embeddings converted to float32.

    ``stats`` counts per requested image: ``cache_hits`` (served from memory: resident, a repeat within the
    call, or another thread's in-flight encode) + ``cache_misses`` (distinct images looked up further) =
    images requested; misses are served by the store (``store_hits``) or the encoder (``encoder_images``,
    in ``encoder_calls`` calls). ``store_nonfinite`` counts store rows found non-finite when read (each is
    re-encoded with a :class:`~samr1.store.StoreWarning`, and counted in ``encoder_images``, not in
    ``store_hits``); ``store_damaged`` counts store rows that failed their first-read check (digest or input
    size; :class:`~samr1.store.StoreRowError`), re-encoded the same way. ``evictions``, ``bytes_held``,
    ``entries`` describe the LRU.
    """

    def __init__(self, encoder: Any, cache_bytes: int = DEFAULT_CACHE_BYTES, device: str | torch.device | None = None,
                 store: EmbeddingStore | None = None) -> None:
        if int(cache_bytes) < 0:
            raise ValueError(f"cache_bytes must be >= 0, got {cache_bytes}")
        for attr in ("encode", "input_sizes", "model_id"):
            if not hasattr(encoder, attr):
                raise TypeError(f"encoder must be an ImageEncoder (samr1.sam.encoder.make_encoder); "
                                f"{type(encoder).__name__} has no {attr!r}")
        self.encoder = encoder
        self.model_id: str = encoder.model_id
        self.capacity = int(cache_bytes)
        self.device = torch.device(device) if device is not None else torch.device(encoder.device)
        if store is not None:
            store.require(kind="sam")  # a SAM 2 store's rows are not SAM embeddings (StoreError naming 'kind')
            if store.model_id != self.model_id:
                raise StoreError(f"embedding store {store.path} was built with SAM model {store.model_id!r} but the "
                                 f"encoder's model is {self.model_id!r}; use the matching store or rebuild it")
            shape = getattr(encoder, "embedding_shape", None)
            if shape is not None and tuple(store.shape) != tuple(shape):
                raise StoreError(f"embedding store {store.path} holds {store.shape} embeddings, the encoder "
                                 f"produces {tuple(shape)}")
            name = getattr(encoder, "name", None)
            if (store.encoder is not None and name is not None
                    and encoder_precision(store.encoder) != encoder_precision(name)):
                # same weights, other precision: usable, but not bit-comparable with fresh encodes
                warnings.warn(f"embedding store {store.path} was written by encoder {store.encoder!r} "
                              f"({encoder_precision(store.encoder)}), this engine encodes misses with {name!r} "
                              f"({encoder_precision(name)}): embeddings from the store and fresh ones differ at "
                              "the less precise of the two", stacklevel=3)
        self.store = store
        # The store fixes the hash (its keys must match ours); without one the fastest available.
        self.hash = store.hash if store is not None else default_hash()
        self._lock = threading.Lock()
        self._lru: ByteLRU[_Entry] = ByteLRU(self.capacity, lambda e: e[0].numel() * e[0].element_size())
        self._inflight: dict[str, Future] = {}
        self._counts = dict.fromkeys(
            ("encoder_images", "encoder_calls", "cache_hits", "cache_misses", "evictions", "store_hits",
             "store_nonfinite", "store_damaged"), 0)

    # --- keys ---

    def content_key(self, image: Any) -> str:
        """Pixel-content key of ``image`` (see :func:`samr1.store.image_key`): what the store is keyed by."""
        return image_key(load_image(image), self.hash)

    def key(self, image: Any) -> str:
        """Cache key: model id + content key (equal pixels and shape -> equal key)."""
        return f"{self.model_id}|{self.content_key(image)}"

    # --- lookups ---


    def lookup(self, images: Sequence[Any], fields: Sequence[str] | None = None) -> EmbeddingBatch:
        """Embeddings of the distinct images among ``images`` and the row of each requested image.

        Each image may be an ``H x W x 3`` uint8 RGB array, a PIL image or a path. All distinct misses are
        encoded in one encoder call. ``fields``: each image's name in errors (default ``images[i]``).
        """
        images = list(images)
        if fields is None:
            fields = [f"images[{i}]" for i in range(len(images))]
        # Hash each distinct object once (the same array object repeated G times in a GRPO batch), then
        # deduplicate by content.
        by_obj: dict[int, str] = {}
        arrays: dict[str, Any] = {}
        order: list[str] = []
        image_keys: list[str] = []
        for i, img in enumerate(images):
            k = by_obj.get(id(img))
            if k is None:
                arr = load_image(img, field=fields[i])
                check_resizable(arr, getattr(self.encoder, "frame", None), fields[i])
                k = f"{self.model_id}|{image_key(arr, self.hash)}"
                by_obj[id(img)] = k
                if k not in arrays:
                    arrays[k] = arr
                    order.append(k)
            image_keys.append(k)
        counts: dict[str, int] = {}
        for k in image_keys:
            counts[k] = counts.get(k, 0) + 1

        found: dict[str, _Entry] = {}
        waits: dict[str, Future] = {}
        mine: list[str] = []
        with self._lock:
            for k in order:
                entry = self._lru.get(k)
                if entry is not None:
                    found[k] = entry
                    self._counts["cache_hits"] += counts[k]
                elif k in self._inflight:
                    waits[k] = self._inflight[k]
                    self._counts["cache_hits"] += counts[k]
                else:
                    self._inflight[k] = Future()
                    mine.append(k)
                    self._counts["cache_misses"] += 1
                    self._counts["cache_hits"] += counts[k] - 1

        if mine:
            try:
                fresh = self._fill(mine, arrays)
            except BaseException as exc:
                with self._lock:
                    for k in mine:
                        self._inflight.pop(k).set_exception(exc)
                raise
            with self._lock:
                for k in mine:
                    self._insert(k, fresh[k])
                    self._inflight.pop(k).set_result(fresh[k])
            found.update(fresh)
        for k, fut in waits.items():
            found[k] = fut.result()  # another thread's encode of the same image; re-raises its error

        rows = {k: i for i, k in enumerate(order)}
        if order:
            emb = torch.stack([found[k][0] for k in order])
        else:
            emb = torch.empty((0, *getattr(self.encoder, "embedding_shape", (0, 0, 0))), device=self.device)
        return EmbeddingBatch(emb, [found[k][1] for k in order], [rows[k] for k in image_keys], order,
                              [tuple(arrays[k].shape[:2]) for k in order])

    def get_or_encode(self, images: Sequence[Any]) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        """Embeddings ``B x C x h x w`` float32 on ``device`` in the order given, and the ``B`` input sizes.

        Repeated and equal images are encoded once; all misses of the call are encoded in one encoder call.
        """
        batch = self.lookup(images)
        index = torch.as_tensor(batch.index, dtype=torch.long, device=batch.embeddings.device)
        return batch.embeddings.index_select(0, index), [batch.input_sizes[i] for i in batch.index]

    def _fill(self, keys: list[str], arrays: dict[str, Any]) -> dict[str, _Entry]:
        """Embeddings for ``keys`` (none resident): from the store when it has them, the rest in one encode."""
        out: dict[str, _Entry] = {}
        todo = []
        for k in keys:
            content = k.rsplit("|", 1)[1]
            try:
                got = self.store.get_with_size(content) if self.store is not None else None
            except StoreRowError as exc:
                # The row is not what was written (digest or input size): encode the image afresh, and say so.
                warnings.warn(f"{exc}; re-encoding the image. Rebuild the store with samr1 embed into a new folder",
                              StoreWarning, stacklevel=4)
                with self._lock:
                    self._counts["store_damaged"] += 1
                got = None
            if got is not None and not bool(torch.isfinite(got[0]).all()):
                # A damaged row (disk corruption, a file edited outside samr1) would give NaN logits and a
                # silent IoU of 0: encode the image afresh instead, and say so.
                warnings.warn(f"embedding store {self.store.path}: the row of image {content} holds non-finite "
                              "values (NaN or inf); re-encoding the image. The store is damaged: rebuild it with "
                              "samr1 embed into a new folder", StoreWarning, stacklevel=4)
                with self._lock:
                    self._counts["store_nonfinite"] += 1
                got = None
            if got is not None:
                out[k] = (got[0].to(self.device, torch.float32), tuple(got[1]))
                with self._lock:
                    self._counts["store_hits"] += 1
            else:
                todo.append(k)
        if todo:
            imgs = [arrays[k] for k in todo]
            emb = self.encoder.encode(imgs).to(self.device, torch.float32)
            sizes = self.encoder.input_sizes(imgs)
            with self._lock:
                self._counts["encoder_calls"] += 1
                self._counts["encoder_images"] += len(todo)
            for i, k in enumerate(todo):
                # A clone per row: a view would pin the whole batch tensor after other rows are evicted.
                out[k] = (emb[i].clone(), tuple(sizes[i]))
        return out

    def _insert(self, key: str, entry: _Entry) -> None:
        """Insert under the lock, evicting least recently used entries until the budget holds."""
        if key in self._lru:
            return  # already resident: an equal image was encoded first (equal content, equal embedding)
        # an entry larger than the whole budget is returned to its caller but not kept
        self._counts["evictions"] += self._lru.put(key, entry)

    # --- inspection ---

    @property
    def stats(self) -> dict[str, Any]:
        """Counters (see the class docstring) plus ``bytes_held``, ``entries``, ``capacity_bytes``, ``encoder``."""
        with self._lock:
            return {**self._counts, "bytes_held": self._lru.nbytes, "entries": len(self._lru),
                    "capacity_bytes": self.capacity, "encoder": getattr(self.encoder, "name", None)}

    def keys(self) -> list[str]:
        """Resident keys, least recently used first."""
        with self._lock:
            return self._lru.keys()

    def __len__(self) -> int:
        return len(self._lru)

    def __contains__(self, image_or_key: Any) -> bool:
        key = image_or_key if isinstance(image_or_key, str) and "|" in image_or_key else self.key(image_or_key)
        with self._lock:
            return key in self._lru

    def clear(self) -> None:
        """Drop every resident embedding (counters are kept)."""
        with self._lock:
            self._lru.clear()
