"""The SAM runtime: build/load (:mod:`samr1.sam.build`), encoder backends and exports
(:mod:`samr1.sam.encoder`), prompt packing (:mod:`samr1.sam.prompts`), the batched decoder
(:mod:`samr1.sam.decoder`) and SAM 2 models (:mod:`samr1.sam.sam2_build`).

``load_sam(kind, checkpoint=None, device="cpu")`` is the entry point; see :mod:`samr1.sam.build`.

The names below load on first use: importing a light submodule (``samr1.sam.prompts``, which the ops layer
reads) must not import segment-anything and torchvision through this package's ``__init__``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = ["DEFAULT_SAM", "SAM_KINDS", "SHIPPED_WEIGHTS", "WEIGHTS_URL", "CheckpointError", "DeviceError",
           "MissingPackageError", "ModelError", "RandomWeightsWarning", "SamSpec", "build_sam", "check_device",
           "check_kind", "checkpoint_digest", "has_random_weights", "load_sam", "load_weights", "model_id",
           "random_weights_message", "read_state_dict"]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from samr1.sam.build import (
        DEFAULT_SAM,
        SAM_KINDS,
        SHIPPED_WEIGHTS,
        WEIGHTS_URL,
        CheckpointError,
        DeviceError,
        MissingPackageError,
        ModelError,
        RandomWeightsWarning,
        SamSpec,
        build_sam,
        check_device,
        check_kind,
        checkpoint_digest,
        has_random_weights,
        load_sam,
        load_weights,
        model_id,
        random_weights_message,
        read_state_dict,
    )


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module 'samr1.sam' has no attribute {name!r}")
    value = getattr(importlib.import_module("samr1.sam.build"), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
