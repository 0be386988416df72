"""``samr1 bench learn``: does a policy get better under samr1's reward? One seeded run on a 2-core CPU.

What it does, per seed and scene mode (``samr1.train.scene_data``: ``plain`` scenes where an object's box is a
good proxy for its mask, ``hard`` scenes where it is not and the points decide what SAM segments):

1. builds a tiny Qwen2.5-VL policy in code (hidden 64, 2 layers, a 112-px image = 16 visual tokens) and writes
   a training set and a disjoint held-out set of 160 x 160 scenes (the held-out scenes come from scene seeds
   far from the training ones);
2. warm-starts it (supervised, compact target) until sampled answers parse: every ``warm_eval_every`` steps
   it samples at temperature 1.0 on ``warm_parse_scenes`` training scenes and stops at the first evaluation
   where at least ``warm_parse_target`` of them parse (or at ``warm_max_steps``);
3. runs two GRPO arms from that checkpoint with the same seed and steps, side by side (one process and one
   thread each): ``sam``, samr1's reward (think + answer format, tiered IoU and continuous mask IoU through
   the SAM engine with the shipped ``tiny-shapes`` SAM), and ``box``, the control (Seg-Zero's box IoU, box L1
   and point rewards, thresholds scaled from the 840 frame to the policy's, no SAM mask in the reward);
4. evaluates each arm on the held-out scenes before the first step, every ``eval_every`` steps and after the
   last, with ``samr1 eval``'s code (greedy, SAM's mask, gIoU / cIoU / parse rate), and keeps the best
   evaluated policy beside the last.

Writes to ``--out``: ``learn.jsonl`` (one record per evaluation: ``arm``, ``seed``, ``mode``, ``step``,
``heldout_giou``, ``heldout_ciou``, ``heldout_parse``, ``train_reward_mean``, ``frac_reward_zero_std``,
``dup_answer_frac``, ``reward_share``, ``seconds``), ``learn_summary.json`` (per seed, mode and arm: start,
final and best held-out figures and the gains, plus every setting and the manifests' paths), ``learn.png``
(held-out gIoU against step) and the policies ``seed<S>/<mode>/warm``, ``.../sam/final``, ``.../sam/best``,
``.../box/final``, ``.../box/best``. ``--quick`` runs a few steps of everything (the test suite checks the
records, never a gain or a time).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from typing import Any

ARMS: dict[str, list[str]] = {
    "sam": ["think", "answer", "iou", "mask_iou"],
    "box": ["think", "answer", "box_iou", "box_l1", "point_dist"],
}
"""The two GRPO arms: samr1's SAM-in-the-loop reward, and Seg-Zero's box / point control."""

TEMPLATE = "Find '{query}'. Answer as <think>...</think><answer>{{json}}</answer>."
"""A short prompt: the tiny byte-level policy reads every byte, and the question is what matters."""


@dataclass
class LearnSettings:
    """Every knob of the run (the defaults are the recorded run's)."""

    train_scenes: int = 512
    heldout_scenes: int = 256
    scene_size: int = 160
    train_seed: int = 500
    heldout_seed: int = 900_000
    policy_px: int = 112
    hidden: int = 64
    layers: int = 2
    heads: int = 4
    warm_lr: float = 3e-3
    warm_batch: int = 16
    warm_max_steps: int = 2000
    warm_eval_every: int = 100
    warm_parse_target: float = 0.9
    warm_parse_scenes: int = 64
    grpo_steps: int = 1200
    grpo_lr: float = 1e-4
    beta: float = 5e-3
    num_generations: int = 8
    prompts_per_step: int = 2
    max_new_tokens: int = 128
    eval_every: int = 100
    eval_batch: int = 32

    @classmethod
    def quick(cls) -> LearnSettings:
        return cls(train_scenes=8, heldout_scenes=4, scene_size=64, policy_px=56, hidden=16, layers=1, heads=2,
                   warm_batch=4, warm_max_steps=4, warm_eval_every=2, warm_parse_scenes=4, grpo_steps=2,
                   num_generations=2, prompts_per_step=2, max_new_tokens=16, eval_every=1, eval_batch=4)


# ------------------------------------------------------------------------------------------- one arm
def _run_arm(spec: dict[str, Any]) -> None:
    """One GRPO arm (run in its own process: ``python -m samr1.bench.bench_learn --arm JSON``)."""
    import torch

    from samr1.train.config import TrainConfig
    from samr1.train.driver import train

    torch.set_num_threads(int(spec.pop("threads", 1)))
    cfg = TrainConfig(**spec)
    train(cfg, log=lambda m: print(m, file=sys.stderr, flush=True))


def _arm_spec(s: LearnSettings, arm: str, warm: str, train_manifest: str, heldout: str, out_dir: str, seed: int,
              device: str) -> dict[str, Any]:
    scale = s.policy_px / 840  # Seg-Zero's thresholds are pixels of its 840 frame: same tolerance in ours
    return dict(model=warm, data=train_manifest, sam="tiny-shapes", device=device, components=ARMS[arm],
                reward_options={"box_l1_threshold": 10.0 * scale, "point_threshold": 100.0 * scale},
                prompt=TEMPLATE, policy_image_size=s.policy_px, num_generations=s.num_generations,
                per_device_train_batch_size=s.num_generations * s.prompts_per_step,
                max_completion_length=s.max_new_tokens, max_steps=s.grpo_steps, learning_rate=s.grpo_lr,
                beta=s.beta, temperature=1.0, seed=seed, save_steps=max(1, s.grpo_steps), save_total_limit=1,
                eval_data=heldout, eval_steps=s.eval_every, eval_batch_size=s.eval_batch, output_dir=out_dir,
                progress=False, log_completions=False,  # a table per step would cost time and disk here
                # TRL's own logging: the same run shows up in TensorBoard (<arm>/runs) where it is installed
                report_to=["tensorboard"] if importlib.util.find_spec("tensorboard") else ["none"])


# ------------------------------------------------------------------------------------------- warm start
def _sampled_parse_rate(model: Any, processor: Any, rows: list[Any], engine: Any, s: LearnSettings) -> float:
    """Fraction of ``rows`` whose answer parses when sampled at temperature 1.0 (TRL's rollout settings)."""
    from samr1.pipeline import ReasoningSegmenter

    seg = ReasoningSegmenter(model, processor, engine, template=TEMPLATE, model_size=(s.policy_px, s.policy_px),
                             max_new_tokens=s.max_new_tokens, overlap=False, do_sample=True, temperature=1.0,
                             top_k=0, top_p=1.0)
    try:
        ok = 0
        for i in range(0, len(rows), s.eval_batch):
            chunk = rows[i:i + s.eval_batch]
            res = seg.segment_batch([r.image for r in chunk], [r.query for r in chunk])
            ok += sum(1 for r in res if r.answer.ok)
        return ok / max(1, len(rows))
    finally:
        seg.close()


def _ceiling(rows: list[Any], engine: Any, s: LearnSettings) -> float:
    """Mean IoU of the ground truth's own box and points through the SAM engine: the best any answer in this
    format gets on these rows."""
    from samr1.answer import parse_answer
    from samr1.io import load_image, load_mask
    from samr1.train.warmstart import target_text

    images = [load_image(r.image) for r in rows]
    masks = [load_mask(r.mask) for r in rows]
    answers = [parse_answer(target_text(r.query, m, s.policy_px), image_size=m.shape,
                            model_size=(s.policy_px, s.policy_px)) for r, m in zip(rows, masks, strict=True)]
    ious = engine.score(images, answers, masks)
    return float(sum(ious) / max(1, len(ious)))


def _warm(s: LearnSettings, seed: int, root: str, train_rows: list[Any], engine: Any) -> dict[str, Any]:
    import torch

    from samr1.train.tiny_policy import build_tiny_policy
    from samr1.train.warmstart import warm_start

    torch.manual_seed(seed)
    px = s.policy_px * s.policy_px
    policy0 = build_tiny_policy(os.path.join(root, "policy0"), hidden=s.hidden, layers=s.layers, heads=s.heads,
                                min_pixels=px, max_pixels=px, seed=seed)
    probe = train_rows[:s.warm_parse_scenes]
    evals: list[dict[str, Any]] = []

    def parse_check(model: Any, processor: Any, step: int) -> bool:
        rate = _sampled_parse_rate(model, processor, probe, engine, s)
        evals.append({"step": step, "sampled_parse": rate})
        print(f"  warm start step {step}: sampled parse rate {rate:.3f} (target {s.warm_parse_target})", flush=True)
        return rate >= s.warm_parse_target

    ws = warm_start(policy0, train_rows, os.path.join(root, "warm"), steps=s.warm_max_steps, lr=s.warm_lr,
                    batch_size=s.warm_batch, prompt=TEMPLATE, policy_size=s.policy_px, seed=seed, log=None,
                    max_new_tokens=s.max_new_tokens, eval_every=s.warm_eval_every, eval_fn=parse_check)
    return {"dir": ws["out_dir"], "steps": ws["steps"], "stopped_by_rule": ws["stopped_early"],
            "train_seconds": ws["seconds"], "eval_seconds": ws["eval_seconds"], "parse_checks": evals,
            "loss_first": ws["loss"][0], "loss_last": ws["loss"][-1]}


# ------------------------------------------------------------------------------------------- records
def _window_means(metrics: list[dict[str, Any]], lo: int, hi: int, key: str) -> float | None:
    vals = [r[key] for r in metrics if lo < r["step"] <= hi and isinstance(r.get(key), (int, float))]
    return float(sum(vals) / len(vals)) if vals else None


def _arm_records(arm_dir: str, arm: str, seed: int, mode: str) -> list[dict[str, Any]]:
    from samr1.train.driver import read_metrics

    with open(os.path.join(arm_dir, "summary.json"), encoding="utf-8") as f:
        summary = json.load(f)
    metrics = read_metrics(os.path.join(arm_dir, "metrics.jsonl"))
    out, prev, elapsed = [], 0, 0.0
    for ev in summary["heldout"]["evaluations"]:
        step = ev["step"]
        elapsed += ev.get("window_train_seconds") or 0.0
        out.append({
            "arm": arm, "seed": seed, "mode": mode, "step": step, "heldout_giou": ev["giou"],
            "heldout_ciou": ev["ciou"], "heldout_parse": ev["parse"],
            "train_reward_mean": _window_means(metrics, prev, step, "reward"),
            "frac_reward_zero_std": _window_means(metrics, prev, step, "frac_reward_zero_std"),
            "dup_answer_frac": _window_means(metrics, prev, step, "samr1/dup_answer_frac"),
            "train_parse_rate": (1 - v) if (v := _window_means(metrics, prev, step,
                                                                "samr1/parse_failure_rate")) is not None else None,
            "reward_share": ev.get("window_reward_share"), "seconds": round(elapsed, 2),
            "eval_seconds": ev["seconds"]})
        prev = step
    return out


def _arm_summary(records: list[dict[str, Any]], arm_dir: str) -> dict[str, Any]:
    first, last = records[0], records[-1]
    best = max(records, key=lambda r: r["heldout_giou"])
    return {"start": {k: first[f"heldout_{k}"] for k in ("giou", "ciou", "parse")},
            "final": {k: last[f"heldout_{k}"] for k in ("giou", "ciou", "parse")},
            "gain_giou": last["heldout_giou"] - first["heldout_giou"],
            "gain_ciou": last["heldout_ciou"] - first["heldout_ciou"],
            "parse_change": last["heldout_parse"] - first["heldout_parse"],
            "best": {"step": best["step"], "giou": best["heldout_giou"], "dir": os.path.join(arm_dir, "best")},
            "final_dir": os.path.join(arm_dir, "final"), "steps": last["step"]}


def markdown_table(summary: dict[str, Any]) -> str:
    """The summary as a Markdown table: one row per seed, mode and arm (start, final, gain, best, parse)."""
    lines = ["| mode | seed | arm | warm-start steps | held-out gIoU start | final | gain | cIoU start -> final | "
             "parse start -> final | best gIoU (step) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for key, run in summary["runs"].items():
        seed, mode = key.split("/")
        for arm, a in run["arms"].items():
            lines.append(f"| {mode} | {seed[4:]} | {arm} | {run['warm']['steps']} | {a['start']['giou']:.3f} | "
                         f"{a['final']['giou']:.3f} | {a['gain_giou']:+.3f} | {a['start']['ciou']:.3f} -> "
                         f"{a['final']['ciou']:.3f} | {a['start']['parse']:.3f} -> {a['final']['parse']:.3f} | "
                         f"{a['best']['giou']:.3f} ({a['best']['step']}) |")
    return "\n".join(lines)


def plot(records: list[dict[str, Any]], path: str, title: str) -> str:
    """Held-out gIoU against GRPO step: one panel per scene mode, a colour per arm, a line style per seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = sorted({r["mode"] for r in records}, key=lambda m: ("plain", "hard").index(m) if m in ("plain", "hard")
                   else 9)
    seeds = sorted({r["seed"] for r in records})
    colours = {"sam": "#1f77b4", "box": "#d62728"}
    styles = ["-", "--", ":", "-."]
    fig, axes = plt.subplots(1, len(modes), figsize=(5.2 * len(modes), 3.8), squeeze=False)
    for ax, mode in zip(axes[0], modes, strict=True):
        for arm in ARMS:
            for si, seed in enumerate(seeds):
                rs = [r for r in records if r["mode"] == mode and r["arm"] == arm and r["seed"] == seed]
                if rs:
                    ax.plot([r["step"] for r in rs], [r["heldout_giou"] for r in rs], styles[si % len(styles)],
                            color=colours[arm], marker="o", ms=3,
                            label=f"{arm} (seed {seed})" if len(seeds) > 1 else arm)
        start = [r["heldout_giou"] for r in records if r["mode"] == mode and r["step"] == 0]
        if start:
            ax.axhline(sum(start) / len(start), color="grey", lw=0.8, ls=":", label="warm start (step 0)")
        ax.set_title(f"{mode} scenes")
        ax.set_xlabel("GRPO step")
        ax.set_ylabel("held-out gIoU (greedy)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("\n".join(textwrap.wrap(title, 48 * len(modes))), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------------- run
def run(quick: bool = False, smoke: bool = False, out: str | None = None, device: str = "cpu",
        seeds: list[int] | None = None, modes: list[str] | None = None, settings: LearnSettings | None = None
        ) -> list[dict[str, Any]]:
    """Run the learning check; return the ``learn.jsonl`` records (see the module docstring)."""
    from samr1.bench.harness import environment, format_table, write_records

    from samr1.engine import SamEngine
    from samr1.sam import load_sam
    from samr1.train.data import check_rows, load_rows
    from samr1.train.scene_data import SCENE_MODES, write_scene_manifest

    s = settings or (LearnSettings.quick() if quick or smoke else LearnSettings())
    seeds = list(seeds) if seeds else [0]
    modes = list(modes) if modes else ["plain"]
    bad = [m for m in modes if m not in SCENE_MODES]
    if bad:
        raise ValueError(f"unknown scene modes {bad}; choose from {SCENE_MODES}")
    tmp = None
    if out is None:
        tmp = tempfile.TemporaryDirectory(prefix="samr1-learn-")
        out = tmp.name
    os.makedirs(out, exist_ok=True)
    t_start = time.perf_counter()
    engine = SamEngine(load_sam("tiny-shapes", device=device))
    records: list[dict[str, Any]] = []
    summary: dict[str, Any] = {"settings": {**dataclasses.asdict(s), "template": TEMPLATE, "arms": ARMS,
                                            "seeds": seeds, "modes": modes, "device": device},
                               "environment": environment(device), "runs": {}}
    for mode in modes:
        data_root = os.path.join(out, "data", mode)
        train_m = write_scene_manifest(os.path.join(data_root, "train"), s.train_scenes,
                                       size=(s.scene_size, s.scene_size), seed=s.train_seed, mode=mode)
        held_m = write_scene_manifest(os.path.join(data_root, "heldout"), s.heldout_scenes,
                                      size=(s.scene_size, s.scene_size), seed=s.heldout_seed, mode=mode)
        train_rows, _ = check_rows(load_rows(train_m))
        held_rows, _ = check_rows(load_rows(held_m))
        ceiling = _ceiling(held_rows, engine, s)
        summary["settings"].setdefault("manifests", {})[mode] = {"train": train_m, "heldout": held_m,
                                                                  "heldout_ceiling_giou": ceiling}
        for seed in seeds:
            root = os.path.join(out, f"seed{seed}", mode)
            print(f"[learn] seed {seed}, {mode} scenes: warm start", flush=True)
            t0 = time.perf_counter()
            warm = _warm(s, seed, root, train_rows, engine)
            print(f"[learn] warm start: {warm['steps']} steps, {warm['train_seconds']:.0f} s "
                  f"(+{warm['eval_seconds']:.0f} s parse checks); GRPO arms {list(ARMS)} side by side", flush=True)
            procs = {}
            for arm in ARMS:
                spec = _arm_spec(s, arm, warm["dir"], train_m, held_m, os.path.join(root, arm), seed, device)
                env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
                log = open(os.path.join(root, f"{arm}.log"), "w", encoding="utf-8")  # noqa: SIM115 - closed below
                procs[arm] = (subprocess.Popen([sys.executable, "-m", "samr1.bench.bench_learn", "--arm",
                                                json.dumps(spec)], stdout=log, stderr=subprocess.STDOUT, env=env), log)
            failed = []
            for arm, (proc, log) in procs.items():
                rc = proc.wait()
                log.close()
                if rc != 0:
                    failed.append(f"{arm} (exit {rc}; see {log.name})")
            if failed:
                raise RuntimeError(f"GRPO arm(s) failed: {', '.join(failed)}")
            run_key = f"seed{seed}/{mode}"
            summary["runs"][run_key] = {"warm": warm, "seconds": round(time.perf_counter() - t0, 1), "arms": {}}
            for arm in ARMS:
                recs = _arm_records(os.path.join(root, arm), arm, seed, mode)
                records.extend(recs)
                summary["runs"][run_key]["arms"][arm] = _arm_summary(recs, os.path.join(root, arm))
            print(f"[learn] {run_key} done in {summary['runs'][run_key]['seconds']:.0f} s", flush=True)
    summary["total_seconds"] = round(time.perf_counter() - t_start, 1)
    for r in records:
        r["smoke"] = bool(smoke)
        r["quick"] = bool(quick)
    write_records(records, out, "learn", device)
    with open(os.path.join(out, "learn_summary.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=1)
    plot(records, os.path.join(out, "learn.png"),
         f"tiny Qwen2.5-VL + GRPO on a {os.cpu_count()}-core CPU: samr1's SAM reward vs the box control")
    print(format_table(records, ["mode", "seed", "arm", "step", "heldout_giou", "heldout_ciou", "heldout_parse",
                                 "train_reward_mean", "frac_reward_zero_std", "reward_share"]))
    print(markdown_table(summary))
    print(f"-> {out}/learn.jsonl, learn_summary.json, learn.png ({summary['total_seconds']:.0f} s)")
    if tmp is not None:
        tmp.cleanup()
    return records


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arm", help=argparse.SUPPRESS)  # internal: one GRPO arm's TrainConfig as JSON
    a = p.parse_args(argv)
    if a.arm:
        _run_arm(json.loads(a.arm))
        return 0
    p.error("run it as `samr1 bench learn` (this module's own entry runs one arm for it)")
    return 2


if __name__ == "__main__":
    sys.exit(main())
