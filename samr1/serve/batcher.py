"""One worker thread in front of the models: a bounded queue, and concurrent requests batched together.

Every request that needs a model (SAM, the policy, the reward) becomes a job of some ``kind`` on ONE
queue. The worker takes the first job, then every job already waiting (up to ``max_batch``, waiting at
most ``max_wait_s`` for more), groups them by kind and runs each group as one call of that kind's handler
(e.g. one engine call for 32 ``/segment`` requests: one encoder pass per distinct image, one batched
decode). One worker means the models are used by one thread at a time: no two torch calls fight for the
same cores and no handler needs to be thread-safe.

A full queue refuses new jobs at once (:class:`QueueFull`, the server answers 503) instead of letting
latency grow without bound.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

__all__ = ["Batcher", "QueueFull"]


class QueueFull(RuntimeError):
    """The job queue is at its bound; retry later."""


_STOP = object()


class Batcher:
    """A bounded job queue served by one worker thread that batches jobs of the same kind.

    Args:
        handlers: kind -> ``fn(payloads: list) -> list`` (one result per payload, same order). A handler
            that raises fails every job of its group with that exception.
        max_queue: jobs waiting at most (beyond it :meth:`submit` raises :class:`QueueFull`).
        max_batch: most jobs handed to one handler call.
        max_wait_s: how long the worker waits for more jobs after the first one of a batch (0: take only
            what is already queued; latency over batch size).
    """

    def __init__(self, handlers: dict[str, Callable[[list[Any]], list[Any]]], *, max_queue: int = 256,
                 max_batch: int = 64, max_wait_s: float = 0.002):
        if max_queue < 1 or max_batch < 1 or max_wait_s < 0:
            raise ValueError(f"max_queue and max_batch must be >= 1 and max_wait_s >= 0, got {max_queue}, "
                             f"{max_batch}, {max_wait_s}")
        self.handlers = dict(handlers)
        self.max_batch = int(max_batch)
        self.max_wait_s = float(max_wait_s)
        self._q: queue.Queue = queue.Queue(maxsize=int(max_queue))
        self.stats: dict[str, Any] = {"jobs": 0, "batches": 0, "rejected": 0, "largest_batch": 0}
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="samr1-batcher", daemon=True)
        self._thread.start()

    def submit(self, kind: str, payload: Any) -> Future:
        """Queue one job; returns a Future with its result. Raises :class:`QueueFull` when the queue is full."""
        if kind not in self.handlers:
            raise ValueError(f"no handler for job kind {kind!r}; known: {sorted(self.handlers)}")
        if self._closed:
            # the worker is gone or going: a queued job would never run and its caller would wait forever
            raise QueueFull("the server is shutting down; retry on another instance")
        fut: Future = Future()
        try:
            self._q.put_nowait((kind, payload, fut))
        except queue.Full:
            with self._lock:
                self.stats["rejected"] += 1
            raise QueueFull(f"the server's queue is full ({self._q.maxsize} jobs waiting); retry later") from None
        return fut

    @property
    def depth(self) -> int:
        """Jobs waiting now."""
        return self._q.qsize()

    def close(self, timeout: float = 10.0) -> None:
        """Stop the worker after the jobs already queued (jobs submitted later are never run)."""
        self._closed = True
        deadline = time.monotonic() + timeout
        while self._thread.is_alive() and time.monotonic() < deadline:
            try:
                self._q.put(_STOP, timeout=0.1)
                break
            except queue.Full:
                continue
        self._thread.join(max(0.0, deadline - time.monotonic()))

    def _loop(self) -> None:
        while True:
            first = self._q.get()
            if first is _STOP:
                return
            jobs = [first]
            stop = False
            deadline = time.monotonic() + self.max_wait_s
            while len(jobs) < self.max_batch:
                left = deadline - time.monotonic()
                try:
                    job = self._q.get(timeout=left) if left > 0 else self._q.get_nowait()
                except queue.Empty:
                    break
                if job is _STOP:
                    stop = True
                    break
                jobs.append(job)
            self._run(jobs)
            if stop:
                return

    def _run(self, jobs: list[tuple[str, Any, Future]]) -> None:
        by_kind: dict[str, list[tuple[Any, Future]]] = {}
        for kind, payload, fut in jobs:
            if fut.set_running_or_notify_cancel():
                by_kind.setdefault(kind, []).append((payload, fut))
        with self._lock:
            self.stats["jobs"] += len(jobs)
            self.stats["batches"] += len(by_kind)
            self.stats["largest_batch"] = max(self.stats["largest_batch"], max((len(v) for v in by_kind.values()),
                                                                               default=0))
        for kind, group in by_kind.items():
            try:
                results = self.handlers[kind]([p for p, _ in group])
                if len(results) != len(group):
                    raise RuntimeError(f"handler {kind!r} returned {len(results)} results for {len(group)} jobs")
            except BaseException as exc:  # noqa: BLE001 - every waiting request must get an answer
                for _, fut in group:
                    fut.set_exception(exc)
                continue
            for (_, fut), res in zip(group, results, strict=True):
                fut.set_result(res)
