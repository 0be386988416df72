"""SamEngine: the batched, cached path equals the straightforward reference path."""

import re

import numpy as np
import pytest
import torch
from _markers import requires_cuda, requires_sam2

from samr1.answer import Answer, parse_answer
from samr1.engine import SamEngine
from samr1.engine.reference import score_reference
from samr1.geometry import mask_iou_numpy
from samr1.io import InputError, rle_encode
from samr1.sam import load_sam


@pytest.fixture(scope="module")
def sam():
    return load_sam("tiny", seed=0)


def _answer(rng, h, w, n_points):
    x1, x2 = sorted(rng.uniform(0, w, 2))
    y1, y2 = sorted(rng.uniform(0, h, 2))
    pts = [[float(rng.uniform(x1, x2)), float(rng.uniform(y1, y2))] for _ in range(n_points)]
    # write it as a policy would: in the 840 frame, then parse back to original pixels
    sx, sy = 840 / w, 840 / h
    obj = {"bbox": [x1 * sx, y1 * sy, max(x2, x1 + 2) * sx, max(y2, y1 + 2) * sy]}
    if pts:
        obj["points"] = [[p[0] * sx, p[1] * sy] for p in pts]
    import json

    return parse_answer(f"<think>t</think><answer>{json.dumps(obj)}</answer>", image_size=(h, w),
                        require_points=False)  # box-only prompts are scored too


def _step(rng, sizes, g):
    images, masks, answers = [], [], []
    for h, w in sizes:
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        gt = np.zeros((h, w), dtype=bool)
        gt[h // 4: 3 * h // 4 + 1, w // 5: 4 * w // 5 + 1] = True
        for k in range(g):
            images.append(img if k % 2 == 0 else img.copy())  # equal pixels, different objects
            masks.append(gt)
            answers.append(_answer(rng, h, w, k % 3))
    return images, masks, answers


@pytest.mark.parametrize("multimask", [True, False])
def test_score_equals_reference(sam, multimask):
    rng = np.random.default_rng()
    images, masks, answers = _step(rng, [(120, 160), (97, 61), (64, 64)], 4)
    answers[3] = parse_answer("not an answer", image_size=(120, 160))  # not ok -> 0.0
    engine = SamEngine(sam, multimask=multimask)
    got = engine.score(images, answers, masks)
    ref = score_reference(sam, images, answers, masks, multimask=multimask)
    assert got[3] == 0.0 and ref[3] == 0.0
    np.testing.assert_allclose(got, ref, atol=1e-3)
    st = engine.stats
    assert st["encoder_images"] == 3 and st["cache_misses"] == 3
    assert st["answers_skipped"] == 1 and st["answers_scored"] == len(answers) - 1
    # a second call encodes nothing
    again = engine.score(images, answers, masks)
    assert again == got and engine.stats["encoder_images"] == 3


def test_segment_matches_upstream_predictor(sam):
    from segment_anything import SamPredictor

    from samr1.engine.reference import predict_mask

    rng = np.random.default_rng()
    img = rng.integers(0, 256, (83, 131, 3), dtype=np.uint8)
    ans = _answer(rng, 83, 131, 2)
    engine = SamEngine(sam)
    mask = engine.segment(img, ans)
    pred = SamPredictor(sam)
    pred.set_image(img)
    ref = predict_mask(pred, ans, True)
    assert mask.shape == (83, 131) and mask.dtype == bool
    assert mask_iou_numpy(mask, ref) > 0.999 or (mask ^ ref).sum() <= 3
    bad = engine.segment(img, Answer(ok=False, reason="x"))
    assert bad.shape == (83, 131) and not bad.any()


def test_score_accepts_rle_and_pil_and_checks_sizes(sam):
    from PIL import Image

    rng = np.random.default_rng()
    images, masks, answers = _step(rng, [(50, 70)], 2)
    engine = SamEngine(sam)
    ref = engine.score(images, answers, masks)
    got = engine.score([Image.fromarray(images[0])] * 2, answers, [rle_encode(masks[0])] * 2)
    assert got == ref
    with pytest.raises(InputError, match=r"gt_masks\[1\]: mask is 49x70 but its image is 50x70"):
        engine.score(images, answers, [masks[0], masks[1][:49]])
    with pytest.raises(InputError, match="parallel"):
        engine.score(images, answers[:1], masks)


def test_empty_prediction_and_empty_gt_give_one(sam):
    # a box far outside any logit mass: with an empty GT and an empty prediction IoU is 1.0 by convention
    rng = np.random.default_rng()
    images, masks, answers = _step(rng, [(40, 40)], 1)
    engine = SamEngine(sam, threshold=1e9)  # nothing passes: every predicted mask is empty
    iou = engine.score(images, answers, [np.zeros((40, 40), bool)])
    assert iou == [1.0]
    assert engine.score(images, answers, masks) == [0.0]


def test_engine_rejects_non_sam():
    with pytest.raises(TypeError, match="segment_anything Sam"):
        SamEngine(torch.nn.Linear(2, 2))


def test_onnx_engine_rewards_equal_torch_engine(sam, tmp_path):
    rng = np.random.default_rng()
    images, masks, answers = _step(rng, [(90, 120), (75, 50)], 3)
    torch_iou = SamEngine(sam).score(images, answers, masks)
    onnx_engine = SamEngine(sam, encoder="onnx", cache_dir=str(tmp_path))
    assert onnx_engine.stats["encoder_backend"].startswith("onnxruntime")
    np.testing.assert_allclose(onnx_engine.score(images, answers, masks), torch_iou, atol=1e-3)


def test_engine_with_store_never_runs_the_encoder(sam, tmp_path):
    import json

    from PIL import Image

    from samr1.cli import main
    from samr1.store import StoreError

    rng = np.random.default_rng()
    images, masks, answers = _step(rng, [(60, 80), (70, 40)], 2)
    lines = []
    for k, img in enumerate(images[::2]):
        Image.fromarray(img).save(tmp_path / f"im{k}.png")
        Image.fromarray(masks[2 * k].astype(np.uint8) * 255).save(tmp_path / f"m{k}.png")
        lines.append(json.dumps({"image": f"im{k}.png", "query": "q", "mask": f"m{k}.png"}))
    (tmp_path / "data.jsonl").write_text("\n".join(lines) + "\n")
    assert main(["embed", "--data", str(tmp_path / "data.jsonl"), "--sam", "tiny", "--out", str(tmp_path / "store"),
                 "--no-progress", "--device", "cpu"]) == 0
    engine = SamEngine(sam, store=str(tmp_path / "store"))
    got = engine.score(images, answers, masks)
    assert engine.stats["encoder_images"] == 0 and engine.stats["store_hits"] == 2
    # fp16 embeddings: rewards agree with the fp32 path to within what a few boundary pixels change
    np.testing.assert_allclose(got, SamEngine(sam).score(images, answers, masks), atol=2e-2)
    with pytest.raises(StoreError, match="was built with SAM model"):
        SamEngine(load_sam("tiny", seed=5), store=str(tmp_path / "store"))


def test_extreme_aspect_ratio_is_an_input_error_and_reward_survives(sam):
    from samr1.rewards import SamR1Reward

    engine = SamEngine(sam)
    img = np.zeros((1, 3000, 3), np.uint8)
    gt = np.ones((1, 3000), bool)
    ans = parse_answer('<answer>{"bbox": [0, 0, 800, 840], "points_1": [5, 5], "points_2": [9, 9]}</answer>',
                       image_size=(1, 3000))
    with pytest.raises(InputError, match=r"images\[0\]: a 1x3000 image resizes to less than 1 px"):
        engine.score([img], [ans], [gt])
    good = '<think>x</think><answer>{"bbox": [0, 0, 800, 840], "points_1": [5, 5], "points_2": [9, 9]}</answer>'
    with pytest.warns(RuntimeWarning):
        rewards = SamR1Reward(engine)(None, [good], image=[img], mask=[gt])
    assert rewards == [2.0]  # format rewards only; the IoU part is 0 with a counted reason


@requires_cuda
def test_cuda_engine_equals_reference():
    """The CUDA engine scores with the Triton kernel: a silent fallback to torch fails this test."""
    from samr1.ops.backends import interpreting, triton_status

    ok, why = triton_status()
    if not ok or interpreting():
        pytest.skip(f"the CUDA engine's fast path needs compiled Triton: {why if not ok else 'TRITON_INTERPRET=1'}")
    sam = load_sam("tiny", seed=0, device="cuda")
    rng = np.random.default_rng()
    images, masks, answers = _step(rng, [(120, 160), (97, 61)], 3)
    engine = SamEngine(sam)
    got = engine.score(images, answers, masks)
    assert engine.stats["iou_backend"] == "triton", f"the IoU ran on {engine.stats['iou_backend']!r}, not Triton"
    assert engine.stats["backends"]["prompt_pack"] == "triton", engine.stats["backends"]
    np.testing.assert_allclose(got, score_reference(sam, images, answers, masks), atol=1e-3)


def test_stats_name_every_ops_backend(sam, monkeypatch):
    """stats["backends"] names what ran in the last score, by the same rule as the ops' select_backend:
    None before a score; after one, real backends; with the C++ extension switched off, the IoU on torch."""
    from samr1.ops import prompt_pack, select_backend

    rng = np.random.default_rng()
    images, masks, answers = _step(rng, [(57, 83), (40, 31)], 2)
    engine = SamEngine(sam)
    assert engine.stats["backends"] == {"prompt_pack": None, "mask_iou": None, "encoder": engine.encoder.name}
    engine.score(images, answers, masks)
    got = engine.stats["backends"]
    assert got == {"prompt_pack": prompt_pack.select_backend("auto", "cpu"), "mask_iou": select_backend("auto", "cpu"),
                   "encoder": engine.stats["encoder_backend"]}
    assert got["mask_iou"] == engine.stats["iou_backend"] and got["mask_iou"] in ("torch", "cpp")
    assert got["prompt_pack"] == "torch"  # "auto" never runs Triton on CPU tensors
    monkeypatch.setenv("SAMR1_DISABLE_CPP", "1")
    engine.score(images, answers, masks)
    assert engine.stats["backends"]["mask_iou"] == "torch" == select_backend("auto", "cpu")


def test_kept_logits_make_segments_masks_without_a_decode(sam, monkeypatch):
    """With ``keep_logits`` the engine keeps its last fused call's low-res logits: the masks made from them equal
    ``segment`` bit for bit (odd sizes, box-only and box + points answers), with no decoder call; rows are found
    by image content and prompt (other pixels, another prompt or a multi-object answer: None); one record,
    replaced by each call, none while the option is off. (Seeded: a prompt's logits in a batch differ from a
    lone decode's by round-off, which may in principle flip a pixel at the threshold.)"""
    import dataclasses
    import json

    rng = np.random.default_rng(5)
    images, masks, answers = _step(rng, [(97, 61), (33, 200), (120, 160)], 5)
    answers[4] = parse_answer("not an answer", image_size=(97, 61))  # not ok: not decoded, not kept
    engine = SamEngine(sam)
    engine.score(images, answers, masks)
    assert engine.kept_logits() is None  # off by default: nothing is held between calls
    engine.keep_logits = True
    engine.score(images, answers, masks)
    kept = engine.kept_logits()
    assert len(kept) == len(answers) - 1
    calls = []
    real = engine._decode
    monkeypatch.setattr(engine, "_decode", lambda *a, **k: calls.append(1) or real(*a, **k))
    got = kept.masks([im.copy() for im in images], answers)  # equal pixels, other objects: found by content
    assert calls == []
    expected = [engine.segment(im, a) if a.ok else None for im, a in zip(images, answers, strict=True)]
    assert got[4] is None and expected[4] is None
    for i, (g, e) in enumerate(zip(got, expected, strict=True)):
        assert g is None if e is None else (g.dtype == bool and np.array_equal(g, e)), i
    other = images[0].copy()
    other[0, 0, 0] ^= 1
    moved = dataclasses.replace(answers[0], bbox=tuple(v + 0.5 for v in answers[0].bbox))
    h, w = images[0].shape[:2]
    two = parse_answer("<think>t</think><answer>" + json.dumps([{"bbox_2d": [10, 10, 400, 400], "point_2d": [50, 60]},
                                                               {"bbox_2d": [300, 300, 800, 800]}]) + "</answer>",
                       image_size=(h, w), require_points=False)
    assert two.ok and len(two.objects) == 2
    assert kept.masks([other, images[0], images[0]], [answers[0], moved, two]) == [None, None, None]
    engine.score(images[:1], answers[:1], masks[:1])  # the next call replaces the record
    assert len(engine.kept_logits()) == 1 and engine.kept_logits().masks(images[1:2], answers[1:2]) == [None]
    engine.keep_logits = False
    engine.score(images, answers, masks)
    assert engine.kept_logits() is None  # switched off: the next call drops it


def _sam2_engine():
    import warnings

    from samr1.engine.sam2_engine import Sam2Engine

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return Sam2Engine(load_sam("sam2.1_hiera_t", seed=0), decode_chunk=8)


@pytest.mark.parametrize("kind", ["sam", pytest.param("sam2", marks=requires_sam2)])
def test_repeated_prompts_are_decoded_once(sam, kind, monkeypatch):
    """Answers that agree to the coordinate on the same image (a low-entropy group, a repeated object) share
    one decode; their IoUs and masks are exactly those of the distinct prompts decoded alone, in any order;
    the same prompt on another image is kept apart."""
    import dataclasses

    engine = SamEngine(sam) if kind == "sam" else _sam2_engine()
    rng = np.random.default_rng()
    images, masks, distinct = _step(rng, [(90, 130), (77, 51)], 5)
    # one prompt on both images (inside both; hand-built, so not tied to one image's size): kept apart
    distinct[0] = Answer(ok=True, bbox=(4.0, 6.0, 40.0, 50.0), points=[(20.0, 25.0)], labels=[1])
    distinct[5] = dataclasses.replace(distinct[0])
    picks = [int(k) for k in rng.integers(0, len(distinct), 23)]
    picks += [k for k in range(len(distinct)) if k not in picks]
    rng.shuffle(picks)
    calls = []
    decode = engine._decode_prompts
    monkeypatch.setattr(engine, "_decode_prompts", lambda *a: calls.append(len(a[-1])) or decode(*a))
    got = engine.score([images[k] for k in picks], [distinct[k] for k in picks], [masks[k] for k in picks])
    assert sum(calls) == len(distinct) and engine.stats["prompts_repeated"] == len(picks) - len(distinct)
    # the distinct prompts in the order the engine met them: the same decode batch, so the same values exactly
    order = list(dict.fromkeys(picks))
    alone = engine.score([images[k] for k in order], [distinct[k] for k in order], [masks[k] for k in order])
    want = dict(zip(order, alone, strict=True))
    assert got == [want[k] for k in picks]
    # and against decoding every prompt, repeats included (another decode batch: equal up to round-off)
    monkeypatch.setattr(engine, "_decode_distinct", lambda idx, ans, dec: dec(idx, ans))
    every = engine.score([images[k] for k in picks], [distinct[k] for k in picks], [masks[k] for k in picks])
    np.testing.assert_allclose(got, every, atol=1e-3)
    monkeypatch.undo()
    segs = engine.segment_batch([images[k] for k in picks], [distinct[k] for k in picks])
    ref = dict(zip(order, engine.segment_batch([images[k] for k in order], [distinct[k] for k in order]),
                   strict=True))
    for k, m in zip(picks, segs, strict=True):
        np.testing.assert_array_equal(m, ref[k])


@pytest.mark.parametrize("kind", ["sam", pytest.param("sam2", marks=requires_sam2)])
def test_prompts_the_dedupe_cannot_key_reach_the_decoder_as_before(sam, kind):
    """A hand-built answer with ``points=None`` decodes as a box-only prompt (repeated or not); a point that is
    not (x, y) is refused up front, naming the answer's own field, not an unpacking error from the dedupe."""
    engine = SamEngine(sam) if kind == "sam" else _sam2_engine()
    rng = np.random.default_rng()
    img = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    gt = np.zeros((60, 80), bool)
    gt[10:40, 20:60] = True
    boxed = Answer(ok=True, bbox=(20.0, 10.0, 59.0, 39.0), points=None)
    got = engine.score([img] * 3, [boxed] * 3, [gt] * 3)
    assert len(set(got)) == 1 and 0.0 <= got[0] <= 1.0
    listed = Answer(ok=True, bbox=(20.0, 10.0, 59.0, 39.0), points=[])
    assert engine.score([img], [listed], [gt]) == got[:1]
    bad = Answer(ok=True, bbox=(20.0, 10.0, 59.0, 39.0), points=[(30.0, 20.0, 1.0)], labels=[1])
    with pytest.raises(InputError, match=r"answers\[1\]\.points\[0\] must be \[x, y\]"):
        engine.score([img, img], [boxed, bad], [gt, gt])
    # points and labels held as a numpy array or a tensor read as the lists do (``points or ()`` raised)
    listed = Answer(ok=True, bbox=(20.0, 10.0, 59.0, 39.0), points=[(30.0, 20.0)], labels=[1])
    for pts, labs in ((np.array([[30.0, 20.0]]), np.array([1])), (torch.tensor([[30.0, 20.0]]), torch.tensor([1]))):
        held = Answer(ok=True, bbox=(20.0, 10.0, 59.0, 39.0), points=pts, labels=labs)
        assert engine.row_errors([img], [held], [gt]) == [None]
        assert engine.score([img], [held], [gt]) == engine.score([img], [listed], [gt])


def _malformed_prompts(rng):
    """(answer, the field its message must name after ``answers[i]``) for every way a hand-built prompt can be
    unreadable; the good numbers are drawn afresh."""
    from samr1.answer import AnswerObject

    x, y = float(rng.uniform(5, 30)), float(rng.uniform(5, 30))
    box = (x, y, x + 20.0, y + 15.0)
    pt = [(x + 5.0, y + 5.0)]
    multi_ok = AnswerObject(bbox=box, points=pt, labels=[1])
    return [
        (Answer(ok=True, bbox=box[:3], points=pt, labels=[1]), ".bbox"),
        (Answer(ok=True, bbox=(*box[:3], float("nan")), points=pt, labels=[1]), ".bbox"),
        (Answer(ok=True, bbox=("a", 1, 2, 3), points=pt, labels=[1]), ".bbox"),
        (Answer(ok=True, bbox=(box[2], box[1], box[0], box[3]), points=pt, labels=[1]), ".bbox"),  # x reversed
        (Answer(ok=True, bbox=(box[0], box[3], box[2], box[1]), points=pt, labels=[1]), ".bbox"),  # y reversed
        ("<answer>" + str(list(box)) + "</answer>", ": expected a samr1.answer.Answer"),  # a completion, unparsed
        ({"bbox": list(box)}, ": expected a samr1.answer.Answer"),
        (Answer(ok=True, bbox=box, points=[(x, y, 1.0)], labels=[1]), ".points[0]"),
        (Answer(ok=True, bbox=box, points=[pt[0], (float("inf"), y)], labels=[1, 1]), ".points[1]"),
        (Answer(ok=True, bbox=None, points=[(x, float("nan"))], labels=[1]), ".points[0]"),
        (Answer(ok=True, bbox=box, points=pt, labels=[1, 1]), ".labels"),
        (Answer(ok=True, bbox=box, points=pt, labels=[5]), ".labels[0]"),
        # (ok with no box and no point is the answer "no object"; one object of a list can still be empty)
        (Answer(ok=True, bbox=box, points=pt, labels=[1], objects=(multi_ok, AnswerObject(bbox=None))),
         ".objects[1]: an ok answer needs a box or at least one point"),
        (Answer(ok=True, bbox=box, points=pt, labels=[1], objects=(
            multi_ok, AnswerObject(bbox=box, points=[(x, y, 3.0)], labels=[1]))), ".objects[1].points[0]"),
    ]


@pytest.mark.parametrize("kind", ["sam", pytest.param("sam2", marks=requires_sam2)])
def test_a_malformed_hand_built_prompt_is_named_by_its_own_index(sam, kind):
    """Every unreadable prompt, at a random position among failed and good answers, is refused before anything
    is encoded, by score, segment_batch and row_errors alike, with a message naming the answer's own index
    (the decoder used to name its position among the decoded prompts; SAM 2 decoded a NaN into a mask)."""
    from samr1.answer import parse_answer

    engine = SamEngine(sam) if kind == "sam" else _sam2_engine()
    rng = np.random.default_rng()
    img = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    gt = np.zeros((60, 80), bool)
    gt[10:40, 20:60] = True
    failed = parse_answer("no answer here", (60, 80))
    good = Answer(ok=True, bbox=(20.0, 10.0, 59.0, 39.0), points=[(30.0, 20.0)], labels=[1])
    for bad, where in _malformed_prompts(rng):
        n = int(rng.integers(2, 7))
        answers = [failed if rng.random() < 0.5 else good for _ in range(n)]
        i = int(rng.integers(0, n + 1))
        answers.insert(i, bad)
        want = re.escape(f"answers[{i}]{where}")
        calls = engine.stats["score_calls"]
        encoded = engine.stats["encoder_images"]
        with pytest.raises(InputError, match=want):
            engine.score([img] * (n + 1), answers, [gt] * (n + 1))
        with pytest.raises(InputError, match=want):
            engine.segment_batch([img] * (n + 1), answers)
        errors = engine.row_errors([img] * (n + 1), answers, [gt] * (n + 1))
        assert [k for k, e in enumerate(errors) if e is not None] == [i]
        assert re.match(want, str(errors[i]))
        assert engine.stats["score_calls"] == calls and engine.stats["encoder_images"] == encoded  # refused up front



@pytest.mark.parametrize("kind", ["sam", pytest.param("sam2", marks=requires_sam2)])
def test_an_answer_for_another_image_size_or_outside_its_image_is_refused(sam, kind):
    """An answer parsed for (W, H) (PIL's ``image.size``) instead of (H, W), or a hand-built prompt in
    model-frame numbers, is stretched or off the image: it used to score a plausible wrong IoU. Refused once the
    image is loaded, before any decode, by score (fused and multi-object paths), segment_batch and row_errors,
    naming the answer and its image; the same answer parsed for the right size scores as before."""
    from PIL import Image

    engine = SamEngine(sam) if kind == "sam" else _sam2_engine()
    rng = np.random.default_rng()
    for _ in range(3):
        h, w = (int(v) for v in rng.choice(np.arange(40, 97), 2, replace=False))  # never square
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        pil = Image.fromarray(img)
        gt = np.zeros((h, w), bool)
        gt[h // 4: h // 2, w // 4: w // 2] = True
        x1, y1 = int(rng.integers(0, 300)), int(rng.integers(0, 300))
        one = f'{{"bbox_2d": [{x1}, {y1}, {x1 + 200}, {y1 + 300}], "point_2d": [{x1 + 50}, {y1 + 50}]}}'
        texts = {"single": f"<answer>{one}</answer>", "multi": f"<answer>[{one}, {one.replace('50', '60')}]</answer>"}
        for text in texts.values():
            right = parse_answer(text, (h, w))
            swapped = parse_answer(text, pil.size)  # (W, H)
            assert right.ok and swapped.ok and right.image_size == (h, w) and swapped.image_size == (w, h)
            n = int(rng.integers(1, 5))
            i = int(rng.integers(0, n + 1))
            answers = [right] * n
            answers.insert(i, swapped)
            images = [pil if rng.random() < 0.5 else img for _ in answers]
            want = re.escape(f"answers[{i}] was parsed for a {w}x{h} image (H x W) but images[{i}] is {h}x{w}")
            with pytest.raises(InputError, match=want):  # the size is the whole answer's, on every path
                engine.score(images, answers, [gt] * len(answers))
            with pytest.raises(InputError, match=want):
                engine.segment_batch(images, answers)
            errors = engine.row_errors(images, answers, [gt] * len(answers))
            assert [k for k, e in enumerate(errors) if e is not None] == [i] and re.match(want, str(errors[i]))
            good = engine.score(images[:i] + images[i + 1:], answers[:i] + answers[i + 1:], [gt] * n)
            assert all(0.0 <= v <= 1.0 for v in good)
        # model-frame numbers given as original pixels: a box or a point off the image
        off = [Answer(ok=True, bbox=(1.0, 1.0, w + 5.0, h - 1.0), points=[(2.0, 2.0)], labels=[1]),
               Answer(ok=True, bbox=(1.0, 1.0, 9.0, 9.0), points=[(2.0, h + 0.5)], labels=[1])]
        for bad, where in zip(off, (".bbox", ".points[0]"), strict=True):
            want = re.escape(f"answers[1]{where}") + ".*" + re.escape(f"lies outside images[1] ({h}x{w}, H x W)")
            with pytest.raises(InputError, match=want):
                engine.score([img, img], [parse_answer(texts["single"], (h, w)), bad], [gt, gt])
            errors = engine.row_errors([img, img], [parse_answer(texts["single"], (h, w)), bad], [gt, gt])
            assert errors[0] is None and re.match(want, str(errors[1]))
        # one object of a multi-object answer off the image is named by its object index
        from samr1.answer import AnswerObject

        inside = AnswerObject(bbox=(1.0, 1.0, 9.0, 9.0), points=[(2.0, 2.0)], labels=[1])
        outside = AnswerObject(bbox=(1.0, 1.0, 9.0, 9.0), points=[(w + 3.0, 2.0)], labels=[1])
        multi = Answer(ok=True, bbox=inside.bbox, points=inside.points, labels=[1], objects=(inside, outside))
        with pytest.raises(InputError, match=re.escape("answers[0].objects[1].points[0]")):
            engine.score([img], [multi], [gt])
        with pytest.raises(InputError, match=re.escape("answers[0].objects[1].points[0]")):
            engine.segment_batch([img], [multi])
