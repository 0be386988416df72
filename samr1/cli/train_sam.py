"""``samr1 train-sam``: train the ``tiny-shapes`` SAM on synthetic scenes (CPU or CUDA; never run in CI).

Writes ``OUT/tiny_shapes.pth`` (fp16 state dict) and ``OUT/card.json`` (spec, seed, the command, held-out
IoU for box / box + point / centre point, weights hash); ``--ship`` also copies both into samr1/assets/,
where ``load_sam("tiny-shapes")`` finds them. The same seed, steps, device and ``--threads`` give the same
weights hash on the same machine. See :mod:`samr1.shapes.train` for the recipe.
"""

from __future__ import annotations

import argparse
import dataclasses


def register(sub: argparse._SubParsersAction) -> None:
    from samr1.shapes.train_config import TrainConfig

    p = sub.add_parser("train-sam", help="train the tiny-shapes SAM on synthetic scenes (minutes on a GPU, "
                       "~2 h on a 2-core CPU)", description=__doc__)
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        p.add_argument(flag, type=type(f.default), default=f.default, dest=f.name,
                       help=f"{f.metadata.get('help', '')} (default: {f.default})")
    p.add_argument("--ship", action="store_true", help="copy the weights and card into samr1/assets/")
    p.add_argument("--overwrite", action="store_true",
                   help="train into a non-empty --out: first remove the previous run's weights, card and history")
    p.set_defaults(func=_run)


def config_from_args(args: argparse.Namespace):
    """The :class:`TrainConfig` named by the parsed flags (validated)."""
    from samr1.cli import UsageError
    from samr1.shapes.train_config import TrainConfig

    cfg = TrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)})
    try:
        cfg.validate()
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return cfg


def _run(args: argparse.Namespace) -> int:
    import os
    import shutil

    from samr1.cli import check_output_dir
    from samr1.outdirs import check_run_dir, claim_run_dir
    from samr1.sam import SHIPPED_WEIGHTS
    from samr1.shapes.train import train

    cfg = config_from_args(args)
    check_output_dir(cfg.out, "--out")  # before hours of training, not at the first checkpoint
    check_run_dir(cfg.out, flag="--out", overwrite=args.overwrite, resume_flag=None)
    claim_run_dir(cfg.out, records=("tiny_shapes.pth", "card.json", "history.jsonl", "step*.pth"),
                  overwrite=args.overwrite)
    card = train(cfg)
    if args.ship:
        dest = os.path.dirname(SHIPPED_WEIGHTS["tiny-shapes"])
        os.makedirs(dest, exist_ok=True)
        shutil.copyfile(os.path.join(cfg.out, card["weights_file"]), SHIPPED_WEIGHTS["tiny-shapes"])
        shutil.copyfile(os.path.join(cfg.out, "card.json"), os.path.join(dest, "tiny_shapes.json"))
        print(f"shipped to {dest}")
    return 0
