"""Batched SAM decoding against per-prompt upstream ``SamPredictor.predict(..., return_logits=True)``.

Real segment-anything modules, fresh random images and prompts each run (the seed is in every failure
message), on two models: ``load_sam("tiny")`` (small random encoder, standard prompt encoder and mask
decoder; its logits are ~0.4 at most) and the shipped trained ``tiny-shapes`` weights (logits up to
~60, a 384 frame and 96 x 96 low-res masks).

Tolerance, relative to the logits' scale: per prompt, max |diff| <= RTOL * max(1, max |upstream
logits of that prompt|), RTOL = 2e-5. Float32 round-off grows with the values summed, so an absolute
bound cannot fit both models. Measured max |diff| / max(1, max |logit|) over 3 seeds x 12 prompts:
3.4e-7 on ``tiny`` (absolute 3.4e-7), 2.7e-6 on ``tiny-shapes`` (absolute up to 5.5e-5, 1.1e-4 seen
elsewhere). Predicted IoUs (~0..1): absolute 1e-4 (observed <= 7e-7).
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from segment_anything import SamPredictor

import samr1.sam.decoder as decoder_mod
from samr1.sam import load_sam
from samr1.sam.decoder import decode_batch, default_max_prompts_per_pass, select_best
from samr1.sam.prompts import PromptBatch, PromptError

RTOL = 2e-5  # on logits, relative to max(1, the prompt's largest |logit|)
IOU_ATOL = 1e-4  # on predicted IoUs
SIZES = [(480, 640), (333, 517), (64, 64)]


@pytest.fixture(scope="module")
def sam():
    return load_sam("tiny")


@pytest.fixture(scope="module")
def trained_sam():
    return load_sam("tiny-shapes")


def make_prompts(rng, sizes, n):
    """Mixed prompts in shuffled image order: box only, box + 1 point, box + 2 points, points only
    (1 or 3), background points; one point on the image corner."""
    idx, boxes, points, labels = [], [], [], []
    kinds = [(True, 0), (True, 1), (True, 2), (False, 1), (False, 3), (True, 2)]
    for i in range(n):
        b = int(rng.integers(len(sizes)))
        h, w = sizes[b]
        has_box, npts = kinds[i % len(kinds)]
        x = np.sort(rng.uniform(0, w, 2))
        y = np.sort(rng.uniform(0, h, 2))
        boxes.append([float(x[0]), float(y[0]), float(x[1]), float(y[1])] if has_box else None)
        pts = [[float(rng.uniform(0, w)), float(rng.uniform(0, h))] for _ in range(npts)]
        if i == 2:
            pts[-1] = [float(w - 1), float(h - 1)]
        lab = [int(v) for v in rng.integers(0, 2, npts)]  # 0 = background point
        idx.append(b)
        points.append(pts)
        labels.append(lab)
    return idx, boxes, points, labels


def make_step(sam, n: int) -> dict:
    """Images of different sizes, embeddings from set_image, and upstream per-prompt outputs for both
    multimask settings (upstream predict is the slow part: computed once per module and model)."""
    seed = random.randrange(2**31)
    rng = np.random.default_rng(seed)
    sizes = SIZES
    idx, boxes, points, labels = make_prompts(rng, sizes, n)
    pred = SamPredictor(sam)
    embeddings = []
    expected = {True: {}, False: {}}
    for b, (h, w) in enumerate(sizes):
        pred.set_image((rng.random((h, w, 3)) * 255).astype(np.uint8))
        embeddings.append(pred.features[0].clone())
        for i in [i for i in range(len(idx)) if idx[i] == b]:
            kw = dict(
                point_coords=np.array(points[i]) if points[i] else None,
                point_labels=np.array(labels[i]) if points[i] else None,
                box=np.array(boxes[i]) if boxes[i] is not None else None,
                return_logits=True,
            )
            for mm in (True, False):
                _, iou, low = pred.predict(multimask_output=mm, **kw)
                expected[mm][i] = (torch.from_numpy(low), torch.from_numpy(iou))
    batch = PromptBatch.from_lists(idx, boxes, points, labels, sizes)
    low_res = tuple(expected[True][0][0].shape[-2:])
    return dict(seed=seed, emb=torch.stack(embeddings), batch=batch, expected=expected, decoded={}, low_res=low_res)


@pytest.fixture(scope="module")
def step(sam):
    return make_step(sam, 12)


@pytest.fixture(scope="module")
def trained_step(trained_sam):
    return make_step(trained_sam, 6)


def decoded(sam, step, multimask, mpp):
    """decode_batch on the step, memoised per (multimask, mpp) to keep the module's run time small."""
    key = (multimask, mpp)
    if key not in step["decoded"]:
        step["decoded"][key] = decode_batch(sam, step["emb"], step["batch"], multimask=multimask,
                                            max_prompts_per_pass=mpp)
    return step["decoded"][key]


def _compare(step, logits, iou, mm, what):
    n = step["batch"].num_prompts
    c = 3 if mm else 1
    assert logits.shape == (n, c, *step["low_res"]) and iou.shape == (n, c), what
    worst_rel, worst_abs, scale_at = 0.0, 0.0, 0.0
    for i in range(n):
        want = step["expected"][mm][i][0]
        scale = max(1.0, float(want.abs().max()))
        d = float((logits[i] - want).abs().max())
        worst_abs = max(worst_abs, d)
        if d / scale > worst_rel:
            worst_rel, scale_at = d / scale, scale
    worst_i = max(float((iou[i] - step["expected"][mm][i][1]).abs().max()) for i in range(n))
    assert worst_rel <= RTOL, (f"seed={step['seed']} {what}: max |logits diff| / max(1, max |logit|) {worst_rel:.3g} > "
                               f"{RTOL} (|diff| {worst_rel * scale_at:.3g} at logit scale {scale_at:.3g})")
    assert worst_i <= IOU_ATOL, f"seed={step['seed']} {what}: max |iou diff| {worst_i:.3g} > {IOU_ATOL}"
    return worst_rel, worst_abs


@pytest.mark.parametrize("multimask", [True, False])
def test_matches_per_prompt_predict(sam, step, multimask):
    n = step["batch"].num_prompts
    # Default (2 per pass on the CPU): passes straddle images; n per pass: one pass mixing all token
    # counts (masked padding).
    for mpp in (None, n):
        logits, iou = decoded(sam, step, multimask, mpp)
        _compare(step, logits, iou, multimask, f"multimask={multimask} max_prompts_per_pass={mpp}")


@pytest.mark.parametrize("multimask", [True, False])
def test_trained_weights_match_per_prompt_predict(trained_sam, trained_step, multimask):
    """The shipped tiny-shapes weights: real logit magnitudes (tens), where an absolute 1e-4 would fail a
    correct decoder; one pass mixing every token count."""
    n = trained_step["batch"].num_prompts
    logits, iou = decode_batch(trained_sam, trained_step["emb"], trained_step["batch"], multimask=multimask,
                               max_prompts_per_pass=n)
    _compare(trained_step, logits, iou, multimask, f"tiny-shapes multimask={multimask}")
    scale = max(float(v[0].abs().max()) for v in trained_step["expected"][multimask].values())
    assert scale > 1.0, f"seed={trained_step['seed']}: trained logits should exceed 1 in magnitude, max {scale:.3g}"


def test_batched_upscaler_path(sam, step, monkeypatch):
    # The CUDA path runs the upscaler batched over a pass; exercise it on the CPU.
    monkeypatch.setattr(decoder_mod, "_PER_PROMPT_UPSCALER_ON_CPU", False)
    logits, iou = decode_batch(sam, step["emb"], step["batch"], multimask=True, max_prompts_per_pass=5)
    _compare(step, logits, iou, True, "batched upscaler")


def test_pad_tokens_would_change_output(sam, step):
    # Why masking is needed: upstream with one extra not-a-point token gives different logits, far above
    # the tolerance; decode_batch mixes token counts in one pass and still matches (test above).
    pe, md = sam.prompt_encoder, sam.mask_decoder
    emb = step["emb"][:1]
    with torch.no_grad():
        sparse, dense = pe(points=None, boxes=torch.tensor([[100.0, 100.0, 600.0, 500.0]]), masks=None)
        padded = torch.cat([sparse, pe.not_a_point_embed.weight[None]], dim=1)
        a, _ = md(emb, pe.get_dense_pe(), sparse, dense, True)
        b, _ = md(emb, pe.get_dense_pe(), padded, dense, True)
    assert float((a - b).abs().max()) > 100 * RTOL * max(1.0, float(a.abs().max()))


def test_select_best(sam, step):
    logits, iou = decoded(sam, step, True, None)
    best, index = select_best(logits, iou, return_index=True)
    assert torch.equal(select_best(logits, iou), best)
    for i in range(logits.shape[0]):
        k = int(np.argmax(step["expected"][True][i][1].numpy()))
        assert int(index[i]) == k, f"seed={step['seed']}: prompt {i} best mask {int(index[i])} != upstream argmax {k}"
        assert torch.equal(best[i], logits[i, k])
    # Ties go to the first index; C = 1 is the identity.
    lg = torch.randn(2, 3, 5, 7)
    b2, i2 = select_best(lg, torch.tensor([[0.5, 0.5, 0.1], [0.0, 0.2, 0.9]]), return_index=True)
    assert i2.tolist() == [0, 2] and torch.equal(b2[1], lg[1, 2])
    b1, i1 = select_best(lg[:, :1], torch.zeros(2, 1), return_index=True)
    assert i1.tolist() == [0, 0] and torch.equal(b1, lg[:, 0])
    with pytest.raises(ValueError, match="same N, C"):
        select_best(lg, torch.zeros(2, 2))


def test_empty_batch(sam, step):
    empty = PromptBatch.from_lists([], [], [], [], SIZES)
    logits, iou = decode_batch(sam, step["emb"], empty, multimask=False)
    assert logits.shape == (0, 1, 256, 256) and iou.shape == (0, 1)


def test_default_pass_size():
    assert default_max_prompts_per_pass("cpu") >= 1
    assert default_max_prompts_per_pass("cuda") >= default_max_prompts_per_pass("cpu")


def test_validation(sam, step):
    emb, batch = step["emb"], step["batch"]
    with pytest.raises(ValueError, match=r"embeddings must have shape \(B, 256, 64, 64\)"):
        decode_batch(sam, emb[:, :, :32], batch)
    with pytest.raises(ValueError, match=r"embeddings must have shape"):
        decode_batch(sam, emb[0], batch)
    with pytest.raises(ValueError, match="embeddings must be float32"):
        decode_batch(sam, emb.double(), batch)
    with pytest.raises(TypeError, match="embeddings must be a torch.Tensor"):
        decode_batch(sam, emb.numpy(), batch)
    with pytest.raises(PromptError, match="original_sizes has 3 rows but there are 2 images"):
        decode_batch(sam, emb[:2], batch)
    with pytest.raises(ValueError, match="max_prompts_per_pass must be a positive int"):
        decode_batch(sam, emb, batch, max_prompts_per_pass=0)
    with pytest.raises(TypeError, match="PromptBatch"):
        decode_batch(sam, emb, {"boxes": []})
    bad = PromptBatch(**{**batch.__dict__, "image_index": batch.image_index.clone().fill_(7)})
    with pytest.raises(PromptError, match=r"image_index\[0\] = 7 is out of range for 3 images"):
        decode_batch(sam, emb, bad)
