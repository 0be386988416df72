"""The hyper-parameters of the ``tiny-shapes`` SAM trainer (:mod:`samr1.shapes.train`), apart from it.

A plain dataclass without torch, so that ``samr1 train-sam`` can build its flags (and ``samr1 --help`` list
it) without importing the trainer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["TrainConfig"]


@dataclass
class TrainConfig:
    """Training hyper-parameters; every field is a ``samr1 train-sam`` flag of the same name."""

    seed: int = field(default=0, metadata={"help": "seeds init, scenes and prompts"})
    steps: int = field(default=3000, metadata={"help": "optimiser steps"})
    batch_images: int = field(default=6, metadata={"help": "scenes per step"})
    prompts_per_image: int = field(default=5, metadata={"help": "prompts decoded per scene (amortises the encoder)"})
    scene_reuse: int = field(default=1, metadata={
        "help": "each drawn scene serves this many consecutive steps (new prompts and augmentation each "
                "time): drawing a scene costs ~3x building a sample from it; saves work with --workers 0 "
                "or 1"})
    all_masks_weight: float = field(default=0.0, metadata={
        "help": "for unambiguous prompts (a box, or 2+ points), weight of the mean loss over all three "
                "multimask outputs on top of best-of-3, so the mask picked by predicted IoU is good too (one "
                "run with 1.0, --scene-reuse 2 and an earlier decay scored worse: see samr1/shapes/README.md)"})
    lr: float = field(default=8e-4, metadata={"help": "peak learning rate (AdamW)"})
    min_lr: float = field(default=1e-5, metadata={"help": "learning rate at the end of the cosine"})
    warmup: int = field(default=100, metadata={"help": "linear warm-up steps"})
    decay_start: int = field(default=-1, metadata={"help": "step where the cosine decay starts (-1: at 75 %% of "
                                                            "steps, or set by the time budget)"})
    weight_decay: float = field(default=0.05, metadata={"help": "AdamW weight decay"})
    grad_clip: float = field(default=1.0, metadata={"help": "gradient-norm clip"})
    stop_at: int = field(default=0, metadata={"help": "stop after this many steps, keeping the schedule of "
                                                      "--steps (0: run all steps); reproduces a hard stop"})
    device: str = field(default="cpu", metadata={"help": "torch device (cpu or cuda)"})
    threads: int = field(default=1, metadata={"help": "torch CPU threads (the hash depends on it)"})
    workers: int = field(default=1, metadata={"help": "data worker processes building scenes ahead (0: in the "
                                                     "training process; the weights do not depend on it)"})
    eval_every: int = field(default=1500, metadata={"help": "quick held-out eval every N steps (0: off)"})
    eval_scenes: int = field(default=100, metadata={"help": "held-out scenes of the final evaluation"})
    out: str = field(default="train_sam_out", metadata={"help": "folder for checkpoints and the log"})
    time_budget_s: float = field(default=0.0, metadata={
        "help": "wall-clock budget (0: off): the decay starts once 78 %% of it is spent and lasts a quarter of "
                "the steps done by then (the card records the resulting --steps / --decay-start, which "
                "reproduce the run without a budget); a hard stop at the budget ends the run regardless"})

    def validate(self) -> None:
        for name in ("steps", "batch_images", "prompts_per_image", "threads", "scene_reuse"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0, got {self.workers}")
        if not 0 <= self.warmup < self.steps:
            raise ValueError(f"warmup must be in [0, steps), got {self.warmup} with steps={self.steps}")
        if self.decay_start >= self.steps or (0 <= self.decay_start < self.warmup):
            raise ValueError(f"decay_start must be -1 or in [warmup, steps), got {self.decay_start}")
        if not 0 <= self.stop_at <= self.steps:
            raise ValueError(f"stop_at must be in [0, steps], got {self.stop_at} with steps={self.steps}")
        if self.all_masks_weight < 0:
            raise ValueError(f"all_masks_weight must be >= 0, got {self.all_masks_weight}")
        if not 0 < self.min_lr <= self.lr:
            raise ValueError(f"need 0 < min_lr <= lr, got min_lr={self.min_lr}, lr={self.lr}")
        if self.device.startswith("cuda"):
            import torch  # only here: the config itself (and `samr1 train-sam --help`) must not load torch

            if not torch.cuda.is_available():
                raise ValueError("device cuda requested but torch.cuda.is_available() is False; use --device cpu")
