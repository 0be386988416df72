"""Building SAM 2 models (Meta's ``sam2`` package, the optional extra ``samr1[sam2]``).

Kinds are named after the configs the package ships: ``sam2_hiera_{t,s,b+,l}`` (SAM 2) and
``sam2.1_hiera_{t,s,b+,l}`` (SAM 2.1). The model is composed from that config with hydra exactly as
``sam2.build_sam.build_sam2`` does (including its post-processing overrides), so a model built here and
one built by the package agree weight for weight. Without a checkpoint the weights are random (a warning
says so); a checkpoint is a file in the official layout (``{"model": state_dict}``) or a bare state dict,
read with ``torch.load(weights_only=True)`` through the same reader as the SAM v1 kinds.

Shapes (upstream configs, 1024 frame): image embedding 256 x 64 x 64, high-res backbone features
32 x 256 x 256 and 64 x 128 x 128, low-res masks 256 x 256.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

import torch

__all__ = ["SAM2_KINDS", "SAM2_EXTRA_HINT", "is_sam2_kind", "is_sam2_model", "sam2_config", "load_sam2",
           "require_sam2"]

_SIZES = ("t", "s", "b+", "l")
# kind -> config name inside the sam2 package (hydra's search path is the package, see sam2/__init__.py)
SAM2_KINDS: dict[str, str] = {
    **{f"sam2_hiera_{s}": f"configs/sam2/sam2_hiera_{s}.yaml" for s in _SIZES},
    **{f"sam2.1_hiera_{s}": f"configs/sam2.1/sam2.1_hiera_{s}.yaml" for s in _SIZES},
}

SAM2_EXTRA_HINT = "SAM 2 kinds need the sam2 extra: SAM2_BUILD_CUDA=0 pip install 'samr1[sam2]'"

# What build_sam2(apply_postprocessing=True) adds: only changes single-mask outputs (multimask_output=False),
# kept so that a model from here equals the package's own.
_POSTPROCESSING_OVERRIDES = [
    "++model.sam_mask_decoder_extra_args.dynamic_multimask_via_stability=true",
    "++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_delta=0.05",
    "++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_thresh=0.98",
]


def is_sam2_kind(kind: object) -> bool:
    """True for the SAM 2 kind names (whether or not the extra is installed)."""
    return isinstance(kind, str) and kind in SAM2_KINDS


def is_sam2_model(model: object) -> bool:
    """True for a ``sam2.modeling.sam2_base.SAM2Base`` (False when the extra is not installed)."""
    if "sam2" not in sys.modules:  # no SAM 2 model can exist yet; do not import sam2 (it initialises hydra)
        return False
    try:
        from sam2.modeling.sam2_base import SAM2Base
    except ImportError:
        return False
    return isinstance(model, SAM2Base)


def require_sam2() -> None:
    """Import the ``sam2`` package or raise :class:`samr1.sam.build.MissingPackageError` (an ``ImportError`` and a
    ``ModelError``) with one line naming the extra."""
    from samr1.sam.build import MissingPackageError

    try:
        import sam2  # noqa: F401  (initialises hydra's config search path on import)
        from sam2.modeling.sam2_base import SAM2Base  # noqa: F401
    except ImportError as exc:
        raise MissingPackageError(f"{SAM2_EXTRA_HINT} (import failed: {exc})", name="sam2") from None


def sam2_config(kind: str):
    """The resolved hydra config (an ``omegaconf.DictConfig``) of a SAM 2 kind."""
    require_sam2()
    from hydra import compose
    from omegaconf import OmegaConf

    cfg = compose(config_name=SAM2_KINDS[kind], overrides=list(_POSTPROCESSING_OVERRIDES))
    OmegaConf.resolve(cfg)
    return cfg


def _load_weights(model: torch.nn.Module, state: dict, path: str, kind: str) -> None:
    from samr1.sam import CheckpointError

    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shape_bad = [k for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or shape_bad:
        detail = (missing[:3] and f"missing keys {missing[:3]}") or (
            unexpected[:3] and f"unexpected keys {unexpected[:3]}") or (
            f"shape mismatch at {shape_bad[0]}: file {tuple(state[shape_bad[0]].shape)} vs model "
            f"{tuple(own[shape_bad[0]].shape)}")
        raise CheckpointError(f"SAM checkpoint {path} does not match kind {kind!r} ({detail}); SAM 2 checkpoints "
                              "hold {'model': state_dict} of the same config (sam2_hiera_* vs sam2.1_hiera_*)")
    model.load_state_dict(state, strict=True)


def load_sam2(kind: str, checkpoint: str | os.PathLike | None, device: torch.device, seed: int | None,
              read_state_dict: Callable[[str, str], dict], file_digest: Callable[[str], str]) -> torch.nn.Module:
    """Build the SAM 2 model of ``kind`` (see :data:`SAM2_KINDS`) on ``device``, in eval mode.

    Called by :func:`samr1.sam.load_sam` (which checks the device first and passes its checkpoint reader
    and file digest, so SAM v1 and SAM 2 files are read by the same safe code). Sets ``samr1_kind`` and
    ``samr1_model_id`` like the v1 kinds.

    Raises:
        ModelError: the ``sam2`` extra is not installed (one line saying how to install it).
        CheckpointError: missing, corrupt, unsafe or mismatched checkpoint.
    """
    from samr1.sam import CheckpointError

    require_sam2()
    if checkpoint is not None:
        checkpoint = os.fspath(checkpoint)
        if not os.path.exists(checkpoint):  # fail before building the model
            raise CheckpointError(f"SAM checkpoint not found: {checkpoint} (expected a {kind} checkpoint .pt file)")
        # read (and refuse an unsafe or corrupt file) before spending seconds on building the model
        state = read_state_dict(checkpoint, kind)
    from hydra.utils import instantiate

    cfg = sam2_config(kind)
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        model = instantiate(cfg.model, _recursive_=True)
    if checkpoint is not None:
        _load_weights(model, state, checkpoint, kind)
        model.samr1_model_id = f"{kind}:{file_digest(checkpoint)}"
    else:  # random weights: load_sam warns (RandomWeightsWarning)
        model.samr1_model_id = f"{kind}:random:seed={seed}" if seed is not None else None
    model.samr1_kind = kind
    return model.to(device).eval()
