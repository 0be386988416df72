"""The reward under hostile answers and rows, where it used to fail in silence.

- Coordinates near the float limit (1e308) leaked numpy's overflow warnings into the training log: the
  geometry rewards compute squares and sums of unclipped model-frame numbers. They must score 0 and say
  nothing (a warning per step would flood the log; the answer is simply far from everything).
- One row the engine refuses (e.g. a 1 x 3000 image, which SAM cannot resize) made the reward rescore every
  row of the step one at a time (64 rows: 0.48 s -> 2.66 s). The refused rows must be found up front and
  dropped alone, the step staying ONE batched engine call with the other rows' IoUs unchanged.
- ReasonSeg's "ignore" regions were excluded from I and U at evaluation (as LISA does) but counted in the
  training reward (SAM pixels there were false positives): training and evaluation scored different things.
  One rule now: the reward's mask IoU equals the evaluation's per-sample IoU on every answer form.
"""

from __future__ import annotations

import itertools
import json
import warnings

import numpy as np
import pytest

from samr1.rewards import SamR1Reward

# Magnitudes whose squares, differences or sums overflow float64 (1.35e154 is where a square does).
HUGE = ["1e308", "-1e308", "1.7976931348623157e308", "-1.7976931348623157e308", "9e307", "1e200", "-1e200",
        "1.4e154", "-1.4e154"]
PRESET_COMPONENTS = {
    "samr1": ("think", "answer", "iou", "mask_iou", "box_iou", "box_l1", "point_dist"),
    "segzero": ("think", "answer", "iou", "box_iou", "box_l1", "point_dist"),
    "visionreasoner": ("think", "answer", "iou", "accuracy", "non_repeat"),
}
GEOMETRY = ("box_iou", "box_l1", "point_dist", "accuracy")


def _answers(a: str, b: str) -> list[str]:
    """Answers in every form a preset reads, holding ``a`` and ``b`` (JSON number literals) in boxes and points."""
    forms = [
        f'{{"bbox": [{a}, {b}, {a}, {b}], "points_1": [{a}, {b}], "points_2": [{b}, {a}]}}',
        f'{{"bbox": [0, 0, {a}, {b}], "points_1": [1, 1], "points_2": [{a}, 2]}}',
        f'{{"bbox": [{a}, 0, 3, {b}], "points_1": [{b}, 1], "points_2": [1, 2]}}',
        f'[{{"bbox_2d": [{a}, {a}, {b}, {b}], "point_2d": [{a}, {b}]}}]',
        f'[{{"bbox_2d": [0, 0, {a}, {b}], "point_2d": [{a}, 3]}}, {{"bbox_2d": [1, 1, 5, 5], "point_2d": [2, 3]}}]',
    ]
    return [f"<think>far away</think><answer>{f}</answer>" for f in forms]


@pytest.mark.parametrize("preset", sorted(PRESET_COMPONENTS))
@pytest.mark.parametrize("frame", [(840, 840), (1000, 1000)], ids=["pixels", "norm1000"])
def test_huge_coordinates_score_zero_without_a_warning(shapes_engine, preset, frame):
    img = np.zeros((61, 83, 3), np.uint8)
    gt = np.zeros((61, 83), bool)
    gt[10:30, 20:50] = True
    comps = PRESET_COMPONENTS[preset]
    reward = SamR1Reward(shapes_engine, preset=preset, components=comps, model_size=frame)
    texts = [t for a, b in itertools.product(HUGE, repeat=2) for t in _answers(a, b)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning (numpy's RuntimeWarning included) fails the test
        fns = reward.functions()
        values = {f.component: f(None, texts, image=[img] * len(texts), mask=[gt] * len(texts)) for f in fns}
    for comp in GEOMETRY:
        if comp in values:
            assert values[comp] == [0.0] * len(texts), comp
    assert all(np.isfinite(v).all() for v in values.values())


def test_point_distance_overflows_to_inf_silently():
    from samr1.rewards.boxes import matched_point_distance, point_distance_reward

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for a, b in itertools.product([1e308, -1e308, 1.7e308, 1.4e154, -1e200], repeat=2):
            assert matched_point_distance([(a, b)], [(0.0, 0.0), (3.0, 4.0)]) == np.inf
            assert point_distance_reward([(a, b), (b, a)], [(0.0, 0.0), (3.0, 4.0)]) == 0.0
        # the reward still pays where it should
        assert point_distance_reward([(1.0, 1.0), (3.0, 4.0)], [(0.0, 0.0), (3.0, 4.0)]) == 1.0


def test_visionreasoner_pair_scores_overflow_silently():
    from samr1.rewards.visionreasoner import pair_scores

    gt_boxes = np.array([[10.0, 10.0, 50.0, 40.0]])
    gt_points = np.array([[30.0, 25.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for a, b in itertools.product([1e308, -1e308, 1.7976931348623157e308, 1.4e154], repeat=2):
            s = pair_scores(np.array([[a, b, a, b], [10.0, 10.0, 50.0, 40.0]]), np.array([[a, b], [30.0, 25.0]]),
                            gt_boxes, gt_points)
            assert s[0, 0] == 0.0 and s[1, 0] == 3.0, (a, b, s)


def test_huge_coordinates_are_json_numbers():
    # the forms above are what a policy can write: plain JSON numbers that parse to finite floats
    for a in HUGE:
        assert np.isfinite(json.loads(a))


def _scene(seed: int, h: int, w: int):
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    gt = np.zeros((h, w), bool)
    gt[h // 4:max(h // 4 + 1, 3 * h // 4), w // 4:max(w // 4 + 1, 3 * w // 4)] = True
    return img, gt


def _completion(rng) -> str:
    x1, y1 = (int(v) for v in rng.integers(0, 400, 2))
    x2, y2 = x1 + int(rng.integers(5, 400)), y1 + int(rng.integers(5, 400))
    p = [int(rng.integers(x1, x2)), int(rng.integers(y1, y2))]
    return (f'<think>t</think><answer>{{"bbox": [{x1}, {y1}, {x2}, {y2}], "points_1": {p}, '
            f'"points_2": [{x1 + 1}, {y1 + 1}]}}</answer>')


# images the tiny-shapes SAM cannot encode: the short side resizes to 0 px at its 384-px frame (both orientations,
# several ratios; 1 x 1100 would fit a 1024-px frame)
REFUSED_SIZES = [(1, 3000), (3000, 1), (2, 5000), (1, 1100)]


@pytest.mark.parametrize("bad_sizes", [REFUSED_SIZES[:1], REFUSED_SIZES[1:2], REFUSED_SIZES],
                         ids=["one-wide", "one-tall", "four-kinds"])
def test_refused_rows_are_dropped_up_front_in_one_engine_call(shapes_engine, bad_sizes):
    rng = np.random.default_rng(len(bad_sizes))
    good = [_scene(s, int(rng.integers(40, 300)), int(rng.integers(40, 300))) for s in range(7)]
    g = 8
    images, masks, texts = [], [], []
    for img, gt in good:
        for _ in range(g):
            images.append(img)
            masks.append(gt)
            texts.append(_completion(rng))
    reward = SamR1Reward(shapes_engine, components=("mask_iou",))
    clean = reward(None, list(texts), image=list(images), mask=list(masks))
    # the refused images replace single rows at random places of the step
    bad_rows = sorted(int(i) for i in rng.choice(len(texts) + len(bad_sizes), len(bad_sizes), replace=False))
    for k, i in enumerate(bad_rows):
        img, gt = _scene(100 + k, *bad_sizes[k])
        images.insert(i, img)
        masks.insert(i, gt)
        texts.insert(i, _completion(rng))
    calls = shapes_engine.stats["score_calls"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        values = reward(None, list(texts), image=list(images), mask=list(masks))
    assert shapes_engine.stats["score_calls"] - calls == 1  # one batched call, not one per row
    batch = reward._last
    for i in bad_rows:
        assert values[i] == 0.0 and "engine_input_error" in batch.row_codes[i], batch.row_codes[i]
    kept = [v for i, v in enumerate(values) if i not in bad_rows]
    assert kept == clean  # the other rows' IoUs are exactly what they were without the refused rows
    said = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert not any("one by one" in m for m in said), said
    assert sum("engine_input_error" in m for m in said) == len(bad_rows), said
    assert all(f"row {i}" in m for i, m in zip(bad_rows, [m for m in said if "engine_input_error" in m], strict=True))


def test_refused_row_with_matched_masks_costs_only_itself(shapes_engine):
    # the matched-mask path segments every object in one segment_batch call: a refused image used to raise
    # out of the reward (a crashed training step)
    rng = np.random.default_rng(5)
    scenes = [_scene(s, 90, 120) for s in range(3)] + [_scene(9, 1, 3000)]
    texts = [f'<think>t</think><answer>[{{"bbox_2d": [10, 10, {60 + 10 * k}, 70], "point_2d": [30, 30]}}, '
             f'{{"bbox_2d": [50, 50, 90, 80], "point_2d": [70, 60]}}]</answer>' for k in range(4)]
    reward = SamR1Reward(shapes_engine, preset="visionreasoner", components=("iou",), mask_match="matched")
    order = rng.permutation(4)
    images = [scenes[k][0] for k in order]
    masks = [[scenes[k][1]] for k in order]
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        values = reward(None, [texts[k] for k in order], image=images, mask=masks)
        codes = reward._last.row_codes
        alone = [reward(None, [texts[k]], image=[scenes[k][0]], mask=[[scenes[k][1]]])[0] for k in order]
    bad = int(np.flatnonzero(order == 3)[0])
    assert values[bad] == 0.0 and "engine_input_error" in codes[bad], codes
    assert [v for i, v in enumerate(values) if i != bad] == [v for i, v in enumerate(alone) if i != bad]


def _eval_iou(pred: np.ndarray, target: np.ndarray, ignore: np.ndarray | None) -> float:
    """The evaluation's per-sample IoU (samr1 eval's counts, LISA's 0/1/255 ground truth)."""
    from samr1.metrics import sample_counts

    gt = target.astype(np.uint8)
    if ignore is not None:
        gt[ignore] = 255
    inter, union, _, _ = sample_counts(pred, gt)
    return 1.0 if union == 0 else inter / union


def _ignore_step(rng, n_images: int = 3, per_image: int = 6):
    """Odd-sized images with a target and an ignore region placed where SAM's masks go (the boxes cover
    both), answers of every form: one object, several objects, "no object"; rows without an ignore mixed in."""
    from samr1.answer import parse_answer

    images, targets, ignores, answers = [], [], [], []
    for k in range(n_images):
        h, w = int(rng.integers(50, 130)), int(rng.integers(50, 130))
        img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        target = np.zeros((h, w), bool)
        target[h // 5:h // 2, w // 5:w // 2] = True
        ign = np.zeros((h, w), bool)
        ign[h // 2 + 2:4 * h // 5, w // 3:4 * w // 5] = True
        for j in range(per_image):
            x1, y1 = int(rng.integers(0, w // 3)), int(rng.integers(0, h // 3))
            x2, y2 = int(rng.integers(w // 2, w)), int(rng.integers(h // 2, h))
            obj = {"bbox_2d": [x1, y1, x2, y2], "point_2d": [int(rng.integers(x1, x2)), int(rng.integers(y1, y2))]}
            if j == per_image - 1:
                objs = []  # "no object"
            elif j % 3 == 2:
                objs = [obj, {"bbox_2d": [w * 3 // 10, h * 11 // 20, w * 17 // 20, h * 17 // 20],
                              "point_2d": [w * 6 // 10, h * 7 // 10]}]
            else:
                objs = [obj]
            a = parse_answer(f"<think>t</think><answer>{json.dumps(objs)}</answer>", (h, w), (h, w))
            assert a.ok, a.reason
            images.append(img)
            targets.append(target)
            ignores.append(None if k == 0 else ign)  # the first image has no ignore region
            answers.append(a)
    return images, targets, ignores, answers


def _engines():
    from _markers import requires_sam2

    return [pytest.param("sam", id="sam"), pytest.param("sam2", id="sam2", marks=requires_sam2)]


@pytest.fixture(scope="module")
def sam2_engine():
    from samr1.engine.sam2_engine import Sam2Engine
    from samr1.sam import load_sam

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return Sam2Engine(load_sam("sam2.1_hiera_t", seed=0), decode_chunk=8)


@pytest.mark.parametrize("kind", _engines())
def test_engine_excludes_ignore_pixels_as_the_evaluation_does(kind, shapes_engine, request):
    engine = shapes_engine if kind == "sam" else request.getfixturevalue("sam2_engine")
    rng = np.random.default_rng()
    images, targets, ignores, answers = _ignore_step(rng)
    got = engine.score(images, answers, targets, ignore=ignores)
    plain = engine.score(images, answers, targets)
    masks = engine.segment_batch(images, answers)
    want = [_eval_iou(m, t, x) for m, t, x in zip(masks, targets, ignores, strict=True)]
    assert got == pytest.approx(want, rel=1e-6, abs=1e-7)
    # the ignore regions matter here (the test can fail): some answers' masks reach into them
    with_ign = [i for i, x in enumerate(ignores) if x is not None]
    assert any(abs(got[i] - plain[i]) > 1e-3 for i in with_ign)
    assert all(got[i] == plain[i] for i, x in enumerate(ignores) if x is None)


def test_reasonseg_rows_train_on_the_evaluation_rule(shapes_engine, tmp_path):
    """A ReasonSeg folder through the training dataset and the reward: the reward's mask IoU per completion is
    the evaluation's IoU of SAM's mask for that completion, ignore pixels excluded."""
    from PIL import Image

    from samr1.answer import parse_answer
    from samr1.train.data import PolicyDataset, check_rows, load_rows

    rng = np.random.default_rng()
    h, w = int(rng.integers(60, 120)), int(rng.integers(60, 120))
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(tmp_path / "scene.jpg")
    anno = {"text": ["what holds the coffee?"], "is_sentence": True, "shapes": [
        {"label": "target", "points": [[3, 4], [w // 2, 4], [w // 2, h // 2], [3, h // 2]]},
        {"label": "ignore", "points": [[w // 2 + 2, 5], [w - 3, 5], [w - 3, h - 3], [w // 2 + 2, h - 3]]}]}
    (tmp_path / "scene.json").write_text(json.dumps(anno))
    good, _ = check_rows(load_rows(str(tmp_path)))
    item = PolicyDataset(good, policy_size=840)[0]
    assert item["ignore"] is not None and item["ignore"].any()
    texts = []
    for _ in range(12):
        x1, y1 = int(rng.integers(0, 300)), int(rng.integers(0, 300))
        x2, y2 = int(rng.integers(450, 840)), int(rng.integers(450, 840))
        texts.append(f'<think>t</think><answer>{{"bbox": [{x1}, {y1}, {x2}, {y2}], "points_1": '
                     f'[{(x1 + x2) // 2}, {(y1 + y2) // 2}], "points_2": [{x1 + 5}, {y1 + 5}]}}</answer>')
    n = len(texts)
    cols = {"sam_image": [item["sam_image"]] * n, "mask": [item["mask"]] * n, "ignore": [item["ignore"]] * n}
    reward = SamR1Reward(shapes_engine, components=("mask_iou",), image_key="sam_image")
    got = reward(None, texts, **cols)
    answers = [parse_answer(t, (h, w)) for t in texts]
    masks = shapes_engine.segment_batch([item["sam_image"]] * n, answers)
    want = [_eval_iou(m, item["mask"], item["ignore"]) for m in masks]
    assert got == pytest.approx(want, rel=1e-6, abs=1e-7)
    without = reward(None, list(texts), sam_image=cols["sam_image"], mask=cols["mask"])
    assert any(abs(a - b) > 1e-3 for a, b in zip(got, without, strict=True))


def test_bad_ignore_mask_is_a_counted_row_failure(shapes_engine):
    img, gt = _scene(3, 70, 90)
    text = _completion(np.random.default_rng(1))
    reward = SamR1Reward(shapes_engine, components=("mask_iou",))
    with pytest.warns(RuntimeWarning, match=r"ignore \(row 1\).*mask_size_mismatch"):
        values = reward(None, [text] * 3, image=[img] * 3, mask=[gt] * 3,
                        ignore=[None, np.zeros((10, 10), bool), np.zeros((70, 90), bool)])
    assert values[1] == 0.0 and "mask_size_mismatch" in reward._last.row_codes[1]
    assert values[0] == values[2]  # an empty ignore region is no ignore region


def test_no_object_answers_on_an_image_sam_refuses_keep_their_reward(shapes_engine):
    """The answer "no object" reads no image (no SAM call): a 1 x 3000 image must not cost it its reward, and
    row_errors must agree with what score() does, row by row."""
    img, _ = _scene(4, 1, 3000)
    empty = np.zeros((1, 3000), bool)
    texts = ["<think>none</think><answer>[]</answer>", _completion(np.random.default_rng(2)),
             "<think>x</think><answer>{not json</answer>"]
    reward = SamR1Reward(shapes_engine, preset="visionreasoner", components=("iou",))
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        got = reward(None, texts, image=[img] * 3, mask=[[]] * 3)
    codes = reward._last.row_codes
    assert got[0] == 4.0 and codes[0] == []  # the full tier on the empty target, as score() gives
    assert "engine_input_error" in codes[1] and got[1] == 0.0
    assert "engine_input_error" not in codes[2]  # a parse failure is no engine error
    from samr1.answer import parse_answer

    answers = [parse_answer(t, (1, 3000)) for t in texts]
    errors = shapes_engine.row_errors([img] * 3, answers, [empty] * 3)
    assert errors[0] is None and errors[2] is None and "images[1]" in str(errors[1])
    assert shapes_engine.score([img], [answers[0]], [empty]) == [1.0]


def test_row_errors_name_each_rows_own_field(shapes_engine):
    from samr1.answer import parse_answer

    img, gt = _scene(5, 1, 3000)
    a = parse_answer(_completion(np.random.default_rng(3)), (1, 3000))
    errors = shapes_engine.row_errors([img] * 4, [a] * 4, [gt] * 4)
    assert [f"images[{i}]" in str(e) for i, e in enumerate(errors)] == [True] * 4
    with pytest.raises(Exception, match="ignore"):
        shapes_engine.row_errors([img] * 2, [a] * 2, [gt] * 2, ignore=[None])  # not parallel


def test_ignore_rows_of_a_group_share_one_ground_truth(shapes_engine, monkeypatch):
    """The G completions of a prompt carry one mask and one ignore region: the engine must get ONE object per
    group for each, or it loads and counts G copies (64 groups instead of 8)."""
    seen: dict[str, set[int]] = {"gt": set(), "ignore": set()}
    original = shapes_engine.score

    def spy(images, answers, gt_masks, ignore=None):
        seen["gt"].update(id(g) for g in gt_masks)
        seen["ignore"].update(id(x) for x in ignore or [] if x is not None)
        return original(images, answers, gt_masks, ignore=ignore)

    monkeypatch.setattr(shapes_engine, "score", spy)
    rng = np.random.default_rng(6)
    images, masks, ignores, texts = [], [], [], []
    for k in range(4):
        img, gt = _scene(20 + k, 90, 120)
        x = np.zeros_like(gt)
        x[60:80, 10:100] = True
        images += [img] * 8
        masks += [gt] * 8
        ignores += [x] * 8
        texts += [_completion(rng) for _ in range(8)]
    SamR1Reward(shapes_engine, components=("mask_iou",))(None, texts, image=images, mask=masks, ignore=ignores)
    assert len(seen["gt"]) == 4 and len(seen["ignore"]) == 4


def test_matched_masks_drop_instances_that_lie_in_the_ignore_region(shapes_engine):
    """An instance wholly inside an ignore region is no instance: it must not count in max(objects, instances)."""
    img, _ = _scene(7, 100, 140)
    a = np.zeros((100, 140), bool)
    a[10:50, 10:60] = True
    b = np.zeros((100, 140), bool)
    b[60:90, 80:130] = True
    text = '<think>t</think><answer>[{"bbox_2d": [10, 10, 59, 49], "point_2d": [30, 30]}]</answer>'
    reward = SamR1Reward(shapes_engine, preset="visionreasoner", components=("mask_iou",), mask_match="matched",
                         model_size=(100, 140))
    ignored = reward(None, [text], image=[img], mask=[[a, b]], ignore=[b])
    alone = reward(None, [text], image=[img], mask=[[a]])
    assert ignored == pytest.approx(alone, abs=1e-9)


def test_an_engine_without_ignore_is_told_what_to_do():
    class Plain:
        def score(self, images, answers, gt_masks):
            return [0.5] * len(answers)

    img, gt = _scene(8, 40, 50)
    text = '<think>t</think><answer>{"bbox": [5, 5, 30, 25], "points_1": [10, 10], "points_2": [20, 20]}</answer>'
    reward = SamR1Reward(Plain(), components=("mask_iou",), model_size=(40, 50))
    assert reward(None, [text], image=[img], mask=[gt]) == [0.5]  # no ignore column: no ignore= passed
    with pytest.raises(TypeError, match="ignore_key=None"):
        reward(None, [text], image=[img], mask=[gt], ignore=[gt])
    off = SamR1Reward(Plain(), components=("mask_iou",), model_size=(40, 50), ignore_key=None)
    assert off(None, [text], image=[img], mask=[gt], ignore=["a flag, not a mask"]) == [0.5]


def test_training_reads_the_datasets_ignore_column_whatever_the_options():
    """samr1 train's reward reads the training dataset's own columns, the ignore regions included; a
    reward_options entry that would point it elsewhere (and silently drop the regions) is refused."""
    from samr1.config import ConfigError
    from samr1.train.config import TrainConfig

    cfg = TrainConfig(model="m", data="d", reward_options={"tiers": [[0.5, 1.0]]})
    assert cfg.reward_config().ignore_key == "ignore"
    with pytest.raises(ConfigError, match="ignore_key"):
        TrainConfig(model="m", data="d", reward_options={"ignore_key": "foo"}).validate()
