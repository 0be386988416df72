"""The SAM 2 engine does what the SAM engine does: multi-object answers (IoU of the union of the objects'
masks, against a ``SAM2ImagePredictor`` per object + OR), one scoring preamble (counters, failed answers), and
embedding stores (``samr1 embed --sam sam2.1_hiera_t`` fills one; the engine reads it and never encodes).
Real sam2 modules with random weights, small images; five image encodes in all (~3 s each on an idle CPU)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from samr1.answer import Answer, parse_answer
from samr1.geometry import mask_iou_numpy

pytest.importorskip("sam2", reason="the sam2 extra is not installed (SAM2_BUILD_CUDA=0 pip install 'samr1[sam2]')")

KIND = "sam2.1_hiera_t"
TOL = 5e-3  # the SAM 2 parity bound (tests/test_sam2.py): pixels within fp32 round-off of the threshold


@pytest.fixture(scope="module")
def model():
    from samr1.sam import load_sam

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return load_sam(KIND, seed=0)  # the model `samr1 embed --sam sam2.1_hiera_t` builds (seed 0)


@pytest.fixture(scope="module")
def scene():
    """Two images of odd, different sizes with a ground truth each."""
    rng = np.random.default_rng()
    images, gts = [], []
    for h, w in [(64, 96), (53, 77)]:
        images.append(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        gt = np.zeros((h, w), dtype=bool)
        gt[h // 5: 4 * h // 5, w // 6: w // 2] = True
        gts.append(gt)
    return images, gts


@pytest.fixture(scope="module")
def engine(model):
    from samr1.engine.sam2_engine import Sam2Engine

    return Sam2Engine(model, decode_chunk=8)


def _two_objects(h: int, w: int, rng) -> str:
    """A VisionReasoner list answer with two objects in opposite halves of the image (model frame 840)."""
    objs = []
    for x0, x1 in ((0.05, 0.45), (0.55, 0.95)):
        bx = sorted(rng.uniform(x0, x1, 2) * w)
        by = sorted(rng.uniform(0.1, 0.9, 2) * h)
        px, py = (bx[0] + bx[1]) / 2, (by[0] + by[1]) / 2
        objs.append({"bbox_2d": [bx[0] * 840 / w, by[0] * 840 / h, bx[1] * 840 / w, by[1] * 840 / h],
                     "point_2d": [px * 840 / w, py * 840 / h]})
    return "<think>two of them</think><answer>" + json.dumps(objs) + "</answer>"


def test_multi_object_answers_score_the_union_like_the_predictor(model, engine, scene):
    """Union IoU = the predictor's per-object masks OR-ed, then IoU; "first" (as SamR1Reward passes it) keeps
    the first object; single-object and failed answers in the same call are scored as before."""
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    from samr1.engine.reference_sam2 import predict_mask_sam2
    from samr1.engine.scoring import STAGES
    from samr1.rewards import SamR1Reward

    images, gts = scene
    rng = np.random.default_rng()
    (h, w), (h2, w2) = images[0].shape[:2], images[1].shape[:2]
    pred = SAM2ImagePredictor(model)
    pred.set_image(images[0])
    for _ in range(20):  # random weights: draw until the second object's mask adds >= 2% of the pixels
        text = _two_objects(h, w, rng)
        union = parse_answer(text, (h, w))
        parts = [predict_mask_sam2(pred, p) for p in union.per_object()]
        gt = parts[1] & ~parts[0]  # the first object's mask misses it entirely: "first" scores 0 on it
        if gt.mean() >= 0.02:
            break
    else:
        pytest.fail("no draw in 20 where the second object adds 2% of the pixels")
    first = parse_answer(text, (h, w), multi_object="first")
    assert len(union.objects) == 2 and len(first.objects) == 1
    single = Answer(ok=True, bbox=(w * 0.2, h * 0.3, w * 0.7, h * 0.9), points=[(w * 0.4, h * 0.5)], labels=[1])
    other = parse_answer(_two_objects(h2, w2, rng), (h2, w2))  # a union on the other image
    want = {"union": mask_iou_numpy(parts[0] | parts[1], gt), "first": mask_iou_numpy(parts[0], gt),
            "single": mask_iou_numpy(predict_mask_sam2(pred, single), gt)}
    assert want["union"] >= 0.02 and want["first"] == 0.0, want

    before = engine.stats
    batch = [union, first, single, Answer(ok=False, reason="no_answer"), other]
    got = engine.score([images[0]] * 4 + [images[1]], batch, [gt] * 4 + [gts[1]])
    assert abs(got[0] - want["union"]) <= TOL and abs(got[1] - want["first"]) <= TOL, (got, want)
    assert abs(got[2] - want["single"]) <= TOL and got[3] == 0.0, (got, want)
    m_other = engine.segment(images[1], other)
    assert np.array_equal(m_other, np.logical_or(*[engine.segment(images[1], p) for p in other.per_object()]))
    assert got[4] == mask_iou_numpy(m_other, gts[1])
    st = engine.stats
    assert st["score_calls"] == before["score_calls"] + 1  # one call, whatever paths it took
    assert st["answers_scored"] == before["answers_scored"] + 4
    assert st["answers_skipped"] == before["answers_skipped"] + 1
    assert st["union_answers"] == before.get("union_answers", 0) + 2
    assert set(STAGES) | {"time_union_s"} <= set(st)

    # the reward, in both of its multi_object modes, gets the same numbers through the engine
    kw = {"image": [images[0]], "mask": [gt]}
    for mode in ("union", "first"):
        reward = SamR1Reward(engine, components=("mask_iou",), multi_object=mode)
        assert abs(reward(["q"], [text], **kw)[0] - want[mode]) <= TOL, mode


def test_embed_fills_a_sam2_store_and_the_engine_never_encodes(model, engine, scene, tmp_path, capsys):
    """`samr1 embed --sam sam2.1_hiera_t` rows hold the engine's own features in float16 (every map); an engine
    reading the store encodes nothing and scores within the parity bound of the fp32 engine, and exactly as
    the fp32 engine does on float16-rounded features."""
    from samr1.cli import main
    from samr1.engine.sam2_engine import Sam2Engine, _Entry, store_layout
    from samr1.store import EmbeddingStore

    images, gts = scene
    lines = []
    for i, img in enumerate(images):
        Image.fromarray(img).save(tmp_path / f"im{i}.png")
        lines.append(json.dumps({"image": f"im{i}.png", "query": "q"}))
    (tmp_path / "data.jsonl").write_text("\n".join(lines) + "\n")
    out = tmp_path / "store"
    # --batch 1: the engine encodes misses one at a time, so the rows are its features exactly (before float16)
    assert main(["embed", "--data", str(tmp_path / "data.jsonl"), "--out", str(out), "--sam", KIND,
                 "--device", "cpu", "--batch", "1", "--no-progress"]) == 0
    assert "encoded 2" in capsys.readouterr().out

    index, entries = engine._lookup(images, ["images[0]", "images[1]"])  # the fixture's fp32 features (cached)
    store = EmbeddingStore.open(out, engine.encoder.model_id, kind="sam2")
    assert store.kind == "sam2" and list(store.layout) == store_layout(engine.encoder)
    for img, e in zip(images, entries, strict=True):
        parts, size = store.get_parts(store.key(img))
        assert size == (engine.frame, engine.frame)
        for got, want in zip(parts, [e.embed, *e.high_res], strict=True):
            assert torch.equal(got, want.half()), "a stored map is not the engine's map in float16"

    rng = np.random.default_rng()
    answers, imgs, masks = [], [], []
    for k in range(6):
        j = k % 2
        h, w = images[j].shape[:2]
        x1, x2 = sorted(rng.uniform(0, w, 2))
        y1, y2 = sorted(rng.uniform(0, h, 2))
        pts = [(rng.uniform(0, w - 1), rng.uniform(0, h - 1))] if k >= 2 else []
        answers.append(Answer(ok=True, bbox=(x1, y1, x2, y2), points=pts, labels=[1] * len(pts)))
        imgs.append(images[j])
        masks.append(gts[j])
    answers.append(parse_answer(_two_objects(*images[0].shape[:2], rng), images[0].shape[:2]))  # a union too
    imgs.append(images[0])
    masks.append(gts[0])

    stored = Sam2Engine(model, store=out, decode_chunk=8)  # a path: opened as a "sam2" store of this model
    got = stored.score(imgs, answers, masks)
    st = stored.stats
    assert st["encoder_images"] == 0 and st["store_hits"] == 2, st  # the encoder never ran
    fp32 = engine.score(imgs, answers, masks)
    assert np.abs(np.array(got) - np.array(fp32)).max() <= TOL, (got, fp32)
    # the same decode on float16-rounded features: equal IoUs (the store path adds nothing but the rounding)
    rounded = Sam2Engine(model, decode_chunk=8)
    for key in engine._cache.keys():
        e = engine._cache.get(key)
        rounded._cache.put(key, _Entry(e.embed.half().float(), [f.half().float() for f in e.high_res], e.size))
    assert rounded.score(imgs, answers, masks) == got
    assert rounded.stats["encoder_images"] == 0


def test_v1_and_sam2_stores_are_refused_by_the_other_engine(model, tmp_path):
    from samr1.engine import SamEngine
    from samr1.engine.sam2_engine import Sam2Engine, store_layout
    from samr1.sam import load_sam
    from samr1.sam.encoder import make_encoder
    from samr1.store import EmbeddingStore, StoreError

    tiny = load_sam("tiny")
    enc = make_encoder(tiny, backend="torch")
    EmbeddingStore.create(tmp_path / "v1", enc.model_id, enc.embedding_shape, enc.frame).close()
    with pytest.raises(StoreError, match="field 'kind'"):
        Sam2Engine(model, store=tmp_path / "v1")
    with pytest.raises(StoreError, match="field 'kind'"):
        Sam2Engine(model, store=EmbeddingStore.open(tmp_path / "v1", None))

    s2 = Sam2Engine(model)
    layout = store_layout(s2.encoder)
    EmbeddingStore.create(tmp_path / "v2", s2.encoder.model_id, layout[0][1], s2.frame, kind="sam2",
                          layout=layout).close()
    with pytest.raises(StoreError, match="field 'kind'"):
        SamEngine(tiny, store=tmp_path / "v2")
    with pytest.raises(StoreError, match="field 'kind'"):
        SamEngine(tiny, store=EmbeddingStore.open(tmp_path / "v2", None, kind=None))
    # a SAM 2 store of another model, or with other maps, is refused by name too
    EmbeddingStore.create(tmp_path / "other", "sam2_hiera_t:random:seed=0", layout[0][1], s2.frame, kind="sam2",
                          layout=layout).close()
    with pytest.raises(StoreError, match="field 'model_id'"):
        Sam2Engine(model, store=tmp_path / "other")
    EmbeddingStore.create(tmp_path / "short", s2.encoder.model_id, layout[0][1], s2.frame, kind="sam2",
                          layout=layout[:2]).close()
    with pytest.raises(StoreError, match="field 'layout'"):
        Sam2Engine(model, store=tmp_path / "short")
    assert Sam2Engine(model, store=tmp_path / "v2").store.kind == "sam2"  # the right one opens
