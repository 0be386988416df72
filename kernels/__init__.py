"""Triton kernels of samr1 (installed as ``samr1.kernels``; GPU, or CPU under TRITON_INTERPRET=1).

Import from here only through the public ops in :mod:`samr1.ops`, which validate inputs and dispatch.
``SAMR1_DISABLE_TRITON=1`` turns every Triton path off. Every launcher enters :func:`launch_guard` of
its input tensor's device before launching, so kernels run on the GPU their tensors live on.
"""

from __future__ import annotations

import contextlib
import os

import torch


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


def launch_device_index(device: torch.device | str) -> int | None:
    """The CUDA device index a launch on tensors of ``device`` must run under; None for non-CUDA devices
    (CPU tensors under TRITON_INTERPRET=1 need no guard). Never initialises CUDA.

    A CUDA device without an index ("cuda") is rejected: tensors always carry one, and guessing "the
    current device" is exactly the mistake the guard exists to avoid.
    """
    device = torch.device(device)
    if device.type != "cuda":
        return None
    if device.index is None:
        raise ValueError("launch_device_index needs a CUDA device with an index (a tensor's .device), got 'cuda'")
    return device.index


def launch_guard(device: torch.device | str) -> contextlib.AbstractContextManager:
    """Context manager to launch a Triton kernel under: ``torch.cuda.device(index)`` for a CUDA device,
    a no-op context otherwise.

    Triton launches on the *current* CUDA device (its stream, its compiled binary), not on the device of
    the pointers it is given; a kernel on ``cuda:1`` tensors launched while ``cuda:0`` is current reads
    foreign memory (an illegal-address error at best). Each launcher wraps its launch in this guard.
    """
    index = launch_device_index(device)
    if index is None:
        return contextlib.nullcontext()
    return torch.cuda.device(index)
