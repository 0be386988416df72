"""Persistent embedding store: precomputed SAM image embeddings for a dataset, memory-mapped from disk.

Layout of a store folder::

    embeddings.f16   raw float16 array, one flat row per image (numpy memmap; grows by doubling)
    index.json       {"format", "model_id", "encoder", "kind", "layout": [[name, [C, h, w]], ...],
                      "shape": [C, h, w], "dtype": "float16", "frame", "hash", "rows": n,
                      "keys": {image key: row}, "input_sizes": [[h, w] per row], "digests": [hex per row]}
    index.log        rows added since index.json was written, one JSON line each:
                      [row, image key, h, w, digest] (appended on flush; folded into index.json when it
                      holds as many rows as index.json, so index writes stay proportional to the rows added)
    writer.lock      the writer lock (``fcntl.flock``); its text names the process holding it

A row is the concatenation of the feature maps listed in ``layout``, in that order (C-contiguous each);
``shape`` is the first one's, the image embedding. ``kind`` says which model family the row is for:

* ``"sam"`` (SAM v1): one map, ``[["image_embed", [256, 64, 64]]]`` upstream; input sizes are the resized
  (h, w) before padding to the frame. Stores written before ``kind`` / ``layout`` were recorded are this.
* ``"sam2"`` (SAM 2): the three maps SAM 2's decoder reads (:mod:`samr1.sam.sam2_encoder`,
  :func:`samr1.engine.sam2_engine.store_layout`): ``image_embed`` (256 x 64 x 64, ``no_mem_embed`` added),
  ``high_res_s0`` (32 x 256 x 256), ``high_res_s1`` (64 x 128 x 128); 8 MiB per image in float16. SAM 2
  squashes every image to the whole frame, so every input size is ``[frame, frame]``.

Opening a store names the kind it must be (:meth:`EmbeddingStore.open` ``kind=``, ``"sam"`` by default), so a
SAM v1 store is never read as a SAM 2 one or the other way round, even before the model ids are compared.

``samr1 embed`` fills a store; :class:`samr1.engine.cache.EmbeddingCache` reads it before encoding, so
training on a known dataset never runs the encoder. A store is tied to one model id: opening it for another
model is refused (embeddings of other weights would silently give wrong masks). It also records the encoder
that wrote it (``ImageEncoder.name``: ``"torch-fp32"``, ``"onnxruntime-cpu"``, ``"tensorrt-fp16"``, ...).
What matters of it is the compute precision (:func:`encoder_precision`): resuming a store with an encoder
of another precision is refused (one store, one precision; fp32 backends mix freely, the store keeps
float16 anyway), and reading it from an engine that encodes misses at another precision warns (store hits
and fresh encodes then differ at the less precise of the two).

One writer at a time: a writable store holds an exclusive ``fcntl.flock`` on ``writer.lock`` from
:meth:`EmbeddingStore.create` until :meth:`~EmbeddingStore.close` (or until its process dies: the kernel
drops the lock then, so a crashed writer never leaves a stale lock behind). A second writer is refused at
once with a :class:`StoreLockedError` naming the holder (pid, host, start time, command), or, given
``wait=SECONDS``, waits up to that long and then resumes from the index the first writer left. Readers
(:meth:`EmbeddingStore.open`) take no lock and write nothing, so a store on a read-only file system or
in another user's read-only folder is readable.

Writes are resumable and never visible half-done: rows are written to the memmap and flushed (``msync``)
first, and only then is the index that points at them published (temporary file, ``fsync``,
``os.replace``), so a reader sees either the old index or the new one, and every row an index lists is
complete on disk. A crash loses at most the rows since the last :meth:`~EmbeddingStore.flush`. Embeddings
are stored as float16 (2 MB per 256 x 64 x 64 embedding instead of 4 MB); SAM's embeddings come out of a
LayerNorm, so float16's ~5e-4 relative precision is far below what changes a mask. SAM 2's maps (|values|
up to ~3 for sam2.1_hiera_t) round the same way: 40 box / point prompts on two small images, decoded from
float16-rounded instead of float32 features, moved IoUs by at most 2.9e-4 (random weights) and 7.6e-5 (a
decoder with trained-looking logits up to +-87); tests/test_sam2_parity.py holds a stored engine to 5e-3 of
the float32 one.

The index is validated field by field when a store is opened: a damaged or hand-edited index is a
:class:`StoreError` naming the field, never a crash later on.

Every row is checked the first time it is read: its digest (the store's ``hash`` over the image key, the
input size and the row's bytes, recorded when the row was written) must match, and its input size must be
what the image's own size (in its key) and the frame give. A zeroed, random or truncated row, two keys
swapped in the index, or an edited input size therefore fail that row's first read with a
:class:`StoreRowError` (the engines re-encode the image and warn with a :class:`StoreWarning`); a row is
verified once per open store. Stores written before digests were recorded (format 1) are read with one
warning that their rows cannot be checked; resuming one with ``samr1 embed`` records digests of its rows.

Files and folders are created with the user's umask (a team can share a store read-only).

Image keys (:func:`image_key`) hash the pixel content and shape, so equal pixels hit whatever object or
file they come from.
"""

from __future__ import annotations

import datetime
import errno
import json
import math
import os
import socket
import sys
import threading
import time
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from samr1.artifacts import atomic_write_json
from samr1.geometry import resize_longest_side
from samr1.hashing import ALGORITHMS, array_digest, default_algorithm, new_hasher

__all__ = ["EmbeddingStore", "StoreError", "StoreLockedError", "StoreWriteError", "StoreRowError", "StoreLock",
           "StoreWarning", "image_key", "default_hash", "encoder_precision", "row_digest", "HASHES", "KINDS",
           "STORE_FILES"]

_FORMAT = 2  # 2: per-row digests and the append-only index.log
_READABLE = (1, 2)  # format 1 (no digests) is read, unverified, with a warning; a writer upgrades it
_DATA = "embeddings.f16"
_INDEX = "index.json"
_LOG = "index.log"
_LOCK = "writer.lock"
STORE_FILES = (_DATA, _INDEX, _LOG, _LOCK)
"""The files of a store folder (what ``samr1 embed --overwrite`` replaces, the lock excepted)."""
_MAX_DIGEST = 128  # hex characters: more than any supported hash gives
HASHES = ALGORITHMS
# Bounds that keep a hand-edited index from asking for absurd allocations: 2**31 float16 values (4 GiB) per
# row is ~250x SAM's 256 x 64 x 64, and no SAM frame is near 65536 px.
_MAX_ROW_VALUES = 1 << 31
_MAX_FRAME = 1 << 16
_F16_MAX = 65504.0
KINDS = ("sam", "sam2")
"""Store kinds: the model family a row is for (see the module docstring); ``"sam"`` when an index has none."""
# Most feature maps one row may hold (SAM 2 uses three): bounds what a hand-edited layout can ask for.
_MAX_LAYOUT = 8


class StoreError(ValueError):
    """An embedding store cannot be used as asked (other model, other shape, missing or damaged files)."""


class StoreLockedError(StoreError):
    """Another process is writing the store. ``holder`` is what its lock file says about it (``pid``,
    ``host``, ``started`` (UTC, ISO 8601), ``command``), or None when it could not be read."""

    def __init__(self, message: str, holder: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.holder = holder


class StoreWriteError(StoreError):
    """The store folder cannot be created or written (permissions, a read-only file system): an output
    problem, where other :class:`StoreError` s are about the store's content."""


class StoreRowError(StoreError):
    """One row of a store failed its check on first read (digest or input size): the store is damaged there.
    ``key`` is the image key; callers re-encode that image (and warn), the other rows stay usable."""

    def __init__(self, message: str, key: str) -> None:
        super().__init__(message)
        self.key = key


class StoreWarning(RuntimeWarning):
    """A store row could not be used as read (e.g. non-finite values) and was recomputed; the message says
    which store and image."""


def default_hash() -> str:
    """``"xxh3_128"`` when the optional xxhash package is installed (about 10x faster), else ``"blake2b"``."""
    return default_algorithm()


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
    if algorithm not in HASHES:
        raise ValueError(f"unknown image hash {algorithm!r}; choose one of {list(HASHES)}")
    short = "x".join(map(str, arr.shape))
    return f"{'xxh3' if algorithm == 'xxh3_128' else 'b2'}:{short}:{array_digest(arr, algorithm)}"


def row_digest(algorithm: str, key: str, input_size: Sequence[int], row: np.ndarray) -> str:
    """Digest of one store row: ``algorithm`` (the store's ``hash``) over the image key, the input size and the
    row's float16 bytes, so a changed row, a row read under another key and an edited size all differ."""
    h = new_hasher(algorithm)
    h.update(f"{key}\0{int(input_size[0])}x{int(input_size[1])}\0".encode("utf-8", "surrogatepass"))
    h.update(memoryview(np.ascontiguousarray(row, dtype=np.float16)).cast("B"))
    return h.hexdigest()


def expected_input_size(key: str, kind: str, frame: int) -> tuple[int, int] | None:
    """The input size a row of image ``key`` must have: SAM v1 resizes the longest side of the image's ``H x W``
    (named in the key, see :func:`image_key`) to ``frame``; SAM 2 squashes every image to ``frame x frame``.
    None when the key does not name a size (keys made outside :func:`image_key`)."""
    if kind == "sam2":
        return frame, frame
    parts = key.split(":")
    dims = parts[1].split("x") if len(parts) == 3 else []
    if len(dims) < 2 or not all(d.isdigit() and 0 < len(d) < 10 for d in dims[:2]) or "0" in (dims[0], dims[1]):
        return None
    return resize_longest_side(int(dims[0]), int(dims[1]), frame)


# ------------------------------------------------------------------------------------------ writer lock


def _describe_holder(holder: dict[str, Any] | None) -> str:
    if not holder:
        return "holder unknown: its lock file names no process yet"
    mine = holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname()
    parts = [f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}"
             + (" (this process: close() its other writable EmbeddingStore first)" if mine else ""),
             f"since {holder.get('started', '?')}"]
    if holder.get("command"):
        parts.append(f"running `{holder['command']}`")
    return ", ".join(parts)


class StoreLock:
    """The exclusive writer lock of one store folder: ``fcntl.flock`` on ``<folder>/writer.lock``.

    The lock belongs to the open file: it is released by :meth:`release`, when the object is garbage
    collected, or when the process exits or is killed (the kernel drops it), so no stale lock survives a
    crash. The file's text is a JSON line naming the holder (pid, host, UTC start time, command) for the
    message another writer gets; the file itself is never deleted (deleting a lock file while another
    process waits on it would let two writers in).

    Use :meth:`acquire`; :meth:`EmbeddingStore.create` does it for you (``samr1 embed`` takes it before
    loading the model, so a second writer is refused in seconds, not after minutes of loading).
    """

    def __init__(self, path: Path, file: Any, info: dict[str, Any]) -> None:
        self.path = path
        self.info = info
        self._file = file

    @classmethod
    def acquire(cls, path: str | os.PathLike, wait: float = 0.0, poll: float = 0.2) -> StoreLock:
        """Lock the store folder ``path`` for writing (creating the folder when missing).

        Args:
            path: the store folder.
            wait: seconds to wait for another writer to finish (0: refuse at once).
            poll: seconds between attempts while waiting.

        Raises:
            StoreLockedError: another process holds the lock (after ``wait`` seconds); the message names it.
            StoreWriteError: the folder cannot be created or written (read-only store or file system).
            ValueError: ``wait`` is negative or not finite.
        """
        wait = float(wait)
        if not math.isfinite(wait) or wait < 0:
            raise ValueError(f"wait must be a finite number of seconds >= 0, got {wait}")
        import fcntl

        path = Path(path)
        lock_path = path / _LOCK
        try:
            path.mkdir(parents=True, exist_ok=True)
            # 0o666: the user's umask decides who else may read it, like any other file of the store.
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise StoreWriteError(f"cannot write embedding store {path}: {exc.strerror or exc} ({exc.filename or path}); "
                             "a read-only store can only be read (EmbeddingStore.open, or SamEngine(store=...)); "
                             "to add rows, copy it to a folder you can write or use another --out") from None
        file = os.fdopen(fd, "r+b")
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    file.close()
                    raise StoreError(f"cannot lock embedding store {path} ({lock_path}): {exc}") from None
            left = deadline - time.monotonic()
            if left <= 0:
                file.close()
                holder = cls.holder(path)
                waited = f" after waiting {wait:g} s" if wait > 0 else ""
                raise StoreLockedError(
                    f"embedding store {path} is being written by another writer ({_describe_holder(holder)})"
                    f"{waited}; one writer at a time keeps its rows and index consistent. Wait for it to "
                    "finish, or queue behind it with --wait SECONDS (EmbeddingStore.create(..., wait=...))",
                    holder)
            time.sleep(min(poll, left))
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "command": " ".join(sys.argv)[:300]}
        try:
            file.seek(0)
            file.truncate()
            file.write(json.dumps(info).encode() + b"\n")
            file.flush()
        except OSError:
            pass  # the lock itself is held; only the note for other writers is missing
        return cls(path, file, info)

    @staticmethod
    def holder(path: str | os.PathLike) -> dict[str, Any] | None:
        """What the lock file of store ``path`` says about its last holder, or None (no file, unreadable, or
        being rewritten). Meaningful while the lock is held; the note of a finished writer stays behind."""
        try:
            text = (Path(path) / _LOCK).read_text()
            info = json.loads(text)
        except (OSError, ValueError, RecursionError):
            return None
        return info if isinstance(info, dict) else None

    @property
    def held(self) -> bool:
        return self._file is not None and not self._file.closed

    def release(self) -> None:
        """Release the lock (idempotent)."""
        if self._file is not None:
            self._file.close()  # closing the last descriptor of the open file drops the flock
            self._file = None

    def __repr__(self) -> str:
        return f"StoreLock({str(self.path)!r}, held={self.held})"


# --------------------------------------------------------------------------------- index validation


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _validate_index(meta: Any, index: Path) -> dict[str, Any]:
    """Check every field of a parsed index; return it normalised (tuples, defaults).

    Raises:
        StoreError: naming ``index`` and the first bad field, with what it must be.
    """
    def bad(field: str, problem: str) -> StoreError:
        return StoreError(f"{index}: field {field!r} {problem}; the index is damaged: delete the store folder "
                          "and rebuild it with samr1 embed")

    if not isinstance(meta, dict):
        raise StoreError(f"{index} is not a samr1 embedding store index (a JSON object), got a JSON "
                         f"{type(meta).__name__}; delete the folder and run samr1 embed again")
    for field in ("format", "model_id", "shape", "frame", "hash", "rows", "keys", "input_sizes"):
        if field not in meta:
            raise bad(field, "is missing")
    if not _is_int(meta["format"]) or meta["format"] not in _READABLE:
        raise StoreError(f"{index}: field 'format' is {meta['format']!r}; this samr1 reads store formats "
                         f"{list(_READABLE)} only (rebuild the store with this samr1's samr1 embed)")
    model_id = meta["model_id"]
    if not isinstance(model_id, str) or not model_id:
        raise bad("model_id", f"must be a non-empty string, got {model_id!r}")
    encoder = meta.get("encoder")
    if encoder is not None and (not isinstance(encoder, str) or not encoder):
        raise bad("encoder", f"must be a non-empty string or null, got {encoder!r}")
    if meta.get("dtype", "float16") != "float16":
        raise bad("dtype", f"must be 'float16', got {meta.get('dtype')!r}")
    shape = meta["shape"]
    if (not isinstance(shape, list) or len(shape) != 3 or not all(_is_int(v) and v >= 1 for v in shape)
            or math.prod(shape) > _MAX_ROW_VALUES):
        raise bad("shape", f"must be [C, h, w], three integers >= 1 (at most {_MAX_ROW_VALUES} values), "
                           f"got {shape!r}")
    kind = meta.get("kind", "sam")  # stores written before kinds were recorded are SAM v1 stores
    if not isinstance(kind, str) or kind not in KINDS:
        raise bad("kind", f"must be one of {list(KINDS)} (the model family of the rows), got {kind!r}")
    if "layout" in meta:
        layout = _validate_layout(meta["layout"], kind, shape, bad)
    elif kind == "sam":
        layout = (("image_embed", tuple(shape)),)
    else:
        raise bad("layout", f"is missing; a {kind!r} store lists the feature maps of its rows")
    frame = meta["frame"]
    if not _is_int(frame) or not 1 <= frame <= _MAX_FRAME:
        raise bad("frame", f"must be an integer in 1..{_MAX_FRAME} (the model frame in px), got {frame!r}")
    if not isinstance(meta["hash"], str) or meta["hash"] not in HASHES:
        raise bad("hash", f"must be one of {list(HASHES)}, got {meta['hash']!r}")
    rows = meta["rows"]
    if not _is_int(rows) or rows < 0:
        raise bad("rows", f"must be an integer >= 0, got {rows!r}")
    keys = meta["keys"]
    if not isinstance(keys, dict):
        raise bad("keys", f"must be an object {{image key: row}}, got {type(keys).__name__}")
    if len(keys) != rows:
        raise bad("keys", f"lists {len(keys)} images but 'rows' is {rows} (every row belongs to one image)")
    seen: dict[int, str] = {}
    for key, row in keys.items():
        if not key:
            raise bad("keys", "holds an empty image key")
        if not _is_int(row) or not 0 <= row < rows:
            raise bad(f"keys[{key!r}]", f"must be a row number in 0..{rows - 1}, got {row!r}")
        if row in seen:
            raise bad(f"keys[{key!r}]", f"points at row {row}, which image {seen[row]!r} already uses")
        seen[row] = key
    sizes = meta["input_sizes"]
    if not isinstance(sizes, list) or len(sizes) != rows:
        got = f"{len(sizes)} entries" if isinstance(sizes, list) else type(sizes).__name__
        raise bad("input_sizes", f"must be a list of one [h, w] per row ({rows}), got {got}")
    for i, s in enumerate(sizes):
        if (not isinstance(s, list) or len(s) != 2
                or not all(_is_int(v) and 1 <= v <= frame for v in s)):
            raise bad(f"input_sizes[{i}]", f"must be [h, w], integers in 1..{frame} (the frame), got {s!r}")
    digests = None
    if meta["format"] >= 2:
        digests = meta.get("digests")
        if not isinstance(digests, list) or len(digests) != rows:
            got = f"{len(digests)} entries" if isinstance(digests, list) else ("missing" if digests is None
                                                                             else type(digests).__name__)
            raise bad("digests", f"must be a list of one digest per row ({rows}), got {got}")
        for i, d in enumerate(digests):
            if not _is_digest(d):
                raise bad(f"digests[{i}]", f"must be a hex digest string, got {d!r:.80}")
    return {"format": meta["format"], "model_id": model_id, "encoder": encoder, "kind": kind, "layout": layout,
            "shape": tuple(shape), "frame": frame, "hash": meta["hash"], "rows": rows, "keys": dict(keys),
            "input_sizes": [tuple(s) for s in sizes], "digests": digests}


def _is_digest(d: Any) -> bool:
    return (isinstance(d, str) and 0 < len(d) <= _MAX_DIGEST
            and all(c in "0123456789abcdef" for c in d))


def _validate_layout(layout: Any, kind: str, shape: list[int], bad: Any) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """Check an index's ``layout`` ([[name, [C, h, w]], ...], the feature maps of a row in order) against its
    ``kind`` and ``shape``; return it as a tuple of (name, shape). ``bad(field, problem)`` makes the error."""
    if not isinstance(layout, list) or not 1 <= len(layout) <= _MAX_LAYOUT:
        raise bad("layout", f"must be a list of 1..{_MAX_LAYOUT} [name, [C, h, w]] entries, got {layout!r:.200}")
    out: list[tuple[str, tuple[int, ...]]] = []
    for i, entry in enumerate(layout):
        if (not isinstance(entry, list) or len(entry) != 2 or not isinstance(entry[0], str) or not entry[0]
                or not isinstance(entry[1], list) or len(entry[1]) != 3
                or not all(_is_int(v) and v >= 1 for v in entry[1])):
            raise bad(f"layout[{i}]", f"must be [name, [C, h, w]] (a non-empty name, three integers >= 1), "
                                      f"got {entry!r:.200}")
        if any(entry[0] == name for name, _ in out):
            raise bad(f"layout[{i}]", f"repeats the name {entry[0]!r}")
        out.append((entry[0], tuple(entry[1])))
    if out[0] != ("image_embed", tuple(shape)):
        raise bad("layout", f"must start with ['image_embed', {shape}] (the image embedding, field 'shape'), "
                            f"got {layout[0]!r}")
    if kind == "sam" and len(out) != 1:
        raise bad("layout", f"of a 'sam' store holds the image embedding only, got {len(out)} maps")
    if sum(math.prod(s) for _, s in out) > _MAX_ROW_VALUES:
        raise bad("layout", f"asks for more than {_MAX_ROW_VALUES} values per row")
    return tuple(out)


def _read_index(path: Path) -> dict[str, Any]:
    index = path / _INDEX
    try:
        meta = json.loads(index.read_bytes())
    except FileNotFoundError:
        raise StoreError(f"no embedding store at {path} ({_INDEX} is missing); build one with "
                         "`samr1 embed --data MANIFEST --out DIR`") from None
    except (OSError, ValueError, RecursionError) as exc:
        # ValueError covers bad JSON and bad UTF-8; RecursionError a pathologically nested document.
        raise StoreError(f"{index} is unreadable ({type(exc).__name__}: {str(exc)[:200]}); delete the folder and "
                         "run samr1 embed again") from None
    meta = _validate_index(meta, index)
    _read_log(path, meta)
    return meta


def _read_log(path: Path, meta: dict[str, Any]) -> None:
    """Add the rows of ``index.log`` (appended since ``index.json`` was written) to the validated ``meta``; sets
    ``snapshot_rows`` (rows of index.json) and ``log_bytes`` (the log's committed length: a last line without
    its newline was still being written and is not part of the store).

    Raises:
        StoreError: naming ``index.log``, the line and what is wrong with it.
    """
    log = path / _LOG
    meta["snapshot_rows"], meta["log_bytes"] = meta["rows"], 0
    try:
        data = log.read_bytes()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StoreError(f"{log} is unreadable ({exc.strerror or exc}); the store cannot be read") from None
    end = data.rfind(b"\n") + 1
    if not end:
        return
    damaged = "; the index is damaged: delete the store folder and rebuild it with samr1 embed"
    if meta["digests"] is None:
        raise StoreError(f"{log} beside an index of format 1 (which has no log){damaged}")
    lines = data[:end].split(b"\n")[:-1]
    try:  # one parse for the whole log; a line that breaks it is found below
        entries = json.loads(b"[" + b",".join(lines) + b"]")
    except (ValueError, RecursionError):
        entries = None
    if not isinstance(entries, list) or len(entries) != len(lines):
        entries = []
        for n, line in enumerate(lines, start=1):
            try:
                entries.append(json.loads(line))
            except (ValueError, RecursionError):
                raise StoreError(f"{log}: line {n} is not a JSON line [row, image key, h, w, digest]{damaged}") from None
    keys, sizes, digests, frame = meta["keys"], meta["input_sizes"], meta["digests"], meta["frame"]
    for n, e in enumerate(entries, start=1):
        if not (isinstance(e, list) and len(e) == 5 and _is_int(e[0]) and isinstance(e[1], str) and e[1]
                and all(_is_int(v) and 1 <= v <= frame for v in e[2:4]) and _is_digest(e[4])):
            raise StoreError(f"{log}: line {n} must be [row, image key, h, w, digest] with h, w in 1..{frame}, got "
                             f"{e!r:.200}{damaged}")
        row, key, h, w, digest = e
        if row < len(sizes):  # a log not yet emptied after its rows went into index.json: must agree
            if keys.get(key) != row or sizes[row] != (h, w) or digests[row] != digest:
                raise StoreError(f"{log}: line {n} (row {row}) differs from that row in {_INDEX}{damaged}")
            continue
        if row != len(sizes):
            raise StoreError(f"{log}: line {n} is row {row}, expected row {len(sizes)} (rows are appended in "
                             f"order){damaged}")
        if key in keys:
            raise StoreError(f"{log}: line {n}: image key {key!r:.80} already has row {keys[key]}{damaged}")
        keys[key] = row
        sizes.append((h, w))
        digests.append(digest)
    meta["rows"], meta["log_bytes"] = len(sizes), end


def _require(path: Path, meta: dict[str, Any], model_id: str | None = None, kind: str | None = None,
             layout: Sequence[tuple[str, Sequence[int]]] | None = None) -> None:
    """Raise a :class:`StoreError` naming the field when the validated ``meta`` of store ``path`` is not of
    ``kind``, for ``model_id`` and with ``layout`` (None: not checked). The kind goes first: a SAM v1 store
    offered to a SAM 2 engine (or the other way round) is named as such, not as just another model."""
    if kind is not None and meta["kind"] != kind:
        raise StoreError(f"embedding store {path}: field 'kind' is {meta['kind']!r} but {kind!r} is needed: its rows "
                         f"are for {'SAM 2' if meta['kind'] == 'sam2' else 'SAM v1'} models and would give wrong "
                         "masks here. Use a store built with `samr1 embed --sam KIND` for the model in use")
    if model_id is not None and meta["model_id"] != model_id:
        raise StoreError(
            f"embedding store {path} (field 'model_id') was built with SAM model {meta['model_id']!r}, but the "
            f"model in use is {model_id!r}; its embeddings would give wrong masks. Use the matching model or "
            "rebuild the store with `samr1 embed` for this one")
    if layout is not None:
        want = tuple((str(n), tuple(int(v) for v in s)) for n, s in layout)
        if tuple(meta["layout"]) != want:
            raise StoreError(f"embedding store {path}: field 'layout' is {meta['layout']} but this model needs "
                             f"{want}; rebuild the store with `samr1 embed` for the model in use")


class EmbeddingStore:
    """Memory-mapped float16 embeddings keyed by :func:`image_key`, for one SAM model id.

    Use :meth:`create` (new or resumed store for writing; takes the writer lock) or :meth:`open` (existing
    store; read-only by default, no lock). ``get`` is safe from several threads; ``put`` serialises on a
    lock.

    Attributes:
        path: the store folder.
        model_id: the SAM model id the embeddings belong to.
        kind: the model family of the rows (:data:`KINDS`: ``"sam"`` or ``"sam2"``).
        layout: ``((name, (C, h, w)), ...)``: the feature maps of one row, the image embedding first.
        shape: ``(C, h, w)`` of one image embedding (the first map of the layout).
        frame: the model frame the images were resized into (input sizes are in this frame).
        hash: the image-key algorithm (use ``store.key(image)`` to compute matching keys).
        encoder: the encoder name (backend and precision) that wrote the embeddings, or None for a store
            written before this was recorded.
    """

    def __init__(self, path: Path, meta: dict[str, Any], writable: bool, lock: StoreLock | None = None) -> None:
        """Internal: ``meta`` is a validated index (:func:`_validate_index`); writers pass their lock."""
        if writable and (lock is None or not lock.held):
            raise StoreError(f"a writable store needs its writer lock; use EmbeddingStore.create({str(path)!r}, ...)")
        self.path = path
        self.model_id: str = meta["model_id"]
        self.kind: str = meta["kind"]
        self.layout: tuple[tuple[str, tuple[int, ...]], ...] = meta["layout"]
        self.shape: tuple[int, int, int] = tuple(meta["shape"])
        self.frame: int = meta["frame"]
        self.hash: str = meta["hash"]
        self.encoder: str | None = meta["encoder"]
        self.writable = writable
        self._writer_lock = lock
        self._keys: dict[str, int] = dict(meta["keys"])
        self._order: list[str] = [""] * len(self._keys)  # the key of each row (a flush logs rows by number)
        for key, row in self._keys.items():
            self._order[row] = key
        self._sizes: list[tuple[int, int]] = list(meta["input_sizes"])
        self._rows: int = meta["rows"]
        self._row_values = sum(math.prod(s) for _, s in self.layout)
        self._row_bytes = self._row_values * 2
        self._lock = threading.Lock()
        self._mm: np.memmap | None = None
        self._capacity = 0
        self._closed = False
        # Per-row digests (None: a format-1 store, rows unverifiable) and the rows checked so far this open.
        self._digests: list[str] | None = None if meta["digests"] is None else list(meta["digests"])
        self._verified: set[int] = set()
        # What the index on disk holds: rows in index.json, rows committed in all, bytes of index.log.
        self._snapshot_rows: int = meta.get("snapshot_rows", self._rows)
        self._committed: int = self._rows
        self._log_bytes: int = meta.get("log_bytes", 0)
        self._rewrite_index = False  # set when index.json itself must be rewritten at the next flush
        self._map()
        if writable:
            self._prepare_writer()
        elif self._digests is None and self._rows:
            warnings.warn(f"embedding store {path} was written before per-row digests were recorded (format 1): its "
                          f"{self._rows} rows cannot be checked for damage. Resume it with samr1 embed (same --out) "
                          "to record them, or rebuild it", StoreWarning, stacklevel=4)

    def _prepare_writer(self) -> None:
        """Before the first write: drop a log line that a stopped writer left half-written, and give a format-1
        store digests of its rows (taken as they are now), so that every row is checked from here on."""
        log = self.path / _LOG
        try:
            if log.exists() and log.stat().st_size != self._log_bytes:
                os.truncate(log, self._log_bytes)
        except OSError as exc:
            raise StoreWriteError(f"{log}: {exc.strerror or exc}; the store cannot be written") from None
        if self._digests is None:
            self._digests = [row_digest(self.hash, key, self._sizes[row], self._mm[row])
                             for key, row in sorted(self._keys.items(), key=lambda kv: kv[1])]
            self._rewrite_index = True

    # --- construction ---

    @classmethod
    def create(cls, path: str | os.PathLike, model_id: str, shape: Sequence[int], frame: int,
               hash: str | None = None, encoder: str | None = None, *, wait: float = 0.0,
               lock: StoreLock | None = None, kind: str = "sam",
               layout: Sequence[tuple[str, Sequence[int]]] | None = None) -> EmbeddingStore:
        """Open ``path`` for writing: a new store, or an existing one for ``model_id`` (resume).

        Takes the store's writer lock (held until :meth:`close`): when another process is writing the store,
        this waits up to ``wait`` seconds, then raises :class:`StoreLockedError` naming that process (0: at
        once). A lock already taken with :meth:`StoreLock.acquire` may be passed as ``lock``. The index is
        read after the lock is held, so a writer that waited resumes from everything the other one wrote.

        ``encoder`` (e.g. ``ImageEncoder.name``) is recorded in a new store; a resumed one must have been
        written at the same precision (:func:`encoder_precision`).

        ``kind`` (:data:`KINDS`) and ``layout`` (``[(name, (C, h, w)), ...]``, the feature maps of a row, the
        image embedding of shape ``shape`` first; default: that one map) describe the rows; a resumed store
        must have the same.

        Raises:
            StoreLockedError: another process holds the writer lock.
            StoreError: the folder holds a store for another model id, kind, layout, embedding shape or
                precision, its index is damaged, or it cannot be written.
        """
        path = Path(path)
        if lock is None:
            lock = StoreLock.acquire(path, wait)
        elif not lock.held or Path(lock.path).resolve() != path.resolve():
            raise ValueError(f"lock {lock!r} is not a held lock of store {path}")
        try:
            store = cls._create_locked(path, model_id, shape, frame, hash, encoder, lock, kind, layout)
        except BaseException:
            lock.release()
            raise
        return store

    @classmethod
    def _create_locked(cls, path: Path, model_id: str, shape: Sequence[int], frame: int, hash: str | None,
                       encoder: str | None, lock: StoreLock, kind: str,
                       layout: Sequence[tuple[str, Sequence[int]]] | None) -> EmbeddingStore:
        try:
            layout_json = [[str(name), [int(v) for v in s]] for name, s in
                           (layout if layout is not None else [("image_embed", shape)])]
        except (TypeError, ValueError):
            raise ValueError(f"layout must be [(name, (C, h, w)), ...], got {layout!r}") from None
        if (path / _INDEX).exists():
            store = cls._open_checked(path, model_id, writable=True, lock=lock, kind=kind)
            if store.shape != tuple(int(v) for v in shape) or store.frame != int(frame):
                raise StoreError(f"store {path} holds {store.shape} embeddings at frame {store.frame}, not "
                                 f"{tuple(shape)} at frame {frame}; use another --out folder")
            if [[n, list(s)] for n, s in store.layout] != layout_json:
                raise StoreError(f"store {path} (field 'layout') holds rows of {store.layout}, not {layout_json}; "
                                 "use another --out folder")
            if encoder is not None and store.encoder is not None and (
                    encoder_precision(store.encoder) != encoder_precision(encoder)):
                raise StoreError(f"store {path} was written by encoder {store.encoder!r} "
                                 f"({encoder_precision(store.encoder)}); resuming it with {encoder!r} "
                                 f"({encoder_precision(encoder)}) would mix two precisions in one store. Use "
                                 "the same dtype, or another --out folder")
            if store.encoder is None and encoder is not None:
                if len(store):
                    warnings.warn(f"store {path} predates encoder records: its {len(store)} embeddings were "
                                  f"written by an unknown encoder; resuming it with {encoder!r}", stacklevel=3)
                else:
                    store.encoder = encoder  # nothing written yet: adopt
                    store._rewrite_index = True
            return store
        strays = [n for n in (_DATA, _LOG) if (path / n).exists()]
        if strays:
            # Not a store samr1 wrote (create() writes index.json before any row), or one whose index was lost:
            # either way its bytes are the user's, never overwritten here.
            raise StoreError(f"{path} holds {' and '.join(strays)} but no {_INDEX}: not a store this samr1 can resume "
                             "(its index is missing). Move those files away, or choose another folder (samr1 embed "
                             "--overwrite replaces them)")
        meta = {"format": _FORMAT, "model_id": model_id, "encoder": encoder, "kind": kind, "layout": layout_json,
                "shape": [int(v) for v in shape], "dtype": "float16", "frame": int(frame),
                "hash": hash or default_hash(), "rows": 0, "keys": {}, "input_sizes": [], "digests": []}
        try:  # the arguments, checked as a reader will check them
            valid = _validate_index(meta, path / _INDEX)
        except StoreError as exc:
            raise ValueError(f"cannot create a store with shape {tuple(shape)!r}, frame {frame!r}, hash {hash!r}, "
                             f"model id {model_id!r}, encoder {encoder!r}, kind {kind!r}, layout {layout!r}: shape "
                             f"must be three integers >= 1, frame an integer >= 1, hash one of {list(HASHES)}, the "
                             f"ids non-empty strings, kind one of {list(KINDS)}, the layout's first map "
                             f"('image_embed', shape) ({str(exc).split(';')[0]})") from None
        atomic_write_json(path / _INDEX, meta)
        return cls(path, valid, writable=True, lock=lock)

    @classmethod
    def open(cls, path: str | os.PathLike, model_id: str | None, writable: bool = False, *,
             wait: float = 0.0, kind: str | None = "sam") -> EmbeddingStore:
        """Open an existing store built for ``model_id`` (None skips the check, e.g. to inspect a store).

        ``kind`` is the model family the rows must be for (:data:`KINDS`; ``"sam"``, SAM v1, by default;
        ``"sam2"`` for a SAM 2 engine; None accepts any, e.g. to inspect a store).

        Read-only (the default) takes no lock and writes nothing, so read-only folders and file systems work.
        ``writable=True`` takes the writer lock as :meth:`create` does (``wait`` as there).

        Raises:
            StoreError: no store there, a damaged index (the message names the field), a store of another
                kind (the message names field 'kind'), or a store built with another model id (the message
                names both ids).
            StoreLockedError: ``writable`` and another process is writing the store.
        """
        path = Path(path)
        if not writable:
            return cls._open_checked(path, model_id, writable=False, lock=None, kind=kind)
        if not (path / _INDEX).exists():  # do not create a folder (for the lock) where there is no store
            _read_index(path)
        lock = StoreLock.acquire(path, wait)
        try:
            return cls._open_checked(path, model_id, writable=True, lock=lock, kind=kind)
        except BaseException:
            lock.release()
            raise

    @classmethod
    def _open_checked(cls, path: Path, model_id: str | None, writable: bool,
                      lock: StoreLock | None, kind: str | None = "sam") -> EmbeddingStore:
        meta = _read_index(path)
        _require(path, meta, model_id=model_id, kind=kind)
        if meta["hash"] == "xxh3_128" and default_hash() != "xxh3_128":
            raise StoreError(f"store {path} keys images with {meta['hash']!r}, which is not available here "
                             "(pip install xxhash, or rebuild the store)")
        return cls(path, meta, writable=writable, lock=lock)

    def require(self, model_id: str | None = None, kind: str | None = None,
                layout: Sequence[tuple[str, Sequence[int]]] | None = None) -> None:
        """Check that this store is for ``model_id``, of ``kind`` and with rows of ``layout`` (None: not
        checked), as an engine does with a store it was handed open.

        Raises:
            StoreError: naming the first field that differs ('kind', 'model_id' or 'layout') and both values.
        """
        _require(self.path, {"kind": self.kind, "model_id": self.model_id, "layout": self.layout},
                 model_id=model_id, kind=kind, layout=layout)

    # --- memory map ---

    def _map(self, min_rows: int = 0) -> None:
        """(Re)map the data file, first growing it to ``min_rows`` rows when writable."""
        data = self.path / _DATA
        if self._mm is not None and self.writable:
            self._mm.flush()
        try:
            if self.writable:
                if not data.exists():
                    data.touch()
                if data.stat().st_size < min_rows * self._row_bytes:
                    with open(data, "r+b") as f:
                        f.truncate(min_rows * self._row_bytes)  # extends with zeros: unused rows
            size = data.stat().st_size if data.exists() else 0
        except OSError as exc:
            raise StoreError(f"{data}: {exc.strerror or exc}; the store cannot be read or grown") from None
        if size < self._rows * self._row_bytes:
            raise StoreError(f"{data} holds {size} bytes but the index lists {self._rows} rows of "
                             f"{self._row_bytes} bytes; the store is damaged, rebuild it with samr1 embed")
        capacity = size // self._row_bytes
        mm = None
        if capacity:
            try:
                mm = np.memmap(data, dtype=np.float16, mode="r+" if self.writable else "r",
                               shape=(capacity, self._row_values))
            except (OSError, ValueError) as exc:
                raise StoreError(f"{data} cannot be memory-mapped ({exc}); the store is damaged or unreadable") from None
        # Swapped in one assignment: a reader thread holding the old map keeps a valid view of the rows it
        # knows, and never sees a missing map in between.
        self._mm = mm
        self._capacity = capacity

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
        """The embedding for ``key`` as a ``C x h x w`` float16 CPU tensor (a copy), or None if absent.

        Raises:
            StoreRowError: the row fails its first-read check (see :meth:`get_parts`).
        """
        got = self.get_with_size(key)
        return None if got is None else got[0]

    def get_with_size(self, key: str) -> tuple[torch.Tensor, tuple[int, int]] | None:
        """``(embedding, input_size)`` for ``key`` or None; input_size is the resized (h, w) before padding.

        Raises:
            StoreRowError: the row fails its first-read check (see :meth:`get_parts`).
        """
        got = self._row(key)
        if got is None:
            return None
        flat, size = got
        return torch.from_numpy(flat[:math.prod(self.shape)].reshape(self.shape)), size

    def _row(self, key: str) -> tuple[np.ndarray, tuple[int, int]] | None:
        """A copy of the row of ``key`` (flat float16) and its input size, checked on its first read; or None."""
        row = self._keys.get(key)
        if row is None:
            return None
        mm = self._mm  # one reference: a concurrent grow swaps self._mm, the old map stays valid
        if mm is None:
            raise StoreError(f"embedding store {self.path} is closed; open it again to read")
        flat = np.array(mm[row])
        size = self._sizes[row]
        if row not in self._verified:
            self._check_row(row, key, size, flat)
        return flat, size

    def _check_row(self, row: int, key: str, size: tuple[int, int], flat: np.ndarray) -> None:
        """Raise :class:`StoreRowError` when row ``row`` of image ``key`` is not what was written: its input size
        disagrees with the image's size in its key, or its digest (over key, size and bytes) differs."""
        want = expected_input_size(key, self.kind, self.frame)
        if want is not None and tuple(size) != want:
            raise StoreRowError(f"embedding store {self.path}: row {row} of image {key} has input size {list(size)}, "
                                f"but the image's size (in its key) at frame {self.frame} gives {list(want)}: the "
                                "index is damaged there", key)
        if self._digests is not None and row_digest(self.hash, key, size, flat) != self._digests[row]:
            raise StoreRowError(f"embedding store {self.path}: row {row} of image {key} does not match the digest "
                                "recorded when it was written (its data, its key or its input size changed since): "
                                "the store is damaged there", key)
        self._verified.add(row)  # a set add is atomic under the GIL; two threads may both check a row once

    def get_parts(self, key: str) -> tuple[list[torch.Tensor], tuple[int, int]] | None:
        """``([one float16 CPU tensor per layout map, each of its (C, h, w)], input_size)`` for ``key``, or
        None if absent: every feature map of the row (a SAM 2 row: image embedding, then the high-resolution
        maps). Copies, as stored.

        The first read of a row checks it: its input size against the image's size in its key, and its digest
        (recorded when written) against the key, size and bytes read now.

        Raises:
            StoreRowError: that check failed (a zeroed or random row, keys swapped in the index, an edited
                input size); the engines re-encode the image and warn.
        """
        got = self._row(key)
        if got is None:
            return None
        flat, size = got
        parts, at = [], 0
        for _, shape in self.layout:
            n = math.prod(shape)
            parts.append(torch.from_numpy(flat[at:at + n].reshape(shape)))
            at += n
        return parts, size

    # --- writing ---

    def put(self, keys: Sequence[str], embeddings: torch.Tensor | np.ndarray | Sequence[torch.Tensor | np.ndarray],
            input_sizes: Iterable[Sequence[int]]) -> int:
        """Append embeddings (``B x C x h x w``, any float dtype/device) for ``keys``; keys already present are
        skipped. Returns the number of rows written. Call :meth:`flush` to make them durable and visible.

        A store whose layout has several maps (SAM 2) takes a list of ``B x C x h x w`` arrays, one per map in
        layout order; a one-map store takes the array itself (or a list of one).

        Raises:
            StoreError: the store is read-only or closed, or a row is not finite in float16 (NaN, inf, or
                beyond +-65504); nothing of the call is written then.
            ValueError: mismatched lengths, shapes, or an input size outside ``1..frame``.
        """
        if self._closed:
            raise StoreError(f"store {self.path} is closed")
        if not self.writable:
            raise StoreError(f"store {self.path} was opened read-only; use EmbeddingStore.create to write")
        sizes = [tuple(int(v) for v in s) for s in input_sizes]
        parts = list(embeddings) if isinstance(embeddings, (list, tuple)) else [embeddings]
        if len(parts) != len(self.layout):
            raise ValueError(f"store {self.path} rows hold {len(self.layout)} maps ({[n for n, _ in self.layout]}); "
                             f"put got {len(parts)}: pass one B x C x h x w array per map, in that order")
        for part, (name, shape) in zip(parts, self.layout, strict=True):
            if len(keys) != len(part) or len(keys) != len(sizes):
                raise ValueError(f"put needs as many keys ({len(keys)}), embeddings ({len(part)}) and input "
                                 f"sizes ({len(sizes)})")
            if tuple(part.shape[1:]) != shape:
                raise ValueError(f"embeddings of shape {tuple(part.shape[1:])} do not fit store {self.path} "
                                 f"of shape {shape}" + (f" (map {name!r})" if len(parts) > 1 else ""))
        if not keys:
            return 0
        for key, size in zip(keys, sizes, strict=True):
            if not isinstance(key, str) or not key:
                raise ValueError(f"store keys must be non-empty strings, got {key!r}")
            if len(size) != 2 or not all(1 <= v <= self.frame for v in size):
                raise ValueError(f"input size {size} of {key!r} is not (h, w) in 1..{self.frame} (the frame)")
        flat = []
        for part in parts:
            if isinstance(part, torch.Tensor):
                part = part.detach().to("cpu", torch.float16).numpy()
            with np.errstate(over="ignore"):  # overflow to inf is what the check below reports
                flat.append(np.asarray(part, dtype=np.float16).reshape(len(keys), -1))
        embeddings = flat[0] if len(flat) == 1 else np.concatenate(flat, axis=1)  # B x row values
        finite = np.isfinite(embeddings).all(axis=1)
        if not finite.all():
            bad = [k for k, ok in zip(keys, finite, strict=True) if not ok]
            raise StoreError(f"embeddings of {bad[:3]}{' ...' if len(bad) > 3 else ''} are not finite in float16 "
                             f"(NaN, inf, or beyond +-{_F16_MAX:g}); nothing of this call was written to "
                             f"{self.path}")
        written = 0
        with self._lock:
            for key, emb, size in zip(keys, embeddings, sizes, strict=True):
                if key in self._keys:
                    continue
                if self._rows >= self._capacity:
                    self._map(max(2 * self._capacity, self._rows + 1, 16))
                self._mm[self._rows] = emb
                self._digests.append(row_digest(self.hash, key, size, emb))
                self._sizes.append(size)
                self._order.append(key)
                # the key is published last: a reader thread that sees it finds the row and its size
                self._keys[key] = self._rows
                self._rows += 1
                written += 1
        return written

    def flush(self) -> None:
        """Flush the rows to disk, then publish the index entries that point at them.

        The order is what keeps readers safe: the data pages are synced (``msync``) before the rows' lines are
        appended to ``index.log`` (and synced), so no index ever lists a row that is not complete on disk.
        The log is folded into ``index.json`` (written atomically, then the log emptied) once it holds as many
        rows as ``index.json``: a flush costs the rows it adds, and index writes over a run stay proportional
        to the rows written (a whole-index rewrite per flush cost 5 s at 1 M rows)."""
        if not self.writable or self._closed:
            return
        with self._lock:
            if self._mm is not None:
                self._mm.flush()
            new = range(self._committed, self._rows)
            if new:  # cost proportional to the new rows only, not to the store
                lines = "".join(json.dumps([r, self._order[r], *self._sizes[r], self._digests[r]]) + "\n" for r in new)
                self._append_log(lines.encode("utf-8", "surrogatepass"))
                self._committed = self._rows
            if self._rewrite_index or self._committed - self._snapshot_rows >= max(1, self._snapshot_rows):
                self._write_snapshot()

    def _append_log(self, data: bytes) -> None:
        log = self.path / _LOG
        with open(log, "ab") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        self._log_bytes += len(data)

    def _write_snapshot(self) -> None:
        """index.json with every committed row (atomic replace), then an empty index.log (readers skip log lines
        that index.json already holds, so a stop between the two steps loses nothing)."""
        meta = {"format": _FORMAT, "model_id": self.model_id, "encoder": self.encoder, "kind": self.kind,
                "layout": [[name, list(s)] for name, s in self.layout], "shape": list(self.shape), "dtype": "float16",
                "frame": self.frame, "hash": self.hash, "rows": self._committed,
                "keys": {k: r for r, k in enumerate(self._order[:self._committed])},
                "input_sizes": [list(s) for s in self._sizes[:self._committed]],
                "digests": self._digests[:self._committed]}
        atomic_write_json(self.path / _INDEX, meta)
        log = self.path / _LOG
        if self._log_bytes or log.exists():
            with open(log, "r+b" if log.exists() else "wb") as f:
                f.truncate(0)
                f.flush()
                os.fsync(f.fileno())
        self._snapshot_rows, self._log_bytes, self._rewrite_index = self._committed, 0, False

    def close(self) -> None:
        """Flush (when writable), unmap, and release the writer lock. Idempotent."""
        if self._closed:
            return
        try:
            self.flush()
        finally:
            self._closed = True
            self._mm = None
            if self._writer_lock is not None:
                self._writer_lock.release()

    def __enter__(self) -> EmbeddingStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"EmbeddingStore({str(self.path)!r}, model_id={self.model_id!r}, encoder={self.encoder!r}, "
                f"entries={len(self)})")
