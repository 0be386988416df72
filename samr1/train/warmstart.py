"""A short supervised warm start: teach a (tiny) policy the answer format before GRPO.

Targets are written from the ground truth, in the policy's frame (``policy_size`` x ``policy_size``)::

    <think>{query}</think><answer>{"bbox": [x1, y1, x2, y2], "points_1": [x, y], "points_2": [x, y]}</answer>

with the box of the mask and Seg-Zero's two inscribed-circle points (:func:`samr1.geometry.mask_to_points`).
The loss is next-token cross-entropy on the answer tokens only (the prompt, image tokens included, is
masked out), rendered exactly as TRL renders the GRPO prompt (chat template, image part first).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = ["target_text", "warm_start"]


def target_text(query: str, mask: np.ndarray, policy_size: int = 840) -> str:
    """The supervised completion for one row: think = the query, answer = the mask's box and 2 points,
    integer pixels of the ``policy_size`` square frame (mask is H x W bool at the original size)."""
    from samr1.geometry import mask_to_box, mask_to_points

    h, w = mask.shape
    sx, sy = policy_size / w, policy_size / h
    x1, y1, x2, y2 = mask_to_box(mask)
    pts = mask_to_points(mask, 2)
    if len(pts) == 1:
        pts = [pts[0], pts[0]]
    ans = {"bbox": [round(x1 * sx), round(y1 * sy), round(x2 * sx), round(y2 * sy)],
           "points_1": [round(pts[0][0] * sx), round(pts[0][1] * sy)],
           "points_2": [round(pts[1][0] * sx), round(pts[1][1] * sy)]}
    return f"<think>{query}</think><answer>{json.dumps(ans)}</answer>"


def _encode(processor: Any, prompt: list[dict], image: Any, target: str) -> tuple[list[int], int, dict]:
    from trl.data_utils import prepare_multimodal_messages

    msgs = prepare_multimodal_messages(prompt, images=[image])
    prefix = processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    full = prefix + target + processor.tokenizer.eos_token
    enc = processor(text=[full], images=[image], return_tensors="pt")
    n_prefix = processor(text=[prefix], images=[image], return_tensors="pt")["input_ids"].shape[1]
    return enc["input_ids"][0].tolist(), n_prefix, {"pixel_values": enc["pixel_values"],
                                                    "image_grid_thw": enc["image_grid_thw"]}


def warm_start(model_dir: str, rows: Sequence[Any], out_dir: str, *, steps: int = 300, batch_size: int = 8,
               lr: float = 2e-3, prompt: str = "seg-zero", policy_size: int = 840, seed: int = 0,
               log: Callable[[str], None] | None = print, log_every: int = 25,
               fixed_target: str | None = None) -> dict[str, Any]:
    """Fine-tune ``model_dir`` on ``rows`` (checked :class:`samr1.train.data.TrainRow`) for ``steps`` AdamW
    steps; save model + processor to ``out_dir``; return ``{"loss": [...], "seconds": s, "out_dir": ...}``.

    ``fixed_target``: train every row towards this one completion instead of its ground-truth answer (a
    format-only policy for benchmarks: its answers parse, so SAM runs on every completion)."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from samr1.train.data import PolicyDataset

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    processor = AutoProcessor.from_pretrained(model_dir)
    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32)
    model.train()
    ds = PolicyDataset(rows, prompt, policy_size, lru=len(rows) + 1)
    examples = []
    for i in range(len(ds)):
        item = ds[i]
        ids, n_prefix, vis = _encode(processor, item["prompt"], item["image"],
                                     fixed_target or target_text(rows[i].query, item["mask"], policy_size))
        examples.append((ids, n_prefix, vis))
    pad = processor.tokenizer.pad_token_id
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 20) * 0.5 * (1 + math.cos(math.pi * s / steps)))
    losses = []
    t0 = time.perf_counter()
    for step in range(steps):
        idx = rng.choice(len(examples), size=min(batch_size, len(examples)), replace=False)
        batch = [examples[j] for j in idx]
        n = max(len(b[0]) for b in batch)
        input_ids = torch.full((len(batch), n), pad, dtype=torch.long)
        labels = torch.full((len(batch), n), -100, dtype=torch.long)
        attn = torch.zeros((len(batch), n), dtype=torch.long)
        for r, (ids, n_prefix, _) in enumerate(batch):
            input_ids[r, :len(ids)] = torch.tensor(ids)
            labels[r, n_prefix:len(ids)] = torch.tensor(ids[n_prefix:])
            attn[r, :len(ids)] = 1
        pixel_values = torch.cat([b[2]["pixel_values"] for b in batch])
        grid = torch.cat([b[2]["image_grid_thw"] for b in batch])
        out = model(input_ids=input_ids, attention_mask=attn, labels=labels, pixel_values=pixel_values,
                    image_grid_thw=grid)
        opt.zero_grad()
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(out.loss.item())
        if log is not None and (step % log_every == 0 or step == steps - 1):
            log(f"warm start step {step + 1}/{steps}: loss {np.mean(losses[-log_every:]):.4f}")
    os.makedirs(out_dir, exist_ok=True)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return {"loss": losses, "seconds": time.perf_counter() - t0, "out_dir": out_dir}
