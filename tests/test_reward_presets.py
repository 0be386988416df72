"""The reward presets (samr1, segzero, visionreasoner), the published ground truth, multi-instance rows and
the no-target rule. Agreement with the peers' real code is measured by ``samr1 bench fidelity --peer-repo``;
here each rule is pinned by hand-built cases that fail when the rule changes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from samr1.config import ConfigError
from samr1.geometry import mask_to_box, mask_to_points
from samr1.rewards import SamR1Reward, SamR1RewardConfig
from samr1.rewards.truth import is_instance_list, load_instances, published_geometry
from samr1.rewards.visionreasoner import accuracy_reward, non_repeat_reward

H, W = 480, 640


def _rewards(reward, texts, masks, size=(H, W)):
    img = np.zeros((*size, 3), np.uint8)
    return {f.component: f(None, texts, image=[img] * len(texts), mask=[masks] * len(texts))
            for f in reward.functions()}


def _think(payload, think="looking"):
    return f"<think>{think}</think><answer>{payload}</answer>"


def _rect(y0, y1, x0, x1, size=(H, W)):
    m = np.zeros(size, bool)
    m[y0:y1, x0:x1] = True
    return m


# ------------------------------------------------------------------------------ the published ground truth
@pytest.mark.parametrize("size", [(480, 640), (333, 517), (1680, 1680), (840, 840)])
def test_published_ground_truth_is_computed_on_the_original_then_scaled(size):
    rng = np.random.default_rng()
    h, w = size
    y0, x0 = int(rng.integers(0, h // 2)), int(rng.integers(0, w // 2))
    m = _rect(y0, y0 + int(rng.integers(1, h // 3)), x0, x0 + int(rng.integers(1, w // 3)), size)
    m[y0, x0:x0 + 2] = False if m.sum() > 4 else m[y0, x0:x0 + 2]  # not a plain rectangle
    box, pts = published_geometry(m, (840, 840), 2)
    b = mask_to_box(m)
    want_box = (int(b[0] * 840 / w + 0.5), int(b[1] * 840 / h + 0.5), int(b[2] * 840 / w + 0.5),
                int(b[3] * 840 / h + 0.5))
    assert box == want_box and all(isinstance(v, int) for v in box)
    assert pts == [(int(x * 840 / w + 0.5), int(y * 840 / h + 0.5)) for x, y in mask_to_points(m, 2)]
    assert published_geometry(np.zeros(size, bool), (840, 840)) == (None, [])


def test_instance_lists_are_told_from_nested_list_masks():
    one = [[True, False], [False, True]]
    assert not is_instance_list(one) and not is_instance_list(np.zeros((4, 4)))
    assert is_instance_list([one, one]) and is_instance_list([]) and is_instance_list(np.zeros((2, 6, 5)))
    # an H x W x C array (C <= 4: a colour PNG read with np.array) is one mask; with the image's size known,
    # the sides decide even for a toy 4 x 4 image
    assert not is_instance_list(np.zeros((6, 5, 3))) and not is_instance_list(np.zeros((6, 5, 1)))
    assert is_instance_list(np.zeros((2, 4, 4)), (4, 4)) and not is_instance_list(np.zeros((4, 4, 3)), (4, 4))
    assert is_instance_list([np.zeros((4, 4), bool)]) and is_instance_list([{"size": [4, 4], "counts": "0"}])
    union, inst = load_instances([np.eye(4, dtype=bool), np.zeros((4, 4), bool), np.fliplr(np.eye(4, dtype=bool))])
    assert union.sum() == 8 and len(inst) == 2  # the empty instance is dropped, the union kept
    assert load_instances([]) == (None, [])
    with pytest.raises(ValueError, match=r"mask\[1\]"):
        load_instances([np.zeros((4, 4)), np.zeros((5, 4))])


# ------------------------------------------------------------------------------ segzero
def test_segzero_rules_hand_cases():
    """Strict intersection, int() points, independent parsing per component, the structural format rule."""
    thin = _rect(100, 200, 300, 301)  # one pixel wide in the original; box (300, 100, 300, 199)
    box, pts = published_geometry(thin, (840, 840), 2)
    exact = _think(json.dumps({"bbox": list(box), "points_1": list(pts[0]), "points_2": list(pts[1])}))
    seg = _rewards(SamR1Reward(None, preset="segzero"), [exact], thin)
    ours = _rewards(SamR1Reward(None, components=("box_iou", "box_l1", "point_dist")), [exact], thin)
    assert box[0] == box[2]  # one pixel wide in the 840 frame too
    assert seg["box_iou"] == [0.0] and ours["box_iou"] == [1.0]  # no strictly positive overlap in Seg-Zero's IoU
    assert seg["box_l1"] == seg["point_dist"] == seg["think"] == seg["answer"] == [1.0]

    wide = _rect(100, 300, 100, 160)
    box, pts = published_geometry(wide, (840, 840), 2)
    b = list(box)
    texts = [
        _think(json.dumps({"bbox": b, "points_1": "oops", "points_2": list(pts[1])})),  # malformed point
        _think(json.dumps({"bbox": [str(v) for v in b], "points_1": list(pts[0]), "points_2": list(pts[1])})),
        _think(json.dumps({"bbox": b, "points_1": [b[2] + 0.99, pts[0][1]], "points_2": list(pts[1])})),
        _think(json.dumps({"bbox": b, "points_1": [b[2] + 1.0, pts[0][1]], "points_2": list(pts[1])})),
        "<think>{not json}</think><answer>" + json.dumps({"bbox": b, "points_1": [1, 2], "points_2": [1, 2]})
        + "</answer>",
    ]
    got = _rewards(SamR1Reward(None, preset="segzero"), texts, wide)
    assert got["answer"] == [0.0, 1.0, 1.0, 1.0, 0.0]  # lists of the right length, any element type
    assert got["box_iou"] == [1.0, 0.0, 1.0, 1.0, 0.0]  # a box reward pays though the point is malformed
    assert got["box_l1"] == [1.0, 0.0, 1.0, 1.0, 0.0]
    # int(x2 + 0.99) = x2 lies in the box; x2 + 1.0 does not
    assert got["point_dist"] == [0.0, 0.0, 1.0, 0.0, 0.0]
    samr1_answer = _rewards(SamR1Reward(None, components=("answer",)), texts, wide)["answer"]
    assert samr1_answer == [0.0, 0.0, 1.0, 1.0, 1.0]  # samr1's parser: types checked, the LAST answer block


# ------------------------------------------------------------------------------ visionreasoner
def _vr(masks):
    objs = []
    for m in masks:
        box, pts = published_geometry(m, (840, 840), 1)
        objs.append({"bbox_2d": list(box), "point_2d": list(pts[0])})
    return objs


def test_visionreasoner_both_found_beats_one_found_a_duplicate_and_a_spurious_extra():
    a, b = _rect(40, 140, 50, 200), _rect(250, 420, 300, 560)
    A, B = _vr([a, b])
    far = {"bbox_2d": [760, 760, 830, 830], "point_2d": [800, 800]}
    texts = [_think(json.dumps(x), "first this. then that.") for x in
             ([A, B], [B, A], [A], [A, A], [A, B, far], [B, B])]
    reward = SamR1Reward(None, preset="visionreasoner")
    got = _rewards(reward, texts, [a, b])
    total = reward(None, texts, image=[np.zeros((H, W, 3), np.uint8)] * 6, mask=[[a, b]] * 6)
    assert got["accuracy"] == [3.0, 3.0, 1.5, 1.5, 2.0, 1.5]  # matched / max(predicted, ground truth)
    assert total[0] == total[1] == 7.0
    assert all(total[0] > t for t in total[2:])
    assert got["answer"] == [2.0] * 6 and got["think"] == [1.0] * 6 and got["non_repeat"] == [1.0] * 6


def test_visionreasoner_point_rule_format_and_non_repeat():
    gt_boxes, gt_points = [[100, 100, 300, 300]], [[200, 200]]
    def acc(point, box=(100, 100, 300, 300)):
        return accuracy_reward(_think(json.dumps([{"bbox_2d": list(box), "point_2d": point}])), gt_boxes, gt_points)

    assert acc([200, 229]) == 3.0 and acc([200, 230]) == 2.0  # one point, distance < 30
    assert acc([200, 229], box=(100, 100, 300, 210)) == 1.0  # box off (IoU, L1) and the point outside its box
    assert accuracy_reward(_think("[]"), gt_boxes, gt_points) == 0.0
    assert accuracy_reward(_think("{'bbox_2d': [1, 2, 3, 4]}"), gt_boxes, gt_points) == 0.0  # json only
    half = _think(json.dumps([{"bbox_2d": [1, 2, 3, 4], "point_2d": [1, 2, 3]}, {"bbox_2d": [1, 2, 3]}]))
    got = _rewards(SamR1Reward(None, preset="visionreasoner", components=("answer",)), [half], _rect(0, 9, 0, 9))
    assert got["answer"] == [0.5]  # (1 + 0) / 2 objects
    assert non_repeat_reward("a. b. a. c.") == 1.0 and non_repeat_reward("a. b. a. b.") == 0.0
    assert non_repeat_reward("a. a. a.") == 0.0 and non_repeat_reward(". . .") == 1.0


# ------------------------------------------------------------------------------ no target
@pytest.mark.parametrize("preset,full", [("samr1", {"answer": 1.0, "box_iou": 1.0, "box_l1": 1.0, "point_dist": 1.0}),
                                         ("segzero", {"answer": 1.0, "box_iou": 1.0, "box_l1": 1.0,
                                                      "point_dist": 1.0}),
                                         ("visionreasoner", {"answer": 2.0, "accuracy": 3.0})])
def test_no_target_rule(preset, full):
    comps = tuple(full)
    reward = SamR1Reward(None, preset=preset, components=comps)
    obj = _rect(100, 200, 100, 200)
    box, pts = published_geometry(obj, (840, 840), 2)
    answer = (json.dumps([{"bbox_2d": list(box), "point_2d": list(pts[0])}]) if preset == "visionreasoner"
              else json.dumps({"bbox": list(box), "points_1": list(pts[0]), "points_2": list(pts[1])}))
    texts = [_think("[]"), _think(answer)]
    on_empty = _rewards(reward, texts, np.zeros((H, W), bool))
    on_target = _rewards(reward, texts, obj)
    for c, v in full.items():
        fmt = c == "answer"  # format does not depend on the ground truth
        assert on_empty[c] == [v, v if fmt else 0.0], (c, on_empty[c])
        assert on_target[c] == [v if fmt else 0.0, v], (c, on_target[c])
    # an empty instance list is an empty target
    assert _rewards(reward, texts, [])[comps[-1]][0] == full[comps[-1]]


# ------------------------------------------------------------------------------ settings
def test_preset_settings_and_their_errors():
    assert SamR1RewardConfig().components == ("think", "answer", "iou")
    assert SamR1RewardConfig(preset="segzero").components == ("think", "answer", "box_iou", "box_l1", "point_dist")
    vr = SamR1RewardConfig(preset="visionreasoner")
    assert vr.components == ("think", "answer", "accuracy", "non_repeat") and vr.point_threshold == 30.0
    assert SamR1RewardConfig().point_threshold == 100.0
    for bad, field in (({"preset": "lisa"}, "preset"), ({"preset": "segzero", "components": ("accuracy",)}, "components"),
                       ({"preset": "segzero", "frame": "original"}, "frame"), ({"mask_match": "matched"}, "mask_match"),
                       ({"preset": "visionreasoner", "multi_object": "first"}, "multi_object")):
        with pytest.raises(ConfigError) as exc:
            SamR1RewardConfig(**bad)
        assert exc.value.field == field
    # a preset given over a config takes the preset's components unless they are named too
    reward = SamR1Reward(None, SamR1RewardConfig(components=("think",)), preset="segzero")
    assert reward.components == SamR1RewardConfig(preset="segzero").components
    with pytest.raises(ValueError, match="need SAM"):
        SamR1Reward(None, preset="visionreasoner", components=("accuracy", "iou"))


def test_train_config_reward_preset_reaches_the_reward():
    from samr1.train.config import TrainConfig

    cfg = TrainConfig(reward_preset="visionreasoner")
    rc = cfg.reward_config()
    assert rc.preset == "visionreasoner" and rc.components == ("think", "answer", "accuracy", "non_repeat")
    assert rc.mask_key == "masks" and TrainConfig(components=["think"]).reward_config().components == ("think",)
    with pytest.raises(ConfigError, match="reward_preset"):
        TrainConfig(reward_preset="nope", model="m", data="d").validate()


# ------------------------------------------------------------------------------ with SAM: several instances
@pytest.fixture(scope="module")
def engine():
    from samr1.engine import SamEngine
    from samr1.sam import load_sam

    return SamEngine(load_sam("tiny"))


def test_multi_instance_mask_rewards_union_and_matched_one_engine_call(engine):
    from samr1.answer import parse_answer
    from samr1.geometry import mask_iou_numpy

    rng = np.random.default_rng()
    img = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    a, b = _rect(40, 140, 50, 200), _rect(250, 420, 300, 560)
    texts = [_think(json.dumps(_vr([a, b]))), _think(json.dumps(_vr([b]))), _think("[]"), "junk"]
    union = SamR1Reward(engine, preset="visionreasoner", components=("mask_iou",))
    calls = engine.stats["score_calls"]
    got = union(None, texts, image=[img] * 4, mask=[[a, b]] * 4)
    assert engine.stats["score_calls"] == calls + 1  # one engine call for the batch
    for i in (0, 1):  # the union of SAM's masks of the objects against the union of the instances
        ans = parse_answer(texts[i], (H, W))
        want = mask_iou_numpy(engine.segment(img, ans), a | b)
        assert got[i] == pytest.approx(want, abs=1e-6)
    assert got[2] == 0.0 and got[3] == 0.0
    # "no object" on no target: the engine's IoU of the empty mask is 1 (the top tier), without a SAM prompt
    tiered = SamR1Reward(engine, components=("iou", "mask_iou"))
    no_target = {f.component: f(None, texts[2:], image=[img] * 2, mask=[np.zeros((H, W), bool)] * 2)
                 for f in tiered.functions()}
    assert no_target == {"iou": [4.0, 0.0], "mask_iou": [1.0, 0.0]}
    matched = SamR1Reward(engine, preset="visionreasoner", components=("mask_iou", "iou"), mask_match="matched")
    fns = matched.functions()
    plain = fns[0](None, texts, image=[img] * 4, mask=[[a, b]] * 4)
    per = [engine.segment(img, o) for o in parse_answer(texts[0], (H, W)).per_object()]
    ious = [[mask_iou_numpy(p, g) for g in (a, b)] for p in per]
    best = max(ious[0][0] + ious[1][1], ious[0][1] + ious[1][0]) / 2
    # the engine's IoU is a float32 ratio of exact counts: the same value as numpy's to ~1e-7
    assert plain[0] == pytest.approx(best, abs=1e-6)
    one = parse_answer(texts[1], (H, W)).per_object()
    assert plain[1] == pytest.approx(max(mask_iou_numpy(engine.segment(img, one[0]), g) for g in (a, b)) / 2)
    empty = fns[0](None, texts[2:3], image=[img], mask=[[]])
    assert empty == [1.0]  # no object on no target: full


# ------------------------------------------------------------------------------ data: multi-instance rows
def test_manifest_masks_rows_reach_the_dataset_and_the_reward(tmp_path):
    from PIL import Image

    from samr1.data import read_manifest
    from samr1.io import InputError, rle_encode
    from samr1.train.data import PolicyDataset, check_rows, rows_from_manifest

    Image.fromarray(np.zeros((60, 80, 3), np.uint8)).save(tmp_path / "im.png")
    a, b = _rect(5, 20, 5, 30, (60, 80)), _rect(30, 55, 40, 70, (60, 80))
    Image.fromarray(a.astype(np.uint8) * 255).save(tmp_path / "a.png")
    lines = [{"image": "im.png", "query": "both things", "masks": ["a.png", rle_encode(b)]},
             {"image": "im.png", "query": "the unicorn", "masks": []},
             {"image": "im.png", "query": "one", "mask": "a.png"}]
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(x) for x in lines))
    samples = read_manifest(tmp_path / "m.jsonl")
    assert samples[0].mask is None and len(samples[0].masks) == 2 and samples[1].masks == []
    assert samples[2].masks is None
    rows, _ = check_rows(rows_from_manifest(str(tmp_path / "m.jsonl")))
    ds = PolicyDataset(rows, policy_size=56)
    items = [ds[i] for i in range(3)]
    assert (items[0]["mask"] == (a | b)).all() and len(items[0]["masks"]) == 2
    assert not items[1]["mask"].any() and items[1]["masks"] == [] and len(items[2]["masks"]) == 1
    for bad, said in (({"image": "im.png", "query": "q", "mask": "a.png", "masks": []}, "not both"),
                      ({"image": "im.png", "query": "q", "masks": "a.png"}, "must be a list"),
                      ({"image": "im.png", "query": "q", "masks": [3]}, r"masks\[0\]")):
        (tmp_path / "bad.jsonl").write_text(json.dumps(bad))
        with pytest.raises(InputError, match=said):
            read_manifest(tmp_path / "bad.jsonl")
    # the reward reads the masks column: VisionReasoner's accuracy over both instances
    reward = SamR1Reward(None, preset="visionreasoner", components=("accuracy",), mask_key="masks",
                         image_key="sam_image")
    text = _think(json.dumps(_vr([a, b])))
    assert reward(None, [text, text], sam_image=[items[0]["sam_image"], items[1]["sam_image"]],
                  masks=[items[0]["masks"], items[1]["masks"]]) == [3.0, 0.0]


def test_no_target_rates():
    from samr1.metrics import evaluate, no_target_rates

    z = np.zeros((8, 8), bool)
    t = _rect(2, 5, 2, 5, (8, 8))
    res = evaluate([z, t, z, None, t, z], [z, z, t, z, t, t])
    d = res.as_dict()
    # empty ground truth: answered empty 1 of 3 (a parse failure is no answer); targets: 2 of 3 answered empty
    assert (d["n_no_target"], d["no_target_accuracy"], d["n_target"]) == (3, pytest.approx(1 / 3), 3)
    assert d["false_empty_rate"] == pytest.approx(2 / 3)
    assert no_target_rates([r.as_dict() for r in res.rows]) == res.no_target
    assert np.isnan(no_target_rates([])["no_target_accuracy"])
