"""The prepared GPU check: install samr1 on a bare CUDA machine, record the environment, then run every GPU
path and the headline benches, each stage in its own process with its own time budget, into one summary.

    bash bench/gpu_check.sh OUT_DIR [--wheels DIR] [--dry-run]        # the entry point (docs/gpu.md)
    python bench/gpu_check.py OUT_DIR [--wheels DIR] [--dry-run] [--total-s S] [--only STAGE,...] [--budgets STAGE=S,...] [--stage-s S]
    python bench/gpu_check.py --tables OUT_DIR/summary.json       # Markdown tables for bench/RESULTS.md

Stages, in order (``STAGES``; each has a budget, and the run as a whole stops starting stages once
``--total-s`` is spent): install, environment, triton_aot, gpu_tests, kernels, reward_vit_b, multi_object,
encoder_vit_b, reward_vit_h, sam2, grpo, encoder_vit_h, reward_vit_h_fast. Every stage ends with a status:

* ``passed``  -- it ran and every agreement line its benches printed ends in OK;
* ``failed``  -- it raised, exited non-zero, or a bench printed an agreement line ending in MISMATCH
  (the reason quotes it);
* ``timeout`` -- it ran past its budget and was stopped (its process group killed); what its benches had
  already written is kept;
* ``skipped`` -- it did not run, with the reason (a package the machine lacks, the dry run, time spent).

A failing stage never stops the next one. The benches are the project's own (``samr1.bench.bench_*``,
``samr1.bench.triton_aot``); this file only orders them, bounds their time and packs what they write.

``--dry-run`` runs the same stages on the CPU with the benches' smoke sizes and no install step (stages
that only make sense on a GPU, or that take minutes on a CPU, report ``skipped`` with the reason), so the
script is exercised by the test suite between GPU runs.

OUT_DIR receives at most 4 files, all at its top level: ``summary.json`` (device, versions, commit, and
per stage: status, reason, seconds, budget, figures), ``gpu_check.log`` (everything printed),
``records.tar.gz`` (the benches' JSON lines, the pytest junit XML, the environment files, one log per
stage) and ``plots.tar.gz`` (the benches' PNGs). Each stays under ``MAX_FILE_BYTES``.

This file is run by path (``python bench/gpu_check.py``) before samr1 is installed: it imports samr1 only
inside the stages, which run as ``python bench/gpu_check.py --stage NAME ...`` child processes.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MAX_FILE_BYTES = 15 * 2**20  # each returned file stays under 16 MiB (the device tool's limit), with margin
DEFAULT_TOTAL_S = 450.0  # 7.5 minutes: the whole check, install included, must end within 8
RESERVE_S = 10.0  # kept back from the total for packing
MIN_STAGE_S = 15.0  # a stage is not started with less time left than this
OUT_FILES = ("summary.json", "gpu_check.log", "records.tar.gz", "plots.tar.gz")


@dataclass(frozen=True)
class Stage:
    name: str
    budget_s: float  # the full run's limit on this stage (the dry run uses DRY_BUDGET_S)
    what: str
    dry_skip: str | None = None  # why the dry run does not start this stage (None: it runs, at smoke sizes)


_DRY_VIT_H = "dry run: the {} stage runs the same code on the tiny SAM (vit_h takes minutes on a CPU)"
STAGES: tuple[Stage, ...] = (
    Stage("install", 150, "pip install -e . (builds samr1._C there) and the carried wheels the image lacks",
          "dry run: no install step (runs the samr1 already importable)"),
    Stage("environment", 30, "nvidia-smi, torch / CUDA / triton versions, ORT providers, pip freeze, pip check"),
    Stage("triton_aot", 45, "every Triton kernel compiled ahead of time for the device's arch by the image's Triton"),
    Stage("gpu_tests", 100, "pytest -m gpu: the GPU-marked and every CUDA-only test, Triton compiled, junit XML"),
    Stage("kernels", 75, "fused logits -> IoU (Triton vs torch reference, N = 64/512/4096 at 480x640 and "
                         "1080x1920, bandwidth floor; C++ on the host CPU), prompt packing (N = 64/512/4096) "
                         "and the SAM 2 postprocess"),
    Stage("reward_vit_b", 75, "reward step B=16 x G=8 at 480x640 (loop, loop-cached, engine cold/warm) and "
                              "decode + IoU, vit_b random weights"),
    Stage("multi_object", 60, "reward step with the visionreasoner preset (1-4 objects a row) against the "
                              "single-object step, B=16 x G=8, cold and warm, vit_b random weights (SAM's "
                              "decoder is the same for every ViT, so the warm ratio holds for vit_h)"),
    Stage("encoder_vit_b", 60, "image encoder vit_b: torch fp32, bf16, bf16 + torch.compile; share of bf16 peak"),
    Stage("reward_vit_h", 90, "reward step B=16 x G=8 at 480x640 and decode + IoU, vit_h random weights",
          _DRY_VIT_H.format("reward_vit_b")),
    Stage("sam2", 60, "SAM 2 reward step (sam2_hiera_t, random weights), B=16 x G=8",
          "dry run: a SAM 2 set_image takes seconds on a CPU; the suite's SAM 2 bench smoke tests cover it"),
    Stage("grpo", 60, "GRPO steps of the tiny policy on CUDA: loop reward vs engine vs engine + encode-ahead",
          "dry run: three GRPO trainers take tens of seconds on a CPU; bench_train_step's smoke run is in the "
          "suite (tests/test_bench_smoke.py)"),
    Stage("encoder_vit_h", 75, "image encoder vit_h: torch fp32, bf16, bf16 + torch.compile",
          _DRY_VIT_H.format("encoder_vit_b")),
    Stage("reward_vit_h_fast", 90, "reward step vit_h with the engine on bf16 + torch.compile against the fp32 "
                                   "loop (the fastest-backend goal); runs when time is left",
          _DRY_VIT_H.format("reward_vit_b")),
)
STAGE_NAMES = tuple(s.name for s in STAGES)
# The dry run's per-stage limit: its stages take 5-11 s of CPU each (45 s in all), but on a CPU shared with
# other jobs the wall time was 3-40x that (a stage took 300 s for 7 s of CPU at load 14); the dry run checks
# the script, not the machine, so its limits are loose; the timeout path has its own test (--stage-s).
DRY_BUDGET_S = 1200.0
DRY_TOTAL_S = 3600.0

# the mask-IoU cases of the full run: Triton on CUDA, and the C++ kernel on the host's CPU
KERNEL_SIZES = ((480, 640), (1080, 1920))
KERNEL_NS = (64, 512, 4096)
CPU_KERNEL_CASES = (((480, 640), 64), ((480, 640), 512), ((1080, 1920), 64))
# per-completion loop of the vit_h reward step: the first 32 completions, scaled to the step (the rows say so)
VIT_H_LOOP_SUBSET = 32
# keys of harness.environment() (the same in every record): kept once in the summary, not per row
ENV_KEYS = ("device", "torch_threads", "torch", "python", "commit", "date", "triton", "onnxruntime",
            "segment_anything", "transformers", "samr1_cpp", "smoke")


class Skip(Exception):
    """Raised by a stage that does not apply here; the message is the reason."""


# ============================================================================ the stages (child processes)
@dataclass
class Ctx:
    dry: bool
    scratch: str
    records: str  # this stage's folder for bench records and plots
    budget_s: float = DRY_BUDGET_S  # the stage's budget (the parent kills it past this)

    @property
    def device(self) -> str:
        return "cpu" if self.dry else "cuda"

    def out(self, sub: str = "") -> str:
        path = os.path.join(self.records, sub) if sub else self.records
        os.makedirs(path, exist_ok=True)
        return path


def _need_cuda(ctx: Ctx) -> None:
    import torch

    if not ctx.dry and not torch.cuda.is_available():
        raise RuntimeError("no CUDA device: torch.cuda.is_available() is False (use --dry-run on a CPU machine)")


def _need(*modules: str) -> None:
    """Skip the stage when a module cannot be imported here, naming what is missing and why."""
    for m in modules:
        try:
            importlib.import_module(m)
        except Exception as exc:  # noqa: BLE001 - any import failure means the stage cannot run here
            raise Skip(f"{m} is not importable here ({type(exc).__name__}: {exc}); carry its wheel "
                       "(make gpu-wheels) or see the wheels folder's report") from None


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def _run_text(cmd: list[str], timeout: float = 30) -> str:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        return (p.stdout + p.stderr).strip()
    except (OSError, subprocess.SubprocessError) as exc:
        return f"({' '.join(cmd[:2])} unavailable: {exc})"


def stage_environment(ctx: Ctx) -> dict[str, Any]:
    import torch

    from samr1.ops import backends
    from samr1.provenance import git_commit

    env_dir = ctx.out("env")
    smi = _run_text(["nvidia-smi"]) if shutil.which("nvidia-smi") else "(nvidia-smi not found)"
    query = _run_text(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem,"
                       "power.limit", "--format=csv"]) if shutil.which("nvidia-smi") else ""
    from importlib.metadata import distributions

    freeze = "\n".join(sorted(f"{d.metadata['Name']}=={d.version}" for d in distributions()))
    # pip check says which installed package lacks what it requires (a carried wheel against the image's versions)
    check = "(not run in the dry run)" if ctx.dry else _run_text([sys.executable, "-m", "pip", "check"], timeout=120)
    for name, text in (("nvidia-smi.txt", smi + "\n\n" + query), ("packages.txt", freeze), ("pip-check.txt", check)):
        with open(os.path.join(env_dir, name), "w", encoding="utf-8") as f:
            f.write(text + "\n")
    cuda = torch.cuda.is_available()
    info: dict[str, Any] = {
        "device": torch.cuda.get_device_name(0) if cuda else f"cpu ({platform.processor() or platform.machine()}, "
                                                             f"{os.cpu_count()} cores)",
        "cuda_available": cuda,
        "capability": ".".join(map(str, torch.cuda.get_device_capability(0))) if cuda else None,
        "gpu_memory_gib": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1) if cuda else None,
        "nvidia_smi": query.splitlines()[1] if query.count("\n") >= 1 else None,
        "python": platform.python_version(), "executable": sys.executable,
        "torch": torch.__version__, "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cpu_count": os.cpu_count(), "commit": git_commit(),
        "samr1_cpp": list(backends.cpp_status()), "samr1_triton": list(backends.triton_status()),
        "pip_check": check.splitlines()[:20],
    }
    for dist in ("triton", "transformers", "accelerate", "onnx", "onnxruntime", "onnxruntime-gpu", "tensorrt",
                 "segment-anything", "sam2", "trl", "datasets", "pyarrow", "torchvision", "numpy", "pytest",
                 "hypothesis"):
        info[dist] = _version(dist)
    try:
        import onnxruntime as ort

        info["ort_providers"] = ort.get_available_providers()
    except Exception as exc:  # noqa: BLE001 - recorded, not fatal
        info["ort_providers"] = f"onnxruntime not importable: {exc}"
    print(json.dumps(info, indent=1, default=str))
    return {"figures": info}


def stage_triton_aot(ctx: Ctx) -> dict[str, Any]:
    import torch
    from samr1.bench import triton_aot

    _need("triton")
    # the device's own arch on a GPU; sm_90 (H100 / H200) in the dry run
    target = triton_aot.DEFAULT_TARGET
    if torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability(0)
        target = f"cuda:{major}{minor}:32"
    rows = triton_aot.run(target=target, out=ctx.out())
    bad = [r["kernel"] for r in rows if not r["ok"]]
    if bad or not rows:
        raise RuntimeError(f"kernels that did not compile for {target}: {', '.join(bad) or '(no kernel found)'}")
    return {"figures": {"target": target}}


def _junit_counts(path: str) -> dict[str, Any]:
    import xml.etree.ElementTree as ET

    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    counts = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    failed, skipped = [], {}
    for case in root.iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        for tag in ("failure", "error"):
            el = case.find(tag)
            if el is not None:
                failed.append(f"{name}: {(el.get('message') or '').strip()[:300]}")
        el = case.find("skipped")
        if el is not None:
            why = (el.get("message") or "").strip()[:200]
            skipped[why] = skipped.get(why, 0) + 1
    counts["failed_tests"] = failed[:40]
    counts["skip_reasons"] = skipped
    return counts


def stage_gpu_tests(ctx: Ctx) -> dict[str, Any]:
    _need("pytest")
    junit = os.path.join(ctx.out(), "junit.xml")
    # the dry run collects one file (the machinery, not the suite: every test there skips without CUDA)
    targets = [os.path.join(ROOT, "tests", "test_engine.py")] if ctx.dry else [os.path.join(ROOT, "tests")]
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", *targets, "-q", "-rfEs", "-p", "no:cacheprovider",
           "--continue-on-collection-errors", f"--junitxml={junit}"]
    print("$ " + " ".join(cmd), flush=True)
    # stop pytest with SIGINT before the parent's kill: it then still writes the junit XML of what ran
    proc = subprocess.Popen(cmd, cwd=ROOT)
    interrupted = False
    try:
        rc = proc.wait(timeout=max(5.0, ctx.budget_s - 25.0))
    except subprocess.TimeoutExpired:
        interrupted = True
        proc.send_signal(signal.SIGINT)
        try:
            rc = proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
    if not os.path.exists(junit):
        raise RuntimeError(f"pytest exited {rc} without writing its junit XML")
    counts = _junit_counts(junit)
    counts["pytest_exit"] = rc
    if interrupted:
        return {"status": "timeout", "figures": counts,
                "reason": f"pytest interrupted near the stage's budget ({ctx.budget_s:.0f} s); the counts are of "
                          f"the tests that ran ({counts['failures']} failed, {counts['errors']} errors)"}
    if rc == 5:
        raise Skip("pytest selected no test (-m gpu)")
    if counts["failures"] or counts["errors"] or rc not in (0, 5):
        return {"status": "failed", "reason": f"{counts['failures']} failed, {counts['errors']} errors "
                f"(pytest exit {rc})", "figures": counts}
    if not ctx.dry and counts["passed"] == 0:
        return {"status": "failed", "reason": "no GPU test ran (all skipped): see skip_reasons", "figures": counts}
    return {"figures": counts}


def stage_kernels(ctx: Ctx) -> dict[str, Any]:
    from samr1.bench import bench_mask_iou, bench_prompt_pack

    _need_cuda(ctx)
    if ctx.dry:
        bench_mask_iou.run(smoke=True, device="cpu", out=ctx.out("sam"))
        bench_mask_iou.run_sam2(smoke=True, device="cpu", out=ctx.out("sam2"))
        bench_prompt_pack.run(smoke=True, device="cpu", out=ctx.out("pack"), plot=False)
        return {}
    cases = [(s, n) for s in KERNEL_SIZES for n in KERNEL_NS]
    bench_mask_iou.run(device="cuda", cases=cases, out=ctx.out("cuda"))
    bench_prompt_pack.run(device="cuda", ns=KERNEL_NS, out=ctx.out("pack"))
    bench_mask_iou.run(device="cpu", cases=list(CPU_KERNEL_CASES), out=ctx.out("cpu"))
    bench_mask_iou.run_sam2(quick=True, device="cuda", out=ctx.out("sam2"))
    return {}


def _reward(ctx: Ctx, kind: str) -> dict[str, Any]:
    from samr1.bench import bench_decode, bench_reward_step

    _need_cuda(ctx)
    _need("segment_anything")
    if ctx.dry:
        bench_reward_step.run(smoke=True, b=1, g=2, device="cpu", sam_kind="tiny", out=ctx.out(), plot=False)
        return {"figures": {"note": "dry run: the tiny SAM, smoke sizes; decode runs in the suite's bench smoke test"}}
    subset = VIT_H_LOOP_SUBSET if kind == "vit_h" else None
    bench_reward_step.run(device="cuda", sam_kind=kind, b=16, g=8, loop_subset=subset, out=ctx.out())
    bench_decode.run(device="cuda", sam_kind=kind, out=ctx.out())
    return {}


def stage_reward_vit_h_fast(ctx: Ctx) -> dict[str, Any]:
    from samr1.bench import bench_reward_step

    _need_cuda(ctx)
    _need("segment_anything")
    bench_reward_step.run(device=ctx.device, sam_kind="vit_h", b=16, g=8, loop_subset=VIT_H_LOOP_SUBSET,
                          encoder="torch-bf16-compiled", out=ctx.out())
    return {}


def stage_multi_object(ctx: Ctx) -> dict[str, Any]:
    from samr1.bench import bench_multi_object

    _need_cuda(ctx)
    _need("segment_anything", "scipy")
    if ctx.dry:
        rows = bench_multi_object.run(smoke=True, device="cpu", sam_kind="tiny", out=ctx.out())
    else:
        rows = bench_multi_object.run(device="cuda", sam_kind="vit_b", b=16, g=8, out=ctx.out())
    # the multi / single ratio per temperature, the figure the multi-object goal is judged by
    return {"figures": {f"ratio_{r['cache']}": r["ratio_vs_single"] for r in rows if "ratio_vs_single" in r}}


def _onnx_trt_skips() -> dict[str, str]:
    """Why the GPU encoder bench times no ONNX Runtime / TensorRT rows (empty where they can run)."""
    out: dict[str, str] = {}
    try:
        import onnxruntime as ort

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            out["onnxruntime-cuda"] = (f"skipped: not installed (onnxruntime {ort.__version__} has only "
                                       f"{ort.get_available_providers()}; onnxruntime-gpu is needed)")
    except Exception as exc:  # noqa: BLE001
        out["onnxruntime-cuda"] = f"skipped: not installed (onnxruntime not importable: {exc})"
    from samr1.sam.encoder import tensorrt_available

    ok, why = tensorrt_available()
    if not ok:
        out["tensorrt"] = f"skipped: not installed ({why})"
    return out


def _encoder(ctx: Ctx, kind: str) -> dict[str, Any]:
    from samr1.bench import bench_encoder

    _need_cuda(ctx)
    _need("segment_anything")
    if ctx.dry:  # torch only: the CPU's ONNX Runtime export is the suite's business, not this script's
        bench_encoder.run(smoke=True, device="cpu", sam_kind="tiny", out=ctx.out(), backends=["torch"], plot=False)
        return {"figures": {"backends_not_run": _onnx_trt_skips()}}
    # eager first, then compiled, each written as it ends: a torch.compile past the budget loses only its own rows
    bench_encoder.run(device="cuda", sam_kind=kind, out=ctx.out("eager"), backends=["torch", "torch-bf16"])
    bench_encoder.run(device="cuda", sam_kind=kind, out=ctx.out("compiled"), backends=["torch", "torch-bf16-compiled"])
    return {"figures": {"backends_not_run": _onnx_trt_skips()}}


def stage_sam2(ctx: Ctx) -> dict[str, Any]:
    from samr1.bench import bench_reward_step

    _need_cuda(ctx)
    _need("sam2")
    bench_reward_step.run(device="cuda", sam_kind="sam2_hiera_t", b=16, g=8, out=ctx.out())
    return {}


def stage_grpo(ctx: Ctx) -> dict[str, Any]:
    from samr1.bench import bench_train_step

    _need_cuda(ctx)
    _need("segment_anything", "transformers", "accelerate", "datasets", "trl")
    bench_train_step.run(quick=True, device="cuda", out=ctx.out())
    return {"figures": {"note": "random tiny policy: its completions never parse, so SAM is not called "
                                "(the rows show the trainer's own cost on CUDA)"}}


CHILD_STAGES: dict[str, Callable[[Ctx], dict[str, Any]]] = {
    "environment": stage_environment,
    "triton_aot": stage_triton_aot,
    "gpu_tests": stage_gpu_tests,
    "kernels": stage_kernels,
    "reward_vit_b": lambda ctx: _reward(ctx, "vit_b"),
    "multi_object": stage_multi_object,
    "encoder_vit_b": lambda ctx: _encoder(ctx, "vit_b"),
    "reward_vit_h": lambda ctx: _reward(ctx, "vit_h"),
    "sam2": stage_sam2,
    "grpo": stage_grpo,
    "encoder_vit_h": lambda ctx: _encoder(ctx, "vit_h"),
    "reward_vit_h_fast": stage_reward_vit_h_fast,
}


def child_main(name: str, scratch: str, dry: bool, budget_s: float) -> int:
    """Run one stage in this process; write its result to ``scratch/results/NAME.json``; 0 when it passed or
    was skipped."""
    ctx = Ctx(dry=dry, scratch=scratch, records=os.path.join(scratch, "records", name), budget_s=budget_s)
    os.makedirs(ctx.records, exist_ok=True)
    result: dict[str, Any]
    try:
        result = {"status": "passed", "reason": None, **CHILD_STAGES[name](ctx)}
    except Skip as exc:
        result = {"status": "skipped", "reason": str(exc)}
    except BaseException as exc:  # noqa: BLE001 - the stage's failure is its result
        import traceback

        traceback.print_exc()
        result = {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"[:2000]}
    with open(os.path.join(scratch, "results", f"{name}.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, default=str)
    return 0 if result["status"] in ("passed", "skipped") else 1


# ============================================================================ the parent
class Runner:
    """Runs the stages in order with their budgets, prints and logs everything, then packs OUT_DIR."""

    def __init__(self, out_dir: str, dry: bool, wheels: str | None, total_s: float, only: set[str] | None,
                 stage_s: float | None = None, budgets: dict[str, float] | None = None):
        self.out_dir = out_dir
        self.stage_s = stage_s
        self.budgets = budgets or {}
        self.dry = dry
        self.wheels = wheels
        self.total_s = total_s
        self.only = only
        self.t0 = time.monotonic()
        self.scratch = tempfile.mkdtemp(prefix="samr1-gpu-check-")
        for sub in ("records", "results", "logs", "site"):
            os.makedirs(os.path.join(self.scratch, sub), exist_ok=True)
        self.log = open(os.path.join(self.scratch, "gpu_check.log"), "w", encoding="utf-8")
        self.lock = threading.Lock()
        self.env = dict(os.environ)
        site = os.path.join(self.scratch, "site")  # carried wheels the image lacks are installed here
        self.env["PYTHONPATH"] = os.pathsep.join(p for p in (site, self.env.get("PYTHONPATH", "")) if p)
        self.env.setdefault("PYTHONUNBUFFERED", "1")
        self.env.setdefault("MPLBACKEND", "Agg")
        self.env.setdefault("HF_HUB_OFFLINE", "1")  # no network on the GPU machine; never wait on one
        self.env.setdefault("TOKENIZERS_PARALLELISM", "false")
        self.env.setdefault("SAMR1_CACHE_DIR", os.path.join(self.scratch, "cache"))
        self.env.setdefault("TRITON_CACHE_DIR", os.path.join(self.scratch, "triton-cache"))
        self.env.setdefault("PIP_NO_INDEX", "1")
        self.env.setdefault("PIP_DISABLE_PIP_VERSION_CHECK", "1")

    # ------------------------------------------------------------------ output
    def say(self, text: str) -> None:
        with self.lock:
            sys.stdout.write(text + ("" if text.endswith("\n") else "\n"))
            sys.stdout.flush()
            self.log.write(text + ("" if text.endswith("\n") else "\n"))
            self.log.flush()

    def left(self) -> float:
        return self.total_s - (time.monotonic() - self.t0)

    # ------------------------------------------------------------------ one process, bounded
    def run_bounded(self, cmd: list[str], budget: float, log_path: str) -> tuple[int | None, float]:
        """Run ``cmd`` in its own process group, its output echoed and logged; kill the group after
        ``budget`` seconds. Returns (exit code or None when stopped, seconds)."""
        t = time.monotonic()
        with open(log_path, "a", encoding="utf-8") as stage_log:
            stage_log.write("$ " + " ".join(cmd) + "\n")
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT, env=self.env,
                                    start_new_session=True, text=True, errors="replace", bufsize=1)

            def pump() -> None:
                assert proc.stdout is not None
                for line in proc.stdout:
                    stage_log.write(line)
                    self.say("  | " + line.rstrip("\n"))

            reader = threading.Thread(target=pump, daemon=True)
            reader.start()
            try:
                rc: int | None = proc.wait(timeout=max(1.0, budget))
            except subprocess.TimeoutExpired:
                rc = None
                self._stop(proc)
            reader.join(timeout=10)
        return rc, time.monotonic() - t

    @staticmethod
    def _stop(proc: subprocess.Popen) -> None:
        """SIGTERM the stage's process group, SIGKILL it 5 s later (torch.compile workers included)."""
        for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                proc.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue

    # ------------------------------------------------------------------ the install stage (in this process)
    def install_wheels(self, budget: float, figures: dict[str, Any]) -> dict[str, Any] | None:
        """Install the carried wheels the machine lacks into the scratch site folder (on every stage's
        ``PYTHONPATH``); None when done, else the failed result."""
        if not self.wheels:
            return None
        log = os.path.join(self.scratch, "logs", "install.log")
        if not os.path.isdir(self.wheels):
            return {"status": "failed", "reason": f"--wheels {self.wheels}: no such folder"}
        chosen, have = select_wheels(self.wheels)
        figures["wheels_installed"] = [os.path.basename(w) for w in chosen]
        figures["wheels_not_needed"] = have
        for line in have:
            self.say(f"  wheel not installed: {line}")
        if not chosen:
            return None
        rc, _ = self.run_bounded([sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--no-compile",
                                  "--no-cache-dir", "--target", os.path.join(self.scratch, "site"), *chosen],
                                 budget, log)
        if rc == 0:
            return None
        return {"status": "failed" if rc is not None else "timeout", "figures": figures,
                "reason": f"pip install of the carried wheels {'exited ' + str(rc) if rc else 'timed out'}"}

    def install(self, budget: float) -> dict[str, Any]:
        log = os.path.join(self.scratch, "logs", "install.log")
        deadline = time.monotonic() + budget
        figures: dict[str, Any] = {"wheels_installed": [], "wheels_not_needed": []}
        failed = self.install_wheels(budget, figures)
        if failed:
            return failed
        rc, _ = self.run_bounded([sys.executable, "-m", "pip", "install", "--no-index", "--no-deps",
                                  "--no-build-isolation", "-e", ROOT], deadline - time.monotonic(), log)
        if rc != 0:
            return {"status": "failed" if rc is not None else "timeout", "figures": figures,
                    "reason": f"pip install -e . {'exited ' + str(rc) if rc else 'timed out'} (see logs/install.log)"}
        probe = ("import json, samr1, samr1.kernels, samr1.bench; from samr1.ops import backends; "
                 "print('SAMR1_STATUS ' + json.dumps({'cpp': backends.cpp_status(), 'triton': backends.triton_status(), "
                 "'samr1': samr1.__file__}))")
        rc, _ = self.run_bounded([sys.executable, "-c", probe], max(5.0, deadline - time.monotonic()), log)
        with open(log, encoding="utf-8") as f:
            found = re.findall(r"^SAMR1_STATUS (.*)$", f.read(), flags=re.M)
        if rc != 0 or not found:
            return {"status": "failed", "figures": figures, "reason": "samr1 is not importable after the install"}
        status = json.loads(found[-1])
        figures.update(status)
        if not status["cpp"][0]:
            return {"status": "failed", "figures": figures, "reason": f"samr1._C was not built: {status['cpp'][1]}"}
        return {"status": "passed", "figures": figures}

    # ------------------------------------------------------------------ the loop
    def run(self) -> dict[str, Any]:
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.say(f"samr1 GPU check{' (DRY RUN, CPU)' if self.dry else ''}: {len(STAGES)} stages, total budget "
                 f"{self.total_s:.0f} s, scratch {self.scratch}")
        results = []
        for stage in STAGES:
            budget = self.budgets.get(stage.name, DRY_BUDGET_S if self.dry else stage.budget_s)
            if self.stage_s is not None:
                budget = min(budget, self.stage_s)
            entry: dict[str, Any] = {"name": stage.name, "what": stage.what, "budget_s": budget}
            left = self.left() - RESERVE_S
            if self.only is not None and stage.name not in self.only:
                entry.update(status="skipped", reason="not in --only", seconds=0.0)
                if stage.name == "install" and self.wheels and not self.dry:
                    # the wheels live in this run's scratch folder: the stages need them even when the
                    # editable install is kept from an earlier run on the same machine
                    figures: dict[str, Any] = {}
                    failed = self.install_wheels(budget, figures)
                    entry.update(figures=figures, reason="not in --only (the carried wheels were installed: "
                                 + ("failed: " + failed["reason"] if failed else "ok") + ")")
            elif self.dry and stage.dry_skip:
                entry.update(status="skipped", reason=stage.dry_skip, seconds=0.0)
            elif left < MIN_STAGE_S:
                entry.update(status="skipped", seconds=0.0,
                             reason=f"the total budget ({self.total_s:.0f} s) was spent before this stage")
            else:
                budget = min(budget, left)
                entry["budget_s"] = round(budget, 1)
                self.say(f"\n=== stage {stage.name} (budget {budget:.0f} s): {stage.what}")
                t, c = time.monotonic(), _children_cpu()
                entry.update(self.install(budget) if stage.name == "install" else self.child(stage.name, budget))
                entry["seconds"] = round(time.monotonic() - t, 2)
                entry["cpu_s"] = round(_children_cpu() - c, 2)  # CPU time of its processes (waited for)
                self.say(f"=== {stage.name}: {entry['status']}" + (f" ({entry.get('reason')})" if entry.get("reason")
                                                                     else "") + f" in {entry['seconds']:.1f} s")
            entry.setdefault("reason", None)
            entry["figures"] = {**entry.get("figures", {}), **self.records_of(stage.name)}
            results.append(entry)
        return self.finish(results, started)

    def child(self, name: str, budget: float) -> dict[str, Any]:
        cmd = [sys.executable, os.path.abspath(__file__), "--stage", name, "--scratch", self.scratch,
               "--budget", f"{budget:.1f}"]
        if self.dry:
            cmd.append("--dry-run")
        log = os.path.join(self.scratch, "logs", f"{name}.log")
        rc, secs = self.run_bounded(cmd, budget, log)
        path = os.path.join(self.scratch, "results", f"{name}.json")
        result: dict[str, Any] = {}
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                result = json.load(f)
        if rc is None:
            return {**result, "status": "timeout", "reason": f"stopped after {secs:.0f} s (its budget); what its "
                    "benches wrote before is kept"}
        if not result:
            return {"status": "failed", "reason": f"the stage process exited {rc} without a result: "
                    + tail_of(log)}
        if result["status"] == "passed":
            with open(log, encoding="utf-8", errors="replace") as f:
                lines = f.read().splitlines()
            bad = [ln.strip() for ln in lines if "agreement" in ln and ln.rstrip().endswith("MISMATCH")
                   or re.search(r"MISMATCH in ", ln)]
            ok = [ln for ln in lines if "agreement" in ln and ln.rstrip().endswith("OK")]
            result.setdefault("figures", {})["agreement_lines_ok"] = len(ok)
            if bad:
                result.update(status="failed", reason="agreement with the reference: " + " | ".join(bad)[:1500])
        return result

    def records_of(self, name: str) -> dict[str, Any]:
        """The rows the stage's benches appended (``*.jsonl``), environment keys left out, floats rounded."""
        base = os.path.join(self.scratch, "records", name)
        out: dict[str, list] = {}
        for dirpath, _, files in sorted(os.walk(base)):
            for fn in sorted(files):
                if not fn.endswith(".jsonl"):
                    continue
                key = os.path.relpath(os.path.join(dirpath, fn), base)[: -len(".jsonl")].replace(os.sep, "/")
                rows = []
                with open(os.path.join(dirpath, fn), encoding="utf-8") as f:
                    for line in f:
                        if line.strip():
                            rows.append({k: _round(v) for k, v in json.loads(line).items() if k not in ENV_KEYS})
                out[key] = rows
        return {"records": out} if out else {}

    # ------------------------------------------------------------------ summary and packing
    def finish(self, stages: list[dict[str, Any]], started: str) -> dict[str, Any]:
        env = next((s["figures"] for s in stages if s["name"] == "environment" and s["status"] == "passed"), {})
        summary = {
            "schema": 1, "dry_run": self.dry, "started_utc": started,
            "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "seconds": round(time.monotonic() - self.t0, 1), "total_budget_s": self.total_s,
            "device": env.get("device"), "commit": env.get("commit"),
            "versions": {k: env.get(k) for k in ("python", "torch", "torch_cuda", "cudnn", "triton", "transformers",
                                                 "accelerate", "onnxruntime", "segment-anything", "sam2", "trl",
                                                 "datasets", "torchvision")},
            "ok": all(s["status"] in ("passed", "skipped") for s in stages),
            "status_counts": {k: sum(s["status"] == k for s in stages)
                              for k in ("passed", "failed", "timeout", "skipped")},
            "stages": stages,
        }
        self.say("\n=== summary")
        for s in stages:
            self.say(f"  {s['name']:<14} {s['status']:<8} {s.get('seconds', 0):7.1f} s  cpu {s.get('cpu_s', 0):6.1f} s"
                     + (f"  {s['reason']}" if s.get("reason") else ""))
        self.say(f"  total {summary['seconds']:.0f} s; ok = {summary['ok']}")
        summary["files"] = self.pack(summary)
        with open(os.path.join(self.out_dir, "summary.json"), "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=1, default=str)
        shutil.rmtree(self.scratch, ignore_errors=True)
        return summary

    def pack(self, summary: dict[str, Any]) -> list[str]:
        os.makedirs(self.out_dir, exist_ok=True)
        self.log.close()
        files = ["summary.json"]
        log_src = os.path.join(self.scratch, "gpu_check.log")
        copy_capped(log_src, os.path.join(self.out_dir, "gpu_check.log"))
        files.append("gpu_check.log")
        groups = {"records.tar.gz": lambda p: not p.endswith(".png"), "plots.tar.gz": lambda p: p.endswith(".png")}
        members = []
        for sub in ("records", "results", "logs"):
            root = os.path.join(self.scratch, sub)
            for dirpath, _, names in os.walk(root):
                for fn in names:
                    full = os.path.join(dirpath, fn)
                    members.append((full, os.path.relpath(full, self.scratch)))
        left_out: list[str] = []
        for tar_name, want in groups.items():
            chosen = sorted((m for m in members if want(m[1])), key=lambda m: os.path.getsize(m[0]))
            while chosen:
                data = tar_bytes(chosen)
                if len(data) <= MAX_FILE_BYTES:
                    break
                dropped = chosen.pop()  # the largest goes first
                left_out.append(f"{dropped[1]} ({os.path.getsize(dropped[0])} bytes: {tar_name} over the limit)")
            if chosen:
                with open(os.path.join(self.out_dir, tar_name), "wb") as f:
                    f.write(data)
                files.append(tar_name)
        summary["left_out"] = left_out
        return files


def _children_cpu() -> float:
    """User + system CPU seconds of this process's finished children (and theirs)."""
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def tar_bytes(members: list[tuple[str, str]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for full, arc in members:
            tar.add(full, arcname=arc)
    return buf.getvalue()


def copy_capped(src: str, dst: str, cap: int = MAX_FILE_BYTES) -> None:
    """Copy a text file; past ``cap`` bytes keep its first MiB and its end, with a line saying so."""
    size = os.path.getsize(src)
    if size <= cap:
        shutil.copyfile(src, dst)
        return
    head = 2**20
    with open(src, "rb") as f, open(dst, "wb") as g:
        g.write(f.read(head))
        g.write(f"\n[... {size - cap + 4096} bytes cut: the log was over {cap} bytes ...]\n".encode())
        f.seek(size - (cap - head - 4096))
        g.write(f.read())


def tail_of(path: str, lines: int = 8) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return " | ".join(ln.strip() for ln in f.read().splitlines()[-lines:])[:1500]
    except OSError:
        return "(no log)"


def _round(v: Any) -> Any:
    if isinstance(v, float):
        return float(f"{v:.5g}")
    if isinstance(v, dict):
        return {k: _round(x) for k, x in v.items()}
    return v


# ---------------------------------------------------------------------------- summary.json -> RESULTS.md
# the columns of each bench's table (by record name); a record not listed shows its first rows' keys
TABLE_COLUMNS: dict[str, tuple[str, ...]] = {
    "triton_aot": ("kernel", "ok", "compile_s", "cubin_bytes", "shared", "num_warps", "error"),
    "bench_mask_iou": ("size", "N", "backend", "median_s", "speedup", "floor_s", "floor_fraction", "max_iou_err",
                       "max_count_err", "ref_chunk"),
    "bench_mask_iou_sam2": ("size", "N", "backend", "median_s", "speedup", "max_iou_err", "max_count_err"),
    "reward_step": ("sam", "way", "encoder", "step_s", "ms_per_completion", "speedup_vs_loop", "encoder_images",
                    "max_iou_diff_vs_loop", "loop_extrapolated_from"),
    "bench_decode": ("path", "prompts", "ms_per_prompt", "speedup", "max_iou_diff"),
    "prompt_pack": ("N", "tokens", "backend", "median_s", "speedup", "floor_s", "floor_fraction", "max_abs_err",
                    "counts_equal"),
    "encoder": ("sam", "backend", "batch", "ms_per_img", "img_per_s", "speedup_vs_fp32", "tflops", "frac_bf16_peak",
                "rel_err_vs_fp32", "within_tol", "setup_s"),
    "multi_object": ("step", "cache", "sam", "step_s", "sam_prompts", "engine_calls_per_step", "ratio_vs_single",
                     "prompt_ratio", "per_prompt_ratio", "mean_reward"),
    "train_step": ("way", "step_s", "generation_s", "reward_s", "update_s", "reward_speedup_vs_loop",
                   "max_reward_diff_vs_loop"),
}


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v).replace("|", "/")


def tables(summary: dict[str, Any]) -> str:
    """Markdown for bench/RESULTS.md from a summary.json: the run's conditions, the stage statuses, and one
    table per bench record of each stage (columns: ``TABLE_COLUMNS``)."""
    v = summary.get("versions", {})
    lines = [f"Device {summary.get('device')}; commit {summary.get('commit')}; finished {summary.get('finished_utc')}; "
             f"torch {v.get('torch')} (CUDA {v.get('torch_cuda')}), triton {v.get('triton')}, transformers "
             f"{v.get('transformers')}; {summary.get('seconds')} s in all" + (" (DRY RUN on the CPU)"
                                                                              if summary.get("dry_run") else ""),
             "", "| stage | status | seconds | reason |", "|---|---|---|---|"]
    for st in summary.get("stages", []):
        lines.append(f"| {st['name']} | {st['status']} | {_cell(st.get('seconds'))} | {_cell(st.get('reason'))} |")
    for st in summary.get("stages", []):
        for key, rows in st.get("figures", {}).get("records", {}).items():
            if not rows:
                continue
            cols = [c for c in TABLE_COLUMNS.get(key.rsplit("/", 1)[-1], tuple(rows[0])[:10])
                    if any(c in r for r in rows)]
            lines += ["", f"**{st['name']}: {key}**", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
            lines += ["| " + " | ".join(_cell(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _dist_of_wheel(filename: str) -> tuple[str, str]:
    """(normalised distribution name, version) from a wheel's file name (PEP 427)."""
    name, version = os.path.basename(filename).split("-")[:2]
    return re.sub(r"[-_.]+", "-", name).lower(), version


def select_wheels(folder: str) -> tuple[list[str], list[str]]:
    """The wheels of ``folder`` whose distribution this interpreter lacks (installed), and one line for each
    one left alone because the machine already has that distribution (its version is kept: the image's
    torch stack is never replaced).

    Raises:
        ValueError: two wheels of the same distribution (pip would refuse them together).
    """
    chosen, have, seen = [], [], {}
    for fn in sorted(os.listdir(folder)):
        if not fn.endswith(".whl"):
            continue
        dist, version = _dist_of_wheel(fn)
        if dist in seen:
            raise ValueError(f"{folder}: two wheels of {dist}: {seen[dist]} and {fn}; keep one")
        seen[dist] = fn
        present = _version(dist)
        if present is not None:
            have.append(f"{fn}: the machine has {dist} {present}")
        else:
            chosen.append(os.path.join(folder, fn))
    return chosen, have


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out_dir", nargs="?", help="folder for summary.json and the packed outputs (at most 4 files)")
    p.add_argument("--wheels", default=None, metavar="DIR", help="carried wheels (make gpu-wheels); each one whose "
                   "distribution the machine lacks is installed")
    p.add_argument("--dry-run", action="store_true", help="CPU, smoke sizes, no install step")
    p.add_argument("--total-s", type=float, default=None,
                   help=f"stop starting stages after this many seconds (default {DEFAULT_TOTAL_S:.0f}; dry run "
                        f"{DRY_TOTAL_S:.0f})")
    p.add_argument("--only", default=None, metavar="STAGE,...", help="run only these stages (the rest: skipped)")
    p.add_argument("--budgets", default=None, metavar="STAGE=S,...",
                   help="set these stages' budgets in seconds (e.g. install=300 on a slow build host)")
    p.add_argument("--stage-s", type=float, default=None, metavar="S",
                   help="cap every stage's budget at S seconds (tests of the timeout path; a quick partial run)")
    p.add_argument("--stage", default=None, help=argparse.SUPPRESS)  # child process: run one stage
    p.add_argument("--scratch", default=None, help=argparse.SUPPRESS)
    p.add_argument("--budget", type=float, default=DRY_BUDGET_S, help=argparse.SUPPRESS)
    p.add_argument("--tables", default=None, metavar="SUMMARY_JSON",
                   help="print the Markdown tables of a finished run's summary.json (for bench/RESULTS.md) and exit")
    a = p.parse_args(argv)
    if a.tables:
        with open(a.tables, encoding="utf-8") as f:
            print(tables(json.load(f)), end="")
        return 0
    if a.stage:
        if a.stage not in CHILD_STAGES or not a.scratch:
            p.error(f"--stage takes one of {list(CHILD_STAGES)} with --scratch")
        return child_main(a.stage, a.scratch, a.dry_run, a.budget)
    if not a.out_dir:
        p.error("OUT_DIR is required")
    only = None
    if a.only:
        only = {s.strip() for s in a.only.split(",") if s.strip()}
        unknown = sorted(only - set(STAGE_NAMES))
        if unknown:
            p.error(f"--only: unknown stage(s) {unknown}; stages: {', '.join(STAGE_NAMES)}")
    clash = [f for f in OUT_FILES if os.path.exists(os.path.join(a.out_dir, f))]
    if clash:
        p.error(f"{a.out_dir} already holds {', '.join(clash)} from an earlier run; give an empty or new folder")
    os.makedirs(a.out_dir, exist_ok=True)
    total = a.total_s if a.total_s is not None else (DRY_TOTAL_S if a.dry_run else DEFAULT_TOTAL_S)
    if a.stage_s is not None and a.stage_s <= 0:
        p.error(f"--stage-s must be > 0, got {a.stage_s}")
    budgets: dict[str, float] = {}
    for item in (a.budgets or "").split(","):
        if not item.strip():
            continue
        name, _, secs = item.partition("=")
        try:
            value = float(secs)
        except ValueError:
            value = -1.0
        if name.strip() not in STAGE_NAMES or value <= 0:
            p.error(f"--budgets takes STAGE=SECONDS with a stage of {', '.join(STAGE_NAMES)} and seconds > 0, "
                    f"got {item!r}")
        budgets[name.strip()] = value
    summary = Runner(a.out_dir, a.dry_run, a.wheels, total, only, a.stage_s, budgets).run()
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
