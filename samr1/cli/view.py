"""``samr1 view``: look at a training run in the browser: learning curves and the logged rollouts.

    samr1 view runs/exp1                      # serves http://127.0.0.1:8765 until Ctrl-C
    samr1 view runs/exp1 --export exp1.html   # one self-contained file to share (images inline)

RUN_DIR is a ``samr1 train --output-dir`` (``metrics.jsonl``; ``rollouts/`` when trained with
``--rollouts-every K``), or a folder holding several runs (up to three folders down, e.g. ``samr1 bench learn``'s
output with its ``learn.jsonl``). The page shows the reward components, the parse rate and the held-out gIoU
over the steps, and per logged step the groups: the G answers side by side with SAM's masks and their rewards,
sortable by reward. The run may still be going: reload the page (or press Reload) to see new steps.
The server listens on 127.0.0.1 only, unless --host says otherwise together with --allow-remote (the viewer has
no authentication: anyone who can reach the port sees the run).
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("view", help="browse a training run's learning curves and logged rollouts (a local web page)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", metavar="RUN_DIR", help="the run's --output-dir, or a folder of runs")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8765, help="TCP port (default 8765; 0 picks a free one)")
    p.add_argument("--allow-remote", action="store_true",
                   help="allow a --host other machines can reach (the page has no login)")
    p.add_argument("--export", metavar="FILE.html", help="write one self-contained HTML file instead of serving")
    p.add_argument("--force", action="store_true", help="with --export: replace FILE.html if it exists")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import os

    from samr1.cli import UsageError, check_output_file
    from samr1.hosts import is_loopback
    from samr1.view.run import find_runs

    if not os.path.isdir(args.run_dir):
        raise UsageError(f"RUN_DIR {args.run_dir}: not a folder (give a samr1 train --output-dir)")
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be in 0..65535, got {args.port}")
    if not is_loopback(args.host) and not args.allow_remote:
        raise UsageError(f"--host {args.host} is reachable from other machines and the viewer has no login; "
                         "pass --allow-remote to serve it there anyway")
    if not find_runs(args.run_dir):
        print(f"samr1 view: no run in {args.run_dir} yet (no metrics.jsonl, learn.jsonl or rollouts/ here or up to three "
              "folders down); the page will show runs as they appear", flush=True)
    if args.export:
        check_output_file(args.export, "--export", force=args.force)
        from samr1.view.export import export_html

        st = export_html(args.run_dir, args.export)
        print(f"samr1 view: wrote {args.export} ({st['bytes'] / 1e6:.2f} MB: {st['runs']} run(s), {st['steps']} "
              f"logged step(s), {st['images']} image(s))")
        return 0

    from samr1.view.server import ViewServer

    try:
        srv = ViewServer(args.run_dir, host=args.host, port=args.port)
    except OSError as exc:
        raise UsageError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
    print(f"samr1 view: {os.path.abspath(args.run_dir)} at {srv.url}/ (Ctrl-C to stop)", flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        srv.httpd.server_close()
    return 0
