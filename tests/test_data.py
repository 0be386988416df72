"""samr1.data.read_manifest on hostile manifests: every bad row names the file and line; root= confinement."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest
from PIL import Image

from samr1.data import read_manifest
from samr1.io import InputError, rle_encode, set_max_image_pixels

GOOD = '{"image": "a.png", "query": "fine", "mask": "a.png"}'


@pytest.fixture()
def folder(tmp_path):
    Image.fromarray(np.zeros((4, 5, 3), np.uint8)).save(tmp_path / "a.png")
    return tmp_path


def _manifest(folder, *lines, name="d.jsonl", raw=None):
    m = folder / name
    if raw is not None:
        m.write_bytes(raw)
    else:
        m.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return m


def _raises_at(m, line, match=""):
    return pytest.raises(InputError, match=rf"^{re.escape(str(m))}:{line}: {match}")


@pytest.mark.parametrize(("bad", "match"), [
    ('{"image": "a.png", "query": "q", "mask": "a.png", "id": ' + "9" * 5000 + "}", r"not usable JSON: .*digits"),
    ('{"image": "a.png", "query": "q", "mask": {"size": [' + "7" * 5000 + ", 2], \"counts\": [1]}}", "not usable JSON"),
    ("[" * 100_000 + "]" * 100_000, r"not usable JSON: nested too deeply"),
    ('{"image": "a.png", "query": "q", "x": ' + "[" * 100_000 + "]" * 100_000 + "}", "not usable JSON: nested too deeply"),
    ('{"image": "a.png", "query": "q", "x": ' + '{"a": ' * 100_000 + "1" + "}" * 100_000 + "}", "not usable JSON: nested too deeply"),
    ("null", "expected a JSON object, got NoneType"),
    ("3", "expected a JSON object, got int"),
    ('{"image": "a.png", "query": "q", "mask": {"size": [NaN, 2], "counts": [1]}}', r"field 'mask'.*'size'"),
    # an integral float size is the same size (samr1.io.rle_size, as the decoder reads it): over the limit
    ('{"image": "a.png", "query": "q", "mask": {"size": [1e9, 1e9], "counts": [1]}}',
     r"field 'mask': the RLE declares 1000000000x1000000000 .* over the limit"),
    ('{"image": "a.png", "query": "q", "mask": {"size": [1000000000, 1000000000], "counts": [1]}}',
     r"field 'mask': the RLE declares 1000000000x1000000000 .* over the limit"),
    ('{"image": "a.png", "query": "q", "mask": {"size": [4, 5], "counts": [3, 4]}}', r"field 'mask': RLE counts sum to 7"),
    ('{"image": "a.png", "query": "q", "mask": {"size": [4, 5], "counts": [true, 19]}}', r"field 'mask': RLE 'counts'"),
    ('{"image": "a.png", "query": "q", "mask": {"size": [4, 5]}}', r"field 'mask': RLE 'counts'"),
    ('{"image": "a\\u0000.png", "query": "q", "mask": "a.png"}', r"field 'image': the path contains a NUL byte"),
    ('{"image": "a.png", "query": "q", "mask": "a.png\\u0000x"}', r"field 'mask': the path contains a NUL byte"),
    ('{"image": ["a.png"], "query": "q", "mask": "a.png"}', r"field 'image' must be a non-empty path string"),
    ('{"image": "a.png", "query": "q", "mask": []}', r"field 'mask' must be a path string or a COCO RLE"),
    ('{"image": "' + "x" * 100_000 + '.png", "query": "q", "mask": "a.png"}', r"field 'image': file not found"),
])
def test_hostile_rows_name_file_and_line(folder, bad, match):
    m = _manifest(folder, GOOD, "", bad, GOOD)
    with _raises_at(m, 3, match):
        read_manifest(m)


def test_bytes_that_are_not_utf8_name_the_line(folder):
    m = _manifest(folder, raw=(GOOD + "\r\n" + GOOD + "\r\n").encode() + b'{"image": "\xff\xfe"}\n')
    with _raises_at(m, 3, "not UTF-8 text"):
        read_manifest(m)


def test_bom_crlf_and_blank_lines(folder):
    rle = rle_encode(np.eye(4, 5, dtype=bool), compressed=False)
    row2 = json.dumps({"image": "a.png", "query": "two", "mask": rle})
    m = _manifest(folder, raw=b"\xef\xbb\xbf" + GOOD.encode() + b"\r\n\r\n  \t\n" + row2.encode() + b"\r\n")
    rows = read_manifest(m)
    assert [(r.line, r.query, r.mask) for r in rows] == [(1, "fine", str(folder / "a.png")), (4, "two", rle)]


def test_rle_over_the_pixel_limit_is_refused_at_read_time(folder):
    try:
        set_max_image_pixels(19)
        m = _manifest(folder, GOOD, json.dumps({"image": "a.png", "query": "q", "mask": {"size": [4, 5], "counts": [20]}}))
        with _raises_at(m, 2, r"field 'mask': the RLE declares 4x5 = 20 pixels, over the limit of 19"):
            read_manifest(m)
    finally:
        set_max_image_pixels(None)


def test_paths_rule_without_root(folder, monkeypatch):
    # relative -> the manifest's folder; ".." and absolute paths allowed; "~" expanded
    sub = folder / "splits"
    sub.mkdir()
    monkeypatch.setenv("HOME", str(folder))
    m = _manifest(sub, *(json.dumps({"image": p, "query": "q", "mask": "../a.png"})
                         for p in ("../a.png", str(folder / "a.png"), "~/a.png", "./../splits/../a.png")))
    rows = read_manifest(m)
    assert {r.image for r in rows} == {str(folder / "a.png")} and {r.mask for r in rows} == {str(folder / "a.png")}


def test_root_confinement(tmp_path, monkeypatch):
    root = tmp_path / "root"
    (root / "img").mkdir(parents=True)
    outside = tmp_path / "secret.png"
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(outside)
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(root / "img" / "ok.png")
    os.symlink(outside, root / "img" / "link.png")  # a link inside root pointing out of it
    os.symlink(root / "img" / "ok.png", root / "img" / "inner_link.png")  # a link that stays inside
    monkeypatch.setenv("HOME", str(tmp_path))
    ok = json.dumps({"image": "img/ok.png", "query": "q", "mask": "img/inner_link.png"})
    rows = read_manifest(_manifest(root, ok), root=root)
    assert rows[0].image == rows[0].mask == os.path.realpath(root / "img" / "ok.png")
    escapes = [("image", "../secret.png"), ("image", str(outside)), ("image", "~/secret.png"),
               ("image", "img/link.png"), ("mask", "img/../../secret.png"), ("mask", "img/link.png"),
               ("image", "/etc/passwd")]
    for fld, p in escapes:
        row = {"image": "img/ok.png", "query": "q", "mask": "img/ok.png"}
        row[fld] = p
        m = _manifest(root, ok, json.dumps(row))
        with _raises_at(m, 2, rf"field '{fld}': path .* outside the allowed root"):
            read_manifest(m, root=root)
        assert len(read_manifest(m, check_files=False)) == 2  # without root= the same rows are accepted
    with pytest.raises(InputError, match="not a folder"):
        read_manifest(_manifest(root, ok), root=root / "nope")
