"""Triton kernels of samr1 (installed as ``samr1.kernels``; GPU, or CPU under TRITON_INTERPRET=1).

Import from here only through the public ops in :mod:`samr1.ops`, which validate inputs and dispatch.
``SAMR1_DISABLE_TRITON=1`` turns every Triton path off.
"""

from __future__ import annotations

import os


def triton_disabled() -> bool:
    """True when SAMR1_DISABLE_TRITON=1 asks to keep Triton off."""
    return os.environ.get("SAMR1_DISABLE_TRITON", "") not in ("", "0")


def triton_available() -> tuple[bool, str]:
    """(usable, reason). Triton is usable when importable and not disabled; kernels then launch on CUDA
    tensors, or on CPU tensors when TRITON_INTERPRET=1."""
    if triton_disabled():
        return False, "Triton is disabled by SAMR1_DISABLE_TRITON=1"
    try:
        import triton  # noqa: F401
    except ImportError as exc:
        return False, f"triton is not installed ({exc}); `pip install triton` (Linux + CUDA)"
    return True, "ok"


def interpreting() -> bool:
    """True when TRITON_INTERPRET=1: kernels run on the CPU through Triton's interpreter (tests)."""
    return os.environ.get("TRITON_INTERPRET", "") == "1"
