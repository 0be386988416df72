"""Prompt packing: the torch reference and the Triton kernel (interpreted on the CPU) against upstream
segment-anything ``PromptEncoder`` run on each prompt alone, plus validation and backend selection.

Tolerance: 2e-5 absolute on tokens of magnitude ~1-3 (sin/cos of float32 arguments up to ~40 rad; the
observed difference is ~2e-6, from fp32 round-off in the frame transform and the Fourier projection).
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from _markers import requires_two_gpus
from conftest import only_in_triton_interpreter, run_in_triton_interpreter
from segment_anything.utils.transforms import ResizeLongestSide

from samr1.ops import backends, pack_prompts, pack_prompts_reference
from samr1.sam import load_sam
from samr1.sam.prompts import PromptBatch, PromptError, frame_scales, prompt_tables

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


@only_in_triton_interpreter
def test_triton_interp_matches_upstream_and_reference(sam, monkeypatch):
    """The interpreted kernel against upstream PromptEncoder and the torch reference, launched under
    launch_guard(tokens' device) (recorded around the real guard, which still runs)."""
    import samr1.kernels.prompt_pack as kp

    seed = random.randrange(2**31)
    batch = random_batch(seed, n=17)
    seen = []
    real_guard = kp.launch_guard

    def spy(device):
        seen.append(str(torch.device(device)))
        return real_guard(device)

    monkeypatch.setattr(kp, "launch_guard", spy)
    tok_t, cnt_t = pack_prompts(sam, batch, backend="triton")
    assert backends.last("prompt_pack") == "triton"
    assert seen == ["cpu"], f"the launch must run under launch_guard(tokens' device): {seen}"
    tok_r, cnt_r = pack_prompts_reference(sam, batch)
    assert torch.equal(cnt_t, cnt_r) and tok_t.shape == tok_r.shape, f"seed={seed}"
    worst = check_against_upstream(sam, batch, tok_t, cnt_t)
    assert worst <= ATOL, f"seed={seed}: triton vs upstream {worst:.3g} > {ATOL}"
    worst = float((tok_t - tok_r).abs().max())
    assert worst <= ATOL, f"seed={seed}: triton vs torch {worst:.3g} > {ATOL}"
    # "auto" never picks the interpreter (samr1.ops.backends): CPU tensors run the reference
    auto, _ = pack_prompts(sam, PromptBatch.from_lists([0], [[1, 2, 3, 4]], [[]], [[]], [(5, 5)]), backend="auto")
    assert list(auto.shape) == [1, 2, 256] and backends.last("prompt_pack") == "torch"


@only_in_triton_interpreter
def test_triton_interp_opcheck(sam):
    """torch.library.opcheck of samr1::prompt_pack with the Triton body (schema, fake tensor, autograd
    registration, AOT dispatch), on a ragged batch and on an empty one."""
    for batch in (random_batch(random.randrange(2**31), n=5),
                  PromptBatch.from_lists([], [], [], [], [(3, 4)])):
        torch.library.opcheck(torch.ops.samr1.prompt_pack.default, _op_args(sam, batch, "triton"))


def test_triton_interpreter_child():
    """The ``@only_in_triton_interpreter`` tests of this file, in a TRITON_INTERPRET=1 child pytest."""
    run_in_triton_interpreter(__file__)


@pytest.mark.gpu
@requires_two_gpus  # checks a launch on cuda:1 while cuda:0 is current
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
    assert backends.last("prompt_pack") == "torch"
    with pytest.raises(ValueError, match="backend must be"):
        pack_prompts(sam, batch, backend="cuda")
    with pytest.raises(ValueError, match="prompt_pack has no 'cpp' body"):
        pack_prompts(sam, batch, backend="cpp")
    monkeypatch.setenv("SAMR1_DISABLE_TRITON", "1")
    with pytest.raises(RuntimeError, match="SAMR1_DISABLE_TRITON"):
        pack_prompts(sam, batch, backend="triton")
    monkeypatch.delenv("SAMR1_DISABLE_TRITON")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    pytest.importorskip("triton")
    with pytest.raises(ValueError, match="TRITON_INTERPRET"):  # CPU tensors, no interpreter
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


# ----------------------------------------------------------------------------- the torch.library op
def _op_args(sam, batch: PromptBatch, backend: str) -> tuple:
    """The arguments pack_prompts hands to samr1::prompt_pack for ``batch``."""
    gauss, label_embed, (h_in, w_in) = prompt_tables(sam)
    scale = frame_scales(batch.original_sizes, int(sam.image_encoder.img_size))
    t = int(batch.token_counts().max()) if batch.num_prompts else 0
    return (batch.points, batch.point_labels, batch.boxes, batch.has_box, batch.image_index, scale, gauss,
            label_embed, h_in, w_in, t, backend)


def test_opcheck_torch_body(sam):
    """torch.library.opcheck of samr1::prompt_pack (schema, fake tensor, autograd registration, AOT
    dispatch) with the reference body, on a ragged batch, a one-prompt batch and an empty one."""
    seed = random.randrange(2**31)
    batches = [random_batch(seed, n=7), PromptBatch.from_lists([0], [None], [[[3.0, 4.0]]], None, [(9, 11)]),
               PromptBatch.from_lists([], [], [], [], [(3, 4)])]
    for batch in batches:
        torch.library.opcheck(torch.ops.samr1.prompt_pack.default, _op_args(sam, batch, "torch"))


def test_fake_tensor_shapes(sam):
    """Under FakeTensorMode the op gives (N, T, D) float32 tokens and (N,) int64 counts without running,
    T being the argument pack_prompts reads on the host."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    batch = random_batch(random.randrange(2**31), n=6)
    args = _op_args(sam, batch, "auto")
    with FakeTensorMode(allow_non_fake_inputs=True) as mode:
        fake = [mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args]
        tokens, counts = torch.ops.samr1.prompt_pack(*fake)
    want_t = int(batch.token_counts().max())
    assert tokens.shape == (6, want_t, sam.prompt_encoder.embed_dim) and tokens.dtype == torch.float32
    assert counts.shape == (6,) and counts.dtype == torch.int64


def test_op_under_torch_compile_fullgraph(sam):
    """The op composes with torch.compile(fullgraph=True) and gives the eager tokens."""
    batch = random_batch(random.randrange(2**31), n=9)
    args = _op_args(sam, batch, "auto")

    def step(*a):
        tokens, counts = torch.ops.samr1.prompt_pack(*a)
        return tokens * 2.0, counts + 1

    got = torch.compile(step, fullgraph=True, backend="aot_eager")(*args)
    want = step(*args)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
