"""``samr1.trl_rewards``: reward functions ``trl grpo`` imports by dotted path, one shared engine, one SAM pass per
batch; and ``samr1 trl-data`` + TRL's own ``trl grpo`` script on the tiny policy (real TRL, real SAM module)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from samr1.config import ConfigError
from samr1.train.scene_data import write_scene_manifest


def _answers(masks, frame):
    """One completion per mask: a box around the object and its centre, in the frame x frame policy image."""
    out = []
    for m in masks:
        ys, xs = np.nonzero(m)
        h, w = m.shape
        sx, sy = frame / w, frame / h
        box = [xs.min() * sx, ys.min() * sy, (xs.max() + 1) * sx, (ys.max() + 1) * sy]
        c = [xs.mean() * sx, ys.mean() * sy]
        b = [int(v) for v in box]
        p = [int(v) for v in c]
        out.append(f'<think>it is there</think><answer>{{"bbox": {b}, "points_1": {p}, "points_2": {p}}}</answer>')
    return out


@pytest.fixture()
def env(monkeypatch):
    import samr1.trl_rewards as tr

    for k in list(os.environ):
        if k.startswith("SAMR1_"):
            monkeypatch.delenv(k)
    monkeypatch.setenv("SAMR1_SAM", "tiny-shapes")
    monkeypatch.setenv("SAMR1_DEVICE", "cpu")
    monkeypatch.setenv("SAMR1_MODEL_SIZE", "56")
    tr.reset()
    yield tr
    tr.reset()


def test_functions_match_the_reward_and_share_one_sam_pass(env, tmp_path):
    from samr1.rewards import SamR1Reward
    from samr1.train.data import PolicyDataset, check_rows, load_rows

    tr = env
    manifest = write_scene_manifest(tmp_path / "d", 4, size=(48, 64), seed=int(np.random.default_rng().integers(99)))
    ds = PolicyDataset(check_rows(load_rows(manifest))[0], policy_size=56)
    items = [ds[i] for i in (0, 0, 1, 1, 2, 3)]
    comps = _answers([it["mask"] for it in items], 56)
    comps[3] = "<answer>{not json</answer>"
    funcs = [tr.think_format, tr.answer_format, tr.tiered_iou, tr.mask_iou]
    extra: dict[str, list] = {}

    def batch():
        cols = {"sam_image": [it["sam_image"] for it in items], "mask": [it["mask"] for it in items],
                "image": [it["image"] for it in items], "log_extra": lambda c, v: extra.setdefault(c, []).extend(v)}
        completions = list(comps)
        return [f(prompts=None, completions=completions, **cols) for f in funcs]

    got = batch()  # the first batch builds the shared reward as the components arrive
    engine = tr.shared_engine()
    want = SamR1Reward(engine, components=("think", "answer", "iou", "mask_iou"), image_key="sam_image",
                       model_size=(56, 56)).functions()
    ref = [f(completions=list(comps), sam_image=[it["sam_image"] for it in items],
             mask=[it["mask"] for it in items]) for f in want]
    for g, w in zip(got, ref, strict=True):
        assert g == pytest.approx(w, abs=1e-6)
    assert sum(got[2]) > 0 and got[1][3] == 0.0  # SAM scored the good answers, the broken one failed
    calls = tr._STATE["reward"].stats["engine_calls"]
    for _ in range(2):  # from the second batch on: every component reads ONE engine call per batch
        again = batch()
        assert again == got
    assert tr._STATE["reward"].stats["engine_calls"] == calls + 2
    assert tr.shared_engine() is engine  # one engine per process
    assert len(extra["samr1_reason"]) == len(extra["samr1_iou"]) and len(extra["samr1_reason"]) % len(comps) == 0


def test_sam_kind_required_only_by_the_sam_components(env, monkeypatch):
    tr = env
    monkeypatch.delenv("SAMR1_SAM")
    comps = ["<think>x</think><answer>{\"bbox\": [1,2,30,40], \"points_1\": [5,6], \"points_2\": [7,8]}</answer>"]
    assert tr.think_format(completions=comps) == [1.0]  # no SAM needed, none built
    with pytest.raises(ConfigError, match="SAMR1_SAM is not set"):
        tr.tiered_iou(completions=comps, image=[np.zeros((8, 8, 3), np.uint8)], mask=[np.zeros((8, 8), bool)])
    monkeypatch.setenv("SAMR1_REWARD_OPTIONS", "{oops")
    tr.reset()
    with pytest.raises(ConfigError, match="SAMR1_REWARD_OPTIONS"):
        tr.think_format(completions=comps)


@pytest.mark.slow
def test_trl_grpo_script_trains_with_samr1_rewards(tmp_path, tiny_policy):
    """``samr1 trl-data`` writes the dataset and TRL's own ``trl grpo`` trains a step with samr1's rewards."""
    from samr1.cli import main

    manifest = write_scene_manifest(tmp_path / "d", 4, size=(48, 64), seed=5)
    data = tmp_path / "trl_data"
    assert main(["trl-data", "--data", manifest, "--out", str(data), "--policy-image-size", "56"]) == 0
    assert main(["trl-data", "--data", manifest, "--out", str(data)]) == 2  # nothing is overwritten
    out = tmp_path / "out"
    cmd = [sys.executable, "-c", "import sys; from trl.cli import main; sys.argv[0] = 'trl'; sys.exit(main())",
           "grpo", "--model_name_or_path", tiny_policy[0], "--dataset_name", str(data),
           "--reward_funcs", "samr1.trl_rewards.think_format", "samr1.trl_rewards.answer_format",
           "samr1.trl_rewards.tiered_iou", "--num_generations", "2", "--per_device_train_batch_size", "4",
           "--max_completion_length", "8", "--max_steps", "1", "--use_cpu", "--bf16", "false",
           "--activation_checkpointing", "false", "--report_to", "none", "--save_strategy", "steps",
           "--save_steps", "1", "--logging_steps", "1", "--output_dir", str(out)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAMR1_")}
    env.update(SAMR1_SAM="tiny-shapes", SAMR1_DEVICE="cpu", SAMR1_MODEL_SIZE="56", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                           env.get("PYTHONPATH", "")]))
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    state = json.loads((out / "checkpoint-1" / "trainer_state.json").read_text())
    logged = state["log_history"][0]
    for name in ("think_format", "answer_format", "tiered_iou"):
        assert f"rewards/{name}/mean" in logged, logged
    assert "samr1/mean_iou" in logged and "samr1/reason/no_answer_block" in logged  # the reward's own logs


def test_trl_data_keeps_reasonseg_ignore_regions_and_the_reward_reads_them(env, tmp_path):
    """A ReasonSeg folder exported for ``trl grpo``: its ignore regions travel in an ``ignore`` column and the
    reward functions leave those pixels out of I and U, as ``samr1 eval`` does."""
    import datasets
    from PIL import Image

    from samr1.answer import parse_answer
    from samr1.cli import main
    from samr1.metrics import sample_counts

    tr = env
    rng = np.random.default_rng()
    src = tmp_path / "reasonseg"
    src.mkdir()
    sizes = [(int(rng.integers(50, 90)), int(rng.integers(50, 90))) for _ in range(2)]
    for k, (h, w) in enumerate(sizes):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(src / f"s{k}.jpg")
        shapes = [{"label": "target", "points": [[3, 4], [w // 2, 4], [w // 2, h // 2], [3, h // 2]]}]
        if k == 1:  # the first scene has no ignore region
            shapes.append({"label": "ignore", "points": [[w // 2 + 2, 5], [w - 3, 5], [w - 3, h - 3], [w // 2 + 2, h - 3]]})
        (src / f"s{k}.json").write_text(json.dumps({"text": [f"query {k}"], "is_sentence": True, "shapes": shapes}))
    out = tmp_path / "trl"
    assert main(["trl-data", "--data", str(src), "--out", str(out), "--policy-image-size", "56"]) == 0
    ds = datasets.load_dataset("parquet", data_files=str(out / "train.parquet"), split="train")
    rows = {r["prompt"][0]["content"].count("query 1") > 0: r for r in ds}
    assert rows[False]["ignore"] is None and rows[True]["ignore"] is not None
    ign = np.asarray(rows[True]["ignore"]) > 0
    assert ign.any() and not (ign & (np.asarray(rows[True]["mask"]) > 0)).any()
    r = rows[True]
    texts = ['<think>t</think><answer>{"bbox": [2, 2, 54, 54], "points_1": [40, 30], "points_2": [10, 10]}</answer>',
             '<think>t</think><answer>{"bbox": [20, 3, 55, 50], "points_1": [45, 30], "points_2": [30, 20]}</answer>']
    n = len(texts)
    cols = {"sam_image": [r["sam_image"]] * n, "mask": [r["mask"]] * n, "image": [r["image"]] * n,
            "ignore": [r["ignore"]] * n}
    got = tr.mask_iou(prompts=None, completions=list(texts), **cols)
    engine = tr.shared_engine()
    img = np.asarray(r["sam_image"].convert("RGB"))
    gt = (np.asarray(r["mask"]) > 0).astype(np.uint8)
    gt[ign] = 255
    for t, v in zip(texts, got, strict=True):
        pred = engine.segment(img, parse_answer(t, img.shape[:2], (56, 56)))
        inter, union, _, _ = sample_counts(pred, gt)
        assert v == pytest.approx(1.0 if union == 0 else inter / union, rel=1e-6, abs=1e-7)
    cols.pop("ignore")
    tr.reset()
    without = tr.mask_iou(prompts=None, completions=list(texts), **cols)
    assert any(abs(a - b) > 1e-3 for a, b in zip(got, without, strict=True))  # the region mattered here
