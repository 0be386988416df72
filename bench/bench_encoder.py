"""SAM image encoder backends: latency, throughput and accuracy against torch fp32, same run.

Per backend and batch size: milliseconds per image and images/s of the backend on a preprocessed batch
(``encode_preprocessed``; the host-side preprocessing is identical for every backend and is reported once
on its own row), the speedup over torch fp32 at the same batch, and -- on CUDA -- the achieved fraction of
the GPU's dense bf16 peak (FLOPs per image from :func:`samr1.sam.encoder.image_encoder_flops`, ~6 TFLOP
for ViT-H). Accuracy per backend: relative error of the embeddings (Frobenius) against torch fp32, and the
downstream mask IoU against fp32's masks for a box prompt around the largest object of synthetic scenes
(SAM decoder, best of 3 multimask outputs by predicted IoU, as the engine scores).

Backends: CPU: torch fp32, ONNX Runtime (CPU). CUDA: torch fp32, bf16, bf16 + torch.compile, ONNX Runtime
(CUDA, when onnxruntime-gpu is installed), TensorRT fp16 (when tensorrt is installed).

    python bench/bench_encoder.py [--quick | --smoke] [--device cpu|cuda] [--sam tiny|vit_b|vit_h] [--out DIR]

Random weights for vit_* (no checkpoints here): speed is what it would be with real weights; the mask IoU
of random weights only measures agreement between backends.

SAM 2 kinds (``--sam sam2.1_hiera_t``): the backends of :mod:`samr1.sam.sam2_encoder` on its three outputs
(two high-res maps + the image embedding): ``rel_err_vs_fp32`` is the largest of the three relative errors,
``max_abs_<output>`` each output's largest elementwise difference, and the masks come from
``SAM2ImagePredictor.predict`` on the backend's features. No FLOP count for Hiera (``tflops`` empty).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from samr1.bench.harness import agreement_line, format_table, measure, save_and_plot

from samr1.geometry import mask_iou_numpy

# Dense (no sparsity) bf16 tensor-core peak, TFLOP/s, by substring of torch.cuda.get_device_name().
BF16_PEAK_TFLOPS = {
    "H200": 989.0, "H100 SXM": 989.0, "H100 NVL": 835.0, "H100 PCIe": 756.0, "H100": 756.0,
    "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10G": 70.0, "A10": 125.0, "RTX 4090": 165.0,
    "RTX 3090": 71.0, "V100": 125.0,  # V100: fp16 (no bf16)
}


# Agreement with torch fp32 (relative Frobenius error of the embeddings), by the backend's precision:
# fp32 backends (ONNX Runtime, TensorRT fp32) differ by kernel round-off only (tests/test_encoder.py:
# 1e-4); bf16 / fp16 carry 8 / 11 mantissa bits, so their error is ~1e-2 / ~1e-3 through a ViT.
REL_ERR_TOL = {"fp32": 1e-4, "fp16": 2e-2, "bf16": 5e-2}
# fp32 backends must also give (nearly) the same masks as torch fp32: mean IoU of the downstream masks.
MASK_IOU_MIN_FP32 = 0.99


def precision_of(backend_name: str) -> str:
    """'fp32', 'fp16' or 'bf16' from an encoder name such as 'torch-bf16-compiled' or 'onnxruntime-cpu'."""
    for p in ("bf16", "fp16"):
        if p in backend_name:
            return p
    return "fp32"


def within_tolerance(row: dict) -> bool:
    """Whether a backend row agrees with torch fp32 within the tolerances above."""
    prec = precision_of(row["backend"])
    ok = row["rel_err_vs_fp32"] <= REL_ERR_TOL[prec]
    if prec == "fp32":
        ok = ok and row["mask_iou_mean"] >= MASK_IOU_MIN_FP32
    return ok


def bf16_peak_tflops(device: str | torch.device) -> float | None:
    dev = torch.device(device)
    if dev.type != "cuda":
        return None
    name = torch.cuda.get_device_name(dev)
    for key, peak in BF16_PEAK_TFLOPS.items():
        if key in name:
            return peak
    return None


def _scenes(n: int, seed: int = 0):
    from samr1.geometry import mask_to_box
    from samr1.shapes.scenes import make_scene

    rng = np.random.default_rng(seed)
    images, boxes = [], []
    for i in range(n):
        h, w = int(rng.integers(300, 640)), int(rng.integers(300, 640))
        scene = make_scene(seed * 1000 + i, size=(h, w), n_objects=3)
        obj = max(scene.objects, key=lambda o: o.mask.sum())
        images.append(scene.image)
        boxes.append(np.asarray(mask_to_box(obj.mask), dtype=np.float32))
    return images, boxes


def _masks(sam, emb: torch.Tensor, images, sizes, boxes) -> list[np.ndarray]:
    """The engine's reference prediction (``samr1.engine.reference.predict_mask``: upstream
    ``SamPredictor.predict``, box prompt, best of 3 by predicted IoU) on the given embeddings."""
    from segment_anything import SamPredictor

    from samr1.answer import AnswerObject
    from samr1.engine.reference import predict_mask

    pred = SamPredictor(sam)
    out = []
    for i, img in enumerate(images):
        pred.reset_image()  # the backend's embedding stands in for set_image's
        pred.features = emb[i:i + 1].to(pred.device, torch.float32)
        pred.original_size = img.shape[:2]
        pred.input_size = tuple(sizes[i])
        pred.is_image_set = True
        out.append(predict_mask(pred, AnswerObject(bbox=tuple(map(float, boxes[i]))), True))
    return out


def _masks_sam2(sam, feats: list[torch.Tensor], images, boxes) -> list[np.ndarray]:
    """``SAM2ImagePredictor.predict`` (box prompt, best of 3 by predicted score: the SAM 2 reference) on the
    given features (``[high_res_s0, high_res_s1, image_embed]``, batch-first) instead of ``set_image``'s."""
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    from samr1.answer import AnswerObject
    from samr1.engine.reference_sam2 import predict_mask_sam2

    pred = SAM2ImagePredictor(sam)
    out = []
    for i, img in enumerate(images):
        pred.reset_predictor()
        f = [t[i:i + 1].to(pred.device, torch.float32) for t in feats]
        pred._features = {"image_embed": f[-1], "high_res_feats": f[:-1]}
        pred._orig_hw = [img.shape[:2]]
        pred._is_image_set = True
        out.append(predict_mask_sam2(pred, AnswerObject(bbox=tuple(map(float, boxes[i])))))
    return out


def backend_spec(backend: str, opts: dict) -> str:
    """A backend of :func:`_backends` by name, as reward-step's ``--encoder`` spells it: "torch",
    "torch-bf16", "torch-bf16-compiled", "onnx", "tensorrt" (a dtype only when one is set)."""
    name = backend
    if opts.get("dtype"):
        name += "-" + {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}[opts["dtype"]]
    return name + ("-compiled" if opts.get("compile") else "")


def _backends(device: str, cache_dir: str) -> list[tuple[str, dict]]:
    from samr1.sam.encoder import tensorrt_available

    if torch.device(device).type != "cuda":
        return [("torch", {}), ("onnx", {"cache_dir": cache_dir})]
    out = [("torch", {}), ("torch", {"dtype": "bfloat16"}), ("torch", {"dtype": "bfloat16", "compile": True})]
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        out.append(("onnx", {"cache_dir": cache_dir}))
    else:
        print("note: onnxruntime has no CUDAExecutionProvider (onnxruntime-gpu not installed): onnx skipped on GPU")
    ok, reason = tensorrt_available()
    if ok:
        out.append(("tensorrt", {"cache_dir": cache_dir}))
    else:
        print(f"note: tensorrt skipped: {reason}")
    return out


def run(quick: bool = False, out: str | None = None, device: str = "cpu", sam_kind: str = "tiny",
        batches: list[int] | None = None, repeats: int | None = None, cache_dir: str | None = None,
        smoke: bool = False, plot: bool = True, backends: Sequence[str] | None = None) -> list[dict]:
    """Benchmark every available backend; returns one row per (backend, batch) plus a preprocessing row.

    Args:
        quick: batch sizes 1 and 2, one timed repeat (a sub-minute run for tiny on a CPU).
        smoke: batch 1, one timed call, no warm-up (agreement with fp32, not speed; the ONNX export, a few
            seconds, is still done: it is what is being checked).
        out: folder for JSON-lines records (``encoder.jsonl``).
        device: "cpu" or "cuda[:i]".
        sam_kind: tiny, vit_b, vit_l or vit_h (random weights).
        batches: batch sizes (default 1 and 8; for vit_* on CPU only 1: ~18 s per ViT-B image here).
        repeats: timed repeats per point (default 3; 1 when quick or vit_* on CPU).
        cache_dir: artefact cache root (default: a temporary folder, so the export time is measured fresh).
        plot: with ``out``, also write ``out/encoder.png`` (ms/img per backend and batch).
        backends: only these of the available backends, by :func:`backend_spec` name ("torch",
            "torch-bf16", "torch-bf16-compiled", "onnx", "tensorrt"; default: all). The first one timed is the
            fp32 reference, so "torch" must be among them.

    Backend rows carry ``rel_err_vs_fp32`` with its tolerance ``rel_err_tol`` and ``within_tol``.
    """
    from samr1.sam import load_sam
    from samr1.sam.encoder import image_encoder_flops, make_encoder
    from samr1.sam.sam2_build import is_sam2_kind

    if backends is not None and "torch" not in backends:
        raise ValueError(f"backends must include 'torch' (the fp32 reference), got {list(backends)}")
    sam2 = is_sam2_kind(sam_kind)
    cpu = torch.device(device).type == "cpu"
    slow_cpu = cpu and sam_kind != "tiny" and not sam2  # Hiera-T: ~5 s per image here, worth a warm-up
    if batches is None:
        batches = [1] if (slow_cpu or smoke or (sam2 and cpu)) else ([1, 2] if quick else [1, 8])
    if repeats is None:
        repeats = 1 if (quick or slow_cpu or smoke) else 3
    warmup = 0 if (slow_cpu or smoke) else 1  # an 18 s call has no start-up effect worth another 18 s
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random-weight warning for vit_*: expected here
        sam = load_sam(sam_kind, device=device, warn_random=False)
    from samr1.sam.sam2_encoder import OUTPUT_NAMES, make_sam2_encoder

    make = make_sam2_encoder if sam2 else make_encoder
    flops = None if sam2 else image_encoder_flops(sam)
    peak = bf16_peak_tflops(device)
    n_acc = max(batches)
    images, boxes = _scenes(n_acc)
    tmp = None
    if cache_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="samr1-bench-encoder-")
        cache_dir = tmp.name

    rows: list[dict] = []
    ref_emb = ref_masks = None
    ref_time: dict[int, float] = {}
    prep_enc = None
    try:
        for backend, opts in _backends(device, cache_dir):
            if backends is not None and backend_spec(backend, opts) not in backends:
                continue
            t0 = time.perf_counter()
            enc = make(sam, backend=backend, device=device, max_batch=max(batches), **opts)
            setup_s = time.perf_counter() - t0
            if prep_enc is None:
                prep_enc = enc
            x, sizes = (enc.preprocess(images), None) if sam2 else enc.preprocess(images)
            emb = enc.encode_preprocessed(x[:n_acc])
            if ref_emb is None:  # the first backend is torch fp32: the reference
                ref_emb = emb
                ref_masks = _masks_sam2(sam, emb, images, boxes) if sam2 else _masks(sam, emb, images, sizes, boxes)
            pairs = list(zip(emb, ref_emb, strict=True)) if sam2 else [(emb, ref_emb)]
            rel_err = max(float((e - r).norm() / r.norm()) for e, r in pairs)
            abs_diff = {f"max_abs_{n}": float((e - r).abs().max()) for n, (e, r) in zip(OUTPUT_NAMES, pairs,
                                                                                         strict=True)} if sam2 else {}
            masks = _masks_sam2(sam, emb, images, boxes) if sam2 else _masks(sam, emb, images, sizes, boxes)
            ious = [mask_iou_numpy(m, r) for m, r in zip(masks, ref_masks, strict=True)]
            for b in batches:
                xb = x[:b].contiguous()
                cpu: list[float] = []

                def call(xb=xb, enc=enc, cpu=cpu):
                    c = time.process_time()
                    enc.encode_preprocessed(xb)
                    cpu.append(time.process_time() - c)

                t = measure(call, warmup=warmup, repeats=repeats, device=device)
                per_img = t.median / b
                # Process CPU time (all threads) per image: ONNX Runtime sizes its own thread pool (one
                # per physical core) whatever torch's thread setting, so on CPU the wall-time ratio can
                # compare 1 torch thread with 2 ORT threads; cpu_ms_per_img / ms_per_img shows the threads.
                cpu_per_img = statistics.median(cpu[warmup:]) / b
                if enc.name == "torch-fp32":
                    ref_time[b] = per_img
                row = {
                    "backend": enc.name, "sam": sam_kind, "batch": b, "ms_per_img": per_img * 1e3,
                    "img_per_s": 1.0 / per_img, "speedup_vs_fp32": ref_time.get(b, float("nan")) / per_img,
                    "tflops": flops / per_img / 1e12 if flops else None,
                    "frac_bf16_peak": (flops / per_img / 1e12 / peak) if peak and flops else None, **abs_diff,
                    "rel_err_vs_fp32": rel_err, "mask_iou_mean": float(np.mean(ious)),
                    "mask_iou_min": float(np.min(ious)), "setup_s": setup_s, **t.as_dict(),
                    "cpu_ms_per_img": cpu_per_img * 1e3,
                    "threads_used": cpu_per_img / per_img if torch.device(device).type == "cpu" else None,
                    "rel_err_tol": REL_ERR_TOL[precision_of(enc.name)], "smoke": smoke,
                }
                row["within_tol"] = within_tolerance(row)
                rows.append(row)
        # Host-side preprocessing (PIL resize + normalise + pad), shared by all backends.
        t = measure(lambda: prep_enc.preprocess(images[:1]), warmup=1, repeats=max(repeats, 3), device=device)
        rows.append({"backend": "preprocess (any)", "sam": sam_kind, "batch": 1, "ms_per_img": t.median * 1e3,
                     "img_per_s": 1.0 / t.median, **t.as_dict(), "smoke": smoke})
    finally:
        if tmp is not None:
            tmp.cleanup()

    print(f"SAM {sam_kind} image encoder, " + (f"{flops / 1e12:.3f} TFLOP/img, " if flops else "") + f"device {device}"
          + (f" (bf16 peak {peak:.0f} TFLOP/s)" if peak else "") + f", median of {repeats}")
    print(format_table(rows, ["backend", "batch", "ms_per_img", "cpu_ms_per_img", "threads_used", "speedup_vs_fp32",
                              "tflops", "frac_bf16_peak", "rel_err_vs_fp32", "mask_iou_mean", "mask_iou_min", "setup_s"]))
    checked = [r for r in rows if "within_tol" in r]
    for r in checked if sam2 else []:
        print(f"{r['backend']} batch {r['batch']}: max |diff| vs torch fp32 per output: "
              + ", ".join(f"{n} {r[f'max_abs_{n}']:.3g}" for n in OUTPUT_NAMES))
    bad = sorted({r["backend"] for r in checked if not r["within_tol"]})
    print(agreement_line(not bad, "relative embedding error <= " + ", ".join(f"{k} {v:g}" for k, v in
                                                                          REL_ERR_TOL.items())
                         + f"; fp32 backends also mean mask IoU >= {MASK_IOU_MIN_FP32}"
                         + (f"; off in {', '.join(bad)}" if bad else ""), "torch fp32"))
    from samr1.bench.plots import plot_encoder

    save_and_plot(rows, out, "encoder", device, [lambda: plot_encoder(rows, out, device)], plot)
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="batch 1 and 2, one repeat")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--sam", default="tiny", help="tiny, vit_b, vit_l, vit_h or a SAM 2 kind such as sam2.1_hiera_t "
                   "(random weights)")
    p.add_argument("--out", default=None, help="folder for JSON-lines records")
    p.add_argument("--batches", default=None, help="comma-separated batch sizes (default 1,8; vit_* on CPU: 1)")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--cache-dir", default=None, help="artefact cache (default: a fresh temporary folder)")
    p.add_argument("--smoke", action="store_true", help="batch 1, one call (agreement check)")
    a = p.parse_args(argv)
    batches = [int(v) for v in a.batches.split(",")] if a.batches else None
    run(quick=a.quick, out=a.out, device=a.device, sam_kind=a.sam, batches=batches, repeats=a.repeats,
        cache_dir=a.cache_dir, smoke=a.smoke)


if __name__ == "__main__":
    main()
