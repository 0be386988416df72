"""``samr1 train`` end to end on CPU: a tiny Qwen2.5-VL built in code, the shipped tiny-shapes SAM, real TRL.

One module-scoped run (two GRPO steps, checkpoint every step) serves several checks; the resume run
continues it from checkpoint-1. Everything is real: transformers' Qwen2.5-VL, TRL's GRPOTrainer, the engine.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from samr1.io import InputError
from samr1.train.scene_data import write_scene_manifest
from samr1.train.tiny_policy import build_tiny_policy

G = 2
COMPONENTS = ("think_format", "answer_format", "tiered_iou")


def _lines(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(x) for x in f if x.strip()]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    policy = build_tiny_policy(root / "policy", hidden=16, seed=1)
    manifest = write_scene_manifest(root / "data", 6, size=(72, 96), seed=3)
    return {"root": root, "policy": policy, "manifest": manifest}


def _cmd(world, out, *extra):
    return ["train", "--model", world["policy"], "--data", world["manifest"], "--sam", "tiny-shapes", "--device", "cpu",
            "--max-steps", "2", "--num-generations", str(G), "--max-completion-length", "16", "--output-dir", str(out),
            "--policy-image-size", "56", "--no-progress", *extra]


@pytest.fixture(scope="module")
def first_run(world):
    from samr1.cli import main

    out = world["root"] / "out"
    assert main(_cmd(world, out, "--save-steps", "1")) == 0
    return out


def test_two_steps_log_every_component(first_run):
    summary = json.loads((first_run / "summary.json").read_text())
    assert summary["steps"] == 2
    rows = [r for r in _lines(first_run / "metrics.jsonl") if "reward" in r]
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        for name in COMPONENTS:
            assert f"rewards/{name}/mean" in r, name
        for key in ("samr1/parse_failure_rate", "samr1/cache_hit_rate", "samr1/encoder_images",
                    "samr1/reward_latency_s", "samr1/mean_iou", "samr1/reason/no_answer_block"):
            assert key in r, key
        # the total reward is the sum of the logged components (TRL's default weights of 1)
        assert r["reward"] == pytest.approx(sum(r[f"rewards/{n}/mean"] for n in COMPONENTS), abs=1e-5)
    assert (first_run / "learning_curve.png").stat().st_size > 0
    assert (first_run / "checkpoint-1" / "trainer_state.json").exists()
    assert (first_run / "final" / "config.json").exists()


def test_reward_gets_each_images_group_together(first_run):
    calls = _lines(first_run / "reward_calls.jsonl")
    assert [c["step"] for c in calls] == [0, 1]  # one reward evaluation per step (components share it)
    drawn = set()
    for c in calls:
        assert c["completions"] == 8  # per_device_train_batch_size default 8 = 4 prompts x G
        assert set(c["copies"].values()) == {G}, c
        assert c["contiguous"], c
        drawn.update(c["row_ids"])
    # SAM's encoder ran once per distinct image over the run (encode-ahead + cache), never per completion
    summary = json.loads((first_run / "summary.json").read_text())
    assert summary["encoder_images"] == len(drawn)
    assert sum(c["encoder_images"] for c in calls) == len(drawn)


def test_resume_same_order_and_skip_bad_rows(world, first_run, tmp_path, capsys):
    """Resume from checkpoint-1 reaches step 2 with the first run's step-2 data. The manifest gets one bad
    row appended (mask of the wrong size); with --skip-bad-rows it is counted, and the good rows (hence the
    data order) are unchanged."""
    from samr1.cli import main

    data = os.path.dirname(world["manifest"])
    bad_manifest = os.path.join(data, "with_bad.jsonl")
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(os.path.join(data, "small_mask.png"))
    with open(world["manifest"], encoding="utf-8") as f:
        lines = f.read().splitlines()
    bad = json.loads(lines[0])
    bad["mask"] = "small_mask.png"
    with open(bad_manifest, "w", encoding="utf-8") as f:
        f.write("\n".join([*lines, json.dumps(bad)]) + "\n")

    out = tmp_path / "resumed"
    out.mkdir()
    shutil.copytree(first_run / "checkpoint-1", out / "checkpoint-1")
    # Shift the checkpoint's weights: the resumed policy must start from THESE, not from --model.
    from safetensors.torch import load_file, save_file

    ck = out / "checkpoint-1" / "model.safetensors"
    shifted = {k: v + 0.01 if v.is_floating_point() else v for k, v in load_file(str(ck)).items()}
    save_file(shifted, str(ck), metadata={"format": "pt"})
    w = dict(world, manifest=bad_manifest)
    capsys.readouterr()
    assert main(_cmd(w, out, "--resume", str(out / "checkpoint-1"), "--skip-bad-rows")) == 0
    captured = capsys.readouterr()
    assert "skipped 1 bad row" in captured.out + captured.err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["bad_rows_skipped"] == 1
    assert summary["resumed_from"].endswith("checkpoint-1")
    original = _lines(first_run / "reward_calls.jsonl")
    resumed = _lines(out / "reward_calls.jsonl")
    assert len(resumed) == 1 and resumed[0]["step"] == 1
    assert resumed[0]["row_ids"] == original[1]["row_ids"]
    final = load_file(str(out / "final" / "model.safetensors"))
    base = load_file(str(first_run / "checkpoint-1" / "model.safetensors"))
    assert set(final) == set(shifted)
    # one step at lr 1e-6 moves weights by ~1e-6: the result is the shifted checkpoint, not the base policy
    assert max(float((final[k] - shifted[k]).abs().max()) for k in final) < 1e-3
    assert min(float((final[k] - base[k]).abs().mean()) for k in final if final[k].is_floating_point()) > 5e-3


def test_bad_rows_fail_before_training_with_positions(world, tmp_path, capsys):
    from samr1.cli import main

    data = tmp_path / "d"
    manifest = write_scene_manifest(data, 4, size=(40, 56), seed=9)
    Image.fromarray(np.zeros((5, 7), np.uint8)).save(data / "tiny_mask.png")
    with open(manifest, "a", encoding="utf-8") as f:
        f.write(json.dumps({"image": "img9.png", "query": "q", "mask": "tiny_mask.png"}) + "\n")  # line 5
        f.write(json.dumps({"image": "missing.png", "query": "q", "mask": "tiny_mask.png"}) + "\n")  # line 6
    out = tmp_path / "out"
    capsys.readouterr()
    try:
        rc = main(_cmd(dict(world, manifest=manifest), out))
        msg = capsys.readouterr().err
    except InputError as exc:  # a CLI that lets user errors propagate
        rc, msg = 1, str(exc)
    assert rc != 0
    assert "2 bad training row(s)" in msg and "--skip-bad-rows" in msg
    assert f"{manifest}:5" in msg and "5x7" in msg
    assert f"{manifest}:6" in msg and "missing.png" in msg
    assert not (out / "reward_calls.jsonl").exists()  # nothing ran


def test_reward_hub_dedups_copies_and_matches_direct_reward(tmp_path):
    """G copies as distinct but equal arrays: the hub's result equals SamR1Reward called directly, and the
    engine encodes each distinct image once."""
    from samr1.engine import SamEngine
    from samr1.rewards import SamR1Reward
    from samr1.sam import load_sam
    from samr1.shapes.scenes import make_scene
    from samr1.train.rewards_hub import RewardHub

    sam = load_sam("tiny-shapes")
    rng = np.random.default_rng()
    images, masks, comps, ids = [], [], [], []
    for r in range(3):
        sc = make_scene(int(rng.integers(1 << 30)), size=(int(rng.integers(50, 90)), int(rng.integers(50, 90))))
        obj = sc.objects[-1]
        ys, xs = np.nonzero(obj.mask)
        h, w = obj.mask.shape
        for g in range(4):
            jitter = rng.integers(-3, 4, size=4)
            # a box near the object's, in the 840 frame; some completions malformed on purpose
            x1, y1 = (xs.min() + jitter[0]) * 840 / w, (ys.min() + jitter[1]) * 840 / h
            x2, y2 = (xs.max() + jitter[2]) * 840 / w, (ys.max() + jitter[3]) * 840 / h
            cx, cy = xs.mean() * 840 / w, ys.mean() * 840 / h
            text = (f"<think>t</think><answer>{{\"bbox\": [{x1:.0f},{y1:.0f},{x2:.0f},{y2:.0f}], \"points_1\": "
                    f"[{cx:.0f},{cy:.0f}], \"points_2\": [{cx:.0f},{cy:.0f}]}}</answer>") if g != 3 else "no answer"
            comps.append(text)
            images.append(sc.image.copy())  # a distinct object per copy, equal pixels
            masks.append(obj.mask)
            ids.append(r)
    logged: dict[str, list[float]] = {}

    def log_metric(name, value):
        logged.setdefault(name, []).append(value)

    engine = SamEngine(sam)
    hub = RewardHub(SamR1Reward(engine, image_key="sam_image"), log_dir=str(tmp_path))
    fns = hub.functions()
    assert [f.__name__ for f in fns] == list(COMPONENTS)
    got = [f(prompts=None, completions=comps, sam_image=images, mask=masks, row_id=ids, log_metric=log_metric)
           for f in fns]
    direct = SamR1Reward(SamEngine(sam), image_key="sam_image").functions()
    want = [f(completions=list(comps), sam_image=[i.copy() for i in images], mask=list(masks)) for f in direct]
    for a, b in zip(got, want, strict=True):
        assert a == pytest.approx(b, abs=1e-6)
    assert engine.stats["encoder_images"] == 3
    assert logged["samr1/parse_failure_rate"] == [pytest.approx(3 / 12)]
    assert logged["samr1/distinct_images"] == [3.0]
    assert len(logged["samr1/reward_latency_s"]) == 1  # once per step, not once per component
    call = _lines(tmp_path / "reward_calls.jsonl")
    assert call[0]["copies"] == {"0": 4, "1": 4, "2": 4}
