"""``samr1 demo``: score good, off-target and malformed completions on generated scenes (no downloads)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from samr1.cli import add_model_flags

    p = sub.add_parser("demo", help="score sample completions on generated scenes, write overlay PNGs",
                       description=__doc__)
    add_model_flags(p)  # --sam defaults to tiny-shapes, the shipped model trained on the demo's kind of scenes
    p.add_argument("--out", default="demo_out", help="output folder for overlay PNGs (default: demo_out; a "
                   "non-empty folder gets a new run-* subfolder, nothing is overwritten)")
    p.add_argument("--scenes", type=int, default=3, help="number of scenes (default: 3)")
    p.add_argument("--seed", type=int, default=0, help="scene and model seed (default: 0)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from samr1.cli import UsageError, check_output_dir, resolve_device
    from samr1.demo import run_demo

    if args.scenes < 1:
        raise UsageError(f"--scenes must be >= 1, got {args.scenes}")
    check_output_dir(args.out, "--out")
    run_demo(args.out, sam_kind=args.sam, checkpoint=args.sam_checkpoint, device=resolve_device(args.device),
             n_scenes=args.scenes, seed=args.seed)
    return 0
