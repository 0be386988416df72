"""Embedding-store integrity: every malformed index is a StoreError naming the field (hand-corrupted cases and a
hypothesis fuzz of the index JSON), file modes follow the user's umask (stores and build-once artefacts), and
a read-only store or artefact cache is read without writing anything."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from samr1.artifacts import SIDECAR, get_or_build
from samr1.store import EmbeddingStore, StoreError

SHAPE = (8, 4, 6)
KEYS = ["k0", "k1", "k2"]
SIZES = [[1, 2], [3, 4], [5, 6]]


def _build(path):
    store = EmbeddingStore.create(path, "m", SHAPE, 1024, encoder="torch-fp32")
    store.put(KEYS, np.random.default_rng().standard_normal((3, *SHAPE)), SIZES)
    store.close()
    return json.loads((path / "index.json").read_text())


def _set(field, value):
    def mutate(m):
        m[field] = value
        return m
    return mutate


def _drop(field):
    def mutate(m):
        del m[field]
        return m
    return mutate


CORRUPTIONS = [
    # (id, mutation of the index dict, the field the message must name)
    *[(f"missing-{f}", _drop(f), f) for f in ("format", "model_id", "shape", "frame", "hash", "rows", "keys",
                                              "input_sizes", "digests")],
    ("format-str", _set("format", "1"), "format"), ("format-3", _set("format", 3), "format"),
    ("format-0", _set("format", 0), "format"),
    ("format-bool", _set("format", True), "format"), ("format-null", _set("format", None), "format"),
    ("model_id-int", _set("model_id", 5), "model_id"), ("model_id-empty", _set("model_id", ""), "model_id"),
    ("model_id-list", _set("model_id", ["m"]), "model_id"),
    ("encoder-int", _set("encoder", 3), "encoder"), ("encoder-empty", _set("encoder", ""), "encoder"),
    ("encoder-list", _set("encoder", ["torch-fp32"]), "encoder"),
    ("dtype-f32", _set("dtype", "float32"), "dtype"), ("dtype-int", _set("dtype", 16), "dtype"),
    ("shape-2d", _set("shape", [8, 4]), "shape"), ("shape-4d", _set("shape", [8, 4, 6, 1]), "shape"),
    ("shape-zero", _set("shape", [8, 4, 0]), "shape"), ("shape-neg", _set("shape", [8, -4, 6]), "shape"),
    ("shape-float", _set("shape", [8.0, 4, 6]), "shape"), ("shape-str", _set("shape", "8,4,6"), "shape"),
    ("shape-bool", _set("shape", [True, 4, 6]), "shape"), ("shape-dict", _set("shape", {"C": 8}), "shape"),
    ("shape-huge", _set("shape", [1 << 20, 1 << 20, 1 << 20]), "shape"),
    ("shape-strelem", _set("shape", [8, 4, "6"]), "shape"),
    ("frame-zero", _set("frame", 0), "frame"), ("frame-neg", _set("frame", -1), "frame"),
    ("frame-float", _set("frame", 1024.5), "frame"), ("frame-str", _set("frame", "1024"), "frame"),
    ("frame-null", _set("frame", None), "frame"), ("frame-bool", _set("frame", True), "frame"),
    ("frame-huge", _set("frame", 10**30), "frame"),
    ("hash-md5", _set("hash", "md5"), "hash"), ("hash-int", _set("hash", 1), "hash"),
    ("hash-null", _set("hash", None), "hash"), ("hash-list", _set("hash", ["blake2b"]), "hash"),
    ("rows-neg", _set("rows", -1), "rows"), ("rows-float", _set("rows", 3.0), "rows"),
    ("rows-str", _set("rows", "3"), "rows"), ("rows-null", _set("rows", None), "rows"),
    ("rows-bool", _set("rows", True), "rows"),
    ("rows-more-than-keys", _set("rows", 4), "keys"), ("rows-fewer-than-keys", _set("rows", 2), "keys"),
    ("rows-huge", _set("rows", 10**30), "keys"),
    ("keys-list", _set("keys", ["k0", "k1", "k2"]), "keys"), ("keys-str", _set("keys", "k0"), "keys"),
    ("keys-null", _set("keys", None), "keys"),
    ("keys-row-out-of-range", _set("keys", {"k0": 0, "k1": 1, "k2": 3}), "keys['k2']"),
    ("keys-row-negative", _set("keys", {"k0": -1, "k1": 1, "k2": 2}), "keys['k0']"),
    ("keys-row-duplicate", _set("keys", {"k0": 0, "k1": 0, "k2": 2}), "keys['k1']"),
    ("keys-row-str", _set("keys", {"k0": 0, "k1": 1, "k2": "2"}), "keys['k2']"),
    ("keys-row-float", _set("keys", {"k0": 0, "k1": 1, "k2": 2.0}), "keys['k2']"),
    ("keys-row-bool", _set("keys", {"k0": 0, "k1": True, "k2": 2}), "keys['k1']"),
    ("keys-row-list", _set("keys", {"k0": 0, "k1": [1], "k2": 2}), "keys['k1']"),
    ("keys-empty-key", _set("keys", {"": 0, "k1": 1, "k2": 2}), "keys"),
    ("sizes-short", _set("input_sizes", SIZES[:2]), "input_sizes"),
    ("sizes-dict", _set("input_sizes", {"0": [1, 2]}), "input_sizes"),
    ("sizes-one-value", _set("input_sizes", [[1, 2], [3], [5, 6]]), "input_sizes[1]"),
    ("sizes-three-values", _set("input_sizes", [[1, 2], [3, 4], [5, 6, 7]]), "input_sizes[2]"),
    ("sizes-str", _set("input_sizes", [[1, 2], [3, "4"], [5, 6]]), "input_sizes[1]"),
    ("sizes-zero", _set("input_sizes", [[0, 2], [3, 4], [5, 6]]), "input_sizes[0]"),
    ("sizes-beyond-frame", _set("input_sizes", [[1, 2], [3, 4000], [5, 6]]), "input_sizes[1]"),
    ("sizes-null", _set("input_sizes", [[1, 2], None, [5, 6]]), "input_sizes[1]"),
    ("sizes-float", _set("input_sizes", [[1.5, 2], [3, 4], [5, 6]]), "input_sizes[0]"),
    ("sizes-nested", _set("input_sizes", [[[1], 2], [3, 4], [5, 6]]), "input_sizes[0]"),
    ("digests-short", lambda m: {**m, "digests": m["digests"][:2]}, "digests"),
    ("digests-str", _set("digests", "abc"), "digests"), ("digests-null", _set("digests", None), "digests"),
    ("digests-int", lambda m: {**m, "digests": [m["digests"][0], 7, m["digests"][2]]}, "digests[1]"),
    ("digests-not-hex", lambda m: {**m, "digests": ["zz", *m["digests"][1:]]}, "digests[0]"),
    ("digests-empty", lambda m: {**m, "digests": [*m["digests"][:2], ""]}, "digests[2]"),
    ("digests-huge", lambda m: {**m, "digests": ["a" * 5000, *m["digests"][1:]]}, "digests[0]"),
]


@pytest.mark.parametrize(("mutate", "field"), [c[1:] for c in CORRUPTIONS], ids=[c[0] for c in CORRUPTIONS])
def test_malformed_index_is_a_store_error_naming_the_field(tmp_path, mutate, field):
    meta = _build(tmp_path / "s")
    (tmp_path / "s" / "index.json").write_text(json.dumps(mutate(meta)))
    for open_it in (lambda: EmbeddingStore.open(tmp_path / "s", "m"),
                    lambda: EmbeddingStore.open(tmp_path / "s", None),
                    lambda: EmbeddingStore.create(tmp_path / "s", "m", SHAPE, 1024)):
        with pytest.raises(StoreError) as info:
            open_it()
        assert f"field {field!r}" in str(info.value) and "index.json" in str(info.value)
    # the failed create released its lock: a writer gets in once the index is repaired
    (tmp_path / "s" / "index.json").write_text(json.dumps(_build(tmp_path / "fresh")))
    EmbeddingStore.create(tmp_path / "s", "m", SHAPE, 1024).close()


@pytest.mark.parametrize(("content", "match"), [
    (b"{", "unreadable"), (b"", "unreadable"), (b"\xff\xfe\x00garbage", "unreadable"),
    (b"[" * 100_000 + b"]" * 100_000, "unreadable"), (b'"a string"', "not a samr1 embedding store index"),
    (b"[1, 2]", "not a samr1 embedding store index"), (b"null", "not a samr1 embedding store index"),
    (b"NaN", "not a samr1 embedding store index"),
])
def test_unparseable_index(tmp_path, content, match):
    _build(tmp_path / "s")
    (tmp_path / "s" / "index.json").write_bytes(content)
    with pytest.raises(StoreError, match=match):
        EmbeddingStore.open(tmp_path / "s", "m")


def test_index_that_is_a_folder_and_data_file_damage(tmp_path):
    meta = _build(tmp_path / "s")
    data = tmp_path / "s" / "embeddings.f16"
    with open(data, "r+b") as f:
        f.truncate(2 * int(np.prod(SHAPE)) * 2 + 7)  # two and a bit rows for an index of three
    with pytest.raises(StoreError, match=r"embeddings.f16 holds .* bytes but the index lists 3 rows"):
        EmbeddingStore.open(tmp_path / "s", "m")
    data.unlink()
    with pytest.raises(StoreError, match=r"holds 0 bytes"):
        EmbeddingStore.open(tmp_path / "s", "m")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "index.json").mkdir()
    with pytest.raises(StoreError, match="unreadable"):
        EmbeddingStore.open(tmp_path / "d", "m")
    assert meta["rows"] == 3


# ------------------------------------------------------------------------------------ hypothesis fuzz

_json = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(10**40), max_value=10**40)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)
_FIELDS = ["format", "model_id", "encoder", "dtype", "shape", "frame", "hash", "rows", "keys", "input_sizes"]


@pytest.fixture(scope="module")
def fuzz_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("fuzz") / "s"
    return path, _build(path)


def _open_and_read(path):
    """Open (read-only) and read every row: a StoreError is a correct answer, any other exception a bug."""
    try:
        store = EmbeddingStore.open(path, None)
    except StoreError:
        return None
    for key in store.keys():
        emb, size = store.get_with_size(key)
        assert tuple(emb.shape) == store.shape and len(size) == 2
    return store


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fuzz_index_fields(fuzz_store, data):
    path, base = fuzz_store
    meta = json.loads(json.dumps(base))
    for _ in range(data.draw(st.integers(1, 3), label="edits")):
        field = data.draw(st.sampled_from(_FIELDS), label="field")
        how = data.draw(st.sampled_from(["replace", "delete", "element"]), label="how")
        if how == "delete":
            meta.pop(field, None)
        elif how == "element" and isinstance(meta.get(field), (list, dict)) and meta[field]:
            container = meta[field]
            slot = data.draw(st.sampled_from(list(container) if isinstance(container, dict) else
                                             list(range(len(container)))), label="slot")
            container[slot] = data.draw(_json, label="value")
        else:
            meta[field] = data.draw(_json, label="value")
    (path / "index.json").write_text(json.dumps(meta, allow_nan=True))
    store = _open_and_read(path)
    if store is not None:  # whatever was accepted is a consistent store
        assert len(store) == len(store.keys()) and store.frame >= 1


@settings(max_examples=100, deadline=None)
@given(doc=_json | st.binary(max_size=64))
def test_fuzz_whole_index(fuzz_store, doc):
    path, _ = fuzz_store
    raw = doc if isinstance(doc, bytes) else json.dumps(doc, allow_nan=True).encode()
    (path / "index.json").write_bytes(raw)
    assert _open_and_read(path) is None  # nothing random is a valid store index


# ------------------------------------------------------------------------------- umask and read-only


@pytest.fixture(params=[0o022, 0o027, 0o077], ids=["umask022", "umask027", "umask077"])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def _mode(p):
    return stat.S_IMODE(os.stat(p).st_mode)


def test_store_files_follow_the_umask(tmp_path, umask):
    _build(tmp_path / "s")
    assert _mode(tmp_path / "s") == 0o777 & ~umask
    for name in ("index.json", "embeddings.f16", "writer.lock"):
        assert _mode(tmp_path / "s" / name) == 0o666 & ~umask, name


def test_artifacts_follow_the_umask(tmp_path, umask):
    def build(folder):
        (folder / "model.bin").write_bytes(os.urandom(64))

    art, _ = get_or_build("onnx", {"model_id": "m:1", "n": 1}, build, cache_dir=tmp_path / "cache")
    assert art.built
    assert _mode(art.path) == 0o777 & ~umask
    assert _mode(art.path / SIDECAR) == 0o666 & ~umask and _mode(art.path / "model.bin") == 0o666 & ~umask


def _snapshot(root):
    return sorted((str(p.relative_to(root)), p.stat().st_mtime_ns, p.stat().st_size) for p in root.rglob("*"))


def _make_read_only(root):
    for p in [root, *root.rglob("*")]:
        p.chmod(0o555 if p.is_dir() else 0o444)


def _make_writable(root):
    for p in [root, *root.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)


def test_read_only_store_is_readable_and_untouched(tmp_path):
    from samr1.engine.cache import EmbeddingCache
    from samr1.sam import load_sam
    from samr1.sam.encoder import make_encoder

    enc = make_encoder(load_sam("tiny-shapes"), backend="torch")
    img = np.random.default_rng().integers(0, 256, (17, 23, 3), dtype=np.uint8)
    store = EmbeddingStore.create(tmp_path / "s", enc.model_id, enc.embedding_shape, enc.frame, encoder=enc.name)
    store.put([store.key(img)], enc.encode([img]), enc.input_sizes([img]))
    store.close()
    (tmp_path / "s" / "writer.lock").unlink()  # as copied by a tool that skips it: a reader must not need it
    _make_read_only(tmp_path / "s")
    before = _snapshot(tmp_path / "s")
    try:
        cache = EmbeddingCache(enc, store=EmbeddingStore.open(tmp_path / "s", enc.model_id))
        cache.get_or_encode([img])
        assert cache.stats["store_hits"] == 1 and cache.stats["encoder_images"] == 0
        assert _snapshot(tmp_path / "s") == before  # nothing created, nothing modified
        if os.geteuid() != 0:  # root writes through file modes, so only other users can check the refusal
            with pytest.raises(StoreError, match="cannot write embedding store"):
                EmbeddingStore.create(tmp_path / "s", enc.model_id, enc.embedding_shape, enc.frame)
    finally:
        _make_writable(tmp_path / "s")


def test_read_only_artifact_cache_loads_without_writing(tmp_path):
    def build(folder):
        (folder / "model.bin").write_bytes(b"weights")

    key = {"model_id": "m:1", "n": 2}
    first, _ = get_or_build("onnx", key, build, cache_dir=tmp_path / "cache")
    _make_read_only(tmp_path / "cache")
    before = _snapshot(tmp_path / "cache")
    try:
        again, loaded = get_or_build("onnx", key, build, lambda f: (f / "model.bin").read_bytes(),
                                     cache_dir=tmp_path / "cache")
        assert not again.built and again.path == first.path and loaded == b"weights"
        assert _snapshot(tmp_path / "cache") == before
    finally:
        _make_writable(tmp_path / "cache")
