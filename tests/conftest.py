"""Fixtures shared by several test modules: models built once per session (they are read-only in tests)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Sequence

import pytest


@pytest.fixture(scope="session")
def tiny_policy(tmp_path_factory):
    """(directory, model, processor) of a tiny random Qwen2.5-VL built in code (samr1.train.tiny_policy)."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from samr1.train.tiny_policy import build_tiny_policy

    path = build_tiny_policy(tmp_path_factory.mktemp("policy"))
    return path, AutoModelForImageTextToText.from_pretrained(path), AutoProcessor.from_pretrained(path)


def pytest_report_header(config):
    """One header line saying which optional conditions hold here: the skip markers (``requires_cuda``,
    ``requires_cpp``, ...) live in tests/_markers.py and skip with these reasons."""
    from _markers import CONDITIONS

    return "samr1 optional: " + ", ".join(f"{name} {'yes' if ok else 'no'}" for name, (ok, _) in CONDITIONS.items())


@pytest.fixture(scope="session")
def shapes_engine():
    """A SamEngine on the shipped tiny-shapes SAM (CPU)."""
    from samr1.engine import SamEngine
    from samr1.sam import load_sam

    return SamEngine(load_sam("tiny-shapes"))


# ----------------------------------------------------------------------------- the Triton interpreter
# triton.jit picks the interpreter when it decorates a kernel, i.e. when samr1.kernels.* is imported, and
# then every kernel of the process is interpreted (slow, and wrong for compiled CUDA tests). So tests of
# the interpreted kernels run in a child pytest started with TRITON_INTERPRET=1: mark them
# ``@only_in_triton_interpreter`` (they skip in the parent) and call ``run_in_triton_interpreter(__file__)``
# from one ordinary test of the same file.
only_in_triton_interpreter = pytest.mark.triton_interpreter


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "triton_interpreter: runs only in the TRITON_INTERPRET=1 child pytest that "
        "tests/conftest.py::run_in_triton_interpreter starts (skipped elsewhere)")


def pytest_collection_modifyitems(config, items):
    from _markers import CUDA_ONLY

    from samr1.ops.backends import interpreting

    # a test that needs CUDA is a GPU test whether or not it says so: `pytest -m gpu` selects it
    for item in items:
        if item.get_closest_marker("gpu") is None and any(m in CUDA_ONLY for m in item.iter_markers("skipif")):
            item.add_marker(pytest.mark.gpu)
    if interpreting():
        return
    skip = pytest.mark.skip(reason="runs in a child pytest with TRITON_INTERPRET=1 (run_in_triton_interpreter in "
                                   "the same file starts it)")
    for item in items:
        if item.get_closest_marker("triton_interpreter") is not None:
            item.add_marker(skip)


def run_in_triton_interpreter(targets: str | Sequence[str], *pytest_args: str, timeout: float = 600,
                              allow_skips: bool = False) -> str:
    """Run the ``@only_in_triton_interpreter`` tests of ``targets`` (test files or node ids) in a child
    pytest with ``TRITON_INTERPRET=1`` (and ``SAMR1_DISABLE_TRITON`` unset) and assert that it passed.

    Args:
        targets: a test file (usually ``__file__``) or node ids.
        pytest_args: extra pytest arguments for the child (e.g. ``"-k", "grouped"``).
        timeout: seconds before the child is killed (the interpreter runs kernels in numpy: slow).
        allow_skips: False asserts that no selected test skipped in the child (an interpreter test that
            skips there never runs anywhere).

    Returns:
        The child's output. Skips the calling test where triton is not installed, and in the child itself.
    """
    from samr1.ops.backends import interpreting

    if interpreting():
        pytest.skip("this is the TRITON_INTERPRET=1 child; the parent process runs this test")
    pytest.importorskip("triton", reason="triton is not installed (pip install triton): the interpreted "
                                         "kernel tests need it")
    targets = [targets] if isinstance(targets, str | os.PathLike) else list(targets)
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    env.pop("SAMR1_DISABLE_TRITON", None)
    cmd = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "-m", "triton_interpreter",
           *map(str, targets), *pytest_args]
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"")[-4000:]
        pytest.fail(f"the TRITON_INTERPRET=1 child ran past {timeout} s: {' '.join(cmd)}\n{out!r}")
    out = proc.stdout + proc.stderr
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    summary = lines[-1] if lines else ""
    counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed)", summary)}
    assert proc.returncode == 0, f"the TRITON_INTERPRET=1 child failed (rc={proc.returncode}):\n{out[-6000:]}"
    assert counts.get("passed", 0) > 0, f"the TRITON_INTERPRET=1 child ran no test:\n{out[-3000:]}"
    assert allow_skips or not counts.get("skipped"), f"tests skipped in the TRITON_INTERPRET=1 child:\n{out[-3000:]}"
    return out
