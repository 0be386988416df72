"""``samr1 bench NAME``: run a benchmark from the installed package (reference and fast path, same run).

Sizes: default = the full run recorded in bench/RESULTS.md; ``--quick`` = small sizes, one repeat (each
bench well under a minute on a 2-core CPU); ``--smoke`` = the tiniest sizes, one call, no warm-up (a few
seconds; what the test suite runs: it checks that fast and reference agree, never a time). With
``--out DIR`` the JSON-lines records and PNG plots are written there: a new or empty folder, or with
``--append`` one holding earlier records (each record carries its date and commit), or with ``--overwrite``
one whose earlier records (``*.jsonl``, ``*.png``) are removed first. ``--threads 1,2,...`` (decode,
reward-step) times every path at each thread count in one run and adds parallel efficiency per path and a
``*_scaling.png`` plot.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
from collections.abc import Sequence
from typing import Any

# CLI name -> module in samr1.bench (bench/ in the source tree)
BENCHES = {
    "reward-step": "bench_reward_step",
    "mask-iou": "bench_mask_iou",
    "decode": "bench_decode",
    "encoder": "bench_encoder",
    "parse": "bench_parse",
    "train-step": "bench_train_step",
    "latency": "bench_latency",
    "fidelity": "bench_fidelity",
    "multi-object": "bench_multi_object",
    "learn": "bench_learn",
    "limits": "bench_limits",
    "prompt-pack": "bench_prompt_pack",
    "repeated-prompts": "bench_repeated_prompts",
}

# benches too long for `samr1 bench all` at full size (all --quick / --smoke still runs them)
LONG = ("learn",)


def _sweeps(name: str) -> bool:
    """Whether a bench sweeps thread counts itself (its ``run`` takes ``threads``)."""
    return name in SWEEPS


# benches whose run(threads=[...]) times several thread counts in one run
SWEEPS = ("decode", "reward-step")


def register(sub: argparse._SubParsersAction) -> None:
    from samr1.cli import add_sam_flags

    p = sub.add_parser("bench", help=f"run a benchmark ({', '.join([*BENCHES, 'all'])})",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", choices=[*BENCHES, "all"], help="which benchmark")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="small sizes, one repeat: a sub-minute run")
    size.add_argument("--smoke", action="store_true",
                      help="tiniest sizes, one call, no warm-up: seconds; checks agreement, not speed")
    p.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    p.add_argument("--encoder", default=None, metavar="BACKEND",
                   help="reward-step only: the engine's image encoder: torch (fp32, default), torch-bf16, torch-fp16, "
                        "torch-bf16-compiled, torch-fp16-compiled, onnx, tensorrt (fp16), tensorrt-fp32")
    p.add_argument("--threads", type=_thread_list, default=None, metavar="N[,N...]",
                   help="torch threads for the run (default: torch's choice); on a shared CPU 1 is steadier. "
                        "decode and reward-step take a comma-separated sweep (e.g. 1,2,4): each count timed "
                        "in the same run, with parallel efficiency and a scaling plot")
    # Benches time the work and check that the ways agree; a random-weight SAM is a choice made on purpose
    # here (speed does not depend on the weights), so it is not warned about (random_sam_ok).
    add_sam_flags(p, checkpoint_help="reward-step only: weights for --sam (default: the shipped ones for "
                  "tiny-shapes, else random: speed does not depend on them, the IoUs then only show agreement)")
    p.add_argument("--loop-subset", type=int, default=None, metavar="K",
                   help="reward-step only: time the per-completion loop on the first K completions and "
                        "extrapolate (0: all; default: 16 for SAM 2 kinds on the CPU, else all)")
    p.add_argument("--peer-repo", default=None, metavar="PATH",
                   help="fidelity only: a checkout of Seg-Zero (dvlab-research/Seg-Zero, which holds VisionReasoner's "
                        "reward too); its real reward modules are imported and run beside samr1's presets")
    p.add_argument("--seeds", type=_int_list, default=None, metavar="S[,S...]",
                   help="learn only: seeds to run, each a full warm start + both GRPO arms (default: 0)")
    p.add_argument("--modes", type=lambda t: [m for m in t.split(",") if m], default=None, metavar="MODE[,MODE]",
                   help="learn only: scene modes, plain (a box is a good proxy for the mask) and/or hard "
                        "(overlapping, concave or thin objects; the points decide) (default: plain)")
    p.add_argument("--out", default=None, metavar="DIR", help="write JSON-lines records and PNG plots here")
    again = p.add_mutually_exclusive_group()
    again.add_argument("--append", action="store_true",
                       help="--out already holds records: add this run's to them (each record has its date and commit)")
    again.add_argument("--overwrite", action="store_true",
                       help="--out already holds records: remove its *.jsonl and *.png first")
    p.set_defaults(func=_run, random_sam_ok=True)


def _int_list(text: str) -> list[int]:
    """argparse type of ``--seeds``: "0,1,2" -> [0, 1, 2]."""
    try:
        vals = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas (e.g. 0,1,2), got {text!r}") from None
    if not vals or len(set(vals)) != len(vals):
        raise argparse.ArgumentTypeError(f"expected distinct integers, got {text!r}")
    return vals


def _thread_list(text: str) -> list[int]:
    """argparse type of ``--threads``: "2" -> [2], "1,2,4" -> [1, 2, 4]."""
    try:
        counts = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected positive ints separated by commas (e.g. 1,2,4), got {text!r}") from None
    if not counts:
        raise argparse.ArgumentTypeError(f"expected at least one thread count, got {text!r}")
    return counts


def run_bench(name: str, *, quick: bool = False, smoke: bool = False, device: str = "cpu", sam_kind: str = "tiny",
              out: str | None = None, threads: int | Sequence[int] | None = None,
              encoder: str | None = None, checkpoint: str | None = None,
              loop_subset: int | None = None, seeds: Sequence[int] | None = None,
              modes: Sequence[str] | None = None, peer_repo: str | None = None) -> list[dict[str, Any]]:
    """Import ``samr1.bench.<module>`` and call its ``run`` with the arguments it accepts; return its rows.

    ``threads``: one count (torch's threads for the run), or several for a sweep (benches whose ``run``
    takes ``threads``: decode, reward-step). ``checkpoint`` / ``loop_subset``: passed to benches whose ``run``
    takes them (reward-step), ignored by the others; so is ``peer_repo`` (fidelity).

    Raises:
        ValueError: unknown ``name``, ``quick`` and ``smoke`` together, a thread count < 1 or repeated, a
            sweep for a bench without one, or ``encoder`` given to a bench that has no encoder choice.
    """
    if name not in BENCHES:
        raise ValueError(f"unknown benchmark {name!r}; choose one of {list(BENCHES)}")
    if quick and smoke:
        raise ValueError("quick and smoke are exclusive: smoke is the smaller of the two")
    counts = None
    if threads is not None:
        counts = [threads] if isinstance(threads, int) else list(threads)
        if not counts or any(isinstance(t, bool) or not isinstance(t, int) or t < 1 for t in counts):
            raise ValueError(f"threads must be >= 1 (one count or a list), got {threads!r}")
        if len(set(counts)) != len(counts):
            raise ValueError(f"threads: each count once, got {counts}")
    try:
        module = importlib.import_module(f"samr1.bench.{BENCHES[name]}")
    except ModuleNotFoundError as exc:
        raise SystemExit(f"benchmark {name!r} is not available in this build ({exc})") from None
    params = inspect.signature(module.run).parameters
    kwargs: dict[str, Any] = {"quick": quick, "out": out, "device": device}
    if smoke:
        kwargs["smoke"] = True
    if "sam_kind" in params:
        kwargs["sam_kind"] = sam_kind
    if encoder is not None:
        if "encoder" not in params:
            raise ValueError(f"benchmark {name!r} has no encoder choice (--encoder is for reward-step; "
                             "the encoder bench times every backend)")
        kwargs["encoder"] = encoder
    for key, value in (("checkpoint", checkpoint), ("loop_subset", loop_subset), ("seeds", seeds), ("modes", modes),
                       ("peer_repo", peer_repo)):
        if value is not None and key in params:
            kwargs[key] = value
    if counts is None:
        return module.run(**kwargs)
    if "threads" in params:  # the bench sweeps (or sets) the counts itself
        return module.run(**kwargs, threads=counts if len(counts) > 1 else counts[0])
    if len(counts) > 1:
        raise ValueError(f"benchmark {name!r} takes one thread count; sweeps (--threads 1,2,...) are for "
                         f"{[n for n in BENCHES if _sweeps(n)]}")
    threads = counts[0]
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return module.run(**kwargs)
    finally:
        torch.set_num_threads(old)


def _run(args: argparse.Namespace) -> int:
    from samr1.cli import resolve_device

    device = resolve_device(args.device)
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    # "all" leaves out the long ones at full size, and fidelity without a peer checkout (--peer-repo)
    names = ([n for n in BENCHES if (mode != "full" or n not in LONG) and (n != "fidelity" or args.peer_repo)]
             if args.name == "all" else [args.name])
    if (args.seeds or args.modes) and "learn" not in names:
        raise SystemExit("samr1 bench: --seeds and --modes apply to learn only")
    if args.threads is not None:
        if any(t < 1 for t in args.threads):
            raise SystemExit(f"samr1 bench: --threads must be >= 1, got {','.join(map(str, args.threads))}")
        if len(set(args.threads)) != len(args.threads):
            raise SystemExit(f"samr1 bench: --threads lists a count twice: {','.join(map(str, args.threads))}")
        if len(args.threads) > 1 and not all(_sweeps(n) for n in names):
            raise SystemExit("samr1 bench: a --threads sweep (several counts) is for decode and reward-step; "
                             "give one count for the others")
    if args.encoder is not None and "reward-step" not in names:
        raise SystemExit("samr1 bench: --encoder applies to reward-step only (the encoder bench times every backend)")
    if args.out:
        from samr1.outdirs import check_run_dir, claim_run_dir

        check_run_dir(args.out, flag="--out", resume=args.append, overwrite=args.overwrite, resume_flag="--append")
        claim_run_dir(args.out, records=("*.jsonl", "*.png"), overwrite=args.overwrite)
    elif args.append or args.overwrite:
        raise SystemExit("samr1 bench: --append and --overwrite go with --out DIR")
    for name in names:
        print(f"\n=== samr1 bench {name} ({mode}, {device}) ===")
        run_bench(name, quick=args.quick, smoke=args.smoke, device=device, sam_kind=args.sam, out=args.out,
                  threads=args.threads, encoder=args.encoder if name == "reward-step" else None,
                  checkpoint=args.sam_checkpoint, loop_subset=args.loop_subset, seeds=args.seeds, modes=args.modes,
                  peer_repo=args.peer_repo)
    return 0
