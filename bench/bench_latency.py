"""Inference latency: the reasoning-segmentation pipeline by stage, with and without encode/generate overlap,
and ``samr1 serve`` throughput with p50/p99 latency at 1, 8 and 32 concurrent clients (loopback).

Pipeline: a policy (``--model`` or a tiny random Qwen2.5-VL built in code) whose output is scripted through
generation itself (:class:`samr1.pipeline.ScriptedText`: an untrained policy never answers) and a SAM; the
embedding cache is off (``cache_bytes=0``) so every request really encodes its image. Stages per request:
generate, SAM encode (on its own thread when overlapped), wait for the encoder after generation, prompt
decode, postprocess, SAM's added latency after generation ends, total. Both modes run in the same process
on the same images; the ratio of totals is printed.

Server: SAM-only ``POST /segment`` requests (PNG upload + box) from N client threads over loopback,
``requests`` per client; throughput = requests / wall time; p50 / p99 of per-request latency. Repeated
images hit the server's embedding cache (as a real service's popular images would).

    python bench/bench_latency.py [--quick | --smoke] [--out DIR]      # or: samr1 bench latency
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import tempfile
import time

import numpy as np
from samr1.bench.harness import format_table, save_and_plot

STAGES = ("generate_s", "encode_s", "encode_wait_s", "decode_s", "postprocess_s", "sam_after_generate_s",
          "total_s")


def _scene_set(n: int, seed: int = 0):
    from samr1.shapes.scenes import make_scene

    out = []
    for i in range(n):
        sc = make_scene(seed + i, size=(240 + 8 * (i % 5), 320 - 8 * (i % 3)), n_objects=2)
        out.append((sc.image, sc.objects[-1].mask))
    return out


def _answer(mask: np.ndarray) -> str:
    """A completion that answers ``mask``'s object: its pixel-edge box and one inside point, 840 frame."""
    from samr1.geometry import mask_to_box

    h, w = mask.shape
    ys, xs = np.nonzero(mask)
    sx, sy = 840 / w, 840 / h
    x1, y1, x2, y2 = mask_to_box(mask, convention="edge")
    box = [int(x1 * sx), int(y1 * sy), int(x2 * sx), int(y2 * sy)]
    i = len(xs) // 2
    return (f'<think>it</think><answer>{{"bbox":{json.dumps(box)},"points":[[{int(xs[i] * sx)},'
            f'{int(ys[i] * sy)}]]}}</answer>')


def pipeline_rows(model_path: str | None, sam_kind: str, device: str, repeats: int, warmup: int = 1) -> list[dict]:
    """Median stage times with overlap off and on (one row each), same images, same process."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from samr1.engine import SamEngine
    from samr1.pipeline import ReasoningSegmenter, ScriptedText
    from samr1.sam import load_sam

    tmp = None
    if model_path is None:
        from samr1.train.tiny_policy import build_tiny_policy

        tmp = tempfile.TemporaryDirectory(prefix="samr1-bench-policy-")
        model_path = build_tiny_policy(tmp.name)
    model = AutoModelForImageTextToText.from_pretrained(model_path).to(device)
    processor = AutoProcessor.from_pretrained(model_path)
    sam = load_sam(sam_kind, device=device, warn_random=False)
    scenes = _scene_set(repeats + warmup, seed=100)
    rows = []
    masks: dict[bool, list] = {}
    for overlap in (False, True):
        engine = SamEngine(sam, cache_bytes=0)  # no cache: every request encodes its image
        seg = ReasoningSegmenter(model, processor, engine, template="Find {query}.", overlap=overlap,
                                 max_new_tokens=128)
        times: dict[str, list[float]] = {k: [] for k in (*STAGES, "encode_overlap_s")}
        masks[overlap] = []
        for i, (img, m) in enumerate(scenes):
            res = seg.segment(img, "the object", prefix_allowed_tokens_fn=ScriptedText(processor.tokenizer, [_answer(m)]))
            if i < warmup:
                continue
            masks[overlap].append(res.mask)
            for k in times:
                times[k].append(res.timings[k])
        seg.close()
        row = {"part": "pipeline", "overlap": overlap, "requests": repeats, "sam": sam_kind,
               "answer_tokens": len(processor.tokenizer(_answer(scenes[0][1]))["input_ids"])}
        row.update({k.replace("_s", "_ms"): float(np.median(v) * 1e3) for k, v in times.items()})
        rows.append(row)
    same = all(np.array_equal(a, b) for a, b in zip(masks[False], masks[True], strict=True))
    for r in rows:
        r["masks_equal_across_modes"] = same
    if tmp is not None:
        tmp.cleanup()
    return rows


def server_rows(sam_kind: str, device: str, clients: list[int], per_client: int, n_images: int = 4) -> list[dict]:
    """Throughput and latency percentiles of SAM-only /segment at each client count (one server)."""
    from samr1.client import SamR1Client
    from samr1.engine import SamEngine
    from samr1.sam import load_sam
    from samr1.serve import ServerThread, create_app

    engine = SamEngine(load_sam(sam_kind, device=device, warn_random=False))
    scenes = _scene_set(n_images, seed=200)
    boxes = []
    for _, m in scenes:
        ys, xs = np.nonzero(m)
        boxes.append([float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)])
    rows = []
    with ServerThread(create_app(engine)) as srv:
        client = SamR1Client(srv.url, timeout_s=300)
        for i in range(len(scenes)):  # warm-up: every image encoded once, the app's code paths loaded
            client.segment(scenes[i][0], box=boxes[i])
        stats = srv.app.state.service.batcher.stats
        for n in clients:
            lat: list[float] = []
            jobs_before, batches_before = stats["jobs"], stats["batches"]

            def one(k: int, lat: list[float] = lat) -> None:
                i = k % len(scenes)
                t = time.perf_counter()
                out = client.segment(scenes[i][0], box=boxes[i])
                lat.append(time.perf_counter() - t)
                assert out["box"] == boxes[i]  # each answer is its own request's

            t0 = time.perf_counter()
            with concurrent.futures.ThreadPoolExecutor(n) as pool:
                list(pool.map(one, range(n * per_client)))
            wall = time.perf_counter() - t0
            batches = stats["batches"] - batches_before
            rows.append({"part": "server", "clients": n, "requests": len(lat), "sam": sam_kind,
                         "req_per_s": len(lat) / wall, "p50_ms": float(np.percentile(lat, 50) * 1e3),
                         "p99_ms": float(np.percentile(lat, 99) * 1e3),
                         "mean_batch": (stats["jobs"] - jobs_before) / max(1, batches)})
    return rows


def plot(rows: list[dict], out: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pipe = [r for r in rows if r["part"] == "pipeline"]
    serv = [r for r in rows if r["part"] == "server"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    labels = ["sequential", "overlapped"]
    bottom = np.zeros(len(pipe))
    for k, c in (("generate_ms", "tab:blue"), ("encode_wait_ms", "tab:orange"), ("decode_ms", "tab:green"),
                 ("postprocess_ms", "tab:red")):
        vals = np.array([r[k] for r in pipe])
        a.bar(labels[:len(pipe)], vals, bottom=bottom, color=c, label=k[:-3])
        bottom += vals
    a.set_ylabel("ms per request (median)")
    a.set_title("pipeline stages (encode runs beside generate when overlapped)", fontsize=9)
    a.legend(fontsize=7)
    if serv:
        x = [r["clients"] for r in serv]
        b.plot(x, [r["p50_ms"] for r in serv], "o-", label="p50 ms")
        b.plot(x, [r["p99_ms"] for r in serv], "s-", label="p99 ms")
        b.set_xscale("log", base=2)
        b.set_xlabel("concurrent clients")
        b.set_ylabel("latency ms")
        b2 = b.twinx()
        b2.plot(x, [r["req_per_s"] for r in serv], "^--", color="tab:green", label="req/s")
        b2.set_ylabel("requests / s")
        b.legend(loc="upper left", fontsize=7)
        b2.legend(loc="lower right", fontsize=7)
        b.set_title("samr1 serve /segment (SAM only, loopback)", fontsize=9)
    fig.tight_layout()
    path = os.path.join(out, "latency.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def run(quick: bool = False, out: str | None = None, device: str = "cpu", smoke: bool = False,
        sam_kind: str = "tiny", model: str | None = None, plot_png: bool = True) -> list[dict]:
    """Pipeline stages (overlap off / on) and server latency; returns the records.

    Sizes: default 8 pipeline requests per mode and 1 / 8 / 32 clients x 8 requests; ``quick``: 3 requests,
    1 / 8 / 32 clients x 2; ``smoke``: 1 request without warm-up, 1 / 2 clients x 1 on one image.
    """
    repeats = 1 if smoke else 3 if quick else 8
    clients = [1, 2] if smoke else [1, 8, 32]
    per_client = 1 if smoke else 2 if quick else 8
    # smoke: no warm-up and one image for the server (each SAM "tiny" encode costs seconds on a CPU)
    rows = pipeline_rows(model, sam_kind, device, repeats, warmup=0 if smoke else 1)
    rows += server_rows(sam_kind, device, clients, per_client, n_images=1 if smoke else 4)
    for r in rows:
        r["smoke"] = smoke
    pipe = [r for r in rows if r["part"] == "pipeline"]
    print(format_table(pipe, ["overlap", "requests", *[k.replace("_s", "_ms") for k in STAGES], "encode_overlap_ms"]))
    seq, ovl = pipe[0]["total_ms"], pipe[1]["total_ms"]
    print(f"total latency sequential / overlapped: {seq:.1f} / {ovl:.1f} ms = {seq / ovl:.2f}x; SAM after generation "
          f"ends: {pipe[0]['sam_after_generate_ms']:.1f} -> {pipe[1]['sam_after_generate_ms']:.1f} ms; masks equal "
          f"across modes: {pipe[0]['masks_equal_across_modes']}")
    print(format_table([r for r in rows if r["part"] == "server"],
                       ["clients", "requests", "req_per_s", "p50_ms", "p99_ms", "mean_batch"]))
    save_and_plot(rows, out, "latency", device, [lambda: plot(rows, out)], plot_png)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    size = ap.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true")
    size.add_argument("--smoke", action="store_true")
    ap.add_argument("--out", default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--sam", default="tiny")
    ap.add_argument("--model", default=None, help="policy directory (default: a tiny random Qwen2.5-VL)")
    args = ap.parse_args()
    run(quick=args.quick, out=args.out, device=args.device, smoke=args.smoke, sam_kind=args.sam, model=args.model)


if __name__ == "__main__":
    main()
