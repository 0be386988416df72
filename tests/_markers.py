"""Skip markers shared by the test modules: one condition each, and a reason that says what to install.

Import them in a test module with ``from _markers import requires_cuda, ...``: pytest's default "prepend"
import mode puts tests/ (it has no ``__init__.py``) on ``sys.path`` when it loads tests/conftest.py, which
imports this module too (for its report header). A marker never turns a test off where its condition holds:
each one is a plain ``skipif`` on a fact of this machine, evaluated once at import.

Packages are looked up with ``importlib.util.find_spec`` (no import: ``sam2`` and ``onnxruntime`` cost
seconds to import), so a test under ``requires_<pkg>`` imports the package itself, inside the test.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

from samr1.cli import install_hint


def _installed(*modules: str) -> bool:
    return all(importlib.util.find_spec(m) is not None for m in modules)


def _missing(*modules: str) -> str:
    """'fastapi, uvicorn is not installed (pip install 'samr1[serve]')' for the modules that are missing."""
    gone = [m for m in modules if importlib.util.find_spec(m) is None] or list(modules)
    verb = "is" if len(gone) == 1 else "are"
    return f"{', '.join(gone)} {verb} not installed ({install_hint(gone[0])})"


def cpp_status() -> tuple[bool, str]:
    """(usable, reason) of the compiled extension ``samr1._C`` (``samr1.ops.backends`` is the one place that knows)."""
    from samr1.ops.backends import cpp_status as status

    return status()


HAS_CUDA = torch.cuda.is_available()
CUDA_DEVICES = torch.cuda.device_count() if HAS_CUDA else 0
HAS_CPP, CPP_REASON = cpp_status()

requires_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device (torch.cuda.is_available() is False)")
requires_two_gpus = pytest.mark.skipif(CUDA_DEVICES < 2, reason=f"needs two CUDA devices ({CUDA_DEVICES} here)")
requires_cpp = pytest.mark.skipif(not HAS_CPP, reason=f"the C++ extension samr1._C is not usable: {CPP_REASON}")
requires_sam2 = pytest.mark.skipif(not _installed("sam2"), reason=_missing("sam2"))
requires_onnxruntime = pytest.mark.skipif(not _installed("onnxruntime"), reason=_missing("onnxruntime"))
requires_tensorrt = pytest.mark.skipif(
    not (_installed("tensorrt") and HAS_CUDA),
    reason=_missing("tensorrt") if not _installed("tensorrt") else "TensorRT needs a CUDA device (none here)")
requires_serve = pytest.mark.skipif(not _installed("fastapi", "uvicorn"), reason=_missing("fastapi", "uvicorn"))

# the skip marks of tests that can only run on a CUDA device: tests/conftest.py marks every test carrying one
# ``gpu`` too, so ``pytest -m gpu`` (the GPU check, bench/gpu_check.sh) selects all of them
CUDA_ONLY = (requires_cuda.mark, requires_two_gpus.mark, requires_tensorrt.mark)

# name -> (condition holds, reason when it does not): the report header of tests/conftest.py
CONDITIONS: dict[str, tuple[bool, str]] = {
    name: (not mark.args[0], mark.kwargs["reason"]) for name, mark in (
        ("cuda", requires_cuda.mark), ("two_gpus", requires_two_gpus.mark), ("cpp", requires_cpp.mark),
        ("sam2", requires_sam2.mark), ("onnxruntime", requires_onnxruntime.mark),
        ("tensorrt", requires_tensorrt.mark), ("serve", requires_serve.mark))
}
