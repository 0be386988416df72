"""A policy folder that holds a LoRA adapter (``adapter_config.json``) instead of full weights.

``samr1 train --use-peft`` (and ``trl grpo --use_peft``) save the adapter alone; its ``adapter_config.json`` names
the base policy (``base_model_name_or_path``). :func:`load_policy_model` loads either kind of folder: a plain
policy as is, an adapter on top of its base with the adapter merged into the weights (inference then costs what
the base costs). :func:`merge_adapter` writes such a merged policy as a plain folder.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any

__all__ = ["ADAPTER_CONFIG", "is_adapter", "adapter_base", "processor_folder", "load_policy_model", "merge_adapter"]

ADAPTER_CONFIG = "adapter_config.json"
_PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json")


def is_adapter(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds a PEFT adapter."""
    return os.path.isfile(os.path.join(os.fspath(folder), ADAPTER_CONFIG))


def adapter_base(folder: str | os.PathLike) -> str:
    """The base policy of the adapter in ``folder``: ``base_model_name_or_path`` of its ``adapter_config.json``
    as written, or resolved against the adapter folder when that relative path exists there.

    Raises:
        ValueError: the config is unreadable or names no base model.
        FileNotFoundError: the base is a local path that does not exist (the message names both files).
    """
    folder = os.fspath(folder)
    path = os.path.join(folder, ADAPTER_CONFIG)
    try:
        with open(path, encoding="utf-8") as f:
            base = json.load(f).get("base_model_name_or_path")
    except (OSError, json.JSONDecodeError, AttributeError) as exc:
        raise ValueError(f"{path}: not a readable adapter config ({exc})") from None
    if not isinstance(base, str) or not base:
        raise ValueError(f"{path}: no base_model_name_or_path; cannot tell which policy the adapter belongs to")
    base = os.path.expanduser(base)
    if os.path.isdir(base):
        return base
    beside = os.path.join(folder, base)
    if not os.path.isabs(base) and os.path.isdir(beside):
        return beside
    if os.path.isabs(base) or base.startswith(".") or base.count("/") != 1:  # a hub id is exactly owner/name
        raise FileNotFoundError(f"{path}: its base policy {base!r} does not exist here; copy the base policy "
                                f"there, or edit base_model_name_or_path in {ADAPTER_CONFIG}")
    return base


def processor_folder(folder: str | os.PathLike) -> str:
    """Where the policy's processor is: ``folder`` when it holds one, else the adapter's base."""
    folder = os.fspath(folder)
    if any(os.path.isfile(os.path.join(folder, f)) for f in _PROCESSOR_FILES) or not is_adapter(folder):
        return folder
    return adapter_base(folder)


def load_policy_model(folder: str | os.PathLike, *, dtype: Any = "auto") -> Any:
    """The policy of ``folder`` with ``AutoModelForImageTextToText``; an adapter folder loads its base and
    merges the adapter in (``peft`` needed, in samr1[train])."""
    from transformers import AutoModelForImageTextToText

    folder = os.fspath(folder)
    if not is_adapter(folder):
        return AutoModelForImageTextToText.from_pretrained(folder, dtype=dtype)
    base = adapter_base(folder)
    try:
        from peft import PeftModel
    except ImportError:
        raise ImportError(f"{folder} holds a LoRA adapter; loading it needs peft: pip install peft "
                          "(samr1[train] carries it)") from None
    model = AutoModelForImageTextToText.from_pretrained(base, dtype=dtype)
    return PeftModel.from_pretrained(model, folder).merge_and_unload()


def merge_adapter(folder: str | os.PathLike, out: str | os.PathLike) -> str:
    """Write the adapter of ``folder`` merged into its base as a plain policy folder ``out`` (weights, processor,
    and the samr1 policy record when ``folder`` has one); return ``out``.

    Raises:
        ValueError: ``folder`` holds no adapter, or ``out`` exists and is not empty (nothing is overwritten).
    """
    from samr1.policy.inputs import load_processor

    folder, out = os.fspath(folder), os.fspath(out)
    if not is_adapter(folder):
        raise ValueError(f"{folder}: no {ADAPTER_CONFIG}; only an adapter folder can be merged")
    if os.path.isdir(out) and os.listdir(out):
        raise ValueError(f"{out}: exists and is not empty; give a new folder")
    model = load_policy_model(folder)
    os.makedirs(out, exist_ok=True)
    model.save_pretrained(out)
    load_processor(processor_folder(folder)).save_pretrained(out)
    record = os.path.join(folder, "samr1_policy.json")
    if os.path.isfile(record):
        shutil.copyfile(record, os.path.join(out, "samr1_policy.json"))
    return out
