"""The headline: one GRPO step's reward computation for B images x G completions, three ways, same run.

1. ``loop``        — what Seg-Zero-style reward code does: per completion ``SamPredictor.set_image`` +
                     ``predict`` + numpy IoU (the encoder runs B x G times);
2. ``loop-cached`` — the same loop with one ``set_image`` per distinct image (samr1.engine.reference);
3. ``engine``      — ``SamEngine.score``: embedding cache + batched decode + fused IoU; measured cold (a
                     fresh cache: B encoder runs) and warm (every embedding cached: 0 encoder runs).

All three parse the completions with ``samr1.answer.parse_answer``. Prints time per step, completions/s,
speedups, encoder calls and the max IoU difference between the ways (they must agree).

    python bench/bench_reward_step.py [--quick | --smoke] [--device cpu] [--sam tiny] [--encoder torch]
                                      [-B 16] [-G 8] [--threads N[,N...]] [--out DIR]

``--threads 1,2`` times every way at each count in the same run and adds parallel efficiency per way.

SAM 2 kinds (``--sam sam2_hiera_t`` ... ``sam2.1_hiera_l``): the loop is a per-completion
``SAM2ImagePredictor`` (``set_image`` + ``predict``), loop-cached is
:func:`samr1.engine.reference_sam2.score_reference_sam2`, the engine is ``Sam2Engine`` (torch encoder only).
A SAM 2 ``set_image`` takes seconds on a CPU, so ``--loop-subset K`` times the per-completion loop on the
first K completions and scales its time to the step by the answers that parse (the rows say so in
``loop_extrapolated_from``); agreement vs the loop is then measured on those K. Default: 16 for SAM 2 on
the CPU, the whole step otherwise.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Sequence

import numpy as np
import torch
from samr1.bench.harness import (
    Timing,
    add_scaling,
    format_table,
    load_average,
    measure,
    parse_thread_counts,
    save_and_plot,
    thread_counts,
)

from samr1.threads import torch_threads


def make_step(b: int, g: int, seed: int = 0, size: tuple[int, int] = (480, 640)):
    """B scenes and G rollout-like completions each: jittered boxes/points around the target, ~1 in 8
    malformed. Returns (images, masks, completions) as parallel lists of length B*G (images repeated
    as the same object per prompt, as TRL passes them)."""
    from samr1.geometry import mask_to_box, mask_to_points
    from samr1.shapes.scenes import make_scene

    rng = np.random.default_rng(seed)
    images, masks, completions = [], [], []
    for i in range(b):
        scene = make_scene(seed * 7919 + i, size=size, n_objects=3)
        obj = max(scene.objects, key=lambda o: o.mask.sum())
        h, w = obj.mask.shape
        sx, sy = 840 / w, 840 / h
        x1, y1, x2, y2 = mask_to_box(obj.mask)
        pts = mask_to_points(obj.mask, k=2)
        for _ in range(g):
            if rng.random() < 0.125:
                text = "<think>unsure</think><answer>{\"bbox\": [1, 2, 3]}</answer>"
            else:
                j = rng.normal(0, 0.08 * max(x2 - x1, y2 - y1), 4)
                box = [(x1 + j[0]) * sx, (y1 + j[1]) * sy, (x2 + j[2]) * sx, (y2 + j[3]) * sy]
                ans = {"bbox": [round(v) for v in box]}
                for k, p in enumerate(pts[:2]):
                    ans[f"points_{k + 1}"] = [round(p[0] * sx), round(p[1] * sy)]
                text = f"<think>The target is {obj.query}.</think>\n<answer>{json.dumps(ans)}</answer>"
            images.append(scene.image)
            masks.append(obj.mask)
            completions.append(text)
    return images, masks, completions


# Largest |IoU difference| allowed between the ways: they threshold the same SAM logits, up to fp32
# round-off of batched vs per-prompt decoding (tests/test_engine.py uses the same bound).
IOU_TOL = 1e-3
# SAM 2: the engine decodes from cached features with the fused postprocess, the predictor upsamples per
# call; pixels within fp32 round-off of the threshold may flip, so the SAM 2 parity bound applies.
IOU_TOL_SAM2 = 5e-3
# Completions the per-completion loop runs for SAM 2 on a CPU by default (~2.6 s per set_image at 480 x 640).
SAM2_CPU_LOOP_SUBSET = 16
ENCODER_SPECS = ("torch", "torch-bf16", "torch-fp16", "torch-bf16-compiled", "torch-fp16-compiled", "onnx", "tensorrt",
                 "tensorrt-fp32")


def encoder_options(spec: str) -> dict:
    """SamEngine keyword arguments for an encoder spec: "torch", "torch-bf16[-compiled]", "torch-fp16[-compiled]",
    "onnx", "tensorrt" (fp16) or "tensorrt-fp32" (bf16/fp16/compiled torch and TensorRT need CUDA)."""
    if spec not in ENCODER_SPECS:
        raise ValueError(f"unknown encoder {spec!r}; choose one of {list(ENCODER_SPECS)}")
    backend, *rest = spec.split("-")
    opts: dict = {"encoder": backend}
    if rest:
        opts["dtype"] = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}[rest[0]]
    if rest[1:] == ["compiled"]:
        opts["compile"] = True
    return opts


# A way whose first (warm-up) call takes longer than this is not called again: that call is its timing.
LONG_CALL_S = 20.0


def run(quick: bool = False, out: str | None = None, device: str = "cpu", sam_kind: str = "tiny",
        b: int | None = None, g: int | None = None, repeats: int | None = None, plot: bool = True,
        smoke: bool = False, encoder: str = "torch", threads: int | Sequence[int] | None = None,
        size: tuple[int, int] | None = None, loop_subset: int | None = None,
        checkpoint: str | None = None) -> list[dict]:
    """Time one reward step four ways; print the table; append ``out/reward_step.jsonl``; plot when ``out``.

    Args:
        quick: B=4, G=4, one repeat (sub-minute on a CPU with the tiny SAM).
        smoke: B=2, G=2, one call per way, no warm-up (for the test suite: agreement, not speed).
        b, g: images per step and completions per image (default 16 x 8).
        repeats: timed repeats per way (default 3; 1 when quick or smoke). Warm-up: one call (not smoke);
            when it takes over LONG_CALL_S it is the way's only (timed) call.
        encoder: the engine's image encoder, one of ENCODER_SPECS ("torch" fp32, "torch-bf16-compiled",
            "onnx", "tensorrt", ...); the loops always run SAM's torch fp32 encoder (what Seg-Zero-style code
            runs), so a faster encoder here measures the goal "fastest backend vs the fp32 loop".
        checkpoint: weights for ``sam_kind`` (see :func:`samr1.sam.load_sam`); None: random weights.
        size: image (H, W) of the synthetic scenes (default 480 x 640).
        loop_subset: time the per-completion loop on the first K completions only and extrapolate its step
            time (x answers ok in the step / answers ok in the subset); agreement vs the loop is measured on
            those K. None: 16 for a SAM 2 kind on the CPU, else the whole step; 0: the whole step.
        threads: torch threads, one count or several (a sweep: the four ways timed at each count in turn,
            same step; default: torch's setting). The engine uses torch's count (its default), so each count
            is also its decoder's worker threads.

    Returns one row per way (loop, loop-cached, engine-cold, engine-warm) and thread count with ``step_s`` (median
    seconds per step), ``cpu_s`` (process CPU time per step), speedups, encoder images per step, ``max_iou_diff_vs_loop`` and ``parse_s`` (the
    parse of all B*G completions on its own, included in every way's step time); the engine rows carry
    ``stages`` (seconds per stage of the last call: parse, load, encode, decode, iou); with several thread
    counts also ``speedup_vs_first`` and parallel ``efficiency`` per way (see ``harness.add_scaling``).
    """
    from samr1.answer import parse_answer
    from samr1.engine import SamEngine
    from samr1.geometry import mask_iou_numpy
    from samr1.sam import load_sam
    from samr1.sam.sam2_build import is_sam2_kind

    enc_opts = encoder_options(encoder)  # validated before any model is built
    sam2 = is_sam2_kind(sam_kind)
    if sam2 and encoder != "torch":
        raise ValueError(f"encoder {encoder!r}: SAM 2 kinds ({sam_kind!r}) run the torch fp32 encoder only; "
                         "pass encoder='torch' (--encoder torch)")
    if loop_subset is not None and (isinstance(loop_subset, bool) or loop_subset < 0):
        raise ValueError(f"loop_subset must be >= 0 (0: the whole step), got {loop_subset!r}")
    counts = thread_counts(threads)
    b = b or (2 if smoke else 4 if quick else 16)
    g = g or (2 if smoke else 4 if quick else 8)
    repeats = repeats or (1 if (quick or smoke) else 3)
    warmup = 0 if smoke else 1
    sam = load_sam(sam_kind, checkpoint=checkpoint, device=device, warn_random=False)
    images, masks, completions = make_step(b, g, size=size or (480, 640))
    n = len(completions)
    n_distinct = len({id(im) for im in images})
    if loop_subset is None:
        loop_subset = SAM2_CPU_LOOP_SUBSET if (sam2 and str(device).startswith("cpu")) else 0
    k = n if loop_subset in (0, None) or loop_subset >= n else int(loop_subset)
    iou_tol = IOU_TOL_SAM2 if sam2 else IOU_TOL

    def parse_all():
        return [parse_answer(t, image_size=im.shape[:2]) for t, im in zip(completions, images, strict=True)]

    if sam2:
        from sam2.sam2_image_predictor import SAM2ImagePredictor

        from samr1.engine.reference_sam2 import predict_mask_sam2 as predict_mask
        from samr1.engine.reference_sam2 import score_reference_sam2

        predictor = SAM2ImagePredictor(sam)

        def loop_cached():
            return score_reference_sam2(sam, images, parse_all(), masks, multimask=True)
    else:
        from segment_anything import SamPredictor

        from samr1.engine.reference import predict_mask, score_reference

        predictor = SamPredictor(sam)

        def loop_cached():
            return score_reference(sam, images, parse_all(), masks, multimask=True)

    def loop():
        # the whole parse is in the step; only the first k completions are segmented (k = n unless a subset)
        out_ious = []
        for ans, im, m in list(zip(parse_all(), images, masks, strict=True))[:k]:
            if not ans.ok:
                out_ious.append(0.0)
                continue
            predictor.set_image(im)
            out_ious.append(mask_iou_numpy(predict_mask(predictor, ans, True), m))
        return out_ious

    # Cold: one engine whose cache is emptied before each call (B encoder runs per step); building the
    # engine (an ONNX session, a TensorRT engine) stays out of the step time, as it does in training.
    # The SAM 2 engine has no public cache handle: a zero-byte budget keeps nothing between calls (each
    # distinct image still encoded once per step), which is the same cold step.
    cold_engine = SamEngine(sam, device=device, **({"cache_bytes": 0} if sam2 else {}), **enc_opts)
    cold_counts: dict[str, int] = {}

    def engine_cold():
        if not sam2:
            cold_engine.cache.clear()
        before = cold_engine.stats["encoder_images"]
        res = cold_engine.score(images, parse_all(), masks)
        cold_counts["encoder_images"] = cold_engine.stats["encoder_images"] - before
        return res

    warm_engine = SamEngine(sam, device=device, **enc_opts)
    warm_engine.score(images, parse_all(), masks)  # fills the cache
    warm_counts: dict[str, int] = {}

    def engine_warm():
        before = warm_engine.stats["encoder_images"]
        res = warm_engine.score(images, parse_all(), masks)
        warm_counts["encoder_images"] = warm_engine.stats["encoder_images"] - before
        return res

    t_parse = measure(parse_all, warmup=warmup, repeats=max(repeats, 3), device="cpu")
    n_ok = sum(a.ok for a in parse_all())
    k_ok = sum(a.ok for a in parse_all()[:k])
    # the loop's cost is one set_image + predict per answer that parses: scale the subset by that count
    loop_scale = n_ok / max(k_ok, 1) if k < n else 1.0
    stage_keys = ("time_load_s", "time_encode_s", "time_decode_s", "time_iou_s")  # the engine's, in order
    ways = [("loop", loop), ("loop-cached", loop_cached), ("engine-cold", engine_cold), ("engine-warm", engine_warm)]
    rows = []
    ious_all = {}
    for t in counts:
        results, ious, cpu_s, loads = {}, {}, {}, {}
        with torch_threads(t):
            for name, fn in ways:
                last: dict = {"cpu": []}

                def call(fn=fn, last=last):
                    c = time.process_time()
                    last["ious"] = fn()
                    last["cpu"].append(time.process_time() - c)

                first = None
                if warmup:
                    t0 = time.perf_counter()
                    call()
                    first = time.perf_counter() - t0
                if first is not None and first > LONG_CALL_S:
                    # The CPU loop takes ~55 s per step at B=16 x G=8 here (minutes with a ViT): a call that
                    # long has no start-up cost worth repeating it for, so the warm-up call is the measurement.
                    results[name] = Timing(first, first, first, 1, [first])
                    cpu_s[name] = last["cpu"][0]
                else:
                    results[name] = measure(call, warmup=0, repeats=repeats, device=device)
                    # process CPU time (all threads) of the timed calls: on a shared machine it depends far
                    # less than wall time on what else runs, so its ratios are the steadier ones
                    cpu_s[name] = statistics.median(last["cpu"][1 if warmup else 0:])
                if name == "loop" and loop_scale != 1.0:
                    tm = results[name]
                    results[name] = Timing(tm.median * loop_scale, tm.p20 * loop_scale, tm.p80 * loop_scale,
                                           tm.repeats, [v * loop_scale for v in tm.samples])
                    cpu_s[name] *= loop_scale
                ious[name] = np.asarray(last["ious"])
                loads[name] = load_average()
        enc_calls = {"loop": n_ok, "loop-cached": n_distinct, "engine-cold": cold_counts["encoder_images"],
                     "engine-warm": warm_counts["encoder_images"]}
        # the SAM 2 engine has no separate load stage (it reads arrays in encode): 0.0 there
        stages = {"time_parse_s": t_parse.median, **{s: warm_engine.stats.get(s, 0.0) for s in stage_keys}}
        cold_stages = {"time_parse_s": t_parse.median, **{s: cold_engine.stats.get(s, 0.0) for s in stage_keys}}
        base = results["loop"].median
        for name, tm in results.items():
            rows.append({
                "way": name, "B": b, "G": g, "sam": sam_kind,
                "encoder": "torch" if name.startswith("loop") else encoder,
                "step_s": tm.median, "p20_s": tm.p20, "p80_s": tm.p80, "repeats": tm.repeats,
                "cpu_s": cpu_s[name], "cpu_speedup_vs_loop": cpu_s["loop"] / max(cpu_s[name], 1e-9),
                "completions_per_s": n / tm.median, "ms_per_completion": tm.median / n * 1e3,
                "speedup_vs_loop": base / tm.median,
                "speedup_vs_loop_cached": results["loop-cached"].median / tm.median,
                "encoder_images": enc_calls[name], "parse_s": t_parse.median, "answers_ok": n_ok,
                "max_iou_diff_vs_loop": float(np.abs(ious[name][:k] - ious["loop"]).max()), "iou_tol": iou_tol,
                "loop_extrapolated_from": k if k < n else None,
                "mean_iou": float(ious[name].mean()), "smoke": smoke, "threads": t,
                "loadavg_1m": loads[name],
                **({"stages": cold_stages} if name == "engine-cold" else {}),
                **({"stages": stages} if name == "engine-warm" else {}),
            })
        ious_all[t] = ious
    add_scaling(rows, "way", "step_s")
    print(f"reward step: B={b} images x G={g} completions ({n_ok} parse ok), SAM {sam_kind}, engine encoder "
          f"{encoder}, device {device}, torch threads {','.join(map(str, counts))}, median of {repeats}"
          + (" (smoke: no warm-up)" if smoke else ""))
    if k < n:
        print(f"loop: timed on the first {k} of {n} completions ({k_ok} parse ok) and scaled x{loop_scale:.2f} to "
              f"the step's {n_ok}; agreement vs the loop on those {k}")
    print(format_table(rows, ["way", "threads", "step_s", "repeats", "loop_extrapolated_from", "ms_per_completion", "speedup_vs_loop",
                              "speedup_vs_loop_cached", "cpu_s", "cpu_speedup_vs_loop", "speedup_vs_first",
                              "efficiency", "encoder_images", "max_iou_diff_vs_loop", "loadavg_1m"]))
    print(f"parse of all {n} completions (inside every way's step): {t_parse.median * 1e3:.2f} ms")
    for r in rows:
        if "stages" in r:
            print(f"engine stages ({r['way'][7:]}, {r['threads']} threads): "
                  + ", ".join(f"{k[5:-2]} {v * 1e3:.1f} ms" for k, v in r["stages"].items()))
    worst = max(r["max_iou_diff_vs_loop"] for r in rows)
    print(f"agreement: max |IoU diff| vs loop {worst:.3g} (tolerance {iou_tol:g}): "
          + ("OK" if worst <= iou_tol else "MISMATCH"))
    if len(counts) > 1:
        same = all(np.array_equal(ious_all[t][w], ious_all[counts[0]][w]) for t in counts for w in ("engine-cold", "engine-warm"))
        print(f"engine IoUs identical across thread counts {','.join(map(str, counts))}: " + ("yes" if same else "NO"))
    from samr1.bench.plots import plot_thread_scaling

    plots = [lambda: plot_reward_step([r for r in rows if r["threads"] == counts[-1]], out, device)]
    if len(counts) > 1:
        plots.append(lambda: plot_thread_scaling(rows, out, "reward_step_scaling", "way", device, per="completion"))
    save_and_plot(rows, out, "reward_step", device, plots, plot)
    return rows


def plot_reward_step(rows: list[dict], out: str, device: str = "cpu") -> str:
    """Step time per way (log, speedups) and the engine's time split; see :mod:`samr1.bench.plots`."""
    from samr1.bench.plots import plot_reward_step as _plot

    return _plot(rows, out, device)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="B=4, G=4, one repeat (sub-minute on a CPU)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--sam", default="tiny")
    p.add_argument("--out", default=None, help="folder for JSON-lines records and the PNG plot")
    p.add_argument("-B", type=int, default=None)
    p.add_argument("-G", type=int, default=None)
    p.add_argument("--smoke", action="store_true", help="B=2, G=2, one call per way (agreement check, seconds)")
    p.add_argument("--encoder", default="torch", choices=ENCODER_SPECS, help="the engine's image encoder")
    p.add_argument("--threads", type=parse_thread_counts, default=None, metavar="N[,N...]",
                   help="torch threads, or a comma-separated sweep such as 1,2 (default: torch's choice)")
    p.add_argument("--sam-checkpoint", default=None, metavar="PATH", help="weights for --sam (default: random)")
    p.add_argument("--loop-subset", type=int, default=None, metavar="K",
                   help="time the per-completion loop on the first K completions and extrapolate (0: all; "
                        f"default {SAM2_CPU_LOOP_SUBSET} for SAM 2 kinds on the CPU, else all)")
    a = p.parse_args(argv)
    run(quick=a.quick, out=a.out, device=a.device, sam_kind=a.sam, b=a.B, g=a.G, smoke=a.smoke, encoder=a.encoder,
        threads=a.threads, loop_subset=a.loop_subset, checkpoint=a.sam_checkpoint)


if __name__ == "__main__":
    main()
