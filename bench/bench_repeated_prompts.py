"""A warm reward step whose groups repeat answers: each distinct SAM prompt decoded once vs every prompt.

A policy late in GRPO training (low entropy) often writes the same answer, to the coordinate, several times
in a group; a multi-object answer may name one object twice. The engine decodes each distinct prompt
(image, box, points, labels) once and copies its logits to the repeats (``ScoringEngine._decode_distinct``).
This bench takes the reward-step bench's B x G parseable answers and redraws each group's G answers from
its first ``k`` (with replacement), for k = G, G/2, ..., 1, then times ``SamEngine.score`` on the warm cache
(every embedding cached, so the step is the decoder) two ways in the same run: ``every prompt`` (the repeats
decoded again, the engine's path before this change, by bypassing the dedupe) and ``distinct once``. The
IoUs of the two ways are compared (they must be equal).

    samr1 bench repeated-prompts [--quick | --smoke] [--sam tiny] [--device cpu] [--out DIR]
"""

from __future__ import annotations

from typing import Any

import numpy as np
from samr1.bench.harness import agreement_line, format_table, measure, save_and_plot

__all__ = ["run"]


def _every_prompt(img_index: list[int], answers: list[Any], decode: Any) -> Any:
    return decode(img_index, answers)  # the repeats decoded again: no dedupe


def run(quick: bool = False, out: str | None = None, device: str = "cpu", sam_kind: str = "tiny",
        smoke: bool = False, b: int | None = None, g: int | None = None, repeats: int | None = None,
        checkpoint: str | None = None) -> list[dict[str, Any]]:
    """One row per (k, way) with ``step_s``, ``distinct_prompts`` and, on the ``distinct once`` rows,
    ``speedup`` over ``every prompt`` and ``max_iou_diff``."""
    from samr1.bench.bench_reward_step import make_step

    from samr1.answer import parse_answer
    from samr1.engine import SamEngine
    from samr1.engine.scoring import distinct_prompts
    from samr1.sam import load_sam

    b = b or (2 if smoke else 4 if quick else 16)
    g = g or (4 if smoke or quick else 8)
    repeats = repeats or (1 if (quick or smoke) else 5)
    engine = SamEngine(load_sam(sam_kind, checkpoint=checkpoint, device=device), device=device)
    images, masks, completions = make_step(b, g)
    answers = [parse_answer(c, im.shape[:2]) for c, im in zip(completions, images, strict=True)]
    engine.score(images, answers, masks)  # fill the embedding cache: the timed steps are warm
    rng = np.random.default_rng(0)
    ks = sorted({g >> s for s in range(g.bit_length()) if g >> s}, reverse=True)
    rows: list[dict[str, Any]] = []
    for k in ks:
        step = []
        for i in range(b):
            pool = [a for a in answers[i * g:(i + 1) * g] if a.ok][:k]
            step += [pool[int(rng.integers(len(pool)))] for _ in range(g)] if pool else answers[i * g:(i + 1) * g]
        n_distinct = len(distinct_prompts([i // g for i in range(len(step))], step)[0])
        values = {}
        for way in ("every prompt", "distinct once"):
            if way == "every prompt":
                engine._decode_distinct = _every_prompt  # an instance attribute hides the method
            else:
                del engine._decode_distinct

            def call(step=step, way=way, values=values):
                values[way] = engine.score(images, step, masks)

            tm = measure(call, warmup=0 if smoke else 1, repeats=repeats, device=device)
            rows.append({"k": k, "way": way, "B": b, "G": g, "sam": sam_kind, "step_s": tm.median, "p20_s": tm.p20,
                         "p80_s": tm.p80, "repeats": tm.repeats, "prompts": sum(a.ok for a in step),
                         "distinct_prompts": n_distinct, "smoke": smoke})
        every, once = rows[-2], rows[-1]
        once["speedup"] = every["step_s"] / once["step_s"]
        once["max_iou_diff"] = float(np.max(np.abs(np.subtract(values["every prompt"], values["distinct once"]))))
    print(f"warm reward step, B={b} x G={g}, SAM {sam_kind}, device {device}, median of {repeats}; each group's "
          f"G answers redrawn from its first k")
    print(format_table(rows, ["k", "way", "step_s", "prompts", "distinct_prompts", "speedup", "max_iou_diff"]))
    worst = max(r["max_iou_diff"] for r in rows if "max_iou_diff" in r)
    print(agreement_line(worst == 0.0, f"max IoU diff {worst:.1e}", "decoding every prompt"))

    def plot() -> str:
        from samr1.bench.plots import plot_repeated_prompts

        return plot_repeated_prompts(rows, out, device)

    save_and_plot(rows, out, "repeated_prompts", device, plots=[plot])
    return rows


if __name__ == "__main__":
    from samr1.bench.harness import sam_bench_main

    sam_bench_main(__doc__, run)
