"""Build-once artefacts (ONNX exports, TensorRT engines): where they live, how they are keyed and verified.

Layout::

    <cache root>/<kind>/<model-slug>-<key digest>/
        key.json            sidecar: {"key": {...}, "files": {name: {"size": n, "digest": "alg:hex"}}}
        <artefact files>    e.g. encoder.onnx + encoder.onnx.data, or encoder.engine

The cache root is, in order: the ``cache_dir`` argument (``--cache-dir``), the ``SAMR1_CACHE_DIR``
environment variable, ``~/.cache/samr1``.

The key is a JSON-able dict that names everything the artefact depends on: model id, input shape, device
capability, library versions, build options. Its digest is part of the folder name, so a changed key
(new weights, a torch upgrade, another GPU) simply lands in a new folder and builds anew; the sidecar's
copy of the key is compared field by field on every load, so a stale folder is never loaded. Each file's
size and content digest are checked on load too: a corrupt or truncated file is reported (a
:class:`ArtifactWarning` naming the file) and rebuilt.

Files and folders are created with the user's umask (``umask 022``: readable by everyone, ``027``: by the
group), so a team can share one read-only cache; loading a verified artefact writes nothing.

Writes are atomic: an artefact is built in a temporary folder beside its final place, the sidecar is
written last, and the folder is renamed into place. A crash leaves only a ``.tmp-*`` folder, never a
half-written artefact at the final path; two processes building the same key at once both succeed (the
second one keeps the first one's folder).
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import samr1.hashing as hashing
from samr1.hashing import default_algorithm

__all__ = [
    "ENV_VAR",
    "SIDECAR",
    "Artifact",
    "ArtifactWarning",
    "atomic_write_bytes",
    "atomic_write_json",
    "cache_root",
    "device_capability",
    "file_digest",
    "get_or_build",
    "key_digest",
    "library_versions",
    "make_temp_dir",
    "slug",
]

ENV_VAR = "SAMR1_CACHE_DIR"
SIDECAR = "key.json"
_FORMAT = 1  # bump when the sidecar layout changes; part of every key check

T = TypeVar("T")


class ArtifactWarning(RuntimeWarning):
    """A cached artefact was stale, corrupt or unloadable and is being rebuilt; the message names it."""


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The artefact cache root: ``cache_dir`` if given, else ``$SAMR1_CACHE_DIR``, else ``~/.cache/samr1``."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    return Path("~/.cache/samr1").expanduser()


def library_versions(*names: str) -> dict[str, str | None]:
    """``{name: version or None}`` for importable modules (None: not installed). Imports lazily."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = str(importlib.import_module(name).__version__)
        except Exception:  # noqa: BLE001 - absence (or a broken install) is recorded, not fatal
            out[name] = None
    return out


def device_capability(device: Any) -> dict[str, Any]:
    """What a device-specific artefact depends on: for CUDA the GPU name, compute capability and CUDA version."""
    import torch

    dev = torch.device(device)
    if dev.type == "cuda":
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        major, minor = torch.cuda.get_device_capability(index)
        return {"type": "cuda", "name": torch.cuda.get_device_name(index), "capability": f"{major}.{minor}",
                "cuda": torch.version.cuda}
    return {"type": dev.type}


def key_digest(key: dict[str, Any]) -> str:
    """16 hex characters identifying ``key`` (canonical JSON, blake2b)."""
    blob = json.dumps(key, sort_keys=True, separators=(",", ":"), default=str).encode()
    h = hashing.new_hasher("blake2b", digest_size=8)
    h.update(blob)
    return h.hexdigest()


def slug(text: str, max_len: int = 48) -> str:
    """``text`` reduced to a safe folder-name fragment (``"vit_b:ab12"`` -> ``"vit_b-ab12"``)."""
    s = re.sub(r"[^A-Za-z0-9_.]+", "-", text).strip("-.")
    return (s or "model")[:max_len]


def file_digest(path: str | os.PathLike, algorithm: str | None = None) -> str | None:
    """``"alg:hex"`` content digest of a file (None when ``algorithm`` is not available here).

    xxh3 hashes ~10 GB/s, blake2b ~1 GB/s: the difference is seconds for a ViT-H export (2.5 GB) on every
    load. xxhash is optional; the algorithm is recorded with the digest so either reads back correctly."""
    algorithm = algorithm or default_algorithm()
    try:
        return f"{algorithm}:{hashing.file_digest(path, algorithm)}"
    except (ImportError, ValueError):  # xxh3 recorded but xxhash not installed here, or an unknown name
        return None


def _temp_name(folder: Path, prefix: str, suffix: str = "") -> Path:
    return folder / f"{prefix}{uuid.uuid4().hex[:12]}{suffix}"


def make_temp_dir(parent: str | os.PathLike, prefix: str) -> Path:
    """A new empty folder in ``parent``, created with the user's umask.

    ``tempfile.mkdtemp`` would create it 0700 whatever the umask, and the folder keeps that mode when it is
    renamed into place: a team's shared cache would then be unreadable to everyone but its builder."""
    parent = Path(parent)
    for _ in range(100):
        tmp = _temp_name(parent, prefix)
        try:
            os.mkdir(tmp, 0o777)  # the kernel applies the umask
            return tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary folder in {parent}")


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (best effort: some file systems cannot fsync a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder + ``os.replace`` (atomic on POSIX).

    The file is created with the user's umask (``tempfile.mkstemp`` would make it 0600 whatever the umask,
    and ``os.replace`` keeps that mode), its data is fsynced before the rename, and the folder after it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(100):
        tmp = _temp_name(path.parent, f".{path.name}.", ".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            break
        except FileExistsError:
            continue
    else:
        raise FileExistsError(f"could not create a temporary file beside {path}")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Atomically write ``obj`` as JSON (see :func:`atomic_write_bytes`)."""
    atomic_write_bytes(path, json.dumps(obj, indent=1, sort_keys=True, default=str).encode())


@dataclass(frozen=True)
class Artifact:
    """A verified artefact folder. ``built`` is True when this process built it (False: loaded from cache)."""

    path: Path
    key: dict[str, Any]
    built: bool

    def file(self, name: str) -> Path:
        return self.path / name


def _diff_keys(a: dict[str, Any], b: dict[str, Any]) -> str:
    fields = sorted(set(a) | set(b))
    diffs = [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in fields if a.get(k) != b.get(k)]
    return "; ".join(diffs[:4]) + (" ..." if len(diffs) > 4 else "")


def _verify(folder: Path, key: dict[str, Any]) -> str | None:
    """None when ``folder`` holds an intact artefact built for ``key``, else the reason (naming the file)."""
    sidecar = folder / SIDECAR
    try:
        meta = json.loads(sidecar.read_text())
        stored_key = meta["key"]
        files = meta["files"]
    except FileNotFoundError:
        return f"{sidecar} is missing (incomplete artefact)"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"{sidecar} is unreadable ({type(exc).__name__}: {exc})"
    if meta.get("format") != _FORMAT:
        return f"{sidecar} has sidecar format {meta.get('format')!r}, expected {_FORMAT}"
    # Round-trip the expected key through JSON so tuples compare equal to the lists JSON gives back.
    expected = json.loads(json.dumps(key, sort_keys=True, default=str))
    if stored_key != expected:
        return f"stale artefact: the key in {sidecar} differs ({_diff_keys(stored_key, expected)})"
    if not files:
        return f"{sidecar} lists no files"
    for name, info in files.items():
        f = folder / name
        try:
            size = f.stat().st_size
        except FileNotFoundError:
            return f"{f} is missing"
        if size != info.get("size"):
            return f"{f} is corrupt: size {size} bytes, expected {info.get('size')}"
        algorithm = str(info.get("digest", "")).split(":", 1)[0]
        got = file_digest(f, algorithm)
        if got is None:
            return f"{f} cannot be verified: digest algorithm {algorithm!r} is not available here"
        if got != info.get("digest"):
            return f"{f} is corrupt: content digest differs from the one recorded when it was built"
    return None


def _remove(folder: Path) -> None:
    """Remove ``folder``; renamed aside first so that a concurrent reader never sees it half-deleted."""
    if not folder.exists():
        return
    trash = folder.with_name(f".trash-{folder.name}-{uuid.uuid4().hex[:8]}")
    try:
        os.rename(folder, trash)
    except OSError:
        return  # someone else removed or replaced it first
    shutil.rmtree(trash, ignore_errors=True)


def _build(folder: Path, key: dict[str, Any], build: Callable[[Path], None]) -> None:
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(folder.parent, f".tmp-{folder.name}-")
    try:
        build(tmp)
        files = {}
        for f in sorted(tmp.iterdir()):
            if f.is_file() and f.name != SIDECAR:
                files[f.name] = {"size": f.stat().st_size, "digest": file_digest(f)}
        if not files:
            raise RuntimeError(f"artefact builder for {folder} wrote no files")
        # The sidecar is written last: its presence means the folder is complete.
        atomic_write_json(tmp / SIDECAR, {"format": _FORMAT, "key": key, "files": files})
        try:
            os.rename(tmp, folder)
        except OSError:
            # The folder exists: another process finished first, or a bad one is still there.
            if _verify(folder, key) is None:
                shutil.rmtree(tmp, ignore_errors=True)
                return
            _remove(folder)
            os.rename(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def artifact_dir(kind: str, key: dict[str, Any], cache_dir: str | os.PathLike | None = None) -> Path:
    """Where the artefact of ``kind`` for ``key`` lives (it may not exist yet)."""
    label = slug(str(key.get("model_id", kind)))
    return cache_root(cache_dir) / kind / f"{label}-{key_digest(key)}"


def get_or_build(kind: str, key: dict[str, Any], build: Callable[[Path], None],
                 load: Callable[[Path], T] | None = None, *,
                 cache_dir: str | os.PathLike | None = None) -> tuple[Artifact, T | None]:
    """Return the verified artefact for ``key`` (building it when missing) and, with ``load``, the loaded object.

    Args:
        kind: artefact family, a folder under the cache root ("onnx", "tensorrt").
        key: everything the artefact depends on (JSON-able); see the module docstring.
        build: ``build(folder)`` writes the artefact's files into the (temporary) ``folder``.
        load: ``load(folder)`` turns the folder into the object to use (an ORT session, a TRT engine). When it
            raises on a cached artefact, the artefact is reported and rebuilt once; when it raises on a fresh
            build, the error propagates.
        cache_dir: the cache root override (see :func:`cache_root`).

    Returns:
        ``(Artifact, loaded object or None)``.

    Warns:
        ArtifactWarning naming the file when a cached artefact is stale, corrupt or unloadable.
    """
    folder = artifact_dir(kind, key, cache_dir)
    built = False
    if folder.exists():
        reason = _verify(folder, key)
        if reason is not None:
            warnings.warn(f"samr1: {kind} artefact {reason}; rebuilding it", ArtifactWarning, stacklevel=2)
            _remove(folder)
    if not folder.exists():
        _build(folder, key, build)
        built = True
    if load is None:
        return Artifact(folder, key, built), None
    try:
        obj = load(folder)
    except Exception as exc:
        if built:
            raise RuntimeError(f"samr1: the freshly built {kind} artefact in {folder} could not be loaded: "
                               f"{type(exc).__name__}: {exc}") from exc
        warnings.warn(f"samr1: {kind} artefact in {folder} could not be loaded ({type(exc).__name__}: {exc}); "
                      "rebuilding it", ArtifactWarning, stacklevel=2)
        _remove(folder)
        _build(folder, key, build)
        built = True
        obj = load(folder)
    return Artifact(folder, key, built), obj
