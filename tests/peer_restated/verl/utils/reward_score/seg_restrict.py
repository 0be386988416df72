"""RESTATEMENT (tests only) of Seg-Zero's training reward rules; not the peer's code."""

import json
import math
import re


def _obj(text):
    found = re.search(r"{[^}]+}", text)
    if found is None:
        raise LookupError
    return json.loads(found.group(0))


def _gt(text, tag, n):
    pair = r"\((\d+),(\d+)\)"
    nums = re.search(f"<{tag}>" + ",".join([pair] * n) + f"</{tag}>", text.strip())
    return [int(v) for v in nums.groups()]


def seg_thinking_format_reward(text):
    return float(bool(re.fullmatch(r"<think>.*?</think>\s*<answer>.*?</answer>", text, re.DOTALL)))


def seg_segmentation_format_reward(text):
    try:
        d = _obj(text)
        want = {"bbox": 4, "points_1": 2, "points_2": 2}
        return float(all(k in d and isinstance(d[k], list) and len(d[k]) == n for k, n in want.items()))
    except Exception:
        return 0.0


def seg_iou_reward(text, truth):
    try:
        g = _gt(truth, "box", 2)
        b = _obj(text)["bbox"]
        if len(b) != 4:
            return 0.0
        lo_x, lo_y, hi_x, hi_y = max(b[0], g[0]), max(b[1], g[1]), min(b[2], g[2]), min(b[3], g[3])
        inter = (hi_x - lo_x + 1) * (hi_y - lo_y + 1) if lo_x < hi_x and lo_y < hi_y else 0
        union = (b[2] - b[0] + 1) * (b[3] - b[1] + 1) + (g[2] - g[0] + 1) * (g[3] - g[1] + 1) - inter
        return 1.0 if float(inter) / union > 0.5 else 0.0
    except Exception:
        return 0.0


def seg_box_l1_reward(text, truth):
    try:
        g = _gt(truth, "box", 2)
        b = _obj(text)["bbox"]
        if len(b) != 4:
            return 0.0
        return 1.0 if (abs(b[0] - g[0]) + abs(b[1] - g[1]) + abs(b[2] - g[2]) + abs(b[3] - g[3])) / 4 < 10 else 0.0
    except Exception:
        return 0.0


def seg_point_l1_reward(text, truth):
    try:
        g = _gt(truth, "points", 2)
        g = [g[:2], g[2:]]
        d = _obj(text)
        b = d["bbox"]
        if len(b) != 4:
            return 0.0
        p = [[int(q[0]), int(q[1])] for q in (d["points_1"], d["points_2"])]
        if not all(b[0] <= x <= b[2] and b[1] <= y <= b[3] for x, y in p):
            return 0.0
        dist = lambda u, v: math.sqrt((u[0] - v[0]) ** 2 + (u[1] - v[1]) ** 2)  # noqa: E731
        best = min(dist(p[0], g[0]) + dist(p[1], g[1]), dist(p[0], g[1]) + dist(p[1], g[0])) / 2
        return 1.0 if best < 100 else 0.0
    except Exception:
        return 0.0
