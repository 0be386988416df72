"""Torch's intra-op thread count, set for a block of work and put back after it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Torch intra-op threads of the calling thread set to ``n`` for a block, then put back.

    ``torch.set_num_threads`` is per thread for threads that already ran torch (OpenMP's setting is a
    per-thread value), but it also sets the default of threads created later: putting it back restores both.
    """
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)
