"""Agreement of samr1's reward presets with the peers' REAL reward code, and with a restatement.

``samr1 bench fidelity --peer-repo PATH`` (:func:`run`): PATH is a checkout of the Seg-Zero repository (which
holds VisionReasoner's reward too). Its reward modules (``seg_restrict.py``, ``vision_reasoner.py``) and its
published data preparation (the notebook's ``get_two_representative_points``, ``gen_training_dataset.py``'s
scaling) are imported from the checkout (:mod:`samr1.bench.peer_code`; nothing is copied into samr1) and run
beside the ``segzero``, ``samr1`` and ``visionreasoner`` presets on generated completions (exact, near-miss,
malformed; scene masks and 1-3 px wide objects at several image sizes). Each side uses its own ground-truth
pipeline. Agreement means float-equal values. Without ``--peer-repo`` the bench says what to pass.

:func:`run_restated` compares the ``samr1`` preset with a RESTATEMENT of Seg-Zero's rules written here (the
ground truth of the mask resized to the 840 x 840 frame, ``gt_rule="resize"``): the restated ground truth is
the mask resized to the policy frame (nearest neighbour at pixel centres), its box the inclusive
min/max of pixel indices, its two reference points by Seg-Zero's data-preparation rule (argmax of the
Euclidean distance transform with scipy's semantics -- the array border is not background -- then, among
mask pixels farther from that point than the median distance, the largest distance-transform value;
nearest-to-centroid pixel when that set is empty). The distance transform is computed independently
(column distances, then a brute-force minimum over columns inside the object's box). The completion is read
as Seg-Zero reads it: the first ``{...}`` anywhere in the text through ``json.loads``, keys ``bbox``,
``points_1``, ``points_2``; format: ``<think>...</think>\\s*<answer>...</answer>`` matching the whole text.
For every completion and component the outcome is "agree", "samr1 stricter" (samr1 0, restatement 1) or
"samr1 more lenient"; disagreements are listed by completion kind.

    samr1 bench fidelity --peer-repo PATH [--quick | --smoke] [--out DIR]
    python bench/bench_fidelity.py --peer-repo PATH [--scenes N] [--seed S] [--out DIR]
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
def run_restated(n_scenes: int = 32, seed: int = 0, sizes: tuple[tuple[int, int], ...] = SIZES) -> dict[str, Any]:
    """Score every completion with the ``samr1`` preset and with the RESTATEMENT above (both on the ground
    truth of the mask resized to the 840 frame, ``gt_rule="resize"``); return per-component counts and the
    disagreements by kind. The comparison with the peers' real code is :func:`run`."""
    samples = generate(n_scenes, seed, sizes)
    reward = SamR1Reward(None, components=COMPONENTS, gt_rule="resize")
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


# ----------------------------------------------------------------------------------------- the real peer
SEGZERO_COMPONENTS = {"think": "seg_thinking_format_reward", "answer": "seg_segmentation_format_reward",
                      "box_iou": "seg_iou_reward", "box_l1": "seg_box_l1_reward", "point_dist": "seg_point_l1_reward"}
"""samr1 component -> the function of Seg-Zero's training reward (seg_restrict.py) it is compared with."""
VR_COMPONENTS = {"format": "vision_reasoner_format_reward", "accuracy": "vision_reasoner_accuracy_reward",
                 "non_repeat": "vision_reasoner_non_repeat_reward"}
"""VisionReasoner's reward functions; "format" is compared with samr1's think + answer."""
EXACT_KINDS = frozenset({"prompt", "exact", "near", "shifted", "far", "float_points", "thin_exact", "thin_near",
                         "vr_exact", "vr_reversed", "vr_missing", "vr_duplicate", "vr_extra", "vr_near",
                         "vr_far"})
"""Completions in the peer's exact answer format (well-formed JSON, the peer's keys, numbers)."""


def peer_ground_truth(peer: Any, mask: np.ndarray) -> tuple[list[int], list[list[int]]]:
    """The peer's published ground truth of one mask: box (min/max of the mask's pixel indices) and the two
    points of its ``get_two_representative_points``, on the ORIGINAL mask, scaled by its own
    ``scale_box_coordinates`` / ``scale_point_coordinates`` to the 840 frame."""
    m = mask.astype(np.uint8)
    ys, xs = np.where(m == 1)
    box = [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())]
    p1, p2 = peer.representative_points(m)
    H, W = mask.shape
    fx, fy = FRAME / W, FRAME / H
    return ([int(v) for v in peer.scale_box(box, fx, fy)],
            [[int(v) for v in peer.scale_point(p, fx, fy)] for p in (p1, p2)])


def segzero_solution(box: list[int], points: list[list[int]]) -> str:
    """Seg-Zero's training ``solution`` string."""
    return (f"<box>({box[0]},{box[1]}),({box[2]},{box[3]})</box>"
            f"<points>({points[0][0]},{points[0][1]}),({points[1][0]},{points[1][1]})</points>")


def segzero_completions(box: list[int], pts: list[list[int]], rng: np.random.Generator,
                        thin: bool) -> list[tuple[str, str]]:
    """(kind, completion) pairs in Seg-Zero's format around one ground truth: exact, near-miss, malformed."""
    def seg(b, p1, p2, **extra):
        return _wrap(json.dumps({"bbox": b, "points_1": p1, "points_2": p2, **extra}))

    j = [int(v) for v in rng.integers(-6, 7, 4)]
    near = [box[0] + j[0], box[1] + j[1], box[2] + j[2], box[3] + j[3]]
    d = [int(v) for v in rng.integers(-60, 61, 4)]
    npts = [[pts[0][0] + d[0], pts[0][1] + d[1]], [pts[1][0] + d[2], pts[1][1] + d[3]]]
    s = [int(v) for v in rng.integers(20, 120, 2)]
    out = [("thin_exact" if thin else "exact", seg(box, *pts)), ("thin_near" if thin else "near", seg(near, *npts)),
           ("shifted", seg([box[0] + s[0], box[1] + s[1], box[2] + s[0], box[3] + s[1]], *pts)),
           ("far", seg([(box[0] + 420) % 700, (box[1] + 420) % 700, (box[0] + 420) % 700 + 90,
                        (box[1] + 420) % 700 + 90], [10, 10], [20, 20])),
           ("float_points", seg(box, [pts[0][0] + 0.9, pts[0][1] - 0.9], [pts[1][0] + 0.5, pts[1][1] + 0.99]))]
    bad = [
        ("malformed_point_string", seg(box, f"{pts[0]}", pts[1])),
        ("malformed_point_three", seg(box, [*pts[0], 5], pts[1])),
        ("malformed_missing_point", _wrap(json.dumps({"bbox": box, "points_1": pts[0]}))),
        ("malformed_bbox_strings", seg([str(v) for v in box], *pts)),
        ("malformed_bbox_short", seg(box[:3], *pts)),
        ("malformed_json", _wrap('{"bbox": [1, 2, 3, 4], "points_1": [1, 2]')),
        ("malformed_no_answer", f"<think>{json.dumps({'bbox': box})}</think> cannot tell."),
        ("single_quotes", _wrap(repr({"bbox": box, "points_1": pts[0], "points_2": pts[1]}))),
        ("braces_in_think", _wrap(json.dumps({"bbox": box, "points_1": pts[0], "points_2": pts[1]}),
                                  think="compare {the left} and the right")),
        ("whitespace_around", "\n " + seg(box, *pts) + "\n"),
        ("two_answer_blocks", seg(box, *pts) + "<answer>" + json.dumps({"bbox": [0, 0, 5, 5]}) + "</answer>"),
        ("points_list", _wrap(json.dumps({"bbox": box, "points": pts}))),
    ]
    for k in rng.permutation(len(bad))[:4]:
        out.append(bad[int(k)])
    return out


def vr_objects(instances: list[tuple[list[int], list[int]]]) -> list[dict[str, Any]]:
    return [{"bbox_2d": list(b), "point_2d": list(p)} for b, p in instances]


def vr_completions(truth: list[tuple[list[int], list[int]]], rng: np.random.Generator) -> list[tuple[str, str]]:
    """(kind, completion) pairs in VisionReasoner's list format: exact (both orders), missing, duplicate,
    spurious extra, near-miss, far; malformed."""
    objs = vr_objects(truth)
    def ans(o, think="look at each object. then answer."):
        return _wrap(json.dumps(o), think=think)

    def jitter(o, k):
        j = [int(v) for v in rng.integers(-k, k + 1, 6)]
        b, p = o["bbox_2d"], o["point_2d"]
        return {"bbox_2d": [b[0] + j[0], b[1] + j[1], b[2] + j[2], b[3] + j[3]], "point_2d": [p[0] + j[4], p[1] + j[5]]}

    far = {"bbox_2d": [700, 700, 820, 820], "point_2d": [760, 760]}
    out = [("vr_exact", ans(objs)), ("vr_reversed", ans(objs[::-1])), ("vr_extra", ans(objs + [far])),
           ("vr_duplicate", ans(objs + [objs[0]])), ("vr_near", ans([jitter(o, 12) for o in objs])),
           ("vr_far", ans([far]))]
    if len(objs) > 1:
        out.append(("vr_missing", ans(objs[1:])))
    bad = [
        ("vr_no_object", ans([])),
        ("vr_dict_not_list", ans(objs[0])),
        ("vr_point_three", ans([{**objs[0], "point_2d": [*objs[0]["point_2d"], 1]}] + objs[1:])),
        ("vr_bbox_strings", ans([{**o, "bbox_2d": [str(v) for v in o["bbox_2d"]]} for o in objs])),
        ("vr_repeated_sentences", ans(objs, think="it is red. it is red. it is red. so it is that.")),
        ("vr_single_quotes", _wrap(repr(objs))),
        ("vr_no_answer", "<think>none</think> nothing"),
        ("vr_seg_zero_keys", ans([{"bbox": o["bbox_2d"], "points_1": o["point_2d"], "points_2": o["point_2d"]}
                                  for o in objs])),
    ]
    for k in rng.permutation(len(bad))[:4]:
        out.append(bad[int(k)])
    return out


def peer_samples(n_scenes: int, seed: int) -> list[dict[str, Any]]:
    """Scenes at several sizes (every fourth a 1-3 px wide object): per sample the instance masks and the size."""
    rng = np.random.default_rng(seed)
    samples = []
    for s in range(n_scenes):
        size = SIZES[s % len(SIZES)]
        if s % 4 == 3:
            size = (FRAME, FRAME) if s % 8 == 3 else (2 * FRAME, 2 * FRAME)
            masks = [tiny_mask(size, int(rng.integers(1, 4)), rng)]
            thin = True
        else:
            k = 2 if size == (1680, 1680) else 1
            scene = make_scene(seed * 10_000 + s, size=(size[0] // k, size[1] // k), n_objects=int(rng.integers(2, 5)))
            masks = [o.mask for o in scene.objects if o.mask.any()]
            if k > 1:
                masks = [np.repeat(np.repeat(m, k, axis=0), k, axis=1) for m in masks]
            masks = masks[:int(rng.integers(1, min(4, len(masks)) + 1))]
            thin = False
        if masks and all(m.any() for m in masks):
            samples.append({"masks": masks, "size": size, "thin": thin})
    return samples


def _tally(table: dict, preset: str, comp: str, kind: str, ours: float, theirs: float) -> None:
    row = table.setdefault((preset, comp), {"n": 0, "agree": 0, "exact_n": 0, "exact_agree": 0, "differ": {}})
    same = ours == theirs  # float-equal, not close
    row["n"] += 1
    row["agree"] += same
    if kind in EXACT_KINDS:
        row["exact_n"] += 1
        row["exact_agree"] += same
    if not same:
        row["differ"][kind] = row["differ"].get(kind, 0) + 1


def run(quick: bool = False, out: str | None = None, device: str = "cpu", smoke: bool = False,
        peer_repo: str | None = None, scenes: int | None = None, seed: int = 0) -> list[dict[str, Any]]:
    """samr1's presets beside the peers' REAL reward modules, imported from ``peer_repo`` (a checkout of
    Seg-Zero, which holds VisionReasoner's reward too), on generated completions: exact, near-miss and
    malformed answers on scene masks and 1-3 px wide objects at several image sizes.

    The peer scores each completion against the ground truth its own published preparation makes
    (:func:`peer_ground_truth`); samr1 scores it with its own ground truth (:mod:`samr1.rewards.truth`), so
    a ground-truth difference shows as a disagreement. Returns one row per (preset, component): agreement
    counts (float-equal values) over all completions and over the exact-format ones, and the differing
    completion kinds. Without ``peer_repo`` it raises SystemExit saying what to pass.
    """
    from samr1.bench.peer_code import WHAT_TO_PASS, load_peer

    from samr1.rewards.truth import published_geometry

    if not peer_repo:
        raise SystemExit(f"samr1 bench fidelity: {WHAT_TO_PASS}")
    try:
        peer = load_peer(peer_repo)
    except FileNotFoundError as exc:
        raise SystemExit(f"samr1 bench fidelity: {exc}") from None
    if peer.representative_points is None or peer.scale_box is None:
        raise SystemExit("samr1 bench fidelity: the checkout lacks the published data preparation ("
                         + "; ".join(peer.missing) + f"); {WHAT_TO_PASS}")
    n = scenes if scenes is not None else (4 if smoke else 12 if quick else 48)
    rng = np.random.default_rng(seed)
    samples = peer_samples(n, seed)
    seg_reward = SamR1Reward(None, preset="segzero")
    samr1_reward = SamR1Reward(None, preset="samr1", components=tuple(SEGZERO_COMPONENTS))
    vr_reward = SamR1Reward(None, preset="visionreasoner")
    table: dict[tuple[str, str], dict[str, Any]] = {}
    gt_rows = {"n": 0, "box": 0, "points": 0}
    sz, vr = peer.seg_restrict, peer.vision_reasoner
    for smp in samples:
        img = np.zeros((*smp["size"], 3), np.uint8)
        union = np.logical_or.reduce(smp["masks"])
        # --- ground truth: the peer's preparation against samr1's, per instance and for the union
        truth = []
        for m in smp["masks"] + ([union] if len(smp["masks"]) > 1 else []):
            box, pts = peer_ground_truth(peer, m)
            ours_box, ours_pts = published_geometry(m, (FRAME, FRAME), 2)
            gt_rows["n"] += 1
            gt_rows["box"] += list(ours_box) == box
            gt_rows["points"] += [list(p) for p in ours_pts] == pts
            truth.append((box, pts))
        seg_box, seg_pts = truth[-1]
        solution = segzero_solution(seg_box, seg_pts)
        # --- Seg-Zero: its five functions against the segzero (and samr1) presets
        comps = segzero_completions(seg_box, seg_pts, rng, smp["thin"])
        texts = [t for _, t in comps]
        kw = {"image": [img] * len(texts), "mask": [smp["masks"]] * len(texts)}
        for preset, reward in (("segzero", seg_reward), ("samr1", samr1_reward)):
            ours = {f.component: f(None, texts, **kw) for f in reward.functions()}
            for comp, fname in SEGZERO_COMPONENTS.items():
                fn = getattr(sz, fname)
                for (kind, text), value in zip(comps, ours[comp], strict=True):
                    theirs = fn(text) if comp in ("think", "answer") else fn(text, solution)
                    _tally(table, preset, comp, kind, float(value), float(theirs))
        # --- VisionReasoner: per instance one box and the first point
        inst = [(b, p[0]) for b, p in truth[:len(smp["masks"])]]
        gt_json = json.dumps(vr_objects(inst))
        comps = vr_completions(inst, rng)
        texts = [t for _, t in comps]
        kw = {"image": [img] * len(texts), "mask": [smp["masks"]] * len(texts)}
        ours = {f.component: f(None, texts, **kw) for f in vr_reward.functions()}
        ours["format"] = [a + b for a, b in zip(ours["think"], ours["answer"], strict=True)]
        for comp, fname in VR_COMPONENTS.items():
            fn = getattr(vr, fname)
            for (kind, text), value in zip(comps, ours[comp], strict=True):
                theirs = fn(text, gt_json) if comp == "accuracy" else fn(text)
                _tally(table, "visionreasoner", comp, kind, float(value), float(theirs))
    # --- prompts: samr1's named templates against the peers' evaluation scripts, the query normalised
    from samr1.train.prompts import format_prompt

    queries = ["The man in the RED shirt.", "...what holds the flowers..", "Dr. Who's hat", "the cup?"]
    for name, (template, example) in peer.templates.items():
        for q in queries:
            theirs = template.format(Question=q.lower().strip("."), Answer=example)
            _tally(table, "prompt", name, "prompt", float(format_prompt(name, q) == theirs), 1.0)
    run_info = {"seed": seed, "peer_commit": peer.commit, "smoke": smoke, "quick": quick, "masks": len(samples)}
    rows = [{"preset": p, "component": c, **{k: v for k, v in r.items() if k != "differ"},
             "differ": dict(sorted(r["differ"].items())), **run_info} for (p, c), r in table.items()]
    rows.append({"preset": "ground truth", "component": "box, points", "n": gt_rows["n"], "agree": gt_rows["box"],
                 "exact_n": gt_rows["n"], "exact_agree": gt_rows["points"], "differ": {}, **run_info})
    print(f"peer: {peer.root} at {peer.commit or 'an unknown commit'}; {len(samples)} masks")
    print(peer_markdown(rows))
    if out:
        from samr1.bench.harness import write_records
        from samr1.bench.plots import plot_fidelity

        write_records(rows, out, "fidelity_peer", device)
        plot_fidelity(rows, out)
    return rows


def peer_markdown(rows: list[dict[str, Any]]) -> str:
    """The agreement table: per preset and component, float-equal agreement overall and on exact-format
    answers, and the completion kinds that differ (kind count)."""
    lines = ["| preset | component | agree (all) | agree (exact-format answers) | differing kinds |",
             "|---|---|---|---|---|"]
    for r in rows:
        if r["preset"] == "ground truth":
            lines.append(f"| ground truth | published box / points | box {r['agree']} / {r['n']} | points "
                         f"{r['exact_agree']} / {r['exact_n']} | - |")
            continue
        kinds = ", ".join(f"{k} {v}" for k, v in r["differ"].items()) or "-"
        lines.append(f"| {r['preset']} | {r['component']} | {r['agree']} / {r['n']} | {r['exact_agree']} / "
                     f"{r['exact_n']} | {kinds} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> Any:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--peer-repo", default=None, help="a checkout of Seg-Zero (its reward modules are imported)")
    ap.add_argument("--scenes", type=int, default=None, help="ground-truth scenes (default 48)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=None, help="append JSON-lines records to DIR/fidelity_peer.jsonl")
    args = ap.parse_args(argv)
    return run(quick=args.quick, out=args.out, peer_repo=args.peer_repo, scenes=args.scenes, seed=args.seed)


if __name__ == "__main__":
    main()
