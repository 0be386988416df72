"""``samr1 segment --model PATH --query TEXT``: the policy answers, SAM draws the mask (the policy path of
``samr1 segment``; the SAM-only flags live in :mod:`samr1.cli.segment`).

Writes the mask PNG (the image's size, 255 = object) to ``--out`` and an overlay PNG beside it
(``<out>.overlay.png``, or ``--overlay PATH``), and prints the reasoning, the answer and per-stage timings;
``--json`` prints one JSON object instead (the mask as COCO RLE, :func:`samr1.io.rle_decode` reads it).
When the policy's answer does not parse, nothing is written: the reason and the raw answer are printed and
the command exits with :data:`EXIT_NO_ANSWER` (7).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import numpy as np

EXIT_NO_ANSWER = 7
"""Exit code of ``samr1 segment --model`` when the policy's answer does not parse (no mask is written)."""


def add_policy_flags(p: argparse.ArgumentParser, group: Any) -> None:
    """Add ``--query`` (to the mutually exclusive ``group`` of --answer/--box) and the policy-only flags."""
    group.add_argument("--query", help="with --model: the text query the policy answers (e.g. \"the thing that "
                       f"holds the coffee\"); exit code {EXIT_NO_ANSWER} when its answer does not parse")
    p.add_argument("--json", action="store_true", help="with --model: print one JSON object (answer, think, RLE mask, "
                   "timings)")
    p.add_argument("--overlay", metavar="PATH", help="overlay PNG with --model (default: <out>.overlay.png)")
    from samr1.cli import add_generation_flags

    add_generation_flags(p)


def overlay_path(out: str, overlay: str | None) -> str:
    if overlay:
        return overlay
    root, _ = os.path.splitext(out)
    return f"{root}.overlay.png"


def run_policy(args: argparse.Namespace, segmenter: Any = None, **generate_kwargs: Any) -> int:
    """Run the policy path of ``samr1 segment``; returns the exit code.

    ``segmenter`` (a :class:`samr1.pipeline.ReasoningSegmenter`) replaces loading ``--model``/``--sam``;
    ``generate_kwargs`` go to its ``segment`` call (tests and smoke runs script the policy's output this way).
    """
    from PIL import Image

    from samr1.cli import (
        OutputError,
        UsageError,
        check_output_file,
        generation_settings,
        os_error_text,
        resolve_device,
    )
    from samr1.demo import overlay_image
    from samr1.io import load_image

    if args.query is None or (args.model is None and segmenter is None):
        raise UsageError("--model and --query go together: the policy at --model answers --query")
    if not args.query.strip():
        raise UsageError("--query is empty")
    if args.point:
        raise UsageError("--point goes with --box; with --model the points come from the policy's answer")
    over = overlay_path(args.out, args.overlay)
    check_output_file(args.out, "--out", force=args.force)
    check_output_file(over, "--overlay", force=args.force)
    image = load_image(args.image, field="--image")
    if segmenter is None:
        from samr1.engine import SamEngine
        from samr1.pipeline import ReasoningSegmenter
        from samr1.sam import load_sam

        device = resolve_device(args.device)
        engine = SamEngine(load_sam(args.sam, checkpoint=args.sam_checkpoint, device=device))
        segmenter = ReasoningSegmenter.from_pretrained(args.model, engine, device=device, **generation_settings(args))
    res = segmenter.segment(image, args.query, **generate_kwargs)
    out = res.to_json()
    if not res.ok:
        if args.json:
            print(json.dumps(out))
        else:
            print(f"the policy's answer did not parse: {res.answer.reason}", file=sys.stderr)
            print(f"raw answer: {res.text!r}", file=sys.stderr)
        print(f"samr1 segment: no mask written (exit {EXIT_NO_ANSWER}: the answer did not parse)", file=sys.stderr)
        return EXIT_NO_ANSWER
    try:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        Image.fromarray(res.mask.astype(np.uint8) * 255).save(args.out, format="PNG")
        overlay_image(image, res.mask, res.answer, legend=True).save(over, format="PNG")
    except OSError as exc:
        raise OutputError(f"--out {args.out}: cannot write the mask: {os_error_text(exc)}") from exc
    out["files"] = {"mask": args.out, "overlay": over}
    if args.json:
        print(json.dumps(out))
        return 0
    h, w = res.mask.shape
    t = res.timings
    print(f"reasoning: {res.think if res.think is not None else '(no <think> block)'}")
    print(f"answer: box {[round(v, 1) for v in out['answer']['bbox']]}, points "
          f"{[[round(x, 1), round(y, 1)] for x, y in out['answer']['points']]} (original pixels)")
    print(f"mask {w}x{h}, {int(res.mask.sum())} object pixels ({res.mask.mean():.1%}) -> {args.out}; overlay -> {over}")
    print("timings: " + ", ".join(f"{k[:-2]} {t[k] * 1000:.0f} ms" for k in
                                  ("generate_s", "encode_s", "decode_s", "postprocess_s", "sam_after_generate_s",
                                   "total_s") if k in t))
    return 0
