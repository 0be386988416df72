"""``SamEngineConfig``: the settings of a reward engine, with help text and validation.

``SamEngine(sam, config=SamEngineConfig(...))`` and ``SamEngine(sam, encoder="onnx", threads=2)`` build the
same engine: keywords are the config's field names. Given together, the keywords override the config's
fields (``SamEngine(sam, config=base, device="cuda:1")`` is ``base`` on another GPU). ``engine.config`` is
the effective config; ``SamEngine(sam, config=engine.config)`` builds the same engine again.

SAM 2 models take the same config (:mod:`samr1.engine.sam2_engine`). A value only one kind of engine can
honour raises in the other: ``decode_chunk`` and ``iou_backend="fused"`` are SAM 2's.
"""

from __future__ import annotations

import math
import numbers
import os
from dataclasses import dataclass, fields
from typing import Any

import torch

from samr1.config import ConfigError, check_bool, help_field, set_field

__all__ = ["SamEngineConfig", "IOU_BACKENDS", "ENCODER_OPTIONS"]

IOU_BACKENDS = ("auto", "torch", "cpp", "triton", "fused")
"""Every engine's IoU backends: SAM models take auto/torch/cpp/triton, SAM 2 models auto/fused/torch."""

ENCODER_OPTIONS = ("dtype", "compile", "cache_dir", "max_batch", "cpu_fallback")
"""The fields passed on to the encoder factory (:func:`samr1.sam.encoder.make_encoder`, for SAM 2
:func:`samr1.sam.sam2_encoder.make_sam2_encoder`), only those not at their default."""


@dataclass(frozen=True)
class SamEngineConfig:
    """How a reward engine encodes, caches, decodes and counts. Defaults reproduce SAM-R1's scoring."""

    encoder: str = help_field("torch", "image-encoder backend: torch (the reference), onnx (ONNX Runtime) or "
                                       "tensorrt (see samr1.sam.encoder and samr1.sam.sam2_encoder)")
    cache_bytes: int = help_field(2 << 30, "byte budget of the embedding LRU cache (one ViT embedding is 4 MiB in "
                                           "fp32, one SAM 2 entry 16 MiB); 0 keeps nothing between calls")
    multimask: bool = help_field(True, "ask SAM for 3 masks and keep the one with the highest predicted IoU "
                                       "(Seg-Zero's evaluation convention); False asks for one mask")
    device: Any = help_field(None, "where embeddings and decoding live: cpu, cuda, cuda:N or a torch.device "
                                   "(default: the model's device)")
    iou_backend: str = help_field("auto", "backend of the fused logits -> mask -> IoU op: auto, torch, cpp or "
                                          "triton for SAM models; auto, fused or torch for SAM 2 models")
    store: Any = help_field(None, "an embedding store (samr1.store.EmbeddingStore, or the folder of one built by "
                                  "`samr1 embed` for this model) read before encoding")
    threshold: float = help_field(0.0, "mask logit threshold: a pixel is in the mask when its logit is above it "
                                       "(SAM's mask_threshold is 0.0)")
    threads: int | None = help_field(None, "CPU threads one score / segment_batch call uses (decoder workers and "
                                           "torch's intra-op threads during the call); None: "
                                           "torch.get_num_threads() at call time. IoUs do not depend on it")
    dtype: Any = help_field(None, "encoder dtype: float32, bfloat16 or float16 (torch: autocast, default "
                                  "float32; onnx: float32 only; tensorrt: default float16)")
    compile: bool = help_field(False, "torch encoder only: wrap it in torch.compile")
    cache_dir: str | None = help_field(None, "artefact cache root for ONNX exports and TensorRT engines (default "
                                             "$SAMR1_CACHE_DIR or ~/.cache/samr1)")
    max_batch: int | None = help_field(None, "images per encoder call (also the TensorRT profile's largest batch); "
                                             "None: the backend's default of 8, except 1 for a SAM model's torch "
                                             "encoder on the CPU (batching measured slower there)")
    cpu_fallback: bool = help_field(False, "onnx encoder only: run it on the CPU when ONNX Runtime has no working "
                                           "CUDA provider, instead of raising")
    decode_chunk: int | None = help_field(None, "SAM 2 models only: prompts per decoder call (None: 1 on the CPU, "
                                                "where batching measured slower, else 32)")

    def __post_init__(self) -> None:
        from samr1.sam.decoder import resolve_threads
        from samr1.sam.encoder import BACKENDS

        if self.encoder not in BACKENDS:
            raise ConfigError(f"encoder must be one of {BACKENDS}, got {self.encoder!r}", field="encoder")
        if not _is_number(self.cache_bytes) or not 0 <= self.cache_bytes < math.inf:
            raise ConfigError(f"cache_bytes must be >= 0, got {self.cache_bytes!r}; give a byte count such as "
                              "2 << 30 (2 GiB), or 0 to cache nothing", field="cache_bytes")
        set_field(self, "cache_bytes", int(self.cache_bytes))
        set_field(self, "multimask", check_bool(self.multimask, "multimask"))
        _check_device(self.device)
        if self.iou_backend not in IOU_BACKENDS:
            raise ConfigError(f"iou_backend must be one of {IOU_BACKENDS}, got {self.iou_backend!r}",
                              field="iou_backend")
        if isinstance(self.store, (str, os.PathLike)) and not os.fspath(self.store):
            raise ConfigError("store must be an EmbeddingStore, the folder of one, or None; got an empty path",
                              field="store")
        if not _is_number(self.threshold) or math.isnan(self.threshold):
            raise ConfigError(f"threshold must be a number (a mask logit threshold, SAM's is 0.0), got "
                              f"{self.threshold!r}", field="threshold")
        set_field(self, "threshold", float(self.threshold))
        if self.threads is not None:
            try:
                resolve_threads(self.threads)  # a positive int, bounded (each count keeps a worker pool)
            except ValueError as exc:
                raise ConfigError(str(exc), field="threads") from None
        if self.dtype is not None and not isinstance(self.dtype, (str, torch.dtype)):
            raise ConfigError(f"dtype must be None, a torch.dtype or its name (float32, bfloat16, float16), got "
                              f"{self.dtype!r}", field="dtype")
        set_field(self, "compile", check_bool(self.compile, "compile"))
        if self.cache_dir is not None and not (isinstance(self.cache_dir, (str, os.PathLike))
                                               and os.fspath(self.cache_dir)):
            raise ConfigError(f"cache_dir must be a folder path or None (the default cache root), got "
                              f"{self.cache_dir!r}", field="cache_dir")
        for name in ("max_batch", "decode_chunk"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ConfigError(f"{name} must be a positive int or None (the default), got {v!r}", field=name)
        set_field(self, "cpu_fallback", check_bool(self.cpu_fallback, "cpu_fallback"))

    def encoder_options(self) -> dict[str, Any]:
        """The encoder options (:data:`ENCODER_OPTIONS`) that differ from their defaults, as keywords of
        the encoder factory (whose defaults are the same)."""
        defaults = {f.name: f.default for f in fields(self)}
        return {k: getattr(self, k) for k in ENCODER_OPTIONS if getattr(self, k) != defaults[k]}


def _is_number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _check_device(device: Any) -> None:
    """A device that parses (a string such as cpu / cuda:1, or a torch.device); whether it is usable here
    is checked when the engine is built, so a config can be written on a machine without that device."""
    if device is None or isinstance(device, torch.device):
        return
    try:
        torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError(f"device must be cpu, cuda, cuda:N (or a torch.device, or None for the model's "
                          f"device), got {device!r}", field="device") from None
