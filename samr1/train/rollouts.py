"""Rollout logging: every K steps, a few GRPO groups (the G answers to one prompt) written to disk to be looked at.

:class:`RolloutLog` is handed every scored batch by :class:`samr1.train.rewards_hub.RewardHub`. On a logged
step it keeps the first ``groups`` prompts of the batch and, for each, writes one JSON line to
``<dir>/rollouts.jsonl`` holding the query, the ground-truth mask, and for each of the G completions its text,
the parsed answer (box and points in ORIGINAL image pixels), the mask SAM makes of it, that mask's IoU with the
ground truth (the row's ignore region, where the dataset has one, left out of both counts as the reward leaves
it out) and every reward component. The image goes to ``<dir>/images/<key>.jpg`` once per pixel content
(``key`` = blake2b of the pixels), however often it is drawn. ``samr1 view RUN_DIR`` shows the result.

The file format (one JSON object a line, ``"v": 1``):

- ``{"type": "session", "session": n, "time": ..., "every": K, "groups": ..., "max_bytes": ...}``: written
  when a log is opened (a run, or each resume of it), so the records of a resumed run are told apart;
- ``{"type": "group", "session": n, "step": s, "rank": r, "row_id": i, "image": key, "image_file":
  "images/<key>.jpg", "size": [H, W], "query": str, "gt": COCO RLE, "ignore": COCO RLE or null,
  "components": [names],
  "completions": [{"text", "truncated", "ok", "reason", "think", "objects": [{"bbox": [x1, y1, x2, y2],
  "points": [[x, y], ...]}], "mask": COCO RLE or null, "iou", "rewards": {name: value}, "reward"}],
  "reward_mean", "reward_std", "time"}``;
- ``{"type": "budget", "session": n, "step": s, "bytes": b, "max_bytes": m}``: once, when the next record
  would have passed the byte budget; nothing more is logged by that session.

``step`` is the optimizer step the completions train (``trainer_state.global_step + 1``, the numbering of
``metrics.jsonl``); a step is logged when ``global_step % every == 0`` (so step 1 always is).

Guarantees: append only (the file is opened in append mode; an image file that exists is never rewritten; a
torn last line left by a killed run is closed with a newline before the first new record); bounded in bytes
(``max_bytes`` over the JSONL plus the images, counted from what is on disk when the log opens, so a resumed
run shares the budget of the run it continues); never fails training (an error while writing is warned about
once and stops the log). In the reward call a logged step only parses the logged answers, takes a reference
to the engine's kept logits and queues them. On a writer thread: the masks of the logged answers, made from
the low-res logits the reward's own engine call decoded (the engine keeps its last call's logits while a log
is open: ``engine.keep_logits``, :mod:`samr1.engine.kept`; SAM's postprocess only, no second decode), then
RLE / JPEG / JSON and the writes. Only answers the engine did not decode in that call (a multi-object
answer, whose mask is a union of several prompts' masks; rows of another engine call) are decoded again,
by ``engine.segment_batch`` (their images are still in the engine's cache); an image the engine refuses (the
reward scored its row 0) is left out of that call, so its answers are logged without a mask and the other
groups keep theirs.
"""

from __future__ import annotations

import io
import json
import math
import os
import queue
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from samr1.geometry import mask_iou_numpy
from samr1.hashing import array_digest

__all__ = ["RolloutLog", "ROLLOUTS_FILE", "IMAGES_DIR", "FORMAT_VERSION", "read_jsonl"]

ROLLOUTS_FILE = "rollouts.jsonl"
IMAGES_DIR = "images"
FORMAT_VERSION = 1
MAX_TEXT_CHARS = 4000  # a completion longer than this is cut (flagged "truncated"): the log stays bounded per line
JPEG_QUALITY = 90  # images are for looking at: JPEG is ~6x smaller than PNG on photos and ~3x faster to encode


def read_jsonl(path: str | os.PathLike) -> tuple[list[dict[str, Any]], int]:
    """Every JSON object of a JSONL file (a rollouts file, ``metrics.jsonl``, ...), in file order, and the number
    of lines that were not one (a torn last line of a killed run, or damage): those are skipped, never fatal.
    ``([], 0)`` when the file does not exist."""
    records: list[dict[str, Any]] = []
    bad = 0
    try:
        f = open(path, encoding="utf-8", errors="replace")
    except (FileNotFoundError, NotADirectoryError):
        return records, 0
    with f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                bad += 1
                continue
            if isinstance(rec, dict):
                records.append(rec)
            else:
                bad += 1
    return records, bad


def _dir_bytes(path: str) -> int:
    total = 0
    try:
        with os.scandir(path) as it:
            for e in it:
                if e.is_file(follow_symlinks=False):
                    total += e.stat(follow_symlinks=False).st_size
    except FileNotFoundError:
        pass
    return total


def _text(completion: Any) -> str:
    from samr1.rewards import completion_text

    t = completion_text(completion)
    return "" if t is None else t


def _finite(v: Any) -> float | None:
    """A reward value as a JSON number; None for NaN / inf (JSON has no such numbers, and a reader must load it)."""
    x = float(v)
    return x if math.isfinite(x) else None


def _first_image(value: Any) -> Any:
    # TRL's images column holds a list of images per row; the reward uses the first (SamR1Reward does the same)
    if isinstance(value, (list, tuple)) and value and not isinstance(value, str):
        return value[0]
    return value


def _content_key(x: Any, memo: dict[int, Any]) -> Any:
    """A hashable key equal for equal masks in any of the reward's forms (an array by digest, a path, an RLE
    dict, a list of instances), computed once per object (``memo``, by id): the G copies of a prompt's target
    share it whether TRL passed one object or equal copies."""
    k = memo.get(id(x))
    if k is not None:
        return k
    if x is None:
        k = ("none",)
    elif isinstance(x, np.ndarray):
        k = ("array", array_digest(x))
    elif isinstance(x, (list, tuple)) and x and isinstance(x[0], (list, tuple)):
        try:  # a mask written as nested lists (H x W, or N x H x W instances): by digest, not element by element
            k = ("array", array_digest(np.asarray(x)))
        except (ValueError, TypeError):  # ragged: not one mask
            k = ("object", id(x))
    elif isinstance(x, (list, tuple)):  # a row's instances
        k = ("list", tuple(_content_key(v, memo) for v in x))
    elif isinstance(x, (str, bytes, int, float)):
        k = ("value", x)
    elif isinstance(x, dict):
        k = ("dict", json.dumps(x, sort_keys=True, default=str))
    else:  # a PIL image, a tensor: the object itself
        k = ("object", id(x))
    memo[id(x)] = k
    return k


class RolloutLog:
    """Writes a few GRPO groups every ``every`` steps to ``directory`` (see the module docstring).

    Args:
        directory: the folder (``<output_dir>/rollouts``); created on the first record.
        every: log on steps where ``global_step % every == 0``; must be >= 1 (0 means "no log": do not build one).
        reward: the :class:`samr1.rewards.SamR1Reward` being trained with: its engine makes the masks, and its
            ``model_size`` / ``require_points`` / ``multi_object`` parse the answers exactly as it did.
        groups: prompts logged per logged step (their G completions each).
        max_bytes: budget of the folder (JSONL + images).
        query_of: ``row_id -> query text`` (the driver passes the dataset's); without it ``query`` is null.
        rank: this process's rank, recorded in each line.
    """

    def __init__(self, directory: str | os.PathLike, every: int, reward: Any, *, groups: int = 2,
                 max_bytes: int = 256 << 20, query_of: Callable[[int], str] | None = None, rank: int = 0):
        if not isinstance(every, int) or isinstance(every, bool) or every < 1:
            raise ValueError(f"every must be a positive int (steps between logged steps), got {every!r}")
        if not isinstance(groups, int) or isinstance(groups, bool) or groups < 1:
            raise ValueError(f"groups must be a positive int, got {groups!r}")
        if not isinstance(max_bytes, int) or isinstance(max_bytes, bool) or max_bytes < 1:
            raise ValueError(f"max_bytes must be a positive int, got {max_bytes!r}")
        self.directory = os.fspath(directory)
        self.path = os.path.join(self.directory, ROLLOUTS_FILE)
        self.images_dir = os.path.join(self.directory, IMAGES_DIR)
        self.every = every
        self.reward = reward
        self.groups = groups
        self.max_bytes = max_bytes
        self.query_of = query_of
        self.rank = rank
        self.stats = {"steps_logged": 0, "groups_logged": 0, "groups_skipped": 0, "images_written": 0,
                      "bytes_written": 0, "seconds_in_step": 0.0, "writer_busy_s": 0.0, "writer_cpu_s": 0.0,
                      "masks_kept": 0, "masks_decoded": 0}
        # masks_kept: masks made from the reward call's own logits; masks_decoded: masks of a second engine call
        # (segment_batch: SAM decodes those answers again)
        self.stopped: str | None = None  # why the log stopped (budget, a write error), None while it runs
        self._last_step: int | None = None
        self._opened = False
        self._session = 0
        self._bytes = 0
        self._known_images: set[str] = set()
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=4)  # bounded: a slow disk slows the step, never RAM
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        # Ask the engine to keep its last call's low-res logits: the writer makes the logged masks from them
        # instead of decoding the answers again (that decode was 20 of the writer's 25 ms per logged step on
        # the bench's CPU; bench/RESULTS.md, "Rollout logging"). Engines without the option are decoded again.
        engine = getattr(reward, "engine", None)
        if hasattr(engine, "keep_logits"):
            engine.keep_logits = True

    # ------------------------------------------------------------------ the trainer side
    def wants(self, global_step: int) -> bool:
        """Whether the batch scored at ``global_step`` is logged (the first batch of every ``every``-th step)."""
        return (self.stopped is None and global_step >= 0 and global_step % self.every == 0
                and global_step != self._last_step)

    def observe(self, completions: Sequence[Any], columns: dict[str, Any], names: Sequence[str],
                values: Sequence[Sequence[float]]) -> None:
        """Called with every scored batch: ``completions`` (B x G, TRL's order: a prompt's G copies together),
        the reward's keyword columns (``trainer_state``, ``row_id``, the image and mask columns), the component
        names and their values (one list per component, parallel to ``completions``). Logs it when
        :meth:`wants` the step (``trainer_state.global_step``; a batch without it counts as step 0); returns at
        once otherwise. Never raises (a failure is warned about once and stops the log)."""
        state = columns.get("trainer_state")
        gs = int(getattr(state, "global_step", 0) or 0)
        if not self.wants(gs):
            return
        t0 = time.perf_counter()
        try:
            self._observe(gs, list(completions), columns, list(names), [list(v) for v in values])
        except Exception as exc:  # noqa: BLE001 - looking at rollouts must never stop a training run
            self._stop(f"logging rollouts failed at step {gs + 1}: {type(exc).__name__}: {exc}")
        self.stats["seconds_in_step"] += time.perf_counter() - t0

    def _groups(self, columns: dict[str, Any], n: int) -> list[list[int]]:
        """Row positions of the first ``groups`` prompts: by ``row_id`` when the dataset has one, else by image
        AND target (the mask and ignore region, by content): two queries on one image are two groups, each
        logged with its own ground truth."""
        ids = columns.get("row_id")
        images = columns.get(self.reward.image_key)
        if isinstance(ids, (list, tuple)) and len(ids) == n:
            keys: list[Any] = [int(r) for r in ids]
        elif isinstance(images, (list, tuple)) and len(images) == n:
            masks = columns.get(self.reward.mask_key)
            ignore_key = getattr(self.reward, "ignore_key", None)
            ignores = columns.get(ignore_key) if ignore_key else None
            memo: dict[int, Any] = {}
            keys = [(id(x),
                     _content_key(masks[p], memo) if isinstance(masks, (list, tuple)) and len(masks) == n else None,
                     _content_key(ignores[p], memo) if isinstance(ignores, (list, tuple)) and len(ignores) == n
                     else None)
                    for p, x in enumerate(images)]
        else:
            keys = list(range(n))
        order: dict[Any, list[int]] = {}
        for pos, k in enumerate(keys):
            if k not in order:
                if len(order) == self.groups:
                    continue
                order[k] = []
            order[k].append(pos)
        return list(order.values())

    def _observe(self, gs: int, completions: list[Any], columns: dict[str, Any], names: list[str],
                 values: list[list[float]]) -> None:
        from samr1.answer import parse_answer
        from samr1.io import InputError, load_image, load_mask
        from samr1.rewards.truth import load_instances

        n = len(completions)
        images_col = columns.get(self.reward.image_key)
        masks_col = columns.get(self.reward.mask_key)
        if not isinstance(images_col, (list, tuple)) or not isinstance(masks_col, (list, tuple)):
            raise ValueError(f"the batch has no {self.reward.image_key!r} / {self.reward.mask_key!r} columns")
        ignore_key = getattr(self.reward, "ignore_key", None)
        ignore_col = columns.get(ignore_key) if ignore_key else None
        if not isinstance(ignore_col, (list, tuple)) or len(ignore_col) != n:
            ignore_col = None  # no ignore column (or not one the reward read): nothing is left out
        ids = columns.get("row_id")
        self._last_step = gs
        jobs = []
        for rows in self._groups(columns, n):
            first = rows[0]
            try:
                image = load_image(_first_image(images_col[first]), field=self.reward.image_key)
                # one mask or a row's list of instances (their union is what the mask rewards score)
                gt, _ = load_instances(masks_col[first], field=self.reward.mask_key, expected_size=image.shape[:2])
                if gt is None:  # no instance: an empty target
                    gt = np.zeros(image.shape[:2], bool)
                ign = None
                if ignore_col is not None and ignore_col[first] is not None:
                    ign = load_mask(ignore_col[first], field=ignore_key, expected_size=image.shape[:2])
            except InputError:
                # the reward has warned about this row and scored its mask rewards 0; the log skips it
                self.stats["groups_skipped"] += 1
                continue
            answers = []
            for pos in rows:
                a = parse_answer(_text(completions[pos]), image.shape[:2], self.reward.model_size,
                                 require_points=self.reward.require_points, multi_object=self.reward.multi_object)
                answers.append(a)
            row_id = int(ids[first]) if isinstance(ids, (list, tuple)) else None
            jobs.append({"rows": rows, "image": image, "gt": gt, "ignore": ign, "answers": answers,
                         "row_id": row_id})
        payload = []
        for job in jobs:
            rows = job["rows"]
            comps = [{"text": _text(completions[p]), "rewards": {nm: _finite(values[c][p]) for c, nm in enumerate(names)}}
                     for p in rows]
            query = None
            if self.query_of is not None and job["row_id"] is not None:
                try:
                    query = self.query_of(job["row_id"])
                except (IndexError, KeyError, AttributeError):
                    query = None
            payload.append({**job, "completions": comps, "query": query})
        # this step's engine call, by reference (the engine replaces its record on its next call; the writer
        # finds the logged rows in it by content, so a record of another call is never misapplied)
        kept_of = getattr(getattr(self.reward, "engine", None), "kept_logits", None)
        kept = kept_of() if callable(kept_of) else None
        self._ensure_thread()
        self._queue.put((gs + 1, names, payload, kept))
        self.stats["steps_logged"] += 1

    # ------------------------------------------------------------------ the writer side (its own thread)
    def _ensure_thread(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="samr1-rollouts", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                if self.stopped is None:
                    t0 = time.perf_counter()
                    c0 = time.thread_time()
                    try:
                        self._write_step(*item)
                    except Exception as exc:  # noqa: BLE001 - a full disk must not end the training run
                        self._stop(f"writing rollouts to {self.directory} failed: {type(exc).__name__}: {exc}")
                    # how long the writer was busy (SAM decode, on the decoder's worker threads, encodings,
                    # writes): an upper bound of the work the log adds beside the reward call, whether or not a
                    # free core hides it from the step's wall clock (thread CPU time would miss the decoder's
                    # worker threads)
                    self.stats["writer_busy_s"] += time.perf_counter() - t0
                    # the writer thread's own CPU time: its work without the waits for a core (a decode it
                    # falls back to runs on the decoder's worker threads and is not counted here)
                    self.stats["writer_cpu_s"] += time.thread_time() - c0
            finally:
                item = None  # the step's kept logits go now, not when the next step arrives
                self._queue.task_done()

    def _open(self) -> None:
        """First write of this log: count what is on disk (a resumed run continues the same budget), read the
        session number, close a torn last line."""
        os.makedirs(self.images_dir, exist_ok=True)
        records, _ = read_jsonl(self.path)
        self._session = 1 + max((int(r.get("session", 0)) for r in records
                                 if r.get("type") == "session" and isinstance(r.get("session"), int)), default=0)
        self._known_images = {e[:-4] for e in os.listdir(self.images_dir) if e.endswith(".jpg")}
        size = os.path.getsize(self.path) if os.path.exists(self.path) else 0
        self._bytes = size + _dir_bytes(self.images_dir)
        if size:
            with open(self.path, "rb") as f:
                f.seek(-1, os.SEEK_END)
                torn = f.read(1) != b"\n"
            if torn:
                self._append(b"\n")
        self._opened = True
        self._append_json({"type": "session", "v": FORMAT_VERSION, "session": self._session, "time": time.time(),
                           "pid": os.getpid(), "rank": self.rank, "every": self.every, "groups": self.groups,
                           "max_bytes": self.max_bytes})

    def _append(self, data: bytes) -> None:
        with open(self.path, "ab") as f:
            f.write(data)
        self._bytes += len(data)
        self.stats["bytes_written"] += len(data)

    def _append_json(self, obj: dict[str, Any]) -> None:
        self._append((json.dumps(obj, separators=(",", ":")) + "\n").encode())

    def _encode_image(self, image: np.ndarray) -> tuple[str, bytes | None]:
        from PIL import Image

        key = array_digest(image)
        if key in self._known_images or os.path.exists(os.path.join(self.images_dir, f"{key}.jpg")):
            self._known_images.add(key)
            return key, None
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="JPEG", quality=JPEG_QUALITY, subsampling=0)  # 4:4:4: no colour smear
        return key, buf.getvalue()

    def _write_image(self, key: str, data: bytes) -> None:
        final = os.path.join(self.images_dir, f"{key}.jpg")
        tmp = f"{final}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            f.write(data)
        try:
            os.link(tmp, final)  # fails if the file exists: an image on disk is never rewritten
        except FileExistsError:
            pass
        except OSError:  # a filesystem without hard links
            if not os.path.exists(final):
                os.replace(tmp, final)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        self._known_images.add(key)
        self._bytes += len(data)
        self.stats["bytes_written"] += len(data)
        self.stats["images_written"] += 1

    def _segment(self, payload: list[dict[str, Any]], kept: Any = None) -> None:
        """SAM's masks of the logged answers (``job["masks"]``, None where an answer did not parse). Here, on the
        writer thread, not in the reward call (done inline, SAM's decode of them was ~3 % of a training step on
        the 2-core CPU; bench/RESULTS.md, "Rollout logging").

        ``kept``: the reward call's :class:`samr1.engine.kept.KeptLogits` (None: none). An answer it holds gets
        its mask from the logits the reward scored (postprocess only); the others go to one
        ``engine.segment_batch`` call (the engine is thread-safe, and its cache still holds the images)."""
        from samr1.io import InputError

        images, answers, slots = [], [], []
        for j, job in enumerate(payload):
            job["masks"] = [None] * len(job["answers"])
            for k, a in enumerate(job["answers"]):
                if a.ok:
                    images.append(job["image"])
                    answers.append(a)
                    slots.append((j, k))
        if not answers:
            return
        found = kept.masks(images, answers) if kept is not None else [None] * len(answers)
        self.stats["masks_kept"] += sum(m is not None for m in found)
        rest = [n for n, m in enumerate(found) if m is None]
        errors_of = getattr(self.reward.engine, "image_errors", None)
        if rest and callable(errors_of):  # an image the engine refuses would fail the whole call: leave it out
            errors = errors_of([images[n] for n in rest])
            rest = [n for n, e in zip(rest, errors, strict=True) if e is None]
        if rest:
            try:
                again = self.reward.engine.segment_batch([images[n] for n in rest], [answers[n] for n in rest])
            except InputError:  # the reward scored these rows 0 for the same reason: log them without masks
                again = [None] * len(rest)
            self.stats["masks_decoded"] += sum(m is not None for m in again)
            for n, m in zip(rest, again, strict=True):
                found[n] = m
        for (j, k), m in zip(slots, found, strict=True):
            payload[j]["masks"][k] = m

    def _write_step(self, step: int, names: list[str], payload: list[dict[str, Any]], kept: Any = None) -> None:
        from samr1.io import rle_encode

        if not self._opened:
            self._open()
        self._segment(payload, kept)
        for job in payload:
            key, img_bytes = self._encode_image(job["image"])
            gt, ign = job["gt"], job["ignore"]
            comps = []
            for c, a, m in zip(job["completions"], job["answers"], job["masks"], strict=True):
                text = c["text"]
                objects = [{"bbox": [round(float(v), 2) for v in o.bbox],
                            "points": [[round(float(x), 2), round(float(y), 2)] for x, y in o.points]}
                           for o in a.objects] if a.ok else []
                # the reward's rule: ignore pixels in neither count; two empty masks: 1
                iou = None if m is None else mask_iou_numpy(m, gt, ign)
                comps.append({"text": text[:MAX_TEXT_CHARS], "truncated": len(text) > MAX_TEXT_CHARS, "ok": a.ok,
                              "reason": a.reason, "think": a.think, "objects": objects,
                              "mask": rle_encode(m) if m is not None else None, "iou": iou,
                              "rewards": c["rewards"],
                              "reward": float(sum(v for v in c["rewards"].values() if v is not None))})
            totals = [c["reward"] for c in comps]
            mean = sum(totals) / len(totals)
            std = math.sqrt(sum((t - mean) ** 2 for t in totals) / len(totals))  # GRPO's spread: 0 = no signal
            h, w = job["image"].shape[:2]
            line = (json.dumps({
                "type": "group", "v": FORMAT_VERSION, "session": self._session, "step": step, "rank": self.rank,
                "row_id": job["row_id"], "image": key, "image_file": f"{IMAGES_DIR}/{key}.jpg", "size": [h, w],
                "query": job["query"], "gt": rle_encode(gt),
                "ignore": rle_encode(ign) if ign is not None else None, "components": names, "completions": comps,
                "reward_mean": mean, "reward_std": std, "time": time.time()}, separators=(",", ":")) + "\n").encode()
            need = len(line) + (len(img_bytes) if img_bytes is not None else 0)
            if self._bytes + need > self.max_bytes:
                self._append_json({"type": "budget", "v": FORMAT_VERSION, "session": self._session, "step": step,
                                   "bytes": self._bytes, "max_bytes": self.max_bytes})
                self.stopped = (f"the rollout log reached its budget of {self.max_bytes} bytes at step {step}; "
                                "raise --rollouts-max-mb to keep more")
                warnings.warn(f"samr1 train: {self.stopped}", RuntimeWarning, stacklevel=2)
                return
            if img_bytes is not None:
                self._write_image(key, img_bytes)  # the image first: a record never names a missing image
            self._append(line)
            self.stats["groups_logged"] += 1

    def _stop(self, why: str) -> None:
        with self._lock:
            if self.stopped is None:
                self.stopped = why
                warnings.warn(f"samr1 train: {why}; rollouts are no longer logged (training goes on)",
                              RuntimeWarning, stacklevel=3)

    # ------------------------------------------------------------------ end
    def flush(self) -> None:
        """Wait until every queued step is on disk."""
        if self._thread is not None:
            self._queue.join()

    def close(self) -> None:
        """Write what is queued, stop the writer thread, and tell the engine to stop keeping logits."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None
        engine = getattr(self.reward, "engine", None)
        if getattr(engine, "keep_logits", False):
            engine.keep_logits = False  # its next call drops the record it holds
