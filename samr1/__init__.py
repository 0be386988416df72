"""samr1: SAM-R1-style reinforcement learning for reasoning segmentation, made fast.

The entry points a user types first are importable from the package itself::

    import samr1
    sam = samr1.load_sam("tiny-shapes")
    engine = samr1.SamEngine(sam)
    reward = samr1.SamR1Reward(engine)
    answer = samr1.parse_answer(text, image_size=(480, 640))
    iou, inter, union = samr1.mask_iou_from_logits(logits, gt, input_size, original_size)

They load lazily, so ``import samr1`` (and ``samr1 --help``) stays cheap: torch and segment-anything are
imported on first use. See docs/architecture.md for the contracts.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# name -> module that defines it
_EXPORTS = {
    "load_sam": "samr1.sam",
    "SamEngine": "samr1.engine",
    "SamEngineConfig": "samr1.engine",
    "SamR1Reward": "samr1.rewards",
    "SamR1RewardConfig": "samr1.rewards",
    "parse_answer": "samr1.answer",
    "Answer": "samr1.answer",
    "mask_iou_from_logits": "samr1.ops",
    "InputError": "samr1.io",
}

__all__ = ["Answer", "InputError", "SamEngine", "SamEngineConfig", "SamR1Reward", "SamR1RewardConfig", "__version__",
           "load_sam", "mask_iou_from_logits", "parse_answer"]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from samr1.answer import Answer, parse_answer
    from samr1.engine import SamEngine, SamEngineConfig
    from samr1.io import InputError
    from samr1.ops import mask_iou_from_logits
    from samr1.rewards import SamR1Reward, SamR1RewardConfig
    from samr1.sam import load_sam


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'samr1' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
