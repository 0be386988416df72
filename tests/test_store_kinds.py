"""Embedding-store kinds and row layouts: a SAM 2 store holds several feature maps per row (recorded as
``layout``), every layout / kind field of the index is validated (a StoreError naming the field), and a SAM v1
store is never read as a SAM 2 store or the other way round. No model needed: small random maps."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from samr1.store import EmbeddingStore, StoreError

# a SAM 2-like row of odd sizes: image embedding first, then two higher-resolution maps
LAYOUT = [("image_embed", (8, 3, 5)), ("high_res_s0", (2, 12, 20)), ("high_res_s1", (4, 6, 10))]
SHAPE = LAYOUT[0][1]


def _maps(rng, n):
    return [rng.standard_normal((n, *s)).astype(np.float32) for _, s in LAYOUT]


def _sam2_store(path, model_id="sam2.1_hiera_t:x"):
    return EmbeddingStore.create(path, model_id, SHAPE, 1024, encoder="torch-fp32", kind="sam2", layout=LAYOUT)


def test_sam2_rows_round_trip_every_map(tmp_path):
    rng = np.random.default_rng()
    maps = _maps(rng, 3)
    store = _sam2_store(tmp_path / "s")
    assert store.put(["a", "b", "c"], maps, [(1024, 1024)] * 3) == 3
    store.close()
    ro = EmbeddingStore.open(tmp_path / "s", "sam2.1_hiera_t:x", kind="sam2")
    assert ro.kind == "sam2" and ro.layout == tuple(LAYOUT) and ro.shape == SHAPE
    for i, key in enumerate(["a", "b", "c"]):
        parts, size = ro.get_parts(key)
        assert size == (1024, 1024) and len(parts) == 3
        for got, want in zip(parts, maps, strict=True):
            assert got.dtype == torch.float16 and tuple(got.shape) == want.shape[1:]
            np.testing.assert_array_equal(got.numpy(), want[i].astype(np.float16))  # float16 as stored, exactly
        emb, _ = ro.get_with_size(key)  # the image embedding alone, as a v1 reader gets it
        np.testing.assert_array_equal(emb.numpy(), maps[0][i].astype(np.float16))
    assert ro.get_parts("absent") is None
    meta = json.loads((tmp_path / "s" / "index.json").read_text())
    assert meta["kind"] == "sam2" and meta["layout"] == [[n, list(s)] for n, s in LAYOUT]


def test_v1_stores_record_their_kind_and_old_ones_still_open(tmp_path):
    rng = np.random.default_rng()
    store = EmbeddingStore.create(tmp_path / "s", "vit_b:1", SHAPE, 1024)
    emb = rng.standard_normal((2, *SHAPE)).astype(np.float32)
    store.put(["a", "b"], emb, [(3, 4), (5, 6)])
    store.close()
    meta = json.loads((tmp_path / "s" / "index.json").read_text())
    assert meta["kind"] == "sam" and meta["layout"] == [["image_embed", list(SHAPE)]]
    for field in ("kind", "layout"):  # an index written before these fields were recorded
        del meta[field]
    (tmp_path / "s" / "index.json").write_text(json.dumps(meta))
    old = EmbeddingStore.open(tmp_path / "s", "vit_b:1")
    assert old.kind == "sam" and old.layout == (("image_embed", SHAPE),)
    np.testing.assert_array_equal(old.get("b").numpy(), emb[1].astype(np.float16))
    parts, size = old.get_parts("a")
    assert len(parts) == 1 and size == (3, 4)


def test_v1_and_sam2_stores_are_never_mixed(tmp_path):
    """Opening or resuming a store as the other kind fails on field 'kind' before the model ids are compared,
    and so does handing an open store of the other kind to either engine's store check."""
    from samr1.engine.cache import EmbeddingCache
    from samr1.sam import load_sam
    from samr1.sam.encoder import make_encoder

    _sam2_store(tmp_path / "v2").close()
    EmbeddingStore.create(tmp_path / "v1", "vit_b:1", SHAPE, 1024).close()
    for call in (lambda: EmbeddingStore.open(tmp_path / "v2", "sam2.1_hiera_t:x"),  # default kind: SAM v1
                 lambda: EmbeddingStore.open(tmp_path / "v2", "vit_b:1"),
                 lambda: EmbeddingStore.open(tmp_path / "v1", "vit_b:1", kind="sam2"),
                 lambda: EmbeddingStore.create(tmp_path / "v1", "vit_b:1", SHAPE, 1024, kind="sam2", layout=LAYOUT),
                 lambda: EmbeddingStore.create(tmp_path / "v2", "sam2.1_hiera_t:x", SHAPE, 1024),
                 lambda: EmbeddingStore.open(tmp_path / "v1", None).require(kind="sam2")):
        with pytest.raises(StoreError, match="field 'kind'"):
            call()
    enc = make_encoder(load_sam("tiny"), backend="torch")
    with pytest.raises(StoreError, match="field 'kind'"):
        EmbeddingCache(enc, store=EmbeddingStore.open(tmp_path / "v2", None, kind=None))
    # same kind, other layout or model: named too
    with pytest.raises(StoreError, match="field 'layout'"):
        EmbeddingStore.open(tmp_path / "v2", None, kind="sam2").require(layout=LAYOUT[:1] + LAYOUT[2:] + LAYOUT[1:2])
    with pytest.raises(StoreError, match="field 'layout'"):
        EmbeddingStore.create(tmp_path / "v2", "sam2.1_hiera_t:x", SHAPE, 1024, kind="sam2", layout=LAYOUT[:2])
    with pytest.raises(StoreError, match=r"field 'model_id'.*'sam2.1_hiera_t:x'.*'sam2.1_hiera_t:y'"):
        EmbeddingStore.open(tmp_path / "v2", "sam2.1_hiera_t:y", kind="sam2")
    EmbeddingStore.open(tmp_path / "v2", None, kind=None).close()  # kind=None inspects any store


def test_put_checks_the_maps_against_the_layout(tmp_path):
    rng = np.random.default_rng()
    store = _sam2_store(tmp_path / "s")
    maps = _maps(rng, 2)
    with pytest.raises(ValueError, match="3 maps"):
        store.put(["a", "b"], maps[0], [(1024, 1024)] * 2)  # the image embedding alone
    with pytest.raises(ValueError, match="high_res_s1"):
        store.put(["a", "b"], [maps[0], maps[1], maps[1]], [(1024, 1024)] * 2)
    bad = [m.copy() for m in maps]
    bad[2][1, 0, 0, 0] = np.inf  # one non-finite value in the last map of row 1: nothing is written
    with pytest.raises(StoreError, match="not finite"):
        store.put(["a", "b"], bad, [(1024, 1024)] * 2)
    assert len(store) == 0
    assert store.put(["a", "b"], [torch.from_numpy(m) for m in maps], [(1024, 1024)] * 2) == 2  # tensors too
    store.close()


_DROP = object()


def _set(field, value=_DROP):
    """A mutation of the parsed index: ``field`` set to ``value``, or deleted without one."""
    def mutate(meta):
        if value is _DROP:
            meta.pop(field)
        else:
            meta[field] = value
        return meta
    return mutate


CORRUPTIONS = [
    ("kind-int", _set("kind", 2), "kind"), ("kind-unknown", _set("kind", "sam3"), "kind"),
    ("kind-null", _set("kind", None), "kind"), ("kind-list", _set("kind", ["sam2"]), "kind"),
    ("layout-missing", _set("layout"), "layout"), ("layout-null", _set("layout", None), "layout"),
    ("layout-empty", _set("layout", []), "layout"), ("layout-dict", _set("layout", {"image_embed": [8, 3, 5]}), "layout"),
    ("layout-too-many", _set("layout", [["image_embed", [8, 3, 5]]] + [[f"m{i}", [1, 1, 1]] for i in range(9)]),
     "layout"),
    ("layout-entry-str", _set("layout", [["image_embed", [8, 3, 5]], "high_res_s0"]), "layout[1]"),
    ("layout-entry-2d", _set("layout", [["image_embed", [8, 3, 5]], ["high_res_s0", [2, 12]]]), "layout[1]"),
    ("layout-entry-zero", _set("layout", [["image_embed", [8, 3, 5]], ["high_res_s0", [2, 0, 20]]]), "layout[1]"),
    ("layout-entry-float", _set("layout", [["image_embed", [8, 3, 5]], ["h", [2.0, 12, 20]]]), "layout[1]"),
    ("layout-entry-bool", _set("layout", [["image_embed", [8, 3, 5]], ["h", [True, 12, 20]]]), "layout[1]"),
    ("layout-entry-noname", _set("layout", [["image_embed", [8, 3, 5]], ["", [2, 12, 20]]]), "layout[1]"),
    ("layout-repeated-name", _set("layout", [["image_embed", [8, 3, 5]], ["image_embed", [2, 12, 20]]]),
     "layout[1]"),
    ("layout-first-not-embed", _set("layout", [["h", [2, 2, 2]], ["image_embed", [8, 3, 5]]]), "layout"),
    ("layout-first-not-shape", _set("layout", [["image_embed", [8, 3, 6]], ["h", [2, 2, 2]]]), "layout"),
    ("layout-huge", _set("layout", [["image_embed", [8, 3, 5]], ["h", [1 << 20, 1 << 10, 1 << 10]]]), "layout"),
]


@pytest.mark.parametrize(("mutate", "field"), [c[1:] for c in CORRUPTIONS], ids=[c[0] for c in CORRUPTIONS])
def test_malformed_kind_or_layout_is_a_store_error_naming_the_field(tmp_path, mutate, field):
    store = _sam2_store(tmp_path / "s")
    store.put(["a"], _maps(np.random.default_rng(), 1), [(1024, 1024)])
    store.close()
    index = tmp_path / "s" / "index.json"
    index.write_text(json.dumps(mutate(json.loads(index.read_text()))))
    for open_it in (lambda: EmbeddingStore.open(tmp_path / "s", None, kind=None),
                    lambda: _sam2_store(tmp_path / "s")):
        with pytest.raises(StoreError) as info:
            open_it()
        assert f"field {field!r}" in str(info.value) and "index.json" in str(info.value)


def test_a_v1_layout_holds_one_map(tmp_path):
    EmbeddingStore.create(tmp_path / "s", "vit_b:1", SHAPE, 1024).close()
    index = tmp_path / "s" / "index.json"
    meta = json.loads(index.read_text())
    meta["layout"].append(["high_res_s0", [2, 12, 20]])
    index.write_text(json.dumps(meta))
    with pytest.raises(StoreError, match="field 'layout'"):
        EmbeddingStore.open(tmp_path / "s", "vit_b:1")
    with pytest.raises(ValueError, match="kind"):
        EmbeddingStore.create(tmp_path / "t", "vit_b:1", SHAPE, 1024, kind="sam4")
