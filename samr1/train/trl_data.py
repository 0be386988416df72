"""A dataset folder for ``trl grpo --dataset_name DIR`` with samr1's reward functions (:mod:`samr1.trl_rewards`).

:func:`write_trl_dataset` reads any data ``samr1 train`` reads (a JSONL manifest, a Hugging Face dataset, RefCOCOg,
ReasonSeg), checks every row as ``samr1 train`` does, and writes ``DIR/train.parquet`` whose rows are exactly
the rows ``samr1 train`` gives TRL:

- ``prompt``: the conversational prompt (one user turn, the template filled with the query);
- ``image``: the policy's copy, resized to ``policy_image_size`` x ``policy_image_size`` (its answers are in
  these pixels: ``SAMR1_MODEL_SIZE`` must be this side);
- ``sam_image``: the original image SAM sees; ``mask``: the ground-truth mask at the original size (0 / 255);
- ``ignore``: ReasonSeg's ignore region at the original size (0 / 255), null for rows without one. The reward
  reads this column by name (``SamR1Reward``'s ``ignore_key``) and leaves those pixels out of I and U, as
  ``samr1 eval`` does.

Images are stored as PNG bytes with ``datasets``' ``Image`` feature, so ``datasets.load_dataset(DIR)`` (which
``trl grpo`` calls) gives PIL images back.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["write_trl_dataset"]


def write_trl_dataset(data: str, out: str, *, data_format: str = "auto", split: str = "train",
                      image_dir: str | None = None, prompt: str = "seg-zero", policy_image_size: int = 840,
                      max_samples: int | None = None, seed: int = 42) -> dict[str, Any]:
    """Write ``out/train.parquet`` (see the module docstring); return ``{"path", "rows", "skipped"}``.

    Raises:
        ValueError: ``out`` already holds a ``train.parquet`` (nothing is overwritten).
        samr1.io.InputError: a bad row (the message names it), as ``samr1 train`` reports it.
    """
    import datasets
    import numpy as np
    from PIL import Image

    from samr1.train.data import PolicyDataset, check_rows, load_rows

    path = os.path.join(out, "train.parquet")
    if os.path.exists(path):
        raise ValueError(f"{path} exists; give a new --out folder")
    rows = load_rows(data, data_format, split=split, image_dir=image_dir)
    good, bad = check_rows(rows, max_samples=max_samples, seed=seed)
    ds = PolicyDataset(good, prompt, policy_image_size)
    columns: dict[str, list[Any]] = {"prompt": [], "image": [], "sam_image": [], "mask": [], "ignore": []}
    for i in range(len(ds)):
        item = ds[i]
        columns["prompt"].append(item["prompt"])
        columns["image"].append(item["image"])
        columns["sam_image"].append(Image.fromarray(np.asarray(item["sam_image"], dtype=np.uint8)))
        columns["mask"].append(Image.fromarray(np.asarray(item["mask"], dtype=np.uint8) * 255))
        ign = item["ignore"]
        columns["ignore"].append(None if ign is None or not ign.any() else
                                 Image.fromarray(np.asarray(ign, dtype=np.uint8) * 255))
    features = datasets.Features({
        "prompt": [{"role": datasets.Value("string"), "content": datasets.Value("string")}],
        "image": datasets.Image(), "sam_image": datasets.Image(), "mask": datasets.Image(),
        "ignore": datasets.Image()})
    os.makedirs(out, exist_ok=True)
    datasets.Dataset.from_dict(columns, features=features).to_parquet(path)
    return {"path": path, "rows": len(ds), "skipped": len(bad)}
