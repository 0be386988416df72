"""EmbeddingCache: content keys, one batched encode per call, LRU by bytes, store reads, threads.

Reference embeddings come from the torch fp32 encoder, which equals ``SamPredictor.set_image(...).features``
(tests/test_encoder.py). Tolerance 1e-5 absolute for embeddings the cache encoded itself (same encoder,
possibly another batch composition), float16 rounding (rtol 1e-3) for store hits.
"""

from __future__ import annotations

import re
import threading
import warnings

import numpy as np
import pytest
import torch

from samr1.engine.cache import EmbeddingCache
from samr1.io import InputError
from samr1.sam import load_sam
from samr1.sam.encoder import make_encoder
from samr1.store import EmbeddingStore, StoreError, StoreWarning

EMB_BYTES = 256 * 64 * 64 * 4  # one float32 embedding of the tiny (and every upstream) SAM


@pytest.fixture(scope="module")
def encoder():
    return make_encoder(load_sam("tiny"), backend="torch", max_batch=8)


@pytest.fixture(scope="module")
def pool(encoder):
    """Four random images of odd sizes and their reference embeddings (one at a time)."""
    rng = np.random.default_rng()
    imgs = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in [(31, 47), (64, 17), (29, 29), (50, 81)]]
    refs = [encoder.encode([img])[0] for img in imgs]
    return imgs, refs


def _close(a, b):
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_repeats_and_equal_copies_encoded_once_in_one_call(encoder, pool):
    imgs, refs = pool
    a, b = imgs[0], imgs[1]
    cache = EmbeddingCache(encoder, cache_bytes=16 * EMB_BYTES)
    emb, sizes = cache.get_or_encode([a, b, a, a.copy(), b.copy()])  # equal pixels, different objects
    s = cache.stats
    assert (s["encoder_images"], s["encoder_calls"], s["cache_misses"], s["cache_hits"]) == (2, 1, 2, 3)
    assert emb.shape == (5, 256, 64, 64) and emb.dtype == torch.float32
    for i, ref in zip([0, 1, 0, 0, 1], [refs[0], refs[1], refs[0], refs[0], refs[1]], strict=True):
        _close(emb[i], ref)
    assert sizes == encoder.input_sizes([a, b, a, a, b])
    # A second call encodes nothing, in any order.
    emb2, sizes2 = cache.get_or_encode([b.copy(), a])
    s = cache.stats
    assert (s["encoder_images"], s["encoder_calls"], s["cache_hits"]) == (2, 1, 5)
    _close(emb2[0], refs[1])
    _close(emb2[1], refs[0])
    assert sizes2 == [sizes[1], sizes[0]]
    assert s["entries"] == 2 and s["bytes_held"] == 2 * EMB_BYTES


def test_all_misses_of_a_call_in_one_encoder_call_chunked(pool):
    imgs, refs = pool
    enc = make_encoder(load_sam("tiny"), backend="torch", max_batch=3)
    cache = EmbeddingCache(enc, cache_bytes=16 * EMB_BYTES)
    batch = cache.lookup([imgs[3], imgs[0], imgs[3], imgs[1], imgs[2]])
    assert cache.stats["encoder_calls"] == 1 and cache.stats["encoder_images"] == 4  # chunks of 3 + 1 inside
    assert batch.index == [0, 1, 0, 2, 3] and len(batch.keys) == 4
    for row, i in enumerate([3, 0, 1, 2]):
        _close(batch.embeddings[row], refs[i])


def test_lru_evicts_least_recently_used_and_re_encodes(encoder, pool):
    imgs, refs = pool
    a, b, c = imgs[:3]
    cache = EmbeddingCache(encoder, cache_bytes=2 * EMB_BYTES)
    cache.get_or_encode([a, b])
    ka, kb, kc = cache.key(a), cache.key(b), cache.key(c)
    assert cache.keys() == [ka, kb]
    cache.get_or_encode([a])  # touch a: b is now least recently used
    assert cache.keys() == [kb, ka]
    emb, _ = cache.get_or_encode([c])
    assert cache.keys() == [ka, kc] and cache.stats["evictions"] == 1
    _close(emb[0], refs[2])
    before = cache.stats["encoder_images"]
    emb, _ = cache.get_or_encode([b])  # evicted: encoded again, and a (now LRU) goes
    assert cache.stats["encoder_images"] == before + 1
    assert cache.keys() == [kc, kb] and cache.stats["evictions"] == 2
    _close(emb[0], refs[1])
    assert cache.stats["bytes_held"] == 2 * EMB_BYTES and len(cache) == 2


def test_cache_smaller_than_one_embedding_still_returns(encoder, pool):
    imgs, refs = pool
    cache = EmbeddingCache(encoder, cache_bytes=EMB_BYTES - 1)
    emb, _ = cache.get_or_encode([imgs[0], imgs[0]])
    _close(emb[0], refs[0])
    _close(emb[1], refs[0])
    assert cache.stats["entries"] == 0 and cache.stats["bytes_held"] == 0 and cache.stats["encoder_images"] == 1
    cache.get_or_encode([imgs[0]])
    assert cache.stats["encoder_images"] == 2  # nothing was kept


def test_threads_get_consistent_results_and_encode_each_image_once(encoder, pool):
    imgs, refs = pool
    cache = EmbeddingCache(encoder, cache_bytes=16 * EMB_BYTES)
    n_threads = 4
    barrier = threading.Barrier(n_threads)
    results, errors = {}, []
    rng = np.random.default_rng()
    plans = [list(rng.choice(4, size=3, replace=True)) for _ in range(n_threads)]

    def work(t):
        try:
            barrier.wait()
            # copies: equal pixels as different objects in every thread
            emb, _ = cache.get_or_encode([imgs[i].copy() for i in plans[t]])
            results[t] = emb
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    for t in range(n_threads):
        for row, i in enumerate(plans[t]):
            _close(results[t][row], refs[i])
    distinct = len({int(i) for p in plans for i in p})
    s = cache.stats
    assert s["encoder_images"] == distinct  # in-flight keys are waited for, not encoded twice
    assert s["cache_hits"] + s["cache_misses"] == 3 * n_threads and s["cache_misses"] == distinct


def test_store_is_read_before_encoding(encoder, pool, tmp_path):
    imgs, refs = pool
    store = EmbeddingStore.create(tmp_path / "store", encoder.model_id, encoder.embedding_shape, encoder.frame)
    store.put([store.key(imgs[0])], refs[0][None], encoder.input_sizes(imgs[:1]))
    store.flush()
    ro = EmbeddingStore.open(tmp_path / "store", encoder.model_id)
    cache = EmbeddingCache(encoder, cache_bytes=16 * EMB_BYTES, store=ro)
    emb, sizes = cache.get_or_encode([imgs[1], imgs[0]])
    s = cache.stats
    assert s["store_hits"] == 1 and s["encoder_images"] == 1 and s["cache_misses"] == 2
    torch.testing.assert_close(emb[1], refs[0], rtol=1e-3, atol=1e-3)  # float16 storage
    _close(emb[0], refs[1])
    assert sizes == encoder.input_sizes([imgs[1], imgs[0]])
    other = EmbeddingStore.create(tmp_path / "other", "vit_h:deadbeef", encoder.embedding_shape, encoder.frame)
    with pytest.raises(StoreError, match=r"vit_h:deadbeef.*tiny:random"):
        EmbeddingCache(encoder, store=other)
    # same model, embeddings written by another precision: usable, with a warning naming both encoders
    bf16 = EmbeddingStore.create(tmp_path / "bf16", encoder.model_id, encoder.embedding_shape, encoder.frame,
                                 encoder="torch-bf16")
    with pytest.warns(UserWarning, match=rf"'torch-bf16'.*'{encoder.name}'"):
        EmbeddingCache(encoder, store=bf16)
    # same precision (another fp32 backend), or a store without an encoder record: no warning
    onnx = EmbeddingStore.create(tmp_path / "onnx", encoder.model_id, encoder.embedding_shape, encoder.frame,
                                 encoder="onnxruntime-cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        EmbeddingCache(encoder, store=onnx)
        EmbeddingCache(encoder, store=ro)


def test_bad_inputs(encoder):
    with pytest.raises(ValueError, match="cache_bytes"):
        EmbeddingCache(encoder, cache_bytes=-1)
    with pytest.raises(TypeError, match="ImageEncoder"):
        EmbeddingCache(object())
    cache = EmbeddingCache(encoder)
    with pytest.raises(InputError, match=r"images\[1\]"):
        cache.get_or_encode([np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.float32)])
    assert cache.stats["cache_misses"] == 0  # validation happens before any state changes
    emb, sizes = cache.get_or_encode([])
    assert emb.shape == (0, 256, 64, 64) and sizes == []


@pytest.mark.parametrize("legacy", [False, True], ids=["digests", "format-1"])
def test_non_finite_store_rows_are_re_encoded_with_a_warning(encoder, pool, tmp_path, legacy):
    """A store row damaged with NaN / inf is re-encoded with a warning: caught by its digest (stores with
    per-row digests), or by the finiteness check (format-1 stores, which have none)."""
    import json

    imgs, refs = pool
    store = EmbeddingStore.create(tmp_path / "s", encoder.model_id, encoder.embedding_shape, encoder.frame,
                                  encoder=encoder.name)
    keys = [store.key(img) for img in imgs[:3]]
    store.put(keys, torch.stack(refs[:3]), encoder.input_sizes(imgs[:3]))
    store.close()
    # Damage rows 1 and 2 on disk behind samr1's back (a NaN in one, a -inf in the other), at random offsets.
    row_bytes = EMB_BYTES // 2  # float16 rows
    rng = np.random.default_rng()
    with open(tmp_path / "s" / "embeddings.f16", "r+b") as f:
        for row, bad in ((1, np.nan), (2, -np.inf)):
            f.seek(row * row_bytes + 2 * int(rng.integers(0, row_bytes // 2)))
            f.write(np.array([bad], np.float16).tobytes())
    if legacy:
        index = tmp_path / "s" / "index.json"
        meta = json.loads(index.read_text())
        del meta["digests"]
        index.write_text(json.dumps({**meta, "format": 1}))
        with pytest.warns(StoreWarning, match="format 1"):
            store = EmbeddingStore.open(tmp_path / "s", encoder.model_id)
    else:
        store = EmbeddingStore.open(tmp_path / "s", encoder.model_id)
    cache = EmbeddingCache(encoder, cache_bytes=16 * EMB_BYTES, store=store)
    with pytest.warns(StoreWarning) as record:
        emb, sizes = cache.get_or_encode([imgs[0], imgs[1], imgs[2], imgs[1]])
    messages = " ".join(str(w.message) for w in record)
    said = "holds non-finite" if legacy else "does not match the digest"
    assert re.search(rf"{re.escape(keys[1])} {said}", messages)
    assert re.search(rf"{re.escape(keys[2])} {said}", messages) and keys[0] not in messages
    s = cache.stats
    counted = "store_nonfinite" if legacy else "store_damaged"
    assert (s["store_hits"], s[counted], s["encoder_images"], s["encoder_calls"]) == (1, 2, 2, 1)
    assert bool(torch.isfinite(emb).all())
    torch.testing.assert_close(emb[0], refs[0], rtol=1e-3, atol=1e-3)  # the intact row, float16 storage
    for row, i in ((1, 1), (2, 2), (3, 1)):
        _close(emb[row], refs[i])  # re-encoded in float32
    assert sizes == encoder.input_sizes([imgs[0], imgs[1], imgs[2], imgs[1]])


def test_byte_lru_evicts_least_recent_and_keeps_its_byte_count():
    from samr1.lru import ByteLRU

    lru = ByteLRU(10, len)
    assert lru.put("a", "xxxx") == 0 and lru.put("b", "yyyy") == 0
    assert lru.get("a") == "xxxx"  # "a" is now the most recent
    assert lru.put("c", "zzzz") == 1 and "b" not in lru and lru.keys() == ["a", "c"]
    assert lru.put("a", "xx") == 0 and lru.nbytes == 6  # a replaced value is not counted twice
    assert lru.put("d", "w" * 11) == 0 and "d" not in lru and lru.nbytes == 6  # larger than the budget: not kept
    lru.clear()
    assert len(lru) == 0 and lru.nbytes == 0
    with pytest.raises(ValueError, match="max_bytes"):
        ByteLRU(-1, len)
