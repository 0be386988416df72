"""SamR1Reward on hostile rows: images, masks and completions fuzzed together (hypothesis) on a real tiny SAM.

The reward promises never to raise on a malformed row: a bad image or mask scores 0 for the mask-based
components with a counted reason, a bad completion 0 for what it fails. Every exception that escapes is a
failure here. Valid images come from a small pool in many equivalent forms (array, PIL, PNG path, uint16,
RGBA, EXIF-free PIL copy), so the embedding cache keeps the encoder to one pass per pooled image and a
second property can be checked: the SAME pixels in another form give the SAME rewards.
"""

from __future__ import annotations

import json
import math
import struct
import warnings
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from samr1.io import rle_encode

# every component: SAM's IoU (tiered and continuous) and Seg-Zero's box/point rewards on the ground truth
ALL = ("think", "answer", "iou", "mask_iou", "box_iou", "box_l1", "point_dist")
MAX_REWARD = 1.0 + 1.0 + 4.0 + 1.0 + 1.0 + 1.0 + 1.0  # the top tier is 4 (default tiers)


def _png_header_only(w, h):
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    import torch

    from samr1.engine import SamEngine
    from samr1.rewards import SamR1Reward
    from samr1.sam import load_sam

    torch.manual_seed(0)
    engine = SamEngine(load_sam("tiny"))
    d = tmp_path_factory.mktemp("fuzz")
    rng = np.random.default_rng()
    pool = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in ((24, 32, 3), (13, 9, 3))]
    paths = []
    for k, a in enumerate(pool):
        p = d / f"pool{k}.png"
        Image.fromarray(a).save(p)
        paths.append(str(p))
    (d / "bomb.png").write_bytes(_png_header_only(30000, 30000))
    (d / "bomb2.png").write_bytes(_png_header_only(10000, 10000))
    (d / "garbage.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(rng.integers(0, 256, 300, dtype=np.uint8)))
    good = d / "good.png"
    Image.fromarray(pool[0]).save(good)
    (d / "truncated.png").write_bytes(good.read_bytes()[:60])
    closed = Image.open(good)  # opened lazily, then closed before its pixels were read
    closed.close()
    return {"engine": engine, "reward_cls": SamR1Reward, "pool": pool, "paths": paths, "dir": d, "closed": closed}


# ------------------------------------------------------------------------------ strategies

_FORMS = ["array", "pil", "path", "uint16", "rgba", "list_of_images"]


def _image_form(world, k, form):
    a = world["pool"][k]
    if form == "array":
        return a
    if form == "pil":
        return Image.fromarray(a)
    if form == "path":
        return world["paths"][k]
    if form == "uint16":
        return a.astype(np.uint16) * 257  # scales back to exactly a
    if form == "rgba":
        return np.concatenate([a, np.full(a.shape[:2] + (1,), 7, np.uint8)], axis=2)
    return [Image.fromarray(a)]  # TRL's "images" column: the first image is used


def _hostile_images(world):
    d = world["dir"]
    nan = np.zeros((5, 6, 3), np.float32)
    nan[1, 1, 1] = np.nan
    return st.sampled_from([
        nan, np.zeros((5, 6, 3), np.int64), np.zeros((5, 6, 3), bool), np.zeros((5, 6, 3), complex),
        np.zeros((5, 6, 3), object), np.zeros((0, 6, 3), np.uint8), np.zeros((5, 0), np.uint8),
        np.zeros((5, 6, 5), np.uint8), np.zeros((5,), np.uint8), np.zeros((2, 5, 6, 3), np.uint8),
        np.zeros((1, 3000), np.uint8),  # resizes to < 1 px: the engine refuses it
        str(d / "bomb.png"), str(d / "bomb2.png"), str(d / "garbage.png"), str(d / "truncated.png"),
        str(d / "does_not_exist.png"), str(d), str(d / "nul\0.png"), "", b"\x89PNG", None, 3, 2.5, {"a": 1},
        [[1, 2], [3, 4]], [], Image.fromarray(nan[..., 0]), Image.new("RGB", (0, 4)), Image.new("La", (3, 2)),
        world["closed"],
    ])


def _hostile_masks(shape):
    h, w = shape
    return st.sampled_from([
        {"size": [10**9, 10**9], "counts": [10**18]},
        {"size": [1e9, 1e9], "counts": "0"},
        {"size": [h + 1, w], "counts": [(h + 1) * w]},  # a valid RLE of another size
        {"size": [h, w], "counts": "not rle!"},
        {"size": [h, w], "counts": [h * w + 1]},
        {"size": [h, w], "counts": [2**70]},
        {"size": [h, w]},
        {"size": "hw", "counts": [1]},
        [[True] * w] * (h - 1) + [[True] * (w + 1)],  # ragged
        [[True] * w] * h + [True],
        [["x"] * w] * h,
        [[10**40] * w] * h,
        np.zeros((h, w + 1), bool), np.full((h, w), np.nan), np.zeros((h, w, 5), np.uint8),
        # ([] is not here: it is a row's empty instance list, an empty target, see samr1.rewards.truth)
        np.zeros((h, w), object), None, "no/such/mask.png", {"counts": []}, 7,
    ])


_num = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(10**30), 10**30),
    st.sampled_from(["1" * 5000, "1e999", "-1e999", "NaN", "Infinity", "0x10", "[]", "{}", "null", "true"]),
)


@st.composite
def _completions(draw):
    kind = draw(st.integers(0, 7))
    if kind == 0:
        return draw(st.text(max_size=200))
    if kind == 1:  # an answer with hostile numbers, JSON or Python-literal-ish
        box = [draw(_num) for _ in range(draw(st.integers(0, 5)))]
        pts = [[draw(_num) for _ in range(2)] for _ in range(draw(st.integers(0, 3)))]
        body = "{" + f'"bbox": [{", ".join(map(str, box))}]' + "".join(
            f', "points_{i + 1}": [{", ".join(map(str, p))}]' for i, p in enumerate(pts)) + "}"
        return f"<think>{draw(st.text(max_size=20))}</think><answer>{body}</answer>"
    if kind == 2:  # a plausible answer in the 840 frame (these reach SAM)
        x1, y1 = draw(st.integers(0, 700)), draw(st.integers(0, 700))
        x2, y2 = x1 + draw(st.integers(1, 139)), y1 + draw(st.integers(1, 139))
        ans = {"bbox": [x1, y1, x2, y2], "points_1": [x1, y1], "points_2": [x2, y2]}
        return f"<think>ok</think><answer>{json.dumps(ans)}</answer>"
    if kind == 3:  # deep nesting
        depth = draw(st.sampled_from([100, 10_000, 100_000]))
        return "<think></think><answer>" + draw(st.sampled_from(["[", "{\"a\":", "("])) * depth + "</answer>"
    if kind == 4:  # TRL conversational form, sometimes malformed
        content = draw(st.one_of(st.text(max_size=50), st.none(), st.integers(),
                                 st.lists(st.one_of(st.text(max_size=10), st.dictionaries(st.text(max_size=5),
                                                                                          st.text(max_size=5))),
                                          max_size=3)))
        return [{"role": draw(st.sampled_from(["assistant", "user", 3])), "content": content}]
    if kind == 5:
        return draw(st.sampled_from([None, 42, 1.5, b"bytes", {"role": "assistant"}, {"content": 3}, [], [None], ()]))
    if kind == 6:  # many tags
        return "<think>" * 2000 + "<answer>" * 2000 + "</answer>"
    return "<answer>" + "1" * draw(st.sampled_from([10, 5000, 50_000])) + "</answer>"


@st.composite
def _rows(draw, world):
    n = draw(st.integers(1, 4))
    completions, images, masks, canon_images, canon_masks, valid = [], [], [], [], [], []
    shared_k = draw(st.integers(0, 1))  # GRPO: copies of one prompt share one image object
    shared = None
    for _ in range(n):
        completions.append(draw(_completions()))
        if draw(st.integers(0, 3)) == 0:
            img = draw(_hostile_images(world))
            images.append(img)
            canon_images.append(img)
            shape = (7, 5)
            ok_img = False
        else:
            k = shared_k if draw(st.booleans()) else draw(st.integers(0, 1))
            if k == shared_k and shared is not None and draw(st.booleans()):
                img = shared
            else:
                img = _image_form(world, k, draw(st.sampled_from(_FORMS)))
                shared = img if k == shared_k else shared
            images.append(img)
            canon_images.append(world["pool"][k])
            shape = world["pool"][k].shape[:2]
            ok_img = True
        if draw(st.integers(0, 2)) == 0:
            m = draw(_hostile_masks(shape))
            masks.append(m)
            canon_masks.append(m)
            valid.append(False)
        else:
            seed = draw(st.integers(0, 2**32 - 1))
            gt = np.random.default_rng(seed).random(shape) < draw(st.sampled_from([0.0, 0.3, 0.7, 1.0]))
            form = draw(st.sampled_from(["bool", "uint8", "lists", "rle", "rle_list", "pil", "float"]))
            masks.append({"bool": gt, "uint8": gt.astype(np.uint8) * 255, "lists": gt.tolist(),
                          "rle": rle_encode(gt), "rle_list": rle_encode(gt, compressed=False),
                          "pil": Image.fromarray(gt), "float": gt.astype(np.float32)}[form])
            canon_masks.append(gt)
            valid.append(ok_img)
    return completions, images, masks, canon_images, canon_masks, valid


# ------------------------------------------------------------------------------ the fuzz


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@settings(max_examples=40, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example])
@given(data=st.data())
def test_reward_never_raises_on_hostile_rows(world, data):
    completions, images, masks, canon_images, canon_masks, valid = data.draw(_rows(world))
    reward = world["reward_cls"](world["engine"], components=ALL)
    n = len(completions)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # bad rows warn by design; escaping exceptions fail
        got = reward(None, completions, image=images, mask=masks)
        per_component = [f(None, completions, image=images, mask=masks) for f in reward.functions()]
        canon = world["reward_cls"](world["engine"], components=ALL)
        want = canon(None, completions, image=canon_images, mask=canon_masks)
    assert len(got) == n and all(isinstance(v, float) and math.isfinite(v) for v in got), got
    assert all(0.0 <= v <= MAX_REWARD for v in got), got
    assert [sum(col) for col in zip(*per_component, strict=True)] == pytest.approx(got)
    # the same pixels in another form score the same; a row without a usable image+mask gets no IoU reward
    assert got == want, (got, want)
    for i in range(n):
        if not valid[i]:  # no usable image + mask: every ground-truth component is 0
            assert [per_component[ALL.index(c)][i] for c in ALL[2:]] == [0.0] * (len(ALL) - 2)
    codes = reward.stats["reasons"]
    n_bad_rows = sum(1 for v in valid if not v)
    n_counted = sum(codes[c] for c in ("bad_image", "bad_mask", "mask_size_mismatch"))
    assert n_counted >= n_bad_rows, (dict(codes), valid)


def test_hostile_inputs_through_the_reward_by_hand(world):
    """The specific cases: a decompression bomb, a 1e9 x 1e9 RLE, an RLE of another size, 16-bit and list
    forms; each bad row scores 0 for its IoU with its counted reason, each good form scores as the array."""
    reward = world["reward_cls"](world["engine"], components=("think", "answer", "iou", "mask_iou"))
    a = world["pool"][0]
    gt = np.zeros(a.shape[:2], bool)
    gt[4:20, 5:25] = True
    text = ('<think>t</think><answer>{"bbox": [100, 100, 800, 760], "points_1": [400, 400], '
            '"points_2": [500, 420]}</answer>')
    d = world["dir"]
    rows = [
        (str(d / "bomb.png"), gt, "bad_image"),
        (a, {"size": [10**9, 10**9], "counts": [10**18]}, "mask_size_mismatch"),
        (a, {"size": [a.shape[0], a.shape[1] + 3], "counts": "!!garbage"}, "mask_size_mismatch"),
        (a, [[True] * a.shape[1]] * (a.shape[0] - 1) + [[True]], "bad_mask"),
        (a, gt, "ok"), (a.astype(np.uint16) * 257, gt.tolist(), "ok"), (world["paths"][0], rle_encode(gt), "ok"),
    ]
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        completions, images, masks = [text] * len(rows), [r[0] for r in rows], [r[1] for r in rows]
        vals = [f(None, completions, image=images, mask=masks) for f in reward.functions()]  # one computation
    codes = reward.stats["reasons"]
    assert (codes["bad_image"], codes["bad_mask"], codes["mask_size_mismatch"]) == (1, 1, 2), [str(w.message) for w in rec]
    msgs = [str(w.message) for w in rec]
    assert any("bomb" in m and "row 0" in m for m in msgs), msgs
    assert any("mask is 1000000000x1000000000 but its image is 24x32" in m for m in msgs), msgs
    assert any("ragged mask lists" in m and "row 3" in m for m in msgs), msgs
    mask_iou = vals[3]
    assert mask_iou[:4] == [0.0] * 4
    assert mask_iou[4] == mask_iou[5] == mask_iou[6] > 0.0, mask_iou
    assert vals[0] == [1.0] * len(rows) and vals[1] == [1.0] * len(rows)  # format rewards do not depend on inputs
