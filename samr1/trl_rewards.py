"""samr1's reward components as plain functions that ``trl grpo --reward_funcs`` imports by dotted path.

::

    SAMR1_SAM=vit_h SAMR1_SAM_CHECKPOINT=sam_vit_h_4b8939.pth \\
    trl grpo --model_name_or_path Qwen/Qwen2.5-VL-7B-Instruct --dataset_name trl_data/ \\
        --reward_funcs samr1.trl_rewards.think_format samr1.trl_rewards.answer_format samr1.trl_rewards.tiered_iou \\
        --num_generations 8 --max_completion_length 1024 --output_dir out/

(``samr1 trl-data`` writes such a dataset folder from any data ``samr1 train`` reads.) Each function is TRL's
reward signature ``(prompts, completions, **columns) -> list[float]`` and is named like the component
``samr1 train`` logs (``think_format``, ``answer_format``, ``tiered_iou``, ``mask_iou``, ``box_iou``, ``box_l1``,
``point_distance``).

One :class:`samr1.engine.SamEngine` per process is built on the first call that needs SAM, from environment
variables (TRL gives reward functions no other way in):

- ``SAMR1_SAM``: SAM kind (vit_b, vit_l, vit_h, sam2..., tiny-shapes); required by the SAM components.
- ``SAMR1_SAM_CHECKPOINT``: its state dict (.pth).
- ``SAMR1_DEVICE``: default ``cuda:<LOCAL_RANK>`` with CUDA (the process's own GPU under accelerate), else cpu.
- ``SAMR1_ENCODER`` (torch / onnx / tensorrt), ``SAMR1_CACHE_GB`` (2), ``SAMR1_EMBEDDINGS`` (a store folder of
  ``samr1 embed``), ``SAMR1_MULTIMASK`` (1 / 0).
- ``SAMR1_MODEL_SIZE``: side of the square image the policy sees (840; answers are in its pixels).
- ``SAMR1_IMAGE_KEY``: the column holding the ORIGINAL image SAM sees (default ``sam_image`` when the dataset
  has it, else ``image``); ``SAMR1_MASK_KEY``: the ground-truth mask column (``mask``); ``SAMR1_IGNORE_KEY``:
  the column of ignore regions (``ignore``, as ``samr1 trl-data`` writes it; empty: none).
- ``SAMR1_REWARD_OPTIONS``: a JSON object of other :class:`samr1.rewards.SamR1RewardConfig` fields, e.g.
  ``{"tiers": [[0.8, 4], [0.7, 3], [0.5, 2]]}``.

TRL calls the reward functions one after the other with the same completion list: the first call parses the
batch and runs SAM ONCE for every completion, the others read that result (:class:`samr1.rewards.SamR1Reward`'s
per-batch memo). The first batch is scored once more for each component that joins after it (the components
in use become known as TRL calls them); from then on every batch costs one SAM pass. The reward's own logs
(``samr1/reason/*``, ``samr1/mean_iou``) and the completions table's ``samr1_reason`` / ``samr1_iou`` columns
reach TRL through its ``log_metric`` / ``log_extra`` hooks, as in ``samr1 train``.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from typing import Any

from samr1.config import ConfigError

__all__ = ["think_format", "answer_format", "tiered_iou", "mask_iou", "box_iou", "box_l1", "point_distance",
           "shared_engine", "reset"]

_LOCK = threading.RLock()
_STATE: dict[str, Any] = {"engine": None, "reward": None}


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def _device() -> str:
    dev = _env("SAMR1_DEVICE")
    if dev:
        return dev
    import torch

    return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}" if torch.cuda.is_available() else "cpu"


def shared_engine() -> Any:
    """This process's :class:`samr1.engine.SamEngine`, built on first use from ``SAMR1_*`` (module docstring).

    Raises:
        ConfigError: ``SAMR1_SAM`` unset, or a malformed numeric variable (the message names it).
    """
    with _LOCK:
        if _STATE["engine"] is None:
            from samr1.engine import SamEngine, SamEngineConfig
            from samr1.sam import load_sam

            kind = _env("SAMR1_SAM")
            if kind is None:
                raise ConfigError("SAMR1_SAM is not set: the SAM reward components need it, e.g. SAMR1_SAM=vit_h "
                                  "SAMR1_SAM_CHECKPOINT=sam_vit_h_4b8939.pth (see samr1.trl_rewards)")
            try:
                cache_bytes = int(float(_env("SAMR1_CACHE_GB", "2")) * (1 << 30))
            except ValueError:
                raise ConfigError(f"SAMR1_CACHE_GB={_env('SAMR1_CACHE_GB')!r}: a number of GiB, e.g. 2") from None
            config = SamEngineConfig(encoder=_env("SAMR1_ENCODER", "torch"), cache_bytes=cache_bytes,
                                     multimask=_env("SAMR1_MULTIMASK", "1") not in ("0", "false", "no"),
                                     store=_env("SAMR1_EMBEDDINGS"))
            sam = load_sam(kind, _env("SAMR1_SAM_CHECKPOINT"), device=_device())
            _STATE["engine"] = SamEngine(sam, config=config)
        return _STATE["engine"]


def reset() -> None:
    """Forget the shared engine and reward (the next call rebuilds them from the environment)."""
    with _LOCK:
        _STATE.update(engine=None, reward=None)


def _options() -> dict[str, Any]:
    text = _env("SAMR1_REWARD_OPTIONS")
    if text is None:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"SAMR1_REWARD_OPTIONS: not JSON ({exc.msg}); write an object, e.g. "
                          '\'{"tiers": [[0.8, 4], [0.7, 3], [0.5, 2]]}\'') from None
    if not isinstance(value, dict):
        raise ConfigError("SAMR1_REWARD_OPTIONS: expected a JSON object of SamR1RewardConfig fields")
    return value


def _model_size() -> tuple[int, int]:
    text = _env("SAMR1_MODEL_SIZE", "840")
    try:
        side = int(text)
    except ValueError:
        raise ConfigError(f"SAMR1_MODEL_SIZE={text!r}: the side in pixels of the square image the policy sees, "
                          "e.g. 840") from None
    return side, side


def _reward_with(component: str, columns: dict[str, Any]) -> Any:
    """The shared :class:`SamR1Reward`, rebuilt with ``component`` added when it does not compute it yet."""
    from samr1.rewards import SamR1Reward

    with _LOCK:
        current = _STATE["reward"]
        if current is not None and component in current.components:
            return current
        components = (*current.components, component) if current is not None else (component,)
        image_key = _env("SAMR1_IMAGE_KEY") or ("sam_image" if "sam_image" in columns else "image")
        options = {**_options(), "components": components, "model_size": _model_size(), "image_key": image_key,
                   "mask_key": _env("SAMR1_MASK_KEY", "mask"), "ignore_key": _env("SAMR1_IGNORE_KEY", "ignore") or None}
        needs_sam = bool({"iou", "mask_iou"} & set(components))
        _STATE["reward"] = SamR1Reward(shared_engine() if needs_sam else None, **options)
        return _STATE["reward"]


def _score(component: str, completions: Sequence[Any] | None, kwargs: dict[str, Any]) -> list[float]:
    reward = _reward_with(component, kwargs)
    fn = next(f for f in reward.functions() if f.component == component)
    return fn(completions=completions, **kwargs)


def think_format(prompts: Any = None, completions: Sequence[Any] | None = None, **kwargs: Any) -> list[float]:
    """1 when the completion is ``<think>...</think>`` then ``<answer>...</answer>``, else 0."""
    return _score("think", completions, kwargs)


def answer_format(prompts: Any = None, completions: Sequence[Any] | None = None, **kwargs: Any) -> list[float]:
    """1 when the answer parses (one box and its points, in the policy's frame), else 0."""
    return _score("answer", completions, kwargs)


def tiered_iou(prompts: Any = None, completions: Sequence[Any] | None = None, **kwargs: Any) -> list[float]:
    """SAM-R1's tiered reward of SAM's mask IoU with the ground truth (> 0.8: 4, > 0.7: 3, > 0.5: 2, else 0)."""
    return _score("iou", completions, kwargs)


def mask_iou(prompts: Any = None, completions: Sequence[Any] | None = None, **kwargs: Any) -> list[float]:
    """SAM's mask IoU with the ground truth, in [0, 1]."""
    return _score("mask_iou", completions, kwargs)


def box_iou(prompts: Any = None, completions: Sequence[Any] | None = None, **kwargs: Any) -> list[float]:
    """Seg-Zero's box reward: 1 when the box's IoU with the ground-truth mask's box is above 0.5."""
    return _score("box_iou", completions, kwargs)


def box_l1(prompts: Any = None, completions: Sequence[Any] | None = None, **kwargs: Any) -> list[float]:
    """Seg-Zero's box L1 reward: 1 when the mean corner difference to the mask's box is under 10 px."""
    return _score("box_l1", completions, kwargs)


def point_distance(prompts: Any = None, completions: Sequence[Any] | None = None, **kwargs: Any) -> list[float]:
    """Seg-Zero's point reward: 1 when the points lie in the box and near the mask's reference points."""
    return _score("point_dist", completions, kwargs)
