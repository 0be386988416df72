"""Loading SAM models: upstream kinds through segment-anything's registry, plus small in-code kinds.

``load_sam("vit_b" | "vit_l" | "vit_h", checkpoint=PATH)`` builds the real upstream modules; without a
checkpoint the weights are random (a warning says so). ``load_sam("tiny")`` builds a small random ViT
encoder with SAM's standard prompt encoder and mask decoder and the same 256 x 64 x 64 embedding at the
1024 frame, for tests and CPU benches. Every model carries a ``model_id`` (see :func:`model_id`) that
keys caches and embedding stores.

Errors: :class:`ModelError` (unknown kind; its subclass :class:`CheckpointError` for a missing, corrupt,
unsafe or mismatched checkpoint file) and :class:`DeviceError` (a device that is not usable here, or a
runtime that cannot run on it). Checkpoints are read with ``torch.load(weights_only=True)``: a file that
holds anything but tensors (a pickle that would run code when loaded) is refused, never executed.
"""

from __future__ import annotations

import os
import pickle
import re
import warnings
from dataclasses import dataclass
from functools import partial
from typing import NoReturn

import torch
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

from samr1.hashing import file_digest, state_dict_digest

__all__ = ["load_sam", "build_sam", "model_id", "SamSpec", "SAM_KINDS", "SHIPPED_WEIGHTS", "DEFAULT_SAM",
           "WEIGHTS_URL", "ModelError", "CheckpointError", "DeviceError", "MissingPackageError",
           "RandomWeightsWarning", "check_kind", "check_device", "has_random_weights", "load_weights",
           "random_weights_message", "read_state_dict", "checkpoint_digest"]


class ModelError(ValueError):
    """A SAM model cannot be built or loaded (unknown kind, bad checkpoint); the message says which and why."""


class CheckpointError(ModelError):
    """A checkpoint file is missing, corrupt, unsafe or of another kind; the message names the file."""


class MissingPackageError(ImportError, ModelError):
    """A model needs an optional extra that is not installed (SAM 2 kinds need ``[sam2]``); the message names
    the pip command. An ``ImportError`` (what it is: the CLI exits 5, "missing optional package") that is also
    a :class:`ModelError` (the kind cannot be built here)."""


class RandomWeightsWarning(UserWarning):
    """A SAM model was built with random weights: its masks, IoUs and rewards are meaningless."""


class DeviceError(RuntimeError):
    """A device is not usable here (no CUDA GPU, index out of range, a runtime without its GPU provider).

    The message names the device and says how to fix it (another ``device``, the package to install)."""


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
    # Trained on synthetic shapes (samr1/shapes/: scenes.py, trainer train.py, which builds this very spec);
    # weights ship in samr1/assets/. 384 frame, patch 16: 128 x 24 x 24 embedding, 96 x 96 low-res masks
    # (one logit per 4 frame pixels). Why so small: the training budget was 2 hours of a 2-core CPU.
    # Measured (1 thread, compute only, 6 scenes x 5 prompts): 0.47 s/step at a 256 frame (16 x 16 grid),
    # 1.02 s at 384, 2.64 s at 256 with patch 8; 8 scenes x 4 prompts with SAM's 256-d prompts / decoder
    # (5.6 M parameters) took 8.4 s at patch 8. The frame sets the resolution ceiling (ground truth
    # area-downsampled to the low-res grid and upsampled back, 100 held-out scenes, 347 objects;
    # `samr1 shapes-check --ceiling 256 384`): 0.925 mean IoU at 64 x 64 (0.84 on objects < 1 % of the
    # image), 0.960 at 96 x 96 (0.92 on them). The 256 frame model (13.9k steps, 112 min) reached held-out
    # box IoU 0.795; the 384 one, fewer but better-resolved steps, 0.811 and ships (run log:
    # samr1/shapes/README.md).
    "tiny-shapes": SamSpec(128, 4, 4, (1, 3), img_size=384, patch_size=16, window_size=8, prompt_embed_dim=128,
                           decoder_mlp_dim=512),
}

# The SAM every samr1 command uses when --sam is not given: the small trained one that ships in the package,
# so that nothing runs on random weights unasked (it knows synthetic shapes only; real images need vit_h with
# its checkpoint).
DEFAULT_SAM = "tiny-shapes"

# Where the official weights are published (nothing is downloaded by samr1).
WEIGHTS_URL = {
    "sam": "https://github.com/facebookresearch/segment-anything#model-checkpoints",
    "sam2": "https://github.com/facebookresearch/sam2#download-checkpoints",
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


def check_kind(kind: str) -> SamSpec:
    """The :class:`SamSpec` of ``kind``; raises :class:`ModelError` listing the known kinds otherwise.

    This is the one check of a kind name: :func:`load_sam` and the CLI (up front, before any data is read)
    both call it, so a new kind is added to :data:`SAM_KINDS` (or accepted here) and nowhere else. A near
    miss ("vit-h", "VIT_H", "sam2.1-hiera-t") is named in the error as the kind meant."""
    from samr1.sam.sam2_build import SAM2_KINDS, is_sam2_kind, require_sam2

    if is_sam2_kind(kind):  # SAM 2 kinds have no SamSpec (their configs ship with the sam2 extra)
        require_sam2()  # without the extra: one line naming it, before any data is read
        return None  # type: ignore[return-value]
    if not isinstance(kind, str) or kind not in SAM_KINDS:
        known = sorted(SAM_KINDS) + sorted(SAM2_KINDS)
        hint = _did_you_mean(kind, known) if isinstance(kind, str) else ""
        raise ModelError(f"unknown SAM kind {kind!r}{hint}; choose one of {known}")
    return SAM_KINDS[kind]


def _did_you_mean(kind: str, known: list[str]) -> str:
    """``" (did you mean 'vit_h'?)"`` for a near miss of a known kind (case, '-' for '_', a typo), else ``""``."""
    import difflib

    def norm(k: str) -> str:
        return k.lower().replace("-", "_").replace(" ", "_")

    by_norm = {norm(k): k for k in known}
    if norm(kind) in by_norm:
        return f" (did you mean {by_norm[norm(kind)]!r}?)"
    close = difflib.get_close_matches(norm(kind), list(by_norm), n=1, cutoff=0.75)
    return f" (did you mean {by_norm[close[0]]!r}?)" if close else ""


def has_random_weights(kind: str, checkpoint: str | os.PathLike | None) -> bool:
    """Whether ``load_sam(kind, checkpoint)`` builds a model with random weights: no checkpoint given and none
    shipped for the kind (``"tiny"`` always; ``vit_*`` and SAM 2 kinds without their file)."""
    return checkpoint is None and kind not in SHIPPED_WEIGHTS


def random_weights_message(kind: str) -> str:
    """One line saying that SAM ``kind`` has random weights, how to give real ones and where to get them."""
    from samr1.sam.sam2_build import is_sam2_kind

    url = WEIGHTS_URL["sam2" if is_sam2_kind(kind) else "sam"]
    if kind == "tiny":
        what, fix = " (a test and benchmark model)", f"for real masks use --sam vit_h --sam-checkpoint PATH (weights: {url})"
    else:
        what, fix = "", (f"give its weights with --sam-checkpoint PATH (in Python: load_sam({kind!r}, checkpoint=PATH); "
                         f"official checkpoints: {url})")
    return f"SAM {kind!r} has random weights{what}: its masks, IoUs and rewards are meaningless; {fix}"


def _no_cuda_reason() -> str:
    if torch.version.cuda is None:
        return f"this torch build ({torch.__version__}) has no CUDA support"
    return (f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no GPU; check the driver (nvidia-smi) "
            "and CUDA_VISIBLE_DEVICES")


def check_device(device: str | torch.device) -> torch.device:
    """``device`` as a ``torch.device`` after checking that it is usable here.

    Checked up front (before any model is built) so that a missing GPU is one clear error rather than
    torch's "Torch not compiled with CUDA enabled" from deep inside ``.to(device)``.

    Raises:
        DeviceError: an unparseable device string, CUDA without a visible GPU, a CUDA index past the
            device count, or MPS where it is not available; the message says what to use instead.
    """
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [""])[0]
        raise DeviceError(f"device {device!r} is not a torch device ({first}); use cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device {device!r} asks for a CUDA GPU but none is usable here "
                              f"({_no_cuda_reason()}); use device 'cpu'")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise DeviceError(f"device {device!r}: only {count} CUDA GPU(s) are visible (cuda:0..cuda:{count - 1})")
    elif dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise DeviceError(f"device {device!r}: MPS is not available here; use device 'cpu'")
    return dev


# torch's weights_only refusal names the offending global on a line like
# "WeightsUnpickler error: Unsupported global: GLOBAL io.open was not an allowed global by default. ..."
_UNSAFE_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")
# The weights-only unpickler's objections to a callable or class (what a code-running pickle needs), as
# opposed to bytes that are no pickle at all ("Unsupported operand ...", "pop from empty list").
_UNSAFE_MARKERS = ("Unsupported global", "unsupported GLOBAL", "call reduce", "create new object", "Can only build")


def _weights_only_detail(message: str) -> str:
    """What torch's weights-only unpickler objected to, without the advice around it (one line)."""
    m = re.search(r"WeightsUnpickler error:(.*?)(?:Check the documentation of torch\.load|$)", message, re.S)
    return " ".join((m.group(1) if m else message).split())


def _corrupt(path: str, kind: str, exc: BaseException, detail: str | None = None) -> NoReturn:
    # torch's own message can run to many lines; its first line says what broke
    first = (detail if detail is not None else (str(exc).strip().splitlines() or [""])[0])[:160]
    raise CheckpointError(
        f"SAM checkpoint {path} could not be read ({type(exc).__name__}: {first}); "
        f"expected a {kind} state dict saved with torch.save"
    ) from None


def read_state_dict(path: str, kind: str) -> dict:
    """The tensors of a checkpoint file (a state dict, or ``{"model": state_dict}``), read with
    ``torch.load(weights_only=True)``: a pickle that would run code is refused, never executed.

    Raises:
        CheckpointError: missing, corrupt or unsafe file (the message names it and says why).
    """
    if not os.path.exists(path):
        raise CheckpointError(f"SAM checkpoint not found: {path} (expected a {kind} state dict .pth file)")
    if os.path.isdir(path):
        raise CheckpointError(f"SAM checkpoint {path} is a directory; give the .pth file inside it")
    try:
        # weights_only=True: the unpickler accepts tensors and plain containers only, so a crafted file
        # cannot run code here. Never relax this: checkpoints come from the internet.
        with warnings.catch_warnings():
            # torch warns about the pickle protocol of the very files it then refuses; the error says it all
            warnings.simplefilter("ignore", UserWarning)
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch wraps the refusal in many lines of advice that end in "load with weights_only=False", which
        # would run whatever the file holds; report only what its restricted unpickler found.
        inner = _weights_only_detail(str(exc))
        if not any(m in inner for m in _UNSAFE_MARKERS):
            _corrupt(path, kind, exc, detail=inner)  # not a state-dict pickle (truncated, random bytes, ...)
        found = _UNSAFE_GLOBAL.search(inner)
        what = f"the Python object {found.group(1)}" if found else "Python objects other than tensors"
        raise CheckpointError(
            f"SAM checkpoint {path} was refused: it holds {what}, which could run code when loaded; "
            f"expected a {kind} state dict of tensors (torch.save(model.state_dict(), path))"
        ) from None
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a corrupt file
        _corrupt(path, kind, exc)
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


def load_weights(sam: Sam, path: str, kind: str) -> None:
    """Load the checkpoint at ``path`` into ``sam`` (strict: every key present, every shape equal).

    Raises:
        CheckpointError: unreadable or unsafe file, or weights of another architecture (the message names
        the first missing / unexpected / mismatched key and, when it can tell, which kind the file is).
    """
    state = read_state_dict(path, kind)
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


def checkpoint_digest(path: str) -> str:
    """blake2b-96 hex digest of a checkpoint file's bytes (part of the model id of loaded weights)."""
    return file_digest(path, "blake2b", digest_size=12)


def load_sam(kind: str = DEFAULT_SAM, checkpoint: str | os.PathLike | None = None,
             device: str | torch.device = "cpu", seed: int | None = 0, *, warn_random: bool = True) -> Sam:
    """Build a SAM model of ``kind`` and load ``checkpoint`` when given.

    Args:
        kind: "vit_b", "vit_l", "vit_h" (upstream architectures), "tiny" (small random encoder) or
            "tiny-shapes" (small SAM trained on synthetic shapes; its shipped fp16 weights load by default).
        checkpoint: path to a state dict (the upstream ``sam_vit_*.pth`` files, :data:`WEIGHTS_URL`). Without
            it the weights are random ("tiny-shapes" loads its shipped file instead).
        device: where the model lives.
        seed: seeds the random initialisation so that random models are reproducible (None: unseeded).
        warn_random: warn (:class:`RandomWeightsWarning`, :func:`random_weights_message`) when the weights
            are random; benches and tests that choose a random model on purpose pass False.

    Returns:
        ``segment_anything.modeling.Sam`` in eval mode with ``samr1_kind`` and ``samr1_model_id`` set.

    Raises:
        ModelError: unknown kind. CheckpointError (a ModelError): missing, corrupt, unsafe (a pickle that is
        not a state dict of tensors) or mismatched checkpoint. DeviceError: ``device`` is not usable here.
        All three are checked before the model is built.
    """
    from samr1.sam.sam2_build import is_sam2_kind, load_sam2

    if is_sam2_kind(kind):  # SAM 2 kinds (optional extra): same device check and safe checkpoint reader
        model = load_sam2(kind, checkpoint, check_device(device), seed, read_state_dict, checkpoint_digest)
        if checkpoint is None and warn_random:
            warnings.warn(RandomWeightsWarning(random_weights_message(kind)), stacklevel=2)
        return model
    spec = check_kind(kind)
    device = check_device(device)
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
        load_weights(sam, checkpoint, kind)
        sam.samr1_model_id = f"{kind}:{checkpoint_digest(checkpoint)}"
    else:
        if warn_random:
            warnings.warn(RandomWeightsWarning(random_weights_message(kind)), stacklevel=2)
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
    mid = f"{getattr(sam, 'samr1_kind', 'sam')}:{state_dict_digest(sam.state_dict(), as_float32=True)}"
    sam.samr1_model_id = mid
    return mid
