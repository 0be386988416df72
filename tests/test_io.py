"""Image/mask loading: every accepted form, and errors that name the field and file."""

import numpy as np
import pytest
from PIL import Image

from samr1.io import InputError, load_image, load_mask, rle_decode, rle_encode


@pytest.mark.parametrize("shape", [(1, 1), (2, 3), (37, 11), (64, 65)])
@pytest.mark.parametrize("compressed", [True, False])
def test_rle_round_trip(shape, compressed):
    rng = np.random.default_rng()
    for p in (0.0, 0.3, 1.0):
        m = rng.random(shape) < p
        assert np.array_equal(rle_decode(rle_encode(m, compressed=compressed)), m)


def test_rle_known_coco_string():
    # column-major: a 3x2 mask with its middle row set -> counts [1, 1, 2, 1, 1]
    m = np.array([[0, 0], [1, 1], [0, 0]], dtype=bool)
    assert rle_encode(m, compressed=False)["counts"] == [1, 1, 2, 1, 1]
    assert np.array_equal(rle_decode({"size": [3, 2], "counts": [1, 1, 2, 1, 1]}), m)


def test_rle_errors():
    with pytest.raises(InputError, match="sum to 5, expected H\\*W = 6"):
        rle_decode({"size": [2, 3], "counts": [1, 4]})
    with pytest.raises(InputError, match="needs 'size'"):
        load_mask({"counts": [1]})


def test_load_image_forms(tmp_path):
    rng = np.random.default_rng()
    arr = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    p = tmp_path / "im.png"
    Image.fromarray(arr).save(p)
    for x in (arr, Image.fromarray(arr), str(p), p):
        assert np.array_equal(load_image(x), arr)
    grey = arr[:, :, 0]
    assert load_image(grey).shape == (5, 7, 3)


def test_load_image_errors_name_field_and_file(tmp_path):
    with pytest.raises(InputError, match=r"image \(rows.jsonl:3\): image file not found: .*missing.png"):
        load_image(tmp_path / "missing.png", source="rows.jsonl:3")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(InputError, match="cannot read image file .*bad.png"):
        load_image(bad)
    with pytest.raises(InputError, match="expected dtype uint8"):
        load_image(np.zeros((4, 4, 3), dtype=np.float32))
    with pytest.raises(InputError, match="expected shape HxWx3"):
        load_image(np.zeros((4, 4, 5), dtype=np.uint8))


def test_load_mask_forms(tmp_path):
    rng = np.random.default_rng()
    m = rng.random((9, 4)) < 0.5
    p = tmp_path / "m.png"
    Image.fromarray(m.astype(np.uint8) * 255).save(p)
    for x in (m, m.astype(np.uint8), Image.fromarray(m.astype(np.uint8) * 255), str(p), rle_encode(m)):
        assert np.array_equal(load_mask(x), m)
    with pytest.raises(InputError, match="NaN"):
        load_mask(np.full((2, 2), np.nan))
    with pytest.raises(InputError, match=r"gt_masks\[4\]: expected an HxW mask"):
        load_mask(np.zeros((2, 2, 2, 2)), field="gt_masks[4]")


def test_alpha_channel_is_not_object():
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., 3] = 255  # opaque everywhere
    rgba[1:3, 1:3, :3] = 255  # a white 2x2 object
    la = np.zeros((4, 4, 2), dtype=np.uint8)
    la[..., 1] = 255
    la[0, 0, 0] = 255
    assert load_mask(rgba).sum() == 4 and load_mask(Image.fromarray(rgba, "RGBA")).sum() == 4
    assert load_mask(la).sum() == 1


@pytest.mark.parametrize("counts", [[2**70], "o" * 15 + "0", [2**62, 2**62, 2**62, 2**62 + 4], b"\xff\xfe", [-1, 5]])
def test_hostile_rle_is_an_input_error(counts):
    # a wrapped int64 sum would pass a numpy check and crash np.repeat; every case must be a clean InputError
    with pytest.raises(InputError):
        rle_decode({"size": [2, 2], "counts": counts})
