"""Training data, prompts and configuration: every loader reads fixtures written here in its real format."""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest
from PIL import Image

from samr1.io import InputError, rle_encode
from samr1.train.config import ConfigError, TrainConfig, load_yaml_config
from samr1.train.data import (
    PolicyDataset,
    check_rows,
    detect_format,
    load_rows,
    reasonseg_mask,
)
from samr1.train.prompts import TEMPLATES, conversation, resolve_prompt


def _rand_image(rng, h, w):
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _rand_mask(rng, h, w):
    m = np.zeros((h, w), bool)
    y0, x0 = int(rng.integers(0, h // 2)), int(rng.integers(0, w // 2))
    m[y0:y0 + int(rng.integers(2, h // 2)), x0:x0 + int(rng.integers(2, w // 2))] = True
    m ^= rng.random((h, w)) < 0.05  # ragged edges, holes: no shape assumption
    return m


# ----------------------------------------------------------------------------------------- loaders
def test_manifest_rows_and_dataset_two_images(tmp_path):
    rng = np.random.default_rng()
    h, w = int(rng.integers(30, 70)), int(rng.integers(30, 70))
    img, mask = _rand_image(rng, h, w), _rand_mask(rng, h, w)
    Image.fromarray(img).save(tmp_path / "a.png")
    Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "a_mask.png")
    rle = rle_encode(mask)
    with open(tmp_path / "m.jsonl", "w") as f:
        f.write(json.dumps({"image": "a.png", "query": "the red box", "mask": "a_mask.png"}) + "\n")
        f.write(json.dumps({"image": "a.png", "query": "same, RLE", "mask": rle}) + "\n")
    assert detect_format(str(tmp_path / "m.jsonl")) == "manifest"
    rows = load_rows(str(tmp_path / "m.jsonl"))
    good, bad = check_rows(rows)
    assert len(good) == 2 and not bad
    ds = PolicyDataset(good, "seg-zero", policy_size=84)
    item = ds[0]
    assert item["image"].size == (84, 84)  # the policy's copy
    assert np.array_equal(item["sam_image"], img)  # the original, for SAM and the ground truth
    assert np.array_equal(item["mask"], mask)
    assert np.array_equal(ds[1]["mask"], mask)
    assert "the red box" in item["prompt"][0]["content"]
    again = ds[0]  # TRL asks for the same index G times: the very same objects come back
    assert again["image"] is item["image"] and again["sam_image"] is item["sam_image"]
    hf = ds.as_hf()
    assert hf[1]["row_id"] == 1 and np.array_equal(hf[1]["mask"], mask)


def test_hf_dataset_save_to_disk_and_parquet(tmp_path):
    import datasets

    rng = np.random.default_rng()
    imgs, masks, texts, hs, ws = [], [], [], [], []
    for i in range(3):
        h, w = int(rng.integers(20, 40)), int(rng.integers(20, 40))
        imgs.append(Image.fromarray(_rand_image(rng, h, w)))
        masks.append(_rand_mask(rng, h, w).tolist())  # nested lists of bool, as Seg-Zero's evaluation sets
        texts.append(f"object {i}")
        hs.append(h)
        ws.append(w)
    ds = datasets.Dataset.from_dict({"image": imgs, "text": texts, "mask": masks, "img_height": hs, "img_width": ws,
                                     "image_id": list(range(3))}).cast_column("image", datasets.Image())
    ds.save_to_disk(str(tmp_path / "disk"))
    ds.to_parquet(str(tmp_path / "set.parquet"))
    for path in (tmp_path / "disk", tmp_path / "set.parquet"):
        assert detect_format(str(path)) == "hf"
        good, bad = check_rows(load_rows(str(path)))
        assert not bad and [r.query for r in good] == texts
        d = PolicyDataset(good, policy_size=56)
        for i in range(3):
            assert np.array_equal(d[i]["mask"], np.array(masks[i], bool))
            assert d[i]["sam_image"].shape == (hs[i], ws[i], 3)


def test_hf_ragged_mask_and_size_mismatch_are_bad_rows(tmp_path):
    import datasets

    rng = np.random.default_rng()
    img = Image.fromarray(_rand_image(rng, 10, 12))
    good_mask = _rand_mask(rng, 10, 12).tolist()
    ragged = [row[:12 - (i % 2)] for i, row in enumerate(good_mask)]
    ds = datasets.Dataset.from_dict({"image": [img, img, img], "text": ["a", "b", "c"],
                                     "mask": [good_mask, good_mask, good_mask], "img_height": [10, 10, 11],
                                     "img_width": [12, 12, 12]}).cast_column("image", datasets.Image())
    ds.to_parquet(str(tmp_path / "p.parquet"))
    rows = load_rows(str(tmp_path / "p.parquet"))
    rows[1].mask = ragged  # Arrow cannot store a ragged bool matrix typed like the others; inject it
    with pytest.raises(InputError) as exc:
        check_rows(rows)
    msg = str(exc.value)
    assert "p.parquet row 1" in msg and "unequal lengths" in msg
    assert "p.parquet row 2" in msg and "11x12" in msg
    good, bad = check_rows(rows, skip_bad=True)
    assert len(good) == 1 and [b.index for b in bad] == [1, 2]


def test_refcocog_polygons_and_rle(tmp_path):
    rng = np.random.default_rng()
    h, w = int(rng.integers(40, 80)), int(rng.integers(40, 80))
    (tmp_path / "images").mkdir()
    Image.fromarray(_rand_image(rng, h, w)).save(tmp_path / "images" / "COCO_1.jpg")
    x1, y1 = int(rng.integers(2, w // 3)), int(rng.integers(2, h // 3))
    x2, y2 = int(rng.integers(w // 2, w - 2)), int(rng.integers(h // 2, h - 2))
    rle_mask = _rand_mask(rng, h, w)
    inst = {
        "images": [{"id": 7, "file_name": "COCO_1.jpg", "height": h, "width": w}],
        "annotations": [
            {"id": 70, "image_id": 7, "iscrowd": 0, "segmentation": [[x1, y1, x2, y1, x2, y2, x1, y2]]},
            {"id": 71, "image_id": 7, "iscrowd": 1, "segmentation": rle_encode(rle_mask, compressed=False)},
        ],
    }
    (tmp_path / "instances.json").write_text(json.dumps(inst))
    refs = [
        {"ref_id": 0, "image_id": 7, "ann_id": 70, "split": "train", "sentences": [{"sent": "the box"}, {"sent": "it"}]},
        {"ref_id": 1, "image_id": 7, "ann_id": 71, "split": "train", "sentences": [{"sent": "the blob"}]},
        {"ref_id": 2, "image_id": 7, "ann_id": 70, "split": "val", "sentences": [{"sent": "not train"}]},
        {"ref_id": 3, "image_id": 99, "ann_id": 70, "split": "train", "sentences": [{"sent": "orphan"}]},
    ]
    with open(tmp_path / "refs(umd).p", "wb") as f:
        pickle.dump(refs, f)
    assert detect_format(str(tmp_path)) == "refcocog"
    rows = load_rows(str(tmp_path), split="train")
    assert [r.query for r in rows] == ["the box", "it", "the blob", "orphan"]
    good, bad = check_rows(rows, skip_bad=True)
    assert len(good) == 3 and len(bad) == 1 and "ref 3" in bad[0].position
    ds = PolicyDataset(good, policy_size=56)
    poly = ds[0]["mask"]
    ys, xs = np.nonzero(poly)
    # the filled rectangle polygon: its box within a pixel of the vertices, its area near the rectangle's
    assert abs(xs.min() - x1) <= 1 and abs(xs.max() - x2) <= 1 and abs(ys.min() - y1) <= 1 and abs(ys.max() - y2) <= 1
    assert abs(int(poly.sum()) - (x2 - x1) * (y2 - y1)) <= (x2 - x1) + (y2 - y1) + 1
    assert np.array_equal(ds[2]["mask"], rle_mask)  # uncompressed RLE round trip, exact
    # a split the refs do not hold is named with the ones they do (it read as "no usable rows"); the HF word
    # for RefCOCOg's "val" finds it
    with pytest.raises(InputError, match=r"no split 'testB'.*\['train', 'val'\]"):
        load_rows(str(tmp_path), split="testB")
    assert [r.query for r in load_rows(str(tmp_path), split="validation")] == ["not train"]


class _RunsCode:
    """A pickled object whose loading would call a function (here: create a file)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_refcocog_refs_pickle_that_names_a_callable_is_refused(tmp_path):
    (tmp_path / "instances.json").write_text(json.dumps({"images": [], "annotations": []}))
    planted = tmp_path / "planted.txt"
    with open(tmp_path / "refs(umd).p", "wb") as f:
        pickle.dump([{"ref_id": 0, "payload": _RunsCode(planted)}], f)
    with pytest.raises(InputError, match="refusing to load .*open"):
        load_rows(str(tmp_path), split="train")
    assert not planted.exists()  # the payload never ran


def test_reasonseg_target_and_ignore(tmp_path):
    rng = np.random.default_rng()
    h, w = int(rng.integers(40, 70)), int(rng.integers(40, 70))
    Image.fromarray(_rand_image(rng, h, w)).save(tmp_path / "scene_1.jpg")
    tx1, ty1, tx2, ty2 = 3, 4, w // 2, h // 2
    ix1, iy1, ix2, iy2 = w // 2 + 3, h // 2 + 3, w - 4, h - 4
    anno = {"text": ["what holds the coffee?", "the cup"], "is_sentence": True, "shapes": [
        {"label": "target", "points": [[tx1, ty1], [tx2, ty1], [tx2, ty2], [tx1, ty2]]},
        {"label": "ignore", "points": [[ix1, iy1], [ix2, iy1], [ix2, iy2], [ix1, iy2]]},
        {"label": "flag", "points": [[0, 0], [w - 1, 0], [w - 1, h - 1]]},
    ]}
    (tmp_path / "scene_1.json").write_text(json.dumps(anno))
    m = reasonseg_mask(anno, h, w)
    # An independent restatement for axis-aligned rectangles: filled inclusive of both ends (LISA draws the
    # outline too); the "flag" shape is not drawn.
    want = np.zeros((h, w), np.uint8)
    want[ty1:ty2 + 1, tx1:tx2 + 1] = 1
    want[iy1:iy2 + 1, ix1:ix2 + 1] = 255
    assert np.array_equal(m, want)
    assert detect_format(str(tmp_path)) == "reasonseg"
    good, bad = check_rows(load_rows(str(tmp_path)))
    assert [r.query for r in good] == anno["text"] and not bad
    ds = PolicyDataset(good, policy_size=56)
    item = ds[0]
    assert np.array_equal(item["mask"], want == 1) and np.array_equal(item["ignore"], want == 255)
    # the node reward gather re-reads the rows on the scoring process: the ignore region travels with them,
    # under the reward's ignore key, and not at all for a reward told never to read one
    from samr1.rewards import SamR1Reward
    from samr1.train.rewards_hub import RewardHub

    for key in ("ignore", "void", None):
        hub = RewardHub(SamR1Reward(None, components=("think", "answer"), image_key="sam_image", ignore_key=key),
                        gather="node", dataset=ds)
        cols = hub.node_columns([1, 0])
        assert set(cols) == {"sam_image", "mask", "row_id"} | ({key} if key else set())
        assert cols["row_id"] == [1, 0] and np.array_equal(cols["mask"][1][0], want == 1)
        if key:
            assert [np.array_equal(x, want == 255) for x in cols[key]] == [True, True]


def test_max_samples_seeded_subset(tmp_path):
    from samr1.train.scene_data import write_scene_manifest

    manifest = write_scene_manifest(tmp_path, 7, size=(24, 32), seed=1)
    rows = load_rows(manifest)
    a, _ = check_rows(rows, max_samples=3, seed=5)
    b, _ = check_rows(load_rows(manifest), max_samples=3, seed=5)
    c, _ = check_rows(load_rows(manifest), max_samples=3, seed=6)
    assert [r.position for r in a] == [r.position for r in b] and len(a) == 3
    assert len({r.position for r in a}) == 3
    # the subset is the first 3 of numpy's seeded permutation of the rows (lines are 1-based)
    for sub, seed in ((a, 5), (c, 6)):
        lines = [int(r.position.rsplit(":", 1)[1]) for r in sub]
        assert lines == [int(i) + 1 for i in np.random.default_rng(seed).permutation(7)[:3]]
    everything, _ = check_rows(load_rows(manifest))
    assert len(everything) == 7


# ----------------------------------------------------------------------------------------- prompts, config
def test_seg_zero_prompt_verbatim():
    # Seg-Zero's template as its code writes it (restated here from the reference, not from samr1's table).
    expected = ("Please find 'the red circle' with bbox and points.Compare the difference between objects and find "
                "the most closely matched one.Output the thinking process in <think> </think> and final answer in "
                "<answer> </answer> tags.Output the one bbox and points of two largest inscribed circles inside the "
                "interested object in JSON format.i.e., <think> thinking process here </think><answer>{'bbox': "
                "[10,100,200,210], 'points_1': [30,110], 'points_2': [35,180]}</answer>")
    assert conversation("seg-zero", "the red circle") == [{"role": "user", "content": expected}]
    assert "bbox_2d" in resolve_prompt("vision-reasoner") and set(TEMPLATES) >= {"seg-zero", "vision-reasoner"}
    assert conversation("Find {query}.", "x")[0]["content"] == "Find x."
    with pytest.raises(ValueError, match="query"):
        resolve_prompt("no placeholder")


@pytest.mark.parametrize("query,seen", [("The Red Circle.", "the red circle"), ("...a mug..", "a mug"),
                                        ("Where is it?", "where is it?"), ("  Spaces stay. ", "  spaces stay. "),
                                        ("Dr. Who's hat.", "dr. who's hat")])
def test_templates_are_the_peers_byte_for_byte_with_the_query_normalised(query, seen):
    """Both named templates filled as the peers' evaluation code fills theirs: query.lower().strip(".") in
    their text (restated here from the peers' files; bench/bench_fidelity.py compares with the files)."""
    seg = ("Please find '{Question}' with bbox and points.Compare the difference between objects and find the "
           "most closely matched one.Output the thinking process in <think> </think> and final answer in <answer> "
           "</answer> tags.Output the one bbox and points of two largest inscribed circles inside the interested "
           "object in JSON format.i.e., <think> thinking process here </think><answer>{Answer}</answer>")
    vr = ("Please find \"{Question}\" with bboxs and points.Compare the difference between object(s) and find the "
          "most closely matched object(s).Output the thinking process in <think> </think> and final answer in "
          "<answer> </answer> tags.Output the bbox(es) and point(s) inside the interested object(s) in JSON format."
          "i.e., <think> thinking process here </think><answer>{Answer}</answer>")
    seg_answer = "{'bbox': [10,100,200,210], 'points_1': [30,110], 'points_2': [35,180]}"
    vr_answer = ('[{"bbox_2d": [10,100,200,210], "point_2d": [30,110]}, {"bbox_2d": [225,296,706,786], '
                 '"point_2d": [302,410]}]')
    from samr1.train.prompts import format_prompt, normalize_query

    assert normalize_query(query) == seen
    for name, text, answer in (("seg-zero", seg, seg_answer), ("vision-reasoner", vr, vr_answer)):
        want = text.format(Question=seen, Answer=answer)
        got = format_prompt(name, query)
        assert got.encode("utf-8") == want.encode("utf-8"), name
        assert conversation(name, query) == [{"role": "user", "content": want}]


def test_config_defaults_yaml_and_flags(tmp_path):
    from samr1.cli import build_parser
    from samr1.cli.train import config_from_args

    c = TrainConfig()
    assert (c.num_generations, c.loss_type, c.epsilon, c.epsilon_high, c.beta, c.learning_rate, c.temperature,
            c.policy_image_size, c.max_completion_length) == (8, "dapo", 0.2, 0.3, 5e-3, 1e-6, 1.0, 840, 1024)
    (tmp_path / "train.yaml").write_text("model: m\ndata: d.jsonl\nbeta: 0.01\nnum_generations: 4\n"
                                         "components: [think, answer, mask_iou]\n")
    args = build_parser().parse_args(["train", "--config", str(tmp_path / "train.yaml"), "--num-generations", "2"])
    cfg = config_from_args(args).validate()
    assert cfg.beta == 0.01 and cfg.num_generations == 2 and cfg.model == "m"  # flag beats file
    assert cfg.components == ["think", "answer", "mask_iou"] and cfg.epsilon_high == 0.3
    (tmp_path / "bad.yaml").write_text("num-generations: 4\n")
    with pytest.raises(ConfigError, match="unknown keys"):
        load_yaml_config(tmp_path / "bad.yaml")
    for field, value, hint in (("num_generations", 1, "at least 2"), ("epsilon_high", 0.1, ">= epsilon"),
                               ("beta", -1.0, ">= 0"), ("components", ["iou", "nope"], "unknown"),
                               ("prompt", "nothing here", "{query}"), ("max_steps", 0, "-1")):
        bad = TrainConfig(model="m", data="d", **{field: value})
        with pytest.raises(ConfigError, match=field) as exc:
            bad.validate()
        assert hint in str(exc.value)


def test_shipped_config_files_load():
    import glob
    import os

    import yaml

    root = os.path.join(os.path.dirname(__file__), "..", "configs")
    train_files = sorted(glob.glob(os.path.join(root, "train", "*.yaml")))
    assert train_files
    for path in train_files:
        values = load_yaml_config(path)
        cfg = TrainConfig.from_dict({"model": "m", "data": "d", **values}, where=path).validate()
        assert cfg.num_generations >= 2
    kinds = {}
    for path in sorted(glob.glob(os.path.join(root, "accelerate", "*.yaml"))):
        with open(path) as f:
            doc = yaml.safe_load(f)
        kinds[os.path.basename(path)] = (doc["distributed_type"], doc.get("deepspeed_config", {}).get("zero_stage"))
    assert kinds == {"ddp.yaml": ("MULTI_GPU", None), "fsdp.yaml": ("FSDP", None),
                     "deepspeed_zero2.yaml": ("DEEPSPEED", 2), "deepspeed_zero3.yaml": ("DEEPSPEED", 3)}


def test_resume_resolution_and_group_check(tmp_path):
    from samr1.train.driver import group_locality_warning, resolve_resume

    assert resolve_resume(None, str(tmp_path)) is None
    with pytest.raises(ConfigError, match="no checkpoint-N"):
        resolve_resume("latest", str(tmp_path))
    for n in (2, 10, 9):
        (tmp_path / f"checkpoint-{n}").mkdir()
        (tmp_path / f"checkpoint-{n}" / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoint-x").mkdir()
    assert resolve_resume("latest", str(tmp_path)).endswith("checkpoint-10")  # numeric, not lexical, order
    with pytest.raises(ConfigError, match="trainer_state.json"):
        resolve_resume(str(tmp_path / "checkpoint-x"), str(tmp_path))
    # one process: groups cannot straddle processes, whatever the batch
    assert group_locality_warning(3, 1, 4, 1) is None
    rng = np.random.default_rng()
    for _ in range(20):
        bs, spg, g = (int(v) for v in rng.integers(1, 13, size=3))
        msg = group_locality_warning(bs, spg, g, 2)
        assert (msg is None) == ((bs * spg) % g == 0)
        if msg:  # both suggested fixes keep groups whole (checked by the rule itself, not the message)
            fix_bs = int(msg.split("--per-device-train-batch-size ")[1].split(",")[0])
            fix_spg = int(msg.split("--steps-per-generation ")[1].split(" ")[0])
            assert (fix_bs * spg) % g == 0 and fix_bs >= bs and (bs * fix_spg) % g == 0


def test_exponent_numbers_without_a_dot_are_numbers_in_yaml_and_grpo_overrides(tmp_path):
    """PyYAML reads ``5e-3`` (no dot) as the string '5e-3', so ``beta: 5e-3`` failed with a message about the
    KL coefficient and ``--grpo weight_decay=1e-2`` with one about GRPOConfig's type. Every exponent spelling
    is a number now, in the YAML file and in --grpo, equal to the dotted spelling; strings stay strings."""
    from samr1.train.grpo_args import parse_key_value

    rng = np.random.default_rng()
    for _ in range(20):
        mant, exp = int(rng.integers(1, 10)), int(rng.integers(-9, 4))
        sign = str(rng.choice(["", "+", "-"]))
        for spelling in (f"{sign}{mant}e{exp}", f"{sign}{mant}E{exp:+d}", f"{sign}{mant}.0e{exp}", f"{sign}.{mant}e{exp}"):
            want = float(spelling)
            assert parse_key_value(f"weight_decay={spelling}") == ("weight_decay", want), spelling
            path = tmp_path / "cfg.yaml"
            path.write_text(f"learning_rate: {spelling}\n")
            assert load_yaml_config(path) == {"learning_rate": want}, spelling
    path = tmp_path / "cfg.yaml"
    path.write_text("beta: 5e-3\nlearning_rate: 1e-6\n")
    cfg = TrainConfig(data="d.jsonl", model="m", **load_yaml_config(path))
    assert cfg.beta == 0.005 and cfg.learning_rate == 1e-6
    assert parse_key_value("report_to=e5") == ("report_to", "e5") and parse_key_value("x=1e") == ("x", "1e")


def test_reasonseg_files_that_are_not_annotations_are_counted_bad_rows(tmp_path):
    """LISA's explanatory ``train.json`` (a JSON list) beside the labelme files crashed the loader with an
    AttributeError, and a labelme file without ``text`` gave no row and no count. Both are bad rows now,
    reported by name (or skipped and counted with --skip-bad-rows); the good files load as before."""
    rng = np.random.default_rng()
    h, w = int(rng.integers(30, 60)), int(rng.integers(30, 60))
    shapes = [{"label": "target", "points": [[2, 2], [w // 2, 2], [w // 2, h // 2]]}]
    for name, anno in (("good", {"text": ["what is it?"], "shapes": shapes}), ("no_text", {"shapes": shapes}),
                       ("empty_text", {"text": [], "shapes": shapes}), ("number_text", {"text": 7, "shapes": shapes})):
        Image.fromarray(_rand_image(rng, h, w)).save(tmp_path / f"{name}.jpg")
        (tmp_path / f"{name}.json").write_text(json.dumps(anno))
    (tmp_path / "train.json").write_text(json.dumps([{"image": "good.jpg", "query": "x"}]))
    rows = load_rows(str(tmp_path))
    with pytest.raises(InputError, match="4 bad"):
        check_rows(rows)
    good, bad = check_rows(rows, skip_bad=True)
    assert [r.query for r in good] == ["what is it?"]
    why = {os.path.basename(b.position): b.reason for b in bad}
    assert set(why) == {"no_text.json", "empty_text.json", "number_text.json", "train.json"}, why
    assert "labelme annotation object" in why["train.json"] and "got a JSON list" in why["train.json"]
    assert all("field 'text'" in why[k] for k in ("no_text.json", "empty_text.json", "number_text.json"))


def test_eval_data_reads_its_own_split_and_the_images_folder(tmp_path):
    """--eval-data ignored --image-dir (RefCOCOg's COCO images elsewhere: every row 'bad', and
    --skip-bad-rows did not help) and its split could not be chosen (the loader's advice named the training
    --split). It reads --eval-image-dir (default --image-dir) and --eval-split (default val when training on
    train), and the advice names those flags."""
    from samr1.train.driver import _prepare_eval_rows

    rng = np.random.default_rng()
    h, w = int(rng.integers(30, 60)), int(rng.integers(30, 60))
    coco = tmp_path / "coco"
    coco.mkdir()
    Image.fromarray(_rand_image(rng, h, w)).save(coco / "C_1.jpg")
    ref = tmp_path / "refc"
    ref.mkdir()
    poly = [[2, 2, w - 3, 2, w - 3, h - 3, 2, h - 3]]
    (ref / "instances.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "C_1.jpg", "height": h, "width": w}],
        "annotations": [{"id": 5, "image_id": 1, "iscrowd": 0, "segmentation": poly}]}))
    with open(ref / "refs(umd).p", "wb") as f:
        pickle.dump([{"ref_id": 0, "image_id": 1, "ann_id": 5, "split": s, "sentences": [{"sent": f"the {s} one"}]}
                     for s in ("train", "val", "testA")], f)
    logged: list[str] = []
    cfg = TrainConfig(data=str(ref), model="m", eval_data=str(ref), image_dir=str(coco), split="train")
    assert [r.query for r in _prepare_eval_rows(cfg, logged.append)] == ["the val one"]
    cfg = TrainConfig(data=str(ref), model="m", eval_data=str(ref), eval_image_dir=str(coco), eval_split="testA")
    assert [r.query for r in _prepare_eval_rows(cfg, logged.append)] == ["the testA one"]
    cfg = TrainConfig(data=str(ref), model="m", eval_data=str(ref), image_dir=str(coco), eval_split="nope")
    with pytest.raises(InputError, match=r"--eval-data .*no split 'nope'.*--eval-split"):
        _prepare_eval_rows(cfg, logged.append)
    cfg = TrainConfig(data=str(ref), model="m", eval_data=str(ref), split="train")  # images not beside: bad rows
    with pytest.raises(InputError, match="bad held-out evaluation row"):
        _prepare_eval_rows(cfg, logged.append)


def test_an_images_folder_for_data_that_does_not_read_one_warns(tmp_path):
    """--image-dir is RefCOCOg's; given with a manifest it changed nothing in silence."""
    from samr1.train.data import load_rows
    from samr1.train.scene_data import write_scene_manifest

    manifest = write_scene_manifest(tmp_path / "d", 2, size=(30, 40), seed=1)
    with pytest.warns(UserWarning, match="read for RefCOCOg data only"):
        rows = load_rows(str(manifest), image_dir=str(tmp_path))
    assert len(rows) == 2
