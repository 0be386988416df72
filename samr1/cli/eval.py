"""``samr1 eval``: a policy + SAM on a dataset: gIoU, cIoU, parse failures, per-sample rows, an IoU figure.

    samr1 eval --model policy/ --sam vit_h --sam-checkpoint sam_vit_h.pth --data val.jsonl --out results.json
    # 8 processes, one per GPU, then one merge:
    samr1 eval ... --num-shards 8 --shard 3 --device cuda:3 --out shard3.json
    samr1 eval --merge shard*.json --out results.json

``--data`` is a samr1 manifest (JSONL), a Hugging Face folder / parquet (Seg-Zero's evaluation sets), a
RefCOCOg folder or a ReasonSeg split folder (the training data loaders; ``--data-format`` to choose).
Writes ``--out`` (JSON: ``giou``, ``ciou``, counts, parse-failure reasons, every sample's counts),
``<out>.samples.jsonl`` (one row per sample: query, raw completion, answer, IoU) and ``<out>.iou.png`` (the
IoU distribution). gIoU = mean per-sample IoU, cIoU = summed intersections / summed unions; a parse failure
counts intersection 0 and union |gt|; ``--empty-union`` decides an empty prediction on an empty ground truth
(default "lisa": IoU 1; "visionreasoner": 0; "segzero": skip the sample). ReasonSeg "ignore" regions are
excluded from both counts when the masks keep them (LISA's raw JSON; Seg-Zero's parquet lost them).
Beside them: ``no_target_accuracy`` (rows whose ground truth is empty -- a query that names no object --
answered with an empty mask, e.g. the answer ``[]``) and ``false_empty_rate`` (rows with a target answered
with an empty mask). Multi-object rows (a manifest's ``"masks": [...]``, a dataset's list of masks) are
scored on the union of their instances.
"""

from __future__ import annotations

import argparse
import json
import os


def register(sub: argparse._SubParsersAction) -> None:
    from samr1.cli import add_generation_flags, add_model_flags

    p = sub.add_parser("eval", help="evaluate a policy + SAM: gIoU, cIoU, per-sample rows (shardable)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_flags(p, policy=True)
    p.add_argument("--data", metavar="PATH", help="manifest JSONL, HF folder/parquet, RefCOCOg or ReasonSeg folder")
    p.add_argument("--data-format", default="auto", choices=["auto", "manifest", "hf", "refcocog", "reasonseg"])
    p.add_argument("--split", default="val", help="split for HF / RefCOCOg data (default val)")
    p.add_argument("--image-dir", metavar="DIR", help="RefCOCOg: the COCO images folder")
    p.add_argument("--out", required=True, help="results JSON (the JSONL and the figure go beside it)")
    p.add_argument("--force", "--overwrite", dest="force", action="store_true",
                   help="replace existing outputs (the results JSON, its samples JSONL and figure)")
    p.add_argument("--batch-size", type=int, default=8, help="requests per batched generation (default 8)")
    p.add_argument("--max-samples", type=int, default=None, help="evaluate the first N samples only")
    p.add_argument("--skip-bad-rows", action="store_true",
                   help="leave out rows whose image or mask does not load (listed and counted in the results as "
                        "bad_rows); without it they are reported before any model is loaded")
    p.add_argument("--empty-union", default="lisa", choices=["lisa", "visionreasoner", "segzero"],
                   help="IoU of an empty prediction on an empty ground truth: lisa 1 (default), visionreasoner 0, "
                        "segzero: skip the sample")
    add_generation_flags(p)
    p.add_argument("--num-shards", type=int, default=1, help="split the set into K strided shards (default 1)")
    p.add_argument("--shard", type=int, default=0, help="which shard this process evaluates (0..K-1)")
    p.add_argument("--merge", nargs="+", metavar="RESULTS", help="merge the shards' results JSON files into --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--allow-random-sam", action="store_true",
                   help="evaluate with a random-weight SAM (tiny, or a kind without --sam-checkpoint): its gIoU "
                        "and cIoU are meaningless, so this is refused without the flag")
    p.set_defaults(func=_run)


def output_paths(out: str) -> dict[str, str]:
    """Where ``samr1 eval --out OUT`` writes: the results JSON, the per-sample JSONL and the IoU figure."""
    root = out[:-5] if out.endswith(".json") else out
    return {"results": out, "samples": f"{root}.samples.jsonl", "figure": f"{root}.iou.png"}


def iou_figure(result: dict, path: str, title: str) -> str:
    """Histogram of per-sample IoU (parse failures apart), gIoU and cIoU in the title; returns ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parsed = [s["iou"] for s in result["samples"] if s["parsed"] and s["iou"] is not None]
    failed = sum(1 for s in result["samples"] if not s["parsed"])
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(parsed, bins=20, range=(0, 1), color="tab:blue", label=f"parsed ({len(parsed)})")
    if failed:
        ax.bar([-0.05], [failed], width=0.04, color="tab:red", label=f"parse failures ({failed}, IoU 0)")
    ax.set_xlabel("per-sample IoU")
    ax.set_ylabel("samples")
    ax.set_xlim(-0.1, 1.0)
    ax.set_title(f"{title}\ngIoU {_num(result['giou'], 3)}  cIoU {_num(result['ciou'], 3)}  n={result['n']}",
                 fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _num(v: float | None, digits: int) -> str:
    """``v`` with ``digits`` decimals, or "-" for no value (None or NaN: a mean over no samples)."""
    return "-" if v is None or v != v else f"{v:.{digits}f}"


def write_outputs(result: dict, out: str, title: str) -> dict[str, str]:
    """Write the results JSON (samples' counts inline, so shards can be merged), the JSONL and the figure.

    The JSON is always valid (a metric over no samples is ``null``, never ``NaN``), and ``files`` names the
    JSONL and the figure relative to the results file's folder (where they are), so a results file read from
    any folder finds its own samples."""
    from samr1 import jsonout
    from samr1.cli import OutputError, os_error_text
    from samr1.outdirs import claim_run_files

    paths = output_paths(out)
    compact = {k: v for k, v in result.items() if k != "samples"}
    compact["samples"] = [{k: s[k] for k in ("index", "parsed", "iou", "intersection", "union", "gt_pixels",
                                             "pred_pixels", "skipped")} for s in result["samples"]]
    compact["files"] = {"samples": os.path.basename(paths["samples"]), "figure": os.path.basename(paths["figure"])}
    try:
        claim_run_files(paths.values())  # the previous run's files go first (--force): never one run's beside another's
        with open(paths["samples"], "w", encoding="utf-8") as f:
            for s in result["samples"]:
                f.write(jsonout.dumps(s) + "\n")
        iou_figure(result, paths["figure"], title)
        with open(out, "w", encoding="utf-8") as f:
            jsonout.dump(compact, f, indent=1)
    except OSError as exc:
        raise OutputError(f"--out {out}: cannot write the results: {os_error_text(exc)}") from exc
    return paths


def _samples_path(shard: str, recorded: str) -> str:
    """The samples JSONL of results file ``shard``: ``recorded`` (its ``files.samples``) resolved from the
    shard's own folder, never from the current one; results written before the name was recorded relative
    to the results file (``ev/shard0.samples.jsonl``) are found beside it by their file name."""
    folder = os.path.dirname(os.path.abspath(shard))
    if os.path.isabs(recorded):
        return recorded
    beside = os.path.join(folder, recorded)
    if os.path.exists(beside):
        return beside
    return os.path.join(folder, os.path.basename(recorded))


def _read_shard(path: str) -> dict:
    """A shard's results with its full sample records (from its JSONL, which holds text and answers too),
    checked against the shard's own counts: as many rows as its ``n``, with its sample indices in order."""
    from samr1.io import InputError

    try:
        with open(path, encoding="utf-8") as f:
            res = json.load(f)
        samples_path = _samples_path(path, res["files"]["samples"])
        compact = res["samples"]  # the counts inline in the results file
        with open(samples_path, encoding="utf-8") as f:
            res["samples"] = [json.loads(line) for line in f if line.strip()]
        got, want = [s["index"] for s in res["samples"]], [s["index"] for s in compact]
    except FileNotFoundError as exc:
        raise InputError(f"--merge {path}: file not found ({exc.filename})") from None
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise InputError(f"--merge {path}: not a samr1 eval results file ({type(exc).__name__}: {exc})") from None
    if len(got) != res.get("n") or got != want:
        raise InputError(f"--merge {path}: its samples file {samples_path} holds {len(got)} rows (indices "
                         f"{got[:5]}{'...' if len(got) > 5 else ''}) but the results list n={res.get('n')} "
                         f"(indices {want[:5]}{'...' if len(want) > 5 else ''}): the two files are of different runs")
    return res


def _run(args: argparse.Namespace) -> int:
    from samr1.cli import UsageError, check_output_file, generation_settings, require_extra, resolve_device
    from samr1.pipeline import merge_results

    paths = output_paths(args.out)
    if args.merge:
        for key in ("results", "samples", "figure"):
            check_output_file(paths[key], "--out", force=args.force)
        merged = merge_results([_read_shard(p) for p in args.merge])
        write_outputs(merged, args.out, f"merged from {merged['merged_from']} shards")
        _summary(merged, paths)
        return 0
    if not args.model or not args.data:
        raise UsageError("give --model and --data (or --merge RESULTS... to merge shards)")
    refuse_random_sam(args)
    for flag, v in (("--batch-size", args.batch_size), ("--num-shards", args.num_shards)):
        if v < 1:
            raise UsageError(f"{flag} must be >= 1, got {v}")
    if not 0 <= args.shard < args.num_shards:
        raise UsageError(f"--shard must be in 0..{args.num_shards - 1}, got {args.shard}")
    if args.max_samples is not None and args.max_samples < 1:
        raise UsageError(f"--max-samples must be >= 1, got {args.max_samples}")
    for key in ("results", "samples", "figure"):
        check_output_file(paths[key], "--out", force=args.force)
    require_extra("train")  # the policy (transformers) and the dataset loaders, before any loading

    from samr1.engine import SamEngine
    from samr1.pipeline import ReasoningSegmenter, evaluate_rows, shard_indices
    from samr1.sam import load_sam
    from samr1.train.data import load_rows

    rows = load_rows(args.data, args.data_format, split=args.split, image_dir=args.image_dir)
    if not rows:
        from samr1.io import InputError

        raise InputError(f"--data {args.data}: no rows to evaluate (the dataset is empty)")
    if args.max_samples is not None:
        rows = rows[:args.max_samples]
    indices = shard_indices(len(rows), args.num_shards, args.shard)
    # every image and mask of this shard loads before any model does: a bad row found at sample 5,000 of a 7B
    # run would otherwise cost the whole run (reported by position; --skip-bad-rows leaves them out, counted)
    from samr1.train.data import check_rows

    good, bad = check_rows([rows[i] for i in indices], skip_bad=args.skip_bad_rows, what="evaluation")
    kept = {id(r) for r in good}
    bad_rows = [{"index": indices[b.index], "position": b.position, "reason": b.reason} for b in bad]
    if bad:
        print(f"samr1 eval: left out {len(bad)} bad row(s) (--skip-bad-rows); first: {bad[0]}")
    indices = [i for i in indices if id(rows[i]) in kept]
    device = resolve_device(args.device)
    engine = SamEngine(load_sam(args.sam, checkpoint=args.sam_checkpoint, device=device))
    seg = ReasoningSegmenter.from_pretrained(args.model, engine, device=device, **generation_settings(args))
    result = evaluate_rows(seg, rows, indices, batch_size=args.batch_size, empty_union=args.empty_union,
                           progress=not args.no_progress)
    result.update({"model": args.model, "sam": args.sam, "data": args.data, "split": args.split,
                   "max_samples": args.max_samples, "n_rows": len(rows), "bad_rows": bad_rows,
                   "shard": [args.shard, args.num_shards]})
    write_outputs(result, args.out, f"{os.path.basename(os.path.normpath(args.model))} on "
                                    f"{os.path.basename(os.path.normpath(args.data))}")
    _summary(result, paths)
    seg.close()
    return 0


def refuse_random_sam(args: argparse.Namespace) -> None:
    """A metric from a random-weight SAM is meaningless: refused (exit 4) unless ``--allow-random-sam``.

    Raises:
        samr1.sam.ModelError: ``--sam`` has random weights here and ``--allow-random-sam`` was not given.
    """
    from samr1.sam import ModelError, has_random_weights, random_weights_message

    if has_random_weights(args.sam, args.sam_checkpoint) and not args.allow_random_sam:
        raise ModelError(f"refusing to evaluate: {random_weights_message(args.sam)}; or pass --allow-random-sam "
                         "to measure the plumbing anyway")


def _summary(result: dict, paths: dict[str, str]) -> None:
    reasons = ", ".join(f"{k} {v}" for k, v in result["parse_failure_reasons"].items()) or "none"
    print(f"gIoU {_num(result['giou'], 4)}  cIoU {_num(result['ciou'], 4)}  n {result['n']} (scored {result['n_scored']}, "
          f"skipped {result['n_skipped']})  parse failures {result['n_parse_failures']} ({reasons})")
    if "n_no_target" in result:
        print(f"no-target accuracy {result['no_target_accuracy']:.4f} (empty ground truth answered empty, "
              f"n {result['n_no_target']})  false-empty rate {result['false_empty_rate']:.4f} (a target answered "
              f"empty, n {result['n_target']})")
    print(f"-> {paths['results']}, {paths['samples']}, {paths['figure']}")
