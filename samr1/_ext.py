"""Loads the optional compiled extension ``samr1._C``.

The package must work without it (a CPU-only install with no compiler, or a build that failed):
callers ask :func:`available` and fall back to torch. The reason is reported once, as a warning.
``SAMR1_DISABLE_CPP=1`` turns the extension off on purpose (for A/B runs and tests).
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
