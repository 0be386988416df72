"""Any ``GRPOConfig`` field through ``samr1 train``: the ``grpo:`` mapping, its checks and the batch / G rule.

``TrainConfig`` keeps samr1's own settings (SAM-R1's defaults, the reward, the data) as flags; every other field
of TRL's ``GRPOConfig`` (about 230: the scheduler, weight decay, ``top_p`` / ``top_k``, ``scale_rewards``,
``reward_weights``, ``run_name``, ``model_init_kwargs`` for the model's ``dtype`` / ``attn_implementation``, ...)
is given under ``grpo:`` in the YAML file or as ``--grpo KEY=VALUE`` (repeatable; the value is read as YAML, so
``--grpo top_p=0.9 --grpo lr_scheduler_type=cosine --grpo 'model_init_kwargs={dtype: bfloat16}'``).

Rules (checked by :func:`check_grpo_overrides` before any data or model is loaded):

- a key that is not a ``GRPOConfig`` field is an error naming the closest field;
- a value of the wrong type is an error naming the type ``GRPOConfig`` declares;
- a field samr1 sets from its own flag (:data:`OWNED`, e.g. ``learning_rate`` <- ``--learning-rate``) is an
  error naming that flag: each setting has one place, so a YAML file never says two things;
- a field samr1 must set for its reward and outputs to work (:data:`FIXED`) is an error saying why;
- every other field wins over samr1's defaults for TRL's own settings (``log_multimodal``,
  ``use_bias_correction_kl``, the vLLM importance-sampling mode, ...).
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import math
import types
import typing
from typing import Any

from samr1.config import ConfigError

__all__ = ["OWNED", "FIXED", "grpo_fields", "check_grpo_overrides", "parse_key_value", "batch_error"]

# GRPOConfig field -> the samr1 flag that sets it (TrainConfig fields of the same name are added on first use).
OWNED: dict[str, str] = {
    "activation_checkpointing": "--gradient-checkpointing",
    "gradient_checkpointing": "--gradient-checkpointing",
    "data_seed": "--seed",
    "use_cpu": "--device",
    "resume_from_checkpoint": "--resume",
    "disable_tqdm": "--progress / --no-progress (samr1's bar shows the reward, parse failures and cache hits)",
}

# GRPOConfig field -> why samr1 sets it itself.
FIXED: dict[str, str] = {
    "output_dir": "set it with --output-dir",
    "remove_unused_columns": "the reward reads the dataset's sam_image, mask and row_id columns, which TRL would "
                             "drop (samr1 sets False)",
    "save_strategy": "samr1 saves every --save-steps optimizer steps (set --save-steps)",
    "dataloader_num_workers": "samr1's dataset encodes ahead on a side thread of the main process (0 workers)",
}


def grpo_fields() -> dict[str, Any]:
    """``{name: declared type}`` of every ``GRPOConfig`` field (TRL imported on first use)."""
    from trl import GRPOConfig

    hints = typing.get_type_hints(GRPOConfig)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(GRPOConfig) if f.init}


def owned_fields() -> dict[str, str]:
    """:data:`OWNED` plus every ``TrainConfig`` field that is also a ``GRPOConfig`` field."""
    from samr1.train.config import TrainConfig

    names = set(grpo_fields())
    own = {n: "--" + n.replace("_", "-") for n in TrainConfig.field_names() if n in names}
    return {**own, **OWNED}


def _type_ok(value: Any, tp: Any) -> bool:
    """Whether ``value`` fits the declared type ``tp`` (unions, Optional, Literal, list / dict, enums)."""
    if tp is Any:
        return True
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(tp))
    if origin is typing.Literal:
        return value in typing.get_args(tp)
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if origin in (list, tuple):
        args = typing.get_args(tp)
        return isinstance(value, (list, tuple)) and (not args or all(_type_ok(v, args[0]) for v in value))
    if tp is dict or origin is dict:
        return isinstance(value, dict)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return isinstance(value, tp) or value in {e.value for e in tp}
    if isinstance(tp, type):
        return isinstance(value, tp)
    return True  # a type this check does not model: GRPOConfig's own __post_init__ judges it


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) if isinstance(tp, type) else str(tp).replace("typing.", "")


def check_grpo_overrides(values: Any, *, components: int | None = None) -> dict[str, Any]:
    """Check a ``grpo:`` mapping (see the module docstring); return it as a plain dict.

    Args:
        values: the mapping of ``GRPOConfig`` field names to values.
        components: the number of reward components (``reward_weights`` must give one weight each).

    Raises:
        ConfigError: naming ``grpo.<key>`` and what to do instead.
    """
    if not isinstance(values, dict):
        raise ConfigError(f"grpo={values!r}: a mapping of GRPOConfig fields to values, e.g. {{top_p: 0.9}}",
                          field="grpo")
    fields = grpo_fields()
    owned = owned_fields()
    for key, value in values.items():
        if not isinstance(key, str) or key not in fields:
            close = difflib.get_close_matches(str(key).replace("-", "_"), list(fields), n=3, cutoff=0.6)
            hint = f"; did you mean {' or '.join(close)}?" if close else ""
            raise ConfigError(f"grpo.{key}: not a GRPOConfig field{hint} (TRL's GRPOConfig lists them all)",
                              field="grpo")
        if key in owned:
            raise ConfigError(f"grpo.{key}: samr1 sets this from its own flag: use {owned[key]} (or the "
                              "matching key at the top level of the YAML file)", field="grpo")
        if key in FIXED:
            raise ConfigError(f"grpo.{key}: samr1 sets this itself: {FIXED[key]}", field="grpo")
        if not _type_ok(value, fields[key]):
            raise ConfigError(f"grpo.{key}={value!r}: GRPOConfig declares it as {_type_name(fields[key])}",
                              field="grpo")
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"grpo.{key}={value!r}: must be a finite number", field="grpo")
    weights = values.get("reward_weights")
    if weights is not None and components is not None and len(weights) != components:
        raise ConfigError(f"grpo.reward_weights={weights!r}: give one weight per reward component ({components}: "
                          "see --components, in that order)", field="grpo")
    return dict(values)


def parse_key_value(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` of ``--grpo`` as ``(key, value)``, the value read as YAML (``0.9`` a float, ``true`` a
    bool, ``[a, b]`` a list, ``{dtype: bfloat16}`` a mapping, anything else a string).

    Raises:
        ValueError: no ``=`` or an empty key (the message shows the form).
    """
    import yaml

    from samr1.train.yaml_numbers import safe_load

    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ValueError(f"{text!r}: write KEY=VALUE, e.g. --grpo top_p=0.9")
    try:
        value = safe_load(raw) if raw.strip() else ""  # 1e-2 is a number, as in YAML 1.2
    except yaml.YAMLError:
        value = raw  # not YAML (e.g. an unbalanced bracket): keep the text, the type check judges it
    return key, value


def batch_error(per_device_train_batch_size: int, steps_per_generation: int, num_generations: int,
                num_processes: int, generation_batch_size: int | None = None) -> str | None:
    """TRL's rule in samr1's flags: one generation round holds whole groups of G completions.

    A round is ``per_device_train_batch_size x steps_per_generation x processes`` completions (or
    ``grpo.generation_batch_size``); it must be a multiple of ``num_generations``. Returns the message (which
    flag to change, and to what) or None when the rule holds.
    """
    pd, spg, g, n = per_device_train_batch_size, steps_per_generation, num_generations, num_processes
    if generation_batch_size is not None:
        if generation_batch_size % (pd * n):
            return (f"grpo.generation_batch_size={generation_batch_size} must be a multiple of "
                    f"per_device_train_batch_size x processes = {pd} x {n} = {pd * n}")
        if generation_batch_size % g == 0:
            return None
        fix = math.lcm(g, pd * n)
        return (f"grpo.generation_batch_size={generation_batch_size} is not a multiple of num_generations={g}: "
                f"set it to {fix} (a multiple of both G and per_device_train_batch_size x processes)")
    total = pd * spg * n
    if total % g == 0:
        return None
    fix_pd = next(b for b in range(pd, pd + g + 1) if (b * spg * n) % g == 0)
    fix_spg = g // math.gcd(g, pd * n)
    divisors = [d for d in range(2, g) if total % d == 0]
    alt_g = f", or --num-generations {max(divisors)}" if divisors else ""
    return (f"per_device_train_batch_size x steps_per_generation x processes = {pd} x {spg} x {n} = {total} "
            f"completions per generation round is not a multiple of num_generations = {g} (a round must hold "
            f"whole groups of G completions): set --per-device-train-batch-size {fix_pd}, or --steps-per-generation "
            f"{fix_spg}{alt_g}")
