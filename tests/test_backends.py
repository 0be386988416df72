"""samr1.ops.backends: the one "auto" rule, explicit requests, the env switches, warn-once, and the per-thread
record of what ran. Availability is simulated (the extension module / triton import patched away), so
every branch runs on any machine; no kernel is launched."""

from __future__ import annotations

import sys
import threading
import warnings

import pytest

from samr1.ops import backends

BOTH = ("cpp", "triton")


@pytest.fixture
def clean(monkeypatch):
    """Both fast paths usable (simulated), no env switches, no interpreter, no warning given yet."""
    for var in ("SAMR1_DISABLE_CPP", "SAMR1_DISABLE_TRITON", "TRITON_INTERPRET"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(backends, "_C", object())
    monkeypatch.setitem(sys.modules, "triton", type(sys)("triton"))
    monkeypatch.setattr(backends, "_warned", set())
    return monkeypatch


def _no_cpp(mp):
    mp.setattr(backends, "_C", None)
    mp.setattr(backends, "_cpp_import_error", "samr1._C could not be imported (simulated)")


def _no_triton(mp):
    mp.setitem(sys.modules, "triton", None)  # `import triton` raises ImportError


def test_auto_rule(clean):
    assert backends.resolve("op", "auto", "cuda:0", BOTH) == "triton"
    assert backends.resolve("op", "auto", "cpu", BOTH) == "cpp"
    assert backends.resolve("op", "auto", "cpu", ("triton",)) == "torch"  # never Triton on CPU tensors
    assert backends.resolve("op", "auto", "cuda:0", ("cpp",)) == "torch"
    assert backends.resolve("op", "auto", "meta", BOTH) == "torch"
    assert backends.resolve("op", "torch", "cuda:0", BOTH) == "torch"
    clean.setenv("TRITON_INTERPRET", "1")  # auto never picks the interpreter, on any device
    assert backends.interpreting()
    assert backends.resolve("op", "auto", "cuda:0", BOTH) == "torch"
    assert backends.resolve("op", "auto", "cpu", BOTH) == "cpp"


def test_explicit_requests_that_run(clean):
    assert backends.resolve("op", "cpp", "cpu", BOTH) == "cpp"
    assert backends.resolve("op", "triton", "cuda:1", BOTH) == "triton"
    clean.setenv("TRITON_INTERPRET", "1")
    assert backends.resolve("op", "triton", "cpu", BOTH) == "triton"  # explicit: the interpreter, on purpose


# (setup, (op, backend, device, bodies), exception, message): what cannot run raises, saying how to fix it
RAISES = [
    (None, ("op", "cpp", "cuda:0", BOTH), ValueError, "op: backend='cpp' needs CPU tensors"),
    (None, ("op", "triton", "cpu", BOTH), ValueError, "runs on CUDA tensors.*TRITON_INTERPRET=1"),
    (None, ("prompt_pack", "cpp", "cpu", ("triton",)), ValueError,
     "prompt_pack has no 'cpp' body; use backend='auto', 'torch', 'triton'"),
    (None, ("op", "cuda", "cpu", BOTH), ValueError, "backend must be one of"),
    (None, ("op", "auto", "cpu", ("torch",)), ValueError, "bodies must be a subset"),
    ("SAMR1_DISABLE_CPP", ("op", "cpp", "cpu", BOTH), RuntimeError,
     "op: backend='cpp' is unavailable: .*SAMR1_DISABLE_CPP=1"),
    ("SAMR1_DISABLE_TRITON", ("op", "triton", "cuda:0", BOTH), RuntimeError, "SAMR1_DISABLE_TRITON=1"),
    (_no_triton, ("op", "triton", "cuda:0", BOTH), RuntimeError, "pip install triton"),
    (_no_cpp, ("op", "cpp", "cpu", BOTH), RuntimeError, "simulated"),
]


@pytest.mark.parametrize("setup,args,exc,match", RAISES)
def test_what_cannot_run_raises(clean, setup, args, exc, match):
    if isinstance(setup, str):
        clean.setenv(setup, "1")
    elif setup is not None:
        setup(clean)
    with pytest.raises(exc, match=match):
        backends.resolve(*args)


def test_env_switches_and_missing_fast_paths(clean):
    clean.setenv("SAMR1_DISABLE_CPP", "1")
    clean.setenv("SAMR1_DISABLE_TRITON", "1")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # switched off on purpose: no warning
        assert backends.resolve("op", "auto", "cpu", BOTH) == "torch"
        assert backends.resolve("op", "auto", "cuda:0", BOTH) == "torch"
    with pytest.raises(RuntimeError, match="SAMR1_DISABLE_CPP=1"):
        backends.cpp_module()
    clean.delenv("SAMR1_DISABLE_CPP")
    clean.delenv("SAMR1_DISABLE_TRITON")
    _no_cpp(clean)
    _no_triton(clean)
    assert backends.cpp_status() == (False, "samr1._C could not be imported (simulated)")
    assert not backends.triton_status()[0] and "pip install triton" in backends.triton_status()[1]


def test_missing_fast_path_warns_once_per_reason(clean):
    _no_cpp(clean)
    _no_triton(clean)
    with pytest.warns(RuntimeWarning, match="op_a: the cpp backend is unavailable .*simulated.*torch fallback"):
        assert backends.resolve("op_a", "auto", "cpu", BOTH) == "torch"
    with pytest.warns(RuntimeWarning, match="the triton backend is unavailable"):
        assert backends.resolve("op_a", "auto", "cuda:0", BOTH) == "torch"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same reasons again, from any op: silent
        assert backends.resolve("op_b", "auto", "cpu", BOTH) == "torch"
        assert backends.resolve("op_a", "auto", "cuda:0", BOTH) == "torch"
        assert backends.resolve("op_c", "auto", "cpu", ("triton",)) == "torch"  # no fast path expected


def test_record_is_per_thread():
    backends.record("test_op_x", "cpp")
    backends.record("test_op_y", "torch")
    backends.record("test_op_x", "triton")
    assert backends.last("test_op_x") == "triton" and backends.last("never_ran") is None
    seen = {}

    def other():
        seen["before"] = backends.last("test_op_x")
        backends.record("test_op_x", "torch")
        seen["all"] = backends.last_all()

    t = threading.Thread(target=other)
    t.start()
    t.join()
    assert seen == {"before": None, "all": {"test_op_x": "torch"}}
    assert backends.last("test_op_x") == "triton"
    mine = backends.last_all()
    assert mine["test_op_x"] == "triton" and mine["test_op_y"] == "torch"
    mine["test_op_x"] = "changed"  # a copy
    assert backends.last("test_op_x") == "triton"
    with pytest.raises(ValueError, match="what ran"):
        backends.record("test_op_x", "auto")


def test_cpp_threads_setting(monkeypatch):
    import torch

    monkeypatch.delenv("SAMR1_CPP_THREADS", raising=False)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert backends.cpp_threads() == 1  # the measured default under libgomp's spinning policy (bench/RESULTS.md)
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    assert backends.cpp_threads() == max(1, torch.get_num_threads())
    monkeypatch.setenv("OMP_WAIT_POLICY", "active")
    assert backends.cpp_threads() == 1
    monkeypatch.setenv("SAMR1_CPP_THREADS", " 3 ")
    assert backends.cpp_threads() == 3
    monkeypatch.setenv("SAMR1_CPP_THREADS", "0")
    assert backends.cpp_threads() == max(1, torch.get_num_threads())
    for bad in ("two", "-1", "1.5"):
        monkeypatch.setenv("SAMR1_CPP_THREADS", bad)
        with pytest.raises(ValueError, match="SAMR1_CPP_THREADS must be an integer"):
            backends.cpp_threads()
