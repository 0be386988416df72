"""Which kernel body runs an op: the one place that knows whether the C++ extension and Triton are usable,
the one "auto" rule, and which backend each op ran last.

Backends (``BACKENDS``): "torch" (every op's reference body, always there), "cpp" (the compiled extension
``samr1._C``, CPU tensors), "triton" (``samr1.kernels``, CUDA tensors) and "auto" (choose). An op says
which fast bodies it has (``bodies``) and asks :func:`resolve` what to run; after running it calls
:func:`record`, so that :func:`last` / :func:`last_all` can say what ran (the engines put it in their
``stats``).

The "auto" rule, the same for every op:

* CUDA tensors: "triton" when Triton is usable and the op has a Triton body, else "torch";
* CPU tensors: "cpp" when the C++ extension is usable and the op has a C++ body, else "torch";
* other devices: "torch".

When a fast path was expected (the op has the body for that device) but is missing -- not installed,
failed to build -- a RuntimeWarning says so once per process per reason, and "torch" runs. A fast path
switched off on purpose (``SAMR1_DISABLE_CPP=1``, ``SAMR1_DISABLE_TRITON=1``, for A/B runs and tests)
falls back silently. An explicitly requested backend is never swapped for another: unusable ->
RuntimeError with how to get it; the op has no such body, the tensors are on the wrong device for it,
or the name is unknown -> ValueError.

``TRITON_INTERPRET=1`` (Triton's interpreter runs kernels on the CPU, in numpy): "auto" never picks
Triton while it is set, on any device, and explicit "triton" on CPU tensors works only while it is set.
Why: the interpreter exists to test kernels without a GPU; it is orders of magnitude slower than the
torch body, and on CUDA tensors it copies them to the host and back, so choosing it by default would
silently turn a fast call into the slowest one. Tests that want the interpreted kernel ask for
``backend="triton"`` explicitly, and so compare it against the reference deliberately. It must be set
before ``samr1.kernels`` is imported (``triton.jit`` picks the interpreter when it decorates a kernel),
which is why the test suite runs those tests in a child process.

What ran is kept per thread (``threading.local``): a data-loader or serving thread's calls do not
overwrite the training thread's record. Under ``torch.compile`` it is recorded when the compiled graph
runs the op.
"""

from __future__ import annotations

import os
import threading
import warnings

import torch

__all__ = [
    "BACKENDS",
    "cpp_module",
    "cpp_status",
    "cpp_threads",
    "interpreting",
    "last",
    "last_all",
    "record",
    "resolve",
    "triton_status",
]

BACKENDS = ("auto", "torch", "cpp", "triton")
_FAST = ("cpp", "triton")

try:
    # The extension module itself, not an attribute of the package face (samr1/__init__.py): nothing below the
    # face imports the face, so the kernels' door never loads what is built on top of it.
    import samr1._C as _C  # type: ignore[import-not-found]

    _cpp_import_error: str | None = None
except ImportError as exc:  # pragma: no cover - depends on the build
    _C = None
    _cpp_import_error = (f"samr1._C could not be imported ({exc}); rebuild with `pip install -e .` "
                         "(needs a C++17 compiler)")

_warned: set[str] = set()
_warn_lock = threading.Lock()
_state = threading.local()


def _env_on(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")


# ----------------------------------------------------------------------------- availability
def cpp_status() -> tuple[bool, str]:
    """(usable, reason) of the C++ extension ``samr1._C``: importable and not switched off with
    ``SAMR1_DISABLE_CPP=1``. The reason says how to get it when it is not usable."""
    if _env_on("SAMR1_DISABLE_CPP"):
        return False, "the C++ backend is disabled by SAMR1_DISABLE_CPP=1 (unset it to use samr1._C)"
    if _C is None:
        return False, _cpp_import_error or "samr1._C is not available"
    return True, "ok"


def triton_status() -> tuple[bool, str]:
    """(usable, reason) of Triton: importable and not switched off with ``SAMR1_DISABLE_TRITON=1``.
    Usable does not mean usable on every device: see :func:`resolve`."""
    if _env_on("SAMR1_DISABLE_TRITON"):
        return False, "Triton is disabled by SAMR1_DISABLE_TRITON=1 (unset it to use the Triton kernels)"
    try:
        import triton  # noqa: F401
    except ImportError as exc:
        return False, f"triton is not installed ({exc}); `pip install triton` (Linux + CUDA)"
    return True, "ok"


def interpreting() -> bool:
    """True when ``TRITON_INTERPRET=1``: Triton kernels run on the CPU through its interpreter (tests)."""
    return os.environ.get("TRITON_INTERPRET", "") == "1"


def cpp_module():
    """The extension module ``samr1._C``; RuntimeError saying how to get it when it is not usable."""
    ok, why = cpp_status()
    if not ok:
        raise RuntimeError(why)
    return _C


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


# ----------------------------------------------------------------------------- the one rule
def _warn_once(op: str, backend: str, why: str) -> None:
    """A RuntimeWarning the first time a fast path is missing for this reason (never silent, never noisy)."""
    with _warn_lock:
        if why in _warned:
            return
        _warned.add(why)
    warnings.warn(f"{op}: the {backend} backend is unavailable ({why}); using the torch fallback",
                  RuntimeWarning, stacklevel=4)


def _explicit(op: str, backend: str, device: torch.device) -> str:
    """Check an explicitly requested fast backend on ``device``; return it or raise saying how to fix it."""
    if backend == "cpp":
        if device.type != "cpu":
            raise ValueError(f"{op}: backend='cpp' needs CPU tensors (got {device.type}); use backend='auto' or "
                             "'triton' on CUDA, or move the inputs with .cpu()")
        ok, why = cpp_status()
        if not ok:
            raise RuntimeError(f"{op}: backend='cpp' is unavailable: {why}")
        return "cpp"
    ok, why = triton_status()
    if not ok:
        raise RuntimeError(f"{op}: backend='triton' is unavailable: {why}")
    if device.type == "cuda" or (device.type == "cpu" and interpreting()):
        return "triton"
    raise ValueError(f"{op}: backend='triton' runs on CUDA tensors (got {device.type}); move the inputs with "
                     ".cuda(), or set TRITON_INTERPRET=1 before importing samr1 to interpret it on the CPU "
                     "(slow, for tests)")


def resolve(op: str, backend: str, device: torch.device | str, bodies: tuple[str, ...]) -> str:
    """The backend a call of ``op`` with ``backend`` on tensors of ``device`` runs: "torch", "cpp" or
    "triton" (the module docstring has the rule). Runs nothing.

    Args:
        op: the op's name, as in :func:`record` and in messages ("mask_iou", "prompt_pack", ...).
        backend: one of ``BACKENDS``.
        device: the device of the op's input tensors.
        bodies: the fast bodies the op has, a subset of ("cpp", "triton"); "torch" is implied.

    Raises:
        ValueError: unknown backend name; the op has no body for it; wrong device for it.
        RuntimeError: an explicitly requested backend is unusable here (with how to get it).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    unknown = [b for b in bodies if b not in _FAST]
    if unknown:
        raise ValueError(f"{op}: bodies must be a subset of {_FAST} (torch is implied), got {bodies!r}")
    device = torch.device(device)
    if backend == "torch":
        return "torch"
    if backend != "auto":
        if backend not in bodies:
            have = ", ".join(repr(b) for b in ("auto", "torch", *bodies))
            raise ValueError(f"{op} has no {backend!r} body; use backend={have}")
        return _explicit(op, backend, device)
    if device.type == "cuda" and "triton" in bodies and not interpreting():
        ok, why = triton_status()
        if ok:
            return "triton"
        if not _env_on("SAMR1_DISABLE_TRITON"):
            _warn_once(op, "triton", why)
    elif device.type == "cpu" and "cpp" in bodies:
        ok, why = cpp_status()
        if ok:
            return "cpp"
        if not _env_on("SAMR1_DISABLE_CPP"):
            _warn_once(op, "cpp", why)
    return "torch"


# ----------------------------------------------------------------------------- what ran
def _ran() -> dict[str, str]:
    ran = getattr(_state, "ran", None)
    if ran is None:
        ran = _state.ran = {}
    return ran


def record(op: str, backend: str) -> None:
    """Note that ``op`` just ran on ``backend`` ("torch", "cpp" or "triton") in this thread."""
    if backend not in BACKENDS[1:]:
        raise ValueError(f"record: backend must be one of {BACKENDS[1:]} (what ran), got {backend!r}")
    _ran()[op] = backend


def last(op: str) -> str | None:
    """The backend of this thread's most recent call of ``op``; None before the first."""
    return _ran().get(op)


def last_all() -> dict[str, str]:
    """Every op this thread ran -> the backend of its most recent call (a copy)."""
    return dict(_ran())
