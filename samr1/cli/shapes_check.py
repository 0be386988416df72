"""``samr1 shapes-check``: held-out quality of a ``tiny-shapes`` checkpoint on two scene generators (the card's
``heldout_*`` and ``alt_generator`` numbers), or the resolution ceiling of an input frame.

    samr1 shapes-check [--weights PATH] [--scenes 100] [--json OUT] [--figure PNG] [--force]
    samr1 shapes-check --ceiling 256 384 [--scenes 100] [--json OUT] [--force]

Prints mean IoU for box, box + centre point and centre point prompts, best-of-3 (multimask, the engine's
default) and single-mask, overall and by object size, on

* ``own``: samr1.shapes.scenes.make_scene, seeds 0..N-1 (training only draws seeds >= 1,000,000);
* ``alt``: samr1.shapes.scenes_alt.make_alt_scene, an independent generator the model never saw.

``--weights`` defaults to the shipped file; any checkpoint of the tiny-shapes spec loads.

``--ceiling FRAME ...`` evaluates no model: it reports, on the own held-out scenes, the IoU of the training
target itself (the ground truth area-downsampled to the low-res grid of a SAM at that input frame) pushed
through SAM's postprocessing: what a model that predicts its target exactly would score, the practical bound
the frame choice puts on every number above. See samr1.shapes.check for the library functions.
"""

from __future__ import annotations

import argparse
import json
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("shapes-check", help="held-out IoU of the tiny-shapes SAM on two scene generators, or the "
                       "resolution ceiling of a frame", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default=None, metavar="PATH",
                   help="checkpoint path (default: the shipped tiny-shapes weights)")
    p.add_argument("--scenes", type=int, default=100, help="scenes per generator (default: 100)")
    p.add_argument("--json", default=None, metavar="OUT", help="also write the results here as JSON")
    p.add_argument("--figure", default=None, metavar="PNG",
                   help="also draw 6 scenes of each generator with the box-prompted masks into this PNG")
    p.add_argument("--force", action="store_true", help="replace the --json / --figure files if they exist")
    p.add_argument("--ceiling", type=int, nargs="+", default=None, metavar="FRAME",
                   help="instead of evaluating a model, print the resolution ceiling at these input frames")
    p.set_defaults(func=_run)


def _by_size(values: dict[str, Any], key: str, digits: int) -> str:
    """``small/medium/large`` values of one ``by_size`` dict as ``0.72/0.85/0.89`` (``-`` where no object)."""
    return "/".join(f"{v[key]:.{digits}f}" if v[key] is not None else "-" for v in values.values())


def _check_args(args: argparse.Namespace) -> None:
    """Every flag before any work (a bad frame must not cost the frames before it)."""
    from samr1.cli import UsageError, check_output_file
    from samr1.shapes.check import check_frame

    if args.scenes < 1:
        raise UsageError(f"--scenes must be >= 1, got {args.scenes}")
    if args.ceiling:
        if args.figure or args.weights:
            raise UsageError("--ceiling evaluates no model: drop --figure / --weights")
        for frame in args.ceiling:
            try:
                check_frame(frame)
            except ValueError as exc:
                raise UsageError(f"--ceiling: {exc}") from None
    # an existing file is refused (as by every command) unless --force, and before the work
    for path, flag in ((args.json, "--json"), (args.figure, "--figure")):
        if path:
            check_output_file(path, flag, force=args.force)


def _run(args: argparse.Namespace) -> int:
    from samr1.shapes.check import check, examples_figure, resolution_ceiling

    _check_args(args)
    res: Any
    if args.ceiling:
        res = []
        for frame in args.ceiling:
            r = resolution_ceiling(frame, args.scenes)
            res.append(r)
            print(f"frame {frame} (low-res {r['grid']} x {r['grid']}): ceiling IoU {r['all']:.3f} over "
                  f"{r['objects']} objects; small/medium/large {_by_size(r['by_size'], 'iou', 3)}", flush=True)
    else:
        def progress(generator: str, mode: str, r: dict[str, Any], seconds: float) -> None:
            print(f"{generator:4s} {mode:11s} box {r['box']:.3f}  box+point {r['box+point']:.3f}  point "
                  f"{r['point']:.3f}  ({r['objects']} objects; small/medium/large box "
                  f"{_by_size(r['by_size'], 'box', 2)}; {seconds:.0f} s)", flush=True)

        res = check(args.weights, args.scenes, progress=progress)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
    if args.figure:
        print(f"figure: {examples_figure(args.weights, args.figure)}")
    return 0
