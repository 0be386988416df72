"""A reward step with the ``visionreasoner`` preset (several objects a row) against the single-object step.

B images x G completions. The multi-object step: each row's target has 1 to 4 instances (scene objects),
each completion lists jittered boxes and points for them (now and then one missing, one extra, or a
malformed answer), scored by ``SamR1Reward(engine, preset="visionreasoner")`` with VisionReasoner's
components plus SAM-R1's tiered mask IoU (the union of SAM's masks of the objects against the union of the
instances). The single-object step: the same B scenes, one object a row, Seg-Zero-format answers, the
default ``samr1`` preset (think, answer, tiered IoU). Both through ONE engine call per step, timed cold (the
embedding cache emptied first: B encoder runs) and warm (every embedding cached). The ratio multi / single
is printed per temperature (cold, warm) with the SAM prompts each step decodes, their ratio, and the ratio of
the cost per prompt (the multi-object path's own overhead: the step ratio over the prompt ratio).

    samr1 bench multi-object [--quick | --smoke] [--sam tiny] [--device cpu] [--out DIR]
"""

from __future__ import annotations

import json
import statistics
from typing import Any

import numpy as np
from samr1.bench.harness import format_table, measure, write_records

__all__ = ["make_multi_step", "run"]


def _jitter(box, pts, rng, scale):
    j = rng.normal(0, scale, 6)
    return ([round(box[0] + j[0]), round(box[1] + j[1]), round(box[2] + j[2]), round(box[3] + j[3])],
            [round(pts[0] + j[4] * 0.5), round(pts[1] + j[5] * 0.5)])


def make_multi_step(b: int, g: int, seed: int = 0, size: tuple[int, int] = (480, 640), max_objects: int = 4):
    """(images, instance lists, completions) of a multi-object step, parallel lists of length B*G (images and
    instance lists repeated as the same objects per prompt, as TRL passes them)."""
    from samr1.rewards.truth import published_geometry
    from samr1.shapes.scenes import make_scene

    rng = np.random.default_rng(seed)
    images, masks, completions = [], [], []
    for i in range(b):
        scene = make_scene(seed * 7919 + i, size=size, n_objects=max_objects)
        objs = [o for o in scene.objects if o.mask.any()]
        inst = [o.mask for o in objs[:int(rng.integers(1, min(max_objects, len(objs)) + 1))]]
        truth = [published_geometry(m, (840, 840), 1) for m in inst]
        for _ in range(g):
            u = rng.random()
            if u < 0.125:
                text = '<think>unsure</think><answer>[{"bbox_2d": [1, 2, 3]}]</answer>'
            else:
                objects = []
                for box, pts in truth:
                    if u < 0.25 and len(truth) > 1 and not objects:
                        continue  # one missed
                    bx, pt = _jitter(box, pts[0], rng, 0.06 * max(box[2] - box[0], box[3] - box[1]))
                    objects.append({"bbox_2d": bx, "point_2d": pt})
                if 0.25 <= u < 0.35:  # a spurious extra
                    objects.append({"bbox_2d": [700, 700, 830, 830], "point_2d": [760, 760]})
                text = f"<think>There are {len(objects)} of them.</think>\n<answer>{json.dumps(objects)}</answer>"
            images.append(scene.image)
            masks.append(inst)
            completions.append(text)
    return images, masks, completions


def run(quick: bool = False, out: str | None = None, device: str = "cpu", sam_kind: str = "tiny",
        smoke: bool = False, b: int | None = None, g: int | None = None, repeats: int | None = None,
        checkpoint: str | None = None) -> list[dict[str, Any]]:
    """Time both steps cold and warm; return one row per (step, temperature) with ``step_s`` and, on the
    multi-object rows, ``ratio_vs_single``."""
    from samr1.bench.bench_reward_step import make_step

    from samr1.answer import parse_answer
    from samr1.engine import SamEngine
    from samr1.rewards import SamR1Reward
    from samr1.sam import load_sam

    b = b or (2 if smoke else 4 if quick else 16)
    g = g or (2 if smoke else 4 if quick else 8)
    repeats = repeats or (1 if (quick or smoke) else 5)
    warmup = 0 if smoke else 1
    sam = load_sam(sam_kind, checkpoint=checkpoint, device=device)
    engine = SamEngine(sam, device=device)
    single = make_step(b, g)
    multi = make_multi_step(b, g)
    single_reward = SamR1Reward(engine)
    multi_reward = SamR1Reward(engine, preset="visionreasoner",
                               components=("think", "answer", "accuracy", "non_repeat", "iou"))
    steps = {"single-object (samr1)": (single_reward, single), "multi-object (visionreasoner)": (multi_reward, multi)}
    rows: list[dict[str, Any]] = []
    for temp in ("cold", "warm"):
        for name, (reward, (images, masks, completions)) in steps.items():
            prompts = sum(len(parse_answer(t, im.shape[:2]).per_object())
                          for t, im, in zip(completions, images, strict=True))
            calls = []

            def step(reward=reward, images=images, masks=masks, completions=completions, calls=calls, temp=temp):
                if temp == "cold":
                    engine.cache.clear()
                before = engine.stats["score_calls"]
                # fresh lists each call, as TRL builds them every step (the reward's memo must not hit)
                values = reward(None, list(completions), image=list(images), mask=list(masks))
                calls.append(engine.stats["score_calls"] - before)
                return values

            if temp == "warm":
                step()
            tm = measure(step, warmup=warmup, repeats=repeats, device=device)
            rows.append({"step": name, "cache": temp, "B": b, "G": g, "sam": sam_kind, "step_s": tm.median,
                         "p20_s": tm.p20, "p80_s": tm.p80, "repeats": tm.repeats, "sam_prompts": prompts,
                         "engine_calls_per_step": statistics.median(calls), "smoke": smoke,
                         "mean_reward": float(np.mean(step()))})
        s, m = rows[-2], rows[-1]
        m["ratio_vs_single"] = m["step_s"] / s["step_s"]
        # the cost of a SAM prompt on each path: the multi-object step decodes one prompt per object, so the
        # step ratio follows the prompt ratio wherever the decoder dominates; this says whether the
        # multi-object path adds anything beyond its extra prompts (< 1: it costs less per prompt)
        for r in (s, m):
            r["s_per_prompt"] = r["step_s"] / max(1, r["sam_prompts"])
        m["prompt_ratio"] = m["sam_prompts"] / max(1, s["sam_prompts"])
        m["per_prompt_ratio"] = m["s_per_prompt"] / s["s_per_prompt"]
    print(f"reward step, B={b} x G={g}, SAM {sam_kind}, device {device}, median of {repeats}; the multi-object "
          "rows list 1-4 instances a row")
    print(format_table(rows, ["step", "cache", "step_s", "sam_prompts", "engine_calls_per_step", "ratio_vs_single",
                              "prompt_ratio", "per_prompt_ratio", "mean_reward"]))
    write_records(rows, out, "multi_object", device)
    if out:
        from samr1.bench.plots import plot_multi_object

        print(f"plot: {plot_multi_object(rows, out, device)}")
    return rows


if __name__ == "__main__":
    from samr1.bench.harness import sam_bench_main

    sam_bench_main(__doc__, run)
