"""``samr1 demo``: score sample completions against generated scenes and draw what SAM made of them.

No downloads: the scenes come from :mod:`samr1.shapes.scenes`, SAM from :func:`samr1.sam.load_sam` — by
default "tiny-shapes", the small SAM the project trained on such scenes and ships, so the IoU rewards mean
something; a random-weight kind (e.g. "tiny") without a checkpoint gives meaningless masks, and the demo
says so. For each scene it writes completions of several kinds — good, off-target, malformed, no
reasoning, conversational — scores them with :class:`samr1.rewards.SamR1Reward`, prints a table with
each reward component and failure reason, and saves one overlay PNG per scene.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from samr1.answer import DEFAULT_MODEL_SIZE
from samr1.shapes.viz import MARKS, grid_sheet, mask_outline, muted, tint, title_bar, with_legend


@dataclass
class DemoRow:
    scene: int
    kind: str
    completion: Any
    answer: Any
    iou: float
    rewards: dict[str, float]
    total: float


def _to_frame(xy: np.ndarray, hw: tuple[int, int]) -> list[float]:
    """Original pixels (x, y, ...) -> the policy's frame (:data:`samr1.answer.DEFAULT_MODEL_SIZE`, (h, w)),
    rounded like a model would write them."""
    h, w = hw
    mh, mw = DEFAULT_MODEL_SIZE
    scale = np.tile([mw / w, mh / h], len(xy) // 2)
    return [int(round(v)) for v in np.asarray(xy, dtype=np.float64) * scale]


def sample_completions(mask: np.ndarray, query: str) -> list[tuple[str, Any]]:
    """Completions of each kind for the object ``mask`` (H x W bool), boxes/points in the policy's frame
    (:data:`samr1.answer.DEFAULT_MODEL_SIZE`)."""
    from samr1.geometry import mask_to_box, mask_to_points

    hw = mask.shape
    box = _to_frame(np.asarray(mask_to_box(mask), dtype=np.float64), hw)
    pts = [_to_frame(np.asarray(p, dtype=np.float64), hw) for p in mask_to_points(mask, k=2)]
    while len(pts) < 2:
        pts.append(pts[-1] if pts else [(box[0] + box[2]) // 2, (box[1] + box[3]) // 2])
    good = {"bbox": box, "points_1": pts[0], "points_2": pts[1]}
    bw = box[2] - box[0]
    # off target: the same box moved by more than its own width, away from the object
    mw = DEFAULT_MODEL_SIZE[1]
    dx = bw + 40 if box[0] + box[2] < mw else -(bw + 40)
    off_box = [min(max(v + dx, 0), mw) if i % 2 == 0 else v for i, v in enumerate(box)]
    off = {"bbox": off_box, "points_1": [(off_box[0] + off_box[2]) // 2, (off_box[1] + off_box[3]) // 2],
           "points_2": [(off_box[0] + off_box[2]) // 2, (off_box[1] * 3 + off_box[3]) // 4]}
    think = f"<think>The query asks for {query}. I locate it and give its box and two points inside it.</think>"
    return [
        ("good", f"{think}\n<answer>{json.dumps(good)}</answer>"),
        ("VisionReasoner keys", f"{think}\n<answer>{json.dumps({'bbox_2d': box, 'point_2d': pts[0]})}</answer>"),
        ("box only", f"{think}\n<answer>{json.dumps({'bbox': box})}</answer>"),
        ("off-target", f"{think}\n<answer>{json.dumps(off)}</answer>"),
        ("no think", f"<answer>{json.dumps(good)}</answer>"),
        ("bad JSON", f"{think}\n<answer>{{\"bbox\": [{box[0]}, {box[1]}, oops]}}</answer>"),
        ("no answer", "<think>I am not sure.</think> It is probably somewhere in the image."),
        ("conversational", [{"role": "assistant", "content": f"{think}\n<answer>{json.dumps(good)}</answer>"}]),
    ]


def overlay_image(image: np.ndarray, pred: np.ndarray, answer: Any, gt: np.ndarray | None = None,
                  title: str | None = None, legend: bool = False) -> Image.Image:
    """``H x W x 3`` uint8 image, muted to grey (:func:`samr1.shapes.viz.muted`), with the predicted mask
    (``H x W`` bool) tinted orange, the ground truth (optional) as a blue 2 px outline, the answer's box
    (magenta) and points (yellow), both in original pixels (:data:`samr1.shapes.viz.MARKS`), an optional title
    bar and, with ``legend``, a legend strip below the image."""
    out = tint(muted(image), pred, MARKS["SAM mask"])
    if gt is not None:
        # ground truth as a 2 px outline so that it stays visible over the prediction
        out[mask_outline(gt, 2)] = MARKS["ground truth"]
    im = Image.fromarray(out.clip(0, 255).astype(np.uint8))
    d = ImageDraw.Draw(im)
    if getattr(answer, "ok", False) and answer.bbox is not None:  # "no object" answers draw nothing
        d.rectangle(list(answer.bbox), outline=MARKS["box"], width=2)
        for x, y in answer.points:
            d.ellipse([x - 4, y - 4, x + 4, y + 4], fill=MARKS["points"], outline=(0, 0, 0), width=1)
    if title is not None:
        title_bar(im, title[:80])
    if legend:
        items = MARKS if gt is not None else {k: v for k, v in MARKS.items() if k != "ground truth"}
        im = with_legend(im, items)
    return im


def scene_panel(image: np.ndarray, title: str) -> Image.Image:
    """The scene in its own colours with a title bar: the first panel of a demo sheet, so the query's colour
    words can be checked against the muted overlays that follow."""
    return title_bar(Image.fromarray(image[..., :3].astype(np.uint8)), title[:80])


def _fresh_dir(out_dir: str) -> str:
    """Never overwrite what is there: a non-empty folder gets a new timestamped subfolder."""
    if os.path.isdir(out_dir) and os.listdir(out_dir):
        out_dir = os.path.join(out_dir, time.strftime("run-%Y%m%d-%H%M%S"))
        base, k = out_dir, 1
        while os.path.exists(out_dir):
            out_dir, k = f"{base}-{k}", k + 1
    os.makedirs(out_dir, exist_ok=True)
    return out_dir


def run_demo(out_dir: str = "demo_out", sam_kind: str = "tiny-shapes", checkpoint: str | None = None,
             device: str = "cpu", n_scenes: int = 3, seed: int = 0, echo=print) -> tuple[list[DemoRow], str]:
    """Score the sample completions of ``n_scenes`` scenes; returns the rows and the folder written."""
    import torch

    from samr1.answer import parse_answer
    from samr1.engine import SamEngine
    from samr1.rewards import SamR1Reward
    from samr1.sam import SHIPPED_WEIGHTS, load_sam
    from samr1.shapes.scenes import make_scene

    if checkpoint is None and sam_kind not in SHIPPED_WEIGHTS:
        echo(f"NOTE: SAM '{sam_kind}' has RANDOM weights (no --sam-checkpoint given): its masks are "
             "meaningless, so the IoU rewards below only show the plumbing, not quality.")
    elif checkpoint is None:
        echo(f"NOTE: SAM '{sam_kind}' is the small model samr1 ships, trained only on synthetic shapes like "
             "these scenes (held-out box-prompt IoU ~0.80): the rewards are meaningful here, but it is not a "
             "general segmenter. Pass --sam vit_h --sam-checkpoint PATH for real SAM.")
    torch.manual_seed(seed)
    sam = load_sam(sam_kind, checkpoint=checkpoint, device=device)
    engine = SamEngine(sam)
    reward = SamR1Reward(engine)
    out_dir = _fresh_dir(out_dir)
    rows: list[DemoRow] = []
    sizes = [(480, 640), (400, 300), (333, 517), (512, 512)]
    for s in range(n_scenes):
        scene = make_scene(seed * 1000 + s, size=sizes[s % len(sizes)], n_objects=3)
        obj = max(scene.objects, key=lambda o: o.mask.sum())
        samples = sample_completions(obj.mask, obj.query)
        completions = [c for _, c in samples]
        n = len(completions)
        kw = {"image": [scene.image] * n, "mask": [obj.mask] * n}
        totals = reward([obj.query] * n, completions, **kw)
        parts = {f.__name__: f([obj.query] * n, completions, **kw) for f in reward.functions()}
        texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
        answers = [parse_answer(t, image_size=scene.image.shape[:2]) for t in texts]
        ious = engine.score([scene.image] * n, answers, [obj.mask] * n)
        masks = engine.segment_batch([scene.image] * n, answers)
        panels = [scene_panel(scene.image, f"scene {s}: {obj.query}")]
        for i, (kind, comp) in enumerate(samples):
            row = DemoRow(s, kind, comp, answers[i], ious[i], {k: v[i] for k, v in parts.items()}, totals[i])
            rows.append(row)
            panels.append(overlay_image(scene.image, masks[i], answers[i], obj.mask,
                                        f"{kind}: IoU {ious[i]:.2f} reward {totals[i]:.1f}"))
        with_legend(grid_sheet(panels, cols=3)).save(os.path.join(out_dir, f"scene{s}.png"))
        echo(f"\nscene {s}: {scene.image.shape[1]}x{scene.image.shape[0]}, query: {obj.query!r}")
        echo(format_rows([r for r in rows if r.scene == s]))
    echo(f"\noverlays (first panel: the scene; then on grey: orange = SAM mask, blue outline = ground truth, "
         f"magenta = box, yellow = points; the legend is in each figure) written to {out_dir}/")
    return rows, out_dir


def format_rows(rows: list[DemoRow]) -> str:
    """The demo table: completion kind, parsed box/points, IoU, each reward, the failure reason."""
    names = list(rows[0].rewards) if rows else []
    head = ["kind", "box (orig px)", "pts", "IoU", *[n for n in names], "total", "reason"]
    lines = []
    for r in rows:
        a = r.answer
        box = "-" if not a.ok or a.bbox is None else "[" + ",".join(f"{v:.0f}" for v in a.bbox) + "]"
        lines.append([r.kind, box, str(len(a.points) if a.ok else "-"), f"{r.iou:.3f}",
                      *[f"{r.rewards[n]:.1f}" for n in names], f"{r.total:.1f}", a.reason or ""])
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*head), fmt.format(*["-" * w for w in widths])] + [fmt.format(*ln) for ln in lines])
