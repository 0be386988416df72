"""``samr1 segment``: one mask from an image and a box/points or a policy-style answer text.

    samr1 segment --image scene.png --box 40,30,200,180 --point 120,100 --out mask.png
    samr1 segment --image scene.png --answer '<answer>{"bbox": [...], ...}</answer>' --out mask.png

``--box``/``--point`` are in original image pixels; ``--answer`` is parsed like a policy completion (its
coordinates in the policy's 840 x 840 frame unless ``--model-frame`` says otherwise). Coordinates may be
negative (a box partly outside the image is clipped to it): ``--box -50,-50,30,30`` and
``--box=-50,-50,30,30`` both work. The mask is written as a PNG (255 = object); an existing output file is
never overwritten unless ``--force``.
"""

from __future__ import annotations

import argparse
import math
import os


def register(sub: argparse._SubParsersAction) -> None:
    from samr1.cli import add_model_flags

    p = sub.add_parser("segment", help="segment an image from a box/points or an answer text",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--image", required=True, help="input image (any format PIL reads)")
    g = p.add_mutually_exclusive_group()  # one of --answer / --box / --query (checked in _run)
    g.add_argument("--answer", help="a completion with an <answer> block (840-frame coordinates)")
    g.add_argument("--box", help="X1,Y1,X2,Y2 in original pixels")
    p.add_argument("--point", action="append", default=[], help="X,Y foreground point in original pixels (repeatable)")
    p.add_argument("--model-frame", default="840,840", help="H,W of the frame --answer coordinates are in (default 840,840)")
    p.add_argument("--out", required=True, help="output mask PNG")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    add_model_flags(p, policy=True)
    from samr1.cli.segment_policy import add_policy_flags

    add_policy_flags(p, g)  # --query (with --model), --json, --overlay, --template, --max-new-tokens
    p.set_defaults(func=_run)


def _floats(text: str, n: int, flag: str) -> list[float]:
    from samr1.cli import UsageError

    try:
        vals = [float(v) for v in text.split(",")]
    except ValueError:
        vals = []
    if len(vals) != n or not all(math.isfinite(v) for v in vals):
        raise UsageError(f"{flag} expects {n} comma-separated finite numbers, got {text!r}")
    return vals


def _run(args: argparse.Namespace) -> int:
    from PIL import Image

    from samr1.answer import Answer, parse_answer
    from samr1.cli import OutputError, UsageError, check_output_file, os_error_text, resolve_device
    from samr1.engine import SamEngine
    from samr1.io import InputError, load_image
    from samr1.sam import load_sam

    if args.query is not None or args.model is not None:  # the policy answers: samr1.cli.segment_policy
        from samr1.cli.segment_policy import run_policy

        return run_policy(args)
    if args.answer is None and args.box is None:
        raise UsageError("give one of --box (with --point), --answer, or --query with --model")
    if args.json or args.overlay:
        raise UsageError("--json and --overlay go with --model (the policy path); SAM-only writes --out")
    # every flag is checked before any file is read or any model is built
    check_output_file(args.out, "--out", force=args.force)
    frame = _floats(args.model_frame, 2, "--model-frame")
    if not all(v >= 1 for v in frame):
        raise UsageError(f"--model-frame expects two positive numbers H,W, got {args.model_frame!r}")
    box = _floats(args.box, 4, "--box") if args.box is not None else None
    pts = [tuple(_floats(p, 2, "--point")) for p in args.point]
    image = load_image(args.image, field="--image")
    h, w = image.shape[:2]
    if args.answer is not None:
        if pts:
            raise UsageError("--point goes with --box; with --answer the points come from the answer text")
        answer = parse_answer(args.answer, image_size=(h, w), model_size=(int(frame[0]), int(frame[1])))
        if not answer.ok:
            raise UsageError(f"--answer could not be parsed: {answer.reason}")
    else:
        x1, y1, x2, y2 = box
        # go through the parser's own validation (sorting, clipping, zero-area check) in original pixels
        import json

        obj = {"bbox": [x1, y1, x2, y2], "points": [list(p) for p in pts]} if pts else {"bbox": [x1, y1, x2, y2]}
        answer = parse_answer(f"<answer>{json.dumps(obj)}</answer>", image_size=(h, w), model_size=(h, w),
                              require_points=False)
        if not answer.ok:
            raise UsageError(f"--box/--point rejected: {answer.reason}")
    assert isinstance(answer, Answer)
    sam = load_sam(args.sam, checkpoint=args.sam_checkpoint, device=resolve_device(args.device))
    try:
        mask = SamEngine(sam).segment(image, answer)
    except InputError as exc:  # the engine names its own argument (images[0]); say which file that was
        raise InputError(f"--image {args.image}: {exc}") from exc
    try:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        Image.fromarray(mask.astype("uint8") * 255).save(args.out, format="PNG")
    except OSError as exc:
        raise OutputError(f"--out {args.out}: cannot write the mask: {os_error_text(exc)}") from exc
    print(f"mask {w}x{h}, {int(mask.sum())} object pixels ({mask.mean():.1%}) -> {args.out}")
    return 0
