"""Qwen3-VL policies answer in 0..1000 coordinates relative to the image ("norm1000"): a tiny Qwen3-VL built
from a config runs one GRPO step and one ``samr1 eval``, and the frame flows through parsing, rewards, the
saved policy's record and evaluation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from samr1.answer import parse_answer
from samr1.train.scene_data import write_scene_manifest
from samr1.train.tiny_policy import build_tiny_policy


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("q3")
    return {"root": root, "policy": build_tiny_policy(root / "policy", hidden=16, seed=2, family="qwen3_vl"),
            "manifest": write_scene_manifest(root / "data", 4, size=(72, 96), seed=5)}


def test_frames_by_family_and_norm1000_parsing(world, tmp_path):
    from samr1.policy import answer_frame_size, default_answer_frame, model_type_of
    from samr1.train.config import TrainConfig

    assert model_type_of(world["policy"]) == "qwen3_vl" and default_answer_frame("qwen3_vl") == "norm1000"
    assert default_answer_frame("qwen2_vl") == "norm1000" and default_answer_frame("qwen2_5_vl") == "pixels"
    q25 = build_tiny_policy(tmp_path / "q25", hidden=16)
    assert TrainConfig(model=world["policy"]).resolved_answer_frame() == "norm1000"
    assert TrainConfig(model=q25).resolved_answer_frame() == "pixels"
    assert TrainConfig(model=q25, answer_frame="norm1000").reward_config().model_size == (1000, 1000)
    assert TrainConfig(model=world["policy"]).reward_config().model_size == answer_frame_size("norm1000", 840)
    # a saved policy's record wins over its family (a warm start taught it pixel answers)
    from samr1.policy import PolicyRecord, write_record

    q3_pixels = build_tiny_policy(tmp_path / "q3p", hidden=16, family="qwen3_vl")
    write_record(q3_pixels, PolicyRecord(answer_frame="pixels"))
    assert TrainConfig(model=q3_pixels).resolved_answer_frame() == "pixels"
    assert TrainConfig(model=q3_pixels, answer_frame="norm1000").resolved_answer_frame() == "norm1000"
    # 0..1000 relative to the image, whatever its size or the policy's square side
    a = parse_answer('<answer>{"bbox": [0, 0, 500, 250], "points": [[250, 125]]}</answer>', (480, 640),
                     answer_frame_size("norm1000", 840))
    assert a.ok and a.bbox == (0.0, 0.0, 320.0, 120.0) and a.points == [(160.0, 60.0)]


def test_norm1000_rewards_use_the_1000_frame():
    from samr1.rewards import SamR1Reward

    H, W = 480, 640
    m = np.zeros((H, W), bool)
    m[120:240, 160:480] = True  # (0.25 .. 0.75) x (0.25 .. 0.5) of the image
    box = [int(160 * 1000 / W + 0.5), int(120 * 1000 / H + 0.5), int(479 * 1000 / W + 0.5), int(239 * 1000 / H + 0.5)]
    text = f'<think>t</think><answer>{json.dumps({"bbox": box, "points_1": [500, 375], "points_2": [500, 375]})}</answer>'
    img = np.zeros((H, W, 3), np.uint8)
    got = {f.component: f(None, [text], image=[img], mask=[m]) for f in
           SamR1Reward(None, preset="segzero", model_size=(1000, 1000)).functions()}
    assert got["box_iou"] == got["box_l1"] == got["answer"] == [1.0]
    pixels = {f.component: f(None, [text], image=[img], mask=[m]) for f in
              SamR1Reward(None, preset="segzero", model_size=(840, 840)).functions()}
    assert pixels["box_l1"] == [0.0]  # the same numbers read as 840-frame pixels miss


def test_tiny_qwen3vl_one_grpo_step_and_one_eval(world, tmp_path, capsys):
    from samr1.cli import main
    from samr1.pipeline import ReasoningSegmenter
    from samr1.policy import read_record

    out = tmp_path / "run"
    assert main(["train", "--model", world["policy"], "--data", world["manifest"], "--sam", "tiny-shapes",
                 "--device", "cpu", "--max-steps", "1", "--num-generations", "2", "--max-completion-length", "8",
                 "--output-dir", str(out), "--policy-image-size", "64", "--no-progress",
                 "--reward-preset", "visionreasoner", "--prompt", "vision-reasoner"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 1
    record = read_record(out / "final")
    assert record.answer_frame == "norm1000" and record.reward["preset"] == "visionreasoner"
    assert record.reward["components"] == ["think", "answer", "accuracy", "non_repeat"]
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]
    assert any("rewards/accuracy/mean" in r for r in rows)
    capsys.readouterr()
    assert main(["eval", "--model", str(out / "final"), "--sam", "tiny-shapes", "--data", world["manifest"],
                 "--max-new-tokens", "2", "--batch-size", "4", "--no-progress", "--device", "cpu",
                 "--out", str(tmp_path / "eval.json")]) == 0
    res = json.loads((tmp_path / "eval.json").read_text())
    assert res["n"] == 4 and "no_target_accuracy" in res and "false_empty_rate" in res
    assert "no-target accuracy" in capsys.readouterr().out
    from samr1.engine import SamEngine
    from samr1.sam import load_sam

    seg = ReasoningSegmenter.from_pretrained(str(out / "final"), SamEngine(load_sam("tiny-shapes")), device="cpu")
    assert seg.answer_frame == "norm1000" and seg.answer_size == (1000, 1000) and seg.model_size == (64, 64)
    seg.close()


def test_warm_start_writes_targets_in_the_familys_frame_and_records_it(world, tmp_path):
    """A Qwen3-VL warm start teaches 0..1000 answers (the family's grounding) and records norm1000, so training
    and eval read its answers in that frame; the targets' box is the mask's box, read back through the parser."""
    from samr1.policy import answer_frame_size, read_record
    from samr1.train.data import PolicyDataset, check_rows, load_rows
    from samr1.train.warmstart import target_text, warm_start

    rows = check_rows(load_rows(world["manifest"]))[0]
    item = PolicyDataset(rows, policy_size=56)[0]
    mask = item["mask"]
    h, w = mask.shape
    ys, xs = np.nonzero(mask)
    for frame in ("pixels", "norm1000"):
        text = target_text("q", mask, 56, answer_frame=frame)
        a = parse_answer(text, (h, w), answer_frame_size(frame, 56))
        assert a.ok
        # back in original pixels the box is the mask's, up to the frame's integer rounding
        step = max(w / answer_frame_size(frame, 56)[1], h / answer_frame_size(frame, 56)[0])
        assert np.allclose(a.bbox, (xs.min(), ys.min(), xs.max(), ys.max()), atol=step + 1e-9), (frame, a.bbox)
    norm = json.loads(target_text("q", mask, 56, answer_frame="norm1000").split("<answer>")[1].split("</answer>")[0])
    pix = json.loads(target_text("q", mask, 56, answer_frame="pixels").split("<answer>")[1].split("</answer>")[0])
    assert norm != pix and max(norm["bbox"]) > 56  # really another frame
    out = tmp_path / "warm"
    warm_start(world["policy"], rows, str(out), steps=1, batch_size=2, policy_size=56, log=None)
    assert read_record(str(out)).answer_frame == "norm1000"  # "auto": the Qwen3-VL family's frame
    from samr1.train.config import TrainConfig

    assert TrainConfig(model=str(out)).reward_config().model_size == (1000, 1000)
