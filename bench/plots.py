"""PNG plots of the benchmark rows (matplotlib, Agg backend: no display needed).

One function per bench, each taking the rows that bench's ``run`` returns and a folder, writing
``<folder>/<name>.png`` and returning its path. Every figure carries a subtitle naming the device, the torch
threads and the load average, because CPU timings on a shared machine mean nothing without them.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from samr1.bench.harness import environment

# Colours: grey = reference / baselines, greens = samr1 fast paths; stage colours fixed across figures.
REF = "#8c8c8c"
REF2 = "#b5b5b5"
FAST = "#2e8b57"
FAST2 = "#1f5f3c"
STAGE_COLOURS = {"parse": "#9467bd", "load": "#bcbd22", "encode": "#d95f02", "decode": "#1f77b4", "iou": "#2ca02c"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 10, "axes.titlesize": 11, "axes.spines.top": False,
                         "axes.spines.right": False})
    return plt


def device_label(device: str | torch.device = "cpu", rows: list[dict[str, Any]] | None = None) -> str:
    """'cpu (AMD EPYC, 2 cores), 1 torch thread, load avg 2.1, commit abc1234, 2026-01-01 09:00 UTC' (on CUDA
    the GPU's name instead of threads and load). From the rows when they are JSON records (re-plotting a
    recorded run), else from the current process."""
    first = rows[0] if rows else {}
    env = first if "device" in first and "date" in first else environment(device)
    parts = [str(env["device"])]
    if parts[0].startswith("cpu"):
        counts = sorted({r["threads"] for r in rows or [] if r.get("threads") is not None})
        if len(counts) > 1:  # a thread sweep
            parts.append(f"{','.join(map(str, counts))} torch threads (sweep)")
        else:
            threads = counts[0] if counts else env.get("torch_threads", torch.get_num_threads())
            parts.append(f"{threads} torch thread{'s' if threads != 1 else ''}")
        loads = [r["loadavg_1m"] for r in rows or [] if r.get("loadavg_1m") is not None] or \
            ([env["loadavg_1m"]] if env.get("loadavg_1m") is not None else [])
        if loads:
            lo, hi = min(loads), max(loads)
            parts.append(f"load avg {lo:.1f}" + (f"-{hi:.1f}" if hi - lo >= 0.05 else ""))
    if env.get("commit"):
        parts.append(f"commit {env['commit']}")
    if env.get("date"):
        parts.append(f"{str(env['date'])[:16]} UTC")
    return ", ".join(parts)


def _save(fig, out: str, name: str) -> str:
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, f"{name}.png")
    fig.savefig(path, dpi=100)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def _fmt_s(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds * 1e6:.0f} us"


def plot_reward_step(rows: list[dict[str, Any]], out: str, device: str = "cpu") -> str:
    """Left: seconds per step for each way (log), speedup over the per-completion loop on each bar.
    Right: where the engine's time goes, cold and warm (stacked ms: parse / load / encode / decode / IoU)."""
    plt = _pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 5.2), gridspec_kw={"width_ratios": [1.15, 1]})
    r0 = rows[0]
    # a loop timed on a subset and scaled to the step says so on its bar
    names = [f"{r['way']}\n(extrapolated from {r['loop_extrapolated_from']})"
             if r["way"] == "loop" and r.get("loop_extrapolated_from") else r["way"] for r in rows]
    times = [r["step_s"] for r in rows]
    colours = [REF, REF2, FAST, FAST2][: len(rows)]
    bars = ax1.bar(names, times, color=colours)
    ax1.set_yscale("log")
    ax1.set_ylabel("seconds per step (log scale)")
    ax1.set_title(f"one reward step: B={r0['B']} images x G={r0['G']} completions, SAM {r0['sam']}")
    for bar, r in zip(bars, rows, strict=True):
        label = f"{_fmt_s(r['step_s'])}\n{r['speedup_vs_loop']:.1f}x"
        ax1.annotate(label, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom",
                     fontsize=9)
    ax1.set_ylim(min(times) / 3, max(times) * 4)
    ax1.set_xlabel("encoder images per step: " + ", ".join(f"{r['way']} {r['encoder_images']}" for r in rows),
                   fontsize=8)

    split = [r for r in rows if "stages" in r]
    for r in split:
        bottom = 0.0
        for stage, colour in STAGE_COLOURS.items():
            v = r["stages"].get(f"time_{stage}_s", 0.0) * 1e3
            ax2.bar(r["way"], v, bottom=bottom, color=colour, label=stage if r is split[0] else None, width=0.55)
            if v > 0.04 * sum(x * 1e3 for k, x in r["stages"].items() if k.startswith("time_")):
                ax2.annotate(f"{stage} {v:.0f} ms", (r["way"], bottom + v / 2), ha="center", va="center",
                             fontsize=8, color="white")
            bottom += v
        ax2.annotate(f"{bottom:.0f} ms", (r["way"], bottom), ha="center", va="bottom", fontsize=9)
    # the small stages vanish in the stack: every stage's value is also written under its bar
    ax2.set_xticks(range(len(split)))
    def _stage_text(r: dict[str, Any]) -> str:
        v = {st: r["stages"].get(f"time_{st}_s", 0.0) * 1e3 for st in STAGE_COLOURS}
        return (f"{r['way']}\nparse {v['parse']:.1f}, load {v['load']:.1f}, encode {v['encode']:.0f}\n"
                f"decode {v['decode']:.0f}, iou {v['iou']:.1f} (ms)")

    ax2.set_xticklabels([_stage_text(r) for r in split], fontsize=8)
    ax2.set_ylabel("milliseconds per step")
    ax2.set_title("engine time split (parse timed on its own)")
    ax2.legend(loc="upper right", fontsize=8)
    ax2.set_ylim(0, max(sum(v for k, v in r["stages"].items() if k.startswith("time_")) for r in split) * 1e3 * 1.15
                 if split else 1)
    fig.suptitle(device_label(device, rows), fontsize=9, y=0.995)
    fig.tight_layout()
    return _save(fig, out, "reward_step")


def plot_mask_iou(rows: list[dict[str, Any]], out: str, device: str = "cpu") -> str:
    """Time per call vs N masks (log-log), one line per (original size, backend); speedup at each fast point."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    sizes = list(dict.fromkeys(r["size"] for r in rows))
    backends = list(dict.fromkeys(r["backend"] for r in rows))
    palette = ["#1f77b4", "#d62728", "#9467bd", "#ff7f0e"]
    for si, size in enumerate(sizes):
        for backend in backends:
            pts = sorted((r["N"], r["median_s"], r.get("speedup", 1.0)) for r in rows
                         if r["size"] == size and r["backend"] == backend)
            if not pts:
                continue
            ref = "reference" in backend
            xs, ys, sp = zip(*pts, strict=True)
            ax.plot(xs, ys, marker="o" if ref else "s", linestyle="--" if ref else "-",
                    color=palette[si % len(palette)], alpha=0.6 if ref else 1.0, label=f"{size}: {backend}")
            if not ref:
                for x, y, s in zip(xs, ys, sp, strict=True):
                    ax.annotate(f"{s:.0f}x", (x, y), textcoords="offset points", xytext=(0, -13), ha="center",
                                fontsize=8, color=palette[si % len(palette)])
    ax.set_xscale("log")
    ax.set_yscale("log")
    ns = sorted({r["N"] for r in rows})
    ax.set_xticks(ns)
    ax.set_xticklabels([str(n) for n in ns])
    from matplotlib.ticker import NullFormatter

    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.margins(x=0.08, y=0.12)
    ax.set_xlabel("N masks per call (SAM low-res logits, 256 x 256 each)")
    ax.set_ylabel("seconds per call (median, log)")
    ax.set_title("logits -> mask at original size -> IoU: torch reference vs fused kernel\n"
                 "(label under each fused point: speedup over the reference)")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8)
    fig.suptitle(device_label(device, rows), fontsize=9, y=0.995)
    fig.tight_layout()
    return _save(fig, out, "mask_iou")


def plot_prompt_pack(rows: list[dict[str, Any]], out: str, device: str = "cpu") -> str:
    """Time per call vs N prompts (log-log), one line per backend; the speedup under each fast point."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for backend in dict.fromkeys(r["backend"] for r in rows):
        pts = sorted((r["N"], r["median_s"], r.get("speedup", 1.0)) for r in rows if r["backend"] == backend)
        ref = "reference" in backend
        xs, ys, sp = zip(*pts, strict=True)
        ax.plot(xs, ys, marker="o" if ref else "s", linestyle="--" if ref else "-", label=backend)
        if not ref:
            for x, y, s in zip(xs, ys, sp, strict=True):
                ax.annotate(f"{s:.2g}x", (x, y), textcoords="offset points", xytext=(0, -13), ha="center", fontsize=8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ns = sorted({r["N"] for r in rows})
    ax.set_xticks(ns)
    ax.set_xticklabels([str(n) for n in ns])
    from matplotlib.ticker import NullFormatter

    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("N prompts per call (box + 0-3 points each)")
    ax.set_ylabel("seconds per call (median, log)")
    ax.set_title("prompt packing: torch reference vs Triton kernel\n(label under each fast point: speedup)")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8)
    fig.suptitle(device_label(device, rows), fontsize=9, y=0.995)
    fig.tight_layout()
    return _save(fig, out, "prompt_pack")


def _decode_short(path: str) -> str:
    return ("per-prompt predict\n+ numpy IoU (reference)" if "reference" in path else
            "decode_batch only" if "only" in path else "decode_batch + select_best\n+ fused IoU")


def plot_decode(rows: list[dict[str, Any]], out: str, device: str = "cpu") -> str:
    """Milliseconds per prompt: per-prompt predict loop vs batched decode + fused IoU (and decode alone);
    one bar per thread count when the rows are a thread sweep (label: ms, speedup over the reference at
    the same count)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.6))
    paths = list(dict.fromkeys(r["path"] for r in rows))
    counts = list(dict.fromkeys(r.get("threads") for r in rows))
    width = 0.8 / len(counts)
    palettes = [[REF, FAST, "#7fbf9a"], ["#5f5f5f", FAST2, "#4f9f6a"], ["#3a3a3a", "#0f3f26", "#2f7f4a"]]
    for ci, t in enumerate(counts):
        for pi, p in enumerate(paths):
            r = next((r for r in rows if r["path"] == p and r.get("threads") == t), None)
            if r is None:
                continue
            x = pi + (ci - (len(counts) - 1) / 2) * width
            ax.bar(x, r["ms_per_prompt"], width=width * 0.95, color=palettes[ci % len(palettes)][pi % 3],
                   label=f"{t} thread{'s' if t != 1 else ''}" if pi == 1 and len(counts) > 1 else None)
            ax.annotate(f"{r['ms_per_prompt']:.1f} ms\n{r['speedup']:.1f}x"
                        + (f"\n{t} thr" if len(counts) > 1 else ""),
                        (x, r["ms_per_prompt"]), ha="center", va="bottom", fontsize=8 if len(counts) > 1 else 9)
    ax.set_xticks(range(len(paths)))
    ax.set_xticklabels([_decode_short(p) for p in paths])
    ax.set_ylim(0, max(r["ms_per_prompt"] for r in rows) * 1.3)
    ax.set_ylabel("milliseconds per prompt (median)")
    if len(counts) > 1:
        ax.legend(fontsize=8, loc="upper right")
    r0 = rows[0]
    ax.set_title(f"decode + IoU, embeddings precomputed: {r0['images']} images, {r0['prompts']} prompts "
                 f"(box + 2 points), SAM {r0['sam']}")
    fig.suptitle(device_label(device, rows), fontsize=9, y=0.995)
    fig.tight_layout()
    return _save(fig, out, "decode")


def plot_thread_scaling(rows: list[dict[str, Any]], out: str, name: str, key: str, device: str = "cpu",
                        per: str = "prompt") -> str:
    """A thread sweep: left, milliseconds per ``per`` (prompt / completion) vs threads, one line per path
    (``row[key]``); right, parallel efficiency vs threads (``efficiency`` from
    :func:`samr1.bench.harness.add_scaling`; 1.0 = perfect). Writes ``<out>/<name>.png``."""
    plt = _pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.8))
    field = f"ms_per_{per}"
    palette = [REF, "#1f77b4", FAST, FAST2, "#d95f02", "#9467bd"]
    counts = sorted({r["threads"] for r in rows})
    for i, p in enumerate(dict.fromkeys(r[key] for r in rows)):
        pts = sorted((r["threads"], r[field], r["efficiency"]) for r in rows if r[key] == p)
        xs, ys, eff = zip(*pts, strict=True)
        colour = palette[i % len(palette)]
        label = _decode_short(p).replace("\n", " ") if key == "path" else p
        ax1.plot(xs, ys, marker="o", color=colour, label=label)
        for x, y in zip(xs, ys, strict=True):
            ax1.annotate(f"{y:.1f}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8, color=colour)
        ax2.plot(xs, eff, marker="o", color=colour, label=label)
        for x, e in zip(xs, eff, strict=True):
            ax2.annotate(f"{e:.0%}", (x, e), textcoords="offset points", xytext=(4, 4), fontsize=8, color=colour)
    for ax in (ax1, ax2):
        ax.set_xticks(counts)
        ax.set_xlabel("threads")
        ax.grid(True, alpha=0.3)
    ax1.set_yscale("log")
    ax1.set_ylabel(f"milliseconds per {per} (median, log)")
    ax1.set_title(f"time per {per} vs threads")
    ax1.legend(fontsize=8)
    ax2.axhline(1.0, color="#555", linestyle=":", linewidth=1)
    ax2.set_ylim(0, 1.15)
    ax2.set_ylabel(f"parallel efficiency vs {counts[0]} thread{'s' if counts[0] != 1 else ''}")
    ax2.set_title("parallel efficiency: t0 T(t0) / (t T(t))")
    fig.suptitle(device_label(device, rows), fontsize=9, y=0.995)
    fig.tight_layout()
    return _save(fig, out, name)


def plot_encoder(rows: list[dict[str, Any]], out: str, device: str = "cpu") -> str:
    """Milliseconds per image by backend, grouped by batch size; speedup over torch fp32 on each bar."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5.2))
    enc_rows = [r for r in rows if r.get("backend") != "preprocess (any)"]
    batches = sorted({r["batch"] for r in enc_rows})
    backends = list(dict.fromkeys(r["backend"] for r in enc_rows))
    width = 0.8 / max(len(backends), 1)
    palette = [REF, FAST, "#1f77b4", "#d95f02", "#9467bd", "#8c564b"]
    top = 0.0
    for bi, backend in enumerate(backends):
        for xi, b in enumerate(batches):
            r = next((r for r in enc_rows if r["backend"] == backend and r["batch"] == b), None)
            if r is None:
                continue
            x = xi + (bi - (len(backends) - 1) / 2) * width
            ax.bar(x, r["ms_per_img"], width=width * 0.95, color=palette[bi % len(palette)],
                   label=backend if xi == 0 else None)
            sp = r.get("speedup_vs_fp32")
            thr = r.get("threads_used")
            ax.annotate(f"{r['ms_per_img']:.0f} ms" + (f"\n{sp:.2f}x" if sp is not None and sp == sp else "")
                        + (f"\n{thr:.1f} threads busy" if thr else ""),
                        (x, r["ms_per_img"]), ha="center", va="bottom", fontsize=8)
            top = max(top, r["ms_per_img"])
    prep = next((r for r in rows if r.get("backend") == "preprocess (any)"), None)
    if prep is not None:
        ax.axhline(prep["ms_per_img"], color="#555", linestyle=":", linewidth=1.2,
                   label=f"host preprocessing, any backend ({prep['ms_per_img']:.0f} ms/img, batch 1)")
    ax.set_xticks(range(len(batches)))
    ax.set_xticklabels([f"batch {b}" for b in batches])
    ax.set_ylim(0, top * 1.4 if top else 1)
    ax.set_ylabel("milliseconds per image (median)")
    ax.set_title(f"SAM {enc_rows[0]['sam'] if enc_rows else '?'} image encoder by backend\n(label: ms/img, speedup "
                 "over torch fp32 at the same batch" + (", process CPU time / wall time)" if any(
                     r.get("threads_used") for r in enc_rows) else ")"))
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.09), ncol=2, frameon=False)
    fig.suptitle(device_label(device, rows), fontsize=9, y=0.995)
    fig.tight_layout()
    return _save(fig, out, "encoder")


def plot_parse(rows: list[dict[str, Any]], out: str) -> str:
    """Microseconds per completion for each case (log): parse_answer vs the Seg-Zero-style regex yardstick."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 0.38 * len(rows) + 1.6))
    names = [r["case"] for r in rows][::-1]
    ours = [r["median_us"] for r in rows][::-1]
    regex = [r.get("regex_median_us") for r in rows][::-1]
    y = range(len(names))
    ax.barh([v + 0.2 for v in y], ours, height=0.4, color=FAST, label="samr1 parse_answer")
    ax.barh([v - 0.2 for v in y], [v or 0 for v in regex], height=0.4, color=REF,
            label="regex + json.loads (Seg-Zero style; not the same parser)")
    ax.set_yticks(list(y))
    ax.set_yticklabels(names, fontsize=8)
    ax.set_xscale("log")
    lo = min(v for v in ours + [r for r in regex if r] if v > 0)
    for yi, (o, r) in enumerate(zip(ours, regex, strict=True)):
        ax.annotate(f"{o:.0f}", (o, yi + 0.2), xytext=(3, 0), textcoords="offset points", va="center", fontsize=7)
        if r:
            ax.annotate(f"{r:.0f}", (r, yi - 0.2), xytext=(3, 0), textcoords="offset points", va="center",
                        fontsize=7, color="#555")
        else:
            ax.annotate("regex not run (quadratic here)", (lo, yi - 0.2), va="center", fontsize=7, color="#555")
    ax.set_xlabel("microseconds per completion (median, log)")
    ax.set_title("answer parsing cost: typical rollouts and hostile text")
    ax.legend(fontsize=8, loc="upper right")
    fig.suptitle(device_label("cpu", rows), fontsize=9, y=0.995)
    fig.tight_layout()
    return _save(fig, out, "parse")


def plot_multi_object(rows: list[dict[str, Any]], out: str, device: str = "cpu") -> str:
    """Step time of the single-object and the multi-object (visionreasoner) reward step, cold and warm, with
    the SAM prompts each decodes and the ratio."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 3.6))
    temps = ["cold", "warm"]
    for k, (step, colour) in enumerate((("single-object (samr1)", REF), ("multi-object (visionreasoner)", FAST))):
        vals = [next((r for r in rows if r["step"] == step and r["cache"] == t), None) for t in temps]
        xs = [i + (k - 0.5) * 0.38 for i in range(len(temps))]
        ax.bar(xs, [v["step_s"] if v else 0 for v in vals], width=0.36, color=colour, label=step)
        for x, v in zip(xs, vals, strict=True):
            if v:
                note = f"{v['step_s']:.2f} s\n{v['sam_prompts']} prompts"
                if "ratio_vs_single" in v:
                    note += f"\n{v['ratio_vs_single']:.2f}x"
                ax.annotate(note, (x, v["step_s"]), ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(temps)))
    ax.set_xticklabels([f"{t} (embedding cache {'emptied' if t == 'cold' else 'filled'})" for t in temps])
    ax.set_ylabel("seconds per reward step (median)")
    return _finish_step_plot(fig, ax, rows, device, out, "multi_object", "one object vs 1-4 objects a row")


def _finish_step_plot(fig: Any, ax: Any, rows: list[dict[str, Any]], device: str, out: str, name: str,
                      what: str) -> str:
    """The tail of a reward-step figure: its B x G title, legend, device line, and the file written."""
    ax.set_title(f"reward step B={rows[0]['B']} x G={rows[0]['G']}: {what}")
    ax.legend(fontsize=8)
    fig.suptitle(device_label(device, rows), fontsize=9, y=0.995)
    fig.tight_layout()
    return _save(fig, out, name)


def plot_repeated_prompts(rows: list[dict[str, Any]], out: str, device: str = "cpu") -> str:
    """Warm reward-step time against how many distinct answers a group holds: every prompt decoded vs each
    distinct prompt once."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for way, colour in (("every prompt", REF), ("distinct once", FAST)):
        pts = sorted((r["k"], r["step_s"]) for r in rows if r["way"] == way)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", color=colour, label=way)
    for r in rows:
        if "speedup" in r:
            ax.annotate(f"{r['speedup']:.2f}x", (r["k"], r["step_s"]), textcoords="offset points", xytext=(0, -12),
                        ha="center", fontsize=7)
    ax.set_xscale("log", base=2)
    ax.set_xlabel(f"distinct answers a group's G = {rows[0]['G']} answers are drawn from")
    ax.set_ylabel("seconds per warm reward step (median)")
    return _finish_step_plot(fig, ax, rows, device, out, "repeated_prompts", "repeated answers decoded once")


def plot_fidelity(rows: list[dict[str, Any]], out: str) -> str:
    """Per preset and component: the share of completions where samr1 and the peer's real reward give the
    same value (all completions, and exact-format answers only)."""
    plt = _pyplot()
    comps = [r for r in rows if r["preset"] != "ground truth"]
    fig, ax = plt.subplots(figsize=(9, 0.36 * len(comps) + 1.6))
    names = [f"{r['preset']} / {r['component']}" for r in comps][::-1]
    allv = [r["agree"] / r["n"] if r["n"] else 0.0 for r in comps][::-1]
    exact = [r["exact_agree"] / r["exact_n"] if r["exact_n"] else 0.0 for r in comps][::-1]
    y = range(len(names))
    ax.barh([v + 0.2 for v in y], exact, height=0.4, color=FAST, label="exact-format answers")
    ax.barh([v - 0.2 for v in y], allv, height=0.4, color=REF, label="all completions (malformed included)")
    ax.set_yticks(list(y))
    ax.set_yticklabels(names, fontsize=8)
    ax.set_xlim(0, 1.05)
    ax.set_xlabel("share of completions scored the same (float-equal) as the peer's real reward")
    ax.set_title("samr1 reward presets beside the peers' real reward modules")
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    return _save(fig, out, "fidelity_peer")


def plot_limits(rows: list[dict[str, Any]], out: str, device: str = "cpu") -> str:
    """Four panels: a store row's read (plain copy vs first checked read vs later read), publishing one row
    (index.log append vs whole index.json), the serving process's RSS over requests under the cache caps,
    and /score's key lookup time per item."""
    plt = _pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    ax = axes[0][0]
    reads = [r for r in rows if r["part"] == "store-read"]
    labels = [f"{r['layout']}\n{r['hash']}" for r in reads]
    x = np.arange(len(reads))
    for off, key, colour, name in ((-0.3, "plain_ms_per_row", REF, "plain copy (no check)"),
                                   (-0.1, "first_ms_per_row", FAST, "first read (checked)"),
                                   (0.1, "later_ms_per_row", FAST2, "later reads"),
                                   (0.3, "digest_ms_per_row", "#d95f02", "the digest alone")):
        ax.bar(x + off, [r[key] for r in reads], width=0.2, color=colour, label=name)
    ax.set_xticks(x)
    ax.set_xticklabels(labels, fontsize=7)
    ax.set_ylabel("ms per row")
    ax.set_title("store: reading one row")
    ax.legend(fontsize=7)
    ax = axes[0][1]
    fl = [r for r in rows if r["part"] == "store-flush"]
    ax.plot([r["rows"] for r in fl], [r["whole_index_s"] for r in fl], "o-", color=REF, label="whole index.json")
    ax.plot([r["rows"] for r in fl], [r["append_s"] for r in fl], "o-", color=FAST, label="index.log append")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("rows in the store")
    ax.set_ylabel("seconds to publish one more row")
    ax.set_title("store: a flush")
    ax.legend(fontsize=7)
    ax = axes[1][0]
    sv = [r for r in rows if r["part"] == "serve"]
    caps = sorted({r["cap_mb"] for r in sv})
    for cap, colour in zip(caps, (FAST, "#d95f02", FAST2, REF), strict=False):  # one run per cap
        run = [r for r in sv if r["cap_mb"] == cap]
        req = [r["requests"] for r in run]
        ax.plot(req, [r["rss_mb"] for r in run], "o-", color=colour, label=f"process RSS, caps {cap} MiB each")
        ax.plot(req, [r["blob_mb"] + r["cache_mb"] for r in run], "s--", color=colour, alpha=0.5, lw=1,
                label=f"uploads + embeddings held, caps {cap} MiB")
    if sv:
        ax.set_xlabel(f"/score requests, each a new {sv[0]['side']}x{sv[0]['side']} image")
        ax.set_ylabel("MB")
        ax.set_title("serve: memory under the two cache caps")
        ax.legend(fontsize=7)
    ax = axes[1][1]
    rs = [r for r in rows if r["part"] == "resolve-items"]
    ax.plot([r["items"] for r in rs], [r["us_per_item"] for r in rs], "o-", color=FAST)
    ax.set_xscale("log")
    ax.set_xlabel("items in one /score request (all keys new)")
    ax.set_ylabel("microseconds per item")
    ax.set_ylim(bottom=0)
    ax.set_title("serve: /score key lookup")
    fig.suptitle(device_label(device, rows), fontsize=9, y=0.995)
    fig.tight_layout()
    return _save(fig, out, "limits")


# record file (written by each bench's run) -> the plot function for its rows
TRAIN_PARTS = {"generation_s": "#7f7f7f", "reward_s": "#d95f02", "other_scoring_s": "#9467bd", "update_s": "#1f77b4"}


def plot_train_step(rows: list[dict[str, Any]], out: str, device: str = "cpu") -> str:
    """One GRPO step per reward path, stacked seconds: generation / reward / other scoring / policy update,
    with the reward's share of the step written on each bar."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.6))
    for r in rows:
        bottom = 0.0
        for part, colour in TRAIN_PARTS.items():
            v = float(r.get(part) or 0.0)
            ax.bar(r["way"], v, bottom=bottom, color=colour, width=0.55,
                   label=part[:-2].replace("_", " ") if r is rows[0] else None)
            bottom += v
        ax.annotate(f"{_fmt_s(r['step_s'])}\nreward {100 * r['reward_share']:.1f} %", (r["way"], bottom),
                    ha="center", va="bottom", fontsize=9)
    r0 = rows[0]
    ax.set_ylabel("seconds per GRPO step (median)")
    ax.set_title(f"one GRPO step: {r0['completions_per_step']} completions (G={r0['G']}), SAM {r0['sam']}"
                 + (" — random policy, SAM never called" if r0.get("random_policy") else ""))
    ax.set_ylim(0, max(r["step_s"] for r in rows) * 1.3)
    ax.legend(loc="upper left", fontsize=8)
    fig.suptitle(device_label(device, rows), fontsize=9, y=0.995)
    fig.tight_layout()
    return _save(fig, out, "train_step")


RECORDS = {
    "reward_step.jsonl": plot_reward_step,
    "bench_mask_iou.jsonl": plot_mask_iou,
    "bench_decode.jsonl": plot_decode,
    "encoder.jsonl": plot_encoder,
    "parse.jsonl": lambda rows, out, device="cpu": plot_parse(rows, out),
    "train_step.jsonl": plot_train_step,
    "limits.jsonl": plot_limits,
    "prompt_pack.jsonl": plot_prompt_pack,
}


# record file -> (path column, figure name, unit) of its thread-scaling figure (benches that sweep threads)
SWEEP_PLOTS = {
    "reward_step.jsonl": ("way", "reward_step_scaling", "completion"),
    "bench_decode.jsonl": ("path", "decode_scaling", "prompt"),
}


def last_run(path: str) -> list[dict[str, Any]]:
    """The rows of the last run appended to a JSON-lines record (one run = one ``date`` and ``bench``)."""
    import json

    with open(path, encoding="utf-8") as f:
        records = [json.loads(line) for line in f if line.strip()]
    if not records:
        return []
    last = (records[-1].get("date"), records[-1].get("bench"))
    return [r for r in records if (r.get("date"), r.get("bench")) == last]


def main(argv: list[str] | None = None) -> None:
    """Re-plot the last recorded run of every bench found in a folder of JSON-lines records."""
    import argparse

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("records", help="folder with the benches' *.jsonl records (a bench's --out)")
    p.add_argument("--out", default=None, help="folder for the PNGs (default: the records folder)")
    a = p.parse_args(argv)
    for name, fn in RECORDS.items():
        path = os.path.join(a.records, name)
        if os.path.exists(path):
            rows = last_run(path)
            if not rows:
                continue
            device = "cuda" if "cpu" not in str(rows[0].get("device")) else "cpu"
            counts = sorted({r["threads"] for r in rows if r.get("threads") is not None})
            sweep = len(counts) > 1 and name in SWEEP_PLOTS
            # a thread sweep of the reward step: its step figure shows the largest count, the sweep its own
            one = [r for r in rows if r.get("threads") == counts[-1]] if sweep and name == "reward_step.jsonl" else rows
            print(fn(one, a.out or a.records, device))
            if sweep:
                key, fig, per = SWEEP_PLOTS[name]
                print(plot_thread_scaling(rows, a.out or a.records, fig, key, device, per=per))


if __name__ == "__main__":
    main()
