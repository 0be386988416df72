"""Embedding store (round trip, model-id check, resume, crash safety), image keys, the manifest reader and
the ``samr1 embed`` CLI end to end. Float16 tolerance: rtol 1e-3, atol 1e-3 (values ~N(0, 1))."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

from samr1.data import Sample, read_manifest
from samr1.io import InputError, rle_encode
from samr1.store import EmbeddingStore, StoreError, image_key

SHAPE = (8, 4, 6)  # small embeddings: the store does not care about SAM's 256 x 64 x 64


def _f16_close(a, b):
    torch.testing.assert_close(a.float(), b.float(), rtol=1e-3, atol=1e-3)


def test_round_trip_grow_and_reopen(tmp_path):
    store = EmbeddingStore.create(tmp_path / "s", "m:1", SHAPE, frame=1024)
    emb = torch.randn(40, *SHAPE)  # 40 rows: past the first capacity (16) and one doubling
    keys = [f"k{i}" for i in range(40)]
    sizes = [(int(h), 1024) for h in np.random.default_rng().integers(1, 1025, 40)]
    assert store.put(keys[:25], emb[:25], sizes[:25]) == 25
    assert store.put(keys[20:], emb[20:], sizes[20:]) == 15  # overlapping keys are skipped
    store.flush()
    ro = EmbeddingStore.open(tmp_path / "s", "m:1")
    assert len(ro) == 40 and not ro.writable
    for i in np.random.default_rng().choice(40, 8, replace=False):
        got, size = ro.get_with_size(keys[i])
        assert got.dtype == torch.float16 and got.shape == SHAPE
        _f16_close(got, emb[i])
        assert size == sizes[i]
    assert ro.get("absent") is None and "absent" not in ro and "k3" in ro
    with pytest.raises(StoreError, match="read-only"):
        ro.put(["x"], emb[:1], [(1, 1)])
    ro.close()
    with pytest.raises(StoreError, match="closed"):
        ro.get("k3")


def test_refuses_other_model_id_naming_both(tmp_path):
    EmbeddingStore.create(tmp_path / "s", "vit_b:abc", SHAPE, 1024).close()
    with pytest.raises(StoreError, match=r"'vit_b:abc'.*'vit_h:xyz'"):
        EmbeddingStore.open(tmp_path / "s", "vit_h:xyz")
    with pytest.raises(StoreError, match=r"'vit_b:abc'.*'tiny:1'"):
        EmbeddingStore.create(tmp_path / "s", "tiny:1", SHAPE, 1024)
    with pytest.raises(StoreError, match="other --out|another --out"):
        EmbeddingStore.create(tmp_path / "s", "vit_b:abc", (8, 4, 5), 1024)
    with pytest.raises(StoreError, match="samr1 embed"):
        EmbeddingStore.open(tmp_path / "nothing", "vit_b:abc")


def test_unflushed_rows_are_invisible_and_resume_appends(tmp_path):
    store = EmbeddingStore.create(tmp_path / "s", "m", SHAPE, 1024)
    emb = torch.randn(3, *SHAPE)
    store.put(["a", "b"], emb[:2], [(1, 2), (3, 4)])
    store.flush()
    store.put(["c"], emb[2:], [(5, 6)])
    # A reader sees the committed rows only (a real crash of a writer process: tests/test_store_concurrency.py).
    assert sorted(EmbeddingStore.open(tmp_path / "s", "m").keys()) == ["a", "b"]
    store._writer_lock.release()  # "crash": the lock goes, the last put is never flushed
    resumed = EmbeddingStore.create(tmp_path / "s", "m", SHAPE, 1024)
    assert sorted(resumed.keys()) == ["a", "b"]
    assert resumed.put(["b", "c"], emb[1:], [(3, 4), (5, 6)]) == 1
    resumed.flush()
    ro = EmbeddingStore.open(tmp_path / "s", "m")
    _f16_close(ro.get("c"), emb[2])
    _f16_close(ro.get("a"), emb[0])


def test_image_key_is_content_and_shape():
    rng = np.random.default_rng()
    a = rng.integers(0, 256, (7, 12, 3), dtype=np.uint8)
    assert image_key(a) == image_key(a.copy())
    assert image_key(a) == image_key(np.asfortranarray(a))  # same pixels, other memory layout
    assert image_key(a) != image_key(a.reshape(12, 7, 3))  # same bytes, other shape
    b = a.copy()
    b[3, 5, 1] ^= 1
    assert image_key(a) != image_key(b)
    assert image_key(a, "blake2b") == image_key(a.copy(), "blake2b")
    if _has_xxhash():  # keys of different algorithms never collide
        assert image_key(a, "blake2b") != image_key(a, "xxh3_128")


def _has_xxhash() -> bool:
    try:
        import xxhash  # noqa: F401
    except ImportError:
        return False
    return True


# ------------------------------------------------------------------------------------- manifest


def _write_png(path, arr):
    Image.fromarray(arr).save(path)


def test_read_manifest_resolves_paths_and_masks(tmp_path):
    (tmp_path / "img").mkdir()
    _write_png(tmp_path / "img" / "a.png", np.zeros((5, 6, 3), np.uint8))
    _write_png(tmp_path / "img" / "m.png", np.ones((5, 6), np.uint8) * 255)
    rle = rle_encode(np.eye(5, 6, dtype=bool))
    rows = [
        {"image": "img/a.png", "query": "the left one", "mask": "img/m.png", "id": 7},
        {"image": str(tmp_path / "img" / "a.png"), "query": "the right one", "mask": rle},
    ]
    m = tmp_path / "train.jsonl"
    m.write_text(json.dumps(rows[0]) + "\n\n" + json.dumps(rows[1]) + "\n")
    samples = read_manifest(m)
    assert samples == [
        Sample(str(tmp_path / "img" / "a.png"), "the left one", str(tmp_path / "img" / "m.png"), 1, f"{m}:1", {"id": 7}),
        Sample(str(tmp_path / "img" / "a.png"), "the right one", rle, 3, f"{m}:3", {}),
    ]


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ('{"image": "a.png", "query": "q", "mask": "a.png"', r"not valid JSON"),
        ('["a.png", "q"]', r"expected a JSON object"),
        ('{"query": "q", "mask": "a.png"}', r"field 'image'"),
        ('{"image": "missing.png", "query": "q", "mask": "a.png"}', r"field 'image': file not found"),
        ('{"image": "a.png", "query": "", "mask": "a.png"}', r"field 'query'"),
        ('{"image": "a.png", "query": 3, "mask": "a.png"}', r"field 'query'"),
        ('{"image": "a.png", "query": "q"}', r"field 'mask' is missing"),
        ('{"image": "a.png", "query": "q", "mask": 5}', r"field 'mask' must be"),
        ('{"image": "a.png", "query": "q", "mask": {"size": [4], "counts": "x"}}', r"field 'mask'.*size"),
        ('{"image": "a.png", "query": "q", "mask": {"size": [2, 2], "counts": [1, -1]}}', r"field 'mask'.*counts"),
    ],
)
def test_read_manifest_malformed_rows_name_file_line_field(tmp_path, line, match):
    _write_png(tmp_path / "a.png", np.zeros((2, 2, 3), np.uint8))
    m = tmp_path / "d.jsonl"
    m.write_text('{"image": "a.png", "query": "fine", "mask": "a.png"}\n' + line + "\n")
    with pytest.raises(InputError, match=rf"{re.escape(str(m))}:2: {match}"):
        read_manifest(m)


def test_read_manifest_optional_mask_and_missing_file(tmp_path):
    _write_png(tmp_path / "a.png", np.zeros((2, 2, 3), np.uint8))
    m = tmp_path / "d.jsonl"
    m.write_text('{"image": "a.png", "query": "q"}\n')
    assert read_manifest(m, require_mask=False)[0].mask is None
    with pytest.raises(InputError, match="manifest not found"):
        read_manifest(tmp_path / "nope.jsonl")


# ---------------------------------------------------------------------------------- samr1 embed


def test_embed_cli_builds_resumable_store(tmp_path, capsys):
    from samr1.cli import main
    from samr1.sam import load_sam
    from samr1.sam.encoder import make_encoder

    rng = np.random.default_rng()
    a = rng.integers(0, 256, (23, 37, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (41, 19, 3), dtype=np.uint8)
    _write_png(tmp_path / "a.png", a)
    _write_png(tmp_path / "a_copy.png", a)  # another file, same pixels: one embedding
    _write_png(tmp_path / "b.png", b)
    rle = rle_encode(np.ones((23, 37), bool))
    rows = [("a.png", rle), ("a.png", rle), ("a_copy.png", rle), ("b.png", rle_encode(np.zeros((41, 19), bool)))]
    m = tmp_path / "data.jsonl"
    m.write_text("".join(json.dumps({"image": p, "query": f"q{i}", "mask": k}) + "\n" for i, (p, k) in enumerate(rows)))
    out = tmp_path / "store"
    argv = ["embed", "--data", str(m), "--out", str(out), "--sam", "tiny", "--device", "cpu", "--batch", "2",
            "--no-progress"]
    assert main(argv) == 0
    assert "encoded 2" in capsys.readouterr().out
    enc = make_encoder(load_sam("tiny"), backend="torch")
    store = EmbeddingStore.open(out, enc.model_id)
    assert len(store) == 2
    ref = enc.encode([a, b])
    for i, img in enumerate([a, b]):
        got, size = store.get_with_size(store.key(img))
        _f16_close(got, ref[i])
        assert size == enc.input_sizes([img])[0]
    assert main(argv) == 0  # resumed: nothing left to encode
    assert "encoded 0" in capsys.readouterr().out
    assert len(EmbeddingStore.open(out, enc.model_id)) == 2


def test_encoder_precision():
    from samr1.store import encoder_precision

    assert [encoder_precision(n) for n in ("torch-fp32", "torch-bf16-compiled", "torch-fp16", "onnxruntime-cpu",
                                           "onnxruntime-cuda", "tensorrt-fp16", "tensorrt-fp32")] == [
        "fp32", "bf16", "fp16", "fp32", "fp32", "fp16", "fp32"]


def test_records_the_encoder_and_refuses_resuming_at_another_precision(tmp_path):
    EmbeddingStore.create(tmp_path / "s", "m", SHAPE, 1024, encoder="torch-fp32").close()
    assert EmbeddingStore.open(tmp_path / "s", "m").encoder == "torch-fp32"
    with pytest.raises(StoreError, match=r"'torch-fp32' \(fp32\).*'tensorrt-fp16' \(fp16\)"):
        EmbeddingStore.create(tmp_path / "s", "m", SHAPE, 1024, encoder="tensorrt-fp16")
    # another fp32 backend (ONNX Runtime, on another machine's provider) may resume it
    assert EmbeddingStore.create(tmp_path / "s", "m", SHAPE, 1024, encoder="onnxruntime-cuda").encoder == "torch-fp32"


def _drop_encoder_field(path):
    idx = path / "index.json"
    meta = json.loads(idx.read_text())
    del meta["encoder"]
    idx.write_text(json.dumps(meta))


def test_stores_from_before_encoder_records(tmp_path):
    # empty: the first writer's encoder is adopted
    EmbeddingStore.create(tmp_path / "e", "m", SHAPE, 1024).close()
    _drop_encoder_field(tmp_path / "e")
    assert EmbeddingStore.open(tmp_path / "e", "m").encoder is None
    s = EmbeddingStore.create(tmp_path / "e", "m", SHAPE, 1024, encoder="torch-bf16")
    s.close()
    assert EmbeddingStore.open(tmp_path / "e", "m").encoder == "torch-bf16"
    # with rows: it still opens and resumes, but resuming says the rows' encoder is unknown
    full = EmbeddingStore.create(tmp_path / "f", "m", SHAPE, 1024)
    full.put(["a"], torch.randn(1, *SHAPE), [(1, 1)])
    full.close()
    _drop_encoder_field(tmp_path / "f")
    with pytest.warns(UserWarning, match="unknown encoder"):
        resumed = EmbeddingStore.create(tmp_path / "f", "m", SHAPE, 1024, encoder="torch-fp32")
    assert resumed.encoder is None and "a" in resumed
