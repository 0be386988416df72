"""Compile every Triton kernel of ``samr1.kernels`` ahead of time for a CUDA target, without a GPU.

A kernel that the installed Triton cannot build for the target (a frontend or code-generation error, an
op the version lacks) fails here, on any machine with Triton and its bundled ``ptxas``, instead of on a
lent GPU. What is compiled is what the library launches: each kernel's argument types, constexprs and
``num_warps`` are taken from a real call of the public op (``samr1.ops``) whose launch is intercepted
before it reaches a device, so the compiled signature cannot drift from the launcher's. CUDA tile
configurations (a kernel module's ``TILES["cuda"]``) replace the CPU ones the intercepted call on CPU
tensors would pick. Specialisation follows Triton's defaults: an int argument equal to 1 becomes a
constexpr, ints divisible by 16 and 16-byte aligned pointers get the divisibility hint.

Every ``@triton.jit`` function named ``*_kernel`` in a ``samr1.kernels`` module must be launched by one of
the ``DRIVERS`` below; one that is not is reported as not covered (a failure): add its op's call there.

    python -m samr1.bench.triton_aot [--target cuda:90:32] [--out DIR]

Rows (one per kernel; ``out/triton_aot.jsonl`` with ``--out``): kernel, target, the Triton version,
``ok``, ``error``, ``compile_s``, ``cubin_bytes``, ``shared`` (bytes of shared memory), the
signature and constexprs compiled. Must run in a process where ``TRITON_INTERPRET`` is unset when
``samr1.kernels`` is first imported (the interpreter replaces the compiler); ``run`` checks this.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import pkgutil
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import torch
from samr1.bench.harness import format_table, write_records

DEFAULT_TARGET = "cuda:90:32"  # H100 / H200: sm_90, warp size 32

_TORCH_TO_TRITON = {
    torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16", torch.float64: "fp64",
    torch.uint8: "u8", torch.int8: "i8", torch.int16: "i16", torch.int32: "i32", torch.int64: "i64",
    torch.bool: "i1",
}


class _Intercepted(Exception):
    """Raised by a recorder after it has noted a launch: the call stops before any device is touched."""


class _Recorder:
    """Stands in for a ``JITFunction`` during a driver call: ``kernel[grid](*args, **kw)`` records the
    arguments and raises :class:`_Intercepted`."""

    def __init__(self, fn, seen: dict[str, tuple[Any, tuple, dict]]):
        self.fn = fn
        self.seen = seen

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.seen[self.fn.__name__] = (self.fn, args, kwargs)
            raise _Intercepted

        return launch


def kernel_modules() -> list[Any]:
    """Every module of the ``samr1.kernels`` package, imported."""
    import samr1.kernels as pkg

    return [importlib.import_module(f"{pkg.__name__}.{m.name}") for m in pkgutil.iter_modules(pkg.__path__)]


def _jit_functions(module) -> dict[str, Any]:
    from triton.runtime.jit import JITFunction

    return {name: obj for name, obj in vars(module).items()
            if isinstance(obj, JITFunction) and obj.fn.__module__ == module.__name__}


def kernels() -> dict[str, Any]:
    """``"module.name" -> JITFunction`` for every ``@triton.jit`` function named ``*_kernel`` (a launched
    kernel; helpers called from kernels are compiled as part of them).

    Raises:
        RuntimeError: the kernels were imported under ``TRITON_INTERPRET=1`` (interpreted, not compilable).
    """
    out = {}
    for module in kernel_modules():
        names = [n for n, o in vars(module).items() if n.endswith("_kernel") and callable(o)]
        jit = _jit_functions(module)
        for n in names:
            if n not in jit:
                raise RuntimeError(f"{module.__name__}.{n} is not a compilable triton.jit function (was "
                                   "samr1.kernels imported with TRITON_INTERPRET=1? run this in a fresh process "
                                   "without it)")
            out[f"{module.__name__.rsplit('.', 1)[-1]}.{n}"] = jit[n]
    return out


@contextlib.contextmanager
def _intercepting(seen: dict) -> Iterator[None]:
    """Swap every JITFunction global of the kernel modules for a recorder, CUDA tiles for CPU ones, and set
    ``TRITON_INTERPRET=1`` so that the public ops accept ``backend="triton"`` on CPU tensors; undo it all."""
    saved: list[tuple[Any, str, Any]] = []
    old_env = os.environ.get("TRITON_INTERPRET")
    try:
        for module in kernel_modules():
            for name, fn in _jit_functions(module).items():
                saved.append((module, name, fn))
                setattr(module, name, _Recorder(fn, seen))
            tiles = getattr(module, "TILES", None)
            if isinstance(tiles, dict) and "cuda" in tiles:
                saved.append((module, "TILES", tiles))
                module.TILES = {**tiles, "cpu": tiles["cuda"]}
        os.environ["TRITON_INTERPRET"] = "1"
        yield
    finally:
        if old_env is None:
            os.environ.pop("TRITON_INTERPRET", None)
        else:
            os.environ["TRITON_INTERPRET"] = old_env
        for module, name, obj in reversed(saved):
            setattr(module, name, obj)


def _drive_mask_iou() -> None:
    from samr1.geometry import resize_longest_side
    from samr1.ops import mask_iou_from_logits

    size = (37, 53)
    mask_iou_from_logits(torch.randn(3, 256, 256), torch.zeros(size, dtype=torch.bool),
                         resize_longest_side(*size, 1024), size, backend="triton")


def _drive_mask_iou_sam2() -> None:
    from samr1.ops.mask_iou_sam2 import mask_iou_sam2

    mask_iou_sam2(torch.randn(3, 256, 256), torch.zeros((37, 53), dtype=torch.bool), backend="triton")


def _drive_prompt_pack() -> None:
    from samr1.ops import pack_prompts
    from samr1.sam import load_sam
    from samr1.sam.prompts import PromptBatch

    sam = load_sam("tiny")
    batch = PromptBatch.from_lists([0, 0], [[1, 2, 30, 40], None], [[[5, 6]], [[3, 4], [7, 8]]], None, [(50, 60)])
    pack_prompts(sam, batch, backend="triton")


# the public calls that launch the kernels (one each is enough: every launch of an op has the same types)
DRIVERS: dict[str, Callable[[], None]] = {
    "mask_iou": _drive_mask_iou,
    "mask_iou_sam2": _drive_mask_iou_sam2,
    "prompt_pack": _drive_prompt_pack,
}


def record_launches() -> dict[str, tuple[Any, tuple, dict]]:
    """Run every driver with launches intercepted; ``kernel name -> (JITFunction, args, kwargs)``.

    Raises:
        RuntimeError: a driver finished without launching a kernel (it no longer reaches Triton).
    """
    seen: dict[str, tuple[Any, tuple, dict]] = {}
    with _intercepting(seen):
        for name, drive in DRIVERS.items():
            before = len(seen)
            try:
                drive()
            except _Intercepted:
                pass
            if len(seen) == before:
                raise RuntimeError(f"driver {name!r} launched no Triton kernel (backend='triton' did not reach one)")
    return seen


def _arg_type(value: Any) -> tuple[str, Any | None, bool]:
    """(triton type, constexpr value or None, divisible by 16) of one launch argument, as Triton's default
    specialisation sees it."""
    if isinstance(value, torch.Tensor):
        if value.dtype not in _TORCH_TO_TRITON:
            raise TypeError(f"no Triton pointer type for a {value.dtype} tensor")
        return "*" + _TORCH_TO_TRITON[value.dtype], None, value.data_ptr() % 16 == 0
    if isinstance(value, bool):
        return "i1", None, False
    if isinstance(value, int):
        if value == 1:
            return "constexpr", 1, False
        return ("i32" if -2**31 <= value < 2**31 else "i64"), None, value % 16 == 0
    if isinstance(value, float):
        return "fp32", None, False
    raise TypeError(f"unsupported launch argument {type(value).__name__}")


def compile_spec(fn, args: tuple, kwargs: dict) -> dict[str, Any]:
    """The ``triton.compile`` inputs of one recorded launch: signature, constexprs, attrs, options."""
    names = list(fn.arg_names)
    params = {p.name: p for p in fn.params}
    kwargs = dict(kwargs)
    options = {k: kwargs.pop(k) for k in ("num_warps", "num_stages") if k in kwargs}
    values = dict(zip(names, args, strict=False))
    values.update(kwargs)
    missing = [n for n in names if n not in values]
    if missing:
        raise TypeError(f"{fn.__name__}: launch without {missing}")
    signature: dict[str, str] = {}
    constexprs: dict[str, Any] = {}
    divisible: list[int] = []
    for i, n in enumerate(names):
        if params[n].is_constexpr:
            signature[n] = "constexpr"
            constexprs[n] = values[n]
            continue
        ty, const, div = _arg_type(values[n])
        if const is not None and not params[n].do_not_specialize:
            signature[n] = "constexpr"
            constexprs[n] = const
            continue
        signature[n] = "i32" if ty == "constexpr" else ty
        if div and not params[n].do_not_specialize:
            divisible.append(i)
    return {"signature": signature, "constexprs": constexprs,
            "attrs": {(i,): [["tt.divisibility", 16]] for i in divisible}, "options": options}


def parse_target(text: str):
    """``"cuda:90:32"`` -> ``GPUTarget("cuda", 90, 32)``."""
    from triton.backends.compiler import GPUTarget

    try:
        backend, arch, warp = text.split(":")
        return GPUTarget(backend, int(arch), int(warp))
    except ValueError:
        raise ValueError(f"target must look like cuda:90:32 (backend:arch:warp size), got {text!r}") from None


def compile_one(fn, spec: dict[str, Any], target) -> dict[str, Any]:
    """Compile one kernel for ``target``; the row's ``ok`` / ``error`` say whether it built."""
    import triton
    from triton.compiler import ASTSource

    t0 = time.perf_counter()
    row: dict[str, Any] = {"signature": ",".join(f"{k}:{v}" for k, v in spec["signature"].items()),
                           "constexprs": ",".join(f"{k}={v}" for k, v in spec["constexprs"].items()),
                           "num_warps": spec["options"].get("num_warps", 4)}
    try:
        src = ASTSource(fn=fn, signature=spec["signature"], constexprs=spec["constexprs"], attrs=spec["attrs"])
        compiled = triton.compile(src, target=target, options=spec["options"])
        cubin = compiled.asm.get("cubin") if hasattr(compiled, "asm") else None
        if not cubin:
            raise RuntimeError(f"no cubin produced (stages: {sorted(getattr(compiled, 'asm', {}))})")
        meta = compiled.metadata
        row.update(ok=True, error=None, cubin_bytes=len(cubin), shared=getattr(meta, "shared", None))
    except Exception as exc:  # noqa: BLE001 - a failed compile is the result this check reports
        row.update(ok=False, error=f"{type(exc).__name__}: {exc}".strip()[:2000],
                   traceback=traceback.format_exc()[-4000:])
    row["compile_s"] = time.perf_counter() - t0
    return row


def run(target: str = DEFAULT_TARGET, out: str | None = None, cache_dir: str | None = None) -> list[dict]:
    """Compile every kernel for ``target``; print a table; append ``out/triton_aot.jsonl``; return the rows.

    ``cache_dir``: Triton's cache for the run (default: a fresh temporary folder, so every kernel is really
    compiled and timed). A kernel that no driver launches gets a row with ``ok`` False (not covered).
    """
    import triton

    gpu_target = parse_target(target)
    every = kernels()
    launched = record_launches()
    rows: list[dict] = []
    with contextlib.ExitStack() as stack:
        if cache_dir is None:
            cache_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="samr1-triton-aot-"))
        old = os.environ.get("TRITON_CACHE_DIR")
        os.environ["TRITON_CACHE_DIR"] = cache_dir
        try:
            for qual, fn in every.items():
                base = {"kernel": qual, "target": target, "triton_version": triton.__version__}
                if fn.__name__ not in launched:
                    rows.append({**base, "ok": False, "compile_s": 0.0,
                                 "error": f"not covered: no driver in samr1.bench.triton_aot.DRIVERS launches "
                                          f"{qual}; add its op's call there"})
                    continue
                _, args, kwargs = launched[fn.__name__]
                rows.append({**base, **compile_one(fn, compile_spec(fn, args, kwargs), gpu_target)})
        finally:
            if old is None:
                os.environ.pop("TRITON_CACHE_DIR", None)
            else:
                os.environ["TRITON_CACHE_DIR"] = old
    print(f"Triton {triton.__version__}: ahead-of-time compile for {target}")
    print(format_table(rows, ["kernel", "ok", "compile_s", "cubin_bytes", "shared", "num_warps"]))
    for r in rows:
        if not r["ok"]:
            print(f"FAILED {r['kernel']}: {r['error']}")
    print("all kernels compiled: " + ("OK" if rows and all(r["ok"] for r in rows) else "FAILED"))
    path = write_records([{k: v for k, v in r.items() if k != "traceback"} for r in rows], out, "triton_aot")
    if path:
        print(f"records appended to {path}")
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", default=DEFAULT_TARGET, help="backend:arch:warp size (default %(default)s: sm_90)")
    p.add_argument("--out", default=None, help="folder for the JSON-lines records")
    a = p.parse_args(argv)
    rows = run(target=a.target, out=a.out)
    return 0 if rows and all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
