"""A least-recently-used map bounded by the bytes of its values (the embedding caches and the server's blobs).

Not thread-safe on its own: every owner already holds a lock around its bookkeeping and calls this under it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["ByteLRU"]

V = TypeVar("V")


class ByteLRU(Generic[V]):
    """``key -> value``; once the values' sizes exceed ``max_bytes`` the least recently used go first.

    Args:
        max_bytes: the budget (>= 0). A value larger than the whole budget is not kept.
        size_of: the size in bytes of a value (e.g. ``lambda a: a.nbytes``).
    """

    def __init__(self, max_bytes: int, size_of: Callable[[V], int]):
        if int(max_bytes) < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self._size_of = size_of
        self._items: OrderedDict[str, V] = OrderedDict()
        self.nbytes = 0  # sum of size_of over the values held

    def get(self, key: str) -> V | None:
        """The value of ``key`` (now the most recently used), or None."""
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: str, value: V) -> int:
        """Keep ``value`` under ``key`` (replacing an older value of that key) and evict the least recently
        used values until the budget holds; returns how many were evicted. A value larger than the budget
        is not kept (and an older value of its key is dropped)."""
        old = self._items.pop(key, None)
        if old is not None:
            self.nbytes -= self._size_of(old)
        size = self._size_of(value)
        if size > self.max_bytes:
            return 0
        self._items[key] = value
        self.nbytes += size
        evicted = 0
        while self.nbytes > self.max_bytes:
            _, ev = self._items.popitem(last=False)
            self.nbytes -= self._size_of(ev)
            evicted += 1
        return evicted

    def keys(self) -> list[str]:
        """The keys held, least recently used first."""
        return list(self._items)

    def clear(self) -> None:
        """Drop every value."""
        self._items.clear()
        self.nbytes = 0

    def __contains__(self, key: str) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)
