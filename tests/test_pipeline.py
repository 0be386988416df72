"""ReasoningSegmenter with a real (tiny, random) Qwen2.5-VL built in code, real transformers generation, and
the shipped tiny-shapes SAM. An untrained policy writes byte soup, so the answer-bearing tests fix its
output through generation itself (samr1.pipeline.ScriptedText, a prefix_allowed_tokens_fn)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _markers import requires_serve

from samr1.answer import parse_answer
from samr1.pipeline import ReasoningSegmenter, ScriptedText
from samr1.shapes.scenes import make_scene

TEMPLATE = "Find {query}."  # short: the byte-level tiny tokenizer makes one token per character


@pytest.fixture(scope="module")
def policy(tiny_policy):
    return tiny_policy


@pytest.fixture(scope="module")
def engine(shapes_engine):
    return shapes_engine


def answer_text(mask: np.ndarray, frame=(840, 840)) -> str:
    """A Seg-Zero-style completion for ``mask``'s object, coordinates in the policy frame."""
    h, w = mask.shape
    ys, xs = np.nonzero(mask)
    sx, sy = frame[1] / w, frame[0] / h
    box = [int(xs.min() * sx), int(ys.min() * sy), int((xs.max() + 1) * sx), int((ys.max() + 1) * sy)]
    i = len(xs) // 2
    return f'<think>ok</think><answer>{{"bbox":{json.dumps(box)},"points":[[{int(xs[i] * sx)},{int(ys[i] * sy)}]]}}</answer>'


def scenes(rng: np.random.Generator, n: int):
    out = []
    for _ in range(n):
        sc = make_scene(int(rng.integers(1 << 30)), size=(int(rng.integers(120, 220)), int(rng.integers(120, 220))),
                        n_objects=2)
        out.append((sc.image, sc.objects[-1].mask, sc.objects[-1].query))
    return out


def test_segment_with_scripted_answers_matches_the_engine(policy, engine):
    _, model, processor = policy
    rng = np.random.default_rng()
    (img_a, mask_a, q_a), (img_b, mask_b, q_b) = scenes(rng, 2)
    texts = [answer_text(mask_a), "<think>hmm</think> no answer here", answer_text(mask_b)]
    seg = ReasoningSegmenter(model, processor, engine, template=TEMPLATE, max_new_tokens=96)
    res = seg.segment_batch([img_a, img_a, img_b], [q_a, "something", q_b],
                            prefix_allowed_tokens_fn=ScriptedText(processor.tokenizer, texts))
    assert [r.text for r in res] == texts  # generation really produced (only) the scripted text
    for r, img, text in ((res[0], img_a, texts[0]), (res[2], img_b, texts[2])):
        assert r.ok and r.think == "ok" and r.mask.shape == img.shape[:2]
        ans = parse_answer(text, image_size=img.shape[:2])
        assert r.answer.bbox == pytest.approx(ans.bbox)
        np.testing.assert_array_equal(r.mask, engine.segment(img, ans))  # the engine's own mask, same size
    bad = res[1]
    assert not bad.ok and bad.mask is None and bad.answer.code == "no_answer_block"
    j = bad.to_json()
    assert j["ok"] is False and j["mask"] is None and j["reason"].startswith("no_answer_block")
    for k in ("preprocess_s", "generate_s", "encode_s", "decode_s", "postprocess_s", "sam_after_generate_s", "total_s"):
        assert res[0].timings[k] >= 0
    # single-request mode gives the batch's answer for the same request
    one = seg.segment(img_b, q_b, prefix_allowed_tokens_fn=ScriptedText(processor.tokenizer, [texts[2]]))
    np.testing.assert_array_equal(one.mask, res[2].mask)
    seg.close()


@pytest.mark.parametrize("overlap", [False, True])
def test_an_image_sam_refuses_fails_its_own_row_only(policy, engine, overlap):
    """A 1 x 3000 image (SAM's resize makes its short side 0 px) in a batch: its row fails with reason
    bad_image naming it, and the others get exactly the masks they get without it (one encode, one decode)."""
    _, model, processor = policy
    rng = np.random.default_rng()
    (img_a, mask_a, q_a), (img_b, mask_b, q_b) = scenes(rng, 2)
    thin = rng.integers(0, 255, (1, 3000, 3), dtype=np.uint8)
    texts = [answer_text(mask_a), answer_text(np.ones((1, 3000), bool)), answer_text(mask_b)]
    seg = ReasoningSegmenter(model, processor, engine, template=TEMPLATE, max_new_tokens=96, overlap=overlap)
    res = seg.segment_batch([img_a, thin, img_b], [q_a, "the line", q_b],
                            prefix_allowed_tokens_fn=ScriptedText(processor.tokenizer, texts))
    assert not res[1].ok and res[1].answer.code == "bad_image" and "images[1]" in res[1].answer.reason
    for r, img, text in ((res[0], img_a, texts[0]), (res[2], img_b, texts[2])):
        assert r.ok
        np.testing.assert_array_equal(r.mask, engine.segment(img, parse_answer(text, image_size=img.shape[:2])))
    seg.close()


def test_encoding_overlaps_generation_only_when_asked(policy):
    from samr1.engine import SamEngine
    from samr1.sam import load_sam

    _, model, processor = policy
    rng = np.random.default_rng()
    (img, mask, q), = scenes(rng, 1)
    text = answer_text(mask)
    out = {}
    for overlap in (True, False):
        eng = SamEngine(load_sam("tiny-shapes"))  # a cold cache: the image must really be encoded
        seg = ReasoningSegmenter(model, processor, eng, template=TEMPLATE, overlap=overlap, max_new_tokens=96)
        out[overlap] = seg.segment(img, q, prefix_allowed_tokens_fn=ScriptedText(processor.tokenizer, [text]))
        assert eng.stats["encoder_images"] == 1
        seg.close()
    assert out[True].timings["encode_overlap_s"] > 0  # the encoder ran while the policy generated
    assert out[False].timings["encode_overlap_s"] == 0
    np.testing.assert_array_equal(out[True].mask, out[False].mask)


def test_untrained_policy_fails_to_parse_without_crashing(policy, engine):
    _, model, processor = policy
    (img, _, q), = scenes(np.random.default_rng(), 1)
    res = ReasoningSegmenter(model, processor, engine, template=TEMPLATE, max_new_tokens=6).segment(img, q)
    assert not res.ok and res.mask is None and res.answer.reason


def test_bad_arguments_say_what_to_fix(policy, engine):
    from samr1.io import InputError

    _, model, processor = policy
    with pytest.raises(ValueError, match="query"):
        ReasoningSegmenter(model, processor, engine, template="no placeholder")
    with pytest.raises(ValueError, match="max_new_tokens"):
        ReasoningSegmenter(model, processor, engine, max_new_tokens=0)
    with pytest.raises(TypeError, match="SamEngine"):
        ReasoningSegmenter(model, processor, object())
    seg = ReasoningSegmenter(model, processor, engine, template=TEMPLATE)
    with pytest.raises(InputError, match="parallel"):
        seg.segment_batch([np.zeros((8, 8, 3), np.uint8)], ["a", "b"])
    with pytest.raises(InputError, match=r"queries\[0\]"):
        seg.segment(np.zeros((8, 8, 3), np.uint8), "  ")
    with pytest.raises(InputError, match=r"images\[0\]"):
        seg.segment(np.zeros((8, 8), np.float32), "x")


# ----------------------------------------------------------------------------- samr1 segment --model
def _save_png(path, image):
    from PIL import Image

    Image.fromarray(image).save(path)
    return str(path)


def test_cli_segment_with_a_policy_that_does_not_parse_exits_7_and_writes_nothing(policy, tmp_path, capsys):
    from samr1.cli import main
    from samr1.cli.segment_policy import EXIT_NO_ANSWER

    path, _, _ = policy
    (img, _, q), = scenes(np.random.default_rng(), 1)
    image = _save_png(tmp_path / "in.png", img)
    out = tmp_path / "mask.png"
    base = ["segment", "--image", image, "--query", q, "--model", path, "--sam", "tiny-shapes", "--out", str(out),
            "--template", TEMPLATE, "--max-new-tokens", "4", "--device", "cpu"]
    assert main(base) == EXIT_NO_ANSWER == 7
    err = capsys.readouterr().err
    assert "did not parse" in err and "raw answer" in err and not out.exists()
    assert main([*base, "--json"]) == 7
    j = json.loads(capsys.readouterr().out)
    assert j["ok"] is False and j["mask"] is None and j["reason"] and isinstance(j["text"], str)
    assert not out.exists() and not (tmp_path / "mask.overlay.png").exists()
    # a missing policy folder is a model error (exit 4) naming the path; --query without --model is usage (2)
    assert main([*base[:6], str(tmp_path / "nope"), *base[7:]]) == 4
    assert "nope: no such folder" in capsys.readouterr().err
    assert main(["segment", "--image", image, "--query", q, "--out", str(out)]) == 2


def test_cli_segment_with_a_policy_writes_mask_overlay_and_json(policy, engine, tmp_path, capsys):
    from PIL import Image

    from samr1.cli import build_parser
    from samr1.cli.segment_policy import run_policy
    from samr1.io import rle_decode

    path, model, processor = policy
    (img, mask, q), = scenes(np.random.default_rng(), 1)
    image = _save_png(tmp_path / "in.png", img)
    text = answer_text(mask)
    seg = ReasoningSegmenter(model, processor, engine, template=TEMPLATE, max_new_tokens=96)
    for as_json in (False, True):
        out = tmp_path / f"m{int(as_json)}.png"
        argv = ["segment", "--image", image, "--query", q, "--model", path, "--out", str(out)]
        args = build_parser().parse_args(argv + (["--json"] if as_json else []))
        rc = run_policy(args, seg, prefix_allowed_tokens_fn=ScriptedText(processor.tokenizer, [text]))
        assert rc == 0
        written = np.asarray(Image.open(out)) > 0
        assert written.shape == img.shape[:2]
        np.testing.assert_array_equal(written, engine.segment(img, parse_answer(text, image_size=img.shape[:2])))
        assert (tmp_path / f"m{int(as_json)}.overlay.png").exists()
        printed = capsys.readouterr().out
        if as_json:
            np.testing.assert_array_equal(rle_decode(json.loads(printed)["mask"]), written)
        else:
            assert "reasoning: ok" in printed and "timings:" in printed
    seg.close()


@requires_serve
def test_server_segment_with_a_query_runs_the_policy(policy, engine):
    from samr1.client import SamR1Client
    from samr1.serve import ServerThread, create_app

    _, model, processor = policy
    (img, _, q), = scenes(np.random.default_rng(), 1)
    seg = ReasoningSegmenter(model, processor, engine, template=TEMPLATE, max_new_tokens=5)
    expected = seg.segment(img, q)  # greedy: the server must give the same completion
    with ServerThread(create_app(engine, segmenter=seg)) as srv:
        out = SamR1Client(srv.url).segment(img, query=q)
    # an untrained policy's answer does not parse: the request was fine, so 200 with ok false and the reason
    assert out["ok"] is False and out["mask"] is None and out["text"] == expected.text
    assert out["reason"] == expected.answer.reason and out["size"] == list(img.shape[:2])
    assert out["timings"]["generate_s"] >= 0 and out["timings"]["total_s"] >= out["timings"]["generate_s"]
