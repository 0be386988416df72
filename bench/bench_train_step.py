"""One GRPO step of ``samr1 train`` split into generation / reward / the rest, with two reward paths, same run.

Ways (each a fresh TRL ``GRPOTrainer`` with the same seed, data and policy, so the completions are the same):

1. ``loop``         — Seg-Zero-style reward: per completion ``SamPredictor.set_image`` + ``predict`` +
                      numpy IoU (the encoder runs once per parseable completion);
2. ``engine``       — samr1's reward (``RewardHub`` over ``SamR1Reward`` + ``SamEngine``), no encode-ahead;
3. ``engine-ahead`` — the same with encode-ahead: a drawn batch's images are encoded on a side thread while
                      the policy generates.

With ``--rollouts-every K`` a fourth way runs: ``engine-ahead`` with rollout logging (``samr1 train
--rollouts-every K``, :class:`samr1.train.rollouts.RolloutLog`, 2 groups per logged step). Its cost is reported
three ways: the whole step's median against ``engine-ahead`` in the same run (noisy on a shared machine); the
time the log takes inside the reward call on a logged step (parsing the logged answers and the hand-off to the
writer thread; measured around the call) as a share of ``engine-ahead``'s median step; and the writer thread's
work per logged step (the logged masks, RLE / JPEG / JSON, the writes), as wall time while busy (with its waits
for a core) and as the thread's own CPU time (without them; a SAM decode the writer falls back to runs on the
decoder's worker threads and is not in it: ``masks decoded`` counts those masks).

Per way: median seconds per optimizer step of the whole step, generation (``_generate``), reward
(``_calculate_rewards``), the other scoring work (old/reference log-probs, advantages) and the policy update
(forward + backward + optimizer), the reward's share of the step, encoder images per step and the max reward
difference vs the loop (they must agree: the same SAM, the same masks). The first step of each way is a
warm-up (excluded). The hidden encoder time is ``engine`` reward time minus ``engine-ahead`` reward time.

The policy: ``--model DIR`` (e.g. a warm-started tiny policy, whose answers parse, so SAM actually runs);
without it a random tiny Qwen2.5-VL is built, whose completions never parse (then neither way calls SAM
and the table only shows the trainer's own cost; the output says so).

    python bench/bench_train_step.py [--quick | --smoke] [--model DIR] [--sam tiny-shapes] [--out DIR]
        [--rollouts-every K]

``--rollouts-replay N`` times the rollout writer alone instead (:func:`replay_rollouts`): N logged steps of
the reward path (no policy, no trainer), each followed by a wait while the writer works with nothing else
running, every logged answer parseable.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import tempfile
import time
from typing import Any

import numpy as np
import torch
from samr1.bench.harness import format_table, write_records

WAYS = ("loop", "engine", "engine-ahead")
ROLLOUTS_WAY = "engine-ahead+rollouts"


class LoopReward:
    """Seg-Zero-style reward functions: each completion parsed, its image ``set_image``-d and ``predict``-ed.

    Components have the same names as samr1's (think_format, answer_format, tiered_iou) so TRL logs them
    alike; the IoU is computed once per step and shared by the tiered component only.
    """

    def __init__(self, sam: Any, image_key: str = "sam_image", model_size: tuple[int, int] = (840, 840)):
        from segment_anything import SamPredictor

        self.predictor = SamPredictor(sam)
        self.image_key = image_key
        self.model_size = model_size
        self.encoder_images = 0

    def functions(self) -> list[Any]:
        from samr1.rewards import answer_format_reward, think_format_reward

        def think_format(completions, **kw):
            return think_format_reward(completions)

        def answer_format(completions, **kw):
            return answer_format_reward(completions, model_size=self.model_size)

        def tiered_iou(completions, **kw):
            from samr1.answer import parse_answer
            from samr1.engine.reference import predict_mask
            from samr1.geometry import mask_iou_numpy
            from samr1.rewards import completion_text, tiered_iou_reward

            out = []
            for c, img, m in zip(completions, kw[self.image_key], kw["mask"], strict=True):
                text = completion_text(c)
                a = parse_answer(text or "", img.shape[:2], self.model_size)
                if not a.ok:
                    out.append(0.0)
                    continue
                with torch.inference_mode():
                    self.predictor.set_image(img)  # per completion: what a per-sample reward function does
                    self.encoder_images += 1
                    pred = predict_mask(self.predictor, a, True)
                out.append(tiered_iou_reward(mask_iou_numpy(pred, np.asarray(m, bool))))
            return out

        return [think_format, answer_format, tiered_iou]


def _timed_trainer(base: type) -> type:
    class Timed(base):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            self.samr1_times: list[dict[str, float]] = []
            self._cur: dict[str, float] = {}

        def _acc(self, key: str, dt: float) -> None:
            self._cur[key] = self._cur.get(key, 0.0) + dt

        def _generate(self, *a, **k):
            t = time.perf_counter()
            try:
                return super()._generate(*a, **k)
            finally:
                self._acc("generation_s", time.perf_counter() - t)

        def _calculate_rewards(self, *a, **k):
            t = time.perf_counter()
            try:
                return super()._calculate_rewards(*a, **k)
            finally:
                self._acc("reward_s", time.perf_counter() - t)

        def _prepare_inputs(self, *a, **k):
            t = time.perf_counter()
            try:
                return super()._prepare_inputs(*a, **k)
            finally:
                self._acc("prepare_s", time.perf_counter() - t)

    return Timed


def _step_callback(trainer_ref: list) -> Any:
    from transformers import TrainerCallback

    class StepTimes(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            trainer_ref[0]._cur = {"t0": time.perf_counter(), "c0": time.process_time()}

        def on_step_end(self, args, state, control, **kw):
            tr = trainer_ref[0]
            cur = tr._cur
            cur["step_s"] = time.perf_counter() - cur.pop("t0")
            # CPU seconds of the whole process (every thread) in the step: what a side thread adds shows here
            # even when a free core hides it from the wall clock, and other jobs' load does not
            cur["step_cpu_s"] = time.process_time() - cur.pop("c0")
            tr.samr1_times.append(cur)

    return StepTimes()


def _rewards_callback(store: list) -> Any:
    from transformers import TrainerCallback

    class Rewards(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "reward" in logs:
                store.append((logs.get("reward"), logs.get("rewards/tiered_iou/mean")))

    return Rewards()


def run_way(way: str, model: str, manifest: str, out_dir: str, *, steps: int, sam_kind: str, device: str,
            g: int, batch: int, max_new: int, seed: int = 0, prompt: str = "seg-zero",
            rollouts_every: int = 0) -> dict[str, Any]:
    """Train ``steps`` GRPO steps with one reward path; return per-step timings (first step dropped)."""
    from accelerate import PartialState
    from transformers import AutoProcessor, PrinterCallback

    from samr1.engine import SamEngine
    from samr1.rewards import SamR1Reward
    from samr1.sam import load_sam
    from samr1.train.config import TrainConfig
    from samr1.train.data import PolicyDataset, check_rows, load_rows
    from samr1.train.driver import build_grpo_config, trainer_class
    from samr1.train.rewards_hub import RewardHub

    PartialState(cpu=device == "cpu")
    cfg = TrainConfig(model=model, data=manifest, sam=sam_kind, device=device, num_generations=g, seed=seed, prompt=prompt,
                      per_device_train_batch_size=batch, max_completion_length=max_new, max_steps=steps,
                      output_dir=out_dir, save_steps=10_000, progress=False).validate()
    rows, _ = check_rows(load_rows(manifest))
    ds = PolicyDataset(rows, cfg.prompt, cfg.policy_image_size)
    sam = load_sam(sam_kind, device=device, warn_random=False)
    engine = None
    rollouts = None
    if way == "loop":
        loop = LoopReward(sam)
        funcs = loop.functions()
    else:
        engine = SamEngine(sam)
        reward = SamR1Reward(engine, image_key="sam_image")
        if way == ROLLOUTS_WAY:
            from samr1.train.rollouts import RolloutLog

            rollouts = RolloutLog(os.path.join(out_dir, "rollouts"), rollouts_every, reward, groups=2,
                                  query_of=lambda i: ds.rows[i].query)
        hub = RewardHub(reward, rollouts=rollouts)
        funcs = hub.functions()
        if way in ("engine-ahead", ROLLOUTS_WAY):
            ds.on_batch = hub.prefetch
    cuda = device.startswith("cuda")
    args = build_grpo_config(cfg, use_cpu=not cuda, cuda=cuda)
    ref: list = [None]
    rewards: list = []
    trainer = _timed_trainer(trainer_class())(model=model, reward_funcs=funcs, args=args, train_dataset=ds.as_hf(),
                                              processing_class=AutoProcessor.from_pretrained(model),
                                              callbacks=[_step_callback(ref), _rewards_callback(rewards)])
    trainer.remove_callback(PrinterCallback)
    ref[0] = trainer
    trainer.train()
    if way != "loop":
        hub.close()
    times = trainer.samr1_times[1:] or trainer.samr1_times  # drop the warm-up step
    med = {k: statistics.median(t.get(k, 0.0) for t in times) for k in ("step_s", "generation_s", "reward_s",
                                                                          "prepare_s", "step_cpu_s")}
    med["mean_step_cpu_s"] = statistics.mean(t["step_cpu_s"] for t in times)
    enc = loop.encoder_images if way == "loop" else int(engine.stats["encoder_images"])
    extra = {}
    if rollouts is not None:
        st = rollouts.stats
        extra = {"rollouts_steps_logged": st["steps_logged"], "rollouts_groups_logged": st["groups_logged"],
                 "rollouts_bytes": st["bytes_written"],
                 "rollouts_s_per_logged_step": st["seconds_in_step"] / max(1, st["steps_logged"]),
                 "rollouts_writer_busy_s_per_logged_step": st["writer_busy_s"] / max(1, st["steps_logged"]),
                 # .get: the same bench times a samr1 from before these counters (a before / after comparison)
                 "rollouts_writer_cpu_s_per_logged_step": st.get("writer_cpu_s", math.nan) / max(1, st["steps_logged"]),
                 "rollouts_masks_kept": st.get("masks_kept"), "rollouts_masks_decoded": st.get("masks_decoded")}
    return {"way": way, "steps_timed": len(times), **med, **extra,
            "other_scoring_s": max(0.0, med["prepare_s"] - med["generation_s"] - med["reward_s"]),
            "update_s": max(0.0, med["step_s"] - med["prepare_s"]),
            "reward_share": med["reward_s"] / med["step_s"] if med["step_s"] else 0.0,
            "encoder_images_per_step": enc / max(1, len(trainer.samr1_times)), "rewards": rewards}


def run(quick: bool = False, smoke: bool = False, out: str | None = None, device: str = "cpu",
        sam_kind: str = "tiny-shapes", model: str | None = None, rows: int | None = None, g: int | None = None,
        steps: int | None = None, max_new: int | None = None, prompt: str = "seg-zero",
        image_size: int | None = None, rollouts_every: int = 0) -> list[dict[str, Any]]:
    """Time GRPO steps three ways (four with ``rollouts_every``; see the module docstring); print the table;
    append ``train_step.jsonl``."""
    from samr1.train.scene_data import write_scene_manifest
    from samr1.train.tiny_policy import build_tiny_policy

    g = g or (2 if smoke else 4 if quick else 8)
    steps = steps or (2 if smoke else 3 if quick else 4)
    n_rows = rows or (4 if smoke else 8 if quick else 16)
    batch = g * (2 if smoke else 2 if quick else 4)
    max_new = max_new or (16 if smoke else 120)
    with tempfile.TemporaryDirectory() as tmp:
        random_policy = model is None
        if random_policy:
            model = build_tiny_policy(os.path.join(tmp, "policy"), hidden=16)
        side = image_size or (112 if smoke else 160)
        manifest = write_scene_manifest(os.path.join(tmp, "data"), n_rows, size=(side, side), seed=1000)
        rows_out = []
        for way in WAYS + ((ROLLOUTS_WAY,) if rollouts_every else ()):
            r = run_way(way, model, manifest, os.path.join(tmp, way), steps=steps, sam_kind=sam_kind, device=device,
                        g=g, batch=batch, max_new=max_new, prompt=prompt, rollouts_every=rollouts_every)
            rows_out.append(r)
    base = rows_out[0]["rewards"]
    for r in rows_out:
        diffs = [abs(a[0] - b[0]) for a, b in zip(r["rewards"], base, strict=False) if a[0] is not None and b[0] is not None]
        r["max_reward_diff_vs_loop"] = max(diffs) if diffs else 0.0
        r["mean_reward"] = float(np.mean([x[0] for x in r["rewards"]])) if r["rewards"] else None
        r.update(G=g, completions_per_step=batch, sam=sam_kind, device=device, random_policy=random_policy,
                 smoke=smoke, threads=torch.get_num_threads())
        del r["rewards"]
    loop_reward = rows_out[0]["reward_s"]
    for r in rows_out:
        r["reward_speedup_vs_loop"] = loop_reward / r["reward_s"] if r["reward_s"] else None
    print(f"GRPO step: {batch} completions per step (G={g}), SAM {sam_kind}, device {device}, median of "
          f"{rows_out[0]['steps_timed']} steps after one warm-up" + (" (random policy: no answer parses, SAM is "
                                                                     "never called)" if random_policy else ""))
    print(format_table(rows_out, ["way", "step_s", "generation_s", "reward_s", "other_scoring_s", "update_s",
                                  "reward_share", "reward_speedup_vs_loop", "encoder_images_per_step",
                                  "mean_reward", "max_reward_diff_vs_loop"]))
    hidden = rows_out[1]["reward_s"] - rows_out[2]["reward_s"]
    print(f"encode-ahead: reward time {rows_out[1]['reward_s']:.3f} s -> {rows_out[2]['reward_s']:.3f} s "
          f"({hidden:+.3f} s of encoder time moved off the reward's critical path)")
    if rollouts_every:
        base, logged = rows_out[2], rows_out[3]
        in_step = logged["rollouts_s_per_logged_step"] / base["step_s"] if base["step_s"] else None
        whole = logged["step_s"] / base["step_s"] - 1 if base["step_s"] else None
        cpu = logged["mean_step_cpu_s"] / base["mean_step_cpu_s"] - 1 if base["mean_step_cpu_s"] else None
        # all of the log's work (reward call + the writer's busy time) as if it were on the critical path, against
        # a step under the same load: an upper bound of what logging can cost a step
        own = logged["rollouts_s_per_logged_step"] + logged["rollouts_writer_busy_s_per_logged_step"]
        own_share = own / base["step_s"] if base["step_s"] else None
        logged["rollouts_in_step_share"] = in_step
        logged["rollouts_step_slowdown"] = whole
        logged["rollouts_cpu_increase"] = cpu
        logged["rollouts_own_cpu_share"] = own_share
        print(f"rollouts every {rollouts_every} step(s): {logged['rollouts_steps_logged']} steps logged "
              f"({logged['rollouts_groups_logged']} groups, {logged['rollouts_bytes']} bytes)\n"
              f"  in the reward call (the step's critical path): {1000 * logged['rollouts_s_per_logged_step']:.1f} ms "
              f"per logged step = {in_step:.2%} of an engine-ahead step\n"
              f"  writer thread busy (masks, encodings, writes): "
              f"{1000 * logged['rollouts_writer_busy_s_per_logged_step']:.1f} ms per logged step; all of the log's work "
              f"= {own_share:.2%} of an engine-ahead step even if none of it overlapped "
              f"({own_share / rollouts_every:.2%} per step averaged over every {rollouts_every})\n"
              f"  writer thread CPU: {1000 * logged['rollouts_writer_cpu_s_per_logged_step']:.1f} ms per logged step = "
              f"{logged['rollouts_writer_cpu_s_per_logged_step'] / base['step_s']:.2%} of an engine-ahead step; masks "
              f"from the reward call's logits {logged['rollouts_masks_kept']}, decoded again "
              f"{logged['rollouts_masks_decoded']}\n"
              f"  vs engine-ahead in the same run: whole-step median {whole:+.2%}, process CPU per step (all threads, "
              f"mean) {cpu:+.2%} (both include other jobs' noise)")
    path = write_records(rows_out, out, "train_step", device)
    if path:
        print(f"records appended to {path}")
    if out:
        from samr1.bench.plots import plot_train_step

        print(f"figure: {plot_train_step(rows_out, out, device)}")
    return rows_out


def replay_rollouts(steps: int = 8, *, g: int = 8, prompts: int = 4, groups: int = 2, side: int = 160,
                    sam_kind: str = "tiny-shapes", out: str | None = None, seed: int = 0) -> dict[str, Any]:
    """The rollout writer's own work per logged step, with nothing else running: ``steps`` + 1 reward calls
    (the first a warm-up) of ``prompts`` x ``g`` completions on ``side`` px scenes through ``RewardHub`` +
    ``RolloutLog`` (``groups`` groups logged every step: ``groups * g`` answers, all parseable: the format
    policy's fixed answer with +-20 px of jitter in the 840 frame); after each call the main thread waits
    (``flush``) while the writer works alone. Returns and prints the writer's busy wall time and CPU time per
    logged step and where its masks came from."""
    from transformers import TrainerState

    from samr1.engine import SamEngine
    from samr1.rewards import SamR1Reward
    from samr1.sam import load_sam
    from samr1.shapes.scenes import make_scene
    from samr1.train.rewards_hub import RewardHub
    from samr1.train.rollouts import RolloutLog

    rng = np.random.default_rng(seed)
    reward = SamR1Reward(SamEngine(load_sam(sam_kind, warn_random=False)), image_key="sam_image")
    with tempfile.TemporaryDirectory() as tmp:
        log = RolloutLog(tmp, 1, reward, groups=groups)
        hub = RewardHub(reward, rollouts=log)
        for step in range(steps + 1):
            cols: dict[str, list] = {"comps": [], "images": [], "masks": [], "ids": []}
            for p in range(prompts):
                sc = make_scene(int(rng.integers(1 << 30)), size=(side, side))
                obj = max(sc.objects, key=lambda o: int(o.mask.sum()))
                for _ in range(g):
                    j = rng.integers(-20, 21, 6)
                    cols["comps"].append(f'<think></think><answer>{{"bbox":[{210 + j[0]},{210 + j[1]},{630 + j[2]},'
                                         f'{630 + j[3]}],"points_1":[{420 + j[4]},{420 + j[5]}],'
                                         '"points_2":[400,440]}</answer>')
                    cols["images"].append(sc.image)
                    cols["masks"].append(obj.mask)
                    cols["ids"].append(step * prompts + p)
            for f in hub.functions():
                f(prompts=None, completions=cols["comps"], sam_image=cols["images"], mask=cols["masks"],
                  row_id=cols["ids"], trainer_state=TrainerState(global_step=step))
            log.flush()
            if step == 0:  # the warm-up: the writer thread's start, the first JPEG and JSON
                base = dict(log.stats)
        hub.close()
    st = log.stats
    n = st["steps_logged"] - base["steps_logged"]

    def per_step(key: str) -> float:
        return 1000 * (st.get(key, math.nan) - base.get(key, math.nan)) / n

    row = {"way": "rollouts-replay", "steps_timed": n, "answers_per_logged_step": groups * g,
           "writer_busy_ms": per_step("writer_busy_s"), "writer_cpu_ms": per_step("writer_cpu_s"),
           "in_reward_call_ms": per_step("seconds_in_step"),
           "masks_kept": (st["masks_kept"] - base["masks_kept"]) if "masks_kept" in st else None,
           "masks_decoded": (st["masks_decoded"] - base["masks_decoded"]) if "masks_decoded" in st else None,
           "sam": sam_kind, "side": side, "threads": torch.get_num_threads()}
    print(f"rollout writer alone, {n} logged steps of {groups * g} parseable answers ({sam_kind}, {side} px, "
          f"{row['threads']} thread(s)): busy {row['writer_busy_ms']:.1f} ms, CPU {row['writer_cpu_ms']:.1f} ms per "
          f"logged step; in the reward call {row['in_reward_call_ms']:.2f} ms; masks from the reward call's logits "
          f"{row['masks_kept']}, decoded again {row['masks_decoded']}")
    write_records([row], out, "train_step", "cpu")
    return row


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="G=4, 8 completions per step, 3 steps")
    size.add_argument("--smoke", action="store_true", help="G=2, 4 completions, 2 steps of 16 tokens")
    p.add_argument("--model", default=None, help="policy directory (default: a random tiny Qwen2.5-VL)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--sam", default="tiny-shapes")
    p.add_argument("-G", type=int, default=None)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--max-new", type=int, default=None, help="max completion tokens")
    p.add_argument("--prompt", default="seg-zero", help="prompt template (the one the policy was trained with)")
    p.add_argument("--image-size", type=int, default=None, help="side of the synthetic scenes, px")
    p.add_argument("--out", default=None)
    p.add_argument("--rollouts-every", type=int, default=0, metavar="K",
                   help="also time engine-ahead with rollout logging every K steps (samr1 train --rollouts-every)")
    p.add_argument("--rollouts-replay", type=int, default=0, metavar="N",
                   help="only time the rollout writer alone over N logged steps (see replay_rollouts)")
    a = p.parse_args(argv)
    if a.rollouts_replay > 0:
        replay_rollouts(a.rollouts_replay, sam_kind=a.sam, out=a.out)
        return
    if a.rollouts_every < 0:
        p.error(f"--rollouts-every must be >= 0, got {a.rollouts_every}")
    run(quick=a.quick, smoke=a.smoke, out=a.out, device=a.device, sam_kind=a.sam, model=a.model, g=a.G,
        steps=a.steps, max_new=a.max_new, prompt=a.prompt, image_size=a.image_size, rollouts_every=a.rollouts_every)


if __name__ == "__main__":
    main()
