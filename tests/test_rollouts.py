"""Rollout logging (``samr1 train --rollouts-every K``) and the run viewer (``samr1 view``) over what it writes.

The batches go through the real reward path (``RewardHub`` over ``SamR1Reward`` and the shipped tiny-shapes
SAM); the training run is a real ``samr1 train`` (tiny Qwen2.5-VL built in code, TRL's GRPOTrainer) resumed
into the same folder; the viewer is served over real HTTP and, where Chromium is installed, driven in it.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request

import numpy as np
import pytest
from _browser import chrome, colour_pixels, requires_browser, screenshot_rgb, unlabelled_controls, wait_for
from _markers import requires_sam2

from samr1.io import rle_decode
from samr1.train.rollouts import RolloutLog, read_jsonl

G = 3


def _answer(mask: np.ndarray, rng: np.random.Generator) -> str:
    """A parseable completion whose box is near the object's (840 frame), with the object's centre as a point."""
    h, w = mask.shape
    ys, xs = np.nonzero(mask)
    j = rng.integers(-2, 3, size=4)
    box = [(xs.min() + j[0]) * 840 / w, (ys.min() + j[1]) * 840 / h, (xs.max() + j[2]) * 840 / w,
           (ys.max() + j[3]) * 840 / h]
    cx, cy = xs.mean() * 840 / w, ys.mean() * 840 / h
    return (f"<think>the shape</think><answer>{{\"bbox\": [{box[0]:.0f},{box[1]:.0f},{box[2]:.0f},{box[3]:.0f}], "
            f"\"points_1\": [{cx:.0f},{cy:.0f}], \"points_2\": [{cx:.0f},{cy:.0f}]}}</answer>")


def _batch(seed: int, prompts: int = 3):
    """TRL's layout: ``prompts`` x G completions, a prompt's copies together; the last copy never parses."""
    from samr1.shapes.scenes import make_scene

    rng = np.random.default_rng(seed)
    comps, images, masks, ids = [], [], [], []
    for r in range(prompts):
        sc = make_scene(int(rng.integers(1 << 30)), size=(int(rng.integers(48, 80)), int(rng.integers(48, 80))))
        obj = max(sc.objects, key=lambda o: int(o.mask.sum()))  # the most visible: SAM's mask of it is large
        for g in range(G):
            comps.append(_answer(obj.mask, rng) if g < G - 1 else "<think>?</think> no answer")
            images.append(sc.image.copy())  # distinct objects, equal pixels: what a dataset decoding per access gives
            masks.append(obj.mask)
            ids.append(100 + r)
    return comps, images, masks, ids


def _hub(engine, directory, every=2, **kw):
    from samr1.rewards import SamR1Reward
    from samr1.train.rewards_hub import RewardHub

    reward = SamR1Reward(engine, image_key="sam_image")
    log = RolloutLog(directory, every, reward, query_of=lambda i: f"query of row {i}", **kw)
    return RewardHub(reward, rollouts=log), log


def _score(hub, batch, global_step):
    from transformers import TrainerState

    comps, images, masks, ids = batch
    state = TrainerState(global_step=global_step)
    return [f(prompts=None, completions=comps, sam_image=images, mask=masks, row_id=ids, trainer_state=state)
            for f in hub.functions()]


def _groups(path):
    return [r for r in read_jsonl(path)[0] if r["type"] == "group"]


def test_logged_groups_hold_what_the_reward_saw(shapes_engine, tmp_path):
    from samr1.answer import parse_answer

    d = tmp_path / "rollouts"
    hub, log = _hub(shapes_engine, d, every=2, groups=2)
    batches = {gs: _batch(seed=gs) for gs in range(4)}
    values = {gs: _score(hub, batches[gs], gs) for gs in range(4)}
    hub.close()
    recs = _groups(d / "rollouts.jsonl")
    # global steps 0 and 2 are logged, as optimizer steps 1 and 3; two groups each, the first two prompts
    assert [(r["step"], r["row_id"]) for r in recs] == [(1, 100), (1, 101), (3, 100), (3, 101)]
    for r in recs:
        gs = r["step"] - 1
        comps, images, masks, ids = batches[gs]
        rows = [i for i, x in enumerate(ids) if x == r["row_id"]]
        assert r["query"] == f"query of row {r['row_id']}"
        assert r["components"] == ["think_format", "answer_format", "tiered_iou"]
        image = images[rows[0]]
        assert r["size"] == list(image.shape[:2])
        assert np.array_equal(rle_decode(r["gt"]), masks[rows[0]])
        assert len(r["completions"]) == G
        answers = [parse_answer(comps[i], image.shape[:2]) for i in rows]
        ious = shapes_engine.score([image] * G, answers, [masks[rows[0]]] * G)
        for k, (c, i) in enumerate(zip(r["completions"], rows, strict=True)):
            assert c["text"] == comps[i]
            assert c["rewards"] == {n: pytest.approx(values[gs][j][i]) for j, n in enumerate(r["components"])}
            assert c["reward"] == pytest.approx(sum(values[gs][j][i] for j in range(3)))
            if k < G - 1:  # parsed: SAM's mask of the answer, its IoU the reward's own
                assert c["ok"] and c["objects"][0]["bbox"] == pytest.approx(list(answers[k].bbox), abs=0.01)
                mask = rle_decode(c["mask"])
                assert np.array_equal(mask, shapes_engine.segment(image, answers[k]))
                assert c["iou"] == pytest.approx(ious[k], abs=1e-6)
            else:
                assert not c["ok"] and c["reason"].startswith("no_answer_block") and c["mask"] is None
        totals = [c["reward"] for c in r["completions"]]
        assert r["reward_std"] == pytest.approx(float(np.std(totals)))
        # the image, once per content, as JPEG close to the pixels
        from PIL import Image

        stored = np.asarray(Image.open(d / r["image_file"]).convert("RGB"), np.int16)
        assert stored.shape == image.shape and np.abs(stored - image).mean() < 8  # JPEG of a noisy scene
    assert len(os.listdir(d / "images")) == len({r["image"] for r in recs}) == 4
    assert log.stats["steps_logged"] == 2 and log.stopped is None


def test_reopening_appends_and_never_rewrites(shapes_engine, tmp_path):
    d = tmp_path / "rollouts"
    hub, _ = _hub(shapes_engine, d, every=1, groups=1)
    _score(hub, _batch(seed=7), 0)
    hub.close()
    path = d / "rollouts.jsonl"
    before = path.read_bytes()
    img = next((d / "images").iterdir())
    stat = img.stat()
    with open(path, "ab") as f:
        f.write(b'{"type": "group", "step": 9, "torn')  # a run killed mid-line
    hub, _ = _hub(shapes_engine, d, every=1, groups=1)
    _score(hub, _batch(seed=7), 1)  # the same images again
    hub.close()
    after = path.read_bytes()
    assert after.startswith(before + b'{"type": "group", "step": 9, "torn\n')  # earlier bytes kept, torn line closed
    recs, bad = read_jsonl(path)
    assert bad == 1
    assert [r["session"] for r in recs if r["type"] == "session"] == [1, 2]
    assert [(r["session"], r["step"]) for r in recs if r["type"] == "group"] == [(1, 1), (2, 2)]
    assert img.stat().st_mtime_ns == stat.st_mtime_ns and img.stat().st_ino == stat.st_ino  # not rewritten
    assert len(list((d / "images").iterdir())) == 1


def test_a_bad_row_is_skipped_and_the_log_goes_on(shapes_engine, tmp_path):
    d = tmp_path / "rollouts"
    hub, log = _hub(shapes_engine, d, every=1, groups=2)
    comps, images, masks, ids = _batch(seed=4)
    masks = [np.zeros((5, 5), bool)] * G + masks[G:]  # the first prompt's mask is not its image's size
    with pytest.warns(RuntimeWarning, match="mask_size_mismatch"):  # the reward's own warning
        _score(hub, (comps, images, masks, ids), 0)
    _score(hub, _batch(seed=8), 1)
    hub.close()
    assert log.stopped is None and log.stats["groups_skipped"] == 1
    assert [(r["step"], r["row_id"]) for r in _groups(d / "rollouts.jsonl")] == [(1, 101), (2, 100), (2, 101)]


def test_an_image_sam_refuses_loses_only_its_own_masks(shapes_engine, tmp_path, monkeypatch):
    """A group whose image SAM cannot encode (1 x 3000: its short side would become 0 px) is logged without
    masks; the other groups' masks are still made, also on the second-decode path (no kept logits)."""
    monkeypatch.setattr(shapes_engine, "kept_logits", lambda: None)
    d = tmp_path / "rollouts"
    hub, log = _hub(shapes_engine, d, every=1, groups=3)
    comps, images, masks, ids = _batch(seed=5)
    thin = np.zeros((1, 3000), bool)
    thin[0, 10:400] = True
    images = [np.zeros((1, 3000, 3), np.uint8)] * G + images[G:]
    masks = [thin] * G + masks[G:]
    comps = [_answer(thin, np.random.default_rng(0))] * G + comps[G:]
    with pytest.warns(RuntimeWarning, match="engine_input_error"):  # the reward's own warning: row scored 0
        _score(hub, (comps, images, masks, ids), 0)
    hub.close()
    recs = {r["row_id"]: r for r in _groups(d / "rollouts.jsonl")}
    assert set(recs) == {100, 101, 102}
    assert all(c["ok"] and c["mask"] is None and c["iou"] is None for c in recs[100]["completions"])
    for rid in (101, 102):
        logged = recs[rid]["completions"]
        assert all(c["mask"] is not None and c["iou"] is not None for c in logged[:G - 1]), rid
    assert log.stats["masks_decoded"] == 2 * (G - 1) and log.stats["masks_kept"] == 0


def _log_with_ignore(engine, directory):
    """One logged step of three prompts, two of them with a random ignore block (overlapping the object or not);
    returns the batch and its ignore column."""
    from transformers import TrainerState

    hub, _ = _hub(engine, directory, every=1, groups=3)
    comps, images, masks, ids = _batch(seed=11)
    rng = np.random.default_rng()
    ignores = []
    for r in range(3):
        h, w = masks[r * G].shape
        ign = None
        if r < 2:
            ign = np.zeros((h, w), bool)
            y, x = int(rng.integers(0, h - 8)), int(rng.integers(0, w - 8))
            ign[y:y + int(rng.integers(4, h - y)), x:x + int(rng.integers(4, w - x))] = True
        ignores += [ign] * G
    state = TrainerState(global_step=0)
    for f in hub.functions():
        f(prompts=None, completions=comps, sam_image=images, mask=masks, ignore=ignores, row_id=ids,
          trainer_state=state)
    hub.close()
    return (comps, images, masks, ids), ignores


@pytest.mark.parametrize("kept", [True, False])
def test_logged_iou_leaves_the_ignore_region_out_as_the_reward_does(shapes_engine, tmp_path, monkeypatch, kept):
    from samr1.answer import parse_answer

    if not kept:  # the second-decode path: the same rule
        monkeypatch.setattr(shapes_engine, "kept_logits", lambda: None)
    d = tmp_path / "rollouts"
    (comps, images, masks, ids), ignores = _log_with_ignore(shapes_engine, d)
    recs = _groups(d / "rollouts.jsonl")
    assert len(recs) == 3
    for r in recs:
        rows = [i for i, x in enumerate(ids) if x == r["row_id"]]
        image, gt, ign = images[rows[0]], masks[rows[0]], ignores[rows[0]]
        answers = [parse_answer(comps[i], image.shape[:2]) for i in rows]
        want = shapes_engine.score([image] * G, answers, [gt & ~ign if ign is not None else gt] * G,
                                   ignore=[ign] * G)
        for k, c in enumerate(r["completions"][:G - 1]):
            assert c["iou"] == pytest.approx(want[k], abs=1e-6), (r["row_id"], k)
        assert (r["ignore"] is None) == (ign is None)
        if ign is not None:
            assert np.array_equal(rle_decode(r["ignore"]), ign)
            assert np.array_equal(rle_decode(r["gt"]), gt)  # the target as the dataset gave it


@requires_browser
def test_viewer_shows_the_ignore_region(shapes_engine, tmp_path):
    from samr1.view.export import export_html

    _, ignores = _log_with_ignore(shapes_engine, tmp_path / "rollouts")
    out = tmp_path / "run.html"
    export_html(str(tmp_path), str(out))
    driver = chrome()
    try:
        from selenium.webdriver.common.by import By

        driver.get(out.as_uri())
        wait_for("the step's three groups", lambda: len(driver.find_elements(By.CSS_SELECTOR, "#groups .group")) == 3)
        truths = driver.find_elements(By.CSS_SELECTOR, "#groups .group figure.answer.gt")
        captions = [t.find_element(By.CSS_SELECTOR, "p.comp").text for t in truths]
        for k in range(3):
            n = int(ignores[k * G].sum()) if ignores[k * G] is not None else 0
            assert (f"{n} ignored" in captions[k]) == (n > 0), captions
        # an ignore pixel outside the target is the image blended with grey (the canvas is at image size)
        from PIL import Image

        recs = _groups(tmp_path / "rollouts" / "rollouts.jsonl")
        for k in range(2):
            ign, gt = rle_decode(recs[k]["ignore"]), rle_decode(recs[k]["gt"])
            ys, xs = np.nonzero(ign & ~gt)
            if not len(ys):
                continue
            y, x = int(ys[len(ys) // 2]), int(xs[len(xs) // 2])
            got = driver.execute_script("return Array.from(arguments[0].getContext('2d')"
                                        ".getImageData(arguments[1], arguments[2], 1, 1).data)",
                                        truths[k].find_element(By.TAG_NAME, "canvas"), x, y)[:3]
            img = np.asarray(Image.open(tmp_path / "rollouts" / recs[k]["image_file"]).convert("RGB"), float)
            want = 0.4 * img[y, x] + 0.6 * 128
            assert np.abs(np.asarray(got, float) - want).max() <= 8, (got, want)
    finally:
        driver.quit()


@pytest.mark.parametrize("form", ["array", "copies", "nested-lists"])
def test_without_row_ids_two_queries_on_one_image_are_two_groups(shapes_engine, tmp_path, form):
    """No row_id column: groups are told apart by image AND target, so each is logged with its own ground truth
    and ignore region and its IoUs are the reward's, whether the G copies of a target are one object, equal
    copies or nested lists."""
    from transformers import TrainerState

    from samr1.answer import parse_answer
    from samr1.shapes.scenes import make_scene

    rng = np.random.default_rng()
    for _ in range(100):  # a random scene where at least two objects are visible
        sc = make_scene(int(rng.integers(1 << 30)), size=(72, 96), n_objects=3)
        objs = sorted((o for o in sc.objects if o.mask.sum() >= 20), key=lambda o: -int(o.mask.sum()))[:2]
        if len(objs) == 2:
            break
    assert len(objs) == 2
    ign = np.zeros((72, 96), bool)
    ign[:, :20] = True
    comps, images, masks, ignores = [], [], [], []
    for q, o in enumerate(objs):
        for _ in range(G):
            comps.append(_answer(o.mask, rng))
            images.append(sc.image)
            m = o.mask if form == "array" else o.mask.copy() if form == "copies" else o.mask.tolist()
            masks.append(m)
            ignores.append(ign if q == 1 else None)
    d = tmp_path / "rollouts"
    hub, _ = _hub(shapes_engine, d, every=1, groups=4)
    for f in hub.functions():
        f(prompts=None, completions=comps, sam_image=images, mask=masks, ignore=ignores,
          trainer_state=TrainerState(global_step=0))
    hub.close()
    recs = _groups(d / "rollouts.jsonl")
    assert len(recs) == 2 and all(len(r["completions"]) == G for r in recs)
    for q, r in enumerate(recs):
        assert np.array_equal(rle_decode(r["gt"]), objs[q].mask) and (r["ignore"] is None) == (q == 0)
        answers = [parse_answer(c, (72, 96)) for c in comps[q * G:(q + 1) * G]]
        x = ign if q == 1 else None
        want = shapes_engine.score([sc.image] * G, answers, [objs[q].mask & ~x if x is not None else objs[q].mask] * G,
                                   ignore=[x] * G)
        assert [c["iou"] for c in r["completions"]] == pytest.approx(want, abs=1e-6)


def test_byte_budget_stops_the_log_and_says_so(shapes_engine, tmp_path):
    d = tmp_path / "rollouts"
    hub, log = _hub(shapes_engine, d, every=1, groups=1)
    _score(hub, _batch(seed=3), 0)
    hub.close()
    used = os.path.getsize(d / "rollouts.jsonl") + sum(p.stat().st_size for p in (d / "images").iterdir())
    budget = used + 1000  # room for the next session line and the budget line, not for another group
    hub, log = _hub(shapes_engine, d, every=1, groups=1, max_bytes=budget)
    with pytest.warns(RuntimeWarning, match="budget"):
        for gs in range(1, 4):
            _score(hub, _batch(seed=10 + gs), gs)
            log.flush()
    hub.close()
    recs, _ = read_jsonl(d / "rollouts.jsonl")
    assert [r["type"] for r in recs] == ["session", "group", "session", "budget"]
    assert recs[-1]["max_bytes"] == budget and log.stopped and "budget" in log.stopped
    total = os.path.getsize(d / "rollouts.jsonl") + sum(p.stat().st_size for p in (d / "images").iterdir())
    assert total <= budget


# ------------------------------------------------------------------ the masks come from the reward's own decode
@pytest.fixture(scope="module")
def sam2_engine():
    """A SAM 2 engine (sam2.1_hiera_t, random weights) decoding 8 prompts per call, as on a GPU (on the CPU it
    decodes one at a time): its logged masks then come from a batched decode, like SAM's."""
    import warnings

    from samr1.engine.sam2_engine import Sam2Engine
    from samr1.sam import load_sam

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return Sam2Engine(load_sam("sam2.1_hiera_t", seed=0), decode_chunk=8)


def _random_answer(rng: np.random.Generator, h: int, w: int) -> str:
    """A random box and 1-3 random points inside it (not aimed at anything), written in the 840 frame."""
    x1, x2 = sorted(rng.uniform(0, w, 2))
    y1, y2 = sorted(rng.uniform(0, h, 2))
    sx, sy = 840 / w, 840 / h
    pts = [[round(float(rng.uniform(x1, x2)) * sx, 1), round(float(rng.uniform(y1, y2)) * sy, 1)]
           for _ in range(int(rng.integers(1, 4)))]
    box = [round(x1 * sx, 1), round(y1 * sy, 1), round(max(x2, x1 + 2) * sx, 1), round(max(y2, y1 + 2) * sy, 1)]
    return f"<think>t</think><answer>{json.dumps({'bbox': box, 'points': pts})}</answer>"


def _random_batch(seed: int, sizes: list[tuple[int, int]], g: int = 4):
    """One prompt per (odd) image size, ``g`` random answers each; the first prompt's last answer lists two
    objects (a union of two prompts' masks), the second prompt's last answer does not parse."""
    from samr1.shapes.scenes import make_scene

    rng = np.random.default_rng(seed)  # seeded: see the test's docstring
    comps, images, masks, ids = [], [], [], []
    for r, (h, w) in enumerate(sizes):
        sc = make_scene(int(rng.integers(1 << 30)), size=(h, w))
        for k in range(g):
            text = _random_answer(rng, h, w)
            if r == 0 and k == g - 1:
                objs = [json.loads(_random_answer(rng, h, w).split("<answer>")[1].split("</answer>")[0])
                        for _ in range(2)]
                text = f"<think>t</think><answer>{json.dumps([{'bbox_2d': o['bbox'], 'point_2d': o['points']} for o in objs])}</answer>"
            elif r == 1 and k == g - 1:
                text = "<think>?</think> no answer"
            comps.append(text)
            images.append(sc.image.copy())
            masks.append(sc.objects[0].mask)
            ids.append(200 + r)
    return comps, images, masks, ids


@pytest.mark.parametrize("kind", ["sam", pytest.param("sam2", marks=requires_sam2)])
def test_logged_masks_are_segments_made_from_the_reward_calls_logits(kind, request, tmp_path, monkeypatch):
    """Every logged single-object mask comes from the low-res logits the reward's engine call decoded (no
    decode on the writer thread) and equals ``engine.segment(image, answer)`` bit for bit, on random answers
    and odd image sizes; only the multi-object answer is decoded again. (A prompt's logits differ from a lone
    decode's by round-off, up to ~3e-5 on tiny-shapes; that has flipped no pixel of 800 masks checked, and the
    seeded RNG keeps this test's answers fixed.)"""
    import threading

    from samr1.answer import parse_answer
    from samr1.engine.scoring import n_objects

    engine = request.getfixturevalue("shapes_engine" if kind == "sam" else "sam2_engine")
    sizes = [(61, 97), (83, 45), (50, 131)] if kind == "sam" else [(61, 97), (45, 83)]
    batch = _random_batch(11, sizes)
    decodes: list[tuple[str, int]] = []  # (thread name, prompts) of every decoder call
    real = engine._decode

    def spy(*args, **kwargs):
        decodes.append((threading.current_thread().name, len(args[-1])))
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "_decode", spy)
    d = tmp_path / "rollouts"
    hub, log = _hub(engine, d, every=1, groups=len(sizes))
    assert engine.keep_logits  # the log asked the engine to keep its logits
    _score(hub, batch, 0)
    hub.close()
    assert not engine.keep_logits and engine.kept_logits() is not None  # dropped by the engine's next call
    writer = [n for name, n in decodes if name == "samr1-rollouts"]
    assert writer == [2]  # one decode on the writer thread: the two objects of the multi-object answer
    comps, images, _, ids = batch
    recs = _groups(d / "rollouts.jsonl")
    assert [r["row_id"] for r in recs] == [200 + r for r in range(len(sizes))]
    checked = 0
    for r in recs:
        rows = [i for i, x in enumerate(ids) if x == r["row_id"]]
        image = images[rows[0]]
        for c, i in zip(r["completions"], rows, strict=True):
            a = parse_answer(comps[i], image.shape[:2])
            if not a.ok:
                assert c["mask"] is None
                continue
            mask = rle_decode(c["mask"])
            assert mask.shape == image.shape[:2]
            assert np.array_equal(mask, engine.segment(image, a)), (r["row_id"], c["text"])
            checked += n_objects(a) == 1
    single = sum(1 for r in recs for c in r["completions"] if c["ok"] and len(c["objects"]) == 1)
    assert checked == single == len(comps) - 2
    assert log.stats["masks_kept"] == single and log.stats["masks_decoded"] == 1
    assert log.stats["writer_cpu_s"] > 0


def test_config_field_and_flag():
    from samr1.cli import build_parser
    from samr1.cli.train import config_from_args
    from samr1.train.config import ConfigError, TrainConfig

    args = build_parser().parse_args(["train", "--model", "m", "--data", "d", "--rollouts-every", "5",
                                      "--rollouts-groups", "3", "--rollouts-max-mb", "12"])
    cfg = config_from_args(args)
    assert (cfg.rollouts_every, cfg.rollouts_groups, cfg.rollouts_max_mb) == (5, 3, 12.0)
    assert TrainConfig().rollouts_every == 0  # off unless asked for
    for field, bad in (("rollouts_every", -1), ("rollouts_groups", 0), ("rollouts_max_mb", 0.0)):
        with pytest.raises(ConfigError, match=field) as ei:
            TrainConfig(model="m", data="d", **{field: bad}).validate()
        assert ei.value.field == field


# ------------------------------------------------------------------------------------ a real run, resumed
@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 2-step ``samr1 train`` with --rollouts-every 1, resumed from checkpoint-1 into the same folder (its step 2
    logged again by session 2), then one more logged step whose answers parse (session 3, step 10: the random
    policy's own never parse, so this is what puts SAM masks in the log)."""
    from samr1.cli import main
    from samr1.engine import SamEngine
    from samr1.sam import load_sam
    from samr1.train.scene_data import write_scene_manifest
    from samr1.train.tiny_policy import build_tiny_policy

    root = tmp_path_factory.mktemp("rollrun")
    policy = build_tiny_policy(root / "policy", hidden=16, seed=1)
    manifest = write_scene_manifest(root / "data", 6, size=(72, 96), seed=3)
    out = root / "out"
    cmd = ["train", "--model", policy, "--data", manifest, "--sam", "tiny-shapes", "--device", "cpu", "--max-steps",
           "2", "--num-generations", "2", "--max-completion-length", "8", "--output-dir", str(out), "--no-progress",
           "--rollouts-every", "1", "--save-steps", "1", "--policy-image-size", "56"]
    assert main(cmd) == 0
    first = (out / "rollouts" / "rollouts.jsonl").read_bytes()
    assert main([*cmd, "--resume", str(out / "checkpoint-1")]) == 0
    hub, _ = _hub(SamEngine(load_sam("tiny-shapes")), out / "rollouts", every=1, groups=2)
    _score(hub, _batch(seed=5), 9)
    hub.close()
    return {"out": out, "first": first}


def test_training_logs_rollouts_and_resume_appends(run):
    out = run["out"]
    path = out / "rollouts" / "rollouts.jsonl"
    assert path.read_bytes().startswith(run["first"])  # the first run's records, byte for byte
    recs, bad = read_jsonl(path)
    assert bad == 0
    groups = [r for r in recs if r["type"] == "group"]
    assert [(r["session"], r["step"]) for r in groups[:6]] == [(1, 1), (1, 1), (1, 2), (1, 2), (2, 2), (2, 2)]
    manifest_queries = {json.loads(x)["query"] for x in open(out.parent / "data" / "train.jsonl", encoding="utf-8")}
    for r in groups[:6]:
        assert r["query"] in manifest_queries
        assert len(r["completions"]) == 2 and (out / "rollouts" / r["image_file"]).is_file()
        assert set(r["completions"][0]["rewards"]) == {"think_format", "answer_format", "tiered_iou"}


def _get(url):
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.read(), r.headers.get("Content-Type")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers.get("Content-Type")


def test_viewer_api_and_export(run, tmp_path):
    from samr1.view.export import export_html
    from samr1.view.server import ViewServer

    with ViewServer(str(run["out"])) as srv:
        status, body, _ = _get(srv.url + "/api/runs")
        assert status == 200 and json.loads(body)["runs"] == ["."]
        steps = json.loads(_get(srv.url + "/api/steps?run=.")[1])
        assert [s["step"] for s in steps["steps"]] == [1, 2, 10]
        assert [(s["session"], s["earlier_sessions"]) for s in steps["steps"]] == [(1, []), (2, [1]), (3, [])]
        assert len(steps["sessions"]) == 3
        curves = json.loads(_get(srv.url + "/api/curves?run=.")[1])
        assert [r["step"] for r in curves["metrics"] if "reward" in r] == [1, 2]
        groups = json.loads(_get(srv.url + "/api/groups?run=.&step=2")[1])["groups"]
        assert [g["session"] for g in groups] == [2, 2]
        status, img, ctype = _get(f"{srv.url}/image?run=.&key={groups[0]['image']}")
        assert status == 200 and ctype == "image/jpeg" and img[:2] == b"\xff\xd8"
        for bad in ("/image?run=.&key=../../metrics", "/image?run=..&key=" + groups[0]["image"],
                    "/api/groups?run=.&step=two", "/static/../../train_config.json", "/nope"):
            status, body, _ = _get(srv.url + bad)
            assert status in (400, 404) and json.loads(body)["error"], bad
        # a step logged while the viewer runs shows up on the next request
        from samr1.engine import SamEngine
        from samr1.sam import load_sam

        hub, _ = _hub(SamEngine(load_sam("tiny-shapes")), run["out"] / "rollouts", every=1, groups=1)
        _score(hub, _batch(seed=6), 19)
        hub.close()
        steps = json.loads(_get(srv.url + "/api/steps?run=.")[1])
        assert [s["step"] for s in steps["steps"]] == [1, 2, 10, 20]
    out = tmp_path / "run.html"
    st = export_html(str(run["out"]), str(out))
    html = out.read_text(encoding="utf-8")
    assert st["steps"] == 4 and st["images"] >= 4
    assert 'src="static/' not in html and 'href="static/' not in html and "http://" not in html.replace(
        "http://www.w3.org/2000/svg", "")
    data = json.loads(html.split('<script type="application/json" id="samr1-data">', 1)[1].split("</script>", 1)[0])
    assert set(data["data"]["."]["groups"]) == {"1", "2", "10", "20"}
    assert all(v.startswith("data:image/jpeg;base64,") for v in data["images"].values())


def test_cli_view_export_and_refusals(run, tmp_path, capsys):
    from samr1.cli import EXIT_OUTPUT, EXIT_USAGE, main

    out = tmp_path / "shared.html"
    assert main(["view", str(run["out"]), "--export", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out and out.stat().st_size > 0
    before = out.read_bytes()
    assert main(["view", str(run["out"]), "--export", str(out)]) == EXIT_OUTPUT  # never replaced silently
    assert "--force" in capsys.readouterr().err and out.read_bytes() == before
    assert main(["view", str(run["out"]), "--export", str(out), "--force"]) == 0
    assert main(["view", str(run["out"]), "--host", "0.0.0.0"]) == EXIT_USAGE  # the viewer has no login
    assert "--allow-remote" in capsys.readouterr().err
    assert main(["view", str(tmp_path / "missing")]) == EXIT_USAGE


_VIEW_IN_A_CHILD = r"""
import contextlib, io, json, re, sys, threading, time, urllib.request
from samr1.cli import main

run_dir, export = sys.argv[1:3]
printed = io.StringIO()
# `samr1 view RUN_DIR --export FILE`, then `samr1 view RUN_DIR --port 0` as the command line runs it: it prints
# its address, then serves until stopped
with contextlib.redirect_stdout(printed):
    assert main(["view", run_dir, "--export", export]) == 0
    threading.Thread(target=main, args=(["view", run_dir, "--port", "0"],), daemon=True).start()
    for _ in range(600):
        m = re.search(r" at (http://\S+)/ ", printed.getvalue())
        if m:
            break
        time.sleep(0.05)
url = m.group(1)
for path in ("/", "/api/runs", "/api/steps?run=.", "/api/curves?run=.", "/api/groups?run=.&step=1"):
    with urllib.request.urlopen(url + path, timeout=30) as r:
        assert r.status == 200, path
heavy = ("torch", "segment_anything", "sam2", "transformers", "trl", "fastapi", "uvicorn")
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules} & set(heavy))))
"""


def test_samr1_view_starts_and_serves_without_importing_torch(shapes_engine, tmp_path):
    """``samr1 view`` is a file reader: it starts, and serves a run's pages, JSON and groups (SAM's masks as RLE),
    without importing torch, SAM or a web framework (checked in a fresh interpreter)."""
    import subprocess
    import sys

    hub, _ = _hub(shapes_engine, tmp_path / "rollouts", every=1, groups=1)
    _score(hub, _batch(seed=7), 0)
    hub.close()
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 1, "reward": 0.5}) + "\n")
    out = subprocess.run([sys.executable, "-c", _VIEW_IN_A_CHILD, str(tmp_path), str(tmp_path / "run.html")], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def _open_viewer(driver, url):
    from selenium.webdriver.common.by import By

    driver.get(url)
    wait_for("the list of logged steps", lambda: len(driver.find_elements(By.CSS_SELECTOR, "#steps button")) >= 3)
    return By


def _check_viewer(driver, url):
    """The steps are listed, a step with parsed answers shows its groups with SAM's masks drawn, sorting works."""
    By = _open_viewer(driver, url)
    assert not unlabelled_controls(driver)
    steps = [b.get_attribute("data-step") for b in driver.find_elements(By.CSS_SELECTOR, "#steps button")]
    assert steps[:3] == ["1", "2", "10"]
    assert driver.find_elements(By.CSS_SELECTOR, "#charts figure")  # the learning curves are drawn
    driver.find_element(By.CSS_SELECTOR, '#steps button[data-step="10"]').click()
    wait_for("two groups of G answers", lambda: len(driver.find_elements(By.CSS_SELECTOR, "#groups .group")) == 2
             and len(driver.find_elements(By.CSS_SELECTOR, "#groups .answer:not(.gt)")) == 2 * G)
    # mask opacity to 100 % with the keyboard: the mask is then painted in its own colour
    slider = driver.find_element(By.ID, "opacity")
    slider.send_keys("\ue010")  # End
    assert driver.find_element(By.ID, "opacity-value").text == "100 %"
    card = driver.find_element(By.CSS_SELECTOR, '#groups .group .answer[data-index="0"] canvas')
    rgb = screenshot_rgb(card)
    on = colour_pixels(rgb, (255, 0, 170))
    assert on > 0.02 * rgb.shape[0] * rgb.shape[1], on
    driver.find_element(By.ID, "show-mask").send_keys(" ")  # toggled off by the keyboard
    off = colour_pixels(screenshot_rgb(card), (255, 0, 170))
    assert off < on / 20, (on, off)
    # sort by reward, lowest first: the unparseable answer (reward 0) comes first
    from selenium.webdriver.support.ui import Select

    Select(driver.find_element(By.ID, "sort")).select_by_value("asc")
    first = driver.find_element(By.CSS_SELECTOR, "#groups .group .answers figure.answer:not(.gt)")
    assert first.get_attribute("data-index") == str(G - 1)


@requires_browser
def test_viewer_in_a_browser(run, tmp_path):
    from samr1.view.export import export_html
    from samr1.view.server import ViewServer

    driver = chrome()
    try:
        with ViewServer(str(run["out"])) as srv:
            _check_viewer(driver, srv.url + "/")
        # the exported file, opened from disk with no server at all
        out = tmp_path / "run.html"
        export_html(str(run["out"]), str(out))
        _check_viewer(driver, out.as_uri())
    finally:
        driver.quit()
