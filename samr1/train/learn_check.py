"""Does the loop learn? A tiny end-to-end run on CPU: supervised warm start, then GRPO with tiny-shapes' reward.

1. build a tiny Qwen2.5-VL (random; :mod:`samr1.train.tiny_policy`) and synthetic scenes
   (:mod:`samr1.train.scene_data`);
2. warm start: a short supervised phase on answers written from the ground truth (it learns the format and
   whatever localisation its few image tokens allow), :mod:`samr1.train.warmstart`;
3. GRPO with ``samr1 train``'s driver and the shipped tiny-shapes SAM as the reward model;
4. plot the mean tiered-IoU reward and the parse-failure rate over GRPO steps.

    python -m samr1.train.learn_check --out runs/learn --warm-steps 400 --grpo-steps 120

Everything is seeded; expect tens of minutes on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

SHORT_PROMPT = "Find '{query}'. Answer as <think>...</think><answer>{{json}}</answer>."
"""A short template: the byte-level tiny tokenizer makes every prompt byte a token, and Seg-Zero's template
(~450 bytes) would dominate a CPU step. The answer format is Seg-Zero's (taught by the warm start)."""


def _tail_mean(xs: list[float], n: int = 20) -> float:
    tail = xs[-n:]
    return sum(tail) / len(tail) if tail else float("nan")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--rows", type=int, default=96, help="training scenes")
    p.add_argument("--size", type=int, default=160, help="scene side, px")
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--policy-pixels", type=int, default=112, help="side of the image the tiny processor keeps")
    p.add_argument("--warm-steps", type=int, default=400)
    p.add_argument("--warm-from", default=None, help="continue the warm start from this policy folder (same "
                                                     "processor settings) instead of a fresh random one")
    p.add_argument("--warm-lr", type=float, default=3e-3)
    p.add_argument("--warm-batch", type=int, default=16)
    p.add_argument("--grpo-steps", type=int, default=120)
    p.add_argument("--grpo-lr", type=float, default=5e-5)
    p.add_argument("--G", type=int, default=8)
    p.add_argument("--prompts-per-step", type=int, default=2)
    p.add_argument("--max-new", type=int, default=160)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)

    import torch

    from samr1.train.config import TrainConfig
    from samr1.train.data import check_rows, load_rows
    from samr1.train.driver import plot_learning_curve, train
    from samr1.train.scene_data import write_scene_manifest
    from samr1.train.tiny_policy import build_tiny_policy
    from samr1.train.warmstart import warm_start

    torch.manual_seed(a.seed)
    os.makedirs(a.out, exist_ok=True)
    t0 = time.perf_counter()
    px = a.policy_pixels * a.policy_pixels
    policy = a.warm_from or build_tiny_policy(os.path.join(a.out, "policy0"), hidden=a.hidden, layers=a.layers,
                                              heads=4, min_pixels=px, max_pixels=px, seed=a.seed)
    manifest = write_scene_manifest(os.path.join(a.out, "data"), a.rows, size=(a.size, a.size), seed=a.seed + 500)
    rows, _ = check_rows(load_rows(manifest))
    ws = warm_start(policy, rows, os.path.join(a.out, "policy_warm"), steps=a.warm_steps, lr=a.warm_lr, batch_size=a.warm_batch,
                    prompt=SHORT_PROMPT, seed=a.seed, log=lambda m: print(m, flush=True))
    print(f"warm start: {a.warm_steps} steps in {ws['seconds']:.0f} s, final loss {_tail_mean(ws['loss']):.4f}",
          flush=True)
    cfg = TrainConfig(model=ws["out_dir"], data=manifest, sam="tiny-shapes", device="cpu", num_generations=a.G,
                      per_device_train_batch_size=a.G * a.prompts_per_step, max_completion_length=a.max_new,
                      max_steps=a.grpo_steps, learning_rate=a.grpo_lr, prompt=SHORT_PROMPT, seed=a.seed,
                      save_steps=max(10, a.grpo_steps // 2), output_dir=os.path.join(a.out, "grpo"), progress=False)
    summary = train(cfg, log=lambda m: print(m, flush=True))
    png = plot_learning_curve(os.path.join(cfg.output_dir, "metrics.jsonl"), os.path.join(a.out, "learning_curve.png"),
                              title=f"tiny Qwen2.5-VL, GRPO with tiny-shapes reward (G={a.G}, CPU)")
    with open(os.path.join(a.out, "learn_summary.json"), "w", encoding="utf-8") as f:
        json.dump({"warm_loss_first": ws["loss"][0], "warm_loss_last": _tail_mean(ws["loss"]),
                   "warm_seconds": ws["seconds"], "grpo": summary, "total_seconds": time.perf_counter() - t0,
                   "args": vars(a), "png": png}, f, indent=1)
    print(json.dumps(summary), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
