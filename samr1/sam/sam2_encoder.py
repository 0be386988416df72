"""SAM 2 image-encoder backends behind one interface: torch (fp32 / bf16 / fp16 autocast, optionally
compiled), ONNX Runtime (CPU or CUDA) and TensorRT (fp16 engine), on the SAM v1 encoder's plumbing
(:mod:`samr1.sam.encoder`: the artefact cache, ONNX Runtime providers, the TensorRT program).

Each backend computes what ``SAM2ImagePredictor.set_image`` keeps for an image, as one module
(:class:`Sam2ImageFeatures`): the Hiera backbone + FPN neck (``SAM2Base.forward_image``, which applies the
mask decoder's ``conv_s0`` / ``conv_s1`` to the two high-resolution levels), flattened and un-flattened as
``_prepare_backbone_features`` and the predictor do, with ``no_mem_embed`` added to the lowest-resolution
map. Outputs, highest resolution first (the predictor's ``high_res_feats`` then ``image_embed``)::

    high_res_s0:  B x 32 x 4s x 4s   (256 x 256 for the 1024 frame)
    high_res_s1:  B x 64 x 2s x 2s   (128 x 128)
    image_embed:  B x C  x  s x  s   (C = 256, s = 64)

all float32, ``s = sam.sam_image_embedding_size``. The input is ``B x 3 x F x F`` float32, the image
preprocessed as ``SAM2Transforms`` does (``F = sam.image_size``: the image squashed to the square frame,
aspect ratio NOT kept, scaled to [0, 1] and normalised with the ImageNet mean / std).

Usage::

    enc = make_sam2_encoder(sam, backend="onnx", cache_dir=None)   # exported and cached on first use
    hr0, hr1, embed = enc.encode([img])                              # each B x ... float32 on enc.device

Artefacts: the ONNX export (``<cache>/onnx/<model>-<digest>/sam2_encoder.onnx`` + ``.data``, keyed by the
model id, input shape, opset and the torch / onnx / onnxscript / onnxruntime / sam2 versions) and the
TensorRT engine built from it (keyed additionally by precision, profile and GPU); see
:mod:`samr1.artifacts`. The export uses torch's dynamo exporter with a dynamic batch dimension (Hiera-T
exports in ~1 minute on a 2-core CPU; the TorchScript exporter also works at batch 1).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Any

import torch

import samr1.artifacts as artifacts
from samr1.io import load_image
from samr1.sam import check_device
from samr1.sam import model_id as sam_model_id
from samr1.sam.encoder import (
    ONNX_OPSET,
    TensorRTProgram,
    TorchModuleRunner,
    check_encoder_options,
    export_onnx_module,
    open_onnx_session,
    run_onnx_session,
    tensorrt_target,
)

__all__ = ["BACKENDS", "OUTPUT_NAMES", "Sam2ImageFeatures", "Sam2ImageEncoder", "TorchSam2Encoder",
           "OnnxSam2Encoder", "TensorRTSam2Encoder", "make_sam2_encoder", "export_sam2_onnx"]

BACKENDS = ("torch", "onnx", "tensorrt")
OUTPUT_NAMES = ("high_res_s0", "high_res_s1", "image_embed")
_ONNX_FILE = "sam2_encoder.onnx"


def _check_sam2(sam: Any) -> None:
    from samr1.sam.sam2_build import is_sam2_model

    if not is_sam2_model(sam):
        raise TypeError(f"expected a SAM 2 model (sam2 SAM2Base, see samr1.sam.load_sam('sam2.1_hiera_t')), "
                        f"got {type(sam).__name__}; SAM v1 models use samr1.sam.encoder.make_encoder")
    if not sam.use_high_res_features_in_sam or sam.num_feature_levels != 3:
        raise ValueError("this SAM 2 model does not use high-resolution features in its mask decoder "
                         f"(use_high_res_features_in_sam={sam.use_high_res_features_in_sam}, num_feature_levels="
                         f"{sam.num_feature_levels}); the encoder backends support the released configs only")


def _model_device(sam: Any) -> torch.device:
    return next(sam.parameters()).device


class Sam2ImageFeatures(torch.nn.Module):
    """``SAM2ImagePredictor.set_image``'s features as one module (what is exported to ONNX).

    ``forward(image)``: ``B x 3 x F x F`` float32 (preprocessed) -> ``(high_res_s0, high_res_s1, image_embed)``,
    shapes in the module docstring. Holds a reference to ``sam``; runs no decoder.
    """

    def __init__(self, sam: Any) -> None:
        super().__init__()
        self.sam = sam

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        backbone_out = self.sam.forward_image(image)  # conv_s0 / conv_s1 applied to the two high-res levels
        _, vision_feats, _, feat_sizes = self.sam._prepare_backbone_features(backbone_out)
        if self.sam.directly_add_no_mem_embed:  # as the predictor does for single images
            vision_feats[-1] = vision_feats[-1] + self.sam.no_mem_embed
        b = image.shape[0]
        # HW x B x C -> B x C x H x W (the predictor's permute + view, for any batch)
        hr0, hr1, embed = (f.permute(1, 2, 0).reshape(b, -1, h, w) for f, (h, w) in zip(vision_feats, feat_sizes,
                                                                                          strict=True))
        return hr0, hr1, embed


class Sam2ImageEncoder:
    """Common part of the SAM 2 backends: validation, preprocessing, chunking by ``max_batch``, placement.

    Attributes:
        name: backend and precision, e.g. ``"torch-fp32"``, ``"onnxruntime-cpu"``, ``"tensorrt-fp16"``.
        model_id: :func:`samr1.sam.model_id` of the model (keys the artefacts).
        device: where ``encode`` returns features.
        frame: model frame ``F`` (``sam.image_size``, 1024 upstream).
        max_batch: images per backend call; ``encode`` splits longer lists.
        feature_shapes: ``(C, h, w)`` of each output for one image, in :data:`OUTPUT_NAMES` order.
        artifact: the cached artefact the backend runs from (None for torch).

    Backends are serialised by a lock (``encode`` from several threads is safe): the TensorRT execution
    context is not thread-safe.
    """

    name: str = "abstract"

    def __init__(self, sam: Any, device: torch.device, max_batch: int) -> None:
        _check_sam2(sam)
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
            raise ValueError(f"max_batch must be a positive int (images per backend call), got {max_batch!r}")
        from sam2.utils.transforms import SAM2Transforms

        self.sam = sam
        self.device = torch.device(device)
        self.max_batch = max_batch
        self.frame = int(sam.image_size)
        s = int(sam.sam_image_embedding_size)
        dec = sam.sam_mask_decoder
        self.feature_shapes = [(int(dec.conv_s0.out_channels), 4 * s, 4 * s),
                               (int(dec.conv_s1.out_channels), 2 * s, 2 * s),
                               (int(sam.sam_prompt_encoder.embed_dim), s, s)]
        self.model_id = sam_model_id(sam)
        self._transforms = SAM2Transforms(resolution=self.frame, mask_threshold=0.0)
        self.artifact: artifacts.Artifact | None = None
        self._lock = threading.Lock()

    def preprocess(self, images: Sequence[Any]) -> torch.Tensor:
        """Images -> ``B x 3 x F x F`` float32 on ``device``, exactly as ``SAM2ImagePredictor.set_image``.

        Each image may be an ``H x W x 3`` uint8 RGB array, a PIL image or a path.
        """
        arrays = [load_image(img, field=f"images[{i}]") for i, img in enumerate(images)]
        if not arrays:
            return torch.empty((0, 3, self.frame, self.frame), dtype=torch.float32, device=self.device)
        return torch.stack([self._transforms(a) for a in arrays]).to(self.device, torch.float32)

    def encode(self, images: Sequence[Any]) -> list[torch.Tensor]:
        """``[high_res_s0, high_res_s1, image_embed]`` of ``images`` (each ``B x C x h x w`` float32 on
        ``device``, in the order given); lists longer than ``max_batch`` run in chunks."""
        images = list(images)
        outs = [torch.empty((len(images), *s), dtype=torch.float32, device=self.device) for s in self.feature_shapes]
        for start in range(0, len(images), self.max_batch):
            feats = self.encode_preprocessed(self.preprocess(images[start:start + self.max_batch]))
            for out, f in zip(outs, feats, strict=True):
                out[start:start + len(f)] = f
        return outs

    def encode_preprocessed(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Run the backend on a preprocessed ``B x 3 x F x F`` float32 batch (B <= max_batch); the three
        outputs as float32 on ``device``."""
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[2] != self.frame or x.shape[3] != self.frame:
            raise ValueError(f"expected a B x 3 x {self.frame} x {self.frame} batch, got {tuple(x.shape)}")
        if x.shape[0] > self.max_batch:
            raise ValueError(f"batch of {x.shape[0]} exceeds max_batch={self.max_batch}; use encode() to chunk")
        if x.shape[0] == 0:
            return [torch.empty((0, *s), dtype=torch.float32, device=self.device) for s in self.feature_shapes]
        with self._lock:
            feats = self._run(x.to(self.device, torch.float32).contiguous())
        return [f.to(self.device, torch.float32) for f in feats]

    def _run(self, x: torch.Tensor) -> list[torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, model_id={self.model_id!r}, device={self.device})"


class TorchSam2Encoder(Sam2ImageEncoder):
    """The sam2 modules themselves (float32 = the predictor's features; bf16 / fp16 autocast and
    ``torch.compile`` as for SAM v1, see :class:`samr1.sam.encoder.TorchModuleRunner`)."""

    def __init__(self, sam: Any, device: torch.device, dtype: torch.dtype, compile: bool, max_batch: int) -> None:
        super().__init__(sam, device, max_batch)
        self._runner = TorchModuleRunner(Sam2ImageFeatures(sam), _model_device(sam), self.device, dtype, compile,
                                         max_batch)
        self.dtype, self.compiled, self.name = dtype, self._runner.compiled, self._runner.name

    def _run(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [f.float() for f in self._runner(x)]


def _onnx_key(sam: Any, opset: int) -> dict[str, Any]:
    from importlib import metadata

    # Device-independent (float32 initialisers); library versions so that an upgrade re-exports. sam2 has no
    # __version__, so its distribution version is recorded.
    frame = int(sam.image_size)
    try:
        sam2_version = metadata.version("sam2")
    except metadata.PackageNotFoundError:
        sam2_version = None
    return {
        "artifact": "sam2-image-features-onnx",
        "model_id": sam_model_id(sam),
        "input": ["batch", 3, frame, frame],
        "input_dtype": "float32",
        "outputs": list(OUTPUT_NAMES),
        "no_mem_embed": bool(sam.directly_add_no_mem_embed),
        "opset": int(opset),
        "external_data": True,
        **artifacts.library_versions("torch", "onnx", "onnxscript", "onnxruntime"),
        "sam2": sam2_version,
    }


def _export_into(sam: Any, folder: Any, opset: int) -> None:
    export_onnx_module(Sam2ImageFeatures(sam), int(sam.image_size), folder / _ONNX_FILE, OUTPUT_NAMES, opset)


def export_sam2_onnx(sam: Any, cache_dir: str | os.PathLike | None = None,
                     opset: int = ONNX_OPSET) -> artifacts.Artifact:
    """The cached ONNX export of :class:`Sam2ImageFeatures` for ``sam`` (exported now when missing, stale or
    corrupt). ``artifact.file("sam2_encoder.onnx")`` takes ``image``: ``B x 3 x F x F`` float32 (any B >= 1)
    and gives :data:`OUTPUT_NAMES` in order."""
    _check_sam2(sam)
    art, _ = artifacts.get_or_build("onnx", _onnx_key(sam, opset), lambda d: _export_into(sam, d, opset),
                                    cache_dir=cache_dir)
    return art


class OnnxSam2Encoder(Sam2ImageEncoder):
    """ONNX Runtime on the cached export (CUDA provider with I/O bound to torch memory when ``device`` is CUDA,
    the CPU provider otherwise; ``cpu_fallback`` as for SAM v1, see
    :func:`samr1.sam.encoder.select_ort_providers`)."""

    def __init__(self, sam: Any, device: torch.device, cache_dir: str | os.PathLike | None, max_batch: int,
                 opset: int = ONNX_OPSET, cpu_fallback: bool = False) -> None:
        super().__init__(sam, device, max_batch)
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.artifact, self._session, self._provider = open_onnx_session(
            _onnx_key(sam, opset), lambda d: _export_into(sam, d, opset), self.device, cache_dir=cache_dir,
            cpu_fallback=cpu_fallback, file=_ONNX_FILE)
        self.name = f"onnxruntime-{self._provider}"
        got = [o.name for o in self._session.get_outputs()]
        if got != list(OUTPUT_NAMES):  # the key pins the names; a hand-edited file would be caught here
            raise RuntimeError(f"{self.artifact.file(_ONNX_FILE)} has outputs {got}, expected {list(OUTPUT_NAMES)}")

    def _run(self, x: torch.Tensor) -> list[torch.Tensor]:
        return run_onnx_session(self._session, self._provider, x, [(x.shape[0], *s) for s in self.feature_shapes])


class TensorRTSam2Encoder(Sam2ImageEncoder):
    """A TensorRT engine built from the cached ONNX export (fp16 by default, profile batch 1..max_batch), run
    by :class:`samr1.sam.encoder.TensorRTProgram` on torch CUDA buffers and torch's current stream."""

    def __init__(self, sam: Any, device: torch.device, dtype: torch.dtype, cache_dir: str | os.PathLike | None,
                 max_batch: int, workspace_bytes: int | None = None) -> None:
        dev, fp16 = tensorrt_target(device, dtype)  # a missing TensorRT/CUDA gets the install hint first
        super().__init__(sam, dev, max_batch)
        self.name = f"tensorrt-{'fp16' if fp16 else 'fp32'}"
        self._program = TensorRTProgram(
            export_sam2_onnx(sam, cache_dir=cache_dir), _ONNX_FILE, "sam2-image-features-tensorrt", self.model_id,
            OUTPUT_NAMES, self.device, self.frame, max_batch, fp16, cache_dir, workspace_bytes)
        self.artifact = self._program.artifact

    def _run(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self._program.run(x)


def make_sam2_encoder(sam: Any, backend: str = "torch", device: str | torch.device | None = None, dtype: Any = None,
                      compile: bool = False, cache_dir: str | os.PathLike | None = None, max_batch: int = 8,
                      cpu_fallback: bool = False) -> Sam2ImageEncoder:
    """Build an image encoder for a SAM 2 model; the options are those of
    :func:`samr1.sam.encoder.make_encoder` (same defaults, same rules).

    Args:
        sam: a ``sam2`` ``SAM2Base`` (see :func:`samr1.sam.load_sam`); not modified.
        backend: "torch" (the reference: ``SAM2ImagePredictor.set_image``'s features), "onnx" or "tensorrt".
        device: where features are returned (torch: where the model must already be). Default: the model's
            device for torch and onnx, the current CUDA device for tensorrt.
        dtype: torch: float32 (default), bfloat16 or float16 (autocast; float16 needs CUDA); onnx: float32;
            tensorrt: float16 (default) or float32.
        compile: torch only: ``torch.compile`` the feature module.
        cache_dir: artefact cache root (default ``$SAMR1_CACHE_DIR`` or ``~/.cache/samr1``).
        max_batch: images per backend call (also the TensorRT profile's largest batch).
        cpu_fallback: onnx only: run ONNX Runtime on the CPU when ``device`` is CUDA but it has no working
            CUDA provider, instead of raising.

    Raises:
        TypeError: ``sam`` is not a SAM 2 model.
        ValueError: unknown backend or an option the backend does not support (the message says which).
        ImportError: the backend's library is missing (the message gives the install command).
        DeviceError: onnx on a CUDA device without a working CUDAExecutionProvider (and no ``cpu_fallback``).
    """
    _check_sam2(sam)
    dtype = check_encoder_options(backend, dtype, compile, cpu_fallback)
    if backend == "tensorrt":
        dev = torch.device(device) if device is not None else torch.device("cuda")
        return TensorRTSam2Encoder(sam, dev, dtype, cache_dir, max_batch)
    dev = check_device(device) if device is not None else _model_device(sam)
    if backend == "torch":
        return TorchSam2Encoder(sam, dev, dtype, compile, max_batch)
    return OnnxSam2Encoder(sam, dev, cache_dir, max_batch, cpu_fallback=cpu_fallback)
