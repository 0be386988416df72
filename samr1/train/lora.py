"""LoRA for the policy (``--use-peft``): which modules get an adapter, and what the adapted model holds.

Qwen2.5-VL and Qwen3-VL (transformers >= 5) name their text decoder ``model.language_model.layers.N...`` and
their vision tower ``model.visual.blocks.N...``. The vision tower's MLP uses the same projection names as the
text decoder's (``gate_proj`` / ``up_proj`` / ``down_proj`` in Qwen2.5-VL), so plain names would put adapters on
the vision tower too; :func:`target_pattern` therefore matches the names inside the language model only, and
the vision tower stays frozen (as SAM-R1 trains the language side of the policy).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

__all__ = ["target_pattern", "lora_config", "adapter_summary"]


def target_pattern(names: Sequence[str]) -> str | list[str]:
    """PEFT's ``target_modules`` for ``names``: a regular expression (PEFT matches it against the whole module
    name) selecting modules of the language model whose last name part is one of ``names``; ``["all-linear"]``
    is passed on as PEFT's own rule (every linear layer but the output head, the vision tower included)."""
    names = list(names)
    if names == ["all-linear"]:
        return "all-linear"
    alternatives = "|".join(re.escape(n) for n in names)
    return rf"(?:.*\.)?language_model\..*\.(?:{alternatives})"


def lora_config(r: int, alpha: int, dropout: float, target_modules: Sequence[str]) -> Any:
    """``peft.LoraConfig`` for the policy (a causal LM whose forward also takes the image inputs)."""
    from peft import LoraConfig

    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_pattern(target_modules),
                      task_type="CAUSAL_LM", bias="none")


def adapter_summary(model: Any) -> dict[str, Any]:
    """What the (PEFT-wrapped) policy trains: ``trainable`` / ``total`` parameter counts, the number of LoRA
    modules in the language model and in the vision tower (``lora_modules_language`` / ``lora_modules_vision``),
    and ``vision_trainable`` (trainable parameters in the vision tower; 0 with the default targets)."""
    trainable = total = vision_trainable = 0
    for name, p in model.named_parameters():
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
            if ".visual." in name:
                vision_trainable += p.numel()
    lang = vis = 0
    for name, module in model.named_modules():
        if hasattr(module, "lora_A") and hasattr(module, "base_layer"):
            if ".visual." in name:
                vis += 1
            elif "language_model" in name:
                lang += 1
    return {"trainable": trainable, "total": total, "lora_modules_language": lang, "lora_modules_vision": vis,
            "vision_trainable": vision_trainable}
