"""Answer parsing cost per completion: typical rollouts and hostile text (CPU only; no GPU involved).

Cases: typical Seg-Zero / VisionReasoner / fenced / single-quoted completions, 200 kB of junk (with and
without a valid answer at the end), deep bracket nesting, thousands of ``<answer>`` blocks, unclosed tags.
For each case it prints the median and max microseconds per completion and the throughput.

There is no torch reference for parsing. As a point of comparison the same run times the regex parse that
Seg-Zero-style reward code uses (``re.search(r"<answer>\\s*(.*?)\\s*</answer>", DOTALL)`` + ``json.loads``),
where its cost stays bounded (it is quadratic on unclosed tags: shown on a small input only). It is not
the same parser (first block instead of last, no fences, no rescaling), only a speed yardstick.

    python bench/bench_parse.py [--quick | --smoke] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import re
import time

import numpy as np
from samr1.bench.harness import format_table, measure, save_and_plot

from samr1.answer import parse_answer

_SEGZERO_RE = re.compile(r"<answer>\s*(.*?)\s*</answer>", re.DOTALL)


def segzero_regex_parse(text: str):
    """The yardstick: Seg-Zero-style regex + json.loads (first block), errors swallowed."""
    m = _SEGZERO_RE.search(text)
    if not m:
        return None
    try:
        return json.loads(m.group(1))
    except (ValueError, RecursionError):  # RecursionError: it has no depth guard (deep nesting case)
        return None


def typical_completions(n: int, seed: int = 0) -> list[str]:
    """Rollout-like completions: ~300-character reasoning, then an answer in one of the accepted forms."""
    rng = np.random.default_rng(seed)
    words = ("the", "chair", "left", "person", "red", "table", "near", "window", "object", "sitting", "likely")
    out = []
    for i in range(n):
        think = " ".join(rng.choice(words, size=int(rng.integers(30, 80))))
        x1, y1 = (int(v) for v in rng.integers(0, 500, 2))
        x2, y2 = x1 + int(rng.integers(20, 300)), y1 + int(rng.integers(20, 300))
        p1 = [int(rng.integers(x1, x2)), int(rng.integers(y1, y2))]
        p2 = [int(rng.integers(x1, x2)), int(rng.integers(y1, y2))]
        form = i % 4
        if form == 0:
            ans = json.dumps({"bbox": [x1, y1, x2, y2], "points_1": p1, "points_2": p2})
        elif form == 1:
            ans = json.dumps([{"bbox_2d": [x1, y1, x2, y2], "point_2d": p1}])
        elif form == 2:
            ans = "```json\n" + json.dumps({"bbox": [x1, y1, x2, y2], "points": [p1, p2]}) + "\n```"
        else:
            ans = repr({"bbox": (x1, y1, x2, y2), "points_1": p1, "points_2": p2})  # single quotes
        out.append(f"<think>{think}</think>\n<answer>{ans}</answer>")
    return out


def hostile_cases(quick: bool) -> dict[str, list[str]]:
    good = '<answer>{"bbox": [10, 20, 300, 400], "points_1": [50, 60], "points_2": [70, 80]}</answer>'
    junk = "".join(chr(c) for c in np.random.default_rng(1).integers(32, 0x2FFF, 200_000))
    return {
        "junk 200kB, no answer": [junk.replace("<", "(")],
        "junk 200kB + answer": ["<think>" + junk.replace("<", "(") + "</think>" + good],
        "surrogates+NUL 200kB + answer": ["\ud800\x00" * 100_000 + good],
        "deep nesting 8k '['": ["<answer>" + "[" * 8000 + "</answer>"],
        "deep nesting 200k '{'": ["<answer>" + "{" * 200_000 + "</answer>"],
        "binop chain 8k chars": ["<answer>" + "1+" * 4000 + "1</answer>"],
        "python tuple 8k chars": ["<answer>(" + "1, " * 2700 + ")</answer>"],  # read as JSON after translation
        "python set 2k chars": ["<answer>{" + "1, " * 680 + "}</answer>"],  # the literal_eval worst case
        "10k answer blocks": [good * (2_000 if quick else 10_000)],
        "50k unclosed <answer>": ["<answer>" * 50_000],
    }


def yardstick_agreement(texts: list[str], size: tuple[int, int], model_size: int = 840) -> tuple[int, int]:
    """On the completions the regex yardstick reads as a Seg-Zero dict or a VisionReasoner list, whether
    ``parse_answer`` gives the same box and points (rescaled by (W/840, H/840), within 1e-6 px).
    Returns (agreeing, compared); the other forms (fences, single quotes) the regex cannot read."""
    sx, sy = size[1] / model_size, size[0] / model_size
    agree = compared = 0
    for t in texts:
        obj = segzero_regex_parse(t)
        if isinstance(obj, list) and obj and isinstance(obj[0], dict):
            obj = obj[0]
        if not isinstance(obj, dict):
            continue
        box = obj.get("bbox", obj.get("bbox_2d"))
        pts = [obj[k] for k in ("points_1", "points_2", "point_2d") if k in obj]
        if box is None:
            continue
        compared += 1
        want_box = (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy)
        want_pts = [(p[0] * sx, p[1] * sy) for p in pts]
        a = parse_answer(t, size)
        agree += bool(a.ok and a.bbox is not None and len(a.points) == len(want_pts)
                      and np.allclose(a.bbox, want_box, atol=1e-6)
                      and all(np.allclose(p, q, atol=1e-6) for p, q in zip(a.points, want_pts, strict=True)))
    return agree, compared


def _time_each(texts: list[str], fn, repeats: int) -> np.ndarray:
    """Per-completion seconds: median over ``repeats`` of each completion's own timing (1 warm-up)."""
    per = np.empty(len(texts))
    for i, t in enumerate(texts):
        per[i] = measure(lambda t=t: fn(t), warmup=1, repeats=repeats).median
    return per


def run(quick: bool = False, out: str | None = None, device: str = "cpu", smoke: bool = False,
        plot: bool = True) -> list[dict]:
    """Time ``parse_answer`` per completion on each case; returns one record per case.

    Default: 512 typical completions, 7 repeats; ``quick``: 64, 3; ``smoke``: 16, 1 (and the hostile
    cases at their quick sizes). The typical row carries ``agree`` / ``compared``: completions on which
    ``parse_answer`` and the regex yardstick give the same box and points (every one must agree). With
    ``out`` (and ``plot``) also writes ``out/parse.png``.
    """
    if str(device) != "cpu":
        print(f"note: parsing runs on the CPU; --device {device} only labels the records")
    repeats = 1 if smoke else 3 if quick else 7
    n_typ = 16 if smoke else 64 if quick else 512
    size = (480, 640)
    cases = {"typical rollout": typical_completions(n_typ), **hostile_cases(quick or smoke)}
    rows = []
    for name, texts in cases.items():
        per = _time_each(texts, lambda t: parse_answer(t, size), repeats)
        # throughput over the whole list in one loop (includes nothing but the parse calls)
        total = measure(lambda texts=texts: [parse_answer(t, size) for t in texts], warmup=1, repeats=repeats).median
        oks = [parse_answer(t, size).ok for t in texts]
        row = {
            "case": name,
            "n": len(texts),
            "kchars": float(np.mean([len(t) for t in texts]) / 1e3),
            "median_us": float(np.median(per) * 1e6),
            "max_us": float(per.max() * 1e6),
            "per_s": float(len(texts) / total),
            "ok_frac": float(np.mean(oks)),
            "smoke": smoke,
        }
        if name == "typical rollout":
            row["agree"], row["compared"] = yardstick_agreement(texts, size)
        # the yardstick, where it is not quadratic (it is on unclosed tags)
        if name != "50k unclosed <answer>":
            ref = _time_each(texts, segzero_regex_parse, repeats)
            row["regex_median_us"] = float(np.median(ref) * 1e6)
        rows.append(row)
    # the regex's quadratic case at a size it survives, beside ours at the same size
    n_unclosed = 1_000 if smoke else 3_000
    small = ["<answer>" * n_unclosed]
    t0 = time.perf_counter()
    segzero_regex_parse(small[0])
    regex_s = time.perf_counter() - t0
    ours = _time_each(small, lambda t: parse_answer(t, size), repeats)
    rows.append({"case": f"{n_unclosed // 1000}k unclosed <answer>", "n": 1, "kchars": len(small[0]) / 1e3,
                 "median_us": float(ours[0] * 1e6), "max_us": float(ours[0] * 1e6), "per_s": float(1 / ours[0]),
                 "ok_frac": 0.0, "regex_median_us": regex_s * 1e6, "smoke": smoke})
    print(format_table(rows, ["case", "n", "kchars", "median_us", "max_us", "per_s", "ok_frac", "regex_median_us"]))
    print("median_us / max_us: microseconds per completion (median over completions of each one's median of "
          f"{repeats} runs); per_s: completions per second; regex_*: Seg-Zero-style regex + json.loads yardstick")
    typ = rows[0]
    print(f"agreement with the regex yardstick on the {typ['compared']} typical completions it can read: "
          f"{typ['agree']} give the same box and points: " + ("OK" if typ["agree"] == typ["compared"] else "MISMATCH"))
    from samr1.bench.plots import plot_parse

    save_and_plot(rows, out, "parse", "cpu", [lambda: plot_parse(rows, out)], plot)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer completions and repeats (a few seconds)")
    ap.add_argument("--out", default=None, help="append JSON-lines records to DIR/parse.jsonl")
    ap.add_argument("--device", default="cpu", help="recorded only: parsing runs on the CPU")
    ap.add_argument("--smoke", action="store_true", help="16 completions, one repeat (agreement check)")
    args = ap.parse_args()
    run(quick=args.quick, out=args.out, device=args.device, smoke=args.smoke)


if __name__ == "__main__":
    main()
