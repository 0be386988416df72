"""Triton kernels of samr1 (installed as ``samr1.kernels``; GPU, or CPU under TRITON_INTERPRET=1).

This package holds only ``@triton.jit`` kernels, their launchers and the launch helpers below. Call
them through the public ops in :mod:`samr1.ops`, which validate inputs and dispatch; whether Triton is
usable, ``SAMR1_DISABLE_TRITON=1`` and the "auto" rule live in :mod:`samr1.ops.backends`. Every
launcher enters :func:`launch_guard` of its input tensor's device before launching, so kernels run on
the GPU their tensors live on.
"""

from __future__ import annotations

import contextlib

import torch


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
