"""``samr1 embed``: precompute the SAM image embeddings of a dataset into a memory-mapped store.

Reads a JSONL manifest (``{"image": ..., "query": ..., "mask": ...}`` per line), encodes every distinct
image once (batched) and appends float16 embeddings to ``--out`` (``embeddings.f16`` + ``index.json``).
Resumable: images already in the store are skipped, so an interrupted run continues where it stopped.
Point training at the store (``SamEngine(..., store=EmbeddingStore.open(DIR, model_id))``) and the
encoder never runs for this dataset.
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor


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
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_run)


def _load(paths: list[str]):
    from samr1.io import load_image

    return [load_image(p, field="image", source=p) for p in paths]


def _run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from samr1.cli import resolve_device
    from samr1.data import read_manifest
    from samr1.sam import load_sam
    from samr1.sam.encoder import make_encoder
    from samr1.store import EmbeddingStore, StoreError

    if args.batch < 1:
        raise SystemExit(f"--batch must be >= 1, got {args.batch}")
    samples = read_manifest(args.data, require_mask=False)
    paths = list(dict.fromkeys(s.image for s in samples))  # distinct image files, manifest order
    device = resolve_device(args.device)
    sam = load_sam(args.sam, args.sam_checkpoint, device=device)
    enc = make_encoder(sam, backend=args.backend, device=device, dtype=args.dtype, cache_dir=args.cache_dir,
                       max_batch=args.batch)
    try:
        store = EmbeddingStore.create(args.out, enc.model_id, enc.embedding_shape, enc.frame, encoder=enc.name)
    except StoreError as exc:
        raise SystemExit(f"samr1 embed: {exc}") from None
    before = len(store)
    encoded = skipped = 0
    t0 = last_flush = time.perf_counter()
    chunks = [paths[i:i + args.batch] for i in range(0, len(paths), args.batch)]
    bar = tqdm(total=len(paths), unit="img", desc="embed", disable=args.no_progress, file=sys.stderr)
    # Decode the next chunk's files on a thread while the encoder runs on this one.
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(_load, chunks[0]) if chunks else None
        for ci in range(len(chunks)):
            images = pending.result()
            pending = pool.submit(_load, chunks[ci + 1]) if ci + 1 < len(chunks) else None
            keys = [store.key(img) for img in images]
            todo: dict[str, object] = {}
            for k, img in zip(keys, images, strict=True):
                if k not in store and k not in todo:
                    todo[k] = img
            skipped += len(images) - len(todo)
            if todo:
                imgs = list(todo.values())
                emb = enc.encode(imgs)
                store.put(list(todo), emb, enc.input_sizes(imgs))
                encoded += len(todo)
            if time.perf_counter() - last_flush > 30:  # bound the work lost to a crash to ~30 s
                store.flush()
                last_flush = time.perf_counter()
            bar.update(len(images))
    bar.close()
    store.flush()
    dt = time.perf_counter() - t0
    rate = f", {encoded / dt:.2f} img/s" if encoded and dt > 0 else ""
    print(f"{len(samples)} samples, {len(paths)} distinct image files: encoded {encoded}, skipped {skipped} "
          f"(already in the store or repeated){rate}")
    print(f"store {store.path}: {len(store)} embeddings (was {before}), model {store.model_id}, "
          f"shape {store.shape} float16, encoder {enc.name}")
    store.close()
    return 0
