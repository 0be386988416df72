"""``samr1 embed``: precompute the SAM image embeddings of a dataset into a memory-mapped store.

Reads a JSONL manifest (``{"image": ..., "query": ..., "mask": ...}`` per line), encodes every distinct
image once (batched) and appends float16 embeddings to ``--out`` (``embeddings.f16`` + ``index.json``).
Resumable: images already in the store are skipped, so an interrupted run continues where it stopped.
Point training at the store (``SamEngine(..., store=DIR)``) and the encoder never runs for this dataset.

With a SAM 2 kind (``--sam sam2.1_hiera_t``, ...) each row holds every map SAM 2's decoder reads (the image
embedding and the two high-resolution feature maps, 8 MiB per image in float16) and the store is a
``"sam2"`` store: only a SAM 2 engine of the same model reads it, and a SAM v1 engine refuses it.

--out is a new or empty folder, or a store this command wrote (then it is resumed). A folder holding
anything else (an unrelated index.json, a stray embeddings.f16 without its index, other files) is refused
before anything is written there; --overwrite replaces the store files there instead (other files stay).

One writer per store: while a run writes a store it holds the store's lock (writer.lock). A second
``samr1 embed`` on the same --out is refused at once, with a message naming the running one (pid, host,
start time, command); with --wait SECONDS it waits up to that long, then resumes from what the first one
wrote. Reading a store (training, evaluation) needs no lock and may run alongside a writer.

An image that cannot be used (missing, unreadable, refused by the encoder) stops the run with an error
naming the manifest line; every row encoded before it is committed to the store first, so a rerun
resumes there. With --skip-bad-rows such images are skipped instead, counted, and listed at the end.
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

# How many bad rows the end-of-run report lists one by one (the count is always complete).
_REPORT_ROWS = 20


def register(sub: argparse._SubParsersAction) -> None:
    from samr1.cli import add_model_flags

    p = sub.add_parser("embed", help="precompute SAM image embeddings of a dataset manifest into a store",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, metavar="MANIFEST", help="JSONL manifest (one sample a line)")
    p.add_argument("--out", required=True, metavar="DIR", help="store folder (created, or resumed when it exists)")
    add_model_flags(p)
    p.add_argument("--backend", default="torch", choices=["torch", "onnx", "tensorrt"],
                   help="image-encoder backend (default: torch)")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                   help="encoder precision (default: the backend's: float32 for torch/onnx, float16 for tensorrt)")
    p.add_argument("--batch", type=int, default=8, metavar="N", help="images per encoder call (default: 8)")
    p.add_argument("--cache-dir", metavar="DIR", help="artefact cache root for onnx/tensorrt")
    p.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                   help="when another process is writing the store, wait up to SECONDS for it to finish, then "
                        "resume (default: 0, refuse at once and name that process)")
    p.add_argument("--skip-bad-rows", action="store_true",
                   help="skip images that cannot be read or encoded (missing, corrupt, extreme aspect ratio), "
                        "count them and list them at the end, instead of stopping at the first one")
    p.add_argument("--overwrite", action="store_true",
                   help="start the store afresh: replace the store files in --out (embeddings.f16, index.json, "
                        "index.log) instead of resuming, or refusing a folder that holds other store files")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_run)


def _load(paths: list[str], sources: dict[str, str], frame: int | None) -> list[tuple[str, Any]]:
    """``(path, H x W x 3 uint8 array or the exception that made it unusable)`` per path, in order."""
    from samr1.engine.cache import check_resizable
    from samr1.io import load_image

    out: list[tuple[str, Any]] = []
    for p in paths:
        try:
            arr = load_image(p, field="image", source=sources[p])
            check_resizable(arr, frame, f"image ({sources[p]})")
            out.append((p, arr))
        except Exception as exc:  # noqa: BLE001 - per-row: reported (and raised without --skip-bad-rows)
            out.append((p, exc))
    return out


def _check_store_folder(out: str, overwrite: bool) -> None:
    """Before anything is written (the lock file included): ``out`` must be new, empty, or a readable store
    (resumed), unless ``overwrite`` (samr1.outdirs' rule; the store's own lock file does not count)."""
    import os

    from samr1.outdirs import check_run_dir
    from samr1.store import EmbeddingStore

    is_store = os.path.isfile(os.path.join(out, "index.json"))
    if is_store and not overwrite:
        # an unrelated or damaged index.json is refused here (StoreError naming it), not after taking the lock
        EmbeddingStore.open(out, None, kind=None).close()
    check_run_dir(out, flag="--out", resume=is_store and not overwrite, overwrite=overwrite, ignore=("writer.lock",),
                  resume_flag=None)


# What --overwrite replaces: the store's data and index (never its lock file, which a waiting writer may hold open).
_REPLACED = ("embeddings.f16", "index.json", "index.log")


def _row_maps(enc: Any, images: list[Any]) -> list[Any]:
    """The maps of the store rows of ``images``, each B x C x h x w, in the store's layout order: SAM's one
    embedding, or SAM 2's image embedding then its high-resolution maps (its encoder returns those first)."""
    out = enc.encode(images)
    if isinstance(out, (list, tuple)):
        *high_res, embed = out
        return [embed, *high_res]
    return [out]


def _run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from samr1.cli import check_output_dir, resolve_device
    from samr1.data import read_manifest
    from samr1.io import InputError
    from samr1.outdirs import claim_run_dir
    from samr1.sam import load_sam
    from samr1.sam.encoder import make_encoder
    from samr1.sam.sam2_build import is_sam2_model
    from samr1.store import EmbeddingStore, StoreLock

    if args.batch < 1:
        raise ValueError(f"--batch must be >= 1, got {args.batch}")
    if not args.wait >= 0 or args.wait == float("inf"):
        raise ValueError(f"--wait must be a finite number of seconds >= 0, got {args.wait}")
    check_output_dir(args.out, "--out")
    _check_store_folder(args.out, args.overwrite)
    # With --skip-bad-rows a missing image file is one more bad row; without, the manifest check fails fast,
    # before the model loads.
    samples = read_manifest(args.data, require_mask=False, check_files=not args.skip_bad_rows)
    sources: dict[str, str] = {}
    rows_of: dict[str, int] = {}
    for s in samples:
        sources.setdefault(s.image, s.source)
        rows_of[s.image] = rows_of.get(s.image, 0) + 1
    paths = list(sources)  # distinct image files, manifest order
    # The lock first: a second writer is refused (or queued) in a second, not after minutes of model loading.
    lock = StoreLock.acquire(args.out, wait=args.wait)
    try:
        if args.overwrite:  # under the lock: no other writer is using these files
            claim_run_dir(args.out, records=_REPLACED, overwrite=True)
        device = resolve_device(args.device)
        sam = load_sam(args.sam, args.sam_checkpoint, device=device)
        if is_sam2_model(sam):
            from samr1.engine.sam2_engine import store_layout
            from samr1.sam.sam2_encoder import make_sam2_encoder

            enc = make_sam2_encoder(sam, backend=args.backend, device=device, dtype=args.dtype,
                                    cache_dir=args.cache_dir, max_batch=args.batch)
            layout = store_layout(enc)
            store = EmbeddingStore.create(args.out, enc.model_id, layout[0][1], enc.frame, encoder=enc.name,
                                          lock=lock, kind="sam2", layout=layout)
        else:
            enc = make_encoder(sam, backend=args.backend, device=device, dtype=args.dtype, cache_dir=args.cache_dir,
                               max_batch=args.batch)
            store = EmbeddingStore.create(args.out, enc.model_id, enc.embedding_shape, enc.frame, encoder=enc.name,
                                          lock=lock)
    except BaseException:
        lock.release()
        raise
    before = len(store)
    encoded = skipped = 0
    bad: list[tuple[str, str]] = []  # (image path, reason naming the manifest line)

    def reject(path: str, exc: BaseException) -> None:
        if not isinstance(exc, InputError):  # e.g. PIL's DecompressionBombError: still the row's fault
            exc = InputError(f"image ({sources[path]}): cannot use {path}: {type(exc).__name__}: {exc}")
        if not args.skip_bad_rows:
            raise exc
        bad.append((path, str(exc)))

    t0 = last_flush = time.perf_counter()
    chunks = [paths[i:i + args.batch] for i in range(0, len(paths), args.batch)]
    bar = tqdm(total=len(paths), unit="img", desc="embed", disable=args.no_progress, file=sys.stderr)
    try:
        # Decode the next chunk's files on a thread while the encoder runs on this one.
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = pool.submit(_load, chunks[0], sources, enc.frame) if chunks else None
            for ci in range(len(chunks)):
                loaded = pending.result()
                pending = pool.submit(_load, chunks[ci + 1], sources, enc.frame) if ci + 1 < len(chunks) else None
                todo: dict[str, tuple[str, Any]] = {}
                for path, img in loaded:
                    if isinstance(img, BaseException):
                        reject(path, img)
                        continue
                    k = store.key(img)
                    if k in store or k in todo:
                        skipped += 1
                    else:
                        todo[k] = (path, img)
                if todo:
                    imgs = [img for _, img in todo.values()]
                    parts = _row_maps(enc, imgs)  # an encoder failure is no row's fault: flushed below, then raised
                    sizes = [(enc.frame, enc.frame)] * len(imgs) if store.kind == "sam2" else enc.input_sizes(imgs)
                    # float16 is what the store keeps: a value beyond its range would read back as inf.
                    ok = [all(v) for v in zip(*[(p.detach().float().cpu().flatten(1).abs() <= 65504).all(1).tolist()
                                                for p in parts], strict=True)]
                    keep = []
                    for i, (path, _) in enumerate(todo.values()):
                        if ok[i]:
                            keep.append(i)
                        else:
                            reject(path, InputError(
                                f"image ({sources[path]}): the {enc.name} encoder gave non-finite values "
                                f"(NaN, inf, or beyond float16's range) for {path}; nothing of it was stored"))
                    keys = list(todo)
                    store.put([keys[i] for i in keep], [p[keep] for p in parts], [sizes[i] for i in keep])
                    encoded += len(keep)
                if time.perf_counter() - last_flush > 30:  # bound the work lost to a crash to ~30 s
                    store.flush()
                    last_flush = time.perf_counter()
                bar.update(len(loaded))
    finally:
        bar.close()
        # Whatever stopped the run (a bad image, an encoder error, Ctrl-C), the rows encoded so far are
        # committed before the error is reported, so a rerun resumes after them. close() releases the lock.
        store.close()
    dt = time.perf_counter() - t0
    rate = f", {encoded / dt:.2f} img/s" if encoded and dt > 0 else ""
    bad_rows = sum(rows_of[p] for p, _ in bad)
    print(f"{len(samples)} samples, {len(paths)} distinct image files: encoded {encoded}, skipped {skipped} "
          f"(already in the store or repeated), bad {len(bad)} image files ({bad_rows} rows){rate}")
    print(f"store {store.path}: {len(store)} embeddings (was {before}), model {store.model_id}, "
          f"shape {store.shape} float16{' + the high-res maps (a sam2 store)' if store.kind == 'sam2' else ''}, "
          f"encoder {enc.name}")
    if bad:
        print(f"samr1 embed: skipped {bad_rows} bad rows ({len(bad)} image files) with --skip-bad-rows:",
              file=sys.stderr)
        for _, reason in bad[:_REPORT_ROWS]:
            print(f"  {reason}", file=sys.stderr)
        if len(bad) > _REPORT_ROWS:
            print(f"  ... and {len(bad) - _REPORT_ROWS} more image files", file=sys.stderr)
    return 0
