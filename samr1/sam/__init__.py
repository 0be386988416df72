"""Loading SAM models: upstream kinds through segment-anything's registry, plus small in-code kinds.

``load_sam("vit_b" | "vit_l" | "vit_h", checkpoint=PATH)`` builds the real upstream modules; without a
checkpoint the weights are random (a warning says so). ``load_sam("tiny")`` builds a small random ViT
encoder with SAM's standard prompt encoder and mask decoder and the same 256 x 64 x 64 embedding at the
1024 frame, for tests and CPU benches. Every model carries a ``model_id`` (see :func:`model_id`) that
keys caches and embedding stores.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass
from functools import partial

import torch
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

__all__ = ["load_sam", "build_sam", "model_id", "SamSpec", "SAM_KINDS", "CheckpointError"]


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupt or of another kind; the message names the file."""


@dataclass(frozen=True)
class SamSpec:
    """Architecture of a SAM model. Upstream kinds use 1024 frame, patch 16, 256-d prompts."""

    encoder_embed_dim: int
    encoder_depth: int
    encoder_num_heads: int
    encoder_global_attn_indexes: tuple[int, ...]
    img_size: int = 1024
    patch_size: int = 16
    window_size: int = 14
    prompt_embed_dim: int = 256
    decoder_mlp_dim: int = 2048
    decoder_depth: int = 2
    decoder_heads: int = 8


SAM_KINDS: dict[str, SamSpec] = {
    "vit_h": SamSpec(1280, 32, 16, (7, 15, 23, 31)),
    "vit_l": SamSpec(1024, 24, 16, (5, 11, 17, 23)),
    "vit_b": SamSpec(768, 12, 12, (2, 5, 8, 11)),
    # Small random encoder, same 256 x 64 x 64 output: ~0.15 s per image on the 2-core CPU instead of 18 s.
    "tiny": SamSpec(64, 2, 2, (1,), window_size=8),
    # Trained on samr1.scenes synthetic shapes (samr1/sam/train_sam.py); weights ship in samr1/assets/.
    # 384 frame, patch 16: 128 x 24 x 24 embedding, 96 x 96 low-res masks.
    "tiny-shapes": SamSpec(128, 4, 4, (1, 3), img_size=384, patch_size=16, window_size=8, prompt_embed_dim=128,
                           decoder_mlp_dim=512),
}

# Kinds whose default checkpoint ships inside the package (loaded through the same path as a user file).
SHIPPED_WEIGHTS: dict[str, str] = {
    "tiny-shapes": os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets",
                                "tiny_shapes.pth"),
}


def build_sam(spec: SamSpec) -> Sam:
    """Build a SAM model from real segment-anything modules with random weights, in eval mode."""
    emb = spec.img_size // spec.patch_size
    sam = Sam(
        image_encoder=ImageEncoderViT(
            depth=spec.encoder_depth,
            embed_dim=spec.encoder_embed_dim,
            img_size=spec.img_size,
            mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=spec.encoder_num_heads,
            patch_size=spec.patch_size,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=spec.encoder_global_attn_indexes,
            window_size=spec.window_size,
            out_chans=spec.prompt_embed_dim,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=spec.prompt_embed_dim,
            image_embedding_size=(emb, emb),
            input_image_size=(spec.img_size, spec.img_size),
            mask_in_chans=16,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(
                depth=spec.decoder_depth,
                embedding_dim=spec.prompt_embed_dim,
                mlp_dim=spec.decoder_mlp_dim,
                num_heads=spec.decoder_heads,
            ),
            transformer_dim=spec.prompt_embed_dim,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    return sam.eval()


def _read_state_dict(path: str, kind: str) -> dict:
    if not os.path.exists(path):
        raise CheckpointError(f"SAM checkpoint not found: {path} (expected a {kind} state dict .pth file)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a corrupt file
        # torch's own message runs to many lines of advice about weights_only; its first line says what broke
        first = (str(exc).strip().splitlines() or [""])[0][:160]
        raise CheckpointError(
            f"SAM checkpoint {path} could not be read ({type(exc).__name__}: {first}); "
            f"expected a {kind} state dict saved with torch.save"
        ) from None
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]  # training checkpoints that wrap the state dict
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"SAM checkpoint {path} does not hold a state dict of tensors (expected {kind})")
    return obj


def _guess_kind(state: dict) -> str | None:
    w = state.get("image_encoder.patch_embed.proj.weight")
    if w is None:
        return None
    for name, spec in SAM_KINDS.items():
        if w.shape[0] == spec.encoder_embed_dim:
            return name
    return f"an unknown kind with encoder width {w.shape[0]}"


def _load_weights(sam: Sam, path: str, kind: str) -> None:
    state = _read_state_dict(path, kind)
    own = sam.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shape_bad = [k for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or shape_bad:
        guess = _guess_kind(state)
        hint = f"; it looks like {guess}" if guess and guess != kind else ""
        detail = (missing[:3] and f"missing keys {missing[:3]}") or (
            unexpected[:3] and f"unexpected keys {unexpected[:3]}") or (
            f"shape mismatch at {shape_bad[0]}: file {tuple(state[shape_bad[0]].shape)} vs model "
            f"{tuple(own[shape_bad[0]].shape)}"
        )
        raise CheckpointError(f"SAM checkpoint {path} does not match kind {kind!r} ({detail}){hint}")
    sam.load_state_dict(state, strict=True)


def _file_digest(path: str) -> str:
    h = hashlib.blake2b(digest_size=12)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def load_sam(kind: str = "tiny", checkpoint: str | os.PathLike | None = None, device: str | torch.device = "cpu",
             seed: int | None = 0) -> Sam:
    """Build a SAM model of ``kind`` and load ``checkpoint`` when given.

    Args:
        kind: "vit_b", "vit_l", "vit_h" (upstream architectures), "tiny" (small random encoder) or
            "tiny-shapes" (small SAM trained on synthetic shapes; its shipped fp16 weights load by default).
        checkpoint: path to a state dict (the upstream ``sam_vit_*.pth`` files). Without it the weights
            are random and a warning says that masks will be meaningless (except "tiny", which is meant
            to be random).
        device: where the model lives.
        seed: seeds the random initialisation so that random models are reproducible (None: unseeded).

    Returns:
        ``segment_anything.modeling.Sam`` in eval mode with ``samr1_kind`` and ``samr1_model_id`` set.

    Raises:
        ValueError: unknown kind. CheckpointError: missing, corrupt or mismatched checkpoint.
    """
    if kind not in SAM_KINDS:
        raise ValueError(f"unknown SAM kind {kind!r}; choose one of {sorted(SAM_KINDS)}")
    spec = SAM_KINDS[kind]
    if checkpoint is None and kind in SHIPPED_WEIGHTS:
        checkpoint = SHIPPED_WEIGHTS[kind]
    if checkpoint is not None:
        checkpoint = os.fspath(checkpoint)
        if not os.path.exists(checkpoint):  # fail before spending seconds building a large model
            raise CheckpointError(f"SAM checkpoint not found: {checkpoint} (expected a {kind} state dict .pth file)")
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        sam = build_sam(spec)
    if checkpoint is not None:
        _load_weights(sam, checkpoint, kind)
        sam.samr1_model_id = f"{kind}:{_file_digest(checkpoint)}"
    else:
        if kind != "tiny":
            warnings.warn(
                f"SAM {kind} has random weights (no checkpoint given): masks are meaningless. "
                "Pass checkpoint=/path/to/sam_{kind}.pth for real segmentation.",
                UserWarning,
                stacklevel=2,
            )
        sam.samr1_model_id = f"{kind}:random:seed={seed}" if seed is not None else None
    sam.samr1_kind = kind
    return sam.to(device)


def model_id(sam: Sam) -> str:
    """A string that identifies the model's weights (keys caches and embedding stores).

    Models from :func:`load_sam` carry one; for any other ``Sam`` a digest of the weights is computed once
    and remembered on the object.
    """
    mid = getattr(sam, "samr1_model_id", None)
    if mid:
        return mid
    h = hashlib.blake2b(digest_size=12)
    for name, t in sorted(sam.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().float().cpu().contiguous().numpy().tobytes())
    mid = f"{getattr(sam, 'samr1_kind', 'sam')}:{h.hexdigest()}"
    sam.samr1_model_id = mid
    return mid
