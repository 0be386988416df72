"""Attack suite, server: hostile requests against a real ``samr1 serve`` app (uvicorn on loopback, the shipped
tiny-shapes SAM). Each class of attack is a parametrised set of inputs, not one example:

- every numeric spelling of an inline RLE's ``size`` meets the same caps (one reading: ``samr1.io.rle_size``,
  which the decoder itself uses);
- nesting of any depth or kind in ``/segment``'s ``box`` / ``points`` is a 400 naming the field;
- half-sent requests (no bytes, half a head, half a body, a trickled body) are closed with 408 in bounded time;
- an upload the client abandons is one log line, never a traceback;
- ``/score`` key lookups are linear in the request's items;
- the upload and embedding caches stay within their caps, and the CLI's flags set them.

Every loop is bounded in count and time; servers run on 127.0.0.1 only and are stopped by their own object or
process id.
"""

from __future__ import annotations

import json
import logging
import socket
import time
import urllib.request

import numpy as np
import pytest
from _markers import requires_serve
from hypothesis import given, settings
from hypothesis import strategies as st

from samr1.io import InputError, max_image_pixels, rle_decode, rle_encode, rle_size

pytestmark = requires_serve

TOKEN = "attack-token"
HEAD_S = 0.6  # the test server's request-head deadline
BODY_S = 0.8  # and its body deadline


@pytest.fixture(scope="module")
def engine():
    from samr1.engine import SamEngine
    from samr1.sam import load_sam

    return SamEngine(load_sam("tiny-shapes"), cache_bytes=2 << 20)


@pytest.fixture(scope="module")
def server(engine):
    from samr1.serve import Limits, ServerConfig, ServerThread, create_app

    cfg = ServerConfig(limits=Limits(max_body_bytes=2 << 20, max_side=1000, max_pixels=1_000_000), token=TOKEN,
                       header_timeout_s=HEAD_S, body_timeout_s=BODY_S, blob_bytes=96 << 10)
    with ServerThread(create_app(engine, config=cfg)) as srv:
        yield srv


def _addr(url: str) -> tuple[str, int]:
    host, port = url.rsplit("//", 1)[1].rsplit(":", 1)
    return host, int(port)


def _request(url: str, path: str, body: bytes, ctype: str, token: str | None = TOKEN) -> tuple[int, dict]:
    import http.client

    host, port = _addr(url)
    conn = http.client.HTTPConnection(host, port, timeout=60)
    headers = {"Content-Type": ctype}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        conn.request("POST", path, body=body, headers=headers)
        r = conn.getresponse()
        return r.status, json.loads(r.read() or b"{}")
    finally:
        conn.close()


# ------------------------------------------------------------------------------------------- RLE sizes

SIZE_VALUES = st.one_of(
    st.integers(-3, 60), st.integers(10**6, 10**12), st.floats(allow_nan=True, allow_infinity=True),
    st.integers(1, 60).map(float), st.booleans(), st.text(max_size=4), st.none(),
    st.fractions(min_value=0, max_value=60), st.integers(1, 60).map(np.int32), st.integers(1, 60).map(np.float64),
    st.lists(st.integers(1, 5), max_size=2))
SIZES = st.one_of(st.lists(SIZE_VALUES, min_size=0, max_size=3), st.tuples(SIZE_VALUES, SIZE_VALUES),
                  SIZE_VALUES, st.dictionaries(st.text(max_size=2), st.integers(), max_size=2))


@settings(max_examples=300, deadline=None)
@given(size=SIZES)
def test_the_decoder_reads_every_size_form_as_rle_size_does(size):
    """The server caps sizes as rle_size reads them; this holds only if the decoder reads them the same way:
    whatever rle_size refuses the decoder refuses (naming 'size'), whatever it accepts decodes to that H x W."""
    try:
        h, w = rle_size(size)
    except InputError as exc:
        assert "'size'" in str(exc)
        with pytest.raises(InputError, match="'size'"):
            rle_decode({"size": size, "counts": [1]})
        return
    assert (type(h), type(w)) == (int, int) and h >= 1 and w >= 1
    if h * w > max_image_pixels():
        with pytest.raises(InputError, match="over the limit"):
            rle_decode({"size": size, "counts": [h * w]})
    else:
        assert rle_decode({"size": size, "counts": [h * w]}).shape == (h, w)


# How JSON may spell the number 1000 (and 1001): every one of them is read as that size by the decoder.
SPELLINGS = ["{n}", "{n}.0", "{n}.000", "{n}e0", "{n}E0", "{tenth}e1", "{tenfold}e-1", "{n}.0e+0"]


def _spell(template: str, n: int) -> str:
    return template.format(n=n, tenth=f"{n / 10:g}", tenfold=n * 10)


def _score_json(masks_json: list[str], image_key: str | None = None) -> bytes:
    comp = '<think>t</think><answer>{"bbox": [1, 1, 9, 9], "points_1": [5, 5]}</answer>'
    items = ",".join(f'{{"image": {json.dumps(image_key)}, "completion": {json.dumps(comp)}, "mask": {m}}}'
                     for m in masks_json)
    return f'{{"items": [{items}]}}'.encode()


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_every_spelling_of_an_rle_size_meets_the_same_caps(server, spelling):
    """max_side 1000 and max_pixels 1e6 per mask, 2e6 declared pixels per request, whatever the spelling."""
    assert rle_size(json.loads(f"[{_spell(spelling, 1000)}, {_spell(spelling, 1001)}]")) == (1000, 1001)

    def rle(h: int, w: int, k: int) -> str:  # distinct masks (k) declaring h x w pixels
        return f'{{"size": [{_spell(spelling, h)}, {_spell(spelling, w)}], "counts": [{k}, {h * w - k}]}}'

    status, body = _request(server.url, "/score", _score_json([rle(1000, 1001, 0)]), "application/json")
    assert status == 400 and "items[0].mask" in body["error"] and "1000x1001" in body["error"], body
    status, body = _request(server.url, "/score", _score_json([rle(1000, 1000, k) for k in range(3)]),
                            "application/json")
    assert status == 400 and "items[2].mask" in body["error"] and "in all" in body["error"], body
    # 60 distinct masks of the cap each (the old bypass: 30x the cap, ~1 byte per declared pixel decoded)
    status, body = _request(server.url, "/score", _score_json([rle(1000, 1000, k) for k in range(60)]),
                            "application/json")
    assert status == 400 and "in all" in body["error"], body


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_a_size_in_any_spelling_scores_as_the_integer_form(server, spelling):
    """Below the caps, the spelling changes nothing: the same mask gives the same rewards."""
    from samr1.client import SamR1Client
    from samr1.shapes.scenes import make_scene

    scene = make_scene(3, size=(24, 32), n_objects=2)
    mask = scene.objects[0].mask
    client = SamR1Client(server.url, token=TOKEN)
    ys, xs = np.nonzero(mask)
    comp = (f'<think>t</think><answer>{{"bbox": [{xs.min()}, {ys.min()}, {xs.max() + 1}, {ys.max() + 1}], '
            f'"points_1": [{int(xs.mean())}, {int(ys.mean())}]}}</answer>')
    want = client.score([comp], [scene.image], [mask])  # uploads the image; the mask as a key
    from samr1.serve.protocol import image_content_key

    counts = rle_encode(mask, compressed=False)["counts"]
    spelled = f'{{"size": [{_spell(spelling, 24)}, {_spell(spelling, 32)}], "counts": {json.dumps(counts)}}}'
    body = f'{{"items": [{{"image": "{image_content_key(scene.image)}", "completion": {json.dumps(comp)}, ' \
           f'"mask": {spelled}}}]}}'
    status, got = _request(server.url, "/score", body.encode(), "application/json")
    assert status == 200 and got["rewards"] == pytest.approx(want["rewards"])


def test_instance_mask_lists_meet_the_same_caps_and_name_the_bad_instance(server):
    """A row's mask may be a list of instance masks (keys or inline RLEs): each inline one counts against the
    request's pixel budget, the list's length is capped, and a null or non-mask instance is a 400 naming it."""
    from samr1.serve.app import MAX_INSTANCES

    def rle(h: int, w: int, k: int) -> str:
        return f'{{"size": [{h}, {w}], "counts": [{k}, {h * w - k}]}}'

    status, body = _request(server.url, "/score", _score_json(["[" + ", ".join(rle(1000, 1000, k) for k in range(3))
                                                                + "]"]), "application/json")
    assert status == 400 and "items[0].mask[2]" in body["error"] and "in all" in body["error"], body
    long = "[" + ", ".join([rle(4, 4, 1)] * (MAX_INSTANCES + 1)) + "]"
    status, body = _request(server.url, "/score", _score_json([long]), "application/json")
    assert status == 400 and f"at most {MAX_INSTANCES}" in body["error"], body
    for bad in ("null", "3", '"not-a-key"', "[[1, 2]]"):
        status, body = _request(server.url, "/score", _score_json([f"[{rle(4, 4, 1)}, {bad}]"]), "application/json")
        assert status == 400 and body["error"].startswith("items[0].mask[1]"), (bad, body)
    # within the caps a list of inline RLEs scores (200, one reward for the row)
    status, body = _request(server.url, "/score", _score_json([f"[{rle(4, 4, 1)}, {rle(4, 4, 2)}]"]),
                            "application/json")
    assert status == 200 and len(body["rewards"]) == 1, body


# ------------------------------------------------------------------------------------------- nesting

NESTED = {
    "lists-5000-deep": "[" * 5000 + "]" * 5000,
    "objects-5000-deep": '{"a":' * 5000 + "1" + "}" * 5000,
    "mixed-3000-deep": '[{"a":' * 3000 + "1" + "}]" * 3000,
    "unclosed-100000": "[" * 100_000,
    "5000-digit-int": "[" + "7" * 5000 + ", 1, 2, 3]",
    "deep-but-parseable": "[" * 40 + "1, 2" + "]" * 40,
    "point-lists-in-lists": "[[[[1, 2]]], [[3, 4]]]",
    "dict-list": '[{"x": 1}, {"y": 2}, 3, 4]',
}


@pytest.mark.parametrize("field", ["box", "points"])
@pytest.mark.parametrize("payload", list(NESTED.values()), ids=list(NESTED))
def test_nested_box_or_points_is_a_400_naming_the_field(server, field, payload):
    from samr1.client import encode_multipart
    from samr1.serve.protocol import encode_png

    fields = {"box": "2,2,10,10", field: payload}
    body, ctype = encode_multipart(fields, [("image", "i.png", encode_png(np.zeros((16, 16, 3), np.uint8)),
                                            "image/png")])
    status, got = _request(server.url, "/segment", body, ctype)
    assert status == 400 and got["error"].startswith(field), (status, got)


def test_deeply_nested_inline_rle_fields_never_fail_the_server(server):
    """Nesting inside an inline mask (size, counts) that the JSON parser accepts is a bad mask (reward 0)."""
    deep = "[" * 500 + "1" + "]" * 500
    for mask in (f'{{"size": {deep}, "counts": [1]}}', f'{{"size": [4, 4], "counts": {deep}}}'):
        status, got = _request(server.url, "/score", _score_json([mask]), "application/json")
        assert status == 200 and len(got["rewards"]) == 1, (status, got)
    status, got = _request(server.url, "/score", ('{"items": ' + "[" * 100_000).encode(), "application/json")
    assert status == 400 and "request" in got["error"]


# ------------------------------------------------------------------------------------------- slow clients


def _wait_closed(sock: socket.socket, limit_s: float) -> tuple[float, bytes]:
    """Read until the server closes (or ``limit_s`` passes); returns (seconds waited, bytes read)."""
    t0 = time.monotonic()
    got = b""
    sock.settimeout(0.2)
    while time.monotonic() - t0 < limit_s:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            break
        if not chunk:
            break
        got += chunk
    return time.monotonic() - t0, got


def _read_response(sock: socket.socket) -> bytes:
    """Read one whole HTTP/1.1 response (head and its Content-Length body): a single recv may return the
    head alone, and the rest would then be mistaken for the next response."""
    got = b""
    while b"\r\n\r\n" not in got:
        chunk = sock.recv(65536)
        assert chunk, f"the server closed before the response head ended: {got[:200]!r}"
        got += chunk
    head, _, body = got.partition(b"\r\n\r\n")
    length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), None)
    assert length is not None, f"a response without Content-Length: {head[:200]!r}"
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "the server closed before the response body ended"
        body += chunk
    assert len(body) == length, "more bytes than the response's Content-Length"
    return head + b"\r\n\r\n" + body


def _partial(url: str, data: bytes) -> socket.socket:
    sock = socket.create_connection(_addr(url), timeout=5)
    if data:
        sock.sendall(data)
    return sock


AUTH = f"Authorization: Bearer {TOKEN}\r\n".encode()
HALF_REQUESTS = {
    "nothing-sent": (b"", HEAD_S),
    "half-request-line": (b"POST /sco", HEAD_S),
    "half-a-header": (b"POST /score HTTP/1.1\r\nHost: x\r\nX-a: ", HEAD_S),
    "headers-never-end": (b"POST /score HTTP/1.1\r\nHost: x\r\n" + AUTH + b"Content-Type: application/json\r\n", HEAD_S),
    "half-a-body": (b"POST /score HTTP/1.1\r\nHost: x\r\n" + AUTH + b"Content-Type: application/json\r\n"
                    b"Content-Length: 1000000\r\n\r\n{\"items\": [", BODY_S),
    "half-a-multipart-body": (b"POST /segment HTTP/1.1\r\nHost: x\r\n" + AUTH + b"Content-Type: multipart/form-data; "
                              b"boundary=xx\r\nContent-Length: 500000\r\n\r\n--xx\r\nContent-Disposition: form-data;",
                              BODY_S),
}


@pytest.mark.parametrize("data,deadline", list(HALF_REQUESTS.values()), ids=list(HALF_REQUESTS))
def test_half_sent_requests_are_closed_with_408(server, data, deadline):
    sock = _partial(server.url, data)
    try:
        waited, got = _wait_closed(sock, deadline + 5)
    finally:
        sock.close()
    assert waited < deadline + 4, f"connection still open after {waited:.1f} s"
    assert deadline * 0.8 <= waited, f"closed after {waited:.2f} s, before the {deadline} s deadline"
    assert got.startswith(b"HTTP/1.1 408"), got[:200]


def test_a_trickled_body_meets_the_whole_body_deadline(server):
    """One byte every 0.2 s keeps any per-read timeout happy; the deadline is for the whole body."""
    sock = _partial(server.url, b"POST /score HTTP/1.1\r\nHost: x\r\n" + AUTH +
                    b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n")
    t0 = time.monotonic()
    got = b""
    try:
        sock.settimeout(0.2)
        while time.monotonic() - t0 < BODY_S + 5:
            try:
                sock.sendall(b" ")
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
            if not chunk:
                break
            got += chunk
    finally:
        sock.close()
    assert time.monotonic() - t0 < BODY_S + 4 and got.startswith(b"HTTP/1.1 408"), got[:200]


def test_a_kept_alive_connection_that_starts_a_second_request_and_stalls_is_closed(server):
    sock = _partial(server.url, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    try:
        sock.settimeout(5)
        first = _read_response(sock)
        assert first.startswith(b"HTTP/1.1 200")
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-")
        waited, got = _wait_closed(sock, HEAD_S + 5)
    finally:
        sock.close()
    assert waited < HEAD_S + 4 and got.startswith(b"HTTP/1.1 408"), got[:200]


def test_many_stalled_connections_do_not_stop_the_server(server):
    socks = [_partial(server.url, b"POST /score HTTP/1.1\r\nHost: x\r\nX-a: ") for _ in range(20)]
    try:
        t0 = time.monotonic()
        with urllib.request.urlopen(server.url + "/healthz", timeout=10) as r:
            assert r.status == 200
        assert time.monotonic() - t0 < 5
    finally:
        for s in socks:
            s.close()


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


ABORTED = {
    "json-score": b"POST /score HTTP/1.1\r\nHost: x\r\n" + AUTH +
                  b"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{\"items\": [",
    "multipart-segment": b"POST /segment HTTP/1.1\r\nHost: x\r\n" + AUTH + b"Content-Type: multipart/form-data; "
                         b"boundary=xx\r\nContent-Length: 100000\r\n\r\n--xx\r\nContent-Disposition: form-data; "
                         b"name=\"image\"; filename=\"i.png\"\r\n\r\n\x89PNG",
    "multipart-score": b"POST /score HTTP/1.1\r\nHost: x\r\n" + AUTH + b"Content-Type: multipart/form-data; "
                       b"boundary=xx\r\nContent-Length: 100000\r\n\r\n--xx\r\nContent-Disposition: form-data; "
                       b"name=\"request\"\r\n\r\n{\"items\"",
}


@pytest.mark.parametrize("data", list(ABORTED.values()), ids=list(ABORTED))
def test_an_abandoned_upload_is_one_log_line_not_a_traceback(server, data):
    records = _Records()
    loggers = [logging.getLogger(n) for n in ("samr1.serve", "uvicorn.error", "uvicorn")]
    for lg in loggers:
        lg.addHandler(records)
    try:
        sock = _partial(server.url, data)
        time.sleep(0.1)  # the app is reading the body
        sock.close()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not any("disconnected" in r.getMessage() for r in records.records):
            time.sleep(0.05)
    finally:
        for lg in loggers:
            lg.removeHandler(records)
    said = [r for r in records.records if "disconnected" in r.getMessage()]
    assert len(said) == 1 and "\n" not in said[0].getMessage() and said[0].exc_info is None, \
        [r.getMessage() for r in records.records]
    assert not [r for r in records.records if r.exc_info or "Exception in ASGI" in r.getMessage()]


# ------------------------------------------------------------------------------------------- /score cost


class _CountingKey(str):
    """A key that counts comparisons: a list scan compares with every element, a dict or set almost none."""

    compares = 0

    def __eq__(self, other: object) -> bool:
        type(self).compares += 1
        return str.__eq__(self, other)

    __hash__ = str.__hash__


@pytest.mark.parametrize("n", [256, 2048])
def test_score_key_lookup_is_linear_in_the_items(engine, n):
    from samr1.serve import ServerConfig
    from samr1.serve.app import SamR1Service

    service = SamR1Service(engine, config=ServerConfig())
    try:
        items = [{"image": _CountingKey(f"b2:8x8x3:{i:032x}"), "completion": "x",
                  "mask": _CountingKey(f"m:8x8:{i:032x}")} for i in range(n)]
        items += items[: n // 2]  # repeats: each key is still listed once
        _CountingKey.compares = 0
        _, _, _, _, missing = service.resolve_score(items)
        assert missing["images"] == [it["image"] for it in items[:n]]
        assert missing["masks"] == [it["mask"] for it in items[:n]]
        assert _CountingKey.compares <= 4 * n, f"{_CountingKey.compares} key comparisons for {n} items"
    finally:
        service.close()


# ------------------------------------------------------------------------------------------- memory caps


def test_upload_and_embedding_caches_stay_within_their_caps(server, engine):
    """16 requests, each with a new image and mask: both LRUs evict and never hold more than their cap."""
    from samr1.client import SamR1Client

    client = SamR1Client(server.url, token=TOKEN)
    rng = np.random.default_rng()
    service = server.app.state.service
    blob_cap = service.config.blob_bytes
    cache_cap = engine.config.cache_bytes
    for _ in range(16):
        img = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
        mask = rng.random((48, 64)) < 0.3
        client.score(['<answer>{"bbox": [10, 10, 90, 80], "points_1": [40, 40]}</answer>'], [img], [mask])
        assert service.blobs.bytes_held <= blob_cap
        assert engine.cache.stats["bytes_held"] <= cache_cap
    assert service.blobs.stats["evictions"] > 0 and engine.cache.stats["evictions"] > 0


def test_serve_cli_flags_set_the_caps_and_deadlines():
    """The flags of ``samr1 serve`` reach the app (and, through uvicorn_options, the protocol's deadline)."""
    from samr1.cli import build_parser
    from samr1.cli.serve import build_app
    from samr1.serve import ServerThread

    args = build_parser().parse_args(["serve", "--sam", "tiny-shapes", "--device", "cpu", "--blob-mb", "3",
                                      "--cache-mb", "5", "--header-timeout", "0.5", "--body-timeout", "1.5"])
    app, _, _ = build_app(args)
    with ServerThread(app) as srv:
        with urllib.request.urlopen(srv.url + "/healthz", timeout=10) as r:
            lim = json.loads(r.read())["limits"]
        assert (lim["blob_bytes"], lim["cache_bytes"]) == (3 << 20, 5 << 20)
        assert (lim["header_timeout_s"], lim["body_timeout_s"]) == (0.5, 1.5)
        sock = socket.create_connection(_addr(srv.url), timeout=5)
        try:
            waited, got = _wait_closed(sock, 6)
        finally:
            sock.close()
        assert waited < 4 and got.startswith(b"HTTP/1.1 408")


@pytest.mark.parametrize("flag,value", [("--blob-mb", "-1"), ("--cache-mb", "nan"), ("--header-timeout", "0"),
                                        ("--body-timeout", "inf"), ("--header-timeout", "-3")])
def test_serve_cli_refuses_bad_caps_and_deadlines(flag, value, capsys):
    from samr1.cli import main

    assert main(["serve", "--sam", "tiny-shapes", "--device", "cpu", f"{flag}={value}"]) == 2
    assert flag in capsys.readouterr().err
