"""Attack suite, data loaders and result files:

- ``--split`` picks exactly one split's parquet files in every layout the Hugging Face hub uses (``data/
  <split>-00000-of-00001.parquet``, sharded, ``<split>/`` folders, ``<split>.parquet``, custom split names),
  aliases included; an unknown split is an error listing the ones there, in ``load_rows``, ``samr1 eval`` and
  ``samr1 train``;
- ``eval --merge`` reads each shard's samples from the shard's own folder, whatever the current folder, and
  checks them against the shard's counts;
- an empty dataset is an input error, and results JSON is valid JSON whatever the metrics are (null, never
  NaN);
- ``check_rows`` decodes each image file once, however many rows name it;
- masks that look like something else (probability maps, alpha-only) warn.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
from PIL import Image

from samr1.io import InputError

SPLITS = ("train", "val", "test")
COUNTS = {"train": 4, "val": 2, "test": 3, "validation": 2, "testA": 1}


def _parquet(path, split: str, n: int, first: int = 0) -> None:
    import datasets

    feats = datasets.Features({"image": datasets.Image(), "text": datasets.Value("string"),
                               "mask": datasets.Sequence(datasets.Sequence(datasets.Value("bool"))),
                               "img_height": datasets.Value("int64"), "img_width": datasets.Value("int64")})
    m = np.zeros((8, 8), bool)
    m[2:5, 2:5] = True
    os.makedirs(os.path.dirname(path), exist_ok=True)
    datasets.Dataset.from_dict({
        "image": [Image.fromarray(np.full((8, 8, 3), i, np.uint8)) for i in range(n)],
        "text": [f"{split} {i}" for i in range(first, first + n)], "mask": [m.tolist()] * n,
        "img_height": [8] * n, "img_width": [8] * n}, features=feats).to_parquet(str(path))


# layout -> (file of a split's rows, the splits written)
LAYOUTS = {
    "hub-data-folder": (lambda s: f"data/{s}-00000-of-00001.parquet", SPLITS),
    "hub-sharded": (lambda s: f"data/{s}-0000{{k}}-of-00002.parquet", SPLITS),
    "split-folders": (lambda s: f"{s}/part.parquet", SPLITS),
    "split-files": (lambda s: f"{s}.parquet", SPLITS),
    "validation-named": (lambda s: f"data/{s}-00000-of-00001.parquet", ("train", "validation")),
    "custom-split-names": (lambda s: f"data/{s}-00000-of-00001.parquet", ("val", "testA")),
}


@pytest.fixture(scope="module")
def hf_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    for name, (file_of, splits) in LAYOUTS.items():
        for s in splits:
            rel = file_of(s)
            if "{k}" in rel:  # two shards of the split, rows split between them
                n = COUNTS[s]
                _parquet(root / name / rel.format(k=0), s, n - n // 2)
                _parquet(root / name / rel.format(k=1), s, n // 2, first=n - n // 2)
            else:
                _parquet(root / name / rel, s, COUNTS[s])
    return root


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_split_reads_only_that_splits_files_in_every_hub_layout(hf_folders, layout):
    from samr1.train.data import load_rows, resolve_split

    _, splits = LAYOUTS[layout]
    for s in splits:
        rows = load_rows(str(hf_folders / layout), split=s)
        assert sorted(r.query for r in rows) == sorted(f"{s} {i}" for i in range(COUNTS[s])), (layout, s)
    for bogus in ("bogus", "Train", "tes", "trainval"):
        with pytest.raises(InputError, match="not '" + bogus) as info:
            load_rows(str(hf_folders / layout), split=bogus)
        listed = eval(str(info.value).split("hold splits ")[1].split(", not")[0])  # noqa: S307 - a list literal
        assert all(resolve_split(s, listed) for s in splits), str(info.value)  # each split written, by some name


@pytest.mark.parametrize(("layout", "asked", "means"), [
    ("validation-named", "val", "validation"), ("validation-named", "dev", "validation"),
    ("hub-data-folder", "validation", "val"), ("split-files", "eval", "test")])
def test_split_aliases_name_the_same_split(hf_folders, layout, asked, means):
    from samr1.train.data import load_rows

    rows = load_rows(str(hf_folders / layout), split=asked)
    assert sorted(r.query for r in rows) == sorted(f"{means} {i}" for i in range(COUNTS[means]))


def test_a_folder_withoutresolve_splits_is_the_train_split_and_a_named_file_is_its_split(tmp_path):
    from samr1.train.data import load_rows

    _parquet(tmp_path / "plain" / "a.parquet", "x", 2)
    _parquet(tmp_path / "plain" / "b.parquet", "y", 1)
    assert len(load_rows(str(tmp_path / "plain"), split="train")) == 3
    with pytest.raises(InputError, match="no file or folder name there names a split"):
        load_rows(str(tmp_path / "plain"), split="val")
    _parquet(tmp_path / "one" / "test.parquet", "test", 2)
    assert len(load_rows(str(tmp_path / "one" / "test.parquet"), split="test")) == 2
    with pytest.raises(InputError, match="the file name says split 'test'"):
        load_rows(str(tmp_path / "one" / "test.parquet"), split="train")
    assert len(load_rows(str(tmp_path / "plain" / "a.parquet"), split="val")) == 2  # no split in its name


def test_eval_and_train_refuse_an_unknown_split_before_loading_a_model(hf_folders, tiny_policy, tmp_path, capsys):
    from samr1.cli import main

    data = str(hf_folders / "hub-data-folder")
    assert main(["eval", "--model", tiny_policy[0], "--data", data, "--split", "bogus", "--sam", "tiny-shapes",
                 "--device", "cpu", "--out", str(tmp_path / "r.json")]) == 3
    err = capsys.readouterr().err
    assert "not 'bogus'" in err and "'val'" in err and not os.path.exists(tmp_path / "r.json")
    assert main(["train", "--model", tiny_policy[0], "--data", data, "--split", "bogus", "--sam", "tiny-shapes",
                 "--device", "cpu", "--output-dir", str(tmp_path / "run"), "--no-progress"]) == 3
    assert "not 'bogus'" in capsys.readouterr().err and not os.path.exists(tmp_path / "run")


# ------------------------------------------------------------------------------------------- eval results


def _shard(index: list[int], k: int, of: int, seed: int, empty_union: str = "lisa") -> dict:
    rng = np.random.default_rng(seed)
    samples = []
    for i in index:
        inter, union = int(rng.integers(0, 50)), int(rng.integers(50, 100))
        samples.append({"index": i, "position": f"m.jsonl:{i + 1}", "query": f"q{seed}-{i}", "parsed": True,
                        "reason": None, "iou": inter / union, "intersection": inter, "union": union,
                        "gt_pixels": union - 5, "pred_pixels": inter + 5, "skipped": False, "text": "t",
                        "answer": None})
    ious = [s["iou"] for s in samples]
    return {"giou": float(np.mean(ious)) if ious else math.nan, "ciou": math.nan, "n": len(samples),
            "n_scored": len(samples), "n_skipped": 0, "n_parse_failures": 0, "empty_union": empty_union,
            "parse_failure_reasons": {}, "samples": samples, "shard": [k, of], "model": "p", "sam": "s",
            "data": f"set{seed}"}


def _strict(path) -> dict:
    """The file as RFC 8259 JSON: NaN / Infinity are refused, as JavaScript and jq refuse them."""
    def refuse(name):
        raise ValueError(f"{path} holds {name}, which is not JSON")
    return json.loads(open(path, encoding="utf-8").read(), parse_constant=refuse)


@pytest.fixture
def two_runs(tmp_path, monkeypatch):
    """Run A (6 samples) sharded in A/, run B (3 samples) sharded in B/, each written from its own folder."""
    from samr1.cli.eval import write_outputs

    for run, n, seed in (("A", 6, 1), ("B", 3, 2)):
        (tmp_path / run).mkdir()
        monkeypatch.chdir(tmp_path / run)
        for k in range(2):
            write_outputs(_shard(list(range(k, n, 2)), k, 2, seed), f"shard{k}.json", "t")
    monkeypatch.chdir(tmp_path / "B")
    return tmp_path


def test_merge_reads_each_shards_samples_from_the_shards_own_folder(two_runs, capsys):
    from samr1.cli import main

    a = two_runs / "A"
    assert main(["eval", "--merge", str(a / "shard0.json"), str(a / "shard1.json"), "--out", "mergedA.json"]) == 0
    merged = _strict(two_runs / "B" / "mergedA.json")
    rows = [json.loads(x) for x in (two_runs / "B" / "mergedA.samples.jsonl").read_text().splitlines()]
    assert merged["n"] == 6 and [r["index"] for r in rows] == list(range(6))
    assert all(r["query"].startswith("q1-") for r in rows)  # run A's samples, not B's from this folder


def test_merge_of_shards_written_with_a_folder_in_out(tmp_path, monkeypatch):
    """Results written before samples were named relative to the results file ("ev/shard0.samples.jsonl",
    relative to the shard run's folder) are still found beside their results file."""
    from samr1.cli import main
    from samr1.cli.eval import write_outputs

    monkeypatch.chdir(tmp_path)
    for k in range(2):
        write_outputs(_shard(list(range(k, 4, 2)), k, 2, 5), f"ev/shard{k}.json", "t")
        res = json.loads((tmp_path / "ev" / f"shard{k}.json").read_text())
        res["files"]["samples"] = f"ev/shard{k}.samples.jsonl"  # the old form
        (tmp_path / "ev" / f"shard{k}.json").write_text(json.dumps(res))
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert main(["eval", "--merge", "../ev/shard0.json", "../ev/shard1.json", "--out", "m.json"]) == 0
    assert _strict(tmp_path / "elsewhere" / "m.json")["n"] == 4


@pytest.mark.parametrize("damage", ["row-dropped", "row-added", "other-run", "index-changed"])
def test_merge_checks_each_shards_rows_against_its_own_counts(two_runs, capsys, damage):
    from samr1.cli import main

    a, b = two_runs / "A", two_runs / "B"
    samples = a / "shard1.samples.jsonl"
    lines = samples.read_text().splitlines()
    if damage == "row-dropped":
        samples.write_text("\n".join(lines[:-1]) + "\n")
    elif damage == "row-added":
        samples.write_text("\n".join([*lines, lines[0]]) + "\n")
    elif damage == "other-run":
        samples.write_text((b / "shard1.samples.jsonl").read_text())
    else:
        row = json.loads(lines[0])
        row["index"] = 99
        samples.write_text("\n".join([json.dumps(row), *lines[1:]]) + "\n")
    assert main(["eval", "--merge", str(a / "shard0.json"), str(a / "shard1.json"), "--out", "m.json"]) == 3
    err = capsys.readouterr().err
    assert "shard1.json" in err and "different runs" in err and not (b / "m.json").exists()


@pytest.mark.parametrize("case", ["no-scored-samples", "empty-shard", "no-union"])
def test_results_json_is_always_valid_json(tmp_path, monkeypatch, case, capsys):
    from samr1.cli import main
    from samr1.cli.eval import write_outputs

    monkeypatch.chdir(tmp_path)
    if case == "no-scored-samples":  # every sample skipped (segzero rule on empty masks): gIoU over nothing
        res = _shard([0, 1], 0, 1, 3, "segzero")
        for s in res["samples"]:
            s.update(skipped=True, iou=None, intersection=0, union=0)
        res.update(giou=math.nan, ciou=math.nan, n_scored=0, n_skipped=2)
        write_outputs(res, "r.json", "t")
        got = _strict(tmp_path / "r.json")
        assert got["giou"] is None and got["ciou"] is None
    elif case == "empty-shard":  # more shards than samples: a shard with nothing in it
        write_outputs(_shard([], 3, 4, 3), "r.json", "t")
        got = _strict(tmp_path / "r.json")
        assert got["n"] == 0 and got["giou"] is None
    else:
        for k in range(2):
            res = _shard([k], k, 2, 4)
            for s in res["samples"]:
                s.update(intersection=0, union=0, iou=1.0)
            write_outputs(res, f"s{k}.json", "t")
        assert main(["eval", "--merge", "s0.json", "s1.json", "--out", "m.json"]) == 0
        assert _strict(tmp_path / "m.json")["ciou"] is None
        assert "cIoU -" in capsys.readouterr().out
    for line in (tmp_path / "r.samples.jsonl").read_text().splitlines() if case != "no-union" else []:
        json.loads(line, parse_constant=lambda c: pytest.fail(f"{c} in the samples"))


@pytest.mark.parametrize("content", ["", "\n\n  \n", "\ufeff\n"])
def test_eval_of_an_empty_dataset_is_an_input_error(tiny_policy, tmp_path, capsys, content):
    from samr1.cli import main

    (tmp_path / "empty.jsonl").write_text(content, encoding="utf-8")
    rc = main(["eval", "--model", tiny_policy[0], "--data", str(tmp_path / "empty.jsonl"), "--sam", "tiny-shapes",
               "--device", "cpu", "--out", str(tmp_path / "e.json")])
    assert rc == 3 and "no rows" in capsys.readouterr().err
    assert not (tmp_path / "e.json").exists()


# ------------------------------------------------------------------------------------------- decodes


def test_check_rows_decodes_each_image_file_once(tmp_path, monkeypatch):
    """RefCOCOg-style data: several rows (sentences) per image. Each file is decoded once, bad ones too, and
    every row naming a bad file is reported."""
    import samr1.train.data as data_mod
    from samr1.train.data import TrainRow, check_rows

    rng = np.random.default_rng()
    rows, paths = [], []
    for i in range(6):
        p = tmp_path / f"img{i}.png"
        Image.fromarray(rng.integers(0, 255, (20 + i, 30, 3), dtype=np.uint8)).save(p)
        paths.append(str(p))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    for r in range(60):
        i = r % 7
        path = paths[i] if i < 6 else str(tmp_path / "broken.png")
        h = 20 + i if i < 6 else 20
        rows.append(TrainRow(path, f"sentence {r}", np.zeros((h, 30), np.uint8), f"refs row {r}"))
    calls: dict[str, int] = {}
    real = data_mod.load_image

    def counting(image, **kw):
        calls[str(image)] = calls.get(str(image), 0) + 1
        return real(image, **kw)

    monkeypatch.setattr(data_mod, "load_image", counting)
    good, bad = check_rows(rows, skip_bad=True, workers=4)
    assert calls == {p: 1 for p in [*paths, str(tmp_path / "broken.png")]}, calls
    assert len(good) == 60 - len(bad) and [b.index for b in bad] == [r for r in range(60) if r % 7 == 6]
    assert all("broken.png" in b.reason for b in bad)


# ------------------------------------------------------------------------------------------- masks


def test_a_mask_resized_with_antialiasing_or_saved_as_jpeg_warns_once(fresh_mask_warnings, tmp_path):
    """Pillow's default resize of a 0/255 mask, and a JPEG of it, add soft edges that nonzero = object reads as
    object (about 5 % more pixels): it used to pass in silence. They warn once; the NEAREST resize and the PNG of
    the same mask do not; random shapes and sizes."""
    import warnings

    from samr1.io import MaskWarning, load_mask

    rng = np.random.default_rng()
    for _ in range(3):
        h, w = (int(v) for v in rng.integers(40, 90, 2))
        m = np.zeros((h, w), np.uint8)
        y, x = int(rng.integers(5, h // 2)), int(rng.integers(5, w // 2))
        m[y:y + h // 3, x:x + w // 3] = 255
        big = (int(w * rng.uniform(2.2, 4.0)), int(h * rng.uniform(2.2, 4.0)))
        soft = Image.fromarray(m).resize(big)  # Pillow's default filter for mode L: bicubic, soft edges
        hard = Image.fromarray(m).resize(big, Image.NEAREST)
        Image.fromarray(m).save(tmp_path / "m.jpg", quality=75)
        Image.fromarray(m).save(tmp_path / "m.png")
        for value, warns in ((soft, True), (str(tmp_path / "m.jpg"), True), (hard, False), (str(tmp_path / "m.png"), False)):
            import samr1.io as io_mod

            io_mod._warned_masks.clear()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                load_mask(value)
            said = [str(c.message) for c in caught if issubclass(c.category, MaskWarning)]
            assert len(said) == (1 if warns else 0), (value, said)
            assert not said or "soft edges" in said[0]


@pytest.fixture
def fresh_mask_warnings(monkeypatch):
    import samr1.io as io_mod

    monkeypatch.setattr(io_mod, "_warned_masks", set())


def _rgba(alpha_only: bool) -> Image.Image:
    a = np.zeros((6, 6, 4), np.uint8)
    a[1:4, 1:4, 3] = 255
    if not alpha_only:
        a[1:4, 1:4, 0] = 255
    return Image.fromarray(a, "RGBA")


MASK_FORMS = {
    # name: (mask, object pixels it means, does it warn)
    "bool": (np.eye(5, dtype=bool), 5, False),
    "uint8-0-255": (np.eye(5, dtype=np.uint8) * 255, 5, False),
    "float-0-1": (np.eye(5, dtype=np.float32), 5, False),
    "float-probabilities": (np.full((5, 5), 0.2, np.float32), 25, True),
    "float64-small-values": (np.eye(5) * 0.01, 5, True),
    "rgb-one-channel": (np.stack([np.zeros((5, 5), np.uint8), np.eye(5, dtype=np.uint8), np.zeros((5, 5), np.uint8)],
                                 -1), 5, False),
    "rgba-colour": (_rgba(False), 9, False),
    "rgba-alpha-only": (_rgba(True), 0, True),
    "la-alpha-only": (Image.fromarray(np.stack([np.zeros((4, 4), np.uint8), np.eye(4, dtype=np.uint8) * 255], -1),
                                      "LA"), 0, True),
    "palette-index": (Image.fromarray(np.array([[0, 1], [2, 0]], np.uint8), "P"), 2, False),
    "float-logits": (np.where(np.eye(5, dtype=bool), 4.0, -4.0).astype(np.float32), 25, True),
    "label-ids": (np.arange(25, dtype=np.uint8).reshape(5, 5) % 4, 18, False),  # ids 1-3: no 255, no soft edge
    "label-ids-with-255": (np.array([[0, 1, 2, 255]], np.uint8), 3, False),  # a few ids: not soft edges
    "soft-edges-grey": (np.array([[0] * 4 + list(range(0, 256, 16)) + [255] * 20], np.uint8), 15 + 20, True),
    "soft-edges-rgb": (np.repeat(np.array([[0] * 4 + list(range(0, 256, 16)) + [255] * 20], np.uint8)[..., None], 3,
                                 2), 15 + 20, True),
    # VOC-style: class ids 1-12 over large regions, a thin 255 boundary between them: ids, not soft edges
    "voc-ids-and-boundary": (np.array([[k // 3 + 1 for k in range(36)] + [255]], np.uint8), 37, False),
}


@pytest.mark.parametrize("name", list(MASK_FORMS))
def test_each_mask_form_means_what_the_docs_say(fresh_mask_warnings, name):
    import warnings

    from samr1.io import MaskWarning, load_mask

    mask, pixels, warns = MASK_FORMS[name]
    if isinstance(mask, Image.Image) and mask.mode == "P":  # index 0 white, index 2 black: index decides, not colour
        mask.putpalette([255, 255, 255, 0, 0, 0, 0, 0, 0] + [0] * 759)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = load_mask(mask)
        load_mask(mask)  # a second such mask: not reported again
    said = [w for w in caught if issubclass(w.category, MaskWarning)]
    assert int(got.sum()) == pixels
    assert len(said) == (1 if warns else 0), [str(w.message) for w in said]


@pytest.mark.parametrize("name", list(MASK_FORMS))
def test_rle_encode_reads_every_mask_form_as_load_mask_does(fresh_mask_warnings, name):
    """rle_encode took only H x W arrays (an RGB PNG array failed with a bare unpacking error, a probability map
    was encoded without the warning load_mask gives): it reads every form load_mask reads, the same way."""
    import warnings

    from samr1.io import load_mask, rle_decode, rle_encode

    mask = MASK_FORMS[name][0]
    if isinstance(mask, Image.Image) and mask.mode == "P":
        mask.putpalette([255, 255, 255, 0, 0, 0, 0, 0, 0] + [0] * 759)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = load_mask(mask)
        np.testing.assert_array_equal(rle_decode(rle_encode(mask)), want)
    with pytest.raises(InputError, match="mask"):
        rle_encode(np.zeros((2, 3, 9), np.uint8))
