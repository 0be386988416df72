"""Held-out quality of a ``tiny-shapes`` checkpoint on two scene generators (the numbers of its card).

    python -m samr1.sam.shapes_check [--weights PATH] [--scenes 100] [--json OUT]

Prints mean IoU for box, box + centre point and centre point prompts, best-of-3 (multimask, the engine's
default) and single-mask, overall and by object size, on

* ``own``: :func:`samr1.scenes.make_scene`, seeds 0..N-1 (training only draws seeds >= 1,000,000);
* ``alt``: :func:`samr1.scenes_alt.make_alt_scene`, an independent generator the model never saw.

``--weights`` defaults to the shipped file; any checkpoint of the tiny-shapes spec loads.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

__all__ = ["check"]


def check(weights: str | None = None, n_scenes: int = 100, log=print) -> dict[str, Any]:
    """Evaluate ``weights`` (default: the shipped tiny-shapes file) on both generators, both output modes.

    Returns {"own": {"multimask": evaluate(...), "single_mask": ...}, "alt": {...}} (see
    :func:`samr1.sam.train_sam.evaluate` for one entry's fields)."""
    from samr1.sam import load_sam
    from samr1.sam.train_sam import evaluate
    from samr1.scenes import make_scene
    from samr1.scenes_alt import make_alt_scene

    sam = load_sam("tiny-shapes", weights)
    out: dict[str, Any] = {}
    for name, fn in (("own", make_scene), ("alt", make_alt_scene)):
        out[name] = {}
        for mode, multi in (("multimask", True), ("single_mask", False)):
            t = time.time()
            out[name][mode] = evaluate(sam, n_scenes=n_scenes, first_seed=0, multimask=multi, scene_fn=fn)
            r = out[name][mode]
            log(f"{name:4s} {mode:11s} box {r['box']:.3f}  box+point {r['box+point']:.3f}  point {r['point']:.3f}"
                f"  ({r['objects']} objects; small/medium/large box "
                + "/".join(f"{v['box']:.2f}" if v["box"] is not None else "-" for v in r["by_size"].values())
                + f"; {time.time() - t:.0f} s)")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m samr1.sam.shapes_check", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default=None, help="checkpoint path (default: the shipped tiny-shapes weights)")
    p.add_argument("--scenes", type=int, default=100, help="scenes per generator (default: 100)")
    p.add_argument("--json", default=None, metavar="OUT", help="also write the results here as JSON")
    args = p.parse_args(argv)
    if args.scenes < 1:
        p.error("--scenes must be >= 1")
    res = check(args.weights, args.scenes)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
