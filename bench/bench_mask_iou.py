"""Benchmark: SAM logits -> postprocessed mask -> IoU, the torch reference against the fused paths.

For each original size and number of masks N, in the SAME process: the torch reference
(``samr1.ops.mask_iou_reference``: SAM's postprocess_masks + threshold + counts), the C++ kernel on CPU
tensors, the Triton kernel on CUDA tensors. Printed: median time (harness: warm-up excluded, median
of repeats, p20/p80 in the records), speed-up over the reference, the process CPU time per call (all
threads; much less sensitive than wall time to other processes on a shared machine) and its ratio, the
largest IoU difference and count difference against the reference; on CUDA also the floor (bytes the op must read: logits + ground
truth + tables, over a measured device-to-device copy bandwidth) and the fraction of it reached.

    python -m samr1.bench.bench_mask_iou [--quick | --smoke] [--device cpu|cuda] [--out DIR]
    python -m samr1.bench.bench_mask_iou --omp [--busy] [--out DIR]
    python -m samr1.bench.bench_mask_iou --resize sam2 [--quick | --smoke] [--device cpu|cuda] [--out DIR]

``--resize sam2`` times SAM 2's postprocess (one bilinear resize, :mod:`samr1.ops.mask_iou_sam2`): the
reference against every body that runs on the device (torch row blocks, C++, Triton) in one table.

``--omp`` times the C++ kernel alone (CPU) at 1 and 2 OpenMP threads, forced (every thread woken) and
as the default per-call thread count picks, with wall and process CPU time per call: what the thread
default in csrc/mask_iou.cpp was chosen from. The OpenMP wait policy is whatever the environment says
(libgomp reads ``OMP_WAIT_POLICY`` when it is loaded, i.e. at ``import torch``): run it once plain and
once with ``OMP_WAIT_POLICY=passive``. ``--busy`` keeps one other process spinning on a core while it
measures (a loaded shared machine).

CPU timings on a shared machine are noisy: the load average is recorded with every row; compare
rows of the same run only.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
from samr1.bench.harness import agreement_line, copy_bandwidth, format_table, measure, save_and_plot

from samr1.geometry import resize_longest_side
from samr1.ops import mask_iou_from_logits, mask_iou_reference, near_threshold_pixels, select_backend

FULL_SIZES = [(480, 640), (1080, 1920)]
FULL_NS = [1, 8, 64, 256]
QUICK_CASES = [((480, 640), 1), ((480, 640), 64), ((1080, 1920), 8)]
SMOKE_CASES = [((37, 53), 1), ((333, 517), 3)]  # an odd tiny size and a non-square prime-ish one

# Agreement with the reference. Both threshold the same bilinear upsampling; only pixels whose upsampled
# logit lies within samr1.ops.near_threshold_eps of the threshold may land on different sides (the
# documented contract; tests/test_mask_iou.py checks it pixel by pixel). Each row records ``near_px``, the
# number of such pixels (the contract's allowance for a count), and the fixed loose bounds used by the
# smoke test: |count diff| <= COUNT_TOL_FRAC of the image's pixels (at least 1), |IoU diff| <= IOU_TOL.
IOU_TOL = 1e-4
COUNT_TOL_FRAC = 1e-4


def count_tolerance(size: tuple[int, int]) -> int:
    """Largest |intersection or union difference| (pixels) allowed against the reference at ``size``."""
    return max(1, int(COUNT_TOL_FRAC * size[0] * size[1]))


def _inputs(n: int, size: tuple[int, int], device: str, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """SAM-like low-res logits (smooth blobs + noise, N x 256 x 256) and a blob ground truth."""
    smooth = F.interpolate(torch.randn(n, 1, 6, 6, generator=gen), size=(256, 256), mode="bicubic", align_corners=False)
    logits = (smooth[:, 0] * 4.0 + 0.5 * torch.randn(n, 256, 256, generator=gen)).contiguous()
    field = F.interpolate(torch.randn(1, 1, 5, 5, generator=gen), size=size, mode="bilinear", align_corners=False)
    return logits.to(device), (field[0, 0] > 0).to(device)


def _near_px(logits: torch.Tensor, isz: tuple[int, int], size: tuple[int, int]) -> int:
    """Largest per-mask count of pixels within near_threshold_eps of the threshold (0), in chunks of 16
    masks so that the extra full-resolution buffers stay small."""
    return max(int(near_threshold_pixels(logits[i:i + 16], isz, size).sum(dim=(1, 2)).max())
               for i in range(0, logits.shape[0], 16))


def _with_cpu_time(fn, samples: list[float]):
    """Wrap ``fn`` to record the process CPU time of each call (all threads): on a shared CPU the wall
    time depends on the other processes, the CPU time much less."""

    def call():
        c = time.process_time()
        fn()
        samples.append(time.process_time() - c)

    return call


def _measure(fn, device: str, warmup: int, repeats: int) -> tuple[dict, float]:
    cpu: list[float] = []
    t = measure(_with_cpu_time(fn, cpu), warmup=warmup, repeats=repeats, device=device)
    return t.as_dict(), statistics.median(cpu[warmup:])


def _measure_reference(fn, device: str, smoke: bool = False) -> tuple[dict, float]:
    """The reference can take seconds at N=256: one warm-up, then 15 repeats when a call is under 0.1 s
    (its time is bimodal there: page faults of its fresh frame-size buffers), 3 under 2 s, else 1.
    ``smoke``: one timed call, no warm-up."""
    if smoke:
        return _measure(fn, device, warmup=0, repeats=1)
    t0 = time.perf_counter()
    fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    first = time.perf_counter() - t0
    return _measure(fn, device, warmup=0, repeats=15 if first < 0.1 else 3 if first < 2.0 else 1)


# The reference materialises N x 1024 x 1024 and N x H x W float32 (plus bool masks): at N = 4096 and
# 1080 x 1920 that is ~70 GB. Above this many bytes per call it runs over row chunks (the same counts; the
# rows say ``ref_chunk``), as any caller with that many masks would.
REF_BYTES = 8 * 2**30


def reference_chunk(n: int, size: tuple[int, int], frame: int = 1024, budget: int = REF_BYTES) -> int:
    """Masks per call of the reference at ``size``: all ``n``, or fewer so one call stays under ``budget``
    bytes (frame + original-size float32 and the bool mask, counted three times for temporaries)."""
    per_mask = 3 * (4 * frame * frame + 5 * size[0] * size[1])
    return max(1, min(n, budget // per_mask))


def _reference_chunked(logits, gt, isz, size, chunk: int):
    if chunk >= logits.shape[0]:
        return mask_iou_reference(logits, gt, isz, size)
    parts = [mask_iou_reference(logits[i:i + chunk], gt, isz, size) for i in range(0, logits.shape[0], chunk)]
    return tuple(torch.cat(p) for p in zip(*parts, strict=True))


def run(quick: bool = False, out: str | None = None, device: str = "cpu", smoke: bool = False,
        plot: bool = True, cases: list[tuple[tuple[int, int], int]] | None = None) -> list[dict]:
    """Run the benchmark, print a table, append JSON lines to ``out/bench_mask_iou.jsonl``; return the rows.

    ``quick``: 3 cases; ``smoke``: 2 tiny cases (one odd size), one timed call each (agreement, not speed);
    default: 480x640 and 1080x1920 x N in {1, 8, 64, 256}; ``cases``: these ((H, W), N) instead (the
    repeats of the full run). With ``out`` (and ``plot``) also writes
    ``out/mask_iou.png`` (time vs N, log-log). Rows: one per (size, N, backend) with ``median_s``,
    ``speedup``, ``max_iou_err``, ``max_count_err`` and the tolerances ``iou_tol`` / ``count_tol``; the
    reference row's ``ref_chunk`` is the masks per reference call (:func:`reference_chunk`).
    """
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda requested but no CUDA device is available")
    fast = select_backend("auto", dev)
    if fast == "torch":
        print(f"note: no fast path for {device} (C++ / Triton unavailable); only the reference is timed")
    if cases is None:
        cases = SMOKE_CASES if smoke else QUICK_CASES if quick else [(s, n) for s in FULL_SIZES for n in FULL_NS]
    bw = copy_bandwidth(device) if dev.type == "cuda" else None
    gen = torch.Generator().manual_seed(0)
    rows: list[dict] = []
    for size, n in cases:
        isz = resize_longest_side(*size, 1024)
        logits, gt = _inputs(n, size, device, gen)
        chunk = reference_chunk(n, size)
        ref = _reference_chunked(logits, gt, isz, size, chunk)
        t_ref, cpu_ref = _measure_reference(
            lambda x=logits, g=gt, i=isz, s=size, c=chunk: _reference_chunked(x, g, i, s, c), device, smoke)
        base = {"size": f"{size[0]}x{size[1]}", "N": n, "threads": torch.get_num_threads(),
                "loadavg_1m": round(os.getloadavg()[0], 2), "iou_tol": IOU_TOL, "count_tol": count_tolerance(size),
                "smoke": smoke}
        rows.append({**base, "backend": "torch (reference)", **t_ref, "speedup": 1.0, "cpu_s": cpu_ref,
                     "cpu_speedup": 1.0, "max_iou_err": 0.0, "max_count_err": 0, "ref_chunk": chunk})
        if fast == "torch":
            continue
        got = mask_iou_from_logits(logits, gt, isz, size, backend=fast)
        t, cpu = _measure(lambda x=logits, g=gt, i=isz, s=size: mask_iou_from_logits(x, g, i, s, backend=fast),
                          device, warmup=0 if smoke else 2, repeats=1 if smoke else 10 if n <= 64 else 5)
        row = {**base, "backend": fast, **t, "speedup": t_ref["median_s"] / t["median_s"], "cpu_s": cpu,
               "cpu_speedup": cpu_ref / max(cpu, 1e-9),
               "max_iou_err": float((got[0] - ref[0]).abs().max()),
               "max_count_err": int(max((got[1] - ref[1]).abs().max(), (got[2] - ref[2]).abs().max())),
               "near_px": _near_px(logits, isz, size)}
        if bw is not None:
            # what the op must read at least: the logits, the ground truth (bool) and the tables
            nbytes = logits.numel() * 4 + gt.numel() + (2 * size[0] + 2 * isz[0] + 4 * size[1]) * 4 \
                + (2 * size[0] + 2 * isz[0] + 6 * size[1]) * 4
            row["floor_s"] = nbytes / bw
            row["floor_fraction"] = row["floor_s"] / t["median_s"]
        rows.append(row)
    cols = ["size", "N", "backend", "median_s", "speedup", "cpu_s", "cpu_speedup", "max_iou_err", "max_count_err",
            "near_px", "loadavg_1m"]
    if bw is not None:
        cols += ["floor_s", "floor_fraction"]
        print(f"measured copy bandwidth: {bw / 1e9:.0f} GB/s")
    print(format_table(rows, cols))
    fast_rows = [r for r in rows if r["backend"] != "torch (reference)"]
    if fast_rows:
        ok = all(r["max_iou_err"] <= r["iou_tol"] and r["max_count_err"] <= min(r["count_tol"], r["near_px"])
                 for r in fast_rows)
        print(agreement_line(ok, f"max |IoU err| {max(r['max_iou_err'] for r in fast_rows):.3g} (tolerance "
                                 f"{IOU_TOL:g}), max |count err| {max(r['max_count_err'] for r in fast_rows)} px "
                                 "(tolerance: the pixels within near_threshold_eps of the threshold, at most "
                                 f"{COUNT_TOL_FRAC:g} of the image's)"))
    from samr1.bench.plots import plot_mask_iou

    save_and_plot(rows, out, "bench_mask_iou", device, [lambda: plot_mask_iou(rows, out, device)], plot)
    return rows


OMP_CASES = [((480, 640), 1), ((480, 640), 8), ((480, 640), 64), ((1080, 1920), 1), ((1080, 1920), 8),
             ((1080, 1920), 64)]


def run_omp(out: str | None = None, busy: bool = False, repeats: int = 30) -> list[dict]:
    """C++ kernel only, per case: 1 thread, 2 threads forced (``work_per_thread=0``), and the default
    per-call choice (2 threads allowed, ``work_per_thread=-1``). Rows carry wall median and the median
    process CPU time per call (all threads, so a spinning OpenMP worker shows), the threads the default
    woke, the wait policy and the load average. ``busy``: one spinning child process during the run."""
    import numpy as np

    from samr1.ops import backends
    from samr1.ops.mask_iou import image_plan, torch_cpu_fuses

    C = backends.cpp_module()
    fused = torch_cpu_fuses() and C.mask_iou_fma_supported()
    default_wpt = C.work_per_thread_default()
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    gen = torch.Generator().manual_seed(0)
    rows: list[dict] = []
    try:
        for size, n in OMP_CASES:
            isz = resize_longest_side(*size, 1024)
            logits, gt = _inputs(n, size, "cpu", gen)
            idx, wts = image_plan((256, 256), isz, size, 1024, fused)
            plans = [(idx, wts, gt.numpy().view(np.uint8), isz[0])]
            x = logits.numpy()
            none = np.empty(0, np.int64)
            work = n * size[1] * (size[0] + 2 * min(isz[0], 2 * size[0]))
            ref = None
            for label, threads, wpt in (("1 thread", 1, -1), ("2 threads forced", 2, 0), ("default (<= 2)", 2, -1)):
                def call(x=x, none=none, plans=plans, threads=threads, wpt=wpt):
                    return C.mask_iou_counts(x, none, plans, 0.0, fused, threads, "auto", wpt)

                got = call()
                ref = got if ref is None else ref
                assert all((a == b).all() for a, b in zip(got, ref, strict=True)), "thread count changed the counts"
                t, cpu = _measure(call, "cpu", warmup=3, repeats=repeats)
                woken = 1 if threads == 1 else 2 if wpt == 0 else max(1, min(2, work // default_wpt))
                rows.append({"size": f"{size[0]}x{size[1]}", "N": n, "work_units": work, "mode": label,
                             "threads_woken": woken, **t, "cpu_s": cpu,
                             "wait_policy": os.environ.get("OMP_WAIT_POLICY", "(unset)"), "busy": busy,
                             "loadavg_1m": round(os.getloadavg()[0], 2)})
    finally:
        if hog is not None:
            hog.kill()
            hog.wait()
    for r in rows:  # ratios against the 1-thread row of the same case
        one = next(o for o in rows if o["size"] == r["size"] and o["N"] == r["N"] and o["mode"] == "1 thread")
        r["speedup_vs_1"] = one["median_s"] / r["median_s"]
        r["cpu_vs_1"] = r["cpu_s"] / max(one["cpu_s"], 1e-9)
    print(f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')} busy={busy} "
          f"default work per thread={default_wpt}")
    print(format_table(rows, ["size", "N", "mode", "threads_woken", "median_s", "speedup_vs_1", "cpu_s", "cpu_vs_1",
                              "loadavg_1m"]))
    save_and_plot(rows, out, "bench_mask_iou_omp", "cpu")
    return rows


SAM2_SIZES = [(480, 640), (1080, 1920)]
SAM2_NS = [1, 8, 32, 64]
SAM2_QUICK_CASES = [((480, 640), 8), ((480, 640), 32), ((1080, 1920), 8), ((1080, 1920), 32)]


def _sam2_bodies(device: torch.device) -> list[str]:
    """The SAM 2 mode's fast bodies that can run on ``device``: the torch row blocks always, C++ / Triton
    where samr1.ops.mask_iou_sam2 would run them."""
    from samr1.ops.mask_iou_sam2 import select_backend_sam2

    bodies = ["fused"]
    for b in ("cpp", "triton"):
        try:
            select_backend_sam2(b, device)
        except (RuntimeError, ValueError):
            continue
        bodies.append(b)
    return bodies


def run_sam2(quick: bool = False, out: str | None = None, device: str = "cpu", smoke: bool = False) -> list[dict]:
    """SAM 2's postprocess (one bilinear resize of 256 x 256 logits to the original size): the reference
    (``mask_iou_sam2_reference``) against every body that runs on ``device`` (torch row blocks "fused", C++,
    Triton), in the same process, with the speed-up, CPU time and count agreement; which body "auto" picks is
    printed. Records go to ``out/bench_mask_iou_sam2.jsonl``. ``quick``: 4 cases; ``smoke``: the 2 tiny
    cases, one call each. Set torch's threads (``OMP_NUM_THREADS=1``) to compare one thread with C++'s one."""
    from samr1.ops.mask_iou_sam2 import (
        mask_iou_sam2,
        mask_iou_sam2_reference,
        near_threshold_pixels_sam2,
        select_backend_sam2,
    )

    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda requested but no CUDA device is available")
    bodies = _sam2_bodies(dev)
    auto = select_backend_sam2("auto", dev)
    cases = SMOKE_CASES if smoke else SAM2_QUICK_CASES if quick else [(s, n) for s in SAM2_SIZES for n in SAM2_NS]
    gen = torch.Generator().manual_seed(0)
    rows: list[dict] = []
    for size, n in cases:
        logits, gt = _inputs(n, size, device, gen)
        ref = mask_iou_sam2_reference(logits, gt)
        t_ref, cpu_ref = _measure_reference(lambda x=logits, g=gt: mask_iou_sam2_reference(x, g), device, smoke)
        near = max(int(near_threshold_pixels_sam2(logits[i:i + 16], size).sum(dim=(1, 2)).max())
                   for i in range(0, n, 16))
        base = {"size": f"{size[0]}x{size[1]}", "N": n, "threads": torch.get_num_threads(),
                "loadavg_1m": round(os.getloadavg()[0], 2), "near_px": near, "smoke": smoke}
        rows.append({**base, "backend": "torch (reference)", **t_ref, "speedup": 1.0, "cpu_s": cpu_ref,
                     "cpu_speedup": 1.0, "max_iou_err": 0.0, "max_count_err": 0})
        for body in bodies:
            got = mask_iou_sam2(logits, gt, backend=body)
            t, cpu = _measure(lambda x=logits, g=gt, b=body: mask_iou_sam2(x, g, backend=b), device,
                              warmup=0 if smoke else 2, repeats=1 if smoke else 10 if n <= 8 else 5)
            rows.append({**base, "backend": body + (" (auto)" if body == auto else ""), **t,
                         "speedup": t_ref["median_s"] / t["median_s"], "cpu_s": cpu,
                         "cpu_speedup": cpu_ref / max(cpu, 1e-9),
                         "max_iou_err": float((got[0] - ref[0]).abs().max()),
                         "max_count_err": int(max((got[1] - ref[1]).abs().max(), (got[2] - ref[2]).abs().max()))})
    print(f"SAM 2 postprocess (one resize), device {device}, torch threads {torch.get_num_threads()}, "
          f"auto -> {auto}")
    print(format_table(rows, ["size", "N", "backend", "median_s", "speedup", "cpu_s", "cpu_speedup", "max_iou_err",
                              "max_count_err", "near_px", "loadavg_1m"]))
    fast_rows = [r for r in rows if r["backend"] != "torch (reference)"]
    ok = all(r["max_count_err"] <= r["near_px"] for r in fast_rows)
    print(agreement_line(ok, f"max |count err| {max((r['max_count_err'] for r in fast_rows), default=0)} px "
                             "(allowed: the pixels within near_threshold_eps of the threshold, near_px)"))
    save_and_plot(rows, out, "bench_mask_iou_sam2", device)
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="3 small cases instead of 2 sizes x N in {1, 8, 64, 256}")
    p.add_argument("--out", default=None, help="directory for the JSON-lines records")
    p.add_argument("--device", default="cpu", help="cpu (reference vs C++) or cuda (reference vs Triton)")
    p.add_argument("--smoke", action="store_true", help="2 tiny cases, one call each (agreement check)")
    p.add_argument("--omp", action="store_true",
                   help="C++ kernel only: 1 vs 2 OpenMP threads (forced and default), wall and CPU time")
    p.add_argument("--busy", action="store_true", help="with --omp: keep one other process spinning on a core")
    p.add_argument("--resize", choices=("sam", "sam2"), default="sam",
                   help="postprocess: sam (SAM v1: frame, crop, resize) or sam2 (one resize; every body timed)")
    args = p.parse_args(argv)
    if args.omp:
        run_omp(out=args.out, busy=args.busy)
        return
    if args.resize == "sam2":
        run_sam2(quick=args.quick, out=args.out, device=args.device, smoke=args.smoke)
        return
    run(quick=args.quick, out=args.out, device=args.device, smoke=args.smoke)


if __name__ == "__main__":
    main()
