"""The SAM runtime: build/load (:mod:`samr1.sam.build`), encoder backends and exports
(:mod:`samr1.sam.encoder`), prompt packing (:mod:`samr1.sam.prompts`), the batched decoder
(:mod:`samr1.sam.decoder`) and SAM 2 models (:mod:`samr1.sam.sam2_build`).

``load_sam(kind, checkpoint=None, device="cpu")`` is the entry point; see :mod:`samr1.sam.build`.
"""

from samr1.sam.build import (
    SAM_KINDS,
    SHIPPED_WEIGHTS,
    CheckpointError,
    DeviceError,
    ModelError,
    SamSpec,
    build_sam,
    check_device,
    check_kind,
    checkpoint_digest,
    load_sam,
    load_weights,
    model_id,
    read_state_dict,
)

__all__ = ["SAM_KINDS", "SHIPPED_WEIGHTS", "CheckpointError", "DeviceError", "ModelError", "SamSpec", "build_sam",
           "check_device", "check_kind", "checkpoint_digest", "load_sam", "load_weights", "model_id",
           "read_state_dict"]
