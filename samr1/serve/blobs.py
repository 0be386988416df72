"""The server's uploaded images and masks, by content key, in a byte-bounded LRU (thread-safe).

A ``/score`` request names its images and masks by key; only keys missing here are uploaded, so the G
completions of one prompt (and every later step that reuses the image) cost one upload. Eviction only
means a later request is told the key is missing and uploads it again.
"""

from __future__ import annotations

import threading

import numpy as np

from samr1.lru import ByteLRU

__all__ = ["BlobStore"]


class BlobStore:
    """Content key -> numpy array (``H x W x 3`` uint8 image or ``H x W`` bool mask), LRU within ``max_bytes``.

    Args:
        max_bytes: budget over the arrays' ``nbytes``; the least recently used entries go first. An entry
            larger than the whole budget is not kept (its request is still served).
    """

    def __init__(self, max_bytes: int = 1 << 30):
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self._lru: ByteLRU[np.ndarray] = ByteLRU(self.max_bytes, lambda a: a.nbytes)
        self._lock = threading.Lock()
        self.stats = {"puts": 0, "hits": 0, "misses": 0, "evictions": 0}

    def get(self, key: str) -> np.ndarray | None:
        with self._lock:
            arr = self._lru.get(key)
            if arr is None:
                self.stats["misses"] += 1
                return None
            self.stats["hits"] += 1
            return arr

    def put(self, key: str, arr: np.ndarray) -> None:
        # shared by concurrent requests; the engine and the reward only read it (left writable because
        # torch.from_numpy warns on read-only arrays)
        with self._lock:
            self.stats["puts"] += 1
            self.stats["evictions"] += self._lru.put(key, arr)

    def __contains__(self, key: str) -> bool:
        with self._lock:
            return key in self._lru

    def __len__(self) -> int:
        with self._lock:
            return len(self._lru)

    @property
    def bytes_held(self) -> int:
        with self._lock:
            return self._lru.nbytes
