"""The GRPO driver: SAM-R1's objective on TRL's ``GRPOTrainer``.

:func:`train` does, in order (nothing slow happens before the data and the configuration are known good):

1. validate the :class:`~samr1.train.config.TrainConfig`; load and check every training row (bad rows are
   reported with their positions, or skipped and counted with ``skip_bad_rows``);
2. check that each prompt's G completions stay on one process (:func:`group_locality_warning`);
3. build ONE :class:`samr1.engine.SamEngine` for this process, on this process's device, and a
   :class:`samr1.rewards.SamR1Reward` that reads the original image from ``sam_image``; its components
   go to TRL as separate reward functions (through :class:`~samr1.train.rewards_hub.RewardHub`);
4. build ``GRPOConfig`` from the config and run ``GRPOTrainer`` with the policy's processor as
   ``processing_class``, checkpointing every ``save_steps`` and resuming on request;
5. write ``metrics.jsonl`` (every log), ``summary.json`` and ``learning_curve.png`` to ``output_dir``.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
import warnings
from typing import Any

from samr1.train.config import ConfigError, TrainConfig

__all__ = ["train", "group_locality_warning", "build_grpo_config", "plot_learning_curve", "ProgressCallback",
           "resolve_resume", "policy_record", "RecordCallback", "trainer_callback_base"]


# ------------------------------------------------------------------------------------------- checks
def group_locality_warning(per_device_train_batch_size: int, steps_per_generation: int, num_generations: int,
                           num_processes: int, reward_gather: str = "rank") -> str | None:
    """A warning (with the fix) when a prompt's G completions would be scored on different processes.

    TRL's sampler repeats each prompt G times in a row and deals ``per_device_train_batch_size x
    steps_per_generation`` completions to each process per generation round. When that is not a multiple
    of G, a group straddles two processes: its image is encoded on both and each process scores part of it.
    Nothing is wrong with the rewards (TRL gathers them before the group statistics), only with the cost.
    With ``reward_gather="node"`` the node's completions are scored together, so only a multi-node split
    matters (not checked here). Returns None when all is well.
    """
    per_proc = per_device_train_batch_size * steps_per_generation
    if num_processes <= 1 or per_proc % num_generations == 0 or reward_gather == "node":
        return None
    # The smallest per-device batch >= the current one that keeps groups whole.
    fix_bs = math.ceil(per_device_train_batch_size / num_generations) * num_generations
    fix_spg = num_generations // math.gcd(num_generations, per_device_train_batch_size)
    return (f"per_device_train_batch_size x steps_per_generation = {per_device_train_batch_size} x "
            f"{steps_per_generation} = {per_proc} completions per process is not a multiple of num_generations = "
            f"{num_generations}: a prompt's {num_generations} completions are split across {num_processes} processes, "
            f"so its image is encoded on each of them. Fix: --per-device-train-batch-size {fix_bs}, or "
            f"--steps-per-generation {fix_spg} (a multiple of {fix_spg}), or --reward-gather node")


def resolve_resume(resume: str | None, output_dir: str) -> str | None:
    """``resume`` as a checkpoint folder: None stays None; "latest" is the newest ``checkpoint-N`` in
    ``output_dir``; a path must be a folder holding ``trainer_state.json``."""
    if resume is None:
        return None
    if resume == "latest":
        cks = [d for d in os.listdir(output_dir) if d.startswith("checkpoint-") and d[11:].isdigit()] \
            if os.path.isdir(output_dir) else []
        if not cks:
            raise ConfigError(f"resume='latest': no checkpoint-N folder in {output_dir}; train without --resume first")
        return os.path.join(output_dir, max(cks, key=lambda d: int(d[11:])))
    if not os.path.isfile(os.path.join(resume, "trainer_state.json")):
        raise ConfigError(f"resume={resume!r}: not a checkpoint folder (no trainer_state.json); give "
                          f"<output_dir>/checkpoint-N or 'latest'")
    return resume


# ------------------------------------------------------------------------------------------- config
def build_grpo_config(cfg: TrainConfig, *, use_cpu: bool, cuda: bool):
    """TRL's ``GRPOConfig`` from a :class:`TrainConfig` (bf16 and gradient checkpointing only with CUDA)."""
    from trl import GRPOConfig

    kw: dict[str, Any] = dict(
        output_dir=cfg.output_dir, num_generations=cfg.num_generations, loss_type=cfg.loss_type,
        epsilon=cfg.epsilon, epsilon_high=cfg.epsilon_high, beta=cfg.beta, learning_rate=cfg.learning_rate,
        temperature=cfg.temperature, max_completion_length=cfg.max_completion_length,
        per_device_train_batch_size=cfg.per_device_train_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps, num_iterations=cfg.num_iterations,
        max_steps=cfg.max_steps, num_train_epochs=cfg.num_train_epochs, seed=cfg.seed, data_seed=cfg.seed,
        max_grad_norm=cfg.max_grad_norm, warmup_steps=cfg.warmup_steps,
        save_strategy="steps", save_steps=cfg.save_steps, save_total_limit=cfg.save_total_limit,
        logging_steps=cfg.logging_steps, report_to=[] if cfg.report_to == "none" else [cfg.report_to],
        bf16=cuda if cfg.bf16 is None else cfg.bf16,
        gradient_checkpointing=cuda if cfg.gradient_checkpointing is None else cfg.gradient_checkpointing,
        use_cpu=use_cpu,
        # The reward reads sam_image / mask / row_id: keep every dataset column.
        remove_unused_columns=False,
        disable_tqdm=True,  # samr1's own bar (ProgressCallback) shows the reward, parse failures and cache hits
        log_completions=False,
        # TRL all-gathers every prompt's policy-size images each step to log them unless told not to
        log_multimodal=False,
        # SAM-R1 / Seg-Zero's KL is the plain k3 estimator; TRL 1.16 defaults to multiplying it by the
        # importance ratio, which changes its gradient from (1 - pi_ref/pi) to log(pi/pi_ref) per token
        use_bias_correction_kl=False,
        dataloader_num_workers=0,
        use_vllm=cfg.use_vllm,
    )
    if cfg.steps_per_generation is not None:
        kw["steps_per_generation"] = cfg.steps_per_generation
    if cfg.use_vllm:
        kw.update(vllm_mode="server", vllm_server_host=cfg.vllm_server_host, vllm_server_port=cfg.vllm_server_port)
    return GRPOConfig(**kw)


# ------------------------------------------------------------------------------------------- logging
def trainer_callback_base():
    """transformers' ``TrainerCallback`` (imported on first use: the training extra is optional)."""
    from transformers import TrainerCallback

    return TrainerCallback


class ProgressCallback(trainer_callback_base()):
    """A progress bar (step, reward mean, parse-failure rate, cache hit rate, ETA) and ``metrics.jsonl``.

    Only the main process draws and writes. Each ``on_log`` appends ``{"step": N, **logs}`` to
    ``<output_dir>/metrics.jsonl`` (resumed runs append after the checkpoint's step).
    """

    def __init__(self, output_dir: str, show: bool = True):
        self.path = os.path.join(output_dir, "metrics.jsonl")
        self.show = show
        self.bar: Any = None

    def on_train_begin(self, args, state, control, **kw):
        if state.is_world_process_zero and self.show:
            from tqdm import tqdm

            self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc="samr1 train", unit="step",
                            file=sys.stderr, dynamic_ncols=True)

    def on_log(self, args, state, control, logs=None, **kw):
        if not state.is_world_process_zero or not logs:
            return
        row = {"step": state.global_step, **{k: v for k, v in logs.items() if isinstance(v, (int, float, str))}}
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        if self.bar is not None:
            post = {}
            for short, key in (("reward", "reward"), ("parse_fail", "samr1/parse_failure_rate"),
                               ("cache_hit", "samr1/cache_hit_rate")):
                if isinstance(logs.get(key), (int, float)):
                    post[short] = f"{logs[key]:.3f}"
            self.bar.set_postfix(post, refresh=False)

    def on_step_end(self, args, state, control, **kw):
        if self.bar is not None:
            self.bar.n = state.global_step
            self.bar.refresh()

    def on_train_end(self, args, state, control, **kw):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


_TRAINER_CLASS: Any = None


def trainer_class():
    """``GRPOTrainer`` with two resume fixes (TRL 1.16 / transformers 5.24), built on first use:

    - the data order survives a resume across an epoch boundary: TRL's ``RepeatSampler`` draws every epoch's
      permutation from one generator seeded once, which a resumed run restarts; here epoch ``e`` is drawn with
      seed ``seed + e`` (set at the start of each epoch), so a resumed run draws the same;
    - the policy weights are restored: the Trainer's raw ``load_state_dict`` of a Qwen2.5-VL checkpoint misses
      every key (the checkpoint is saved in the legacy key layout, ``visual.*``), so :func:`train` loads the
      checkpoint with ``from_pretrained`` (which converts keys) and this class skips that raw load.
    """
    global _TRAINER_CLASS
    if _TRAINER_CLASS is not None:
        return _TRAINER_CLASS
    from trl import GRPOTrainer
    from trl.trainer.utils import RepeatSampler

    class EpochRepeatSampler(RepeatSampler):
        def set_epoch(self, epoch: int) -> None:
            if self.shuffle:
                self.generator.manual_seed((0 if self.seed is None else int(self.seed)) + int(epoch))

    class SamR1GRPOTrainer(GRPOTrainer):
        weights_preloaded = False

        def _get_train_sampler(self, dataset=None):
            base = super()._get_train_sampler(dataset)
            s = EpochRepeatSampler(data_source=base.data_source, mini_repeat_count=base.mini_repeat_count,
                                   batch_size=base.batch_size, repeat_count=base.repeat_count, shuffle=base.shuffle,
                                   seed=base.seed)
            s.set_epoch(0)
            self._samr1_sampler = s
            return s

        def _run_epoch(self, *args, **kwargs):
            # The Trainer's own set_epoch plumbing does not reach a plain sampler in a single process.
            sampler = getattr(self, "_samr1_sampler", None)
            if sampler is not None and kwargs.get("epoch") is not None:
                sampler.set_epoch(kwargs["epoch"])
            return super()._run_epoch(*args, **kwargs)

        def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
            if self.weights_preloaded and model is None:
                return  # weights came from from_pretrained(checkpoint); the raw load would match no key
            super()._load_from_checkpoint(resume_from_checkpoint, model)

    _TRAINER_CLASS = SamR1GRPOTrainer
    return _TRAINER_CLASS


def read_metrics(path: str) -> list[dict[str, Any]]:
    """Rows of ``metrics.jsonl`` with a ``reward`` (training logs), last one per step wins (resumes)."""
    by_step: dict[int, dict[str, Any]] = {}
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if line:
                    row = json.loads(line)
                    if "reward" in row:
                        by_step[int(row["step"])] = row
    return [by_step[k] for k in sorted(by_step)]


def plot_learning_curve(metrics_path: str, png_path: str, title: str = "samr1 train") -> str | None:
    """Plot mean reward, mean tiered IoU reward and parse-failure rate over steps; None when no logs."""
    rows = read_metrics(metrics_path)
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    for key, label in (("reward", "total reward"), ("rewards/tiered_iou/mean", "tiered IoU reward"),
                       ("rewards/think_format/mean", "think format"), ("rewards/answer_format/mean", "answer format")):
        ys = [r.get(key) for r in rows]
        if any(isinstance(y, (int, float)) for y in ys):
            ax1.plot(steps, [y if isinstance(y, (int, float)) else float("nan") for y in ys], label=label)
    ax1.set_xlabel("step")
    ax1.set_ylabel("mean reward")
    ax1.legend(fontsize=8)
    ax1.grid(alpha=0.3)
    for key, label in (("samr1/parse_failure_rate", "parse-failure rate"), ("samr1/mean_iou", "mean mask IoU"),
                       ("samr1/cache_hit_rate", "cache hit rate")):
        ys = [r.get(key) for r in rows]
        if any(isinstance(y, (int, float)) for y in ys):
            ax2.plot(steps, [y if isinstance(y, (int, float)) else float("nan") for y in ys], label=label)
    ax2.set_xlabel("step")
    ax2.set_ylim(-0.02, 1.02)
    ax2.legend(fontsize=8)
    ax2.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
    return png_path


# ------------------------------------------------------------------------------------------- train
def _prepare_data(cfg: TrainConfig, log) -> tuple[Any, int, int]:
    from samr1.train.data import PolicyDataset, check_rows, load_rows

    rows = load_rows(cfg.data, cfg.data_format, split=cfg.split, image_dir=cfg.image_dir)
    good, bad = check_rows(rows, max_samples=cfg.max_samples, seed=cfg.seed, skip_bad=cfg.skip_bad_rows)
    if bad:
        log(f"samr1 train: skipped {len(bad)} bad row(s) (--skip-bad-rows); first: {bad[0]}")
    log(f"samr1 train: {len(good)} training rows from {cfg.data} ({len(rows)} loaded)")
    return PolicyDataset(good, cfg.prompt, cfg.policy_image_size), len(rows), len(bad)


def _prepare_eval_rows(cfg: TrainConfig) -> list[Any]:
    from samr1.train.data import check_rows, load_rows

    rows = load_rows(cfg.eval_data, "auto", split="val" if cfg.split == "train" else cfg.split)
    good, _ = check_rows(rows)
    return good[:cfg.eval_samples] if cfg.eval_samples else good


def policy_record(cfg: TrainConfig):
    """The :class:`samr1.policy.PolicyRecord` a policy trained with ``cfg`` carries (template, frame, budget)."""
    from samr1.policy import PolicyRecord
    from samr1.train.prompts import resolve_prompt

    return PolicyRecord(template=resolve_prompt(cfg.prompt), frame=cfg.policy_image_size,
                        max_new_tokens=cfg.max_completion_length,
                        reward={"components": list(cfg.components), "sam": cfg.sam})


class RecordCallback(trainer_callback_base()):
    """Writes the policy record into every checkpoint folder, so a checkpoint is evaluated as trained."""

    def __init__(self, record: Any):
        self.record = record

    def on_save(self, args, state, control, **kw):
        from samr1.policy import write_record

        folder = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
        if state.is_world_process_zero and os.path.isdir(folder):
            write_record(folder, self.record)


def train(cfg: TrainConfig, *, log=None, callbacks: list | None = None) -> dict[str, Any]:
    """Run GRPO training as configured; return the summary (also written to ``output_dir/summary.json``).

    Raises:
        ConfigError: a bad configuration value (before anything is loaded).
        samr1.io.InputError: bad training data (before the models are loaded).
    """
    if log is None:
        def log(msg: str) -> None:
            print(msg, file=sys.stderr)
    cfg.validate()
    t_start = time.perf_counter()
    if not os.path.isfile(os.path.join(cfg.model, "config.json")):
        raise ConfigError(f"model={cfg.model!r}: not a model folder (no config.json); give a local Qwen2-VL / "
                          "Qwen2.5-VL checkpoint directory (nothing is downloaded)")
    resume = resolve_resume(cfg.resume, cfg.output_dir)

    from accelerate import PartialState

    want_cpu = cfg.device == "cpu" or (cfg.device is None and not _cuda_available())
    state = PartialState(cpu=want_cpu)  # under torchrun/accelerate: MULTI_CPU with cpu=True, else one per GPU
    dataset, n_loaded, n_bad = _prepare_data(cfg, log if state.is_main_process else (lambda m: None))
    eval_rows = _prepare_eval_rows(cfg) if cfg.eval_data else []
    # The policy's processor pads on the left, as TRL pads its prompt ids (samr1.policy.inputs), and the
    # answer frame must be the frame the model sees: both checked before anything heavy is loaded.
    from samr1.policy import check_frame, load_processor, write_record

    processor = load_processor(cfg.model)
    check_frame(processor, cfg.policy_image_size)
    os.makedirs(cfg.output_dir, exist_ok=True)  # only once the data is known good

    spg = cfg.steps_per_generation or cfg.gradient_accumulation_steps
    warning = group_locality_warning(cfg.per_device_train_batch_size, spg, cfg.num_generations,
                                     state.num_processes, cfg.reward_gather)
    if warning:
        warnings.warn(warning, UserWarning, stacklevel=2)
        if state.is_main_process:
            log(f"samr1 train: warning: {warning}")

    device = str(state.device) if cfg.device in (None, "cpu", "cuda") else cfg.device
    if cfg.device == "cuda" and state.device.type == "cuda":
        device = str(state.device)  # this process's GPU, not cuda:0 everywhere

    from samr1.engine import SamEngine
    from samr1.rewards import SamR1Reward
    from samr1.sam import load_sam
    from samr1.train.rewards_hub import RewardHub

    # ONE engine per process, built once: its cache, batched decoder and fused IoU serve every step.
    sam = load_sam(cfg.sam, cfg.sam_checkpoint, device=device)
    engine = SamEngine(sam, config=cfg.engine_config())  # SAM is already on this process's device
    reward = SamR1Reward(engine, config=cfg.reward_config())
    hub = RewardHub(reward, log_dir=cfg.output_dir, gather=cfg.reward_gather, dataset=dataset,
                    rank=state.process_index)

    if cfg.encode_ahead and cfg.reward_gather == "rank":
        dataset.on_batch = hub.prefetch

    from transformers import PrinterCallback

    cuda = state.device.type == "cuda"
    args = build_grpo_config(cfg, use_cpu=not cuda, cuda=cuda)
    if state.is_main_process:
        with open(os.path.join(cfg.output_dir, "train_config.json"), "w", encoding="utf-8") as f:
            json.dump(cfg.to_dict(), f, indent=1)
    record = policy_record(cfg)
    progress = ProgressCallback(cfg.output_dir, show=cfg.progress)
    extra: list[Any] = [RecordCallback(record)]
    heldout = None
    if cfg.eval_data:
        from samr1.train.heldout import HeldoutEvalCallback

        def save_policy(m: Any, folder: str) -> None:
            m.save_pretrained(folder)
            processor.save_pretrained(folder)
            write_record(folder, record)

        heldout = HeldoutEvalCallback(eval_rows, engine, template=record.template, frame=record.frame,
                                      max_new_tokens=record.max_new_tokens, every=cfg.eval_steps,
                                      batch_size=cfg.eval_batch_size, output_dir=cfg.output_dir,
                                      save_best=save_policy, reward_seconds=lambda: hub.totals["reward_seconds"])
        extra.append(heldout)
    model: Any = cfg.model
    if resume is not None:
        # Policy weights from the checkpoint via from_pretrained (see trainer_class); the reference model for the
        # KL term must stay the ORIGINAL policy, which TRL builds from config._name_or_path.
        from trl.trainer.utils import create_model_from_path

        kw = {"device_map": None} if state.distributed_type.name in ("MULTI_GPU", "DEEPSPEED", "FSDP") else {}
        model = create_model_from_path(resume, **kw)
        model.config._name_or_path = cfg.model
    trainer = trainer_class()(model=model, reward_funcs=hub.functions(), args=args, train_dataset=dataset.as_hf(),
                              processing_class=processor, callbacks=[progress, *extra, *(callbacks or [])])
    trainer.weights_preloaded = resume is not None
    if heldout is not None:
        heldout.trainer = trainer
    trainer.remove_callback(PrinterCallback)  # logs go to metrics.jsonl and the bar, not raw dicts on stdout
    t_train = time.perf_counter()
    try:
        out = trainer.train(resume_from_checkpoint=resume)
    finally:
        hub.close()
    train_seconds = time.perf_counter() - t_train
    trainer.save_model(os.path.join(cfg.output_dir, "final"))
    processor.save_pretrained(os.path.join(cfg.output_dir, "final"))
    if state.is_main_process:
        write_record(os.path.join(cfg.output_dir, "final"), record)

    metrics_path = os.path.join(cfg.output_dir, "metrics.jsonl")
    rows = read_metrics(metrics_path)
    tot = hub.totals
    summary = {
        "steps": int(trainer.state.global_step), "resumed_from": resume,
        "train_seconds": round(train_seconds, 3), "total_seconds": round(time.perf_counter() - t_start, 3),
        "rows_loaded": n_loaded, "rows_used": len(dataset), "bad_rows_skipped": n_bad,
        "num_processes": state.num_processes, "device": device,
        "reward_first": rows[0].get("reward") if rows else None, "reward_last": rows[-1].get("reward") if rows else None,
        "components": {k.split("/")[1]: rows[-1][k] for k in rows[-1] if k.startswith("rewards/") and k.endswith("/mean")}
        if rows else {},
        "parse_failure_rate": tot["parse_failures"] / tot["completions"] if tot["completions"] else None,
        "cache_hit_rate": tot["cache_hits"] / tot["cache_lookups"] if tot["cache_lookups"] else None,
        "encoder_images": tot["encoder_images"], "reward_seconds": round(tot["reward_seconds"], 3),
        "reward_share": round(tot["reward_seconds"] / train_seconds, 4) if train_seconds > 0 else None,
        "train_loss": float(out.training_loss) if out is not None and out.training_loss is not None else None,
        "output_dir": cfg.output_dir,
        "signal_warnings": list(hub.signal_warnings),
    }
    if heldout is not None:
        summary["heldout"] = {"evaluations": heldout.history, "best": heldout.best,
                              "first": heldout.history[0] if heldout.history else None,
                              "last": heldout.history[-1] if heldout.history else None,
                              "data": cfg.eval_data, "rows": len(eval_rows)}
    if state.is_main_process:
        png = plot_learning_curve(metrics_path, os.path.join(cfg.output_dir, "learning_curve.png"))
        summary["learning_curve"] = png
        with open(os.path.join(cfg.output_dir, "summary.json"), "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=1)
    return summary


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()
