"""Agreement of samr1's rewards with a restatement of Seg-Zero's, on generated completions.

Seg-Zero's rewards are restated here from its published rules (not from samr1's code): the ground truth is
the mask resized to the 840 x 840 policy frame (nearest neighbour at pixel centres), its box the inclusive
min/max of pixel indices, its two reference points by Seg-Zero's data-preparation rule (argmax of the
Euclidean distance transform with scipy's semantics -- the array border is not background -- then, among
mask pixels farther from that point than the median distance, the largest distance-transform value;
nearest-to-centroid pixel when that set is empty). The distance transform is computed independently
(column distances, then a brute-force minimum over columns inside the object's box). The completion is read
as Seg-Zero reads it: the first ``{...}`` anywhere in the text through ``json.loads``, keys ``bbox``,
``points_1``, ``points_2``; format: ``<think>...</think>\\s*<answer>...</answer>`` matching the whole text.
Box IoU (inclusive, + 1) > 0.5; box L1 (mean of the 4 absolute differences) < 10; both points inside the
predicted box and the better pairing's mean distance < 100 -- all in the 840 frame.

samr1's side is :class:`samr1.rewards.SamR1Reward` with its defaults (``frame="model"``, inclusive boxes,
the first two points, ``point_rule="segzero"``). For every completion and component the outcome is "agree",
"samr1 stricter" (samr1 0, Seg-Zero 1) or "samr1 more lenient" (samr1 1, Seg-Zero 0); disagreements are
listed by completion kind so each has its documented reason (README, "Fidelity to Seg-Zero's rewards").

    python bench/bench_fidelity.py [--scenes N] [--smoke] [--out DIR]
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import re
from typing import Any

import numpy as np

from samr1.rewards import SamR1Reward
from samr1.shapes.scenes import make_scene

FRAME = 840
COMPONENTS = ("think", "answer", "box_iou", "box_l1", "point_dist")
NAMES = {"think": "think_format", "answer": "answer_format", "box_iou": "box_iou", "box_l1": "box_l1",
         "point_dist": "point_distance"}
SIZES = ((840, 840), (1680, 1680), (480, 640), (600, 400), (333, 517))
CORE_KINDS = frozenset({"good", "jitter", "shifted", "far", "multi_point_extra_key"})
"""Completions in Seg-Zero's exact answer format, where both sides read the same numbers: on these the
reward rules themselves are compared (tiny objects included)."""

# ----------------------------------------------------------------------------------------- the restatement
_THINK_ANSWER = re.compile(r"<think>.*?</think>\s*<answer>.*?</answer>", re.DOTALL)
_FIRST_OBJECT = re.compile(r"\{.*?\}", re.DOTALL)


def restated_resize(mask: np.ndarray) -> np.ndarray:
    """The mask in the 840 frame: model pixel (i, j) takes original pixel (floor((i + .5) H / 840), ...)."""
    H, W = mask.shape
    r = np.minimum(np.floor((np.arange(FRAME) + 0.5) * H / FRAME).astype(int), H - 1)
    c = np.minimum(np.floor((np.arange(FRAME) + 0.5) * W / FRAME).astype(int), W - 1)
    return mask[r][:, c]


def restated_sq_edt(mask: np.ndarray) -> np.ndarray:
    """Squared distance from each object pixel to the nearest zero pixel (the array border is not background).

    Inside the object's box grown by one pixel (the nearest zero pixel of an object pixel lies there), the
    vertical distance to a zero pixel is found per column, then the squared distance is the minimum over
    all columns c' of (c - c')^2 + vertical(c')^2 -- a brute-force second pass, no envelope tricks."""
    out = np.zeros(mask.shape, np.float64)
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return out
    y0, y1 = max(ys.min() - 1, 0), min(ys.max() + 2, mask.shape[0])
    x0, x1 = max(xs.min() - 1, 0), min(xs.max() + 2, mask.shape[1])
    m = mask[y0:y1, x0:x1]
    h, w = m.shape
    rows = np.arange(h)[:, None]
    vert = np.full((h, w), np.inf)
    for c in range(w):
        zeros = np.flatnonzero(~m[:, c])
        if len(zeros):
            vert[:, c] = np.abs(rows - zeros[None, :]).min(axis=1)
    cols = np.arange(w)
    sq = np.empty((h, w))
    for r in range(h):
        sq[r] = ((cols[:, None] - cols[None, :]) ** 2 + vert[r][None, :] ** 2).min(axis=1)
    out[y0:y1, x0:x1] = np.where(m, sq, 0.0)
    return out


def restated_reference(mask840: np.ndarray) -> tuple[list[int], list[tuple[int, int]]] | None:
    """Seg-Zero's ground truth in the 840 frame: inclusive box and two reference points (x, y)."""
    ys, xs = np.nonzero(mask840)
    if len(ys) == 0:
        return None
    box = [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())]
    d2 = restated_sq_edt(mask840)
    vals = d2[ys, xs]
    k = int(np.argmax(vals))  # np.nonzero is row-major: ties go to the smallest y, then x
    px, py = int(xs[k]), int(ys[k])
    dist = np.hypot(xs - px, ys - py)
    far = dist > np.median(dist)
    if far.any():
        j = int(np.argmax(np.where(far, vals, -1.0)))
    else:
        j = int(np.argmin((xs - xs.mean()) ** 2 + (ys - ys.mean()) ** 2))
    return box, [(px, py), (int(xs[j]), int(ys[j]))]


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def segzero_rewards(text: str, ref: tuple[list[int], list[tuple[int, int]]] | None) -> dict[str, float]:
    """Seg-Zero's five 0/1 rewards for one completion, restated."""
    out = dict.fromkeys(COMPONENTS, 0.0)
    out["think"] = 1.0 if _THINK_ANSWER.fullmatch(text) else 0.0
    m = _FIRST_OBJECT.search(text)
    try:
        obj = json.loads(m.group(0)) if m else None
    except ValueError:
        obj = None
    if not isinstance(obj, dict):
        return out
    box, p1, p2 = obj.get("bbox"), obj.get("points_1"), obj.get("points_2")
    if not (isinstance(box, list) and len(box) == 4 and all(map(_num, box))):
        return out
    pts = [p for p in (p1, p2) if isinstance(p, list) and len(p) == 2 and all(map(_num, p))]
    if len(pts) != 2:
        return out
    out["answer"] = 1.0
    if ref is None:
        return out
    gt_box, gt_pts = ref
    x1, y1, x2, y2 = box  # as written: Seg-Zero neither sorts nor clips
    iw = max(0.0, min(x2, gt_box[2]) - max(x1, gt_box[0]) + 1)
    ih = max(0.0, min(y2, gt_box[3]) - max(y1, gt_box[1]) + 1)
    inter = iw * ih
    union = (x2 - x1 + 1) * (y2 - y1 + 1) + (gt_box[2] - gt_box[0] + 1) * (gt_box[3] - gt_box[1] + 1) - inter
    out["box_iou"] = 1.0 if union > 0 and inter / union > 0.5 else 0.0
    out["box_l1"] = 1.0 if sum(abs(a - b) for a, b in zip(box, gt_box, strict=True)) / 4 < 10 else 0.0
    inside = all(x1 <= x <= x2 and y1 <= y <= y2 for x, y in pts)
    d = [math.dist(p, g) for p, g in ((pts[0], gt_pts[0]), (pts[1], gt_pts[1]), (pts[0], gt_pts[1]), (pts[1], gt_pts[0]))]
    best = min((d[0] + d[1]) / 2, (d[2] + d[3]) / 2)
    out["point_dist"] = 1.0 if inside and best < 100 else 0.0
    return out


# ----------------------------------------------------------------------------------------- completions
def _wrap(payload: str, think: str = "the query names this object") -> str:
    return f"<think>{think}</think><answer>{payload}</answer>"


def _seg(box, p1, p2) -> str:
    return json.dumps({"bbox": [round(v) for v in box], "points_1": [round(v) for v in p1],
                       "points_2": [round(v) for v in p2]})


def completions_for(ref, rng: np.random.Generator) -> list[tuple[str, str]]:
    """(kind, completion) pairs around one ground truth (840-frame box and points)."""
    box, (p1, p2) = ref
    out = [("good", _wrap(_seg(box, p1, p2)))]
    jb = [int(b + d) for b, d in zip(box, rng.integers(-4, 5, 4), strict=True)]
    # on a 1-3 px object the jitter may swap the corners: that is the inverted-corners case, named as such
    out.append(("jitter" if jb[0] <= jb[2] and jb[1] <= jb[3] else "inverted_corners", _wrap(_seg(jb, p1, p2))))
    dx, dy = (int(v) for v in rng.integers(5, 40, 2) * rng.choice([-1, 1], 2))
    pdx, pdy = (int(v) for v in rng.integers(20, 150, 2) * rng.choice([-1, 1], 2))
    out.append(("shifted", _wrap(_seg([box[0] + dx, box[1] + dy, box[2] + dx, box[3] + dy],
                                      (p1[0] + pdx, p1[1] + pdy), (p2[0] + pdx, p2[1] + pdy)))))
    far = [(box[0] + 420) % 700, (box[1] + 420) % 700]
    out.append(("far", _wrap(_seg([far[0], far[1], far[0] + 100, far[1] + 100], (far[0] + 50, far[1] + 50),
                                  (far[0] + 60, far[1] + 60)))))
    grid = [[int(x), int(y)] for x in np.linspace(box[0], box[2], 8) for y in np.linspace(box[1], box[3], 8)][:62]
    wrong = [[box[0], box[1]], [box[0], box[1]]]
    kind = int(rng.integers(0, 3))
    if kind == 0:  # Seg-Zero's keys plus sprayed points under another key: both read points_1/points_2 only
        payload = json.loads(_seg(box, wrong[0], wrong[1]))
        payload["points_3"] = grid[0]
        out.append(("multi_point_extra_key", _wrap(json.dumps(payload))))
    elif kind == 1:  # a "points" list: two wrong points then a grid (samr1 accepts the key, Seg-Zero does not)
        out.append(("multi_point_list", _wrap(json.dumps({"bbox": box, "points": wrong + grid}))))
    else:
        out.append(("multi_point_list", _wrap(json.dumps({"bbox": box, "points": [list(p1), list(p2)] + grid}))))
    bad = [
        ("malformed_json", _wrap('{"bbox": [1, 2, 3, 4], "points_1": [1, 2]')),
        ("malformed_missing_point", _wrap(json.dumps({"bbox": box, "points_1": list(p1)}))),
        ("malformed_no_answer", f"<think>{_seg(box, p1, p2)}</think> I cannot tell."),
        ("malformed_bbox_strings", _wrap(json.dumps({"bbox": [str(v) for v in box], "points_1": list(p1),
                                                    "points_2": list(p2)}))),
        ("single_quotes", _wrap(repr({"bbox": list(box), "points_1": list(p1), "points_2": list(p2)}))),
        ("two_answer_blocks", _wrap(_seg(box, p1, p2)) + "<answer>" + _seg([0, 0, 5, 5], (1, 1), (2, 2))
         + "</answer>"),
        ("whitespace_around", "\n  " + _wrap(_seg(box, p1, p2)) + "\n"),
        ("inverted_corners", _wrap(_seg([box[2], box[3], box[0], box[1]], p1, p2))),
        ("braces_in_think", _wrap(_seg(box, p1, p2), think="I compare {the left one} and the right one")),
        ("visionreasoner_list", _wrap(json.dumps([{"bbox_2d": list(box), "point_2d": list(p1)}]))),
    ]
    out.append(bad[int(rng.integers(0, len(bad)))])
    out.append(bad[int(rng.integers(0, len(bad)))])
    return out


def tiny_mask(size: tuple[int, int], width: int, rng: np.random.Generator) -> np.ndarray:
    """An object ``width`` model-frame pixels wide (1-3), drawn at the scale of ``size``."""
    H, W = size
    ky, kx = H / FRAME, W / FRAME
    x0, y0 = int(rng.integers(50, 700)), int(rng.integers(50, 700))
    h = int(rng.integers(1, 40))
    m = np.zeros(size, bool)
    m[int(round(y0 * ky)):int(round((y0 + h) * ky)), int(round(x0 * kx)):int(round((x0 + width) * kx))] = True
    return m


def generate(n_scenes: int, seed: int = 0, sizes: tuple[tuple[int, int], ...] = SIZES) -> list[dict[str, Any]]:
    """Samples: original-size mask, the restated 840-frame reference, and the completions."""
    rng = np.random.default_rng(seed)
    samples = []
    for s in range(n_scenes):
        size = sizes[s % len(sizes)]
        if s % 4 == 3:  # every fourth mask: a 1-3 px wide object, drawn at 840 x 840 or 1680 x 1680
            size = (FRAME, FRAME) if s % 8 == 3 else (2 * FRAME, 2 * FRAME)
            mask = tiny_mask(size, int(rng.integers(1, 4)), rng)
            tag = "tiny"
        else:
            # 1680 x 1680: an 840 scene upscaled 2x (5 s less per scene than drawing it at 1680)
            k = 2 if size == (1680, 1680) else 1
            scene = make_scene(seed * 10_000 + s, size=(size[0] // k, size[1] // k), n_objects=int(rng.integers(1, 4)))
            mask = scene.objects[int(rng.integers(0, len(scene.objects)))].mask
            if k > 1:
                mask = np.repeat(np.repeat(mask, k, axis=0), k, axis=1)
            tag = "scene"
        ref = restated_reference(restated_resize(mask))
        if ref is None:
            continue
        comps = completions_for(ref, rng)
        if tag == "tiny":
            comps = [("tiny_" + k, c) for k, c in comps]
        samples.append({"mask": mask, "ref": ref, "size": size, "completions": comps})
    return samples


# ----------------------------------------------------------------------------------------- the table
def run(n_scenes: int = 32, seed: int = 0, sizes: tuple[tuple[int, int], ...] = SIZES) -> dict[str, Any]:
    """Score every completion both ways; return per-component counts and the disagreements by kind."""
    samples = generate(n_scenes, seed, sizes)
    reward = SamR1Reward(None, components=COMPONENTS)
    counts = {c: collections.Counter() for c in COMPONENTS}
    core = {c: collections.Counter() for c in COMPONENTS}
    by_kind: dict[str, collections.Counter] = {c: collections.Counter() for c in COMPONENTS}
    n = 0
    for smp in samples:
        kinds = [k for k, _ in smp["completions"]]
        texts = [t for _, t in smp["completions"]]
        img = np.zeros((*smp["size"], 3), np.uint8)
        ours = {f.__name__: f(["q"] * len(texts), texts, image=[img] * len(texts), mask=[smp["mask"]] * len(texts))
                for f in reward.functions()}
        for i, (kind, text) in enumerate(zip(kinds, texts, strict=True)):
            theirs = segzero_rewards(text, smp["ref"])
            n += 1
            for c in COMPONENTS:
                a, b = ours[NAMES[c]][i], theirs[c]
                verdict = "agree" if a == b else ("samr1 stricter" if a < b else "samr1 more lenient")
                counts[c][verdict] += 1
                if kind.removeprefix("tiny_") in CORE_KINDS:
                    core[c][verdict] += 1
                if verdict != "agree":
                    by_kind[c][f"{verdict}: {kind.removeprefix('tiny_')}"] += 1
    rows = [{"component": NAMES[c], "n": n, "agree": counts[c]["agree"], "samr1_stricter": counts[c]["samr1 stricter"],
             "samr1_more_lenient": counts[c]["samr1 more lenient"],
             "core_n": sum(core[c].values()), "core_agree": core[c]["agree"],
             "disagreements_by_kind": dict(sorted(by_kind[c].items()))} for c in COMPONENTS]
    return {"n_completions": n, "n_samples": len(samples), "rows": rows}


def reference_point_gap(n_masks: int = 80, seed: int = 1) -> dict[str, float]:
    """Distance (840-frame px) from each samr1 rule's SECOND reference point to the restated Seg-Zero one, on
    ``n_masks`` scene masks resized to the 840 frame: median and max per rule ("segzero" should be 0)."""
    from samr1.geometry import mask_to_points, resize_mask_nearest

    rng = np.random.default_rng(seed)
    gaps: dict[str, list[float]] = {"segzero": [], "circles": []}
    s = 0
    while len(gaps["segzero"]) < n_masks:
        scene = make_scene(5000 + s, size=(int(rng.integers(200, 500)), int(rng.integers(200, 500))))
        s += 1
        for obj in scene.objects:
            m = resize_mask_nearest(obj.mask, (FRAME, FRAME))
            ref = restated_reference(m)
            if ref is None or len(gaps["segzero"]) >= n_masks:
                continue
            for rule in gaps:
                pts = mask_to_points(m, 2, rule=rule)
                gaps[rule].append(math.dist(pts[-1], ref[1][1]))
    return {f"{rule}_{stat}": float(fn(v)) for rule, v in gaps.items() for stat, fn in (("median", np.median),
                                                                                        ("max", np.max))}


def markdown(result: dict[str, Any]) -> str:
    lines = ["| component | agree | samr1 stricter | samr1 more lenient | agree, Seg-Zero-format answers only "
             "| completions that differ (kind: count) |",
             "|---|---|---|---|---|---|"]
    for r in result["rows"]:
        groups: dict[str, list[str]] = {}
        for k, v in r["disagreements_by_kind"].items():
            verdict, kind = k.split(": ", 1)
            groups.setdefault("stricter" if verdict == "samr1 stricter" else "more lenient", []).append(f"{kind} {v}")
        kinds = "; ".join(f"{g}: {', '.join(ks)}" for g, ks in sorted(groups.items())) or "-"
        lines.append(f"| {r['component']} | {r['agree']} / {r['n']} | {r['samr1_stricter']} | "
                     f"{r['samr1_more_lenient']} | {r['core_agree']} / {r['core_n']} | {kinds} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", type=int, default=32, help="ground-truth masks (about 8 completions each)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--smoke", action="store_true", help="6 masks: checks that it runs")
    ap.add_argument("--out", default=None, help="append a JSON-lines record to DIR/fidelity.jsonl")
    args = ap.parse_args(argv)
    result = run(6 if args.smoke else args.scenes, args.seed)
    print(f"{result['n_completions']} completions on {result['n_samples']} masks")
    print(markdown(result))
    gap = reference_point_gap(8 if args.smoke else 80)
    result["reference_point_gap"] = gap
    print("second reference point vs Seg-Zero's rule (840-frame px): "
          + ", ".join(f"{k} {v:.1f}" for k, v in gap.items()))
    if args.out:
        from samr1.bench.harness import write_records

        write_records([{**r, "seed": args.seed} for r in result["rows"]], args.out, "fidelity")
    return result


if __name__ == "__main__":
    main()
