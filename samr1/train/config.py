"""``TrainConfig``: every knob of ``samr1 train``, with SAM-R1's defaults, help text and validation.

Each field is a flag of ``samr1 train`` (``--num-generations`` for ``num_generations``) and a key of the
YAML file given with ``--config train.yaml`` (keys are field names; flags given on the command line win
over the file). :meth:`TrainConfig.validate` says what is wrong with a value and how to fix it.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from samr1.config import ConfigError
from samr1.config import help_field as _f

if TYPE_CHECKING:  # pragma: no cover - the reward side's configs import torch; built on demand
    from samr1.engine import SamEngineConfig
    from samr1.rewards import SamR1RewardConfig

__all__ = ["TrainConfig", "ConfigError", "load_yaml_config", "DATA_FORMATS"]

DATA_FORMATS = ("auto", "manifest", "hf", "refcocog", "reasonseg")


@dataclass
class TrainConfig:
    """GRPO training with the SAM-R1 objective. Defaults are the paper's (SAM-R1 / Seg-Zero) unless noted."""

    # -------------------------------------------------------------- inputs and outputs
    model: str | None = _f(None, "policy model directory (any local Qwen2-VL / Qwen2.5-VL checkpoint that "
                                 "AutoModelForImageTextToText and AutoProcessor load)")
    data: str | None = _f(None, "training data: a JSONL manifest, a Hugging Face dataset folder / parquet file, "
                                "a RefCOCOg folder (instances.json + refs(umd).p) or a ReasonSeg split folder")
    data_format: str = _f("auto", f"how to read --data: {', '.join(DATA_FORMATS)} (auto: guessed from the path)")
    image_dir: str | None = _f(None, "RefCOCOg only: folder of the COCO images (default: <data>/images, then "
                                     "<data>/train2014)")
    split: str = _f("train", "RefCOCOg only: which refs split to train on (train, val, test)")
    max_samples: int | None = _f(None, "use at most this many rows, drawn with --seed (the paper: 3000 from "
                                       "RefCOCOg train)")
    skip_bad_rows: bool = _f(False, "skip rows whose image or mask is missing, unreadable or of mismatched size "
                                    "(counted and reported) instead of failing before training")
    output_dir: str = _f("samr1-train-out", "where checkpoints, logs, the summary and the learning curve go")
    config: str | None = _f(None, "YAML file of field: value pairs (field names as in this help, with "
                                  "underscores); flags given on the command line override it")

    # -------------------------------------------------------------- SAM and the reward
    sam: str = _f("tiny-shapes", "SAM kind for the reward: vit_b, vit_l, vit_h, tiny, tiny-shapes, sam2...")
    sam_checkpoint: str | None = _f(None, "SAM state dict (.pth); random weights without it (except tiny-shapes)")
    device: str | None = _f(None, "device of SAM and the policy (default: cuda when available, else cpu); under "
                                  "accelerate each process uses its own device")
    encoder: str = _f("torch", "SAM image-encoder backend: torch, onnx or tensorrt")
    cache_gb: float = _f(2.0, "SAM embedding cache budget per process, GiB")
    embeddings: str | None = _f(None, "embedding store folder built with `samr1 embed` for this SAM, read before "
                                      "encoding")
    multimask: bool = _f(True, "ask SAM for 3 masks and keep the best by predicted IoU (Seg-Zero's evaluation)")
    encode_ahead: bool = _f(True, "encode a drawn batch's images on a side thread while the policy generates")
    reward_preset: str = _f("samr1", "whose reward rules: samr1 (SAM-R1's reward, samr1's reading), segzero "
                                     "(Seg-Zero's training reward, rule for rule) or visionreasoner (multi-object, "
                                     "Hungarian-matched accuracy); see samr1.rewards.presets")
    components: list | None = _f(None, "reward components, summed and logged apart (default: the preset's; samr1: "
                                       "think answer iou): think, answer, iou (tiered), mask_iou, box_iou, box_l1, "
                                       "point_dist, accuracy, non_repeat (each preset defines its own set)")
    prompt: str = _f("seg-zero", "prompt template: seg-zero, vision-reasoner, or a custom string containing "
                                 "{query}")
    reward_options: dict = _f({}, "other SamR1RewardConfig fields for the reward, e.g. {box_l1_threshold: 1.3} "
                                  "(YAML or Python; the fields of samr1.rewards.SamR1RewardConfig)")
    reward_gather: str = _f("rank", "where rewards are scored: rank (each process its own slice) or node (the "
                                    "step's answers gathered to one process per node, scored once, scattered back)")

    # -------------------------------------------------------------- GRPO (SAM-R1's values)
    num_generations: int = _f(8, "G: completions per prompt (SAM-R1: 8)")
    loss_type: str = _f("dapo", "TRL loss type; dapo = token-level normalisation over the whole batch (SAM-R1)")
    epsilon: float = _f(0.2, "lower clipping range epsilon_low (SAM-R1: 0.2)")
    epsilon_high: float = _f(0.3, "upper clipping range, clip-higher (SAM-R1: 0.3)")
    beta: float = _f(5e-3, "KL coefficient (SAM-R1 keeps KL: without it training collapsed near step 100)")
    learning_rate: float = _f(1e-6, "AdamW learning rate (SAM-R1: 1e-6)")
    temperature: float = _f(1.0, "sampling temperature of the rollouts")
    policy_image_size: int = _f(840, "side of the square image the policy sees (840 = 30 x 28: Qwen's processor "
                                     "keeps it, 900 image tokens); SAM sees the original")
    answer_frame: str = _f("auto", "the frame the policy's coordinates are in: pixels (of the policy's square "
                                   "image; Qwen2.5-VL), norm1000 (0..1000 on each axis; Qwen2-VL, Qwen3-VL) or auto "
                                   "(from the model's config.json model_type); recorded in the saved policy")
    max_completion_length: int = _f(1024, "max new tokens per completion")
    per_device_train_batch_size: int = _f(8, "completions per process per micro-step; per_device x "
                                             "steps_per_generation should be a multiple of num_generations")
    gradient_accumulation_steps: int = _f(1, "micro-steps per optimizer step")
    steps_per_generation: int | None = _f(None, "micro-steps served by one generation round (TRL default: "
                                                "gradient_accumulation_steps)")
    num_iterations: int = _f(1, "optimisation passes over each generation round (GRPO's mu)")
    max_steps: int = _f(-1, "stop after this many optimizer steps (-1: run num_train_epochs)")
    num_train_epochs: float = _f(1.0, "epochs over the data when max_steps is -1")
    seed: int = _f(42, "seed of the sample subset, data order and sampling")
    max_grad_norm: float = _f(1.0, "gradient clipping norm")
    warmup_steps: float = _f(0, "linear learning-rate warm-up: a number of steps, or a fraction of all steps when < 1")
    bf16: bool | None = _f(None, "bf16 mixed precision (default: on with CUDA, off on CPU)")
    gradient_checkpointing: bool | None = _f(None, "activation checkpointing (default: on with CUDA, off on CPU)")

    # -------------------------------------------------------------- generation backend
    use_vllm: bool = _f(False, "generate with a vLLM server (`trl vllm-serve`, started in its own environment)")
    vllm_server_host: str = _f("0.0.0.0", "host of the `trl vllm-serve` server")
    vllm_server_port: int = _f(8000, "port of the `trl vllm-serve` server")

    # -------------------------------------------------------------- evaluation during training
    eval_data: str | None = _f(None, "held-out data (any --data form) evaluated every --eval-steps with samr1 "
                                     "eval's code: greedy decoding, SAM's mask, gIoU / cIoU / parse rate, logged "
                                     "as heldout/*; the best policy so far is kept in <output_dir>/best")
    eval_steps: int = _f(0, "evaluate --eval-data every N optimizer steps, before the first and after the last "
                            "(0: only after the last)")
    eval_split: str | None = _f(None, "split of --eval-data for HF / RefCOCOg data (default: val when --split is "
                                      "train, else --split)")
    eval_image_dir: str | None = _f(None, "RefCOCOg only: the COCO images folder of --eval-data (default: "
                                          "--image-dir)")
    eval_samples: int | None = _f(None, "evaluate at most this many --eval-data rows (the first N)")
    eval_batch_size: int = _f(16, "prompts per batched greedy generation during --eval-data evaluation")

    # -------------------------------------------------------------- checkpoints, logs
    save_steps: int = _f(100, "save a checkpoint every N optimizer steps")
    save_total_limit: int | None = _f(None, "keep at most N checkpoints (oldest deleted)")
    logging_steps: int = _f(1, "log every N optimizer steps")
    resume: str | None = _f(None, "resume from a checkpoint folder, or 'latest' for the newest in --output-dir")
    progress: bool = _f(True, "show a progress bar (step, reward mean, parse failures, cache hits, ETA)")
    report_to: list = _f(["none"], "loggers, one or more: none, tensorboard, wandb, trackio, mlflow, ... (tensorboard "
                                   "is in samr1[train]; events go to <output_dir>/runs)")
    log_completions: bool = _f(True, "TRL's completions table: every logged step's prompts, completions, each "
                                     "reward component, samr1_reason (why an answer failed) and samr1_iou, written "
                                     "to <output_dir>/completions/*.parquet and to wandb / trackio when reported")

    # -------------------------------------------------------------- LoRA (PEFT)
    use_peft: bool = _f(False, "train a LoRA adapter instead of the whole policy (base weights and the vision tower "
                               "frozen); final/ then holds the adapter, which eval / segment / serve --model load")
    lora_r: int = _f(16, "LoRA rank r (the width of each adapter)")
    lora_alpha: int = _f(32, "LoRA alpha (the update is scaled by alpha / r)")
    lora_dropout: float = _f(0.05, "dropout on the LoRA input")
    lora_target_modules: list = _f(["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
                                   "module names that get an adapter, matched inside the language model only (the "
                                   "vision tower stays frozen); 'all-linear' is PEFT's every-linear-layer rule")
    merge_adapter: bool = _f(False, "with --use-peft: also write <output_dir>/merged, the base policy with the "
                                    "adapter merged in (a plain policy folder)")

    # -------------------------------------------------------------- any other GRPOConfig field
    grpo: dict = _f({}, "other fields of TRL's GRPOConfig, e.g. {lr_scheduler_type: cosine, weight_decay: 0.01, "
                        "top_p: 0.9}; on the command line --grpo KEY=VALUE (repeatable, VALUE read as YAML); checked "
                        "against GRPOConfig before anything loads; fields samr1 sets from its own flags are refused "
                        "with the flag's name")
    rollouts_every: int = _f(0, "every K steps write a few groups (query, the G completions, parsed answers, SAM's "
                                "masks, ground truth, reward components) to <output_dir>/rollouts/ for `samr1 view`; "
                                "0: off")
    rollouts_groups: int = _f(2, "prompts (groups of G completions) written per logged step")
    rollouts_max_mb: float = _f(256.0, "size budget of <output_dir>/rollouts/ in MiB; logging stops when it is reached")

    # ------------------------------------------------------------------ helpers
    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def engine_config(self) -> SamEngineConfig:
        """The reward engine's settings from this config's SAM fields (the device is the model's: the
        driver loads SAM onto this process's device)."""
        from samr1.engine import SamEngineConfig

        return SamEngineConfig(encoder=self.encoder, cache_bytes=int(self.cache_gb * (1 << 30)),
                               multimask=self.multimask, store=self.embeddings)

    def reward_config(self) -> SamR1RewardConfig:
        """The reward's settings: the components, the policy's square frame, the driver's dataset columns
        (``sam_image``: the original image SAM sees, see :mod:`samr1.train.data`)."""
        from samr1.rewards import SamR1RewardConfig

        names = {f.name for f in dataclasses.fields(SamR1RewardConfig)}
        unknown = sorted(set(self.reward_options) - names)
        if unknown:
            raise ConfigError(f"reward_options: unknown SamR1RewardConfig fields {unknown}; valid: {sorted(names)}",
                              field="reward_options")
        from samr1.policy.frame import answer_frame_size

        return SamR1RewardConfig(**{**dict(self.reward_options), "preset": self.reward_preset,
                                    "components": None if self.components is None else tuple(self.components),
                                    # the dataset's own columns (PolicyDataset): the ignore regions too
                                    "image_key": "sam_image", "mask_key": "masks", "ignore_key": "ignore",
                                    "model_size": answer_frame_size(self.resolved_answer_frame(),
                                                                    self.policy_image_size)})

    def resolved_answer_frame(self) -> str:
        """``answer_frame``, with "auto" resolved from the policy folder: the frame its saved record names (a
        warm-started policy answers in the frame it was taught), else its ``model_type``'s
        (:func:`samr1.policy.default_answer_frame`; "pixels" when neither can be read)."""
        from samr1.policy.frame import default_answer_frame, model_type_of
        from samr1.policy.record import read_record

        if self.answer_frame != "auto":
            return self.answer_frame
        if self.model and os.path.isdir(self.model):
            try:
                record = read_record(self.model)
            except ValueError:
                record = None
            if record is not None:
                return record.answer_frame
        return default_answer_frame(model_type_of(self.model) if self.model else None)

    @classmethod
    def from_dict(cls, values: dict[str, Any], *, where: str = "config") -> TrainConfig:
        """Build from a mapping of field names; unknown keys raise :class:`ConfigError` naming them."""
        names = set(cls.field_names())
        unknown = sorted(k for k in values if k not in names)
        if unknown:
            hint = [k.replace("-", "_") for k in unknown if k.replace("-", "_") in names]
            raise ConfigError(f"{where}: unknown keys {unknown}"
                              + (f" (write them with underscores: {hint})" if hint else "")
                              + f"; valid keys: {sorted(names)}")
        return cls(**values)

    def validate(self) -> TrainConfig:
        """Check every value; raise :class:`ConfigError` that says which field and how to fix it."""
        def need(cond: bool, name: str, msg: str) -> None:
            if not cond:
                raise ConfigError(f"{name}={getattr(self, name)!r}: {msg}", field=name)

        need(isinstance(self.model, str) and bool(self.model), "model", "give the policy directory with --model PATH")
        need(isinstance(self.data, str) and bool(self.data), "data", "give the training data with --data PATH")
        need(self.data_format in DATA_FORMATS, "data_format", f"choose one of {DATA_FORMATS}")
        need(self.max_samples is None or (isinstance(self.max_samples, int) and self.max_samples >= 1), "max_samples",
             "must be a positive integer, or omitted for all rows")
        need(isinstance(self.num_generations, int) and self.num_generations >= 2, "num_generations",
             "GRPO needs at least 2 completions per prompt to compare (the paper uses 8)")
        need(self.loss_type in ("grpo", "dapo", "dr_grpo", "bnpo", "cispo", "sapo"), "loss_type",
             "use dapo (SAM-R1's token-level loss), grpo, dr_grpo or bnpo")
        for name in ("epsilon", "epsilon_high"):
            v = getattr(self, name)
            need(isinstance(v, (int, float)) and math.isfinite(v) and 0 < v < 1, name,
                 "a clipping range must be in (0, 1); SAM-R1 uses epsilon=0.2, epsilon_high=0.3")
        need(self.epsilon_high >= self.epsilon, "epsilon_high", f"must be >= epsilon ({self.epsilon}): clip-higher "
             "widens only the upper side")
        need(isinstance(self.beta, (int, float)) and math.isfinite(self.beta) and self.beta >= 0, "beta",
             "the KL coefficient must be >= 0 (SAM-R1: 5e-3; 0 drops the reference model)")
        need(isinstance(self.learning_rate, (int, float)) and math.isfinite(self.learning_rate)
             and self.learning_rate > 0, "learning_rate", "must be a positive number, e.g. 1e-6")
        need(isinstance(self.temperature, (int, float)) and math.isfinite(self.temperature) and self.temperature > 0,
             "temperature", "must be > 0 (sampling; 1.0 in the paper)")
        need(isinstance(self.policy_image_size, int) and self.policy_image_size >= 28, "policy_image_size",
             "must be an integer >= 28 (a multiple of 28 is kept exactly by Qwen's processor; 840 in the paper)")
        for name in ("max_completion_length", "per_device_train_batch_size", "gradient_accumulation_steps",
                     "num_iterations", "save_steps", "logging_steps"):
            v = getattr(self, name)
            need(isinstance(v, int) and not isinstance(v, bool) and v >= 1, name, "must be a positive integer")
        need(self.steps_per_generation is None or (isinstance(self.steps_per_generation, int)
                                                   and self.steps_per_generation >= 1),
             "steps_per_generation", "must be a positive integer or omitted")
        need(isinstance(self.max_steps, int) and (self.max_steps == -1 or self.max_steps >= 1), "max_steps",
             "must be -1 (run num_train_epochs) or a positive integer")
        need(isinstance(self.num_train_epochs, (int, float)) and self.num_train_epochs > 0, "num_train_epochs",
             "must be > 0")
        need(isinstance(self.cache_gb, (int, float)) and math.isfinite(self.cache_gb) and self.cache_gb >= 0,
             "cache_gb", "must be >= 0 GiB")
        need(self.reward_gather in ("rank", "node"), "reward_gather", "choose rank or node")
        need(isinstance(self.rollouts_every, int) and not isinstance(self.rollouts_every, bool)
             and self.rollouts_every >= 0, "rollouts_every", "must be an integer >= 0 (0: no rollout log)")
        need(isinstance(self.rollouts_groups, int) and not isinstance(self.rollouts_groups, bool)
             and self.rollouts_groups >= 1, "rollouts_groups", "must be a positive integer")
        need(isinstance(self.rollouts_max_mb, (int, float)) and math.isfinite(self.rollouts_max_mb)
             and self.rollouts_max_mb > 0, "rollouts_max_mb", "must be a positive number of MiB")
        need(self.answer_frame in ("auto", "pixels", "norm1000"), "answer_frame", "choose auto, pixels or norm1000")
        need(isinstance(self.reward_options, dict) and not {"components", "image_key", "mask_key", "ignore_key",
                                                            "model_size", "preset"}
             & set(self.reward_options), "reward_options",
             "a mapping of SamR1RewardConfig fields other than components / image_key / mask_key / ignore_key / "
             "model_size (set those with --components, --reward-preset and --policy-image-size; the columns are "
             "the training dataset's own)")
        need(self.eval_data is None or (isinstance(self.eval_data, str) and bool(self.eval_data)), "eval_data",
             "a data path, or omitted")
        for name in ("eval_split", "eval_image_dir"):
            v = getattr(self, name)
            need(v is None or (isinstance(v, str) and bool(v)), name, "a non-empty string, or omitted")
        need(isinstance(self.eval_steps, int) and self.eval_steps >= 0, "eval_steps", "must be >= 0")
        need(self.eval_samples is None or (isinstance(self.eval_samples, int) and self.eval_samples >= 1),
             "eval_samples", "must be a positive integer, or omitted for all rows")
        need(isinstance(self.eval_batch_size, int) and self.eval_batch_size >= 1, "eval_batch_size",
             "must be a positive integer")
        # the engine's and the reward's own checks, reported under this config's field names
        for build, renamed in ((self.engine_config, {"cache_bytes": "cache_gb", "store": "embeddings"}),
                               (self.reward_config, {"model_size": "policy_image_size", "preset": "reward_preset"})):
            try:
                build()
            except ConfigError as exc:
                name = renamed.get(exc.field, exc.field)
                if name not in self.field_names():
                    raise
                raise ConfigError(f"{name}={getattr(self, name)!r}: {exc}", field=name) from None
        from samr1.train.prompts import resolve_prompt

        try:
            resolve_prompt(self.prompt)
        except ValueError as exc:
            raise ConfigError(f"prompt={self.prompt!r}: {exc}") from None
        need(isinstance(self.warmup_steps, (int, float)) and self.warmup_steps >= 0, "warmup_steps",
             "must be >= 0 (steps, or a fraction of all steps when < 1)")
        need(isinstance(self.vllm_server_port, int) and 0 < self.vllm_server_port < 65536, "vllm_server_port",
             "must be a TCP port (1..65535)")
        self._validate_trl()
        return self

    def report_list(self) -> list[str]:
        """``report_to`` as TRL's list (a comma-separated string is split; ``none`` alone means no logger)."""
        values = [self.report_to] if isinstance(self.report_to, str) else list(self.report_to)
        names = [n.strip() for v in values for n in str(v).split(",") if n.strip()]
        return [] if names in ([], ["none"]) else names

    def _validate_trl(self) -> None:
        """The TRL-side fields: loggers installed, LoRA values, the grpo mapping, whole groups per round."""
        from samr1.train.grpo_args import batch_error, check_grpo_overrides
        from samr1.train.loggers import check_loggers

        def need(cond: bool, name: str, msg: str) -> None:
            if not cond:
                raise ConfigError(f"{name}={getattr(self, name)!r}: {msg}", field=name)

        need(isinstance(self.report_to, (str, list, tuple)), "report_to", "a logger name or a list of them")
        names = self.report_list()
        need("none" not in names, "report_to", "'none' cannot be combined with a logger")
        check_loggers(names)
        for name in ("lora_r", "lora_alpha"):
            v = getattr(self, name)
            need(isinstance(v, int) and not isinstance(v, bool) and v >= 1, name, "must be a positive integer")
        need(isinstance(self.lora_dropout, (int, float)) and 0 <= self.lora_dropout < 1, "lora_dropout",
             "must be in [0, 1)")
        need(isinstance(self.lora_target_modules, (list, tuple)) and bool(self.lora_target_modules)
             and all(isinstance(m, str) and m for m in self.lora_target_modules), "lora_target_modules",
             "a list of module names, e.g. [q_proj, v_proj], or [all-linear]")
        need(not self.merge_adapter or self.use_peft, "merge_adapter", "only with --use-peft (a full policy is "
             "already a plain policy folder)")
        check_grpo_overrides(self.grpo, components=len(self.reward_config().components))  # the preset's when None
        need(self.steps_per_generation is None or "generation_batch_size" not in self.grpo, "steps_per_generation",
             "give either --steps-per-generation or grpo.generation_batch_size, not both (TRL derives one from "
             "the other)")
        spg = self.steps_per_generation or self.gradient_accumulation_steps
        msg = batch_error(self.per_device_train_batch_size, spg, self.num_generations,
                          int(os.environ.get("WORLD_SIZE", "1")), self.grpo.get("generation_batch_size"))
        if msg:
            raise ConfigError(msg, field="per_device_train_batch_size")


def load_yaml_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read ``--config train.yaml``: a mapping of :class:`TrainConfig` field names to values."""
    import yaml

    from samr1.train.yaml_numbers import safe_load

    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            values = safe_load(f)  # 1e-6 is a number, as in YAML 1.2
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of field: value, got {type(values).__name__}")
    names = set(TrainConfig.field_names())
    unknown = sorted(k for k in values if k not in names)
    if unknown:
        raise ConfigError(f"{path}: unknown keys {unknown}; valid keys are TrainConfig's fields: {sorted(names)}")
    return values
