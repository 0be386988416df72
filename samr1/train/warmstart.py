"""A short supervised warm start: teach a (tiny) policy the answer format before GRPO.

Targets are written from the ground truth, in the policy's answer frame (pixels of the ``policy_size`` x
``policy_size`` image it sees, or 0..1000 per axis for the families that ground so, Qwen2-VL and Qwen3-VL:
:func:`samr1.policy.default_answer_frame`), either compact (the default: an empty think and integer JSON without spaces, ~100 bytes, quick to learn)::

    <think></think><answer>{"bbox":[x1,y1,x2,y2],"points_1":[x,y],"points_2":[x,y]}</answer>

or verbose (``compact=False``: the query as the think, JSON with spaces), with the box of the mask and Seg-Zero's
two inscribed-circle points (:func:`samr1.geometry.mask_to_points`). The loss is next-token cross-entropy on
the completion tokens only, on inputs built by :mod:`samr1.policy.inputs`: the same keys, padding sides and
rope positions as TRL's GRPO generation and loss forward, so the policy is warm-started under the position
scheme it is later sampled and trained under.
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


def target_text(query: str, mask: np.ndarray, policy_size: int = 840, compact: bool = True,
                answer_frame: str = "pixels") -> str:
    """The supervised completion for one row (mask: H x W bool at the original size): the mask's box and 2
    points as integers of the answer frame (``"pixels"``: of the ``policy_size`` square image; ``"norm1000"``:
    0..1000 on each axis of the image); compact (empty think, no spaces) or verbose (think = the query)."""
    from samr1.geometry import mask_to_box, mask_to_points
    from samr1.policy.frame import answer_frame_size

    h, w = mask.shape
    fh, fw = answer_frame_size(answer_frame, policy_size)
    sx, sy = fw / w, fh / h
    x1, y1, x2, y2 = mask_to_box(mask)
    pts = mask_to_points(mask, 2)
    if len(pts) == 1:
        pts = [pts[0], pts[0]]
    ans = {"bbox": [round(x1 * sx), round(y1 * sy), round(x2 * sx), round(y2 * sy)],
           "points_1": [round(pts[0][0] * sx), round(pts[0][1] * sy)],
           "points_2": [round(pts[1][0] * sx), round(pts[1][1] * sy)]}
    if compact:
        return f"<think></think><answer>{json.dumps(ans, separators=(',', ':'))}</answer>"
    return f"<think>{query}</think><answer>{json.dumps(ans)}</answer>"


def warm_start(model_dir: str, rows: Sequence[Any], out_dir: str, *, steps: int = 300, batch_size: int = 8,
               lr: float = 2e-3, prompt: str = "seg-zero", policy_size: int = 840, seed: int = 0,
               log: Callable[[str], None] | None = print, log_every: int = 25,
               fixed_target: str | None = None, compact: bool = True, max_new_tokens: int = 1024,
               eval_every: int = 0, eval_fn: Callable[[Any, Any, int], bool] | None = None,
               answer_frame: str = "auto") -> dict[str, Any]:
    """Fine-tune ``model_dir`` on ``rows`` (checked :class:`samr1.train.data.TrainRow`) for at most ``steps``
    AdamW steps (cosine schedule, 20 warm-up steps); save model, processor and the policy record
    (:class:`samr1.policy.PolicyRecord`: template, frame, ``max_new_tokens``) to ``out_dir``.

    Args:
        fixed_target: train every row towards this one completion instead of its ground-truth answer (a
            format-only policy for benchmarks: its answers parse, so SAM runs on every completion).
        compact: the compact target (see the module docstring) rather than the verbose one.
        answer_frame: the frame the targets' numbers are in, "pixels" or "norm1000"; "auto" (default): the
            model family's own (:func:`samr1.policy.default_answer_frame`: norm1000 for Qwen2-VL / Qwen3-VL).
            Recorded in the saved policy record, so ``samr1 train`` / ``eval`` read answers in it.
        eval_every, eval_fn: every ``eval_every`` steps call ``eval_fn(model, processor, step)``; it returns
            True to stop here (the stopping rule is the caller's, e.g. "sampled answers parse").

    Returns:
        ``{"loss": [...], "seconds": s (training only), "eval_seconds": s, "steps": steps run, "out_dir": ...,
        "stopped_early": bool}``.

    Raises:
        samr1.policy.FrameError: the processor does not show the policy a ``policy_size`` square image.
    """
    import torch
    from transformers import AutoModelForImageTextToText

    from samr1.policy import PolicyRecord, check_frame, collate, encode_prompt, load_processor, write_record
    from samr1.train.data import PolicyDataset
    from samr1.train.prompts import resolve_prompt

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    from samr1.policy.frame import ANSWER_FRAMES, default_answer_frame, model_type_of

    if answer_frame == "auto":
        answer_frame = default_answer_frame(model_type_of(model_dir))
    if answer_frame not in ANSWER_FRAMES:
        raise ValueError(f"answer_frame must be 'auto' or one of {ANSWER_FRAMES}, got {answer_frame!r}")
    processor = load_processor(model_dir)
    check_frame(processor, policy_size, answer_frame=answer_frame)
    tok = processor.tokenizer
    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32)
    model.train()
    ds = PolicyDataset(rows, prompt, policy_size, lru=1)
    examples = []
    for i in range(len(ds)):
        item = ds[i]
        target = fixed_target or target_text(rows[i].query, item["mask"], policy_size, compact=compact,
                                             answer_frame=answer_frame)
        completion = tok(target, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        examples.append((encode_prompt(processor, item["prompt"], item["image"]), completion))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 20) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    losses: list[float] = []
    t_eval = 0.0
    stopped = False
    t0 = time.perf_counter()
    step = 0
    for step in range(1, steps + 1):
        idx = rng.choice(len(examples), size=min(batch_size, len(examples)), replace=False)
        batch = collate([examples[j][0] for j in idx], tok.pad_token_id, [examples[j][1] for j in idx])
        out = model(**batch)
        opt.zero_grad()
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(out.loss.item())
        if log is not None and (step % log_every == 0 or step == steps):
            log(f"warm start step {step}/{steps}: loss {np.mean(losses[-log_every:]):.4f}")
        if eval_fn is not None and eval_every > 0 and step % eval_every == 0:
            te = time.perf_counter()
            model.eval()
            stop = bool(eval_fn(model, processor, step))
            model.train()
            t_eval += time.perf_counter() - te
            if stop:
                stopped = True
                break
    seconds = time.perf_counter() - t0 - t_eval
    os.makedirs(out_dir, exist_ok=True)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    write_record(out_dir, PolicyRecord(template=resolve_prompt(prompt), frame=int(policy_size),
                                       max_new_tokens=int(max_new_tokens), answer_frame=answer_frame))
    return {"loss": losses, "seconds": seconds, "eval_seconds": t_eval, "steps": step, "out_dir": out_dir,
            "stopped_early": stopped}
