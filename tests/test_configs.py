"""SamEngineConfig and SamR1RewardConfig: help text, validation, and config == keywords."""

import dataclasses
import json
import warnings

import numpy as np
import pytest
import torch

from samr1.answer import parse_answer
from samr1.config import ConfigError
from samr1.engine import SamEngine, SamEngineConfig
from samr1.engine.reference import score_reference
from samr1.rewards import SamR1Reward, SamR1RewardConfig
from samr1.sam import load_sam
from samr1.train.config import TrainConfig

# one bad value per field; every field of both configs is validated, so every field is listed
BAD = {
    SamEngineConfig: {
        "encoder": "jax", "cache_bytes": -1, "multimask": "false", "device": "gpu0", "iou_backend": "numpy",
        "store": "", "threshold": float("nan"), "threads": 0, "dtype": 16, "compile": "yes", "cache_dir": "",
        "max_batch": 0, "cpu_fallback": 2, "decode_chunk": -3,
    },
    SamR1RewardConfig: {
        "tiers": ((0.5, 1.0), (0.8, 2.0)), "components": ("think", "format"), "model_size": (0, 840),
        "image_key": "", "mask_key": None, "ignore_key": 3, "require_points": "no", "box_iou_threshold": float("inf"),
        "box_l1_threshold": "10", "point_threshold": float("nan"), "gt_points": 0, "frame": "image",
        "point_rule": "centres", "multi_object": "all", "preset": "lisa", "gt_rule": "nearest",
        "mask_match": "greedy",
    },
}


@pytest.fixture(scope="module")
def sam():
    return load_sam("tiny", seed=0)


@pytest.mark.parametrize("cls", [SamEngineConfig, SamR1RewardConfig, TrainConfig])
def test_every_field_has_help_text(cls):
    for f in dataclasses.fields(cls):
        assert isinstance(f.metadata.get("help"), str) and len(f.metadata["help"]) > 10, f.name


@pytest.mark.parametrize("cls", list(BAD))
def test_every_field_is_validated(cls):
    assert set(BAD[cls]) == {f.name for f in dataclasses.fields(cls)}


@pytest.mark.parametrize(("cls", "name"), [(c, n) for c in BAD for n in BAD[c]])
def test_a_bad_value_raises_naming_the_field(cls, name):
    with pytest.raises(ConfigError, match=name) as exc:
        cls(**{name: BAD[cls][name]})
    assert exc.value.field == name
    assert isinstance(exc.value, ValueError)  # callers that caught the constructors' ValueError still do
    with pytest.raises(ConfigError, match=name):  # replace() validates too
        dataclasses.replace(cls(), **{name: BAD[cls][name]})


def test_cross_field_rule_and_normalised_values():
    with pytest.raises(ConfigError, match="circles") as exc:
        SamR1RewardConfig(gt_points=3)
    assert exc.value.field == "gt_points"
    assert SamR1RewardConfig(gt_points=3, point_rule="circles").gt_points == 3
    cfg = SamR1RewardConfig(components=["think", "iou"], tiers=[[0.9, 5], [0.5, 1]], box_l1_threshold=12)
    assert cfg.components == ("think", "iou") and cfg.tiers == ((0.9, 5.0), (0.5, 1.0))
    assert cfg.box_l1_threshold == 12.0 and isinstance(cfg.box_l1_threshold, float)
    eng = SamEngineConfig(cache_bytes=1e6, multimask=np.bool_(False), threshold=1, compile=0)
    assert (eng.cache_bytes, eng.multimask, eng.threshold, eng.compile) == (1_000_000, False, 1.0, False)
    assert type(eng.cache_bytes) is int and type(eng.multimask) is bool
    with pytest.raises(dataclasses.FrozenInstanceError):
        eng.threads = 2  # the engine read it once: changing it afterwards would do nothing


@pytest.mark.parametrize("cls", list(BAD))
def test_replace_and_asdict_round_trip(cls):
    changed = {SamEngineConfig: dict(encoder="onnx", cache_bytes=0, multimask=False, device="cpu", threads=3,
                                     dtype="bfloat16", max_batch=4, cache_dir="/tmp/x", decode_chunk=2),
               SamR1RewardConfig: dict(components=("answer", "mask_iou"), tiers=((0.6, 1.0),), model_size=(448, 640),
                                       image_key="images", frame="original", point_rule="circles", gt_points=4)}[cls]
    cfg = dataclasses.replace(cls(), **changed)
    assert cfg != cls() and all(getattr(cfg, k) == v for k, v in changed.items())
    d = dataclasses.asdict(cfg)
    assert cls(**d) == cfg
    assert cls(**json.loads(json.dumps(d))) == cfg  # plain data: survives a JSON file (lists become tuples)


def _step(rng, sizes, g):
    images, masks, answers, texts = [], [], [], []
    for h, w in sizes:
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        gt = np.zeros((h, w), dtype=bool)
        gt[h // 4: 3 * h // 4 + 1, w // 5: 4 * w // 5 + 1] = True
        for _ in range(g):
            x1, x2 = sorted(rng.uniform(0, 840, 2))
            y1, y2 = sorted(rng.uniform(0, 840, 2))
            px, py = float(rng.uniform(x1, x2)), float(rng.uniform(y1, y2))
            text = (f'<think>t</think><answer>{{"bbox": [{x1:.1f}, {y1:.1f}, {x2 + 3:.1f}, {y2 + 3:.1f}], '
                    f'"points_1": [{px:.1f}, {py:.1f}], "points_2": [{px:.1f}, {py:.1f}]}}</answer>')
            images.append(img)
            masks.append(gt)
            texts.append(text)
            answers.append(parse_answer(text, image_size=(h, w)))
    return images, masks, answers, texts


def test_engine_from_config_equals_engine_from_keywords(sam):
    rng = np.random.default_rng()
    images, masks, answers, _ = _step(rng, [(61, 97), (80, 80)], 3)
    kw = dict(multimask=False, threads=1, cache_bytes=1 << 26)
    by_kw = SamEngine(sam, **kw)
    by_cfg = SamEngine(sam, config=SamEngineConfig(**kw))
    assert by_kw.config == by_cfg.config == SamEngineConfig(**kw)
    got = by_cfg.score(images, answers, masks)
    assert got == by_kw.score(images, answers, masks)
    # the settings reach the engine: single-mask output is what the reference computes with multimask=False
    np.testing.assert_allclose(got, score_reference(sam, images, answers, masks, multimask=False), atol=1e-3)
    assert by_cfg.multimask is False and by_cfg.threads == 1 and by_cfg.stats["threads"] == 1
    # engine.config rebuilds the same engine
    assert SamEngine(sam, config=by_cfg.config).score(images, answers, masks) == got
    # threshold: nothing passes a huge one, so every non-empty ground truth scores 0
    assert SamEngine(sam, config=SamEngineConfig(threshold=1e9)).score(images, answers, masks) == [0.0] * len(got)


def test_keywords_override_the_config(sam):
    base = SamEngineConfig(threads=1, multimask=False)
    engine = SamEngine(sam, config=base, threads=2)
    assert engine.config == SamEngineConfig(threads=2, multimask=False) and engine.threads == 2
    assert base.threads == 1  # the caller's config is not touched
    reward = SamR1Reward(None, SamR1RewardConfig(components=("think",)), components=("answer",))
    assert reward.components == ("answer",) and reward.config.components == ("answer",)


def test_wrong_arguments_say_what_to_do(sam):
    with pytest.raises(TypeError, match="unexpected keyword arguments \\['encodr'\\].*encoder"):
        SamEngine(sam, encodr="onnx")
    with pytest.raises(TypeError, match="config must be a SamEngineConfig"):
        SamEngine(sam, config=SamR1RewardConfig())
    with pytest.raises(TypeError, match="config must be a SamEngineConfig"):
        SamEngine(sam, "onnx")  # the old positional encoder: the message points at the keyword
    with pytest.raises(TypeError, match="unexpected keyword arguments \\['tier'\\]"):
        SamR1Reward(None, tier=((0.5, 1.0),))
    with pytest.raises(TypeError, match="SAM 2 models only"):
        SamEngine(sam, decode_chunk=4)
    with pytest.raises(ConfigError, match="iou_backend 'fused'"):
        SamEngine(sam, iou_backend="fused")
    with pytest.raises(ValueError, match="threads must be a positive int"):  # the message the engine gave before
        SamEngine(sam, config=SamEngineConfig(), threads=True)


def test_encoder_options_reach_make_encoder(sam):
    assert SamEngineConfig().encoder_options() == {}
    assert SamEngineConfig(max_batch=3, dtype="bfloat16").encoder_options() == {"max_batch": 3, "dtype": "bfloat16"}
    assert SamEngine(sam).encoder.max_batch == 1  # the CPU torch default, as before
    engine = SamEngine(sam, config=SamEngineConfig(max_batch=3, dtype=torch.bfloat16))
    assert engine.encoder.max_batch == 3 and engine.encoder.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="compile=True applies to the torch backend only"):
        SamEngine(sam, encoder="onnx", compile=True)  # make_encoder's cross-option check, unchanged


def test_reward_from_config_equals_reward_from_keywords(sam):
    rng = np.random.default_rng()
    images, masks, _, texts = _step(rng, [(61, 97), (80, 80)], 3)
    texts[1] = "no answer here"
    engine = SamEngine(sam, threads=1)
    kw = dict(components=("think", "answer", "iou", "mask_iou", "box_iou", "point_dist"),
              tiers=((0.3, 2.0), (0.1, 1.0)), frame="original", point_threshold=40.0)
    by_kw = SamR1Reward(engine, **kw)
    by_cfg = SamR1Reward(engine, config=SamR1RewardConfig(**kw))
    assert by_kw.config == by_cfg.config
    got = by_cfg(None, texts, image=images, mask=masks)
    assert got == by_kw(None, texts, image=images, mask=masks)
    assert got != SamR1Reward(engine)(None, texts, image=images, mask=masks)  # the settings change the rewards
    assert got[1] == 0.0
    parts = [f(None, texts, image=images, mask=masks) for f in by_cfg.functions()]
    assert [f.__name__ for f in by_cfg.functions()][2:4] == ["tiered_iou", "mask_iou"]
    assert got == [sum(p[i] for p in parts) for i in range(len(texts))]


def test_train_config_builds_the_reward_side_configs():
    cfg = TrainConfig(model="m", data="d", encoder="onnx", cache_gb=0.5, multimask=False, embeddings="store/",
                      components=["think", "mask_iou"], policy_image_size=448)
    assert cfg.engine_config() == SamEngineConfig(encoder="onnx", cache_bytes=1 << 29, multimask=False, store="store/")
    assert cfg.reward_config() == SamR1RewardConfig(components=("think", "mask_iou"), model_size=(448, 448),
                                                    image_key="sam_image", mask_key="masks")
    for field, value in (("encoder", "jax"), ("embeddings", ""), ("components", "iou")):
        with pytest.raises(ConfigError, match=f"^{field}=") as exc:  # named as the flag the user gave
            dataclasses.replace(cfg, **{field: value}).validate()
        assert exc.value.field == field


def test_sam2_engine_takes_the_same_config():
    pytest.importorskip("sam2", reason="the sam2 extra is not installed")
    from samr1.engine.sam2_engine import Sam2Engine

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model = load_sam("sam2.1_hiera_t", seed=0)
    cfg = SamEngineConfig(decode_chunk=4, cache_bytes=1 << 20, multimask=False, iou_backend="torch")
    engine = SamEngine(model, config=cfg)
    assert isinstance(engine, Sam2Engine) and engine.config == cfg
    assert (engine.decode_chunk, engine.cache_bytes, engine.multimask, engine.iou_backend) == (4, 1 << 20, False, "torch")
    assert Sam2Engine(model, config=cfg, decode_chunk=2).decode_chunk == 2
    assert SamEngine(model, config=cfg, iou_backend="cpp").iou_backend == "cpp"  # SAM 2's mode has a C++ body too
    with pytest.raises(ValueError, match="iou_backend"):
        SamEngine(model, config=cfg, iou_backend="openvino")
