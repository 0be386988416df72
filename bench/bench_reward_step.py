"""The headline: one GRPO step's reward computation for B images x G completions, three ways, same run.

1. ``loop``        — what Seg-Zero-style reward code does: per completion ``SamPredictor.set_image`` +
                     ``predict`` + numpy IoU (the encoder runs B x G times);
2. ``loop-cached`` — the same loop with one ``set_image`` per distinct image (samr1.engine.reference);
3. ``engine``      — ``SamEngine.score``: embedding cache + batched decode + fused IoU; measured cold (a
                     fresh cache: B encoder runs) and warm (every embedding cached: 0 encoder runs).

All three parse the completions with ``samr1.answer.parse_answer``. Prints time per step, completions/s,
speedups, encoder calls and the max IoU difference between the ways (they must agree).

    python bench/bench_reward_step.py [--quick] [--device cpu] [--sam tiny] [--out DIR]
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from samr1.bench.harness import format_table, measure, write_records


def make_step(b: int, g: int, seed: int = 0, size: tuple[int, int] = (480, 640)):
    """B scenes and G rollout-like completions each: jittered boxes/points around the target, ~1 in 8
    malformed. Returns (images, masks, completions) as parallel lists of length B*G (images repeated
    as the same object per prompt, as TRL passes them)."""
    from samr1.geometry import mask_to_box, mask_to_points
    from samr1.scenes import make_scene

    rng = np.random.default_rng(seed)
    images, masks, completions = [], [], []
    for i in range(b):
        scene = make_scene(seed * 7919 + i, size=size, n_objects=3)
        obj = max(scene.objects, key=lambda o: o.mask.sum())
        h, w = obj.mask.shape
        sx, sy = 840 / w, 840 / h
        x1, y1, x2, y2 = mask_to_box(obj.mask)
        pts = mask_to_points(obj.mask, k=2)
        for _ in range(g):
            if rng.random() < 0.125:
                text = "<think>unsure</think><answer>{\"bbox\": [1, 2, 3]}</answer>"
            else:
                j = rng.normal(0, 0.08 * max(x2 - x1, y2 - y1), 4)
                box = [(x1 + j[0]) * sx, (y1 + j[1]) * sy, (x2 + j[2]) * sx, (y2 + j[3]) * sy]
                ans = {"bbox": [round(v) for v in box]}
                for k, p in enumerate(pts[:2]):
                    ans[f"points_{k + 1}"] = [round(p[0] * sx), round(p[1] * sy)]
                text = f"<think>The target is {obj.query}.</think>\n<answer>{json.dumps(ans)}</answer>"
            images.append(scene.image)
            masks.append(obj.mask)
            completions.append(text)
    return images, masks, completions


def run(quick: bool = False, out: str | None = None, device: str = "cpu", sam_kind: str = "tiny",
        b: int | None = None, g: int | None = None, repeats: int | None = None, plot: bool = True) -> list[dict]:
    from segment_anything import SamPredictor

    from samr1.answer import parse_answer
    from samr1.engine import SamEngine
    from samr1.engine.reference import mask_iou_numpy, predict_mask, score_reference
    from samr1.sam import load_sam

    b = b or (4 if quick else 16)
    g = g or (4 if quick else 8)
    repeats = repeats or (1 if quick else 3)
    sam = load_sam(sam_kind, device=device)
    images, masks, completions = make_step(b, g)
    n = len(completions)

    def parse_all():
        return [parse_answer(t, image_size=im.shape[:2]) for t, im in zip(completions, images)]

    encodes = {"loop": 0}
    predictor = SamPredictor(sam)

    def loop():
        out_ious = []
        for ans, im, m in zip(parse_all(), images, masks):
            if not ans.ok:
                out_ious.append(0.0)
                continue
            predictor.set_image(im)
            encodes["loop"] += 1
            out_ious.append(mask_iou_numpy(predict_mask(predictor, ans, True), m))
        return out_ious

    def loop_cached():
        return score_reference(sam, images, parse_all(), masks, multimask=True)

    engine_box: dict = {}

    def engine_cold():
        engine_box["e"] = SamEngine(sam, device=device)
        return engine_box["e"].score(images, parse_all(), masks)

    warm_engine = SamEngine(sam, device=device)
    warm_engine.score(images, parse_all(), masks)  # fills the cache

    def engine_warm():
        return warm_engine.score(images, parse_all(), masks)

    results = {}
    ious = {}
    for name, fn in [("loop", loop), ("loop-cached", loop_cached), ("engine-cold", engine_cold), ("engine-warm", engine_warm)]:
        ious[name] = np.asarray(fn())  # also the warm-up run
        encodes["loop"] = 0
        results[name] = measure(fn, warmup=0, repeats=repeats, device=device)
    enc_calls = {
        "loop": sum(parse_answer(t, image_size=im.shape[:2]).ok for t, im in zip(completions, images)),
        "loop-cached": len({id(im) for im in images}),
        "engine-cold": engine_box["e"].stats["encoder_images"],
        "engine-warm": warm_engine.stats["encoder_images"] - len({id(im) for im in images}),
    }
    stages = {k: v for k, v in warm_engine.stats.items() if k.startswith("time_")}
    cold_stages = {k: v for k, v in engine_box["e"].stats.items() if k.startswith("time_")}
    base = results["loop"].median
    rows = []
    for name, t in results.items():
        rows.append({
            "way": name, "B": b, "G": g, "sam": sam_kind, "step_s": t.median, "p20_s": t.p20, "p80_s": t.p80,
            "completions_per_s": n / t.median, "speedup_vs_loop": base / t.median,
            "speedup_vs_loop_cached": results["loop-cached"].median / t.median,
            "encoder_images": enc_calls[name],
            "max_iou_diff_vs_loop": float(np.abs(ious[name] - ious["loop"]).max()),
            **({"stages": cold_stages} if name == "engine-cold" else {}),
            **({"stages": stages} if name == "engine-warm" else {}),
        })
    print(f"reward step: B={b} images x G={g} completions, SAM {sam_kind}, device {device}, median of {repeats}")
    print(format_table(rows, ["way", "step_s", "completions_per_s", "speedup_vs_loop", "speedup_vs_loop_cached",
                              "encoder_images", "max_iou_diff_vs_loop"]))
    print("engine stages (cold): " + ", ".join(f"{k[5:-2]} {v * 1e3:.1f} ms" for k, v in cold_stages.items()))
    print("engine stages (warm): " + ", ".join(f"{k[5:-2]} {v * 1e3:.1f} ms" for k, v in stages.items()))
    write_records(rows, out, "reward_step", device)
    if out and plot:
        path = plot_reward_step(rows, out)
        print(f"plot: {path}")
    return rows


def plot_reward_step(rows: list[dict], out: str) -> str:
    """Bar chart of step time per way (log scale, speedup labels) and the engine's stage split."""
    import os

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    names = [r["way"] for r in rows]
    times = [r["step_s"] for r in rows]
    bars = ax1.bar(names, times, color=["#999", "#bbb", "#3a7", "#2a5"])
    ax1.set_yscale("log")
    ax1.set_ylabel("seconds per step (log)")
    ax1.set_title(f"reward step: B={rows[0]['B']} x G={rows[0]['G']}, SAM {rows[0]['sam']}")
    for bar, r in zip(bars, rows):
        ax1.annotate(f"{r['speedup_vs_loop']:.1f}x", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                     ha="center", va="bottom")
    for col, r in enumerate([r for r in rows if "stages" in r]):
        bottom = 0.0
        for k, v in r["stages"].items():
            ax2.bar(r["way"], v * 1e3, bottom=bottom, label=k[5:-2] if col == 0 else None,
                    color={"time_load_s": "#bbb", "time_encode_s": "#c64", "time_decode_s": "#48c", "time_iou_s": "#3a7"}.get(k))
            bottom += v * 1e3
    ax2.set_ylabel("ms")
    ax2.set_title("engine time split (parse excluded)")
    ax2.legend()
    fig.tight_layout()
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "reward_step.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="B=4, G=4, one repeat (sub-minute on a CPU)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--sam", default="tiny")
    p.add_argument("--out", default=None, help="folder for JSON-lines records and the PNG plot")
    p.add_argument("-B", type=int, default=None)
    p.add_argument("-G", type=int, default=None)
    a = p.parse_args(argv)
    run(quick=a.quick, out=a.out, device=a.device, sam_kind=a.sam, b=a.B, g=a.G)


if __name__ == "__main__":
    main()
