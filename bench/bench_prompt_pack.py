"""Benchmark: packing a ragged SAM prompt batch into the decoder's sparse tokens, torch reference vs Triton.

For each number of prompts N, in the SAME process: the torch reference (``samr1.ops.pack_prompts_reference``)
and the fast path ``samr1.ops.pack_prompts(backend="auto")`` (one Triton launch on CUDA; on the CPU there is
no fast body, so only the reference is timed). The prompts are SAM-R1 answers: a box and 0-3 points (the
ragged part), over 16 images of mixed sizes. Printed: median time, speed-up, the largest token difference
against the reference (tolerance ``ATOL``) and whether the counts agree; on CUDA also the floor (the bytes
the op must move: the N x T x D float32 tokens it writes and the prompts it reads, over the measured copy
bandwidth) and the fraction of it reached.

    python -m samr1.bench.bench_prompt_pack [--quick | --smoke] [--device cpu|cuda] [--out DIR]
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import numpy as np
import torch
from samr1.bench.harness import agreement_line, copy_bandwidth, format_table, measure, save_and_plot

FULL_NS = (64, 512, 4096)
QUICK_NS = (64, 512)
SMOKE_NS = (3, 17)
SIZES = [(480, 640), (333, 517), (640, 427), (1080, 1920)]
# |fast - reference| per token value: fp32 sin/cos of the same angle (tests/test_prompt_pack.py uses the same)
ATOL = 2e-5


def make_batch(n: int, device: str, seed: int = 0):
    """N prompts over 16 images: a box each and 0-3 foreground/background points (original pixels)."""
    from samr1.sam.prompts import PromptBatch

    rng = np.random.default_rng(seed)
    sizes = [SIZES[i % len(SIZES)] for i in range(16)]
    idx, boxes, points, labels = [], [], [], []
    for _ in range(n):
        b = int(rng.integers(0, len(sizes)))
        h, w = sizes[b]
        x = np.sort(rng.uniform(0, w, 2))
        y = np.sort(rng.uniform(0, h, 2))
        k = int(rng.integers(0, 4))
        idx.append(b)
        boxes.append([x[0], y[0], x[1], y[1]])
        points.append([[rng.uniform(0, w), rng.uniform(0, h)] for _ in range(k)])
        labels.append([int(v) for v in rng.integers(0, 2, k)])
    return PromptBatch.from_lists(idx, boxes, points, labels, sizes, device=device)


def run(quick: bool = False, out: str | None = None, device: str = "cpu", smoke: bool = False,
        sam_kind: str = "tiny", ns: Sequence[int] | None = None, plot: bool = True) -> list[dict]:
    """Time the reference and the fast path for each N; print the table; append ``out/prompt_pack.jsonl``.

    ``ns``: prompt counts (default 64, 512, 4096; quick 64, 512; smoke 3, 17 with one call and no warm-up).
    ``sam_kind``: whose prompt encoder (the tokens depend on it alone; "tiny" has SAM's D = 256).
    Rows: one per (N, backend) with ``median_s``, ``speedup``, ``max_abs_err`` against the reference,
    ``counts_equal``, ``tokens`` (T) and on CUDA ``floor_s`` / ``floor_fraction``.
    """
    from samr1.ops import pack_prompts, pack_prompts_reference
    from samr1.ops.prompt_pack import select_backend
    from samr1.sam import load_sam

    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda requested but no CUDA device is available")
    ns = list(ns or (SMOKE_NS if smoke else QUICK_NS if quick else FULL_NS))
    warmup, repeats = (0, 1) if smoke else (2, 3 if quick else 10)
    sam = load_sam(sam_kind, device=device)
    fast = select_backend("auto", dev)
    if fast == "torch":
        print(f"note: no fast path for {device} (Triton packs on CUDA); only the reference is timed")
    bw = copy_bandwidth(device) if dev.type == "cuda" else None
    rows: list[dict] = []
    for n in ns:
        batch = make_batch(n, device)
        ref_tok, ref_cnt = pack_prompts_reference(sam, batch)
        t_ref = measure(lambda b=batch: pack_prompts_reference(sam, b), warmup=warmup, repeats=repeats, device=device)
        base = {"N": n, "tokens": int(ref_tok.shape[1]), "dim": int(ref_tok.shape[2]), "sam": sam_kind,
                "threads": torch.get_num_threads(), "atol": ATOL, "smoke": smoke}
        rows.append({**base, "backend": "torch (reference)", **t_ref.as_dict(), "speedup": 1.0, "max_abs_err": 0.0,
                     "counts_equal": True})
        if fast == "torch":
            continue
        tok, cnt = pack_prompts(sam, batch, backend=fast)
        t = measure(lambda b=batch: pack_prompts(sam, b, backend=fast), warmup=warmup, repeats=repeats, device=device)
        row = {**base, "backend": fast, **t.as_dict(), "speedup": t_ref.median / t.median,
               "max_abs_err": float((tok - ref_tok).abs().max()), "counts_equal": bool(torch.equal(cnt, ref_cnt))}
        if bw is not None:
            k = batch.points.shape[1]
            nbytes = ref_tok.numel() * 4 + n * (k * 2 * 4 + k * 8 + 4 * 4 + 4 + 8) + n * 8
            row["floor_s"] = nbytes / bw
            row["floor_fraction"] = row["floor_s"] / t.median
        rows.append(row)
    cols = ["N", "tokens", "backend", "median_s", "speedup", "max_abs_err", "counts_equal"]
    if bw is not None:
        cols += ["floor_s", "floor_fraction"]
        print(f"measured copy bandwidth: {bw / 1e9:.0f} GB/s")
    print(format_table(rows, cols))
    fast_rows = [r for r in rows if r["backend"] != "torch (reference)"]
    if fast_rows:
        ok = all(r["max_abs_err"] <= ATOL and r["counts_equal"] for r in fast_rows)
        print(agreement_line(ok, f"max |token diff| {max(r['max_abs_err'] for r in fast_rows):.3g} (tolerance "
                                 f"{ATOL:g}), counts equal: {all(r['counts_equal'] for r in fast_rows)}"))
    from samr1.bench.plots import plot_prompt_pack

    save_and_plot(rows, out, "prompt_pack", device, [lambda: plot_prompt_pack(rows, out, device)], plot)
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="N = 64 and 512, 3 repeats")
    p.add_argument("--smoke", action="store_true", help="N = 3 and 17, one call each (agreement check)")
    p.add_argument("--device", default="cpu", help="cpu (reference only) or cuda (reference vs Triton)")
    p.add_argument("--sam", default="tiny", help="SAM kind whose prompt encoder packs (default: tiny)")
    p.add_argument("--out", default=None, help="directory for the JSON-lines records and the plot")
    a = p.parse_args(argv)
    run(quick=a.quick, out=a.out, device=a.device, smoke=a.smoke, sam_kind=a.sam)


if __name__ == "__main__":
    main()
