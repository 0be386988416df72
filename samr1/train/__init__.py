"""GRPO training with the SAM-R1 objective on TRL's ``GRPOTrainer`` (``samr1 train``).

- :class:`TrainConfig` (``samr1.train.config``): every knob, SAM-R1's defaults, help text, validation;
- :func:`train` (``samr1.train.driver``): data checks, one ``SamEngine`` per process, reward components as
  TRL reward functions, ``GRPOConfig`` / ``GRPOTrainer``, checkpoints, summary, learning curve;
- ``samr1.train.data``: loaders (manifest, HF datasets / parquet, RefCOCOg, ReasonSeg) and the dataset;
- ``samr1.train.prompts``: Seg-Zero's and VisionReasoner's templates;
- ``samr1.train.tiny_policy``: a tiny Qwen2.5-VL built in code for tests and CPU runs;
- ``samr1.train.grpo_args`` (any GRPOConfig field, the batch / G rule), ``samr1.train.lora`` (LoRA targets),
  ``samr1.train.loggers`` (--report-to checks), ``samr1.train.model_card``, ``samr1.train.heldout`` (evaluation
  during training), ``samr1.train.trl_data`` (a dataset folder for ``trl grpo`` with :mod:`samr1.trl_rewards`).

Heavy imports (torch, transformers, TRL) happen inside the functions that need them.
"""

from samr1.train.config import ConfigError, TrainConfig

__all__ = ["TrainConfig", "ConfigError", "train"]


def train(cfg: TrainConfig, **kwargs):
    """See :func:`samr1.train.driver.train`."""
    from samr1.train.driver import train as _train

    return _train(cfg, **kwargs)
