"""A client of ``samr1 serve``: the reward as a service for trainers on many machines, and remote segmentation.

:class:`SamR1Client` is a TRL reward function (``GRPOTrainer(reward_funcs=[SamR1Client(url)])``): each call
sends the whole batch in ONE ``/score`` request that names images and masks by content key
(:mod:`samr1.serve.protocol`); only what the server does not hold yet is uploaded, as lossless PNG, in one
follow-up request. The G completions of a prompt share one image, so a GRPO group costs one upload, and an
image the server has seen before costs none. Rewards equal the in-process
:class:`samr1.rewards.SamR1Reward` configured like the server's.

Only the standard library is used for HTTP: the client needs neither FastAPI nor an HTTP package.
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.parse
import uuid
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from samr1.io import InputError, load_image, load_mask
from samr1.serve.protocol import encode_png, image_content_key, mask_content_key

__all__ = ["SamR1Client", "AsyncSamR1Client", "ServerError", "ServerUnreachableError", "encode_multipart"]


class ServerError(RuntimeError):
    """The server answered with an error status; ``status`` and the server's ``message`` are attached."""

    def __init__(self, status: int, message: str):
        super().__init__(f"samr1 server: HTTP {status}: {message}")
        self.status = status
        self.message = message


class ServerUnreachableError(ConnectionError):
    """The server could not be reached (refused, reset, timed out, unknown host) after the client's retries.

    A ``ConnectionError`` (an ``OSError``) whose message names the URL, what happened and what to check, so a
    training run stopped by it says why in one line instead of a bare ``ConnectionRefusedError``."""

    def __init__(self, url: str, reason: str, attempts: int):
        super().__init__(f"samr1 client: cannot reach the samr1 server at {url} ({reason}; {attempts} attempt"
                         f"{'s' if attempts != 1 else ''}): is `samr1 serve` running there, and are the host and "
                         "port right?")
        self.url = url
        self.reason = reason
        self.attempts = attempts


def encode_multipart(fields: dict[str, str], files: list[tuple[str, str, bytes, str]]) -> tuple[bytes, str]:
    """Encode text fields and (field, filename, data, content type) files as multipart/form-data."""
    boundary = uuid.uuid4().hex
    out = []
    for name, value in fields.items():
        out.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode())
        out.append(value.encode("utf-8"))
        out.append(b"\r\n")
    for name, filename, data, ctype in files:
        out.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                   f"Content-Type: {ctype}\r\n\r\n".encode())
        out.append(data)
        out.append(b"\r\n")
    out.append(f"--{boundary}--\r\n".encode())
    return b"".join(out), f"multipart/form-data; boundary={boundary}"


def _keyed_or_warn(load: Any, content_key: Any, value: Any, field: str, row: int) -> tuple[Any, Any]:
    """``(content key, array)`` of a row's image or mask, or ``(None, None)`` with a warning when it cannot be
    loaded (the server then scores the row's mask-based rewards 0, as the in-process reward does)."""
    try:
        arr = load(value, field=field, source=f"row {row}")
    except InputError as exc:
        warnings.warn(f"SamR1Client: {exc}; the row's mask-based rewards will be 0", RuntimeWarning, stacklevel=4)
        return None, None
    return content_key(arr), arr


def _mask_ref(value: Any, field: str, row: int, instances: bool) -> tuple[Any, dict[str, np.ndarray]]:
    """``(what the request carries for a row's mask, {key: array} to upload if asked})``: a COCO RLE dict
    inline (it is already compact), another mask by content key, and with ``instances`` a list of instance
    masks (:func:`samr1.rewards.truth.is_instance_list`, read as the in-process reward reads it) as a list of
    those. ``(None, {})`` when a mask cannot be loaded (warned; the row's mask-based rewards score 0)."""
    from samr1.rewards.truth import is_instance_list

    parts = list(value) if instances and is_instance_list(value) else None
    refs: list[Any] = []
    arrays: dict[str, np.ndarray] = {}
    for k, v in enumerate([value] if parts is None else parts):
        if isinstance(v, dict):
            refs.append(v)
            continue
        key, arr = _keyed_or_warn(load_mask, mask_content_key, v, field if parts is None else f"{field}[{k}]", row)
        if key is None:
            return None, {}
        refs.append(key)
        arrays[key] = arr
    return (refs[0] if parts is None else refs), arrays


class SamR1Client:
    """Talks to a ``samr1 serve`` server; callable as a TRL reward function.

    Args:
        url: the server, e.g. ``"http://127.0.0.1:8000"``.
        token: bearer token when the server requires one.
        timeout_s: socket timeout per HTTP request.
        image_key, mask_key: the dataset columns holding the image and the ground-truth mask (as
            :class:`samr1.rewards.SamR1Reward`; a row's image may be a list, its first image is used).
        ignore_key: the optional column of ignore regions (per row None or a mask; ReasonSeg's "ignore"
            polygons): their pixels count in neither I nor U, as in the in-process reward.
        retries: retries on 503 (queue full) and on a connection that fails (refused, reset, timed out) before
            giving up, with a growing pause (0.1 s, 0.2 s, ...); then :class:`ServerError` (503) or
            :class:`ServerUnreachableError`.

    Calling it as ``client(prompts, completions, image=[...], mask=[...], **kw)`` returns the summed reward
    per completion; :attr:`last_components` holds each component's values of the last call, and ``stats``
    counts requests and uploads. An image or mask that cannot be loaded is sent as null: the server scores
    that row's mask-based rewards 0 (as the in-process reward does) and the client warns.
    """

    def __init__(self, url: str, *, token: str | None = None, timeout_s: float = 600.0, image_key: str = "image",
                 mask_key: str = "mask", retries: int = 5, ignore_key: str = "ignore"):
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"url must look like http://HOST:PORT, got {url!r}")
        self.url = url.rstrip("/")
        self._parsed = parsed
        self.token = token
        self.timeout_s = float(timeout_s)
        self.image_key = image_key
        self.mask_key = mask_key
        self.ignore_key = ignore_key
        self.retries = int(retries)
        self.__name__ = "samr1_reward"
        self.last_components: dict[str, list[float]] = {}
        self.stats = {"requests": 0, "score_calls": 0, "images_uploaded": 0, "masks_uploaded": 0,
                      "bytes_uploaded": 0, "retries_503": 0, "retries_unreachable": 0}

    # ------------------------------------------------------------------ HTTP
    def _request(self, method: str, path: str, body: bytes | None = None, content_type: str | None = None) -> Any:
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        conn_cls = http.client.HTTPSConnection if self._parsed.scheme == "https" else http.client.HTTPConnection
        for attempt in range(self.retries + 1):
            conn = conn_cls(self._parsed.hostname, self._parsed.port, timeout=self.timeout_s)
            try:
                conn.request(method, self._parsed.path.rstrip("/") + path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
            except (OSError, http.client.HTTPException) as exc:  # refused, reset, timed out, unknown host
                reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                if attempt < self.retries:  # a server restarting or a dropped connection: retry, then say so
                    self.stats["retries_unreachable"] += 1
                    time.sleep(0.1 * (attempt + 1))
                    continue
                raise ServerUnreachableError(self.url, reason, attempt + 1) from exc
            finally:
                conn.close()
            self.stats["requests"] += 1
            if resp.status == 503 and attempt < self.retries:
                self.stats["retries_503"] += 1
                time.sleep(0.1 * (attempt + 1))
                continue
            try:
                payload = json.loads(data.decode("utf-8")) if data else {}
            except (UnicodeDecodeError, json.JSONDecodeError):
                payload = {"error": data[:200].decode("utf-8", errors="replace")}
            if resp.status >= 400:
                msg = payload.get("error") if isinstance(payload, dict) else None
                raise ServerError(resp.status, str(msg or payload))
            return payload
        raise AssertionError("unreachable")  # pragma: no cover

    def health(self) -> dict[str, Any]:
        """``GET /healthz``."""
        return self._request("GET", "/healthz")

    # ------------------------------------------------------------------ segmentation
    def segment(self, image: Any, *, box: Sequence[float] | None = None, points: Sequence[Sequence[float]] = (),
                query: str | None = None) -> dict[str, Any]:
        """``POST /segment``: SAM from ``box`` (XYXY, original pixels) and optional ``points``, or the policy
        from ``query``. Returns the server's JSON (``mask`` is a COCO RLE: :func:`samr1.io.rle_decode`)."""
        arr = load_image(image)
        fields: dict[str, str] = {}
        if query is not None:
            fields["query"] = query
        if box is not None:
            fields["box"] = json.dumps([float(v) for v in box])
        if points:
            fields["points"] = json.dumps([[float(x), float(y)] for x, y in points])
        body, ctype = encode_multipart(fields, [("image", "image.png", encode_png(arr), "image/png")])
        return self._request("POST", "/segment", body, ctype)

    # ------------------------------------------------------------------ rewards
    def score(self, completions: Sequence[Any], images: Sequence[Any], masks: Sequence[Any],
              ignore: Sequence[Any] | None = None) -> dict[str, Any]:
        """Score parallel lists on the server; returns ``{"rewards": [...], "components": {name: [...]}}``.

        ``ignore`` (optional, parallel): per row None or an ignore region (any mask form; ReasonSeg's "ignore"
        polygons), whose pixels count in neither I nor U, as in the in-process reward. Each distinct image
        and mask (by object, then by content key) is hashed once and uploaded only when the server answers
        that it does not hold its key."""
        n = len(completions)
        if len(images) != n or len(masks) != n:
            raise ValueError(f"completions ({n}), images ({len(images)}) and masks ({len(masks)}) must be parallel")
        if ignore is not None and len(ignore) != n:
            raise ValueError(f"ignore ({len(ignore)}) must be parallel to completions ({n})")
        img_by_id: dict[int, tuple[str | None, np.ndarray | None]] = {}
        mask_by_id: dict[int, tuple[Any, dict[str, np.ndarray]]] = {}
        items = []
        img_arrays: dict[str, np.ndarray] = {}
        mask_arrays: dict[str, np.ndarray] = {}
        for i in range(n):
            img = images[i]
            if isinstance(img, (list, tuple)) and img:
                img = img[0]
            if id(img) not in img_by_id:
                img_by_id[id(img)] = _keyed_or_warn(load_image, image_content_key, img, self.image_key, i)
            ik, arr = img_by_id[id(img)]
            if ik is not None:
                img_arrays[ik] = arr
            item = {"image": ik, "completion": completions[i]}
            for field, m, column in (("mask", masks[i], self.mask_key),
                                     ("ignore", None if ignore is None else ignore[i], self.ignore_key)):
                if m is None and field == "ignore":
                    continue
                if id(m) not in mask_by_id:
                    mask_by_id[id(m)] = _mask_ref(m, column, i, instances=field == "mask")
                mk, arrays = mask_by_id[id(m)]
                mask_arrays.update(arrays)
                item[field] = mk
            if item.get("ignore", "") is None:  # an ignore region that did not load: the row's mask parts
                item["mask"] = None           # score 0, as in the in-process reward (bad_mask)
            items.append(item)
        request = json.dumps({"items": items})
        self.stats["score_calls"] += 1
        out = self._request("POST", "/score", request.encode("utf-8"), "application/json")
        for _ in range(3):  # the server may evict between our calls: bounded re-uploads
            missing = out.get("missing")
            if not missing or not (missing.get("images") or missing.get("masks")):
                break
            files = []
            for k in missing.get("images") or []:
                if k not in img_arrays:
                    raise RuntimeError(f"server asked for image {k!r}, which this request does not hold")
                files.append(("image", "image.png", encode_png(img_arrays[k]), "image/png"))
                self.stats["images_uploaded"] += 1
            for k in missing.get("masks") or []:
                if k not in mask_arrays:
                    raise RuntimeError(f"server asked for mask {k!r}, which this request does not hold")
                files.append(("mask", "mask.png", encode_png(mask_arrays[k]), "image/png"))
                self.stats["masks_uploaded"] += 1
            body, ctype = encode_multipart({"request": request}, files)
            self.stats["bytes_uploaded"] += len(body)
            out = self._request("POST", "/score", body, ctype)
        if out.get("rewards") is None:
            raise RuntimeError(f"the server kept answering that keys are missing: {out.get('missing')}")
        return out

    def __call__(self, prompts: Any = None, completions: Sequence[Any] | None = None, **kwargs: Any) -> list[float]:
        """TRL reward function: summed reward per completion (dataset columns arrive by name in ``kwargs``)."""
        if completions is None:
            raise ValueError("completions must be given (TRL passes completions=...)")
        n = len(completions)
        cols = []
        for key in (self.image_key, self.mask_key):
            col = kwargs.get(key)
            if col is None:
                raise ValueError(f"SamR1Client needs the dataset column {key!r}; TRL passes every column by name")
            if len(col) != n:
                raise ValueError(f"column {key!r} has {len(col)} rows but there are {n} completions")
            cols.append(col)
        ignore = kwargs.get(self.ignore_key)  # optional: ReasonSeg's ignore regions
        if ignore is not None and len(ignore) != n:
            raise ValueError(f"column {self.ignore_key!r} has {len(ignore)} rows but there are {n} completions")
        out = self.score(list(completions), list(cols[0]), list(cols[1]),
                         None if ignore is None else list(ignore))
        self.last_components = out.get("components") or {}
        return [float(v) for v in out["rewards"]]


class AsyncSamR1Client(SamR1Client):
    """:class:`SamR1Client` as an ``async`` TRL reward function: TRL awaits async reward functions side by side
    (on its own event loop), so the HTTP round trip overlaps the other reward functions of the step. Same
    arguments, results, uploads and ``stats``; the request runs in a worker thread."""

    async def __call__(self, prompts: Any = None, completions: Sequence[Any] | None = None,  # type: ignore[override]
                       **kwargs: Any) -> list[float]:
        import asyncio

        return await asyncio.to_thread(SamR1Client.__call__, self, prompts, completions, **kwargs)
