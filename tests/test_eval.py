"""samr1 eval: a tiny Qwen2.5-VL built in code + the shipped tiny-shapes SAM on a 4-sample manifest of
synthetic scenes; gIoU / cIoU checked against samr1.metrics on the engine's own masks; shards + merge equal
the unsharded run."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
from PIL import Image

from samr1.answer import parse_answer
from samr1.pipeline import ReasoningSegmenter, ScriptedText, evaluate_rows, merge_results, shard_indices
from samr1.shapes.scenes import make_scene

TEMPLATE = "Find {query}."


@pytest.fixture(scope="module")
def policy(tiny_policy):
    return tiny_policy


@pytest.fixture(scope="module")
def engine(shapes_engine):
    return shapes_engine


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    """4 samples; sample 2 has an all-background mask (its object absent), to exercise the empty-union rule."""
    d = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng()
    lines, truth = [], []
    for i in range(4):
        sc = make_scene(int(rng.integers(1 << 30)), size=(int(rng.integers(120, 200)), int(rng.integers(120, 200))),
                        n_objects=2)
        m = sc.objects[-1].mask if i != 2 else np.zeros(sc.image.shape[:2], bool)
        Image.fromarray(sc.image).save(d / f"im{i}.png")
        Image.fromarray(m.astype(np.uint8) * 255).save(d / f"m{i}.png")
        lines.append(json.dumps({"image": f"im{i}.png", "query": f"q{i} {sc.objects[-1].query}", "mask": f"m{i}.png"}))
        truth.append((sc.image, sc.objects[-1].mask, m))
    (d / "val.jsonl").write_text("\n".join(lines) + "\n")
    return str(d / "val.jsonl"), truth


def completion(obj_mask: np.ndarray) -> str:
    h, w = obj_mask.shape
    ys, xs = np.nonzero(obj_mask)
    sx, sy = 840 / w, 840 / h
    box = [int(xs.min() * sx), int(ys.min() * sy), int((xs.max() + 1) * sx), int((ys.max() + 1) * sy)]
    i = len(xs) // 2
    return f'<answer>{{"bbox":{json.dumps(box)},"points":[[{int(xs[i] * sx)},{int(ys[i] * sy)}]]}}</answer>'


class Scripted(ReasoningSegmenter):
    """The real tiny policy, its output fixed per query through generation (it is untrained)."""

    script: dict[str, str] = {}

    def segment_batch(self, images, queries, **kw):
        texts = [self.script[q] for q in queries]
        return super().segment_batch(images, queries, prefix_allowed_tokens_fn=ScriptedText(self.processor.tokenizer,
                                                                                          texts), **kw)


def test_eval_metrics_and_sharded_merge(policy, engine, manifest):
    from samr1.metrics import evaluate
    from samr1.train.data import load_rows

    _, model, processor = policy
    path, truth = manifest
    rows = load_rows(path)
    # sample 1's policy output does not parse; the others answer with their object's box (sample 2's object is
    # not in its ground truth: a real prediction against an empty mask)
    script = {r.query: completion(t[1]) for r, t in zip(rows, truth, strict=True)}
    script[rows[1].query] = "<think>?</think>"
    seg = Scripted(model, processor, engine, template=TEMPLATE, max_new_tokens=96)
    seg.script = script
    full = evaluate_rows(seg, rows, batch_size=4, empty_union="visionreasoner")
    assert [s["text"] for s in full["samples"]] == [script[r.query] for r in rows]  # generation wrote them
    # independent check: samr1.metrics on the engine's masks for the same answers
    preds = [None if i == 1 else engine.segment(t[0], parse_answer(script[rows[i].query], image_size=t[0].shape[:2]))
             for i, t in enumerate(truth)]
    ref = evaluate(preds, [t[2] for t in truth], empty_union="visionreasoner")
    assert full["giou"] == pytest.approx(ref.giou, abs=1e-12) and full["ciou"] == pytest.approx(ref.ciou, abs=1e-12)
    assert full["n"] == 4 and full["n_parse_failures"] == 1 == full["parse_failure_reasons"]["no_answer_block"]
    assert [s["index"] for s in full["samples"]] == [0, 1, 2, 3]
    assert full["samples"][1]["union"] == int(truth[1][2].sum()) and full["samples"][1]["intersection"] == 0
    assert full["giou"] > 0  # the scripted answers really hit their objects
    # two shards (strided), then merged: equal to the unsharded run
    parts = []
    for s in range(2):
        part = evaluate_rows(seg, rows, shard_indices(4, 2, s), batch_size=4, empty_union="visionreasoner")
        part.update({"shard": [s, 2]})
        parts.append(part)
    assert [x["index"] for x in parts[1]["samples"]] == [1, 3]
    merged = merge_results(parts[::-1])
    assert merged["giou"] == full["giou"] and merged["ciou"] == full["ciou"]
    assert [(s["index"], s["iou"], s["intersection"], s["union"]) for s in merged["samples"]] == \
           [(s["index"], s["iou"], s["intersection"], s["union"]) for s in full["samples"]]
    with pytest.raises(ValueError, match="shards 0..1"):
        merge_results(parts[:1])
    seg.close()


def test_merge_rejects_mixed_runs():
    a = {"shard": [0, 2], "empty_union": "lisa", "samples": []}
    with pytest.raises(ValueError, match="different runs"):
        merge_results([a, {"shard": [1, 3], "empty_union": "lisa", "samples": []}])
    with pytest.raises(ValueError, match="shard must be"):
        shard_indices(4, 2, 2)


def test_cli_eval_writes_results_rows_figure_and_sharded_merge_equals_unsharded(policy, manifest, tmp_path, capsys):
    from samr1.cli import main

    path, _ = manifest
    model_path = policy[0]
    base = ["eval", "--model", model_path, "--sam", "tiny-shapes", "--data", path, "--template", TEMPLATE,
            "--max-new-tokens", "2", "--batch-size", "4", "--no-progress", "--device", "cpu"]
    assert main([*base, "--out", str(tmp_path / "all.json")]) == 0
    res = json.loads((tmp_path / "all.json").read_text())
    for key in ("giou", "ciou", "n", "n_parse_failures", "parse_failure_reasons", "samples"):
        assert key in res
    rows = [json.loads(x) for x in (tmp_path / "all.samples.jsonl").read_text().splitlines()]
    assert [r["index"] for r in rows] == [0, 1, 2, 3] and all("text" in r and "query" in r for r in rows)
    assert (tmp_path / "all.iou.png").stat().st_size > 1000
    # an untrained policy with 2 tokens never answers: every sample is a parse failure, IoU 0
    assert res["n_parse_failures"] == 4 and res["giou"] == 0 and res["ciou"] == 0
    for s in range(2):
        assert main([*base, "--num-shards", "2", "--shard", str(s), "--out", str(tmp_path / f"s{s}.json")]) == 0
    assert main(["eval", "--merge", str(tmp_path / "s1.json"), str(tmp_path / "s0.json"),
                 "--out", str(tmp_path / "merged.json")]) == 0
    merged = json.loads((tmp_path / "merged.json").read_text())
    for key in ("giou", "ciou", "n", "n_parse_failures", "n_scored"):
        assert merged[key] == res[key] or (math.isnan(merged[key]) and math.isnan(res[key]))
    assert merged["samples"] == res["samples"]
    merged_rows = [json.loads(x) for x in (tmp_path / "merged.samples.jsonl").read_text().splitlines()]
    assert [r["text"] for r in merged_rows] == [r["text"] for r in rows]  # greedy: same completions
    assert "gIoU" in capsys.readouterr().out
    # bad flags are usage errors before any model loads
    assert main(["eval", "--model", model_path, "--data", path, "--out", str(tmp_path / "x.json"),
                 "--num-shards", "2", "--shard", "2"]) == 2


def test_cli_eval_checks_every_row_before_the_models_and_merge_refuses_other_runs(policy, manifest, tmp_path,
                                                                                   capsys):
    """A bad row at the end of the set used to stop eval there, after every sample before it was generated,
    and no results were written; shards of another model, data or sample cap were merged without a word.
    Now the bad row is reported before any model loads (or left out and listed with --skip-bad-rows), and
    merge refuses shards that disagree on the run or leave rows out."""
    from samr1.cli import main

    path, _ = manifest
    folder = os.path.dirname(path)
    lines = open(path, encoding="utf-8").read().splitlines()
    bad_path = os.path.join(folder, "with_missing.jsonl")
    with open(bad_path, "w", encoding="utf-8") as f:
        f.write("\n".join([*lines, json.dumps({"image": "nowhere.png", "query": "q", "mask": "m0.png"})]) + "\n")
    base = ["eval", "--model", policy[0], "--sam", "tiny-shapes", "--template", TEMPLATE, "--max-new-tokens", "2",
            "--batch-size", "2", "--no-progress", "--device", "cpu"]
    import samr1.pipeline as pipeline_mod

    loads = []
    with pytest.MonkeyPatch.context() as mp:  # no model is loaded before the rows are checked
        real = pipeline_mod.ReasoningSegmenter.from_pretrained
        mp.setattr(pipeline_mod.ReasoningSegmenter, "from_pretrained",
                   classmethod(lambda cls, *a, **k: loads.append(1) or real(*a, **k)))
        assert main([*base, "--data", bad_path, "--out", str(tmp_path / "bad.json")]) == 3
    err = capsys.readouterr().err
    assert "1 bad evaluation row" in err and "with_missing.jsonl:5" in err and "--skip-bad-rows" in err, err
    assert not loads and not (tmp_path / "bad.json").exists()
    assert main([*base, "--data", bad_path, "--out", str(tmp_path / "skip.json"), "--skip-bad-rows"]) == 0
    res = json.loads((tmp_path / "skip.json").read_text())
    assert res["n"] == 4 and res["n_rows"] == 5 and [b["index"] for b in res["bad_rows"]] == [4]
    # shards of one run with a skipped row merge; a shard of another data set or sample cap does not
    for s in range(2):
        assert main([*base, "--data", bad_path, "--skip-bad-rows", "--num-shards", "2", "--shard", str(s),
                     "--out", str(tmp_path / f"k{s}.json")]) == 0
    assert main(["eval", "--merge", str(tmp_path / "k0.json"), str(tmp_path / "k1.json"),
                 "--out", str(tmp_path / "k.json")]) == 0
    merged = json.loads((tmp_path / "k.json").read_text())
    assert merged["n"] == 4 and [b["index"] for b in merged["bad_rows"]] == [4]
    assert main([*base, "--data", path, "--num-shards", "2", "--shard", "1", "--out", str(tmp_path / "o1.json")]) == 0
    assert main([*base, "--data", bad_path, "--skip-bad-rows", "--max-samples", "4", "--num-shards", "2", "--shard",
                 "1", "--out", str(tmp_path / "m1.json")]) == 0
    capsys.readouterr()
    for other in ("o1.json", "m1.json"):
        assert main(["eval", "--merge", str(tmp_path / "k0.json"), str(tmp_path / other),
                     "--out", str(tmp_path / f"x{other}"), "--force"]) == 2
        assert "different runs" in capsys.readouterr().err
