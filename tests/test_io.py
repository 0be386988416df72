"""Image/mask loading: every accepted form, and errors that name the field and file."""

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageOps

from samr1.io import (
    DEFAULT_MAX_IMAGE_PIXELS,
    InputError,
    MaskSizeError,
    load_image,
    load_mask,
    max_image_pixels,
    rle_decode,
    rle_encode,
    set_max_image_pixels,
)


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


# ------------------------------------------------------------------------------ hostile and unusual files


def _png_header_only(w, h):
    """A valid PNG signature + IHDR declaring w x h 8-bit grey, with almost no pixel data (a bomb's shape)."""
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


@pytest.fixture()
def pixel_limit():
    yield set_max_image_pixels
    set_max_image_pixels(None)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("w,h", [(30000, 30000), (10000, 10000), (100000, 1), (7, 3)])
def test_decompression_bomb_is_an_input_error(tmp_path, w, h, pixel_limit):
    # 30000^2 is over Pillow's own hard limit (2 x 89.5 MP); 10000^2 over our default; the small ones over a
    # lowered limit. All must be refused on the header, as an InputError naming the field and row.
    p = tmp_path / "bomb.png"
    p.write_bytes(_png_header_only(w, h))
    if w * h <= DEFAULT_MAX_IMAGE_PIXELS:
        pixel_limit(w * h - 1)
    limit = max_image_pixels()
    for load in (load_image, load_mask):
        if w * h > 2 * Image.MAX_IMAGE_PIXELS:
            match = r"\(rows.jsonl:7\): .*decompression bomb"
        else:
            match = rf"\(rows.jsonl:7\) .*: \w+ is {h}x{w} = {w * h} pixels, over the limit of {limit}"
        with pytest.raises(InputError, match=match):
            load(p, source="rows.jsonl:7")


def test_pixel_limit_setting_env_and_function(tmp_path, monkeypatch, pixel_limit):
    rng = np.random.default_rng()
    h, w = int(rng.integers(5, 30)), int(rng.integers(5, 30))
    arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    p = tmp_path / "a.png"
    Image.fromarray(arr).save(p)
    assert max_image_pixels() == DEFAULT_MAX_IMAGE_PIXELS
    monkeypatch.setenv("SAMR1_MAX_IMAGE_PIXELS", str(h * w))
    assert np.array_equal(load_image(p), arr)  # exactly at the limit: allowed
    monkeypatch.setenv("SAMR1_MAX_IMAGE_PIXELS", str(h * w - 1))
    for x in (p, arr, Image.fromarray(arr)):
        with pytest.raises(InputError, match="SAMR1_MAX_IMAGE_PIXELS"):
            load_image(x)
    with pytest.raises(InputError, match="over the limit"):
        load_mask(rle_encode(arr[..., 0] > 0))
    pixel_limit(h * w)  # the function wins over the environment
    assert load_mask(rle_encode(arr[..., 0] > 0)).shape == (h, w)
    monkeypatch.setenv("SAMR1_MAX_IMAGE_PIXELS", "lots")
    pixel_limit(None)
    with pytest.raises(RuntimeError, match="SAMR1_MAX_IMAGE_PIXELS must be a positive integer"):
        load_image(arr)
    with pytest.raises(ValueError, match="positive integer"):
        set_max_image_pixels(0)


@pytest.mark.parametrize("size", [[10**9, 10**9], [1e9, 1e9], [2**40, 1]])
def test_huge_rle_is_refused_before_decoding(size):
    # counts that sum to H*W would make np.repeat allocate 1e18 bytes: the declared size must stop it first
    h, w = int(size[0]), int(size[1])
    with pytest.raises(InputError, match="over the limit"):
        load_mask({"size": size, "counts": [h * w]})


def test_rle_size_mismatch_is_refused_before_decoding():
    rng = np.random.default_rng()
    m = rng.random((int(rng.integers(2, 40)), int(rng.integers(2, 40)))) < 0.5
    rle = rle_encode(m)
    assert np.array_equal(load_mask(rle, expected_size=m.shape), m)
    with pytest.raises(MaskSizeError, match=rf"mask \(row 2\): mask is {m.shape[0]}x{m.shape[1]} but its image is "
                       rf"{m.shape[0] + 1}x{m.shape[1]}"):
        load_mask(rle, source="row 2", expected_size=(m.shape[0] + 1, m.shape[1]))
    # garbage counts with a mismatched size: the size is refused first, so nothing was decoded
    with pytest.raises(MaskSizeError):
        load_mask({"size": [7, 9], "counts": "not rle!"}, expected_size=(9, 7))
    for other in (m, m.tolist(), Image.fromarray(m)):  # every form honours expected_size
        with pytest.raises(MaskSizeError):
            load_mask(other, expected_size=(m.shape[1] + 1, m.shape[0]))


@pytest.mark.parametrize("size", [[4], "12", [2.5, 2], [float("nan"), 2], [float("inf"), 1], [True, 4], [0, 4],
                                  [-2, -2], None])
def test_malformed_rle_size(size):
    with pytest.raises(InputError, match="'size'"):
        load_mask({"size": size, "counts": [4]})


def _ref_16_to_8(v):
    """Independent restatement: the full 16-bit range onto 0..255, rounded to nearest (half up)."""
    return np.floor(np.asarray(v, np.float64) * 255.0 / 65535.0 + 0.5).astype(np.uint8)


def test_16_bit_images_are_scaled_not_clipped(tmp_path):
    rng = np.random.default_rng()
    h, w = int(rng.integers(1, 17)), int(rng.integers(2, 97))
    grad = np.linspace(0, 65535, w).round().astype(np.uint16)[None].repeat(h, 0)
    rand = rng.integers(0, 65536, (h, w), dtype=np.uint16)
    for a in (grad, rand):
        want = np.repeat(_ref_16_to_8(a)[:, :, None], 3, axis=2)
        p = tmp_path / "g16.png"
        Image.fromarray(a).save(p)
        assert Image.open(p).mode.startswith("I")
        for x in (a, Image.fromarray(a), p, Image.fromarray(a.astype(np.int32)), np.repeat(a[:, :, None], 3, 2)):
            got = load_image(x)
            assert got.dtype == np.uint8 and np.array_equal(got, want), type(x)
    # the gradient keeps its spread: the fraction of saturated pixels is that of the gradient's top value
    got = load_image(grad)
    assert (got == 255).mean() == (_ref_16_to_8(grad) == 255).mean() < 0.5


def test_32_bit_and_float_images_are_scaled_by_their_own_range():
    rng = np.random.default_rng()
    h, w = int(rng.integers(1, 20)), int(rng.integers(2, 20))
    i32 = rng.integers(-(2**31), 2**31 - 1, (h, w), dtype=np.int64).astype(np.int32)
    i32.flat[0], i32.flat[1] = -(2**31), 2**31 - 1  # a range beyond 16 bits
    f32 = (rng.standard_normal((h, w)) * 1e3).astype(np.float32)
    for a in (i32, f32):
        v = a.astype(np.float64)
        want = np.rint((v - v.min()) / (v.max() - v.min()) * 255).astype(np.uint8)
        got = load_image(Image.fromarray(a))
        assert np.array_equal(got[..., 0], want) and np.array_equal(got[..., 2], want)
    assert not load_image(Image.fromarray(np.full((3, 4), 7.5, np.float32))).any()  # constant: 0, not NaN
    bad = np.zeros((3, 4), np.float32)
    bad[1, 2] = np.nan
    with pytest.raises(InputError, match="NaN"):
        load_image(Image.fromarray(bad))


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_exif_orientation_is_applied(tmp_path, orientation, fmt):
    rng = np.random.default_rng()
    h, w = int(rng.integers(3, 19)), int(rng.integers(3, 19))
    while w == h:
        w = int(rng.integers(3, 19))
    arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    p = tmp_path / f"o{orientation}.{fmt.lower()}"
    Image.fromarray(arr).save(p, format=fmt, exif=exif.tobytes())
    with Image.open(p) as im:
        assert im.getexif().get(0x0112) == orientation
        want = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    assert want.shape[:2] == ((w, h) if orientation >= 5 else (h, w))
    assert np.array_equal(load_image(p), want)
    with Image.open(p) as im:  # an opened PIL image too (what a datasets Image column holds)
        assert np.array_equal(load_image(im), want)
    if fmt == "PNG":  # a mask file with an orientation is turned the same way as its image
        mp = tmp_path / f"m{orientation}.png"
        Image.fromarray(arr[..., 0] > 127).save(mp, exif=exif.tobytes())
        assert np.array_equal(load_mask(mp), np.asarray(ImageOps.exif_transpose(Image.open(mp))) != 0)


@pytest.mark.parametrize("shape", [(1, 1), (3, 7), (29, 2), (41, 53)])
def test_nested_list_masks(shape):
    rng = np.random.default_rng()
    m = rng.random(shape) < 0.4
    lists = [[bool(v) for v in row] for row in m]  # what datasets gives for Sequence(Sequence(bool))
    assert np.array_equal(load_mask(lists), m)
    assert np.array_equal(load_mask([[int(v) for v in row] for row in m]), m)
    assert np.array_equal(load_mask(tuple(tuple(r) for r in lists), expected_size=shape), m)


@pytest.mark.parametrize("lists,match", [
    ([[True, False], [True]], r"mask \(row 5\): ragged mask lists: row 1 has 1 values but row 0 has 2"),
    ([[True], [False, True]], r"mask \(row 5\): ragged mask lists: row 1 has 2 values but row 0 has 1"),
    ([], r"mask \(row 5\): mask is an empty list"),
    ([[]], r"mask \(row 5\): mask is empty"),
    ([True, False], r"mask \(row 5\): .*row 0 is a bool"),
    (["ab", "cd"], r"mask \(row 5\): .*row 0 is a str"),
    ([[1, "a"], [0, 1]], r"mask \(row 5\): mask lists must be H lists of W bools or numbers"),
    ([[None, 1]], r"mask \(row 5\): mask lists must be H lists of W bools or numbers"),
    ([[[True]], [[False]]], r"mask \(row 5\): mask lists must be H lists of W bools or numbers"),
    ([[float("nan"), 1.0]], r"mask \(row 5\): mask holds NaN"),
    ([[10**30, 1]], r"mask \(row 5\)"),
])
def test_malformed_list_masks_name_the_row(lists, match):
    with pytest.raises(InputError, match=match):
        load_mask(lists, source="row 5")


def test_hostile_files_and_arrays_are_input_errors(tmp_path):
    garbage = tmp_path / "g.png"
    garbage.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    truncated = tmp_path / "t.png"
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng().integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(buf, format="PNG")
    truncated.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    for load in (load_image, load_mask):
        for bad in (garbage, truncated, tmp_path, str(tmp_path / "a\0b.png"), b"\x89PNG", 3.5, None,
                    np.zeros((0, 5, 3), np.uint8), np.zeros((5, 5, 0), np.uint8), np.zeros((2, 2, 3), object),
                    Image.new("RGB", (0, 4)), Image.new("I;16", (3, 0))):
            with pytest.raises(InputError):
                load(bad)


def test_loaded_arrays_are_writable_and_contiguous(tmp_path):
    # arrays viewed from PIL images are read-only; torch.from_numpy on them warns and aliases PIL's memory
    rng = np.random.default_rng()
    m = rng.random((6, 9)) < 0.5
    rgb = rng.integers(0, 256, (6, 9, 3), dtype=np.uint8)
    Image.fromarray(m).save(tmp_path / "m.png")
    Image.fromarray(rgb).save(tmp_path / "i.png")
    for got in (load_mask(Image.fromarray(m)), load_mask(tmp_path / "m.png"), load_image(Image.fromarray(rgb)),
                load_image(tmp_path / "i.png"), load_mask(np.asarray(Image.fromarray(m)))):
        assert got.flags.writeable and got.flags.c_contiguous


def test_rle_counts_string_with_an_endless_count_is_refused_quickly():
    # One count written with 200k continuation characters: bounded before any big-int work piles up.
    from samr1.io import InputError, rle_decode

    with pytest.raises(InputError, match="not a COCO counts string"):
        rle_decode({"size": [10, 10], "counts": "o" * 200_000 + "0"})
    # a real 32-bit count still decodes: 100 background pixels
    from samr1.io import rle_encode

    m = np.zeros((10, 10), bool)
    assert np.array_equal(rle_decode(rle_encode(m)), m)
