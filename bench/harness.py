"""Shared benchmark harness: timing, environment capture, JSON-lines records, tables.

Rules every bench follows (docs/architecture.md, practice 5): warm-up runs are excluded; the statistic is the
median of repeats (p20/p80 beside it); on CUDA the time comes from CUDA events after a synchronize; the
reference and the fast path run in the SAME process and the ratio is printed with the accuracy.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from samr1.provenance import git_commit


@dataclass
class Timing:
    """Seconds per call over ``repeats`` timed runs (warm-up excluded)."""

    median: float
    p20: float
    p80: float
    repeats: int
    samples: list[float] = field(default_factory=list, repr=False)

    def as_dict(self) -> dict[str, float]:
        return {"median_s": self.median, "p20_s": self.p20, "p80_s": self.p80, "repeats": self.repeats}


def _quantile(xs: Sequence[float], q: float) -> float:
    s = sorted(xs)
    if len(s) == 1:
        return s[0]
    pos = q * (len(s) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def measure(fn: Callable[[], Any], *, warmup: int = 1, repeats: int = 5, device: str | torch.device = "cpu",
            min_time: float = 0.0) -> Timing:
    """Time ``fn()``: ``warmup`` untimed calls, then ``repeats`` timed calls (more while under ``min_time``)."""
    dev = torch.device(device)
    for _ in range(warmup):
        fn()
    samples: list[float] = []
    cuda = dev.type == "cuda"
    start_all = time.perf_counter()
    while len(samples) < repeats or (time.perf_counter() - start_all < min_time and len(samples) < 1000):
        if cuda:
            torch.cuda.synchronize(dev)
            a = torch.cuda.Event(enable_timing=True)
            b = torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            torch.cuda.synchronize(dev)
            samples.append(a.elapsed_time(b) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - t0)
    return Timing(statistics.median(samples), _quantile(samples, 0.2), _quantile(samples, 0.8), len(samples), samples)


def copy_bandwidth(device: str | torch.device) -> float:
    """Measured device-to-device copy bandwidth in bytes/s (read + write of a 256 MiB buffer): the floor of a
    memory-bound op is the bytes it must move over this."""
    src = torch.empty(64 * 2**20, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    t = measure(lambda: dst.copy_(src), warmup=2, repeats=10, device=device)
    return 2 * src.numel() * 4 / t.median


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux; else what :mod:`platform` says)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> float | None:
    """1-minute load average (None where the OS has none): CPU timings on a shared machine depend on it."""
    try:
        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        return None


def environment(device: str | torch.device = "cpu") -> dict[str, Any]:
    """Device, library versions, commit, date, torch threads and load average recorded with every row."""
    dev = torch.device(device)
    env: dict[str, Any] = {
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu ({cpu_model()}, {os.cpu_count()} cores)",
        "torch_threads": torch.get_num_threads(),
        "loadavg_1m": load_average(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "commit": git_commit(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
    }
    for mod in ("triton", "onnxruntime", "segment_anything", "transformers"):
        try:
            env[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - optional packages; absence is recorded
            env[mod] = None
    from samr1.ops import backends

    env["samr1_cpp"] = backends.cpp_status()[0]
    return env


def write_records(rows: list[dict[str, Any]], out_dir: str | None, name: str, device: str | torch.device = "cpu") -> str | None:
    """Append ``rows`` (with the environment merged in) to ``out_dir/<name>.jsonl``; return the path."""
    if not out_dir:
        return None
    os.makedirs(out_dir, exist_ok=True)
    env = environment(device)
    path = os.path.join(out_dir, f"{name}.jsonl")
    with open(path, "a", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps({"bench": name, **env, **row}, default=str) + "\n")
    return path


def save_and_plot(rows: list[dict[str, Any]], out_dir: str | None, name: str, device: str | torch.device = "cpu",
                  plots: Sequence[Callable[[], str | None]] = (), plot: bool = True) -> str | None:
    """A bench's tail: append ``rows`` to ``out_dir/<name>.jsonl`` (:func:`write_records`) and say where, then,
    when ``out_dir`` is given and ``plot`` is true, call each of ``plots`` (each draws one figure from the rows
    and returns its path) and print the path. Returns the records' path (None without ``out_dir``)."""
    path = write_records(rows, out_dir, name, device)
    if path:
        print(f"records appended to {path}")
    if out_dir and plot:
        for draw in plots:
            print(f"plot: {draw()}")
    return path


def agreement_line(ok: bool, detail: str, against: str = "the reference") -> str:
    """The line every bench prints beside its timings: ``agreement with <against>: <detail>: OK`` (or
    ``MISMATCH``), so a fast path that got faster by being wrong cannot pass unseen."""
    return f"agreement with {against}: {detail}: " + ("OK" if ok else "MISMATCH")


def format_table(rows: list[dict[str, Any]], columns: Sequence[str]) -> str:
    """A plain fixed-width table of ``columns`` from ``rows`` (floats shown with 4 significant digits)."""

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return "" if v is None else str(v)

    cells = [[fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) if cells else len(c) for i, c in enumerate(columns)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths, strict=True)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def parse_thread_counts(text: str) -> list[int]:
    """``"1,2,4"`` -> [1, 2, 4] (the ``--threads`` flag): positive ints, no repeats, order kept."""
    try:
        counts = [int(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--threads takes positive ints separated by commas (e.g. 1,2,4), got {text!r}") from None
    return thread_counts(counts)


def thread_counts(threads: int | Sequence[int] | None) -> list[int]:
    """A bench's thread counts: None -> [torch's current count]; an int -> [it]; a sequence -> its values.

    Raises:
        ValueError: an empty list, a count < 1 or not an int, or a repeated count.
    """
    if threads is None:
        return [torch.get_num_threads()]
    counts = [threads] if isinstance(threads, int) else list(threads)
    if not counts:
        raise ValueError("threads: give at least one count (e.g. 1 or 1,2,4)")
    for t in counts:
        if isinstance(t, bool) or not isinstance(t, int) or t < 1:
            raise ValueError(f"threads must be >= 1 (ints), got {t!r}")
    if len(set(counts)) != len(counts):
        raise ValueError(f"threads: each count once, got {counts}")
    return counts


def add_scaling(rows: list[dict[str, Any]], key: str, time_key: str) -> None:
    """Thread scaling of each path, in place: for rows sharing ``row[key]`` (a path or way), against the
    row with the smallest ``threads``: ``speedup_vs_first`` = T(t0) / T(t) and parallel ``efficiency`` =
    t0 * T(t0) / (t * T(t)) (1.0 = perfect scaling; on a CPU shared with other processes, meaningless).
    ``first_threads`` names t0."""
    for name in dict.fromkeys(r[key] for r in rows):
        group = [r for r in rows if r[key] == name]
        first = min(group, key=lambda r: r["threads"])
        for r in group:
            r["first_threads"] = first["threads"]
            r["speedup_vs_first"] = first[time_key] / r[time_key]
            r["efficiency"] = first["threads"] * first[time_key] / (r["threads"] * r[time_key])


def sam_bench_main(doc: str, run: Callable[..., Any]) -> None:
    """``python bench/<name>.py`` for a bench whose ``run`` takes quick, smoke, sam_kind, device and out: those
    flags (``--sam`` default ``tiny``), the run, and its wall time."""
    import argparse

    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--sam", default="tiny")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    t0 = time.perf_counter()
    run(quick=a.quick, smoke=a.smoke, sam_kind=a.sam, device=a.device, out=a.out)
    print(f"{time.perf_counter() - t0:.1f} s")
