"""Image encoder backends vs upstream SamPredictor, and the artefact cache (ONNX export, keys, corruption).

Tolerances: torch fp32 vs ``SamPredictor.set_image(...).features``: 1e-5 absolute (same ops, batched);
ONNX Runtime (CPU) vs torch fp32: 1e-4 relative (Frobenius) and 1e-4 x max|ref| elementwise; TensorRT fp16
and torch bf16 vs fp32 (GPU only): 2e-2 / 5e-2 relative.
"""

from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pytest
import torch
from _markers import requires_cuda, requires_onnxruntime, requires_tensorrt
from segment_anything import SamPredictor

from samr1 import artifacts
from samr1.io import InputError
from samr1.sam import SAM_KINDS, DeviceError, build_sam, load_sam
from samr1.sam.encoder import (
    export_onnx,
    image_encoder_flops,
    make_encoder,
    ort_distributions,
    select_ort_providers,
    tensorrt_available,
)


@pytest.fixture(scope="module")
def sam():
    return load_sam("tiny")


@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory, sam):
    """One ONNX export per module (~4 s for tiny on 2 cores) in a private cache root."""
    root = tmp_path_factory.mktemp("samr1-cache")
    art = export_onnx(sam, cache_dir=root)
    assert art.built
    return root


def _images(rng, shapes):
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in shapes]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


def test_torch_fp32_equals_sam_predictor(sam):
    rng = np.random.default_rng()
    # Odd sizes, portrait and landscape, and 3 images with max_batch=2: chunks of 2 and 1.
    shapes = [(int(rng.integers(20, 90)), int(rng.integers(20, 90))), (97, 41), (33, 131)]
    imgs = _images(rng, shapes)
    enc = make_encoder(sam, backend="torch", max_batch=2)
    emb = enc.encode(imgs)
    assert emb.shape == (3, *enc.embedding_shape) and emb.dtype == torch.float32
    assert enc.embedding_shape == (256, 64, 64) and enc.frame == 1024
    pred = SamPredictor(sam)
    sizes = enc.input_sizes(imgs)
    for i, img in enumerate(imgs):
        pred.set_image(img)
        ref = pred.features[0]
        torch.testing.assert_close(emb[i], ref, atol=1e-5, rtol=0)
        assert sizes[i] == tuple(pred.input_size)
        assert max(sizes[i]) == enc.frame


@requires_onnxruntime
def test_onnx_runtime_matches_torch(sam, onnx_cache):
    rng = np.random.default_rng()
    imgs = _images(rng, [(50, 70), (64, 23), (11, 11)])  # batch 3: not the export's example batch of 2
    ref = make_encoder(sam, backend="torch").encode(imgs)
    enc = make_encoder(sam, backend="onnx", device="cpu", cache_dir=onnx_cache)
    assert enc.name == "onnxruntime-cpu" and not enc.artifact.built  # loaded from the module's export
    got = enc.encode(imgs)
    assert got.shape == ref.shape and got.dtype == torch.float32
    assert _rel(got, ref) < 1e-4
    torch.testing.assert_close(got, ref, atol=1e-4 * float(ref.abs().max()), rtol=0)
    # batch 1 through the dynamic batch dimension
    torch.testing.assert_close(enc.encode(imgs[2:]), ref[2:], atol=1e-4 * float(ref.abs().max()), rtol=0)


@requires_onnxruntime
def test_corrupt_onnx_is_reported_and_rebuilt(sam, onnx_cache, tmp_path):
    root = tmp_path / "cache"
    shutil.copytree(onnx_cache, root)
    (onnx_file,) = root.glob("onnx/*/encoder.onnx")
    data = bytearray(onnx_file.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte, same size: only the content digest can tell
    onnx_file.write_bytes(bytes(data))
    with pytest.warns(artifacts.ArtifactWarning, match=r"encoder\.onnx is corrupt"):
        enc = make_encoder(sam, backend="onnx", device="cpu", cache_dir=root)
    assert enc.artifact.built and enc.artifact.path == onnx_file.parent
    assert onnx_file.read_bytes() != bytes(data)
    img = _images(np.random.default_rng(), [(40, 30)])
    ref = make_encoder(sam, backend="torch").encode(img)
    assert _rel(enc.encode(img), ref) < 1e-4
    # and the rebuilt artefact now verifies silently
    with warnings.catch_warnings():
        warnings.simplefilter("error", artifacts.ArtifactWarning)
        assert not make_encoder(sam, backend="onnx", device="cpu", cache_dir=root).artifact.built


@requires_onnxruntime
def test_export_cli_reports_cached_artifact(onnx_cache, capsys):
    from samr1.cli import main

    assert main(["export", "--sam", "tiny", "--backend", "onnx", "--cache-dir", str(onnx_cache), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "already cached" in out and "encoder.onnx" in out and str(onnx_cache) in out


# ------------------------------------------------------------------------ artefact cache mechanics


def _toy_builder(calls):
    def build(folder):
        calls.append(folder)
        (folder / "payload.bin").write_bytes(b"x" * 1000)

    return build


def test_changed_key_makes_new_artifact_and_same_key_reuses(tmp_path):
    calls = []
    key = {"model_id": "tiny:abc", "input": [1, 3, 8, 8], "torch": "1.0"}
    a1, _ = artifacts.get_or_build("toy", key, _toy_builder(calls), cache_dir=tmp_path)
    a2, _ = artifacts.get_or_build("toy", dict(key), _toy_builder(calls), cache_dir=tmp_path)
    assert a1.built and not a2.built and a1.path == a2.path and len(calls) == 1
    a3, _ = artifacts.get_or_build("toy", {**key, "torch": "2.0"}, _toy_builder(calls), cache_dir=tmp_path)
    assert a3.built and a3.path != a1.path and len(calls) == 2
    assert a1.path.exists()  # the old one is left for whatever still uses it
    sidecar = json.loads((a3.path / artifacts.SIDECAR).read_text())
    assert sidecar["key"]["torch"] == "2.0" and "payload.bin" in sidecar["files"]
    assert not list(tmp_path.glob("toy/.tmp-*"))  # no temporary folders left behind


def test_stale_sidecar_key_rebuilds(tmp_path):
    calls = []
    key = {"model_id": "m", "onnx": "1.16"}
    a1, _ = artifacts.get_or_build("toy", key, _toy_builder(calls), cache_dir=tmp_path)
    meta = json.loads((a1.path / artifacts.SIDECAR).read_text())
    meta["key"]["onnx"] = "1.15"  # a folder whose recorded key no longer matches its name
    (a1.path / artifacts.SIDECAR).write_text(json.dumps(meta))
    with pytest.warns(artifacts.ArtifactWarning, match=r"stale artefact.*onnx"):
        a2, _ = artifacts.get_or_build("toy", key, _toy_builder(calls), cache_dir=tmp_path)
    assert a2.built and len(calls) == 2


def test_truncated_or_missing_sidecar_rebuilds(tmp_path):
    calls = []
    key = {"model_id": "m"}
    a1, _ = artifacts.get_or_build("toy", key, _toy_builder(calls), cache_dir=tmp_path)
    (a1.path / "payload.bin").write_bytes(b"x" * 10)
    with pytest.warns(artifacts.ArtifactWarning, match=r"payload\.bin is corrupt: size 10"):
        artifacts.get_or_build("toy", key, _toy_builder(calls), cache_dir=tmp_path)
    (a1.path / artifacts.SIDECAR).unlink()
    with pytest.warns(artifacts.ArtifactWarning, match="missing"):
        a3, _ = artifacts.get_or_build("toy", key, _toy_builder(calls), cache_dir=tmp_path)
    assert a3.built and len(calls) == 3


def test_unloadable_artifact_rebuilds_once(tmp_path):
    calls, loads = [], []

    def load(folder):
        loads.append(folder)
        if len(loads) == 2:  # the cached copy fails to load (e.g. a runtime that changed underneath)
            raise RuntimeError("cannot deserialise")
        return "ok"

    artifacts.get_or_build("toy", {"model_id": "m"}, _toy_builder(calls), load, cache_dir=tmp_path)
    with pytest.warns(artifacts.ArtifactWarning, match="could not be loaded"):
        art, obj = artifacts.get_or_build("toy", {"model_id": "m"}, _toy_builder(calls), load, cache_dir=tmp_path)
    assert obj == "ok" and art.built and len(calls) == 2 and len(loads) == 3


def test_cache_root_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv(artifacts.ENV_VAR, str(tmp_path / "env"))
    assert artifacts.cache_root() == tmp_path / "env"
    assert artifacts.cache_root(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv(artifacts.ENV_VAR)
    assert str(artifacts.cache_root()).endswith("/.cache/samr1")


# ------------------------------------------------------------------------------ validation, FLOPs


def test_bad_options_say_what_is_wrong(sam):
    with pytest.raises(ValueError, match="unknown encoder backend 'jax'"):
        make_encoder(sam, backend="jax")
    with pytest.raises(ValueError, match="compile=True applies to the torch backend"):
        make_encoder(sam, backend="onnx", compile=True)
    with pytest.raises(ValueError, match="dtype"):
        make_encoder(sam, dtype="int8")
    with pytest.raises(ValueError, match="max_batch"):
        make_encoder(sam, max_batch=0)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="float16 autocast needs a CUDA"):
            make_encoder(sam, dtype="float16")
    enc = make_encoder(sam)
    with pytest.raises(InputError, match=r"images\[1\].*uint8"):
        enc.encode([np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4, 3), np.float32)])
    with pytest.raises(ValueError, match="B x 3 x 1024 x 1024"):
        enc.encode_preprocessed(torch.zeros(1, 3, 64, 64))


@pytest.mark.parametrize("kind", ["tiny", "vit_b", "vit_h"])
def test_flops_match_torch_flop_counter(kind):
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):  # shapes only: ViT-H costs nothing to build or run here
        model = build_sam(SAM_KINDS[kind])
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model.image_encoder(torch.zeros(1, 3, 1024, 1024))
    assert image_encoder_flops(model) == pytest.approx(counter.get_total_flops(), rel=1e-3)
    if kind == "vit_h":
        assert 5.5e12 < image_encoder_flops(model) < 6.5e12  # ~3.0 TMAC (REFERENCE.md)


# ------------------------------------------------------------------------------------------ GPU

@pytest.mark.gpu
@requires_cuda
@requires_onnxruntime
def test_torch_bf16_and_onnx_cuda_close_to_fp32(onnx_cache):
    import onnxruntime as ort

    sam = load_sam("tiny", device="cuda")
    imgs = _images(np.random.default_rng(), [(300, 200), (128, 400)])
    ref = make_encoder(sam, device="cuda").encode(imgs)
    assert ref.device.type == "cuda"
    assert _rel(make_encoder(sam, device="cuda", dtype="bfloat16").encode(imgs), ref) < 5e-2
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        # the CPU onnxruntime on a GPU machine: refused loudly, and run on the CPU only when asked
        with pytest.raises(DeviceError, match="CUDAExecutionProvider"):
            make_encoder(sam, backend="onnx", device="cuda", cache_dir=onnx_cache)
        enc = make_encoder(sam, backend="onnx", device="cuda", cache_dir=onnx_cache, cpu_fallback=True)
        assert enc.name == "onnxruntime-cpu"
    else:
        enc = make_encoder(sam, backend="onnx", device="cuda", cache_dir=onnx_cache)
        assert enc.name == "onnxruntime-cuda"
    got = enc.encode(imgs)
    # 5e-3, not 1e-4: on CUDA both torch (cuDNN convolutions) and ORT may use TF32.
    assert got.device.type == "cuda" and _rel(got, ref) < 5e-3


@pytest.mark.gpu
@requires_tensorrt
def test_tensorrt_fp16_close_to_fp32_and_cached(onnx_cache):
    sam = load_sam("tiny", device="cuda")
    imgs = _images(np.random.default_rng(), [(300, 200), (128, 400), (77, 77)])
    ref = make_encoder(sam, device="cuda").encode(imgs)
    enc = make_encoder(sam, backend="tensorrt", device="cuda", cache_dir=onnx_cache, max_batch=2)
    assert enc.name == "tensorrt-fp16"
    got = enc.encode(imgs)  # chunks of 2 and 1 through the 1..2 profile
    assert got.shape == ref.shape and got.device.type == "cuda" and _rel(got, ref) < 2e-2
    again = make_encoder(sam, backend="tensorrt", device="cuda", cache_dir=onnx_cache, max_batch=2)
    assert not again.artifact.built and again.artifact.path == enc.artifact.path
    fp32 = make_encoder(sam, backend="tensorrt", device="cuda", dtype="float32", cache_dir=onnx_cache, max_batch=2)
    assert fp32.artifact.path != enc.artifact.path and _rel(fp32.encode(imgs), ref) < 1e-3


def test_tensorrt_missing_raises_with_install_hint(sam):
    if tensorrt_available()[0]:
        pytest.skip("tensorrt is available here")
    with pytest.raises(ImportError, match="tensorrt backend is unavailable"):
        make_encoder(sam, backend="tensorrt")


# ------------------------------------------------------------------------ ONNX Runtime flavour and providers

_CPU_EP, _CUDA_EP = "CPUExecutionProvider", "CUDAExecutionProvider"


def _expected_providers(available, device, fallback):
    """The rule, restated: the CPU device runs on the CPU; CUDA runs on the CUDA provider when there is one;
    otherwise only an explicit fallback runs on the CPU, and anything else is an error (None)."""
    dev = torch.device(device)
    if dev.type == "cpu":
        return [_CPU_EP], "cpu"
    if dev.type == "cuda" and _CUDA_EP in available:
        return [(_CUDA_EP, {"device_id": dev.index or 0}), _CPU_EP], "cuda"
    return ([_CPU_EP], "cpu") if fallback else None


def test_ort_provider_selection_follows_the_rule():
    rng = np.random.default_rng()
    pool = [_CUDA_EP, "TensorrtExecutionProvider", _CPU_EP]
    devices = ["cpu", "cuda", "cuda:0", f"cuda:{int(rng.integers(1, 8))}", "mps"]
    for _ in range(60):
        available = [p for p in pool if rng.random() < 0.5] + [_CPU_EP] * (rng.random() < 0.5)
        device = devices[int(rng.integers(len(devices)))]
        fallback = bool(rng.random() < 0.5)
        want = _expected_providers(available, device, fallback)
        if want is None:
            with pytest.raises(DeviceError):
                select_ort_providers(available, device, cpu_fallback=fallback)
        else:
            assert select_ort_providers(available, device, cpu_fallback=fallback) == want, (available, device)


def test_cuda_without_the_cuda_provider_names_it_and_the_fix():
    with pytest.raises(DeviceError) as info:
        select_ort_providers([_CPU_EP], "cuda:0", installed=["onnxruntime 1.32.0", "onnxruntime-gpu 1.31.1"])
    msg = str(info.value)
    for said in ("CUDAExecutionProvider", "onnxruntime 1.32.0, onnxruntime-gpu 1.31.1", "pip uninstall -y onnxruntime",
                 "samr1[gpu]", "cpu_fallback=True"):
        assert said in msg, (said, msg)


def test_installed_onnxruntime_on_cuda_is_refused_unless_asked(sam, onnx_cache):
    import onnxruntime as ort

    available = ort.get_available_providers()
    assert any(d.split()[0].startswith("onnxruntime") for d in ort_distributions())
    if _CUDA_EP not in available:  # the CPU package (what `make test` installs): a CUDA run is refused
        with pytest.raises(DeviceError, match="CUDAExecutionProvider") as info:
            select_ort_providers(available, "cuda", installed=ort_distributions())
        assert "onnxruntime " in str(info.value)
    if not torch.cuda.is_available():  # no GPU at all: the device itself is refused before any ORT session
        with pytest.raises(DeviceError, match="CUDA GPU"):
            make_encoder(sam, backend="onnx", device="cuda", cache_dir=onnx_cache)
    with pytest.raises(ValueError, match="cpu_fallback=True applies to the onnx backend"):
        make_encoder(sam, backend="torch", cpu_fallback=True)


def _extras_closure(project: dict, extras) -> set[str]:
    """Canonical names of what ``pip install 'samr1[extras]'`` requests (self-references followed)."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    me = canonicalize_name(project["name"])
    names, todo, seen = set(), list(project.get("dependencies", [])), set()
    todo += [f"{me}[{e}]" for e in extras]
    while todo:
        req = Requirement(todo.pop())
        name = canonicalize_name(req.name)
        if name != me:
            names.add(name)
            continue
        for extra in req.extras - seen:
            seen.add(extra)
            todo += project["optional-dependencies"][extra]
    return names


def test_no_install_combines_both_onnxruntime_flavours():
    from pathlib import Path

    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: pip's vendored copy of the same parser
        from pip._vendor import tomli as tomllib

    root = Path(__file__).resolve().parents[1]
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    both = {"onnxruntime", "onnxruntime-gpu"}
    base = _extras_closure(project, [])
    assert not base & both, "the base install must not pick an ONNX Runtime flavour"
    for extra in project["optional-dependencies"]:
        assert not both <= _extras_closure(project, [extra]), f"extra [{extra}] installs both ONNX Runtime flavours"
    assert "onnxruntime-gpu" in _extras_closure(project, ["gpu"])
    # `make test` installs the CPU flavour the tests use, and only it
    import re

    extras = re.search(r"^EXTRAS \?= *(\S+)", (root / "Makefile").read_text(), re.M).group(1).split(",")
    made = _extras_closure(project, extras)
    assert "onnxruntime" in made and "onnxruntime-gpu" not in made, extras
