"""SAM 2 kinds: building, safe checkpoints, the missing-extra message, and the engine against the
per-completion ``SAM2ImagePredictor`` loop (real sam2 modules, random weights, small images)."""

import sys
import warnings

import numpy as np
import pytest
import torch
from _markers import requires_sam2

from samr1.answer import Answer
from samr1.sam import CheckpointError, ModelError, load_sam, model_id
from samr1.sam.sam2_build import SAM2_KINDS

KIND = "sam2.1_hiera_t"  # the smallest kind: 39 M parameters, builds in seconds on the CPU


@pytest.fixture(scope="module")
def model():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return load_sam(KIND, seed=0)


@pytest.fixture(scope="module")
def step():
    """Two images of different aspect ratios (odd sizes), each repeated as an equal copy, with box-only,
    box + points and points-only prompts (a negative click included)."""
    rng = np.random.default_rng()
    images, masks, answers = [], [], []
    for h, w in [(96, 128), (77, 53)]:
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        gt = np.zeros((h, w), dtype=bool)
        gt[h // 4: 3 * h // 4 + 1, w // 5: 4 * w // 5 + 1] = True
        for k in range(3):
            x1, x2 = sorted(rng.uniform(0, w, 2))
            y1, y2 = sorted(rng.uniform(0, h, 2))
            pts = [(float(rng.uniform(0, w - 1)), float(rng.uniform(0, h - 1))) for _ in range(k + 1)]
            box = (float(x1), float(y1), float(x2), float(y2))
            labels = [1] * len(pts)
            if k == 2:
                labels[-1] = 0
            a = [Answer(ok=True, bbox=box),
                 Answer(ok=True, bbox=box, points=pts, labels=labels),
                 Answer(ok=True, bbox=None, points=pts, labels=labels)][k]
            images.append(img if k != 1 else img.copy())  # equal pixels, another object: still one encode
            masks.append(gt)
            answers.append(a)
    images.append(images[0])
    masks.append(masks[0])
    answers.append(Answer(ok=False, reason="no_answer"))
    return images, masks, answers


@pytest.fixture(scope="module")
def engine(model):
    from samr1.engine.sam2_engine import Sam2Engine

    return Sam2Engine(model, decode_chunk=8)  # prompts of both images in one decoder call, as on a GPU


@requires_sam2
def test_every_kind_has_a_shipped_config():
    from samr1.sam.sam2_build import sam2_config

    assert set(SAM2_KINDS) == {f"sam2{v}_hiera_{s}" for v in ("", ".1") for s in ("t", "s", "b+", "l")}
    dims = {k: sam2_config(k).model.image_encoder.trunk.embed_dim for k in SAM2_KINDS}
    assert dims["sam2_hiera_t"] == dims["sam2.1_hiera_s"] == 96 and dims["sam2_hiera_l"] == 144


@requires_sam2
def test_random_weights_warn_and_have_an_id(model):
    from sam2.modeling.sam2_base import SAM2Base

    assert isinstance(model, SAM2Base) and model.samr1_kind == KIND
    assert model_id(model) == f"{KIND}:random:seed=0"


@requires_sam2
def test_official_checkpoint_layout_round_trips(model, tmp_path):
    path = tmp_path / "ckpt.pt"
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    first = next(k for k in sd if k.endswith("weight"))
    sd[first] = torch.randn_like(sd[first])  # differs from the seed-0 weights: proves the file was loaded
    torch.save({"model": sd}, path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # a checkpoint load must not warn about random weights
        loaded = load_sam(KIND, checkpoint=path)
    assert torch.equal(loaded.state_dict()[first], sd[first])
    assert model_id(loaded).startswith(f"{KIND}:") and "random" not in model_id(loaded)


@requires_sam2
def test_unsafe_and_missing_checkpoints_are_refused(tmp_path):
    bad = tmp_path / "evil.pt"
    torch.save({"model": {"w": torch.zeros(1)}, "hook": print}, bad)
    with pytest.raises(CheckpointError, match="refused"):
        load_sam(KIND, checkpoint=bad)
    with pytest.raises(CheckpointError, match="not found"):
        load_sam(KIND, checkpoint=tmp_path / "nope.pt")
    mismatched = tmp_path / "v1.pt"
    torch.save({"model": {"image_encoder.patch_embed.proj.weight": torch.zeros(2)}}, mismatched)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        with pytest.raises(CheckpointError, match="does not match kind"):
            load_sam("sam2_hiera_t", checkpoint=mismatched)


def test_without_the_extra_one_line_names_it(monkeypatch):
    for name in [m for m in sys.modules if m == "sam2" or m.startswith("sam2.")]:
        monkeypatch.setitem(sys.modules, name, None)  # import sam2 now raises ImportError
    monkeypatch.setitem(sys.modules, "sam2", None)
    from samr1.sam import check_kind

    for call in (lambda: load_sam("sam2_hiera_l"), lambda: check_kind("sam2.1_hiera_b+")):  # CLI checks up front
        with pytest.raises(ModelError) as info:
            call()
        msg = str(info.value)
        assert "samr1[sam2]" in msg and "\n" not in msg


@requires_sam2
def test_kind_check_knows_sam2_kinds():
    from samr1.sam import check_kind

    assert check_kind("sam2_hiera_b+") is None  # accepted (no SamSpec: the config ships with sam2)
    with pytest.raises(ModelError, match="sam2.1_hiera_l"):  # the list of kinds names the SAM 2 ones too
        check_kind("sam3_hiera_l")


def _trained_looking(model, scale: float, seed: int):
    """Fresh decoder output layers whose logits reach tens (as a trained SAM 2's do) and whose predicted
    scores differ between the three masks. Only the decoder changes: cached image features stay valid."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mlp in model.sam_mask_decoder.output_hypernetworks_mlps:
            last = mlp.layers[-1]
            last.weight.copy_(torch.randn(last.weight.shape, generator=g) * scale / last.weight.shape[1] ** 0.5)
            last.bias.copy_(torch.randn(last.bias.shape, generator=g) * scale)
        head = model.sam_mask_decoder.iou_prediction_head.layers[-1]
        head.weight.copy_(torch.randn(head.weight.shape, generator=g))


@requires_sam2
def test_engine_equals_predictor_loop_random_and_trained(model, engine, step):
    """Engine vs the per-completion SAM2ImagePredictor loop (set_image, predict(multimask_output=True),
    best score, IoU at the original size), with random and with trained-looking decoder weights. The loop
    sets each distinct image once and predicts under both weight settings (only the decoder changes)."""
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    from samr1.engine.reference_sam2 import predict_mask_sam2
    from samr1.geometry import mask_iou_numpy

    images, masks, answers = step
    random_w = {k: v.clone() for k, v in model.sam_mask_decoder.state_dict().items()}
    _trained_looking(model, scale=20.0, seed=int(np.random.default_rng().integers(1 << 30)))
    trained_w = {k: v.clone() for k, v in model.sam_mask_decoder.state_dict().items()}
    want = {"random": [0.0] * len(answers), "trained": [0.0] * len(answers)}
    pred = SAM2ImagePredictor(model)
    try:
        for first in (0, 3):  # the two distinct images; rows first..first+2 use it
            pred.set_image(images[first])
            for name, weights in (("random", random_w), ("trained", trained_w)):
                model.sam_mask_decoder.load_state_dict(weights)
                for i in range(first, first + 3):
                    want[name][i] = mask_iou_numpy(predict_mask_sam2(pred, answers[i]), masks[i])
        for name, weights in (("random", random_w), ("trained", trained_w)):
            model.sam_mask_decoder.load_state_dict(weights)
            got = engine.score(images, answers, masks)
            assert np.abs(np.array(got) - np.array(want[name])).max() <= 5e-3, (name, got, want[name])
            assert got[-1] == 0.0  # an answer that is not ok
        engine.decode_chunk = 1  # the CPU default (one prompt per decoder call): same IoUs, no new encode
        got = engine.score(images, answers, masks)
        assert np.abs(np.array(got) - np.array(want["trained"])).max() <= 5e-3, (got, want["trained"])
        # the trained-looking case means something: logits reach tens and masks differ between prompts
        idx, entries = engine._lookup(images[:1], ["images[0]"])
        assert engine._decode(entries, idx, answers[:1]).abs().max() > 10
        assert len({round(v, 4) for v in want["trained"][:-1]}) > 2
        # one encode per distinct image over both calls (equal copies included), the second call all hits
        assert engine.stats["encoder_images"] == 2 and engine.stats["cache_hits"] >= 2
        # stats name what ran: the encoder's backend and the IoU body the one "auto" rule picks here
        from samr1.ops import backends

        want_iou = "cpp" if backends.cpp_status()[0] else "torch"
        assert engine.stats["iou_backend"] == engine.stats["backends"]["mask_iou"] == want_iou
        assert engine.stats["encoder_backend"] == engine.stats["backends"]["encoder"] == "torch-fp32"
    finally:
        model.sam_mask_decoder.load_state_dict(random_w)
        engine.decode_chunk = 8


@requires_sam2
def test_segment_and_reference_loop_agree(model, engine, step):
    from samr1.engine.reference_sam2 import score_reference_sam2
    from samr1.geometry import mask_iou_numpy

    images, masks, answers = step
    rows = [3, 4, 5, 6]  # one image, box / box + points / points-only, and a failed answer
    want = score_reference_sam2(model, [images[3]] * 4, [answers[i] for i in rows], [masks[3]] * 4)
    got = [mask_iou_numpy(engine.segment(images[3], answers[i]), masks[3]) for i in rows[:3]]
    assert np.abs(np.array(got) - np.array(want[:3])).max() <= 5e-3, (got, want)
    m = engine.segment(images[3], answers[3])
    assert m.shape == images[3].shape[:2] and m.dtype == bool
    assert not engine.segment(images[3], Answer(ok=False, reason="x")).any()


@requires_sam2
def test_engine_rejects_what_it_cannot_do(model, engine, step):
    from samr1.engine.sam2_engine import Sam2Engine
    from samr1.io import InputError

    with pytest.raises(TypeError, match="SAM 2 model"):
        Sam2Engine(load_sam("tiny"))
    with pytest.raises(ValueError, match="encoder"):
        Sam2Engine(model, encoder="openvino")
    with pytest.raises(ValueError, match="compile=True applies to the torch backend only"):
        Sam2Engine(model, encoder="onnx", compile=True)  # refused before any export
    images, masks, answers = step
    eng = Sam2Engine(model, cache_bytes=0)
    with pytest.raises(InputError, match="parallel"):
        eng.score(images[:2], answers[:1], masks[:1])
    with pytest.raises(InputError, match=r"gt_masks\[0\].*96x128"):  # the engine's image is cached
        engine.score(images[:1], answers[:1], [np.zeros((5, 5), bool)])


@requires_sam2
def test_sam_engine_hands_sam2_models_to_the_sam2_engine(model, engine, step):
    from samr1.engine import SamEngine
    from samr1.engine.sam2_engine import Sam2Engine

    eng = SamEngine(model, cache_bytes=1 << 30, multimask=True)
    assert isinstance(eng, Sam2Engine) and eng.cache_bytes == 1 << 30
    assert isinstance(SamEngine(load_sam("tiny")), SamEngine)  # SAM v1 models are unchanged
    images, masks, answers = step
    eng._cache = engine._cache  # share the fixture's encoded images: the decode + IoU path is what is compared
    assert np.abs(np.array(eng.score(images, answers, masks)) - engine.score(images, answers, masks)).max() <= 5e-3
