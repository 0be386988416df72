"""The HTTP service: ``GET /healthz``, ``POST /segment``, ``POST /score`` (FastAPI; run it with uvicorn), and
the segmentation page at ``GET /`` (plain HTML + script from :mod:`samr1.view`, under ``GET /static/<name>``).

- ``POST /segment`` (multipart/form-data): ``image`` (a file) and either ``box`` (``x1,y1,x2,y2`` in
  original pixels) with optional ``points`` (``x,y;x,y`` or ``[[x, y], ...]``) for SAM alone, or ``query``
  (text) when the server runs a policy. Answers JSON: ``ok``, ``answer`` (box/points, original pixels),
  ``think``, ``text`` (the policy's raw completion), ``mask`` (COCO RLE, :func:`samr1.io.rle_decode`
  reads it), ``box``, ``size`` [H, W], ``timings`` (seconds). A policy answer that does not parse is a
  200 with ``ok: false`` and ``reason`` (the request was fine; the model failed).
- ``POST /score``: the reward as a service. A JSON body ``{"items": [{"image": KEY, "completion": TEXT,
  "mask": KEY or RLE dict or a list of those, "ignore": KEY or RLE dict (optional)}, ...]}`` (a list: the
  instance masks of a multi-object target, at most :data:`MAX_INSTANCES`; keys from
  :mod:`samr1.serve.protocol`; ``ignore``: ReasonSeg's ignore region, whose pixels count in neither I nor U,
  as in the in-process reward). When the server does not
  hold some keys it answers ``{"missing": {"images": [...], "masks": [...]}}`` and scores nothing; the
  client repeats the request as multipart: a ``request`` field with the same JSON plus the missing images
  and masks as PNG ``image`` / ``mask`` file parts. Otherwise it answers ``rewards`` (summed per item) and
  ``components`` (name -> values per item).

- ``GET /``: a page for people: upload an image, ask a question (or draw a box and points when the server runs
  SAM alone), see the reasoning, the answer, the mask and the timings. It calls ``/segment`` like any client,
  with the bearer token the user types (kept in the tab's session storage); the page itself needs no token.

Errors are JSON ``{"error": message}``: 400 for malformed input (the message names the field), 401 for a
missing/wrong bearer token, 408 for a request whose head or body does not arrive in time
(``header_timeout_s``, ``body_timeout_s``; the connection is closed), 413 for a body over the limit, 503
when the queue is full (with Retry-After). A client that disconnects before its body is complete costs one
log line (``samr1.serve`` logger), not a traceback.
All model work runs on one worker thread (:class:`samr1.serve.batcher.Batcher`) that batches concurrent
requests of the same kind into one call.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

try:
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, Response
    from starlette.concurrency import run_in_threadpool
    from starlette.datastructures import UploadFile
    from starlette.exceptions import HTTPException as StarletteHTTPException
    from starlette.requests import ClientDisconnect
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError("samr1 serve needs FastAPI, uvicorn and python-multipart: pip install 'samr1[serve]'") from exc

from samr1.io import InputError, rle_size
from samr1.serve.batcher import Batcher, QueueFull
from samr1.serve.blobs import BlobStore
from samr1.serve.protocol import (
    MASK_KEY_PREFIX,
    Limits,
    decode_upload,
    image_content_key,
    mask_content_key,
    parse_box,
    parse_points,
)
from samr1.view import static_file

__all__ = ["ServerConfig", "SamR1Service", "create_app"]

_log = logging.getLogger("samr1.serve")
MAX_INSTANCES = 256
"""Most instance masks one ``/score`` row's mask list may hold (VisionReasoner's targets hold a few)."""


@dataclass
class ServerConfig:
    """Server settings.

    Attributes:
        limits: request size and image bounds (:class:`samr1.serve.protocol.Limits`).
        token: when set, every endpoint but ``/healthz`` needs ``Authorization: Bearer <token>``.
        max_queue: jobs waiting for the models at most; beyond it requests get 503.
        max_batch: most requests of one kind run as one model call.
        max_wait_s: how long the worker waits to fill a batch after its first request.
        blob_bytes: memory budget of uploaded images and masks held for ``/score`` (an LRU; an evicted key is
            only uploaded again). The engine's embedding cache has its own (``SamEngineConfig.cache_bytes``).
        request_timeout_s: a request whose job has not finished by then gets 504.
        header_timeout_s: a request's head (request line and headers) must arrive within this many seconds of
            the connection opening or of the first byte after the previous response, else 408 and the
            connection is closed (:mod:`samr1.serve.timeouts`).
        body_timeout_s: a request's whole body must arrive within this many seconds of the app starting to
            read it, else 408 and the connection is closed (a slow or stalled upload never holds a
            connection longer).
    """

    limits: Limits = field(default_factory=Limits)
    token: str | None = None
    max_queue: int = 256
    max_batch: int = 64
    max_wait_s: float = 0.002
    blob_bytes: int = 1 << 30
    request_timeout_s: float = 600.0
    header_timeout_s: float = 10.0
    body_timeout_s: float = 60.0

    def __post_init__(self) -> None:
        if isinstance(self.blob_bytes, bool) or not isinstance(self.blob_bytes, int) or self.blob_bytes < 0:
            raise ValueError(f"ServerConfig.blob_bytes must be an int >= 0, got {self.blob_bytes!r}")
        for name in ("request_timeout_s", "header_timeout_s", "body_timeout_s"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < float("inf"):
                raise ValueError(f"ServerConfig.{name} must be a positive, finite number of seconds, got {v!r}")


class SamR1Service:
    """The models and state behind the app, without HTTP: engine, optional reward and policy, blobs, batcher.

    Args:
        engine: a :class:`samr1.engine.SamEngine` (loaded once, shared by every request).
        reward: a :class:`samr1.rewards.SamR1Reward` over ``engine`` for ``/score`` (default: SAM-R1's
            think + answer + tiered IoU).
        segmenter: a :class:`samr1.pipeline.ReasoningSegmenter` for ``/segment`` with ``query``; None
            serves SAM-only requests.
    """

    def __init__(self, engine: Any, *, reward: Any = None, segmenter: Any = None, config: ServerConfig | None = None):
        from samr1.rewards import SamR1Reward

        self.engine = engine
        self.reward = reward if reward is not None else SamR1Reward(engine)
        self.segmenter = segmenter
        self.config = config or ServerConfig()
        self.blobs = BlobStore(self.config.blob_bytes)
        self.counters = {"segment_requests": 0, "score_requests": 0, "images_uploaded": 0, "masks_uploaded": 0,
                         "score_items": 0}
        handlers = {"sam": self._run_sam, "score": self._run_score}
        if segmenter is not None:
            handlers["query"] = self._run_query
        self.batcher = Batcher(handlers, max_queue=self.config.max_queue, max_batch=self.config.max_batch,
                               max_wait_s=self.config.max_wait_s)
        # TRL-style component functions: they share one parse and one engine call per batch
        self._components = self.reward.functions()

    def close(self) -> None:
        self.batcher.close()

    # ------------------------------------------------------------------ worker-side handlers (one thread)
    def _run_sam(self, jobs: list[tuple[np.ndarray, Any]]) -> list[Any]:
        """SAM-only segmentation of many requests: one encoder call for the distinct images, one decode."""
        t0 = time.perf_counter()
        # one bad request must not fail its neighbours: the images SAM refuses (e.g. 1 x 3000) are found first
        # and answered with their own error; the others still go in one call
        masks: list[Any] = list(self.engine.image_errors([j[0] for j in jobs]))
        good = [i for i, e in enumerate(masks) if e is None]
        try:
            for i, m in zip(good, self.engine.segment_batch([jobs[i][0] for i in good], [jobs[i][1] for i in good])
                            if good else [], strict=True):
                masks[i] = m
        except InputError:  # a refusal image_errors did not foresee: each request on its own, with its error
            for i in good:
                try:
                    masks[i] = self.engine.segment(*jobs[i])
                except InputError as exc:
                    masks[i] = exc
        dt = time.perf_counter() - t0
        return [(m, {"engine_s": dt, "batch_size": len(jobs)}) for m in masks]

    def _run_query(self, jobs: list[tuple[np.ndarray, str]]) -> list[Any]:
        return self.segmenter.segment_batch([j[0] for j in jobs], [j[1] for j in jobs])

    def _run_score(self, jobs: list[tuple[list, list, list, list]]) -> list[dict[str, list[float]]]:
        """Score every row of every request in one reward call (one engine call), then split per request."""
        completions: list[Any] = []
        images: list[Any] = []
        masks: list[Any] = []
        ignores: list[Any] = []
        for c, i, m, x in jobs:
            completions.extend(c)
            images.extend(i)
            masks.extend(m)
            ignores.extend(x)
        cols = {self.reward.image_key: images, self.reward.mask_key: masks}  # the reward's own column names
        if any(x is not None for x in ignores):
            cols[self.reward.ignore_key] = ignores
        comps = {f.__name__: [float(v) for v in f(prompts=None, completions=completions, **cols)]
                 for f in self._components}
        out = []
        start = 0
        for c, *_ in jobs:
            stop = start + len(c)
            out.append({k: v[start:stop] for k, v in comps.items()})
            start = stop
        return out

    # ------------------------------------------------------------------ request-side helpers
    def submit(self, kind: str, payload: Any):
        return self.batcher.submit(kind, payload)

    def health(self) -> dict[str, Any]:
        eng = {k: v for k, v in getattr(self.engine, "stats", {}).items() if isinstance(v, (int, float, str))}
        cfg, lim = self.config, self.config.limits
        limits = {"max_body_bytes": lim.max_body_bytes, "max_side": lim.max_side, "max_pixels": lim.max_pixels,
                  "max_items": lim.max_items, "max_files": lim.max_files, "blob_bytes": cfg.blob_bytes,
                  "cache_bytes": getattr(getattr(self.engine, "config", None), "cache_bytes", None),
                  "header_timeout_s": cfg.header_timeout_s, "body_timeout_s": cfg.body_timeout_s,
                  "request_timeout_s": cfg.request_timeout_s, "max_queue": cfg.max_queue}
        return {"ok": True, "policy": self.segmenter is not None, "queue": self.batcher.depth,
                "batcher": dict(self.batcher.stats), "blobs": {**self.blobs.stats, "entries": len(self.blobs),
                                                               "bytes": self.blobs.bytes_held},
                "counters": dict(self.counters), "engine": eng, "token_required": self.config.token is not None,
                "limits": limits}

    def store_upload(self, data: bytes, kind: str, field: str) -> str:
        """Decode one uploaded PNG, key it by its content and keep it; returns the key."""
        arr = decode_upload(data, field=field, limits=self.config.limits, kind=kind)
        key = image_content_key(arr) if kind == "image" else mask_content_key(arr)
        self.blobs.put(key, arr)
        return key  # the caller (the event loop thread) counts it: counters are not shared across threads

    def resolve_score(self, items: Any) -> tuple[list, list, list, list, dict[str, list[str]]]:
        """Validate ``/score`` items and look their keys up; returns (completions, images, masks, ignores,
        missing). An ignore region is a mask like any other: by key (missing keys are asked for with the
        masks) or an inline RLE dict, under the same limits."""
        if not isinstance(items, list) or not items:
            raise InputError("items: expected a non-empty list of {image, completion, mask} objects")
        if len(items) > self.config.limits.max_items:
            raise InputError(f"items: {len(items)} rows; this server takes at most {self.config.limits.max_items} "
                             "per request (split the batch)")
        completions, images, masks, ignores = [], [], [], []
        # dicts as ordered sets: a request of n new images costs O(n), not O(n^2) list scans (442 ms at 4096)
        miss_images: dict[str, None] = {}
        miss_masks: dict[str, None] = {}
        inline = _InlineMasks(self.config.limits)
        lists: dict[tuple, list] = {}
        for i, it in enumerate(items):
            if not isinstance(it, dict):
                raise InputError(f"items[{i}]: expected an object with image, completion and mask")
            for k in ("image", "completion", "mask"):
                if k not in it:
                    raise InputError(f"items[{i}].{k}: missing")
            ik, c, m = it["image"], it["completion"], it["mask"]
            if ik is not None and not isinstance(ik, str):
                raise InputError(f"items[{i}].image: expected an image content key (samr1.serve.protocol."
                                 "image_content_key) or null")
            if not isinstance(c, (str, list, dict)):
                raise InputError(f"items[{i}].completion: expected a string or a list of messages")
            # null image/mask: the client could not load it; the reward scores the row's mask parts 0
            img = self.blobs.get(ik) if ik is not None else None
            if ik is not None and img is None:
                miss_images[ik] = None
            completions.append(c)
            images.append(img)
            if isinstance(m, list):  # a multi-object target: its instance masks (each a key or an RLE)
                if len(m) > MAX_INSTANCES:
                    raise InputError(f"items[{i}].mask: {len(m)} instance masks; this server takes at most "
                                     f"{MAX_INSTANCES} a row")
                got = [self._score_mask(v, f"items[{i}].mask[{k}]", i, inline, miss_masks, null=False)
                       for k, v in enumerate(m)]
                # the G rows of a group share ONE list object, as in process: the reward loads a target once
                ident = tuple(id(x) if x is not None else ("missing", v) for x, v in zip(got, m, strict=True))
                masks.append(lists.setdefault(ident, got))
            else:
                masks.append(self._score_mask(m, f"items[{i}].mask", i, inline, miss_masks))
            ignores.append(self._score_mask(it.get("ignore"), f"items[{i}].ignore", i, inline, miss_masks))
        return completions, images, masks, ignores, {"images": list(miss_images), "masks": list(miss_masks)}

    def _score_mask(self, m: Any, field: str, i: int, inline: _InlineMasks, missing: dict[str, None],
                    null: bool = True) -> Any:
        """A ``/score`` item's mask (or ignore region, or one instance of a mask list): None for null (where
        ``null`` allows it), the held array for a key (recorded in ``missing`` when not held), the checked dict
        for an inline RLE."""
        if m is None and null:
            return None
        if isinstance(m, str):
            if not m.startswith(MASK_KEY_PREFIX):
                raise InputError(f"{field}: {m!r} is not a mask key (samr1.serve.protocol.mask_content_key) nor an "
                                 "RLE dict")
            mask = self.blobs.get(m)
            if mask is None:
                missing[m] = None
            return mask
        if isinstance(m, dict):
            return inline.add(m, i, field)
        raise InputError(f"{field}: expected a mask key, a COCO RLE dict" + (" or null" if null else "")
                         + (", or a list of those (instance masks)" if field.endswith(".mask") else ""))


class _InlineMasks:
    """The inline COCO RLE masks of one ``/score`` request, each checked against the server's limits BEFORE
    anything is decoded, and shared between equal copies (a G-group's mask is one object, so the reward
    decodes it once). The dicts themselves go to the reward, which decodes each against its image and, like
    the in-process reward, scores a malformed one 0 with the counted reason ``bad_mask`` /
    ``mask_size_mismatch``.

    A size is read by :func:`samr1.io.rle_size`, the decoder's own reading, so every form the decoder
    accepts (``[1000, 1000]``, ``[1000.0, 1e3]``, ...) is checked here first; a size it refuses is never
    decoded."""

    def __init__(self, limits: Limits):
        self.limits = limits
        self.by_json: dict[str, dict] = {}  # canonical JSON -> the one dict every equal copy uses
        self.pixels = 0  # declared pixels of the distinct masks so far

    def add(self, rle: dict, i: int, field: str | None = None) -> dict:
        """The dict to score for item ``i``'s inline mask ``rle`` (named ``field`` in errors: ``items[i].mask``
        by default, or ``items[i].ignore``).

        Raises InputError (400) when its declared size exceeds the limits, or when the distinct inline masks
        of the request would decode to more than ``2 * max_pixels`` pixels in all (40 bytes of RLE can
        declare 81 M pixels)."""
        field = field or f"items[{i}].mask"
        key = json.dumps(rle, sort_keys=True)
        if key in self.by_json:
            return self.by_json[key]
        lim = self.limits
        try:
            h, w = rle_size(rle.get("size"), field)
        except InputError:
            h = w = 0  # malformed: the decoder refuses it too, so it costs nothing
        if max(h, w) > lim.max_side or h * w > lim.max_pixels:
            raise InputError(f"{field}: the RLE declares {h}x{w} (H x W); this server accepts at most "
                             f"{lim.max_side} px a side and {lim.max_pixels} pixels")
        if self.pixels + h * w > 2 * lim.max_pixels:
            raise InputError(f"{field}: the request's distinct inline RLE masks exceed "
                             f"{2 * lim.max_pixels} pixels in all; upload masks once (mask keys) or split the batch")
        self.pixels += h * w
        self.by_json[key] = rle
        return rle


class _BodyTooLarge(Exception):
    pass


class _BodyTimeout(Exception):
    pass


class _BodyLimit:
    """ASGI wrapper: a request body over ``max_bytes`` gets 413, whether announced by Content-Length or not;
    a body that has not fully arrived ``timeout_s`` seconds after the app started reading it gets 408.

    The excess of a too-large body is read and dropped (up to ``drain_bytes``, within the same deadline)
    before answering: closing a socket that still has unread data makes the kernel send a reset, and the
    client would never see the 413."""

    def __init__(self, app: Any, max_bytes: int, drain_bytes: int = 64 << 20, timeout_s: float = 60.0):
        self.app = app
        self.max_bytes = max_bytes
        self.drain_bytes = drain_bytes
        self.timeout_s = timeout_s

    async def _drain(self, receive: Any, got: int) -> None:
        while got < self.max_bytes + self.drain_bytes:
            try:
                msg = await receive()
            except _BodyTimeout:
                return
            if msg["type"] != "http.request":
                return
            got += len(msg.get("body", b""))
            if not msg.get("more_body", False):
                return

    def _timed(self, receive: Any) -> Any:
        """``receive`` that raises _BodyTimeout once the body has taken ``timeout_s`` since the first read;
        after the body's last chunk it waits as long as the app likes (a disconnect listener may wait)."""
        deadline: float | None = None
        done = False

        async def timed_receive() -> Any:
            nonlocal deadline, done
            if done:
                return await receive()
            loop = asyncio.get_running_loop()
            if deadline is None:
                deadline = loop.time() + self.timeout_s
            try:
                msg = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except asyncio.TimeoutError:
                raise _BodyTimeout from None
            if msg["type"] != "http.request" or not msg.get("more_body", False):
                done = True
            return msg

        return timed_receive

    async def _reject(self, send: Any) -> None:
        await _send_json(send, 413, f"request body is larger than this server's limit of {self.max_bytes} bytes; "
                                    "send smaller images or fewer rows per request")

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        cl = headers.get(b"content-length")
        receive = self._timed(receive)
        if cl is not None and cl.isdigit() and int(cl) > self.max_bytes:
            await self._drain(receive, 0)
            await self._reject(send)
            return
        got = 0
        started = False

        async def limited_receive() -> Any:
            nonlocal got
            msg = await receive()
            if msg["type"] == "http.request":
                got += len(msg.get("body", b""))
                if got > self.max_bytes:
                    if msg.get("more_body", False):
                        await self._drain(receive, got)
                    raise _BodyTooLarge
            return msg

        async def tracking_send(msg: Any) -> None:
            nonlocal started
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if not started:
                await self._reject(send)
        except _BodyTimeout:
            if not started:
                await _send_json(send, 408, _timeout_message(self.timeout_s))


def _timeout_message(timeout_s: float) -> str:
    return (f"the request body did not arrive within {timeout_s:g} s; send it faster, or ask for a larger "
            "--body-timeout")


async def _send_json(send: Any, status: int, message: str) -> None:
    """A JSON error answer that also closes the connection (the rest of a half-sent body is never read)."""
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


def _client(request: Any) -> str:
    c = request.client
    return f"{c.host}:{c.port}" if c else "a client"


def create_app(engine: Any = None, *, reward: Any = None, segmenter: Any = None,
               config: ServerConfig | None = None, service: SamR1Service | None = None) -> Any:
    """The ASGI app (FastAPI wrapped in the body-size limit). Give an engine (and optionally a reward and a
    :class:`samr1.pipeline.ReasoningSegmenter`), or a ready :class:`SamR1Service`. ``app.state.service``
    is the service; call ``service.close()`` when done (``samr1.serve.ServerThread`` does)."""
    if service is None:
        if engine is None:
            raise ValueError("create_app needs an engine (samr1.engine.SamEngine) or a service")
        service = SamR1Service(engine, reward=reward, segmenter=segmenter, config=config)
    cfg = service.config
    limits = cfg.limits
    app = FastAPI(title="samr1", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.service = service

    class _HTTPError(Exception):
        def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
            self.status, self.message, self.headers = status, message, headers

    @app.exception_handler(_HTTPError)
    async def _http_error(request: Request, exc: _HTTPError) -> JSONResponse:
        return JSONResponse({"error": exc.message}, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _routing_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # no such route / method: the same {"error": ...} body as every other 4xx of this server
        return JSONResponse({"error": f"{request.method} {request.url.path}: {exc.detail}"},
                            status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(_BodyTooLarge)
    async def _too_large(request: Request, exc: _BodyTooLarge) -> JSONResponse:
        # the body was drained by the size limit's receive(); the connection can still carry the answer
        return JSONResponse({"error": f"request body is larger than this server's limit of {limits.max_body_bytes} "
                                      "bytes; send smaller images or fewer rows per request"}, status_code=413)

    @app.exception_handler(_BodyTimeout)
    async def _body_timeout(request: Request, exc: _BodyTimeout) -> JSONResponse:
        _log.warning("samr1 serve: %s %s from %s: body not complete within %g s; answered 408 and closed",
                     request.method, request.url.path, _client(request), cfg.body_timeout_s)
        return JSONResponse({"error": _timeout_message(cfg.body_timeout_s)}, status_code=408,
                            headers={"Connection": "close"})

    @app.exception_handler(ClientDisconnect)
    async def _disconnected(request: Request, exc: ClientDisconnect) -> JSONResponse:
        # nobody is left to answer: one line in the log instead of a 40-line traceback per aborted upload
        _log.warning("samr1 serve: %s %s from %s: the client disconnected before its body was complete",
                     request.method, request.url.path, _client(request))
        return JSONResponse({"error": "client disconnected"}, status_code=400)

    @app.exception_handler(InputError)
    async def _input_error(request: Request, exc: InputError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=400)

    def check_token(request: Request) -> None:
        if cfg.token is None:
            return
        got = request.headers.get("authorization", "")
        if not hmac.compare_digest(got.encode(), f"Bearer {cfg.token}".encode()):
            raise _HTTPError(401, "missing or wrong bearer token (send 'Authorization: Bearer <token>')",
                             {"WWW-Authenticate": "Bearer"})

    async def read_form(request: Request) -> Any:
        ctype = request.headers.get("content-type", "")
        if not ctype.startswith("multipart/form-data"):
            raise _HTTPError(400, f"expected a multipart/form-data body (got content-type {ctype or 'none'!r})")
        try:
            return await request.form(max_files=limits.max_files, max_fields=64 + limits.max_files,
                                      max_part_size=limits.max_body_bytes)
        except (_BodyTooLarge, _BodyTimeout, ClientDisconnect):
            raise
        except Exception as exc:  # noqa: BLE001 - any multipart parse failure is the client's malformed body
            detail = getattr(exc, "detail", None) or str(exc) or type(exc).__name__
            raise _HTTPError(400, f"malformed multipart body: {detail}") from None

    async def run_job(kind: str, payload: Any) -> Any:
        try:
            fut = service.submit(kind, payload)
        except QueueFull as exc:
            raise _HTTPError(503, str(exc), {"Retry-After": "1"}) from None
        try:
            return await asyncio.wait_for(asyncio.wrap_future(fut), cfg.request_timeout_s)
        except asyncio.TimeoutError:
            raise _HTTPError(504, f"the request did not finish within {cfg.request_timeout_s} s") from None

    async def upload_bytes(form: Any, name: str) -> list[tuple[str, bytes]]:
        out = []
        for i, part in enumerate(form.getlist(name)):
            if not isinstance(part, UploadFile):
                raise _HTTPError(400, f"{name}: expected a file part (multipart filename=...), got a text field")
            out.append((f"{name}[{i}] ({part.filename})", await part.read()))
        return out

    @app.get("/healthz")
    async def healthz() -> dict:
        return service.health()

    @app.get("/")
    async def page() -> Response:
        body, ctype = static_file("segment.html")
        return Response(body, media_type=ctype, headers={"Cache-Control": "no-cache"})

    @app.get("/static/{name}")
    async def static(name: str) -> Response:
        got = static_file(name)  # a fixed list of names: a request path never reaches the file system
        if got is None:
            raise _HTTPError(404, f"static/{name}: no such page file")
        return Response(got[0], media_type=got[1], headers={"Cache-Control": "no-cache"})

    @app.post("/segment")
    async def segment(request: Request) -> Any:
        check_token(request)
        t0 = time.perf_counter()
        form = await read_form(request)
        files = await upload_bytes(form, "image")
        if not files:
            raise _HTTPError(400, "image: missing (send the image as a file part named 'image')")
        if len(files) > 1:
            raise _HTTPError(400, f"image: {len(files)} files sent; /segment takes one")
        t_read = time.perf_counter()
        image = await run_in_threadpool(decode_upload, files[0][1], field="image", limits=limits)
        t_dec = time.perf_counter()
        refused = service.engine.image_errors([image])[0]  # e.g. 1 x 3000: SAM cannot resize it
        if refused is not None:
            raise _HTTPError(400, "image" + str(refused).removeprefix("images[0]"))
        h, w = image.shape[:2]
        query, box, points = form.get("query"), form.get("box"), form.get("points")
        service.counters["segment_requests"] += 1
        if query is not None:
            if box is not None or points is not None:
                raise _HTTPError(400, "query: give either query (the policy answers) or box/points (SAM alone), not both")
            if service.segmenter is None:
                raise _HTTPError(400, "query: this server runs SAM alone (no --model); send box and points instead")
            if not isinstance(query, str) or not query.strip():
                raise _HTTPError(400, "query: expected non-empty text")
            res = await run_job("query", (image, query))
            out = res.to_json()
        else:
            if box is None:
                raise _HTTPError(400, "box: missing (send box=x1,y1,x2,y2 in original pixels, optional points, "
                                      "or query= when the server runs a policy)")
            from samr1.answer import parse_answer

            b = parse_box(box)
            pts = parse_points(points) if points is not None else []
            obj = {"bbox": b, "points": pts} if pts else {"bbox": b}
            # the parser's own validation (sorting, clipping, zero-area, point count) in original pixels
            answer = parse_answer(f"<answer>{json.dumps(obj)}</answer>", image_size=(h, w), model_size=(h, w),
                                  require_points=False)
            if not answer.ok:
                raise _HTTPError(400, f"box/points rejected: {answer.reason}")
            mask, info = await run_job("sam", (image, answer))
            if isinstance(mask, Exception):
                raise mask
            from samr1.pipeline import result_json

            out = result_json(answer, mask, timings={}, text=None)
            out["timings"].update(info)
        out["timings"].update({"read_s": t_read - t0, "decode_image_s": t_dec - t_read,
                               "total_s": time.perf_counter() - t0})
        return out

    @app.post("/score")
    async def score(request: Request) -> Any:
        check_token(request)
        ctype = request.headers.get("content-type", "")
        uploads: list[tuple[str, str, bytes]] = []
        if ctype.startswith("multipart/form-data"):
            form = await read_form(request)
            raw = form.get("request")
            if raw is None:
                raise _HTTPError(400, "request: missing (the JSON body goes in a text field named 'request')")
            if not isinstance(raw, str):
                raw = (await raw.read()).decode("utf-8", errors="replace")
            uploads = [("image", f, d) for f, d in await upload_bytes(form, "image")]
            uploads += [("mask", f, d) for f, d in await upload_bytes(form, "mask")]
        elif ctype.startswith("application/json"):
            raw = (await request.body()).decode("utf-8", errors="replace")
        else:
            raise _HTTPError(400, f"expected application/json or multipart/form-data (got {ctype or 'none'!r})")
        try:
            body = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise _HTTPError(400, f"request: invalid JSON ({exc.msg} at position {exc.pos})") from None
        except (ValueError, RecursionError) as exc:  # a 5000-digit number, nesting deeper than the parser allows
            raise _HTTPError(400, f"request: invalid JSON ({type(exc).__name__}: {str(exc)[:200]})") from None
        if not isinstance(body, dict):
            raise _HTTPError(400, "request: expected a JSON object with 'items'")
        stored = []
        for kind, fname, data in uploads:
            stored.append(await run_in_threadpool(service.store_upload, data, kind, fname))
            service.counters["images_uploaded" if kind == "image" else "masks_uploaded"] += 1
        # off the event loop: validating thousands of items must not stall other requests
        completions, images, masks, ignores, missing = await run_in_threadpool(service.resolve_score,
                                                                                body.get("items"))
        service.counters["score_requests"] += 1
        if missing["images"] or missing["masks"]:
            return {"missing": missing, "rewards": None}
        comps = await run_job("score", (completions, images, masks, ignores))
        service.counters["score_items"] += len(completions)
        n = len(completions)
        rewards = [float(sum(v[i] for v in comps.values())) for i in range(n)]
        return {"missing": None, "rewards": rewards, "components": comps, "stored": stored}

    wrapped = _BodyLimit(app, limits.max_body_bytes, timeout_s=cfg.body_timeout_s)
    wrapped.state = app.state  # type: ignore[attr-defined]
    return wrapped
