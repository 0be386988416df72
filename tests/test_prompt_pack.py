"""Prompt packing: the torch reference and the Triton kernel (interpreted on the CPU) against upstream
segment-anything ``PromptEncoder`` run on each prompt alone, plus validation and backend selection.

Tolerance: 2e-5 absolute on tokens of magnitude ~1-3 (sin/cos of float32 arguments up to ~40 rad; the
observed difference is ~2e-6, from fp32 round-off in the frame transform and the Fourier projection).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import numpy as np
import pytest
import torch
from segment_anything.utils.transforms import ResizeLongestSide

from samr1.sam import load_sam
from samr1.sam.prompts import PromptBatch, PromptError, pack_prompts, pack_prompts_reference

ATOL = 2e-5

# Odd sizes on purpose: 1 x 1, a prime-ish sliver, non-square both ways.
SIZES = [(480, 640), (333, 517), (64, 64), (1, 1), (7, 1031), (900, 301)]


@pytest.fixture(scope="module")
def sam():
    return load_sam("tiny")


def random_batch(seed: int, n: int = 23) -> PromptBatch:
    """Mixed prompts over SIZES: box only, box + 1..3 points, points only (1..4), bg labels, edge coords."""
    rng = np.random.default_rng(seed)
    idx, boxes, points, labels = [], [], [], []
    for i in range(n):
        b = int(rng.integers(len(SIZES)))
        h, w = SIZES[b]
        kind = i % 5
        has_box = kind != 4
        npts = [0, 1, 2, 3, int(rng.integers(1, 5))][kind]
        if has_box:
            x = np.sort(rng.uniform(0, w, 2))
            y = np.sort(rng.uniform(0, h, 2))
            boxes.append([x[0], y[0], x[1], y[1]])
        else:
            boxes.append(None)
        pts = [[rng.uniform(0, w), rng.uniform(0, h)] for _ in range(npts)]
        if npts and i % 7 == 0:
            pts[0] = [0.0, 0.0]  # an edge point
        points.append(pts)
        labels.append([int(v) for v in rng.integers(0, 2, npts)])
        idx.append(b)
    return PromptBatch.from_lists(idx, boxes, points, labels, SIZES)


def upstream_tokens(sam, batch: PromptBatch, i: int) -> torch.Tensor:
    """Prompt i through upstream PromptEncoder alone, transformed exactly like SamPredictor.predict."""
    tr = ResizeLongestSide(sam.image_encoder.img_size)
    hw = tuple(batch.original_sizes[batch.image_index[i]].tolist())
    k = int(batch.point_counts()[i])
    pts = None
    if k:
        c = tr.apply_coords(batch.points[i, :k].numpy(), hw)
        pts = (torch.as_tensor(c, dtype=torch.float)[None], torch.as_tensor(batch.point_labels[i, :k].numpy(), dtype=torch.int)[None])
    box = None
    if bool(batch.has_box[i]):
        box = torch.as_tensor(tr.apply_boxes(batch.boxes[i].numpy(), hw), dtype=torch.float)
    with torch.no_grad():
        sparse, _ = sam.prompt_encoder(points=pts, boxes=box, masks=None)
    return sparse[0]


def check_against_upstream(sam, batch, tokens, counts) -> float:
    """Max |diff| over all prompts; asserts counts, shapes and zero padding rows."""
    assert tokens.shape == (batch.num_prompts, int(counts.max()), sam.prompt_encoder.embed_dim)
    worst = 0.0
    for i in range(batch.num_prompts):
        ref = upstream_tokens(sam, batch, i)
        assert int(counts[i]) == ref.shape[0], f"prompt {i}: {int(counts[i])} tokens, upstream {ref.shape[0]}"
        worst = max(worst, float((tokens[i, : ref.shape[0]] - ref).abs().max()))
        assert torch.all(tokens[i, ref.shape[0]:] == 0), f"prompt {i}: padding rows must be zero"
    return worst


def test_reference_matches_upstream_prompt_encoder(sam):
    seed = random.randrange(2**31)
    batch = random_batch(seed)
    tokens, counts = pack_prompts(sam, batch, backend="torch")
    worst = check_against_upstream(sam, batch, tokens, counts)
    assert worst <= ATOL, f"seed={seed}: max |torch pack - upstream| = {worst:.3g} > {ATOL}"


def test_single_prompt_and_labels_default(sam):
    # N = 1, labels=None -> every point foreground; points only -> one not-a-point pad token.
    batch = PromptBatch.from_lists([0], [None], [[[10.5, 3.25], [1.0, 2.0]]], None, [(33, 47)])
    assert batch.point_labels.tolist() == [[1, 1]]
    tokens, counts = pack_prompts(sam, batch, backend="torch")
    assert counts.tolist() == [3]
    assert torch.allclose(tokens[0, 2], sam.prompt_encoder.not_a_point_embed.weight[0])
    assert check_against_upstream(sam, batch, tokens, counts) <= ATOL


# The child imports triton only after TRITON_INTERPRET=1 is in its environment (triton.jit picks the
# interpreter at decoration time), whatever this process did before.
_CHILD = r"""
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("tpp", sys.argv[1])
m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
print(json.dumps(m._triton_child(int(sys.argv[2]))))
"""


def _triton_child(seed: int) -> dict:
    import samr1.kernels.prompt_pack as kp

    sam = load_sam("tiny")
    batch = random_batch(seed, n=17)
    seen = []
    real_guard = kp.launch_guard

    def spy(device):  # records the device the launcher guards, then enters the real guard
        seen.append(str(torch.device(device)))
        return real_guard(device)

    kp.launch_guard = spy
    try:
        tok_t, cnt_t = pack_prompts(sam, batch, backend="triton")
    finally:
        kp.launch_guard = real_guard
    tok_r, cnt_r = pack_prompts_reference(sam, batch)
    auto, _ = pack_prompts(sam, PromptBatch.from_lists([0], [[1, 2, 3, 4]], [[]], [[]], [(5, 5)]), backend="auto")
    return {
        "vs_upstream": check_against_upstream(sam, batch, tok_t, cnt_t),
        "vs_reference": float((tok_t - tok_r).abs().max()),
        "counts_equal": bool(torch.equal(cnt_t, cnt_r)),
        "shape_equal": tok_t.shape == tok_r.shape,
        "auto_shape": list(auto.shape),
        "guarded": seen,
    }


def test_triton_interpreted_matches_upstream_and_reference():
    pytest.importorskip("triton")
    seed = random.randrange(2**31)
    env = dict(os.environ, TRITON_INTERPRET="1")
    env.pop("SAMR1_DISABLE_TRITON", None)
    proc = subprocess.run([sys.executable, "-c", _CHILD, os.path.abspath(__file__), str(seed)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"seed={seed}: child failed:\n{proc.stderr[-3000:]}"
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["counts_equal"] and res["shape_equal"], f"seed={seed}: {res}"
    assert res["vs_upstream"] <= ATOL, f"seed={seed}: triton vs upstream {res['vs_upstream']:.3g} > {ATOL}"
    assert res["vs_reference"] <= ATOL, f"seed={seed}: triton vs torch {res['vs_reference']:.3g} > {ATOL}"
    assert res["auto_shape"] == [1, 2, 256]
    assert res["guarded"] == ["cpu"], f"the launch must run under launch_guard(tokens' device): {res['guarded']}"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.device_count() < 2,
                    reason="needs two CUDA devices: checks a launch on cuda:1 while cuda:0 is current")
def test_triton_on_second_cuda_device(sam):
    pytest.importorskip("triton")
    seed = random.randrange(2**31)
    batch = random_batch(seed, n=9)
    with torch.cuda.device(0):
        tok, cnt = pack_prompts(load_sam("tiny", device="cuda:1"), batch.to("cuda:1"), backend="triton")
    assert tok.device == torch.device("cuda:1")
    ref_tok, ref_cnt = pack_prompts_reference(sam, batch)  # same seeded weights, on the CPU
    assert torch.equal(cnt.cpu(), ref_cnt), f"seed={seed}"
    worst = float((tok.cpu() - ref_tok).abs().max())
    assert worst <= ATOL, f"seed={seed}: triton on cuda:1 vs torch reference {worst:.3g} > {ATOL}"


def test_backend_selection(sam, monkeypatch):
    batch = PromptBatch.from_lists([0], [[1, 2, 30, 40]], [[[5, 6]]], [[0]], [(50, 60)])
    auto = pack_prompts(sam, batch, backend="auto")  # CPU tensors: auto means torch
    # against upstream PromptEncoder (independent of what auto resolves to), not against the reference
    assert check_against_upstream(sam, batch, *auto) <= ATOL
    with pytest.raises(ValueError, match="backend must be"):
        pack_prompts(sam, batch, backend="cuda")
    monkeypatch.setenv("SAMR1_DISABLE_TRITON", "1")
    with pytest.raises(RuntimeError, match="SAMR1_DISABLE_TRITON"):
        pack_prompts(sam, batch, backend="triton")
    monkeypatch.delenv("SAMR1_DISABLE_TRITON")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    pytest.importorskip("triton")
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
        pack_prompts(sam, batch, backend="triton")


def _good():
    return dict(image_index=[0, 1], boxes=[[1, 2, 3, 4], None], points=[[], [[5, 6]]], labels=[[], [1]],
                original_sizes=[(10, 10), (20, 30)])


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(boxes=[[1, 2, 3], None]), r"boxes\[0\] must be \[x1, y1, x2, y2\]"),
        (dict(points=[[], [[5, 6, 7]]]), r"points\[1\]\[0\] must be \[x, y\]"),
        (dict(labels=[[], [2]]), r"labels\[1\]\[0\] = 2"),
        (dict(labels=[[], [1, 1]]), r"labels\[1\] has 2 entries but points\[1\] has 1"),
        (dict(image_index=[0]), "one entry per prompt"),
        (dict(image_index=[0, 2]), r"image_index\[1\] = 2 is out of range for 2 images"),
        (dict(image_index=[-1, 0]), r"image_index\[0\] = -1 is out of range"),
        (dict(boxes=[None, None], points=[[], [[5, 6]]]), "prompt 0 has neither a box nor points"),
        (dict(original_sizes=[(10, 10), (0, 30)]), "original_sizes must be positive"),
        (dict(boxes=[[1, 2, float("nan"), 4], None]), "NaN or infinite"),
    ],
)
def test_from_lists_validation(change, match):
    kw = _good()
    kw.update(change)
    with pytest.raises(PromptError, match=match):
        PromptBatch.from_lists(**kw)


def test_tensor_validation(sam):
    good = PromptBatch.from_lists(**_good())
    good.validate()

    def with_(**kw):
        fields = {k: getattr(good, k) for k in ("image_index", "boxes", "has_box", "points", "point_labels",
                                                 "original_sizes")}
        fields.update(kw)
        return PromptBatch(**fields)

    cases = [
        (with_(boxes=good.boxes.double()), "boxes must have dtype torch.float32"),
        (with_(points=good.points[..., :1]), r"points must have shape \(N, K, 2\) \(N=2, K=1"),
        (with_(has_box=good.has_box[:1]), r"has_box must have shape \(N,\) \(N=2\), got \(1,\)"),
        (with_(point_labels=torch.tensor([1, 1])), r"point_labels must have shape \(N, K\)"),
        (with_(point_labels=torch.tensor([[-1], [-3]])), r"point_labels\[1, 0\] = -3"),
        (with_(original_sizes=good.original_sizes.reshape(-1)), r"original_sizes must have shape"),
        (with_(image_index=[0, 1]), "must be a torch.Tensor"),
    ]
    for batch, match in cases:
        with pytest.raises(PromptError, match=match):
            batch.validate()
    # Padding (-1) before a real point in a row of K = 2.
    bad = with_(points=torch.zeros(2, 2, 2), point_labels=torch.tensor([[-1, -1], [-1, 1]]))
    with pytest.raises(PromptError, match=r"point_labels\[1\] = \[-1, 1\] has a real point after padding"):
        bad.validate()
    with pytest.raises(PromptError, match="original_sizes has 2 rows but there are 3 images"):
        pack_prompts(sam, good, num_images=3)


def test_ragged_counts_and_token_counts():
    batch = PromptBatch.from_lists([0, 0, 0], [None, [0, 0, 1, 1], [0, 0, 1, 1]], [[[1, 1]], [], [[1, 1]] * 3],
                                   [[0], [], [1, 0, 1]], [(4, 4)])
    assert batch.points.shape == (3, 3, 2)
    assert batch.point_labels.tolist() == [[0, -1, -1], [-1, -1, -1], [1, 0, 1]]
    assert batch.point_counts().tolist() == [1, 0, 3]
    assert batch.token_counts().tolist() == [2, 2, 5]
