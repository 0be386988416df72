"""RESTATEMENT (tests only) of VisionReasoner's reward rules; not the peer's code."""

import itertools
import json
import re


def _answer(text):
    found = re.search(r"<answer>\s*(.*?)\s*</answer>", text, re.DOTALL)
    if found is None:
        raise LookupError
    return json.loads(found.group(1))


def vision_reasoner_format_reward(text):
    think = float(bool(re.fullmatch(r"<think>.*?</think>\s*<answer>.*?</answer>", text, re.DOTALL)))
    seg = 0.0
    try:
        data = _answer(text)
        count = len(data)
        for item in data:
            got = 0.0
            for key, n in (("bbox_2d", 4), ("point_2d", 2)):
                if key in item and isinstance(item[key], list) and len(item[key]) == n:
                    got += 1.0
            seg += got / count
    except Exception:
        pass
    return think + seg


def _pair(b, p, gb, gp):
    iw = max(0, min(b[2], gb[2]) - max(b[0], gb[0]) + 1)
    ih = max(0, min(b[3], gb[3]) - max(b[1], gb[1]) + 1)
    inter = iw * ih
    union = (b[2] - b[0] + 1) * (b[3] - b[1] + 1) + (gb[2] - gb[0] + 1) * (gb[3] - gb[1] + 1) - inter
    l1 = sum(abs(x - y) for x, y in zip(b, gb, strict=True)) / 4
    inside = b[0] <= p[0] <= b[2] and b[1] <= p[1] <= b[3]
    near = ((p[0] - gp[0]) ** 2 + (p[1] - gp[1]) ** 2) ** 0.5 < 30
    return float(inter / union > 0.5) + float(l1 < 10) + float(near and inside)


def vision_reasoner_accuracy_reward(text, truth):
    try:
        gt = json.loads(truth)[:120]
        pred = _answer(text)
        boxes = [o["bbox_2d"] for o in pred][:120]
        points = [o["point_2d"] for o in pred][:120]
        if not boxes or not gt or any(len(b) != 4 for b in boxes) or any(len(p) != 2 for p in points):
            return 0.0
        score = [[_pair(b, p, g["bbox_2d"], g["point_2d"]) for g in gt] for b, p in zip(boxes, points, strict=True)]
        m, n = len(score), len(gt)
        best = 0.0  # brute force over every one-to-one pairing (the sizes in the tests are small)
        if m <= n:
            for cols in itertools.permutations(range(n), m):
                best = max(best, sum(score[i][c] for i, c in enumerate(cols)))
        else:
            for rows in itertools.permutations(range(m), n):
                best = max(best, sum(score[r][j] for j, r in enumerate(rows)))
        return best / max(m, n)
    except Exception:
        return 0.0


def vision_reasoner_non_repeat_reward(text):
    pieces = [s.strip() for s in text.split(".") if s.strip()]
    return 0.0 if len(pieces) - len(set(pieces)) >= 2 else 1.0
