"""``samr1 export``: build the ONNX export / TensorRT engine of the SAM image encoder ahead of time.

The encoder builds these on first use anyway; exporting first moves that cost (seconds for ViT-B to ONNX,
minutes for a ViT-H TensorRT engine) out of the first training step. Artefacts land in the cache
(``--cache-dir``, else ``$SAMR1_CACHE_DIR``, else ``~/.cache/samr1``), keyed by model, shapes, device and
library versions; the command prints where.
"""

from __future__ import annotations

import argparse
import time


def register(sub: argparse._SubParsersAction) -> None:
    from samr1.cli import add_model_flags

    p = sub.add_parser("export", help="build the ONNX / TensorRT image-encoder artefacts and print where",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_flags(p)
    p.add_argument("--backend", "--encoder", dest="backend", required=True, choices=["onnx", "tensorrt"],
                   help="which artefact to build (SAM 2 kinds: of samr1.sam.sam2_encoder's image features)")
    p.add_argument("--cache-dir", metavar="DIR", help="artefact cache root (default: $SAMR1_CACHE_DIR or ~/.cache/samr1)")
    p.add_argument("--max-batch", type=int, default=8, metavar="N",
                   help="largest batch of the TensorRT optimisation profile (default: 8)")
    p.add_argument("--dtype", default=None, choices=["float16", "float32"],
                   help="TensorRT engine precision (default: float16); ONNX is always float32")
    p.add_argument("--cpu-fallback", action="store_true",
                   help="--backend onnx with a CUDA --device but no onnxruntime-gpu: check the export on ONNX "
                        "Runtime's CPU provider instead of failing")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from samr1.artifacts import cache_root
    from samr1.cli import OutputError, UsageError, os_error_text, resolve_device
    from samr1.sam import DeviceError, load_sam
    from samr1.sam.encoder import make_encoder
    from samr1.sam.sam2_build import is_sam2_kind
    from samr1.sam.sam2_encoder import make_sam2_encoder

    if args.max_batch < 1:
        raise UsageError(f"--max-batch must be >= 1, got {args.max_batch}")
    if args.backend == "onnx" and args.dtype == "float16":
        raise UsageError("--dtype float16 applies to --backend tensorrt; the ONNX export is float32")
    device = resolve_device(args.device)
    if args.backend == "tensorrt" and not device.startswith("cuda"):
        raise DeviceError(f"--backend tensorrt needs a CUDA device, got --device {device}")
    if args.cpu_fallback and args.backend != "onnx":
        raise UsageError("--cpu-fallback applies to --backend onnx")
    # No up-front writability check: a read-only (e.g. team-shared) cache that already holds the artefact is
    # fine; only building into it fails, and that is reported below.
    root = cache_root(args.cache_dir)
    sam = load_sam(args.sam, args.sam_checkpoint, device=device)
    t0 = time.perf_counter()
    try:
        make = make_sam2_encoder if is_sam2_kind(args.sam) else make_encoder
        enc = make(sam, backend=args.backend, device=device, dtype=args.dtype, cache_dir=args.cache_dir,
                   max_batch=args.max_batch, **({"cpu_fallback": True} if args.cpu_fallback else {}))
    except OSError as exc:  # the cache (or a folder in it) is not writable here: permissions, read-only, full
        raise OutputError(f"cannot write the artefact cache {root}: {os_error_text(exc)}; pass --cache-dir DIR "
                          "(or set SAMR1_CACHE_DIR) to a writable folder") from exc
    art = enc.artifact
    state = f"built in {time.perf_counter() - t0:.1f}s" if art.built else "already cached (verified)"
    print(f"{enc.name} artefact for {enc.model_id}: {state}")
    print(f"cache root: {root}")
    print(f"folder:     {art.path}")
    for f in sorted(art.path.iterdir()):
        print(f"  {f.name:<20} {f.stat().st_size / 1e6:10.2f} MB")
    return 0
