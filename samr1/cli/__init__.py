"""The ``samr1`` command line: one module per subcommand under ``samr1.cli``.

Each subcommand module defines ``register(subparsers)``, which adds its parser and sets ``func`` (called
with the parsed namespace; returns an exit code). Flags shared by the commands that load models are added
by :func:`add_model_flags`.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Subcommands in the order ``samr1 --help`` lists them; each is samr1/cli/<name>.py.
COMMANDS = ["demo", "train", "segment", "eval", "serve", "embed", "export", "bench", "train_sam"]


def add_model_flags(p: argparse.ArgumentParser, *, policy: bool = False) -> None:
    """The flags every model-loading command shares."""
    if policy:
        p.add_argument("--model", metavar="PATH", help="policy model directory (a Qwen2/2.5-VL checkpoint)")
    p.add_argument("--sam", default="tiny", metavar="KIND", help="SAM kind: vit_b, vit_l, vit_h, tiny (random) or tiny-shapes (shipped, synthetic shapes only) (default: tiny)")
    p.add_argument("--sam-checkpoint", metavar="PATH", help="SAM state dict (.pth); random weights without it")
    p.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")


def resolve_device(name: str | None) -> str:
    """``--device`` value or the best available device."""
    if name:
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def build_parser() -> argparse.ArgumentParser:
    from samr1 import __version__

    parser = argparse.ArgumentParser(prog="samr1", description="SAM-R1 reward engine, training and inference.")
    parser.add_argument("--version", action="version", version=f"samr1 {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"samr1.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"samr1.cli.{name}":
                raise
            continue  # this subcommand is not part of this build yet
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
