"""SAM 2 image-encoder backends (samr1.sam.sam2_encoder) against SAM2ImagePredictor.set_image, the engine
on each backend, and the artefact cache for the SAM 2 export (real sam2 modules, random weights).

One ONNX export per module (Hiera-T: ~1 minute on the 2-core CPU) in a private cache root. Every image is
squashed to the 1024 frame, so small images cost as much to encode as large ones: few images here.

Tolerances: the torch backend vs ``SAM2ImagePredictor._features``: 1e-5 x max|ref| (the same modules on the
same input). ONNX Runtime (CPU) vs torch fp32, per output: 1e-4 x max|ref| elementwise (observed ~1e-6 x;
kernel round-off through 12 Hiera blocks). Engine on ONNX Runtime vs on torch: IoU within 5e-3 per prompt.
TensorRT fp16 / torch bf16 vs fp32 (GPU only): 2e-2 / 5e-2 relative (Frobenius).
"""

from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pytest
import torch

from samr1 import artifacts
from samr1.answer import Answer
from samr1.sam import load_sam
from samr1.sam.encoder import tensorrt_available

pytest.importorskip("sam2", reason="the sam2 extra is not installed (SAM2_BUILD_CUDA=0 pip install 'samr1[sam2]')")

from samr1.sam.sam2_encoder import OUTPUT_NAMES, export_sam2_onnx, make_sam2_encoder  # noqa: E402

KIND = "sam2.1_hiera_t"
_trt_ok, _trt_reason = tensorrt_available()
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(scope="module")
def model():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # random weights: expected here
        return load_sam(KIND, seed=0)


@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory, model):
    """The one ONNX export of this module, in a private cache root."""
    root = tmp_path_factory.mktemp("samr1-sam2-cache")
    art = export_sam2_onnx(model, cache_dir=root)
    assert art.built and art.file("sam2_encoder.onnx").exists()
    return root


@pytest.fixture(scope="module")
def images():
    """Two small images of odd, different aspect ratios (fresh pixels each run)."""
    rng = np.random.default_rng()
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in [(37, 61), (90, 47)]]


@pytest.fixture(scope="module")
def torch_feats(model, images):
    """The torch backend's features of both images, in one batch of 2."""
    enc = make_sam2_encoder(model, max_batch=2)
    assert enc.name == "torch-fp32" and enc.artifact is None
    return enc.encode(images)


def _close(got: torch.Tensor, ref: torch.Tensor, rtol: float) -> float:
    """max |got - ref| after asserting it is <= rtol x max |ref| (and that the shapes agree)."""
    assert got.shape == ref.shape, (got.shape, ref.shape)
    err = float((got.float() - ref.float()).abs().max())
    assert err <= rtol * float(ref.abs().max()), (err, float(ref.abs().max()))
    return err


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


def test_torch_backend_equals_the_predictors_features(model, images, torch_feats):
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    pred = SAM2ImagePredictor(model)
    # the second image of the batch of 2: a batch mix-up in the un-flattening would show there (one
    # set_image only: a Hiera pass is seconds on this CPU)
    pred.set_image(images[1])
    want = [*pred._features["high_res_feats"], pred._features["image_embed"]]
    for name, got, ref in zip(OUTPUT_NAMES, torch_feats, want, strict=True):
        assert got.dtype == torch.float32, name
        _close(got[1:2], ref, 1e-5)
    assert [tuple(f.shape[1:]) for f in torch_feats] == [(32, 256, 256), (64, 128, 128), (256, 64, 64)]


def test_onnx_runtime_matches_torch_for_all_three_outputs(model, images, torch_feats, onnx_cache):
    enc = make_sam2_encoder(model, backend="onnx", cache_dir=onnx_cache, max_batch=2)
    assert enc.name == "onnxruntime-cpu" and not enc.artifact.built  # the module's export, loaded
    got = enc.encode(images)  # one call with batch 2: the export's batch dimension is dynamic
    for name, g, ref in zip(OUTPUT_NAMES, got, torch_feats, strict=True):
        assert g.device.type == "cpu" and g.dtype == torch.float32, name
        _close(g, ref, 1e-4)
    one = make_sam2_encoder(model, backend="onnx", cache_dir=onnx_cache, max_batch=1)
    assert one.artifact.path == enc.artifact.path  # the batch limit is not part of the ONNX key


def _step(img, rng, repeats: int):
    """``repeats`` x (a box, a box + 2 clicks (one negative), a points-only prompt) on one image, with a
    rectangle as the ground truth."""
    imgs, answers, masks = [], [], []
    h, w = img.shape[:2]
    gt = np.zeros((h, w), dtype=bool)
    gt[h // 4: 3 * h // 4 + 1, w // 5: 4 * w // 5 + 1] = True
    for _ in range(repeats):
        x1, x2 = sorted(rng.uniform(0, w, 2))
        y1, y2 = sorted(rng.uniform(0, h, 2))
        box = (float(x1), float(y1), float(x2), float(y2))
        pts = [(float(rng.uniform(0, w - 1)), float(rng.uniform(0, h - 1))) for _ in range(2)]
        for a in (Answer(ok=True, bbox=box), Answer(ok=True, bbox=box, points=pts, labels=[1, 0]),
                  Answer(ok=True, bbox=None, points=pts[:1], labels=[1])):
            imgs.append(img)
            answers.append(a)
            masks.append(gt)
    return imgs, answers, masks


@pytest.fixture
def trained_looking(model):
    """Decoder output layers whose logits reach tens (as a trained SAM 2's do), so that masks vary between
    prompts and a feature error would show in the IoUs; restored afterwards."""
    dec = model.sam_mask_decoder
    saved = {k: v.clone() for k, v in dec.state_dict().items()}
    g = torch.Generator().manual_seed(int(np.random.default_rng().integers(1 << 30)))
    with torch.no_grad():
        for mlp in dec.output_hypernetworks_mlps:
            last = mlp.layers[-1]
            last.weight.copy_(torch.randn(last.weight.shape, generator=g) * 20.0 / last.weight.shape[1] ** 0.5)
            last.bias.copy_(torch.randn(last.bias.shape, generator=g) * 20.0)
    yield
    dec.load_state_dict(saved)


def test_engine_on_onnx_equals_engine_on_torch(model, images, onnx_cache, trained_looking):
    from samr1.engine.sam2_engine import Sam2Engine

    # one image (each engine encodes it once; both images' features are compared above), 6 prompts
    imgs, answers, masks = _step(images[1], np.random.default_rng(), repeats=2)
    ref = Sam2Engine(model, encoder="torch")
    eng = Sam2Engine(model, encoder="onnx", cache_dir=onnx_cache)
    assert eng.encoder.name == "onnxruntime-cpu" and not eng.encoder.artifact.built
    want, got = ref.score(imgs, answers, masks), eng.score(imgs, answers, masks)
    assert eng.stats["encoder_images"] == 1  # the image encoded once, by ONNX Runtime
    assert np.abs(np.array(got) - np.array(want)).max() <= 5e-3, (got, want)
    assert len({round(v, 4) for v in want}) > 2  # the prompts give different masks: the comparison means something
    # the low-res logits themselves agree (IoUs alone could hide a small shift)
    idx, entries = eng._lookup(imgs, [f"images[{i}]" for i in range(len(imgs))])
    idx_r, entries_r = ref._lookup(imgs, [f"images[{i}]" for i in range(len(imgs))])
    with torch.inference_mode():
        _close(eng._decode(entries, idx, answers), ref._decode(entries_r, idx_r, answers), 1e-3)


def _files(folder) -> dict[str, tuple[int, int]]:
    return {f.name: (f.stat().st_size, f.stat().st_mtime_ns) for f in folder.iterdir()}


def test_second_engine_reuses_the_cached_export(model, onnx_cache, monkeypatch):
    from samr1.engine.sam2_engine import Sam2Engine
    from samr1.sam import sam2_encoder

    first = Sam2Engine(model, encoder="onnx", cache_dir=onnx_cache).encoder.artifact
    before = _files(first.path)
    exports = []
    monkeypatch.setattr(sam2_encoder, "_export_into", lambda *a: exports.append(a))
    again = Sam2Engine(model, encoder="onnx", cache_dir=onnx_cache).encoder.artifact
    assert not again.built and again.path == first.path and exports == []
    assert _files(again.path) == before  # nothing rewritten: loading a verified artefact writes nothing
    assert [p.name for p in (onnx_cache / "onnx").iterdir()] == [first.path.name]  # one folder, one export
    assert set(before) == {artifacts.SIDECAR, "sam2_encoder.onnx", "sam2_encoder.onnx.data"}


def test_stale_key_is_rebuilt_not_loaded(model, onnx_cache, tmp_path, monkeypatch):
    from samr1.sam import sam2_encoder

    root = tmp_path / "cache"
    shutil.copytree(onnx_cache, root)
    art = export_sam2_onnx(model, cache_dir=root)
    assert not art.built
    sidecar = art.path / artifacts.SIDECAR
    meta = json.loads(sidecar.read_text())
    meta["key"]["onnxruntime"] = "0.0.1"  # as if exported under another ONNX Runtime
    sidecar.write_text(json.dumps(meta))
    good = onnx_cache / "onnx" / art.path.name
    exports = []

    def export(sam, folder, opset):  # the export itself is tested above; a copy keeps this test fast
        exports.append(folder)
        for name in ("sam2_encoder.onnx", "sam2_encoder.onnx.data"):
            shutil.copy(good / name, folder / name)

    monkeypatch.setattr(sam2_encoder, "_export_into", export)
    with pytest.warns(artifacts.ArtifactWarning, match=r"stale artefact.*onnxruntime"):
        enc = make_sam2_encoder(model, backend="onnx", cache_dir=root)
    assert enc.artifact.built and len(exports) == 1 and enc.artifact.path == art.path
    assert json.loads(sidecar.read_text())["key"] == json.loads(json.dumps(art.key))  # the fresh key
    with warnings.catch_warnings():
        warnings.simplefilter("error", artifacts.ArtifactWarning)  # and it now verifies silently
        assert not make_sam2_encoder(model, backend="onnx", cache_dir=root).artifact.built
    assert len(exports) == 1


def test_bad_options_say_what_is_wrong(model):
    with pytest.raises(TypeError, match="SAM 2 model"):
        make_sam2_encoder(load_sam("tiny"))
    with pytest.raises(ValueError, match="unknown encoder backend"):
        make_sam2_encoder(model, backend="openvino")
    with pytest.raises(ValueError, match="compile=True applies to the torch backend only"):
        make_sam2_encoder(model, backend="onnx", compile=True)
    with pytest.raises(ValueError, match="onnx backend runs the float32 export"):
        make_sam2_encoder(model, backend="onnx", dtype="float16")
    with pytest.raises(ValueError, match="max_batch"):
        make_sam2_encoder(model, max_batch=0)
    enc = make_sam2_encoder(model)
    with pytest.raises(ValueError, match="B x 3 x 1024 x 1024"):
        enc.encode_preprocessed(torch.zeros(1, 3, 512, 512))
    assert [f.shape for f in enc.encode([])] == [(0, 32, 256, 256), (0, 64, 128, 128), (0, 256, 64, 64)]


def test_tensorrt_missing_raises_with_install_hint(model):
    if _trt_ok:
        pytest.skip("tensorrt is available here")
    with pytest.raises(ImportError, match="tensorrt backend is unavailable"):
        make_sam2_encoder(model, backend="tensorrt")


@pytest.mark.gpu
@pytest.mark.skipif(not _trt_ok, reason=_trt_reason)
def test_tensorrt_close_to_torch_and_cached(images, onnx_cache):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        sam = load_sam(KIND, seed=0, device="cuda")
    ref = make_sam2_encoder(sam, device="cuda").encode(images)
    enc = make_sam2_encoder(sam, backend="tensorrt", device="cuda", cache_dir=onnx_cache, max_batch=2)
    assert enc.name == "tensorrt-fp16"
    got = enc.encode(images + images[:1])  # chunks of 2 and 1 through the 1..2 profile
    for name, g, r in zip(OUTPUT_NAMES, got, ref, strict=True):
        assert g.device.type == "cuda" and _rel(g[:2], r) < 2e-2 and _rel(g[2:], r[:1]) < 2e-2, name
    again = make_sam2_encoder(sam, backend="tensorrt", device="cuda", cache_dir=onnx_cache, max_batch=2)
    assert not again.artifact.built and again.artifact.path == enc.artifact.path
    fp32 = make_sam2_encoder(sam, backend="tensorrt", device="cuda", dtype="float32", cache_dir=onnx_cache,
                             max_batch=2)
    assert fp32.artifact.path != enc.artifact.path
    assert all(_rel(g, r) < 1e-3 for g, r in zip(fp32.encode(images), ref, strict=True))


@pytest.mark.gpu
@cuda
def test_torch_bf16_close_to_fp32_on_cuda(images):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        sam = load_sam(KIND, seed=0, device="cuda")
    ref = make_sam2_encoder(sam, device="cuda").encode(images)
    bf16 = make_sam2_encoder(sam, device="cuda", dtype="bfloat16")
    assert bf16.name == "torch-bf16"
    for name, g, r in zip(OUTPUT_NAMES, bf16.encode(images), ref, strict=True):
        assert g.dtype == torch.float32 and _rel(g, r) < 5e-2, name
