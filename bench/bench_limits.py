"""What samr1's safety limits cost: the embedding store's row checks and index appends, and ``samr1 serve``'s
memory under its cache caps and its ``/score`` key lookups (CPU only).

Three parts, one record each row (``part``):

- ``store-read``: reading one store row, SAM v1 (256 x 64 x 64) and SAM 2 (three maps, 8 MiB) in float16,
  with each image-key hash: the plain copy out of the memory map (the reference: what a read cost before
  rows were checked), the FIRST read of a row through ``EmbeddingStore.get_parts`` (copy + input-size check
  + digest) and a later read of the same row (checked once per open store). Rows are in the page cache
  (just written), so the figures are the check's CPU cost, not the disk's.
- ``store-flush``: publishing one new row in a store of n rows: the append to ``index.log`` that a flush
  does now, against writing the whole ``index.json`` (what every flush did before, and what a fold does now
  once the log holds as many rows as index.json).
- ``serve``: a real server (uvicorn on 127.0.0.1, the tiny-shapes SAM) with both caches capped
  (``blob_bytes``, ``cache_bytes``); a bounded loop of ``/score`` requests, each with a NEW image and mask
  (the worst case for both caches), from ``SamR1Client`` threads in the same process. The process RSS is
  sampled as requests go; ``resolve-items`` times ``SamR1Service.resolve_score`` on requests of n new keys.

    python -m samr1.bench.bench_limits [--quick | --smoke] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from samr1.bench.harness import format_table, measure, save_and_plot

LAYOUTS = {  # name -> store layout of one row (float16), kind
    "sam-v1 256x64x64": ([("image_embed", (256, 64, 64))], "sam"),
    "sam2 3 maps": ([("image_embed", (256, 64, 64)), ("high_res_s0", (32, 256, 256)),
                     ("high_res_s1", (64, 128, 128))], "sam2"),
}
SMOKE_LAYOUT = {"smoke 16x8x8": ([("image_embed", (16, 8, 8))], "sam")}


def _rss_mb() -> float:
    with open("/proc/self/status", encoding="utf-8") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def store_reads(layouts: dict, rows: int, repeats: int) -> list[dict]:
    """Per-row read times: unchecked copy (reference), first checked read, later read; and the check's verdict
    on an intact and a damaged row (``check_ok``)."""
    from samr1.hashing import ALGORITHMS
    from samr1.store import EmbeddingStore, StoreRowError, row_digest

    out = []
    rng = np.random.default_rng(0)
    for name, (layout, kind) in layouts.items():
        for alg in ALGORITHMS:
            try:
                from samr1.hashing import new_hasher

                new_hasher(alg)
            except ImportError:
                continue
            with tempfile.TemporaryDirectory() as d:
                frame = 1024
                store = EmbeddingStore.create(d, "m", layout[0][1], frame, hash=alg, kind=kind, layout=layout)
                keys = [f"k{i}" for i in range(rows)]
                for k in keys:  # one row at a time: a SAM 2 row is 8 MiB
                    parts = [rng.standard_normal((1, *s)).astype(np.float16) for _, s in layout]
                    store.put([k], parts if len(parts) > 1 else parts[0], [(frame, frame)])
                store.close()
                mb = sum(int(np.prod(s)) for _, s in layout) * 2 / 2**20
                # the reference: the plain copy out of the map that a read was before rows were checked
                values = sum(int(np.prod(s)) for _, s in layout)
                mm = np.memmap(os.path.join(d, "embeddings.f16"), np.float16, "r")[:rows * values].reshape(rows, -1)
                plains, firsts, laters = [], [], []
                for _ in range(repeats + 1):  # interleaved rounds (a shared CPU drifts); the first is warm-up
                    t0 = time.perf_counter()
                    for row in mm:
                        np.array(row)
                    t1 = time.perf_counter()
                    fresh = EmbeddingStore.open(d, "m", kind=kind)  # nothing verified yet
                    t2 = time.perf_counter()
                    for k in keys:
                        fresh.get_parts(k)
                    t3 = time.perf_counter()
                    for k in keys:
                        fresh.get_parts(k)
                    t4 = time.perf_counter()
                    plains.append(t1 - t0)
                    firsts.append(t3 - t2)
                    laters.append(t4 - t3)
                plain, first, later = (float(np.median(v[1:])) for v in (plains, firsts, laters))
                # the check's own CPU cost: the digest of each row, from memory
                copies = [np.array(row) for row in mm]
                size = (frame, frame)
                digest = measure(lambda c=copies, ks=keys, a=alg, sz=size: [row_digest(a, k, sz, r) for k, r in
                                                                            zip(ks, c, strict=True)],
                                 warmup=1, repeats=repeats).median
                with open(os.path.join(d, "embeddings.f16"), "r+b") as f:  # damage the last row: must be caught
                    f.seek(int((rows - 1) * mb * 2**20) + 10)
                    f.write(b"\x00\x7c")
                damaged = EmbeddingStore.open(d, "m", kind=kind)
                try:
                    damaged.get_parts(keys[-1])
                    caught = False
                except StoreRowError:
                    caught = True
                intact = damaged.get_parts(keys[0]) is not None
            out.append({"part": "store-read", "layout": name, "hash": alg, "row_mb": round(mb, 3), "rows": rows,
                        "plain_ms_per_row": plain / rows * 1e3, "first_ms_per_row": first / rows * 1e3,
                        "later_ms_per_row": later / rows * 1e3, "digest_ms_per_row": digest / rows * 1e3,
                        "digest_gb_s": mb / 1024 / max(digest / rows, 1e-12), "check_ok": caught and intact})
    return out


def store_flushes(sizes: list[int], repeats: int) -> list[dict]:
    """Seconds to publish one more row in a store of n rows: index.log append vs a whole index.json write."""
    from samr1.artifacts import atomic_write_json
    from samr1.store import EmbeddingStore

    out = []
    rng = np.random.default_rng(1)
    for n in sizes:
        with tempfile.TemporaryDirectory() as d:
            store = EmbeddingStore.create(d, "m", (2, 3, 4), 64)
            chunk = 4096
            for start in range(0, n, chunk):
                m = min(chunk, n - start)
                store.put([f"k{start + i}" for i in range(m)], rng.standard_normal((m, 2, 3, 4)), [(64, 64)] * m)
            store.flush()  # folded into index.json: the log starts empty
            added = [0]

            def append_one(store=store, added=added) -> None:
                added[0] += 1
                store.put([f"new{added[0]}"], rng.standard_normal((1, 2, 3, 4)), [(64, 64)])
                store.flush()

            append = measure(append_one, warmup=1, repeats=repeats).median
            store.close()
            # the reference: the whole index rewritten (every flush did this before the log; a fold does it now)
            index = os.path.join(d, "index.json")
            with open(index, encoding="utf-8") as f:
                meta = json.load(f)
            whole = measure(lambda i=index, m=meta: atomic_write_json(i, m), warmup=1, repeats=repeats).median
            size_mb = os.path.getsize(index) / 2**20
        out.append({"part": "store-flush", "rows": n, "index_mb": round(size_mb, 2), "append_s": append,
                    "whole_index_s": whole, "speedup": whole / append if append > 0 else float("nan")})
    return out


def serve_memory(requests: int, side: int, cap_mb: int, clients: int, samples: int) -> list[dict]:
    """RSS of this process (server + clients) over ``requests`` /score calls, each with a new image and mask."""
    from samr1.client import SamR1Client
    from samr1.engine import SamEngine
    from samr1.sam import load_sam
    from samr1.serve import ServerConfig, ServerThread, create_app

    cap = cap_mb << 20
    engine = SamEngine(load_sam("tiny-shapes"), cache_bytes=cap)
    app = create_app(engine, config=ServerConfig(blob_bytes=cap))
    service = app.state.service
    rows = []
    rng = np.random.default_rng(2)
    comp = (f'<think>t</think><answer>{{"bbox": [10, 10, {side // 2}, {side // 2}], '
            f'"points_1": [{side // 4}, {side // 4}]}}</answer>')
    with ServerThread(app) as srv:
        client = SamR1Client(srv.url)

        def one(_: int) -> None:
            img = rng.integers(0, 255, (side, side, 3), dtype=np.uint8)
            mask = np.zeros((side, side), bool)
            mask[side // 8: side // 2, side // 8: side // 2] = True
            client.score([comp], [img], [mask])

        every = max(1, requests // samples)
        t0 = time.perf_counter()
        rows.append({"part": "serve", "requests": 0, "rss_mb": _rss_mb(), "blob_mb": 0.0, "cache_mb": 0.0,
                     "cap_mb": cap_mb, "side": side, "seconds": 0.0})
        with ThreadPoolExecutor(clients) as pool:
            for done in range(every, requests + 1, every):
                list(pool.map(one, range(every)))
                st = engine.cache.stats
                rows.append({"part": "serve", "requests": done, "rss_mb": _rss_mb(),
                             "blob_mb": service.blobs.bytes_held / 2**20, "cache_mb": st["bytes_held"] / 2**20,
                             "blob_evictions": service.blobs.stats["evictions"], "cache_evictions": st["evictions"],
                             "cap_mb": cap_mb, "side": side, "seconds": time.perf_counter() - t0})
    return rows


def resolve_items(counts: list[int], repeats: int) -> list[dict]:
    """Seconds of ``resolve_score`` on a request of n items, every image and mask key new (both looked up)."""
    from samr1.engine import SamEngine
    from samr1.sam import load_sam
    from samr1.serve import ServerConfig
    from samr1.serve.app import SamR1Service

    service = SamR1Service(SamEngine(load_sam("tiny-shapes")), config=ServerConfig())
    out = []
    try:
        for n in counts:
            items = [{"image": f"b2:8x8x3:{i:032x}", "completion": "x", "mask": f"m:8x8:{i:032x}"} for i in range(n)]
            t = measure(lambda items=items: service.resolve_score(items), warmup=1, repeats=repeats).median
            out.append({"part": "resolve-items", "items": n, "resolve_s": t, "us_per_item": t / n * 1e6})
    finally:
        service.close()
    return out


def run(quick: bool = False, out: str | None = None, device: str = "cpu", smoke: bool = False,
        plot: bool = True) -> list[dict]:
    """Measure the three parts; returns their rows. Sizes: full: 16 rows per layout, flushes at 10k / 100k /
    1M rows, 1000 requests of 480 x 480 images under 64 MiB caps, lookups of 256..4096 items; ``quick``:
    4 rows, 10k / 100k, 200 requests of 240 x 240; ``smoke``: tiny rows, 1k, 8 requests of 64 x 64."""
    if str(device) != "cpu":
        print(f"note: these limits are CPU-side; --device {device} only labels the records")
    repeats = 1 if smoke else 3
    rows = store_reads(SMOKE_LAYOUT if smoke else LAYOUTS, 2 if smoke else 4 if quick else 16, repeats)
    print(format_table(rows, ["layout", "hash", "row_mb", "plain_ms_per_row", "first_ms_per_row",
                              "later_ms_per_row", "digest_ms_per_row", "digest_gb_s", "check_ok"]))
    print("store-read: plain = copy out of the map (no check, the reference); first = first read of a row (copy + "
          "input-size check + digest); later = the same row again; digest = the check's hash alone, from memory. "
          "Page cache warm.")
    flushes = store_flushes([1000] if smoke else [10_000, 100_000] if quick else [10_000, 100_000, 1_000_000],
                            repeats)
    print(format_table(flushes, ["rows", "index_mb", "append_s", "whole_index_s", "speedup"]))
    serve = serve_memory(8 if smoke else 200 if quick else 1000, 64 if smoke else 240 if quick else 480,
                         8 if smoke else 64, 2 if smoke else 4, 4 if smoke else 10)
    print(format_table(serve, ["requests", "rss_mb", "blob_mb", "cache_mb", "seconds"]))
    resolve = resolve_items([64, 256] if smoke else [256, 1024, 4096], repeats)
    print(format_table(resolve, ["items", "resolve_s", "us_per_item"]))
    rows += flushes + serve + resolve
    for r in rows:
        r["smoke"] = smoke
    ok = all(r["check_ok"] for r in rows if r["part"] == "store-read")
    capped = all(r["blob_mb"] <= r["cap_mb"] and r["cache_mb"] <= r["cap_mb"] for r in serve)
    print(f"row checks: intact rows read, a damaged row caught: {'OK' if ok else 'MISMATCH'}; caches within "
          f"their caps: {'OK' if capped else 'MISMATCH'}")
    from samr1.bench.plots import plot_limits

    save_and_plot(rows, out, "limits", "cpu", [lambda: plot_limits(rows, out)], plot)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes (about a minute)")
    ap.add_argument("--smoke", action="store_true", help="tiniest sizes, one repeat (checks, not speed)")
    ap.add_argument("--out", default=None, help="append JSON-lines records to DIR/limits.jsonl and plot")
    ap.add_argument("--device", default="cpu", help="recorded only: everything here runs on the CPU")
    args = ap.parse_args()
    run(quick=args.quick, out=args.out, device=args.device, smoke=args.smoke)


if __name__ == "__main__":
    main()
