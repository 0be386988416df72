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

import samr1.jsonout as jsonout
from samr1.train.config import ConfigError, TrainConfig
from samr1.train.grpo_args import batch_error

__all__ = ["train", "group_locality_warning", "build_grpo_config", "plot_learning_curve", "ProgressCallback",
           "resolve_resume", "resume_block_error", "resume_config_error", "RUN_RECORDS", "RESUME_KEYS",
           "end_process_group",
           "policy_record", "RecordCallback",
           "trainer_callback_base"]

# What a training run writes into its output folder: the records ``--overwrite`` removes before a new run, so
# that two runs' metrics, checkpoints and summaries never mix (samr1.outdirs). "runs" is TensorBoard's folder.
RUN_RECORDS = ("checkpoint-*", "final", "best", "merged", "completions", "metrics.jsonl", "reward_calls.jsonl",
               "summary.json", "train_config.json", "train_config.history.jsonl", "grpo_config.json", "README.md",
               "learning_curve.png", "runs", "rollouts")

# What makes a run the same run: a resumed run must agree with the recorded one on these (its data and their
# order, the policy and its prompt, the reward, the batch and optimiser), or it would silently continue
# another experiment under the first one's name. Steps, saving, logging and evaluation may change.
RESUME_KEYS = ("model", "data", "data_format", "image_dir", "split", "max_samples", "skip_bad_rows", "seed",
               "sam", "sam_checkpoint", "multimask", "reward_preset", "components", "prompt", "reward_options",
               "num_generations", "loss_type", "epsilon", "epsilon_high", "beta", "learning_rate", "temperature",
               "policy_image_size", "answer_frame", "max_completion_length", "per_device_train_batch_size",
               "gradient_accumulation_steps", "steps_per_generation", "num_iterations", "max_grad_norm",
               "warmup_steps", "use_peft", "lora_r", "lora_alpha", "lora_dropout", "lora_target_modules", "grpo")


def resume_config_error(recorded: dict[str, Any], current: dict[str, Any]) -> str | None:
    """Why a resumed run's settings ``current`` (``TrainConfig.to_dict()``) would continue another experiment
    than the one ``recorded`` in its folder's ``train_config.json``, or None (only :data:`RESUME_KEYS` count;
    a key the record lacks is not compared)."""
    diffs = [f"{k}: recorded {json.dumps(recorded[k])}, now {json.dumps(current.get(k))}"
             for k in RESUME_KEYS if k in recorded and json.dumps(recorded[k], sort_keys=True)
             != json.dumps(current.get(k), sort_keys=True)]
    if not diffs:
        return None
    return ("--resume continues the run recorded in train_config.json, but these settings differ:\n  "
            + "\n  ".join(diffs) + "\nrerun with the recorded values, or start a new run in another --output-dir (a "
            "path that only moved: write the new path into train_config.json first)")


def end_process_group() -> None:
    """Tear down the torch.distributed process group, if any, before the process exits (``samr1 train``
    under torchrun / accelerate launch does, once training has ended on every rank). A process that exits
    with gloo's worker threads still alive can abort in its C++ teardown ("terminate called without an active
    exception", SIGABRT): the launcher then reports a run that finished as failed."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


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


def resume_block_error(checkpoint: str, gradient_accumulation_steps: int, steps_per_generation: int,
                       num_iterations: int = 1) -> str | None:
    """Why resuming from ``checkpoint`` would train part of the data twice, or None when it is safe.

    TRL generates completions for ``steps_per_generation x num_iterations`` micro-steps at once and keeps them
    in memory, not in the checkpoint. A checkpoint after optimizer step ``s`` holds ``s x
    gradient_accumulation_steps`` micro-steps; when that is not a multiple of the block, a resumed run
    generates a new block at once: the interrupted block is trained again (1.5 times in all) and every later
    block starts off its boundary.
    """
    block = steps_per_generation * num_iterations
    try:
        with open(os.path.join(checkpoint, "trainer_state.json"), encoding="utf-8") as f:
            step = int(json.load(f)["global_step"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"{checkpoint}/trainer_state.json cannot be read ({type(exc).__name__}: {exc})"
    micro = step * gradient_accumulation_steps
    if micro % block == 0:
        return None
    every = block // math.gcd(block, gradient_accumulation_steps)
    return (f"{checkpoint} was saved after step {step} = {micro} micro-steps, inside a generation block of {block} "
            f"micro-steps (steps_per_generation {steps_per_generation} x num_iterations {num_iterations}); TRL keeps "
            f"the block's completions in memory only, so a resumed run would train that block again. Resume from a "
            f"checkpoint whose step is a multiple of {every}, and save every multiple of {every} steps "
            f"(--save-steps {every})")


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
        logging_steps=cfg.logging_steps, report_to=cfg.report_list(),
        bf16=cuda if cfg.bf16 is None else cfg.bf16,
        # transformers 5 renamed gradient_checkpointing (a deprecated alias that warns when it is the one set)
        activation_checkpointing=cuda if cfg.gradient_checkpointing is None else cfg.gradient_checkpointing,
        use_cpu=use_cpu,
        # The reward reads sam_image / mask / row_id: keep every dataset column.
        remove_unused_columns=False,
        disable_tqdm=True,  # samr1's own bar (ProgressCallback) shows the reward, parse failures and cache hits
        log_completions=cfg.log_completions,
        # TRL also prints the table at every log: 2 rows on the console, not the whole batch (every row goes to
        # <output_dir>/completions/*.parquet and to wandb / trackio)
        num_completions_to_print=2,
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
        kw.update(vllm_mode="server", vllm_server_host=cfg.vllm_server_host, vllm_server_port=cfg.vllm_server_port,
                  **VLLM_IMPORTANCE_SAMPLING)
    kw.update(cfg.grpo)  # checked by TrainConfig.validate: no samr1-owned or fixed field gets here
    try:
        return GRPOConfig(**kw)
    except (ValueError, TypeError) as exc:  # TRL's / transformers' cross-field checks, in their words
        raise ConfigError(f"GRPOConfig refuses these settings: {exc}") from None


# With vLLM the rollouts' log-probs come from another engine than the loss's; TRL corrects the mismatch with
# importance sampling and, left to its default, MASKS whole completions whose sequence ratio leaves [0, 3]
# (sequence_mask). samr1 chooses token-level truncated importance sampling (each token's ratio capped at 2,
# nothing dropped: the TIS of Yao et al., 2025). The server must report the log-probs it sampled from, after
# temperature: start it with `trl vllm-serve --model ... --logprobs-mode processed_logprobs`. Override with
# grpo: {vllm_importance_sampling_mode: ..., vllm_importance_sampling_clip_max: ...} or turn it off with
# grpo: {vllm_importance_sampling_correction: false}.
VLLM_IMPORTANCE_SAMPLING: dict[str, Any] = {
    "vllm_importance_sampling_correction": True,
    "vllm_importance_sampling_mode": "token_truncate",
    "vllm_importance_sampling_clip_max": 2.0,
}


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
            f.write(jsonout.dumps(row) + "\n")  # NaN (e.g. a std over one value) as null: valid JSON
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
        samr1_card: Any = None  # (folder) -> None: samr1's model card, written where TRL would write its own

        def create_model_card(self, *args, **kwargs):
            # TRL's card calls the policy a text-generation fine-tune of "None"; samr1's says what it is
            if self.samr1_card is None:
                return super().create_model_card(*args, **kwargs)
            if self.is_world_process_zero():
                self.samr1_card(self.args.output_dir)
            return None

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


def _prepare_eval_rows(cfg: TrainConfig, log) -> list[Any]:
    from samr1.io import InputError
    from samr1.train.data import check_rows, detect_format, load_rows

    split = cfg.eval_split or ("val" if cfg.split == "train" else cfg.split)
    try:
        inherit = cfg.image_dir if detect_format(cfg.eval_data) == "refcocog" else None  # --image-dir is RefCOCOg's
        rows = load_rows(cfg.eval_data, "auto", split=split, image_dir=cfg.eval_image_dir or inherit)
    except InputError as exc:  # the loaders' advice names the training flags; these are --eval-data's
        raise InputError(f"--eval-data {cfg.eval_data}: "
                         + str(exc).replace("--split", "--eval-split").replace("--image-dir", "--eval-image-dir")
                         ) from None
    good, bad = check_rows(rows, skip_bad=cfg.skip_bad_rows, what="held-out evaluation")
    if bad:
        log(f"samr1 train: left out {len(bad)} bad --eval-data row(s) (--skip-bad-rows); first: {bad[0]}")
    return good[:cfg.eval_samples] if cfg.eval_samples else good


def policy_record(cfg: TrainConfig):
    """The :class:`samr1.policy.PolicyRecord` a policy trained with ``cfg`` carries (template, frame, budget)."""
    from samr1.policy import PolicyRecord
    from samr1.train.prompts import resolve_prompt

    return PolicyRecord(template=resolve_prompt(cfg.prompt), frame=cfg.policy_image_size,
                        answer_frame=cfg.resolved_answer_frame(),
                        max_new_tokens=cfg.max_completion_length,
                        reward={"components": list(cfg.reward_config().components), "sam": cfg.sam,
                                "preset": cfg.reward_preset})


class RecordCallback(trainer_callback_base()):
    """Writes the policy record into every checkpoint folder, so a checkpoint is evaluated as trained."""

    def __init__(self, record: Any):
        self.record = record

    def on_save(self, args, state, control, **kw):
        from samr1.policy import write_record

        folder = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
        if state.is_world_process_zero and os.path.isdir(folder):
            write_record(folder, self.record)


def train(cfg: TrainConfig, *, log=None, callbacks: list | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Run GRPO training as configured; return the summary (also written to ``output_dir/summary.json``).

    ``output_dir`` must be empty or new unless ``cfg.resume`` continues the run there, or ``overwrite`` removes
    the previous run's records first (:data:`RUN_RECORDS`; :mod:`samr1.outdirs`).

    Raises:
        ConfigError: a bad configuration value (before anything is loaded).
        samr1.outdirs.OutputDirError: ``output_dir`` holds another run (before anything is loaded).
        samr1.io.InputError: bad training data, or fewer rows than one generation round takes (before the
            models are loaded).
    """
    if log is None:
        def log(msg: str) -> None:
            print(msg, file=sys.stderr)
    cfg.validate()
    # TRL 1.16 reads model.is_gradient_checkpointing, which transformers 5.24 deprecated (four warnings a run,
    # nothing a samr1 user can change); the flags samr1 itself passes use the new names
    warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)
    t_start = time.perf_counter()
    if not os.path.isfile(os.path.join(cfg.model, "config.json")):
        raise ConfigError(f"model={cfg.model!r}: not a model folder (no config.json); give a local Qwen2-VL / "
                          "Qwen2.5-VL checkpoint directory (nothing is downloaded)")
    resume = resolve_resume(cfg.resume, cfg.output_dir)
    spg = cfg.steps_per_generation or cfg.gradient_accumulation_steps
    recorded_path = os.path.join(cfg.output_dir, "train_config.json")
    recorded: Any = None  # the settings of the run being resumed, as its folder records them
    if resume is not None:
        why = resume_block_error(resume, cfg.gradient_accumulation_steps, spg, cfg.num_iterations)
        if why:
            raise ConfigError(f"resume: {why}")
        if os.path.isfile(recorded_path):
            try:
                with open(recorded_path, encoding="utf-8") as f:
                    recorded = json.load(f)
            except (OSError, ValueError) as exc:
                raise ConfigError(f"resume: {recorded_path} cannot be read ({type(exc).__name__}: {exc}); it records "
                                  "the run being resumed") from None
            why = resume_config_error(recorded if isinstance(recorded, dict) else {}, cfg.to_dict())
            if why:
                raise ConfigError(f"resume: {why}", field="resume")
    merged_dir = os.path.join(cfg.output_dir, "merged")
    if cfg.merge_adapter and os.path.isdir(merged_dir) and os.listdir(merged_dir):
        raise ConfigError(f"merge_adapter: {merged_dir} exists and is not empty (nothing is overwritten); move it "
                          "away or give another --output-dir", field="merge_adapter")

    from accelerate import PartialState

    from samr1.outdirs import check_run_dir, claim_run_dir

    want_cpu = cfg.device == "cpu" or (cfg.device is None and not _cuda_available())
    state = PartialState(cpu=want_cpu)  # under torchrun/accelerate: MULTI_CPU with cpu=True, else one per GPU
    if state.is_main_process:  # before the data is read: a second run into a used folder is refused at once
        check_run_dir(cfg.output_dir, flag="--output-dir", resume=resume is not None, overwrite=overwrite)
    # whole groups of G per generation round with THIS process count, and TRL's own checks of every
    # GRPOConfig field, before the data loads
    batch_msg = batch_error(cfg.per_device_train_batch_size, cfg.steps_per_generation or cfg.gradient_accumulation_steps,
                            cfg.num_generations, state.num_processes, cfg.grpo.get("generation_batch_size"))
    if batch_msg:
        raise ConfigError(batch_msg, field="per_device_train_batch_size")
    cuda = state.device.type == "cuda"
    args = build_grpo_config(cfg, use_cpu=not cuda, cuda=cuda)
    dataset, n_loaded, n_bad = _prepare_data(cfg, log if state.is_main_process else (lambda m: None))
    eval_rows = _prepare_eval_rows(cfg, log if state.is_main_process else (lambda m: None)) if cfg.eval_data else []
    # The policy's processor pads on the left, as TRL pads its prompt ids (samr1.policy.inputs), and the
    # answer frame must be the frame the model sees: both checked before anything heavy is loaded.
    from samr1.policy import check_frame, load_processor, write_record

    processor = load_processor(cfg.model)
    check_frame(processor, cfg.policy_image_size, answer_frame=cfg.resolved_answer_frame())
    # TRL's sampler deals whole generation rounds and drops an incomplete one: fewer rows than one round
    # would train 0 steps and save the untrained policy as final/.
    per_round = cfg.per_device_train_batch_size * state.num_processes * spg // cfg.num_generations
    if len(dataset) < per_round:
        from samr1.io import InputError

        raise InputError(f"{cfg.data}: {len(dataset)} usable training row(s), fewer than one generation round takes "
                         f"({per_round} prompts = per_device_train_batch_size {cfg.per_device_train_batch_size} x "
                         f"{state.num_processes} process(es) x steps_per_generation {spg} / num_generations "
                         f"{cfg.num_generations}), so training would run 0 steps. Add rows, or lower "
                         "--per-device-train-batch-size (a multiple of --num-generations) or --steps-per-generation")
    if state.is_main_process:  # only once the data is known good
        removed = claim_run_dir(cfg.output_dir, records=RUN_RECORDS, overwrite=overwrite)
        if removed:
            log(f"samr1 train: --overwrite removed the previous run's {', '.join(removed)} from {cfg.output_dir}")
    os.makedirs(cfg.output_dir, exist_ok=True)
    warning = group_locality_warning(cfg.per_device_train_batch_size, spg, cfg.num_generations,
                                     state.num_processes, cfg.reward_gather)
    block = spg * cfg.num_iterations
    if (cfg.save_steps * cfg.gradient_accumulation_steps) % block:
        every = block // math.gcd(block, cfg.gradient_accumulation_steps)
        warning = ((warning + "; ") if warning else "") + (
            f"save_steps {cfg.save_steps} puts checkpoints inside generation blocks of {block} micro-steps, and such "
            f"a checkpoint cannot be resumed (its block would be trained twice): use --save-steps {every} or a "
            f"multiple of it")
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
    rollouts = None
    if cfg.rollouts_every and state.is_main_process:
        from samr1.train.rollouts import RolloutLog

        rollouts = RolloutLog(os.path.join(cfg.output_dir, "rollouts"), cfg.rollouts_every, reward,
                              groups=cfg.rollouts_groups, max_bytes=int(cfg.rollouts_max_mb * (1 << 20)),
                              query_of=lambda i: dataset.rows[i].query, rank=state.process_index)
    hub = RewardHub(reward, log_dir=cfg.output_dir, gather=cfg.reward_gather, dataset=dataset,
                    rank=state.process_index, rollouts=rollouts)

    if cfg.encode_ahead and cfg.reward_gather == "rank":
        dataset.on_batch = hub.prefetch

    from transformers import PrinterCallback

    if state.is_main_process:
        if recorded is not None:  # the settings it ran with so far are kept
            with open(os.path.join(cfg.output_dir, "train_config.history.jsonl"), "a", encoding="utf-8") as h:
                h.write(json.dumps(recorded) + "\n")
        with open(recorded_path, "w", encoding="utf-8") as f:
            json.dump(cfg.to_dict(), f, indent=1)
        # every resolved GRPOConfig setting (samr1's, TRL's defaults and the grpo: overrides) as TRL sees it
        with open(os.path.join(cfg.output_dir, "grpo_config.json"), "w", encoding="utf-8") as f:
            json.dump(args.to_dict(), f, indent=1, default=str)
    record = policy_record(cfg)
    progress = ProgressCallback(cfg.output_dir, show=cfg.progress)
    extra: list[Any] = [RecordCallback(record)]
    heldout = None
    live: dict[str, Any] = {"trainer": None, "train_seconds": None}

    def card(folder: str, kind: str | None = None, policy: str | None = None) -> None:
        """samr1's model card in ``folder``, its quick start pointing at the policy folder ``policy``."""
        from samr1.train.model_card import run_card_info, write_card

        steps = int(live["trainer"].state.global_step) if live["trainer"] is not None else 0
        info = run_card_info(cfg, kind=kind or ("adapter" if cfg.use_peft else "policy"), steps=steps,
                             train_seconds=live["train_seconds"], rows=len(dataset), record=record,
                             heldout=heldout.summary(cfg.eval_data) if heldout is not None else None)
        write_card(folder, {**info, "folder": policy or folder})

    if cfg.eval_data:
        from samr1.train.heldout import HeldoutEvalCallback

        def save_policy(m: Any, folder: str) -> None:
            m.save_pretrained(folder)  # a PEFT model saves its adapter
            processor.save_pretrained(folder)
            write_record(folder, record)
            card(folder)

        heldout = HeldoutEvalCallback(eval_rows, engine, template=record.template, frame=record.frame,
                                      max_new_tokens=record.max_new_tokens, every=cfg.eval_steps,
                                      batch_size=cfg.eval_batch_size, output_dir=cfg.output_dir,
                                      save_best=save_policy, reward_seconds=lambda: hub.totals["reward_seconds"])
        extra.append(heldout)
    # absolute: a LoRA adapter records its base policy's path (adapter_config.json) for eval / segment / serve
    model: Any = os.path.abspath(cfg.model) if os.path.isdir(cfg.model) else cfg.model
    peft_config = None
    if cfg.use_peft:
        from samr1.train.lora import lora_config

        peft_config = lora_config(cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_target_modules)
    if resume is not None and not cfg.use_peft:  # an adapter checkpoint is loaded by the Trainer onto the base
        # Policy weights from the checkpoint via from_pretrained (see trainer_class); the reference model for the
        # KL term must stay the ORIGINAL policy, which TRL builds from config._name_or_path.
        from trl.trainer.utils import create_model_from_path

        kw = {"device_map": None} if state.distributed_type.name in ("MULTI_GPU", "DEEPSPEED", "FSDP") else {}
        model = create_model_from_path(resume, **kw)
        model.config._name_or_path = cfg.model
    trainer = trainer_class()(model=model, reward_funcs=hub.functions(), args=args, train_dataset=dataset.as_hf(),
                              processing_class=processor, callbacks=[progress, *extra, *(callbacks or [])],
                              peft_config=peft_config)
    trainer.weights_preloaded = resume is not None and not cfg.use_peft
    live["trainer"] = trainer
    # TRL rewrites the run folder's card at every checkpoint: samr1's, pointing at that checkpoint
    trainer.samr1_card = lambda out: card(out, policy=os.path.join(out, f"checkpoint-{trainer.state.global_step}"))
    adapter = None
    if cfg.use_peft:
        from samr1.train.lora import adapter_summary

        adapter = adapter_summary(trainer.model)
        if state.is_main_process:
            log(f"samr1 train: LoRA on {adapter['lora_modules_language']} language-model modules "
                f"({adapter['lora_modules_vision']} in the vision tower), {adapter['trainable']:,} of "
                f"{adapter['total']:,} parameters trainable")
    if heldout is not None:
        heldout.trainer = trainer
    trainer.remove_callback(PrinterCallback)  # logs go to metrics.jsonl and the bar, not raw dicts on stdout
    t_train = time.perf_counter()
    try:
        out = trainer.train(resume_from_checkpoint=resume)
    finally:
        hub.close()
    train_seconds = time.perf_counter() - t_train
    live["train_seconds"] = round(train_seconds, 1)
    final = os.path.join(cfg.output_dir, "final")
    trainer.save_model(final)  # with --use-peft: the adapter (adapter_config.json names the base)
    processor.save_pretrained(final)
    merged = None
    if state.is_main_process:
        write_record(final, record)
        for folder in (final, cfg.output_dir):
            card(folder, policy=final)
        if cfg.merge_adapter:
            from samr1.policy import merge_adapter

            merged = merge_adapter(final, merged_dir)
            card(merged, kind="merged")

    metrics_path = os.path.join(cfg.output_dir, "metrics.jsonl")
    rows = read_metrics(metrics_path)
    tot = hub.reduced_totals()  # the whole job's counts, not rank 0's (a collective: every rank is here)
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
        "adapter": adapter, "merged": merged,
    }
    if heldout is not None:
        summary["heldout"] = heldout.summary(cfg.eval_data)
    if state.is_main_process:
        png = plot_learning_curve(metrics_path, os.path.join(cfg.output_dir, "learning_curve.png"))
        summary["learning_curve"] = png
        with open(os.path.join(cfg.output_dir, "summary.json"), "w", encoding="utf-8") as f:
            jsonout.dump(summary, f, indent=1)
    return summary


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()
