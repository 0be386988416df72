"""Thread counts change speed, never results: decoding, the fused C++ IoU, the CPU encoder and the whole
reward give the same values for 1, 2 and 4 threads.

Why exact equality holds: ``decode_batch`` fixes its passes from the batch alone and runs every op in a
worker thread with torch single-threaded, so a pass computes the same way whichever worker runs it and
however many there are; the IoU op counts integer intersections and unions; the tiny CPU encoder's
convolutions and matmuls split their output (not their sums) over threads. Fresh random inputs each run
(the seed is in the failure message), odd sizes, ragged prompts.
"""

from __future__ import annotations

import random
import threading

import numpy as np
import pytest
import torch
from _markers import requires_cpp
from samr1.bench.bench_reward_step import make_step
from segment_anything import SamPredictor
from segment_anything.utils.transforms import ResizeLongestSide

import samr1.sam.decoder as decoder_mod
from samr1.answer import parse_answer
from samr1.engine import SamEngine
from samr1.engine.reference import score_reference
from samr1.rewards import SamR1Reward
from samr1.sam import load_sam
from samr1.sam.decoder import decode_batch, resolve_threads
from samr1.sam.prompts import PromptBatch
from samr1.threads import torch_threads

THREADS = (1, 2, 4)


@pytest.fixture(scope="module")
def sam():
    return load_sam("tiny")


def _prompts(rng, sizes, n):
    """n prompts over the images, shuffled image order, 0-3 points (some background), some without box."""
    idx, boxes, points, labels = [], [], [], []
    for i in range(n):
        b = int(rng.integers(len(sizes)))
        h, w = sizes[b]
        x, y = np.sort(rng.uniform(0, w, 2)), np.sort(rng.uniform(0, h, 2))
        k = int(rng.integers(0 if i % 3 else 1, 4))
        boxes.append([float(x[0]), float(y[0]), float(x[1]), float(y[1])] if i % 3 else None)
        points.append([[float(rng.uniform(0, w)), float(rng.uniform(0, h))] for _ in range(k)])
        labels.append([int(v) for v in rng.integers(0, 2, k)])
        idx.append(b)
    return idx, boxes, points, labels


@pytest.fixture(scope="module")
def embedded(sam):
    """Three random images of odd sizes through SAM's own set_image: (seed, sizes, embeddings, predictor
    per image)."""
    seed = random.randrange(2**31)
    rng = np.random.default_rng(seed)
    sizes = [(97, 61), (480, 640), (64, 64)]
    preds = []
    for h, w in sizes:
        p = SamPredictor(sam)
        p.set_image(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        preds.append(p)
    return seed, rng, sizes, torch.cat([p.features for p in preds]), preds


@pytest.mark.parametrize("multimask", [True, False])
def test_decode_bitwise_equal_for_any_thread_count(sam, embedded, multimask):
    seed, rng, sizes, emb, preds = embedded
    batch = PromptBatch.from_lists(*_prompts(rng, sizes, 5), sizes)  # 5 prompts: an odd last pass
    with torch.inference_mode():
        out = {t: decode_batch(sam, emb, batch, multimask=multimask, threads=t) for t in THREADS}
    for t in THREADS[1:]:
        assert torch.equal(out[t][0], out[1][0]), f"seed {seed}: logits differ between 1 and {t} threads"
        assert torch.equal(out[t][1], out[1][1]), f"seed {seed}: predicted IoUs differ between 1 and {t} threads"
    # ... and they are SAM's own outputs: upstream predict on the same image, one prompt at a time
    for i in range(batch.num_prompts):
        n_pts = int((batch.point_labels[i] >= 0).sum())
        kw = {"box": batch.boxes[i].numpy() if bool(batch.has_box[i]) else None}
        if n_pts:
            kw.update(point_coords=batch.points[i, :n_pts].numpy(), point_labels=batch.point_labels[i, :n_pts].numpy())
        _, iou, low = preds[int(batch.image_index[i])].predict(multimask_output=multimask, return_logits=True, **kw)
        assert torch.allclose(out[2][0][i], torch.from_numpy(low), atol=1e-4, rtol=0), f"seed {seed}, prompt {i}"
        assert torch.allclose(out[2][1][i], torch.from_numpy(iou), atol=1e-4, rtol=0), f"seed {seed}, prompt {i}"


def test_decode_uses_the_requested_worker_threads(sam, monkeypatch):
    """threads=k really spreads passes over k worker threads (not the caller), each torch-single-threaded."""
    rng = np.random.default_rng(0)
    sizes = [(120, 160)]
    emb = torch.from_numpy(rng.standard_normal((1, 256, 64, 64), dtype=np.float32))
    batch = PromptBatch.from_lists(*_prompts(rng, sizes, 8), sizes)
    seen: dict[int, int] = {}
    real = decoder_mod._decode_pass

    def spy(*args, **kwargs):
        seen[threading.get_ident()] = torch.get_num_threads()
        return real(*args, **kwargs)

    monkeypatch.setattr(decoder_mod, "_decode_pass", spy)
    decode_batch(sam, emb, batch, threads=2, max_prompts_per_pass=1)
    assert threading.get_ident() not in seen
    assert set(seen.values()) == {1}
    assert 1 <= len(seen) <= 2  # 8 one-prompt passes over 2 workers (one may take all under heavy load)


def test_thread_settings_do_not_leak(sam):
    """Creating worker pools and engines with other counts leaves the caller's torch threads, and those
    a new thread starts with, as they were."""

    def fresh_thread_count() -> int:
        got = []
        t = threading.Thread(target=lambda: got.append(torch.get_num_threads()))
        t.start()
        t.join()
        return got[0]

    before, before_new = torch.get_num_threads(), fresh_thread_count()
    rng = np.random.default_rng(1)
    emb = torch.from_numpy(rng.standard_normal((1, 256, 64, 64), dtype=np.float32))
    batch = PromptBatch.from_lists(*_prompts(rng, [(50, 70)], 2), [(50, 70)])
    for t in (3, 1):  # 3: a pool size no other test makes, so it is created here
        decode_batch(sam, emb, batch, threads=t)
    img = rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)
    ans = parse_answer('<think>t</think><answer>{"bbox": [100, 100, 500, 600], "points_1": [300, 300], '
                       '"points_2": [310, 320]}</answer>', image_size=(50, 70))
    engine = SamEngine(sam, threads=1 if before != 1 else 2)
    engine.score([img], [ans], [np.ones((50, 70), bool)])
    assert engine.stats["threads"] == engine.threads
    assert torch.get_num_threads() == before
    assert fresh_thread_count() == before_new


def test_bad_thread_counts_are_refused(sam):
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="threads must be a positive int"):
            resolve_threads(bad)
        with pytest.raises(ValueError, match="threads must be a positive int"):
            SamEngine(sam, threads=bad)
    assert resolve_threads(None) == torch.get_num_threads()
    with pytest.raises(ValueError, match="at most 256"):  # each count keeps a pool: the count is bounded
        resolve_threads(10_000)


@requires_cpp
def test_cpp_iou_counts_equal_for_any_thread_count(monkeypatch):
    """The C++ op allowed torch's thread count (SAMR1_CPP_THREADS=0) on a call big enough to wake several
    OpenMP threads (one per ~16M units of work: 16 masks at 1080 x 1920 are ~65M): same integer counts for
    1, 2 and 4 threads, and the torch reference's counts."""
    from samr1.ops import mask_iou_grouped
    from samr1.ops.mask_iou import mask_iou_grouped_reference, near_threshold_pixels

    monkeypatch.setenv("SAMR1_CPP_THREADS", "0")
    seed = random.randrange(2**31)
    g = torch.Generator().manual_seed(seed)
    sizes = [(1080, 1920), (1, 1), (61, 97)]
    index = torch.tensor([0] * 16 + [1, 2, 2, 1, 2])
    logits = torch.randn((len(index), 256, 256), generator=g)
    gts = [torch.rand(s, generator=g) > 0.5 for s in sizes]
    inputs = [ResizeLongestSide.get_preprocess_shape(h, w, 1024) for h, w in sizes]  # SAM's resized (h, w)
    got = {}
    for t in THREADS:
        with torch_threads(t):
            got[t] = mask_iou_grouped(logits, gts, index, inputs, sizes, backend="cpp")
    _, ri, ru = mask_iou_grouped_reference(logits, gts, index, inputs, sizes)
    for t in THREADS:
        assert torch.equal(got[t][1], got[1][1]) and torch.equal(got[t][2], got[1][2]), f"seed {seed}, {t} threads"
    # Against the reference, the fast path's contract: counts may differ only by pixels whose upsampled logit
    # lies within near_threshold_eps of the threshold (a few of 33M random pixels may).
    near = torch.zeros(len(index), dtype=torch.int64)
    for b, (isz, size) in enumerate(zip(inputs, sizes, strict=True)):
        rows = (index == b).nonzero().flatten()
        near[rows] = near_threshold_pixels(logits[rows], isz, size).sum(dim=(1, 2))
    assert ((got[1][1] - ri).abs() <= near).all() and ((got[1][2] - ru).abs() <= near).all(), \
        f"seed {seed}: C++ counts vs reference beyond the near-threshold pixels"


def test_reward_step_equal_for_any_thread_count():
    """The whole reward, cold (encoder runs) and warm (cached embeddings), with the trained tiny-shapes SAM
    so that the tiers are exercised: same IoUs and same summed rewards for 1, 2 and 4 engine threads, and
    those IoUs are the per-prompt reference path's."""
    sam = load_sam("tiny-shapes")
    seed = random.randrange(2**16)
    images, masks, completions = make_step(2, 4, seed=seed, size=(97, 130))
    answers = [parse_answer(c, image_size=im.shape[:2]) for c, im in zip(completions, images, strict=True)]
    ious, rewards = {}, {}
    for t in THREADS:
        engine = SamEngine(sam, threads=t)
        cold = engine.score(images, answers, masks)
        warm = engine.score(images, answers, masks)
        assert engine.stats["encoder_images"] == 2 and cold == warm, f"seed {seed}, {t} threads"
        ious[t] = cold
        rewards[t] = SamR1Reward(engine)(None, completions, image=images, mask=masks)
    for t in THREADS[1:]:
        assert ious[t] == ious[1], f"seed {seed}: IoUs differ between 1 and {t} threads"
        assert rewards[t] == rewards[1], f"seed {seed}: rewards differ between 1 and {t} threads"
    ref = score_reference(sam, images, answers, masks)
    np.testing.assert_allclose(ious[1], ref, atol=1e-3, err_msg=f"seed {seed}")


def test_encoder_embeddings_equal_for_any_thread_count(sam):
    from samr1.sam.encoder import make_encoder

    enc = make_encoder(sam, backend="torch", device=torch.device("cpu"), max_batch=1)
    rng = np.random.default_rng()
    imgs = [rng.integers(0, 256, (97, 61, 3), dtype=np.uint8)]
    out = {}
    for t in THREADS:
        with torch_threads(t), torch.inference_mode():
            out[t] = enc.encode(imgs)
    for t in THREADS[1:]:
        assert torch.equal(out[t], out[1]), f"embeddings differ between 1 and {t} threads"


def test_decode_in_a_forked_child_after_the_parent_made_its_pool(sam):
    """A forked worker inherits the parent's pools without their threads: it must build its own, not hang
    (a task queued on an inherited pool would never run)."""
    import multiprocessing as mp

    if "fork" not in mp.get_all_start_methods():
        pytest.skip("no fork start method on this platform")
    rng = np.random.default_rng(2)
    emb = torch.from_numpy(rng.standard_normal((1, 256, 64, 64), dtype=np.float32))
    batch = PromptBatch.from_lists(*_prompts(rng, [(40, 30)], 2), [(40, 30)])
    expected = decode_batch(sam, emb, batch, threads=2)[0]  # the parent's 2-worker pool exists now
    ctx = mp.get_context("fork")
    with ctx.Pool(1) as pool:
        got = pool.apply_async(_decode_in_child, (sam, emb, batch)).get(timeout=120)
    assert torch.equal(got, expected)


def _decode_in_child(sam, emb, batch):
    # torch's own OpenMP/MKL threads do not survive a fork either: a forked child runs torch on one
    # thread (as DataLoader workers do), or its first parallel op hangs, with or without samr1
    torch.set_num_threads(1)
    return decode_batch(sam, emb, batch, threads=2)[0]
