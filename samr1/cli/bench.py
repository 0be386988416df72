"""``samr1 bench NAME``: run a benchmark from the installed package (reference and fast path, same run)."""

from __future__ import annotations

import argparse
import importlib
import inspect

# CLI name -> module in samr1.bench (bench/ in the source tree)
BENCHES = {
    "reward-step": "bench_reward_step",
    "mask-iou": "bench_mask_iou",
    "decode": "bench_decode",
    "encoder": "bench_encoder",
    "parse": "bench_parse",
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="run a benchmark (reward-step, mask-iou, decode, encoder, parse, all)",
                       description=__doc__)
    p.add_argument("name", choices=[*BENCHES, "all"], help="which benchmark")
    p.add_argument("--quick", action="store_true", help="small sizes, one repeat: a sub-minute smoke run")
    p.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    p.add_argument("--sam", default="tiny", metavar="KIND", help="SAM kind for benches that load SAM (default: tiny)")
    p.add_argument("--out", default=None, metavar="DIR", help="write JSON-lines records (and PNG plots) here")
    p.set_defaults(func=_run)


def run_bench(name: str, *, quick: bool, device: str, sam_kind: str, out: str | None) -> list[dict]:
    """Import ``samr1.bench.<module>`` and call its ``run`` with the arguments it accepts."""
    try:
        module = importlib.import_module(f"samr1.bench.{BENCHES[name]}")
    except ModuleNotFoundError as exc:
        raise SystemExit(f"benchmark {name!r} is not available in this build ({exc})") from None
    params = inspect.signature(module.run).parameters
    kwargs = {"quick": quick, "out": out, "device": device}
    if "sam_kind" in params:
        kwargs["sam_kind"] = sam_kind
    return module.run(**kwargs)


def _run(args: argparse.Namespace) -> int:
    from samr1.cli import resolve_device

    device = resolve_device(args.device)
    names = list(BENCHES) if args.name == "all" else [args.name]
    for name in names:
        print(f"\n=== samr1 bench {name} ({'quick' if args.quick else 'full'}, {device}) ===")
        run_bench(name, quick=args.quick, device=device, sam_kind=args.sam, out=args.out)
    return 0
