"""samr1.client as a TRL reward function against a real server (loopback, free port, tiny-shapes SAM):
the same rewards as the in-process SamR1Reward on the same batch, each image uploaded once."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _markers import requires_serve

from samr1 import serve  # serve.create_app imports FastAPI: only in @requires_serve tests
from samr1.client import AsyncSamR1Client, SamR1Client
from samr1.io import rle_encode
from samr1.rewards import SamR1Reward
from samr1.serve import ServerThread
from samr1.shapes.scenes import make_scene


@pytest.fixture(scope="module")
def engine():
    from samr1.engine import SamEngine
    from samr1.sam import load_sam

    return SamEngine(load_sam("tiny-shapes"))


def _completion(mask: np.ndarray, rng: np.random.Generator, kind: str) -> str:
    """A completion in the 840 frame for ``mask``'s object: good (jittered), off target, or malformed."""
    h, w = mask.shape
    ys, xs = np.nonzero(mask)
    sx, sy = 840 / w, 840 / h
    box = [xs.min() * sx, ys.min() * sy, (xs.max() + 1) * sx, (ys.max() + 1) * sy]
    box = [float(v + rng.normal(0, 6)) for v in box]
    i = int(rng.integers(len(xs)))
    pt = [float(xs[i] * sx), float(ys[i] * sy)]
    if kind == "good":
        return f"<think>the object</think><answer>{json.dumps({'bbox': box, 'points_1': pt, 'points_2': pt})}</answer>"
    if kind == "off":
        return '<think>elsewhere</think><answer>{"bbox": [0, 0, 60, 60], "points_1": [20, 20], "points_2": [30, 30]}</answer>'
    if kind == "no_think":
        return f"<answer>{json.dumps({'bbox': box, 'points_1': pt, 'points_2': pt})}</answer>"
    return "<think>hmm</think><answer>{bbox: oops}</answer>"


def _batch(rng: np.random.Generator, n_images: int, g: int, rle_masks: bool = False):
    images, masks, completions = [], [], []
    kinds = ["good", "good", "off", "no_think", "bad"]
    for _ in range(n_images):
        sc = make_scene(int(rng.integers(1 << 30)), size=(int(rng.integers(150, 230)), int(rng.integers(150, 230))),
                        n_objects=2)
        m = sc.objects[-1].mask
        mask = rle_encode(m) if rle_masks else m
        for k in range(g):  # TRL repeats the row's objects per completion: G copies of one image object
            images.append(sc.image)
            masks.append(mask)
            completions.append(_completion(m, rng, kinds[k % len(kinds)]))
    return completions, images, masks


@requires_serve
def test_client_rewards_equal_in_process_and_each_image_is_uploaded_once(engine):
    rng = np.random.default_rng()
    completions, images, masks = _batch(rng, n_images=3, g=5)
    local = SamR1Reward(engine, components=("think", "answer", "iou", "mask_iou"))
    expected = local(None, completions, image=images, mask=masks)
    with ServerThread(serve.create_app(engine, reward=SamR1Reward(engine, components=("think", "answer", "iou", "mask_iou")))) as srv:
        client = SamR1Client(srv.url, timeout_s=60)
        got = client(None, completions, image=images, mask=masks)
        assert got == pytest.approx(expected, abs=1e-5)
        assert set(client.last_components) == {"think_format", "answer_format", "tiered_iou", "mask_iou"}
        assert any(v >= 2 for v in client.last_components["tiered_iou"])  # the good answers really score
        svc = srv.app.state.service
        # 3 distinct images and masks for 15 rows: one upload each, in one follow-up request
        assert client.stats["images_uploaded"] == 3 == svc.counters["images_uploaded"]
        assert client.stats["masks_uploaded"] == 3 == svc.counters["masks_uploaded"]
        assert client.stats["score_calls"] == 1 and client.stats["requests"] == 2
        # the next step reuses the images (new completions, new list objects): nothing is uploaded again
        completions2 = [_completion(np.asarray(m), rng, "good") for m in masks]
        again = client(None, completions2, image=[im.copy() for im in images], mask=list(masks))
        assert client.stats["images_uploaded"] == 3 and client.stats["requests"] == 3
        assert again == pytest.approx(local(None, completions2, image=images, mask=masks), abs=1e-5)


@requires_serve
def test_client_handles_rle_masks_conversational_completions_and_bad_rows(engine):
    rng = np.random.default_rng()
    completions, images, masks = _batch(rng, n_images=2, g=3, rle_masks=True)
    completions[1] = [{"role": "assistant", "content": completions[1]}]
    images[2] = np.zeros((5, 5), dtype=np.float32)  # not a uint8 image: the row's mask rewards are 0
    local = SamR1Reward(engine)
    with pytest.warns(RuntimeWarning):
        expected = local(None, completions, image=images, mask=masks)
    with ServerThread(serve.create_app(engine)) as srv:
        client = SamR1Client(srv.url)
        with pytest.warns(RuntimeWarning, match="row 2"):
            got = client(None, completions, image=images, mask=masks)
    assert got == pytest.approx(expected, abs=1e-6)
    assert client.stats["masks_uploaded"] == 0  # RLE masks travel inline


@requires_serve
def test_a_malformed_inline_rle_scores_its_row_0_as_in_process(engine):
    """A malformed inline RLE is that row's problem, not the request's: the server hands it to the reward,
    which scores its mask rewards 0 with a counted reason, exactly as the in-process reward does."""
    rng = np.random.default_rng()
    completions, images, masks = _batch(rng, n_images=2, g=2, rle_masks=True)
    masks[1] = {"size": list(masks[1]["size"]), "counts": "zz"}  # not a decodable counts string
    with pytest.warns(RuntimeWarning):
        expected = SamR1Reward(engine)(None, completions, image=images, mask=masks)
    with ServerThread(serve.create_app(engine)) as srv:
        got = SamR1Client(srv.url)(None, completions, image=images, mask=masks)
    assert got == pytest.approx(expected, abs=1e-6)


@requires_serve
@pytest.mark.parametrize("form", ["array", "rle"])
def test_ignore_regions_score_over_http_as_in_process(engine, form):
    """ReasonSeg ignore regions travel with ``/score`` (uploaded once by key, or inline RLE) and the server's
    reward leaves their pixels out of I and U exactly as the in-process reward does; a region that does not
    load scores its row's mask parts 0 on both sides."""
    rng = np.random.default_rng()
    completions, images, masks = _batch(rng, n_images=3, g=4)
    ignores: list = []
    for k in range(3):
        m = np.asarray(masks[4 * k])
        x = np.zeros_like(m, dtype=bool)
        if k:  # the first image has none
            ys, xs = np.nonzero(m)
            x[max(0, ys.min() - 8):ys.max() + 9, max(0, xs.min() - 8):xs.max() + 9] = True
            x &= ~m  # a ring around the object: SAM's loose masks reach into it
        region = None if not k else (rle_encode(x) if form == "rle" else x)
        ignores += [region] * 4
    ignores[-1] = np.zeros((3, 3), bool)  # not of its image's size: the row's mask parts are 0
    comps = ("think", "answer", "iou", "mask_iou")
    with pytest.warns(RuntimeWarning):
        expected = SamR1Reward(engine, components=comps)(None, completions, image=images, mask=masks, ignore=ignores)
    plain = SamR1Reward(engine, components=comps)(None, completions, image=images, mask=masks)
    assert expected != pytest.approx(plain, abs=1e-6)  # the regions matter in this batch
    with ServerThread(serve.create_app(engine, reward=SamR1Reward(engine, components=comps))) as srv:
        client = SamR1Client(srv.url, timeout_s=60)
        with pytest.warns(RuntimeWarning, match="row 11"):
            got = client(None, completions, image=images, mask=masks, ignore=ignores)
    assert got == pytest.approx(expected, abs=1e-5)
    if form == "array":  # 3 masks, 2 ignore regions and the 3 x 3 one (refused by the reward), each uploaded once
        assert client.stats["masks_uploaded"] == 6


def test_client_rejects_bad_configuration():
    with pytest.raises(ValueError, match="http"):
        SamR1Client("localhost:8000")
    c = SamR1Client("http://127.0.0.1:9")
    with pytest.raises(ValueError, match="'image'"):
        c(None, ["x"], mask=[None])
    with pytest.raises(ValueError, match="rows"):
        c(None, ["x"], image=[1, 2], mask=[None])


@requires_serve
def test_client_inside_a_real_grpo_trainer_step(engine, tmp_path):
    """TRL's GRPOTrainer calls the (async) client and the in-process reward on the same batch (its real columns and
    conversational completions): the rewards agree and each distinct image is uploaded once."""
    from transformers import AutoProcessor
    from trl import GRPOConfig, GRPOTrainer

    from samr1.train.data import PolicyDataset, load_rows
    from samr1.train.scene_data import write_scene_manifest
    from samr1.train.tiny_policy import build_tiny_policy

    policy = build_tiny_policy(tmp_path / "policy", hidden=16, seed=1)
    ds = PolicyDataset(load_rows(write_scene_manifest(tmp_path / "data", 2, size=(72, 96), seed=3)))
    seen: dict[str, list] = {"client": [], "local": []}

    def recorded(fn, name):
        def f(prompts=None, completions=None, **kw):
            out = fn(prompts=prompts, completions=completions, **kw)
            seen[name].append((list(out), list(completions), len({id(x) for x in kw["sam_image"]})))
            return out
        f.__name__ = name
        return f

    def recorded_async(fn, name):  # TRL awaits async reward functions on its own event loop
        async def f(prompts=None, completions=None, **kw):
            out = await fn(prompts=prompts, completions=completions, **kw)
            seen[name].append((list(out), list(completions), len({id(x) for x in kw["sam_image"]})))
            return out
        f.__name__ = name
        return f

    local = SamR1Reward(engine, image_key="sam_image")
    args = GRPOConfig(output_dir=str(tmp_path / "out"), num_generations=2, per_device_train_batch_size=4,
                      max_completion_length=8, max_steps=1, use_cpu=True, bf16=False, gradient_checkpointing=False,
                      report_to=[], remove_unused_columns=False, disable_tqdm=True, save_strategy="no",
                      dataloader_num_workers=0, learning_rate=1e-6, logging_steps=1)
    with ServerThread(serve.create_app(engine, reward=SamR1Reward(engine, image_key="sam_image"))) as srv:
        client = AsyncSamR1Client(srv.url, image_key="sam_image")
        trainer = GRPOTrainer(model=policy, reward_funcs=[recorded_async(client, "client"), recorded(local, "local")],
                              args=args, train_dataset=ds.as_hf(), processing_class=AutoProcessor.from_pretrained(policy))
        trainer.train()
        uploads = srv.app.state.service.counters["images_uploaded"]
    assert len(seen["client"]) == len(seen["local"]) >= 1
    for (r_c, comp_c, _), (r_l, comp_l, _) in zip(seen["client"], seen["local"], strict=True):
        assert comp_c == comp_l and len(r_c) == 4
        assert r_c == pytest.approx(r_l, abs=1e-6)
    # 2 prompts x G=2 per step: 2 distinct images, each uploaded once
    assert uploads == client.stats["images_uploaded"] == sum(n for _, _, n in seen["client"]) == 2


def _instance_forms(instances: list[np.ndarray]) -> dict[str, object]:
    """One multi-object target in every form a dataset may hold it."""
    return {"list of arrays": list(instances), "N x H x W array": np.stack(instances),
            "list of RLEs": [rle_encode(m) for m in instances],
            "list of 0/255 PNG arrays": [m.astype(np.uint8) * 255 for m in instances]}


def _single_forms(mask: np.ndarray) -> dict[str, object]:
    """One target mask as the ways it is read from disk: bool, 0/255 grey, RGB, RGBA, H x W x 1."""
    u8 = mask.astype(np.uint8) * 255
    return {"bool": mask, "grey 0/255": u8, "RGB": np.repeat(u8[..., None], 3, 2),
            "RGBA": np.dstack([np.repeat(u8[..., None], 3, 2), np.full_like(u8, 255)]), "H x W x 1": u8[..., None]}


@requires_serve
def test_every_mask_form_scores_alike_in_process_and_over_http(engine):
    """A target mask read as H x W x 3 (``np.array(Image.open(rgb_png))``) was taken for an instance stack by
    the reward (every IoU 0, a misleading size error), and instance lists scored differently over HTTP (the
    client sent one mask). Every form of one target now gives the reward of its bool form, in process and
    through the client, on random scenes and sizes; both presets that read instances."""
    rng = np.random.default_rng()
    for preset, comps in (("samr1", ("think", "answer", "iou", "mask_iou")),
                          ("visionreasoner", ("think", "answer", "iou", "accuracy"))):
        sc = make_scene(int(rng.integers(1 << 30)), size=(int(rng.integers(120, 200)), int(rng.integers(120, 200))),
                        n_objects=3)
        objs = [o.mask for o in sc.objects if o.mask.any()][:2]
        union = np.logical_or.reduce(objs)
        if preset == "samr1":
            completions = [_completion(objs[0], rng, k) for k in ("good", "good", "off", "bad")]
            forms = _single_forms(objs[0])
        else:
            h, w = union.shape
            parts = []
            for m in objs:
                ys, xs = np.nonzero(m)
                parts.append({"bbox_2d": [int(xs.min() * 840 / w), int(ys.min() * 840 / h), int(xs.max() * 840 / w),
                                          int(ys.max() * 840 / h)], "point_2d": [int(xs[0] * 840 / w), int(ys[0] * 840 / h)]})
            completions = [f"<think>t</think><answer>{json.dumps(parts)}</answer>",
                           f"<think>t</think><answer>{json.dumps(parts[:1])}</answer>"]
            forms = {**_instance_forms(objs), "union RGB": np.repeat(union.astype(np.uint8)[..., None] * 255, 3, 2)}
        n = len(completions)
        reward = SamR1Reward(engine, preset=preset, components=comps)
        base = objs[0] if preset == "samr1" else list(objs)
        want = reward(None, completions, image=[sc.image] * n, mask=[base] * n)
        assert max(want) > min(want)  # the answers differ: a form read wrongly would show
        with ServerThread(serve.create_app(engine, reward=SamR1Reward(engine, preset=preset, components=comps))) as srv:
            client = SamR1Client(srv.url, timeout_s=60)
            for name, form in forms.items():
                if name == "union RGB":  # ONE mask, the union: the mask reward is the instance list's (union rule)
                    iou = SamR1Reward(engine, preset=preset, components=("iou",))
                    assert iou(None, completions, image=[sc.image] * n, mask=[form] * n) == pytest.approx(
                        iou(None, completions, image=[sc.image] * n, mask=[base] * n), abs=1e-6)
                    continue
                got = reward(None, completions, image=[sc.image] * n, mask=[form] * n)
                assert got == pytest.approx(want, abs=1e-5), (preset, name)
                loads: list[int] = []
                with pytest.MonkeyPatch.context() as mp:  # the server reads the group's one target once
                    import samr1.rewards.reward as reward_mod

                    def counted(*a, _real=reward_mod.load_instances, _loads=loads, **k):
                        _loads.append(1)
                        return _real(*a, **k)

                    mp.setattr(reward_mod, "load_instances", counted)
                    over = client(None, completions, image=[sc.image] * n, mask=[form] * n)
                assert over == pytest.approx(want, abs=1e-5), (preset, name, "over HTTP")
                assert len(loads) == 1, (preset, name, len(loads))
