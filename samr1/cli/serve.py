"""``samr1 serve``: SAM (and optionally a policy) over HTTP, and the reward as a service.

    samr1 serve --sam vit_h --sam-checkpoint sam_vit_h.pth --port 8000
    samr1 serve --model policy/ --sam vit_h --sam-checkpoint sam_vit_h.pth --token-file token.txt --host 0.0.0.0

Endpoints: ``GET /healthz``; ``POST /segment`` (multipart ``image`` + ``box``/``points``, or ``query`` when
``--model`` is given) -> answer, think text, RLE mask, box, timings; ``POST /score`` (the reward as a
service; ``samr1.client.SamR1Client`` is its TRL reward function). The models are loaded once; concurrent
requests are batched into one model call; a full queue answers 503. The server listens on 127.0.0.1 unless
``--host`` says otherwise, and refuses a non-loopback address without a bearer token (``--token-file`` or
``SAMR1_SERVE_TOKEN``) unless ``--no-token`` is given.

Memory is bounded by two caches, each an LRU with a flag: uploaded images and masks (``--blob-mb``, default
1024) and SAM image embeddings (``--cache-mb``, default 2048; on CUDA it lives on the GPU). A request whose
head does not arrive within ``--header-timeout`` seconds (default 10), or whose body does not arrive within
``--body-timeout`` seconds (default 60), gets 408 and its connection is closed.
"""

from __future__ import annotations

import argparse
import os


def register(sub: argparse._SubParsersAction) -> None:
    from samr1.cli import add_components_flag, add_generation_flags, add_model_flags

    p = sub.add_parser("serve", help="serve segmentation and the reward over HTTP (FastAPI + uvicorn)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_flags(p, policy=True)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default 8000; 0 picks a free one)")
    p.add_argument("--token-file", metavar="PATH", help="file holding the bearer token clients must send "
                   "(default: $SAMR1_SERVE_TOKEN; none on loopback)")
    p.add_argument("--no-token", action="store_true", help="allow a non-loopback --host without a token")
    add_generation_flags(p)
    p.add_argument("--max-body-mb", type=float, default=32.0, help="largest request body in MiB (default 32)")
    p.add_argument("--max-side", type=int, default=8192, help="longest accepted image side in px (default 8192)")
    p.add_argument("--max-queue", type=int, default=256, help="requests waiting at most before 503 (default 256)")
    p.add_argument("--max-batch", type=int, default=64, help="most requests batched into one model call (default 64)")
    p.add_argument("--blob-mb", type=float, default=1024.0,
                   help="memory for uploaded images and masks kept for /score, in MiB (LRU; default 1024)")
    p.add_argument("--cache-mb", type=float, default=2048.0,
                   help="memory for cached SAM image embeddings, in MiB (LRU; GPU memory on CUDA; default 2048)")
    p.add_argument("--header-timeout", type=float, default=10.0, metavar="SECONDS",
                   help="a request's headers must arrive within this, else 408 and close (default 10)")
    p.add_argument("--body-timeout", type=float, default=60.0, metavar="SECONDS",
                   help="a request's body must arrive within this once read, else 408 and close (default 60)")
    add_components_flag(p, default="think,answer,iou")  # what /score sums
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import uvicorn

    from samr1.serve.runner import uvicorn_options

    app, device, token = build_app(args)
    print(f"samr1 serve: SAM {args.sam} on {device}" + (f", policy {args.model}" if args.model else "")
          + f", listening on http://{args.host}:{args.port}" + (" (bearer token required)" if token else ""),
          flush=True)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="info", **uvicorn_options(app))
    finally:
        app.state.service.close()
    return 0


def build_app(args: argparse.Namespace) -> tuple[object, str, str | None]:
    """The app the parsed ``samr1 serve`` flags describe (flags checked first), its device and its token."""
    from samr1.cli import UsageError, generation_settings, resolve_device, split_components
    from samr1.hosts import is_loopback
    from samr1.io import InputError

    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be in 0..65535, got {args.port}")
    for flag, v in (("--max-body-mb", args.max_body_mb), ("--max-side", args.max_side),
                    ("--max-queue", args.max_queue), ("--max-batch", args.max_batch),
                    ("--header-timeout", args.header_timeout),
                    ("--body-timeout", args.body_timeout)):
        if not 0 < v < float("inf"):
            raise UsageError(f"{flag} must be positive, got {v}")
    for flag, v in (("--blob-mb", args.blob_mb), ("--cache-mb", args.cache_mb)):
        if not 0 <= v < float("inf"):
            raise UsageError(f"{flag} must be >= 0 MiB, got {v}")
    token = None
    if args.token_file:
        try:
            with open(args.token_file, encoding="utf-8") as f:
                token = f.read().strip()
        except OSError as exc:  # an input that cannot be read: exit 3, like any unreadable input file
            raise InputError(f"--token-file {args.token_file}: cannot read it ({exc.strerror})") from None
        if not token:
            raise InputError(f"--token-file {args.token_file} is empty")
    elif os.environ.get("SAMR1_SERVE_TOKEN"):
        token = os.environ["SAMR1_SERVE_TOKEN"].strip()
    if not is_loopback(args.host) and token is None and not args.no_token:
        raise UsageError(f"--host {args.host} is reachable from other machines: give a bearer token "
                         "(--token-file or SAMR1_SERVE_TOKEN), or pass --no-token to serve without one")
    components = split_components(args.components)

    from samr1.engine import SamEngine
    from samr1.rewards import SamR1Reward
    from samr1.sam import load_sam
    from samr1.serve import Limits, ServerConfig, create_app

    device = resolve_device(args.device)
    engine = SamEngine(load_sam(args.sam, checkpoint=args.sam_checkpoint, device=device),
                       cache_bytes=int(args.cache_mb * (1 << 20)))
    reward = SamR1Reward(engine, components=components)
    segmenter = None
    if args.model:
        from samr1.pipeline import ReasoningSegmenter

        segmenter = ReasoningSegmenter.from_pretrained(args.model, engine, device=device, **generation_settings(args))
    limits = Limits(max_body_bytes=int(args.max_body_mb * (1 << 20)), max_side=args.max_side,
                    max_pixels=min(args.max_side * args.max_side, Limits().max_pixels))
    cfg = ServerConfig(limits=limits, token=token, max_queue=args.max_queue, max_batch=args.max_batch,
                       blob_bytes=int(args.blob_mb * (1 << 20)), header_timeout_s=args.header_timeout,
                       body_timeout_s=args.body_timeout)
    return create_app(engine, reward=reward, segmenter=segmenter, config=cfg), device, token
