"""samr1 serve: real FastAPI + uvicorn on a loopback free port, the shipped tiny-shapes SAM, real HTTP.

Every loop is bounded in count and time; each server is stopped at the end of its test or module.
"""

from __future__ import annotations

import concurrent.futures
import json
import struct
import threading
import zlib

import numpy as np
import pytest
from _markers import requires_serve

from samr1 import serve  # serve.create_app / serve.ServerConfig import FastAPI: only in @requires_serve tests
from samr1.answer import parse_answer
from samr1.client import SamR1Client, ServerError
from samr1.io import rle_decode
from samr1.serve import Limits, ServerThread
from samr1.serve.batcher import Batcher, QueueFull
from samr1.serve.protocol import encode_png, parse_box, parse_points
from samr1.shapes.scenes import make_scene


@pytest.fixture(scope="module")
def engine():
    from samr1.engine import SamEngine
    from samr1.sam import load_sam

    return SamEngine(load_sam("tiny-shapes"))


@pytest.fixture(scope="module")
def server(engine):
    cfg = serve.ServerConfig(limits=Limits(max_body_bytes=2 << 20, max_side=4096, max_pixels=4096 * 4096))
    with ServerThread(serve.create_app(engine, config=cfg)) as srv:
        yield srv


def _box(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


def _scene(seed: int, size=(None, None)):
    h, w = size
    sc = make_scene(seed, size=(h, w) if h else None, n_objects=3)
    return sc.image, sc.objects[0].mask


def _expected(engine, image, box, points=()):
    obj = {"bbox": box, "points": [list(p) for p in points]} if points else {"bbox": box}
    ans = parse_answer(f"<answer>{json.dumps(obj)}</answer>", image_size=image.shape[:2], model_size=image.shape[:2],
                       require_points=False)
    assert ans.ok
    return engine.segment(image, ans)


def _post_segment(url: str, files: list, fields: dict, token: str | None = None):
    """Raw multipart POST (not the client: these tests send malformed bodies on purpose)."""
    import http.client
    import urllib.parse

    from samr1.client import encode_multipart

    body, ctype = encode_multipart(fields, files)
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    headers = {"Content-Type": ctype}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        conn.request("POST", "/segment", body=body, headers=headers)
        r = conn.getresponse()
        return r.status, json.loads(r.read() or b"{}")
    finally:
        conn.close()


def _bomb_png(w: int, h: int) -> bytes:
    """A valid 1-bit PNG of w x h zeros: a few kB that would inflate to w*h pixels."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    row = b"\x00" * (1 + (w + 7) // 8)
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(h)) + comp.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


@requires_serve
def test_segment_returns_decodable_mask_of_the_image_size(server, engine):
    rng = np.random.default_rng()
    h, w = int(rng.integers(150, 260)), int(rng.integers(150, 260))  # odd, non-square sizes each run
    image, gt = _scene(int(rng.integers(1 << 30)), (h, w))
    box = _box(gt)
    pts = [[(box[0] + box[2]) / 2, (box[1] + box[3]) / 2]]
    status, out = _post_segment(server.url, [("image", "x.png", encode_png(image), "image/png")],
                                {"box": ",".join(map(str, box)), "points": json.dumps(pts)})
    assert status == 200, out
    mask = rle_decode(out["mask"])
    assert mask.shape == (h, w) and out["size"] == [h, w]
    # the same answer in process gives the same mask (the server adds transport, not arithmetic)
    np.testing.assert_array_equal(mask, _expected(engine, image, box, pts))
    assert out["box"] == pytest.approx(box) and out["ok"] is True
    assert out["timings"]["total_s"] >= out["timings"]["engine_s"] >= 0


@requires_serve
def test_bad_requests_are_4xx_with_a_message_and_the_server_keeps_serving(server, engine):
    image, gt = _scene(7, (200, 240))
    good_files = [("image", "x.png", encode_png(image), "image/png")]
    good_fields = {"box": ",".join(map(str, _box(gt)))}
    png = encode_png(image)
    bad = {
        "not an image": ([("image", "x.txt", b"hello, this is text", "text/plain")], good_fields, 400, "not an image"),
        "truncated png": ([("image", "x.png", png[: len(png) // 2], "image/png")], good_fields, 400, "truncated"),
        "missing image": ([], good_fields, 400, "image: missing"),
        "missing box": (good_files, {}, 400, "box: missing"),
        "bad box": (good_files, {"box": "1,2,3"}, 400, "box"),
        "query without policy": (good_files, {"query": "the red disc"}, 400, "no --model"),
        "oversize body": ([("image", "x.png", np.random.default_rng().bytes(3 << 20), "image/png")], good_fields, 413,
                          "limit"),
        "bomb png": ([("image", "x.png", _bomb_png(9000, 9000), "image/png")], good_fields, 400, "at most"),
        # SAM's resize would make the short side 0 px: a 400 naming the image, never a 500 or a silent mask
        "too thin for SAM": ([("image", "x.png", encode_png(np.zeros((1, 3000, 3), np.uint8)), "image/png")],
                             {"box": "0,0,100,1"}, 400, "image: a 1x3000 image"),
        "too tall for SAM": ([("image", "x.png", encode_png(np.zeros((2000, 1, 3), np.uint8)), "image/png")],
                             {"box": "0,0,1,100"}, 400, "image: a 2000x1 image"),
    }
    expected = rle_decode(_post_segment(server.url, good_files, good_fields)[1]["mask"])
    for name, (files, fields, status, words) in bad.items():
        got, out = _post_segment(server.url, files, fields)
        assert got == status, (name, got, out)
        assert words in out["error"], (name, out)
        # still serving, with the same answer as before
        ok, out2 = _post_segment(server.url, good_files, good_fields)
        assert ok == 200, (name, out2)
        np.testing.assert_array_equal(rle_decode(out2["mask"]), expected)


@requires_serve
def test_oversize_chunked_body_without_length_is_413(server):
    """A body streamed without Content-Length is counted as it arrives: the limit still holds."""
    import http.client
    import urllib.parse

    from samr1.client import encode_multipart

    body, ctype = encode_multipart({"box": "1,2,3,4"}, [("image", "x.png", np.random.default_rng().bytes(3 << 20),
                                                                 "image/png")])
    u = urllib.parse.urlsplit(server.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    conn.request("POST", "/segment", body=(body[i:i + 65536] for i in range(0, len(body), 65536)),
                 headers={"Content-Type": ctype}, encode_chunked=True)
    r = conn.getresponse()
    out = json.loads(r.read())
    conn.close()
    assert r.status == 413 and "limit" in out["error"]
    assert SamR1Client(server.url).health()["ok"] is True


@requires_serve
def test_non_multipart_and_bad_score_bodies_are_400(server):
    import http.client
    import urllib.parse

    u = urllib.parse.urlsplit(server.url)
    for path, body, ctype in [("/segment", b"{}", "application/json"), ("/score", b"{not json", "application/json"),
                              ("/score", b'{"items": []}', "application/json"),
                              ("/score", b'{"items": [{"image": "k", "completion": "x"}]}', "application/json"),
                              ("/score", b"[" * 100_000, "application/json"),  # deeper than the JSON parser goes
                              ("/score", b'{"items": ' + b"1" * 5000 + b"}", "application/json"),  # a 5000-digit int
                              # 40 bytes of RLE that would decode to 10^10 pixels: refused from its declared size
                              ("/score", json.dumps({"items": [{"image": None, "completion": "x", "mask": {
                                  "size": [100_000, 100_000], "counts": [10_000_000_000]}}]}).encode(),
                               "application/json")]:
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
        conn.request("POST", path, body=body, headers={"Content-Type": ctype})
        r = conn.getresponse()
        out = json.loads(r.read())
        conn.close()
        assert r.status == 400 and out["error"], (path, body, out)


@requires_serve
def test_32_concurrent_clients_each_get_their_own_answer(server, engine):
    rng = np.random.default_rng()
    reqs = []
    scenes = [_scene(int(s), (int(rng.integers(160, 240)), int(rng.integers(160, 240))))
              for s in rng.integers(1 << 30, size=4)]
    for i in range(32):
        image, _ = scenes[i % 4]
        h, w = image.shape[:2]
        x1, y1 = int(rng.integers(0, w // 2)), int(rng.integers(0, h // 2))
        box = [float(x1), float(y1), float(x1 + rng.integers(20, w // 2)), float(y1 + rng.integers(20, h // 2))]
        reqs.append((image, box))
    expected = [_expected(engine, im, b) for im, b in reqs]
    client = SamR1Client(server.url, timeout_s=60)
    before = server.app.state.service.batcher.stats["jobs"]
    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        futs = [pool.submit(client.segment, im, box=b) for im, b in reqs]
        outs = [f.result(timeout=120) for f in futs]
    assert server.app.state.service.batcher.stats["jobs"] - before == 32  # none lost
    for (im, b), out, exp in zip(reqs, outs, expected, strict=True):
        assert out["box"] == pytest.approx(b)
        m = rle_decode(out["mask"])
        assert m.shape == im.shape[:2]
        # batched decoding may move a logit across 0 by rounding: a mixed-up answer would differ wholesale
        assert (m != exp).mean() < 1e-3


@requires_serve
def test_full_queue_is_503_and_recovers(engine):
    cfg = serve.ServerConfig(max_queue=1)
    app = serve.create_app(engine, config=cfg)
    svc = app.state.service
    release = threading.Event()
    svc.batcher.handlers["block"] = lambda payloads: [release.wait(30) for _ in payloads]
    image, gt = _scene(3, (180, 200))
    files = [("image", "x.png", encode_png(image), "image/png")]
    fields = {"box": ",".join(map(str, _box(gt)))}
    with ServerThread(app) as srv:
        running = svc.batcher.submit("block", None)  # occupies the worker
        for _ in range(500):  # bounded: until the worker has taken it off the queue
            if svc.batcher.depth == 0 and running.running():
                break
            threading.Event().wait(0.01)
        queued = svc.batcher.submit("block", None)  # fills the queue (max 1)
        status, out = _post_segment(srv.url, files, fields)
        assert status == 503 and "queue is full" in out["error"]
        release.set()
        assert running.result(timeout=30) and queued.result(timeout=30)
        status, out = _post_segment(srv.url, files, fields)
        assert status == 200 and rle_decode(out["mask"]).shape == (180, 200)


@requires_serve
def test_bearer_token(engine):
    image, gt = _scene(5, (160, 170))
    files = [("image", "x.png", encode_png(image), "image/png")]
    fields = {"box": ",".join(map(str, _box(gt)))}
    with ServerThread(serve.create_app(engine, config=serve.ServerConfig(token="s3cret"))) as srv:
        assert _post_segment(srv.url, files, fields)[0] == 401
        assert _post_segment(srv.url, files, fields, token="wrong")[0] == 401
        assert _post_segment(srv.url, files, fields, token="s3cret")[0] == 200
        assert SamR1Client(srv.url).health()["ok"] is True  # the health check needs no token
        with pytest.raises(ServerError) as err:
            SamR1Client(srv.url).segment(image, box=_box(gt))
        assert err.value.status == 401


def test_batcher_batches_by_kind_and_bounds_its_queue():
    gate = threading.Event()
    seen: list[list] = []

    def slow(payloads):
        gate.wait(10)
        seen.append(list(payloads))
        return [p * 2 for p in payloads]

    b = Batcher({"x": slow, "bad": lambda p: 1 / 0}, max_queue=4, max_batch=8, max_wait_s=0.0)
    try:
        first = b.submit("x", 1)
        for _ in range(500):
            if b.depth == 0 and first.running():
                break
            threading.Event().wait(0.01)
        rest = [b.submit("x", i) for i in range(2, 6)]
        with pytest.raises(QueueFull):
            b.submit("x", 99)
        gate.set()
        assert [f.result(timeout=10) for f in [first, *rest]] == [2, 4, 6, 8, 10]
        assert seen == [[1], [2, 3, 4, 5]]  # the four waiting jobs ran as one call
        with pytest.raises(ZeroDivisionError):
            b.submit("bad", 0).result(timeout=10)
        with pytest.raises(ValueError, match="no handler"):
            b.submit("nope", 0)
    finally:
        gate.set()
        b.close()
    with pytest.raises(QueueFull, match="shutting down"):  # after close nothing is queued to wait forever
        b.submit("x", 7)


def test_protocol_parsers():
    assert parse_box("1,2,3,4") == [1, 2, 3, 4] and parse_box("[1, 2.5, 3, 4]") == [1, 2.5, 3, 4]
    assert parse_points("1,2;3,4") == [[1, 2], [3, 4]] == parse_points("[[1,2],[3,4]]")
    from samr1.io import InputError

    for bad in ("1,2,3", "a,b,c,d", "1,2,3,nan", "[1,2,3,true]"):
        with pytest.raises(InputError, match="box"):
            parse_box(bad)
    with pytest.raises(InputError, match="pairs"):
        parse_points("1,2,3")


def test_png_round_trip_is_lossless():
    from samr1.serve.protocol import decode_upload

    rng = np.random.default_rng()
    img = rng.integers(0, 256, (int(rng.integers(1, 40)), int(rng.integers(1, 40)), 3), dtype=np.uint8)
    np.testing.assert_array_equal(decode_upload(encode_png(img), field="image", limits=Limits()), img)
    m = rng.random((13, 29)) > 0.5
    np.testing.assert_array_equal(decode_upload(encode_png(m), field="mask", limits=Limits(), kind="mask"), m)
    with pytest.raises(Exception, match="empty"):
        decode_upload(b"", field="image", limits=Limits())


def test_cli_serve_refuses_a_public_address_without_a_token(tmp_path, capsys):
    from samr1.cli import main

    assert main(["serve", "--host", "0.0.0.0", "--port", "0"]) == 2
    assert "token" in capsys.readouterr().err
    empty = tmp_path / "token.txt"
    empty.write_text("\n")
    assert main(["serve", "--token-file", str(empty)]) == 3  # an unreadable or empty input file: exit 3
    assert main(["serve", "--port", "70000"]) == 2


def test_uploads_are_read_like_every_other_input(tmp_path):
    """An upload goes through samr1.io's loaders: EXIF orientation applied, 16-bit scaled (not clipped)."""
    import io as _io

    from PIL import Image

    from samr1.io import load_image
    from samr1.serve.protocol import decode_upload

    rng = np.random.default_rng()
    img = rng.integers(0, 256, size=(7, 11, 3), dtype=np.uint8)
    pil = Image.fromarray(img)
    exif = pil.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    buf = _io.BytesIO()
    pil.save(buf, format="JPEG", exif=exif.tobytes(), quality=95)
    path = tmp_path / "rot.jpg"
    path.write_bytes(buf.getvalue())
    got = decode_upload(buf.getvalue(), field="image", limits=Limits())
    assert got.shape[:2] == (11, 7)  # rotated, as on screen
    np.testing.assert_array_equal(got, load_image(str(path)))

    ramp = (np.arange(6 * 9, dtype=np.uint16).reshape(6, 9) * 1200).astype(np.uint16)
    buf = _io.BytesIO()
    Image.fromarray(ramp).save(buf, format="PNG")
    got = decode_upload(buf.getvalue(), field="image", limits=Limits())
    expected = np.round(ramp.astype(np.float64) * 255 / 65535).astype(np.uint8)
    np.testing.assert_array_equal(got[..., 0], expected)

