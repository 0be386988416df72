"""``samr1 trl-data``: write a dataset folder for ``trl grpo --dataset_name DIR`` with samr1's reward functions.

  samr1 trl-data --data train.jsonl --out trl_data/ --policy-image-size 840
  SAMR1_SAM=vit_h SAMR1_SAM_CHECKPOINT=sam_vit_h_4b8939.pth trl grpo --dataset_name trl_data/ \\
      --reward_funcs samr1.trl_rewards.think_format samr1.trl_rewards.answer_format samr1.trl_rewards.tiered_iou ...

The rows are the ones ``samr1 train`` gives TRL: ``prompt``, ``image`` (the policy's square copy), ``sam_image``
(the original), ``mask`` and ``ignore`` (ReasonSeg's ignore regions, null elsewhere); see samr1.train.trl_data and
samr1.trl_rewards.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from samr1.train.config import DATA_FORMATS

    p = sub.add_parser("trl-data", help="write a dataset folder for `trl grpo` with samr1.trl_rewards",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, metavar="PATH", help="training data, any form `samr1 train --data` reads")
    p.add_argument("--out", required=True, metavar="PATH", help="output folder (train.parquet is written there)")
    p.add_argument("--data-format", default="auto", choices=DATA_FORMATS, help="how to read --data (default: auto)")
    p.add_argument("--split", default="train", help="RefCOCOg / HF split (default: train)")
    p.add_argument("--image-dir", metavar="PATH", help="RefCOCOg only: folder of the COCO images")
    p.add_argument("--prompt", default="seg-zero", help="prompt template name or a string with {query} "
                   "(default: seg-zero)")
    p.add_argument("--policy-image-size", type=int, default=840, help="side of the square image the policy sees; "
                   "set SAMR1_MODEL_SIZE to the same value for the rewards (default: 840)")
    p.add_argument("--max-samples", type=int, help="at most this many rows, drawn with --seed")
    p.add_argument("--seed", type=int, default=42, help="seed of the row subset (default: 42)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from samr1.cli import UsageError, require_extra

    require_extra("train")
    from samr1.train.trl_data import write_trl_dataset

    if args.policy_image_size < 28:
        raise UsageError(f"--policy-image-size must be >= 28, got {args.policy_image_size}")
    try:
        res = write_trl_dataset(args.data, args.out, data_format=args.data_format, split=args.split,
                                image_dir=args.image_dir, prompt=args.prompt, policy_image_size=args.policy_image_size,
                                max_samples=args.max_samples, seed=args.seed)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    print(f"samr1 trl-data: {res['rows']} rows written to {res['path']}"
          + (f" ({res['skipped']} bad rows skipped)" if res["skipped"] else ""))
    return 0
