"""Loads the optional compiled extension ``samr1._C``.

The package must work without it (a CPU-only install with no compiler, or a build that failed):
callers ask :func:`available` and fall back to torch. The reason is reported once, as a warning.
``SAMR1_DISABLE_CPP=1`` turns the extension off on purpose (for A/B runs and tests).
``SAMR1_CPP_THREADS`` sets how many OpenMP threads its kernels may use (:func:`cpp_threads`: by default 1,
or torch's thread count under ``OMP_WAIT_POLICY=passive``).
"""

from __future__ import annotations

import os
import warnings

_C = None
_reason: str | None = None
_warned = False

try:
    from samr1 import _C  # type: ignore[attr-defined,no-redef]
except ImportError as exc:  # pragma: no cover - depends on the build
    _reason = f"samr1._C could not be imported ({exc}); rebuild with `pip install -e .` (needs a C++17 compiler)"


def disabled() -> bool:
    """True when the user switched the C++ backend off with SAMR1_DISABLE_CPP=1."""
    return os.environ.get("SAMR1_DISABLE_CPP", "") not in ("", "0")


def available() -> bool:
    """True when the compiled extension is importable and not disabled."""
    return _C is not None and not disabled()


def why_unavailable() -> str:
    """A one-line reason for the user when :func:`available` is False."""
    if disabled():
        return "the C++ backend is disabled by SAMR1_DISABLE_CPP=1"
    return _reason or "samr1._C is available"


def cpp_threads() -> int:
    """Most OpenMP threads a C++ kernel call may wake. ``SAMR1_CPP_THREADS`` decides when set (a positive
    int, or 0 for torch's intra-op thread count); unset, it is torch's thread count when the environment
    says ``OMP_WAIT_POLICY=passive`` and 1 otherwise. The kernel still wakes one thread per ~16M units of
    work at most (csrc/mask_iou.cpp), so small calls stay on one thread whatever is set.

    Why (bench/RESULTS.md, "OpenMP threads"): the OpenMP runtime is torch's libgomp, set up at ``import
    torch``. Under its default wait policy a woken thread spins and a call's end waits for every woken
    thread to be scheduled: on the shared 2-core CPU two forced threads were slower than one in all 12
    cases at load 9-12 (0.01-0.84x) and in 4 of 6 at load ~2.5 (0.13-0.64x; 1.17x and 1.02x in the
    others), with up to 17x the CPU time. With ``OMP_WAIT_POLICY=passive`` at load ~2.8, calls of 10M+
    units of work ran 1.56-1.81x faster on two threads at ~1.1x the CPU time. The policy only counts
    when set before torch is imported -- export it before Python starts; samr1 cannot set it for you,
    and setting it later makes this function assume a policy libgomp never saw.

    Raises:
        ValueError: ``SAMR1_CPP_THREADS`` is not an integer >= 0 (the message says how to fix it).
    """
    import torch

    raw = os.environ.get("SAMR1_CPP_THREADS", "").strip()
    if raw == "":
        passive = os.environ.get("OMP_WAIT_POLICY", "").strip().lower() == "passive"
        return max(1, torch.get_num_threads()) if passive else 1
    try:
        n = int(raw)
    except ValueError:
        n = -1
    if n < 0:
        raise ValueError(f"SAMR1_CPP_THREADS must be an integer >= 1 (threads for the C++ kernels) or 0 (torch's "
                         f"thread count), got {raw!r}; unset it for the default")
    return max(1, torch.get_num_threads()) if n == 0 else n


def get():
    """Return the extension module, or raise with how to get it."""
    if not available():
        raise RuntimeError(why_unavailable())
    return _C


def warn_once_if_missing() -> None:
    """Say once per process that the fallback is in use (never silent, never noisy)."""
    global _warned
    if not available() and not _warned and not disabled():
        _warned = True
        warnings.warn(f"{why_unavailable()}; using the torch fallback", RuntimeWarning, stacklevel=3)
