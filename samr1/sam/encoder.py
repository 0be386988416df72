"""SAM image encoder backends behind one interface: torch (fp32 / bf16 / fp16, optionally compiled),
ONNX Runtime (CPU or CUDA) and TensorRT (fp16 engine).

ONNX Runtime comes in two flavours that must not be installed together (``onnxruntime`` for the CPU:
``pip install 'samr1[onnx]'``; ``onnxruntime-gpu`` for CUDA: ``pip install 'samr1[gpu]'``). The onnx
encoder on a CUDA device without a working CUDAExecutionProvider raises rather than quietly running on the
CPU; ``cpu_fallback=True`` asks for the CPU run.

Every backend does the preprocessing of upstream ``SamPredictor.set_image``: ``ResizeLongestSide`` to the
model frame ``F = sam.image_encoder.img_size`` (1024 for upstream SAM) with PIL bilinear, to a float
tensor, ``(x - pixel_mean) / pixel_std``, zero-pad bottom/right to ``F x F``. Because every image is
padded to the same frame, images of different sizes share one batch.

Usage (the engine's view)::

    enc = make_encoder(sam, backend="torch", device="cuda", dtype=torch.bfloat16)
    emb = enc.encode([img_a, img_b])        # 2 x C x h x w float32 on enc.device (C x h x w = 256 x 64 x 64)
    sizes = enc.input_sizes([img_a, img_b])  # [(h_a, w_a), (h_b, w_b)]: resized size before padding

``input_sizes`` are what ``Sam.postprocess_masks`` calls ``input_size`` (the valid region of the padded
frame, (h, w) in model-frame pixels); ``original_size`` is the image's own (H, W).

Artefacts (the ONNX export, TensorRT engines) are built on first use and cached under ``~/.cache/samr1``
(see :mod:`samr1.artifacts`); ``samr1 export`` builds them ahead of time.
"""

from __future__ import annotations

import math
import os
import threading
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from segment_anything.modeling import Sam
from segment_anything.utils.transforms import ResizeLongestSide

import samr1.artifacts as artifacts
from samr1.geometry import resize_longest_side
from samr1.io import load_image
from samr1.sam import DeviceError, check_device
from samr1.sam import model_id as sam_model_id

__all__ = [
    "BACKENDS",
    "ImageEncoder",
    "TorchEncoder",
    "TorchModuleRunner",
    "OnnxEncoder",
    "TensorRTEncoder",
    "make_encoder",
    "check_encoder_options",
    "parse_dtype",
    "TensorRTProgram",
    "export_onnx",
    "export_onnx_module",
    "open_onnx_session",
    "run_onnx_session",
    "import_tensorrt",
    "tensorrt_target",
    "build_trt_engine",
    "trt_torch_dtype",
    "select_ort_providers",
    "ort_distributions",
    "image_encoder_flops",
    "tensorrt_available",
]

BACKENDS = ("torch", "onnx", "tensorrt")
ONNX_OPSET = 18  # LayerNormalization is native from 17; 18 is the dynamo exporter's own opset (no conversion)
_ONNX_FILE = "encoder.onnx"
_TRT_FILE = "encoder.engine"
_INPUT = "image"
_OUTPUT = "embedding"

_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
}


def parse_dtype(dtype: Any, default: torch.dtype) -> torch.dtype:
    """An encoder dtype (None -> ``default``; a torch dtype or a name such as "bf16") as a torch dtype."""
    if dtype is None:
        return default
    if isinstance(dtype, torch.dtype):
        if dtype in (torch.float32, torch.bfloat16, torch.float16):
            return dtype
    elif str(dtype).lower() in _DTYPES:
        return _DTYPES[str(dtype).lower()]
    raise ValueError(f"dtype {dtype!r} is not supported; use float32, bfloat16 or float16")


def _sam_device(sam: Sam) -> torch.device:
    try:
        return next(sam.image_encoder.parameters()).device
    except StopIteration:  # pragma: no cover - a SAM always has weights
        return torch.device("cpu")


class ImageEncoder:
    """Common part of all backends: validation, preprocessing, chunking by ``max_batch``, output placement.

    Attributes:
        name: backend and precision, e.g. ``"torch-fp32"``, ``"onnxruntime-cpu"``, ``"tensorrt-fp16"``.
        model_id: :func:`samr1.sam.model_id` of the SAM whose encoder this is (keys caches and stores).
        device: where ``encode`` returns embeddings.
        frame: model frame ``F`` (``sam.image_encoder.img_size``).
        max_batch: images per backend call; ``encode`` splits longer lists into chunks of this size.
        embedding_shape: ``(C, h, w)`` of one embedding (256, 64, 64 for upstream SAM).
        artifact: the cached artefact this backend runs from (None for torch).

    Backends are serialised by a lock (``encode`` from several threads is safe): the TensorRT execution
    context is not thread-safe, and concurrent calls would only contend for the same device anyway.
    """

    name: str = "abstract"

    def __init__(self, sam: Sam, device: torch.device, max_batch: int) -> None:
        if not isinstance(sam, Sam):
            raise TypeError(f"expected a segment_anything Sam model (samr1.sam.load_sam), got {type(sam).__name__}")
        if int(max_batch) < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.sam = sam
        self.device = torch.device(device)
        self.max_batch = int(max_batch)
        self.frame = int(sam.image_encoder.img_size)
        emb_h, emb_w = sam.prompt_encoder.image_embedding_size
        self.embedding_shape = (int(sam.prompt_encoder.embed_dim), int(emb_h), int(emb_w))
        self.model_id = sam_model_id(sam)
        self.transform = ResizeLongestSide(self.frame)
        # Normalisation constants in float32 on the encode device (3 x 1 x 1, as in Sam.preprocess).
        self._mean = sam.pixel_mean.detach().to(self.device, torch.float32)
        self._std = sam.pixel_std.detach().to(self.device, torch.float32)
        self.artifact: artifacts.Artifact | None = None
        self._lock = threading.Lock()

    # --- preprocessing (identical to SamPredictor.set_image + Sam.preprocess) ---

    def input_sizes(self, images: Sequence[Any]) -> list[tuple[int, int]]:
        """Resized ``(h, w)`` of each image before padding to ``F x F`` (model-frame pixels)."""
        out = []
        for img in images:
            shape = img.shape if isinstance(img, np.ndarray) else load_image(img).shape
            out.append(resize_longest_side(shape[0], shape[1], self.frame))
        return out

    def preprocess(self, images: Sequence[Any]) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        """Images -> ``B x 3 x F x F`` float32 on ``device`` (normalised, zero-padded) and their input sizes.

        Each image may be an ``H x W x 3`` uint8 RGB array, a PIL image or a path.
        """
        arrays = [load_image(img, field=f"images[{i}]") for i, img in enumerate(images)]
        batch = torch.zeros((len(arrays), 3, self.frame, self.frame), dtype=torch.float32, device=self.device)
        sizes = []
        for i, arr in enumerate(arrays):
            # The resize runs on the host through PIL exactly as upstream (apply_image) so that embeddings
            # match SamPredictor bit for bit; the normalisation runs on the encode device.
            resized = self.transform.apply_image(arr)
            h, w = resized.shape[:2]
            t = torch.as_tensor(resized, device=self.device).permute(2, 0, 1)
            batch[i, :, :h, :w] = (t - self._mean) / self._std
            sizes.append((h, w))
        return batch, sizes

    # --- encoding ---

    def encode(self, images: Sequence[Any]) -> torch.Tensor:
        """Embeddings of ``images``: ``B x C x h x w`` float32 on ``device``, in the order given.

        Images of any sizes may be mixed; lists longer than ``max_batch`` run in chunks.
        """
        images = list(images)
        out = torch.empty((len(images), *self.embedding_shape), dtype=torch.float32, device=self.device)
        for start in range(0, len(images), self.max_batch):
            x, _ = self.preprocess(images[start:start + self.max_batch])
            out[start:start + len(x)] = self.encode_preprocessed(x)
        return out

    def encode_preprocessed(self, x: torch.Tensor) -> torch.Tensor:
        """Run the backend on a preprocessed ``B x 3 x F x F`` float32 batch (B <= max_batch).

        Returns ``B x C x h x w`` float32 on ``device``.
        """
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[2] != self.frame or x.shape[3] != self.frame:
            raise ValueError(f"expected a B x 3 x {self.frame} x {self.frame} batch, got {tuple(x.shape)}")
        if x.shape[0] > self.max_batch:
            raise ValueError(f"batch of {x.shape[0]} exceeds max_batch={self.max_batch}; use encode() to chunk")
        if x.shape[0] == 0:
            return torch.empty((0, *self.embedding_shape), dtype=torch.float32, device=self.device)
        with self._lock:
            y = self._run(x.to(self.device, torch.float32).contiguous())
        return y.to(self.device, torch.float32)

    def _run(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, model_id={self.model_id!r}, device={self.device})"


# ----------------------------------------------------------------------------------------------- torch


class TorchModuleRunner:
    """Runs an encoder module under ``no_grad``: float32 is the reference; bfloat16 / float16 run under autocast
    (weights stay float32); ``compile=True`` wraps the module in ``torch.compile`` (one graph per distinct
    batch size, so the first call at each batch size is slow). Returns what the module returns, uncast.

    Attributes:
        dtype: the autocast dtype (float32: no autocast).
        compiled: whether the module is wrapped in ``torch.compile``.
        name: e.g. ``"torch-fp32"``, ``"torch-bf16-compiled"``.
    """

    def __init__(self, module: torch.nn.Module, model_device: torch.device, device: torch.device,
                 dtype: torch.dtype, compile: bool, max_batch: int) -> None:
        if model_device != device and not (model_device.type == device.type == "cuda" and device.index is None):
            raise ValueError(
                f"the SAM model is on {model_device} but device={device}; move it first "
                f"(sam.to('{device}')) or leave device unset to encode where the model is"
            )
        if dtype == torch.float16 and device.type != "cuda":
            raise ValueError("float16 autocast needs a CUDA device; use float32 or bfloat16 on CPU")
        self.device = device
        self.dtype = dtype
        self.compiled = bool(compile)
        # dynamic=False: static shapes give the best kernels; at most max_batch graphs are compiled.
        self._fn = torch.compile(module, dynamic=False) if compile else module
        if compile:
            # One recompile per batch size 1..max_batch must not fall back to eager silently.
            import torch._dynamo as dynamo

            dynamo.config.cache_size_limit = max(dynamo.config.cache_size_limit, max_batch + 2)
        prec = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]
        self.name = f"torch-{prec}" + ("-compiled" if compile else "")

    def __call__(self, x: torch.Tensor) -> Any:
        with torch.no_grad():
            if self.dtype == torch.float32:
                return self._fn(x)
            with torch.autocast(device_type=self.device.type, dtype=self.dtype):
                return self._fn(x)


class TorchEncoder(ImageEncoder):
    """The upstream module itself, run by :class:`TorchModuleRunner` (float32, bf16 / fp16 autocast,
    optionally compiled)."""

    def __init__(self, sam: Sam, device: torch.device, dtype: torch.dtype, compile: bool, max_batch: int) -> None:
        super().__init__(sam, device, max_batch)
        self._runner = TorchModuleRunner(sam.image_encoder, _sam_device(sam), self.device, dtype, compile, max_batch)
        self.dtype, self.compiled, self.name = dtype, self._runner.compiled, self._runner.name

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        return self._runner(x).float()


# ------------------------------------------------------------------------------------------------- ONNX


def _onnx_key(sam: Sam, opset: int) -> dict[str, Any]:
    # The ONNX graph is device-independent (exported weights are plain float32 initialisers), so the key
    # names no device; runtime versions are included so that an upgrade re-exports rather than trusting an
    # old file (library versions are part of every artefact key).
    enc = sam.image_encoder
    return {
        "artifact": "sam-image-encoder-onnx",
        "model_id": sam_model_id(sam),
        "input": ["batch", 3, int(enc.img_size), int(enc.img_size)],
        "input_dtype": "float32",
        "opset": int(opset),
        "external_data": True,
        **artifacts.library_versions("torch", "onnx", "onnxscript", "onnxruntime"),
    }


class _EncoderWrapper(torch.nn.Module):
    """The image encoder as a module with one named input (``image``) for export."""

    def __init__(self, encoder: torch.nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.encoder(image)


def export_onnx_module(module: torch.nn.Module, frame: int, path: Path, output_names: Sequence[str],
                       opset: int = ONNX_OPSET) -> None:
    """Export ``module`` (``forward(image)``: ``B x 3 x frame x frame`` float32 -> a tensor or a tuple of
    tensors) to ``path`` with torch's dynamo exporter, the batch dimension dynamic (any B >= 1).

    The graph takes one input named ``image``; its outputs are named ``output_names`` in order. Weights go to
    ``path`` + ``.data`` beside it. Used for the SAM image encoder and SAM 2's image features alike.
    """
    try:
        dev = next(module.parameters()).device
    except StopIteration:
        dev = torch.device("cpu")
    # Batch 2 in the example: a size-1 dimension would be specialised to a constant by torch.export.
    example = torch.zeros((2, 3, frame, frame), dtype=torch.float32, device=dev)
    batch = torch.export.Dim("batch", min=1, max=1024)
    t0 = time.perf_counter()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter is chatty about internals we cannot act on
        program = torch.onnx.export(
            module.eval(), (example,), None, dynamo=True, input_names=[_INPUT],
            output_names=list(output_names), dynamic_shapes={"image": {0: batch}}, opset_version=opset,
            external_data=True, verbose=False, optimize=True,
        )
    # Weights always go to an external data file (encoder.onnx.data): required above protobuf's 2 GB limit
    # (ViT-H) and harmless below it, so every model size takes the same, tested path.
    program.save(str(path), external_data=True)
    if os.environ.get("SAMR1_VERBOSE"):
        print(f"samr1: exported {type(module).__name__} to ONNX in {time.perf_counter() - t0:.1f}s: {path}")


def _export_onnx_into(sam: Sam, folder: Path, opset: int) -> None:
    """Export ``sam.image_encoder`` (input ``image``: B x 3 x F x F float32, dynamic B) to ``folder``."""
    export_onnx_module(_EncoderWrapper(sam.image_encoder), int(sam.image_encoder.img_size), folder / _ONNX_FILE,
                       [_OUTPUT], opset)


def export_onnx(sam: Sam, cache_dir: str | os.PathLike | None = None, opset: int = ONNX_OPSET) -> artifacts.Artifact:
    """The cached ONNX export of ``sam.image_encoder`` (exported now when missing, stale or corrupt).

    The file ``artifact.file("encoder.onnx")`` takes ``image``: ``B x 3 x F x F`` float32 (preprocessed as in
    ``Sam.preprocess``, any B >= 1) and gives ``embedding``: ``B x C x h x w`` float32.
    """
    key = _onnx_key(sam, opset)
    art, _ = artifacts.get_or_build("onnx", key, lambda d: _export_onnx_into(sam, d, opset), cache_dir=cache_dir)
    return art


_ORT_FIX = ("pip uninstall -y onnxruntime onnxruntime-gpu && pip install 'samr1[gpu]' (or onnxruntime-gpu "
            "alone: the CPU package onnxruntime and onnxruntime-gpu overwrite each other's files)")


def ort_distributions() -> list[str]:
    """Installed ONNX Runtime distributions with versions, e.g. ``["onnxruntime-gpu 1.22.0"]``.

    Two of them at once (``onnxruntime`` and ``onnxruntime-gpu``) share the ``onnxruntime`` module folder:
    whichever was installed last wins, which is how a CUDA provider silently disappears.
    """
    from importlib import metadata

    out = []
    for name in ("onnxruntime", "onnxruntime-gpu", "onnxruntime-directml", "onnxruntime-openvino"):
        try:
            out.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return out


def select_ort_providers(available: Sequence[str], device: str | torch.device, *, cpu_fallback: bool = False,
                         installed: Sequence[str] | None = None) -> tuple[list[Any], str]:
    """The ONNX Runtime provider list for an encoder whose embeddings live on ``device``.

    Args:
        available: ``onnxruntime.get_available_providers()``.
        device: the encoder's device; a CUDA device with no index means ``cuda:0`` here (the caller passes
            the resolved index).
        cpu_fallback: when ``device`` is not the CPU and ONNX Runtime cannot run there, run on the CPU
            (embeddings are copied to ``device``) instead of raising.
        installed: the ONNX Runtime distributions found (:func:`ort_distributions`), named in the error.

    Returns:
        ``(providers, where)``: the ``providers`` argument of ``InferenceSession`` and ``"cuda"`` or ``"cpu"``.

    Raises:
        DeviceError: ``device`` is CUDA and ``CUDAExecutionProvider`` is not in ``available`` (or ``device`` is
            another accelerator, which ONNX Runtime is not wired to here), and ``cpu_fallback`` is False. A
            GPU run that silently became a CPU run would cost hours of a training budget unnoticed.
    """
    dev = torch.device(device)
    if dev.type == "cpu":
        return ["CPUExecutionProvider"], "cpu"
    if dev.type == "cuda" and "CUDAExecutionProvider" in available:
        return [("CUDAExecutionProvider", {"device_id": dev.index or 0}), "CPUExecutionProvider"], "cuda"
    if cpu_fallback:
        return ["CPUExecutionProvider"], "cpu"
    if dev.type != "cuda":
        raise DeviceError(f"the onnx encoder runs on CUDA or the CPU, not on {dev}; use device 'cpu', another "
                          "encoder backend, or cpu_fallback=True to run ONNX Runtime on the CPU")
    found = ", ".join(installed) if installed else "no onnxruntime distribution metadata"
    raise DeviceError(
        f"the onnx encoder on {dev} needs ONNX Runtime's CUDAExecutionProvider, but this onnxruntime offers "
        f"only {list(available)} (installed: {found}). Fix: {_ORT_FIX}; or pass cpu_fallback=True to run the "
        "encoder on the CPU and copy embeddings to the GPU")


class OnnxEncoder(ImageEncoder):
    """ONNX Runtime on the cached export: CUDAExecutionProvider when ``device`` is CUDA (inputs/outputs bound to
    torch CUDA memory, no host copies), CPUExecutionProvider when ``device`` is the CPU.

    A CUDA ``device`` without a working CUDAExecutionProvider (the CPU package ``onnxruntime`` installed, or
    CUDA/cuDNN libraries that ONNX Runtime cannot load) raises :class:`samr1.sam.DeviceError` unless
    ``cpu_fallback=True``, which runs on the CPU and copies the embeddings to ``device``."""

    def __init__(self, sam: Sam, device: torch.device, cache_dir: str | os.PathLike | None, max_batch: int,
                 opset: int = ONNX_OPSET, cpu_fallback: bool = False) -> None:
        super().__init__(sam, device, max_batch)
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.artifact, self._session, self._provider = open_onnx_session(
            _onnx_key(sam, opset), lambda d: _export_onnx_into(sam, d, opset), self.device, cache_dir=cache_dir,
            cpu_fallback=cpu_fallback)
        self.name = f"onnxruntime-{self._provider}"

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        return run_onnx_session(self._session, self._provider, x, [(x.shape[0], *self.embedding_shape)])[0]


def open_onnx_session(key: dict[str, Any], build: Any, device: torch.device, *,
                      cache_dir: str | os.PathLike | None = None, cpu_fallback: bool = False,
                      file: str = _ONNX_FILE) -> tuple[artifacts.Artifact, Any, str]:
    """An ONNX Runtime session on the cached ONNX artefact of ``key`` (``build(folder)`` exports it when it is
    missing, stale or corrupt; see :func:`samr1.artifacts.get_or_build`).

    Args:
        key: the artefact key (model id, input shape, opset, library versions).
        build: writes ``file`` (and its ``.data``) into the folder it is given.
        device: where the outputs are wanted; a CUDA device must carry its index.
        cpu_fallback: see :func:`select_ort_providers`.

    Returns:
        ``(artifact, session, where)`` with ``where`` the provider the session really runs on, "cuda" or "cpu".

    Raises:
        ImportError: ONNX Runtime is not installed (the message gives the install command).
        DeviceError: ``device`` is CUDA and ONNX Runtime cannot run there (and no ``cpu_fallback``).
    """
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise ImportError("the onnx encoder backend needs ONNX Runtime: pip install 'samr1[onnx]' (CPU) or "
                          "'samr1[gpu]' (CUDA), not both") from exc
    providers, where = select_ort_providers(
        ort.get_available_providers(), device, cpu_fallback=cpu_fallback, installed=ort_distributions())

    def load(folder: Path):
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3  # errors only: ORT warns about every unused initialiser otherwise
        return ort.InferenceSession(str(folder / file), opts, providers=providers)

    art, session = artifacts.get_or_build("onnx", key, build, load, cache_dir=cache_dir)
    if where == "cuda" and "CUDAExecutionProvider" not in session.get_providers():
        # ORT lists the CUDA provider but drops it at session creation when its CUDA/cuDNN libraries do
        # not load, logging an error and running on the CPU; checked here, after the artefact cache, so a
        # broken runtime is not mistaken for a corrupt artefact and rebuilt.
        if not cpu_fallback:
            raise DeviceError(
                f"ONNX Runtime lists CUDAExecutionProvider but could not start it on {device} (session "
                f"providers: {session.get_providers()}); its CUDA/cuDNN libraries are missing or do "
                f"not match (see the ONNX Runtime CUDA requirements). Fix: {_ORT_FIX}; or pass "
                "cpu_fallback=True to run the encoder on the CPU")
        where = "cpu"
    return art, session, where


def run_onnx_session(session: Any, where: str, x: torch.Tensor,
                     output_shapes: Sequence[tuple[int, ...]]) -> list[torch.Tensor]:
    """Run a one-input session (see :func:`open_onnx_session`) on ``x``; its float32 outputs, in graph order.

    On the CUDA provider with ``x`` on the GPU, input and outputs are bound to torch CUDA memory (no host
    copies; ``output_shapes`` gives the outputs' shapes, one per graph output); otherwise ``x`` is copied to
    the host and the outputs come back as CPU tensors.
    """
    inp = session.get_inputs()[0].name
    outs = [o.name for o in session.get_outputs()]
    if len(output_shapes) != len(outs):
        raise ValueError(f"the ONNX graph has {len(outs)} outputs {outs}; got {len(output_shapes)} output shapes")
    if where == "cuda" and x.is_cuda:
        io = session.io_binding()
        index = x.device.index or 0
        results = [torch.empty(tuple(s), dtype=torch.float32, device=x.device) for s in output_shapes]
        io.bind_input(inp, "cuda", index, np.float32, tuple(x.shape), x.data_ptr())
        for name, out in zip(outs, results, strict=True):
            io.bind_output(name, "cuda", index, np.float32, tuple(out.shape), out.data_ptr())
        # ORT runs on its own CUDA stream: the preprocessing kernels on torch's stream must be done first.
        torch.cuda.current_stream(x.device).synchronize()
        session.run_with_iobinding(io)
        return results
    return [torch.from_numpy(y) for y in session.run(outs, {inp: x.detach().cpu().numpy()})]


# --------------------------------------------------------------------------------------------- TensorRT

_TRT_LOGGER = None


def tensorrt_available() -> tuple[bool, str]:
    """``(True, "")`` when TensorRT and a CUDA device are usable here, else ``(False, reason)``."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False, "tensorrt is not installed (pip install 'tensorrt>=10' or samr1[gpu])"
    if not torch.cuda.is_available():
        return False, "TensorRT needs a CUDA device and torch.cuda.is_available() is False"
    return True, ""


def import_tensorrt():
    """The ``tensorrt`` module, with this process's TensorRT logger created (warnings and errors).

    Raises:
        ImportError: TensorRT is not installed or there is no CUDA device (the message says which and how to
            install it).
    """
    ok, reason = tensorrt_available()
    if not ok:
        raise ImportError(f"the tensorrt backend is unavailable: {reason}")
    import tensorrt as trt

    global _TRT_LOGGER
    if _TRT_LOGGER is None:  # TensorRT wants one logger per process
        _TRT_LOGGER = trt.Logger(trt.Logger.WARNING)
    return trt


def trt_torch_dtype(trt, dt) -> torch.dtype:
    """The torch dtype of a TensorRT tensor dtype ``dt`` (``trt.float16`` -> ``torch.float16``)."""
    table = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32, trt.int8: torch.int8}
    if hasattr(trt, "bfloat16"):
        table[trt.bfloat16] = torch.bfloat16
    if dt not in table:
        raise TypeError(f"unsupported TensorRT tensor dtype {dt}")
    return table[dt]


def build_trt_engine(onnx_path: Path, out_path: Path, frame: int, max_batch: int, fp16: bool,
                     workspace_bytes: int | None) -> None:
    """Parse the ONNX file (one input ``B x 3 x frame x frame``) and serialise an engine for batch
    1..max_batch to ``out_path`` (float16 tactics allowed when ``fp16``; inputs and outputs stay float32)."""
    trt = import_tensorrt()
    builder = trt.Builder(_TRT_LOGGER)
    # TensorRT 10 networks are always explicit-batch (the flag is deprecated and ignored); older versions
    # need it set to parse ONNX models.
    flags = 0
    if int(trt.__version__.split(".")[0]) < 10:
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, _TRT_LOGGER)
    # parse_from_file (not parse(bytes)) so the parser finds encoder.onnx.data beside the model.
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    if workspace_bytes:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_bytes))
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    name = network.get_input(0).name
    # opt = max: training and `samr1 embed` run full batches; batch 1 still runs, with max-batch tactics.
    profile.set_shape(name, (1, 3, frame, frame), (max_batch, 3, frame, frame), (max_batch, 3, frame, frame))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path} (see the TensorRT log above)")
    with open(out_path, "wb") as f:
        f.write(serialized)


def tensorrt_target(device: str | torch.device, dtype: torch.dtype) -> tuple[torch.device, bool]:
    """Check a TensorRT backend's target: TensorRT importable, a CUDA ``device``, ``dtype`` float16 or float32.

    Returns ``(the CUDA device with its index, fp16)``. Raises ImportError (with the install hint) before
    touching the device, then ValueError naming the bad option.
    """
    import_tensorrt()
    dev = torch.device(device)
    if dev.type != "cuda":
        raise ValueError(f"the tensorrt backend needs a CUDA device, got device={device}")
    if dtype not in (torch.float16, torch.float32):
        raise ValueError(f"the tensorrt backend builds float16 or float32 engines, got {dtype}")
    if dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    return dev, dtype == torch.float16


class TensorRTProgram:
    """A cached TensorRT engine built from a cached ONNX export with one input (``B x 3 x F x F`` float32) and
    the named outputs, run on torch-allocated CUDA buffers on the current torch stream (TensorRT 10 API:
    ``set_input_shape``, ``set_tensor_address``, ``execute_async_v3``).

    The engine's key names the ONNX artefact's key digest, the profile (batch 1..max_batch), the precision,
    the GPU (:func:`samr1.artifacts.device_capability`) and the torch / TensorRT versions; a change in any of
    them builds a new engine.

    Attributes:
        artifact: the engine's :class:`samr1.artifacts.Artifact` (``built`` False when loaded from the cache).
        outputs: the output names, in the order :meth:`run` returns them.
    """

    def __init__(self, onnx_art: artifacts.Artifact, onnx_file: str, artifact_name: str, model_id: str | None,
                 output_names: Sequence[str], device: torch.device, frame: int, max_batch: int, fp16: bool,
                 cache_dir: str | os.PathLike | None, workspace_bytes: int | None = None) -> None:
        trt = import_tensorrt()
        if device.type != "cuda" or device.index is None:
            raise ValueError(f"a TensorRT program needs a CUDA device with its index, got {device}")
        self.device = device
        self.max_batch = int(max_batch)
        self.outputs = list(output_names)
        key = {
            "artifact": artifact_name,
            "model_id": model_id,
            "onnx_key": artifacts.key_digest(onnx_art.key),
            "input": [[1, self.max_batch], 3, int(frame), int(frame)],
            "precision": "fp16" if fp16 else "fp32",
            "device": artifacts.device_capability(device),
            **artifacts.library_versions("torch", "tensorrt"),
        }
        onnx_path = onnx_art.file(onnx_file)

        def build(folder: Path) -> None:
            with torch.cuda.device(device):
                build_trt_engine(onnx_path, folder / _TRT_FILE, int(frame), self.max_batch, fp16, workspace_bytes)

        def load(folder: Path):
            runtime = trt.Runtime(_TRT_LOGGER)
            with torch.cuda.device(device):
                engine = runtime.deserialize_cuda_engine((folder / _TRT_FILE).read_bytes())
            if engine is None:
                raise RuntimeError(f"TensorRT could not deserialise {folder / _TRT_FILE}")
            return runtime, engine

        self.artifact, (self._runtime, self._engine) = artifacts.get_or_build(
            "tensorrt", key, build, load, cache_dir=cache_dir)
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        ins = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(ins) != 1 or sorted(outs) != sorted(self.outputs):
            raise RuntimeError(f"expected one input and the outputs {self.outputs} in {self.artifact.path}, got "
                               f"{ins} / {outs}")
        self._in = ins[0]
        self._in_dtype = trt_torch_dtype(trt, self._engine.get_tensor_dtype(self._in))
        self._out_dtypes = [trt_torch_dtype(trt, self._engine.get_tensor_dtype(n)) for n in self.outputs]
        with torch.cuda.device(device):
            self._context = self._engine.create_execution_context()

    def run(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The outputs for ``x`` (``B x 3 x F x F``, 1 <= B <= max_batch), float32 on ``device``, in ``outputs``
        order. Not thread-safe (one execution context): callers serialise."""
        x = x.to(self.device, self._in_dtype).contiguous()
        with torch.cuda.device(self.device):
            ctx = self._context
            if not ctx.set_input_shape(self._in, tuple(x.shape)):
                raise RuntimeError(f"TensorRT rejected input shape {tuple(x.shape)} (profile 1..{self.max_batch})")
            ctx.set_tensor_address(self._in, x.data_ptr())
            outs = []
            for name, dtype in zip(self.outputs, self._out_dtypes, strict=True):
                out = torch.empty(tuple(ctx.get_tensor_shape(name)), dtype=dtype, device=self.device)
                ctx.set_tensor_address(name, out.data_ptr())
                outs.append(out)
            # Enqueued on torch's current stream: ordered after the preprocessing that produced x and before
            # whatever consumes the outputs, with no extra synchronisation; buffers are freed stream-ordered.
            if not ctx.execute_async_v3(torch.cuda.current_stream(self.device).cuda_stream):
                raise RuntimeError("TensorRT execute_async_v3 failed (see the TensorRT log above)")
        return [o.float() for o in outs]


class TensorRTEncoder(ImageEncoder):
    """A TensorRT engine built from the cached ONNX export (fp16 by default, optimisation profile batch
    1..max_batch); see :class:`TensorRTProgram`."""

    def __init__(self, sam: Sam, device: torch.device, dtype: torch.dtype, cache_dir: str | os.PathLike | None,
                 max_batch: int, workspace_bytes: int | None = None) -> None:
        dev, fp16 = tensorrt_target(device, dtype)
        super().__init__(sam, dev, max_batch)
        self.name = f"tensorrt-{'fp16' if fp16 else 'fp32'}"
        self._program = TensorRTProgram(
            export_onnx(sam, cache_dir=cache_dir), _ONNX_FILE, "sam-image-encoder-tensorrt", self.model_id,
            [_OUTPUT], self.device, self.frame, max_batch, fp16, cache_dir, workspace_bytes)
        self.artifact = self._program.artifact

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        return self._program.run(x)[0]


# ------------------------------------------------------------------------------------------------ factory


def make_encoder(sam: Sam, backend: str = "torch", device: str | torch.device | None = None, dtype: Any = None,
                 compile: bool = False, cache_dir: str | os.PathLike | None = None, max_batch: int = 8,
                 cpu_fallback: bool = False) -> ImageEncoder:
    """Build an image encoder for ``sam``.

    Args:
        sam: a ``segment_anything`` Sam (see :func:`samr1.sam.load_sam`); not modified.
        backend: "torch" (the reference), "onnx" (ONNX Runtime) or "tensorrt".
        device: where embeddings are returned (and, for torch, where the model must already be). Default:
            the model's device for torch and onnx; the current CUDA device for tensorrt.
        dtype: torch: float32 (default; equals ``SamPredictor.set_image(...).features``), bfloat16 or float16
            (autocast; float16 needs CUDA). onnx: float32 only. tensorrt: float16 (default) or float32.
        compile: torch only: wrap the encoder in ``torch.compile``.
        cache_dir: artefact cache root (ONNX exports, TensorRT engines); default ``$SAMR1_CACHE_DIR`` or
            ``~/.cache/samr1``.
        max_batch: images per backend call (also the TensorRT profile's largest batch).
        cpu_fallback: onnx only: when ``device`` is CUDA but ONNX Runtime has no working
            CUDAExecutionProvider, run the encoder on the CPU (embeddings copied to ``device``) instead of
            raising. Off by default: a GPU run that silently became a CPU run is a silent slowdown.

    Raises:
        ValueError: unknown backend or an option the backend does not support (the message says which).
        ImportError: the backend's library is missing (the message gives the install command).
        DeviceError: onnx on a CUDA device without a working CUDAExecutionProvider (and no ``cpu_fallback``).
    """
    dtype = check_encoder_options(backend, dtype, compile, cpu_fallback)
    if backend == "torch":
        dev = check_device(device) if device is not None else _sam_device(sam)
        return TorchEncoder(sam, dev, dtype, compile, max_batch)
    if backend == "onnx":
        dev = check_device(device) if device is not None else _sam_device(sam)
        return OnnxEncoder(sam, dev, cache_dir, max_batch, cpu_fallback=cpu_fallback)
    dev = torch.device(device) if device is not None else torch.device("cuda")
    return TensorRTEncoder(sam, dev, dtype, cache_dir, max_batch)


def check_encoder_options(backend: str, dtype: Any, compile: bool, cpu_fallback: bool) -> torch.dtype:
    """Validate a backend's options (see :func:`make_encoder`); the dtype it runs in (its default for None).

    Raises:
        ValueError: unknown backend, or an option the backend does not support (the message says which).
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown encoder backend {backend!r}; choose one of {list(BACKENDS)}")
    if compile and backend != "torch":
        raise ValueError(f"compile=True applies to the torch backend only, not {backend!r}")
    if cpu_fallback and backend != "onnx":
        raise ValueError(f"cpu_fallback=True applies to the onnx backend only, not {backend!r}")
    if backend == "onnx" and parse_dtype(dtype, torch.float32) != torch.float32:
        raise ValueError("the onnx backend runs the float32 export; use dtype=float32 (or the tensorrt "
                         "backend for float16)")
    return parse_dtype(dtype, torch.float16 if backend == "tensorrt" else torch.float32)


# ------------------------------------------------------------------------------------------------- FLOPs


def image_encoder_flops(sam: Sam) -> float:
    """Floating-point operations (2 x multiply-adds) of one image through ``sam.image_encoder``.

    Counts the matmuls and convolutions from the module configuration (patch embedding, per block the
    qkv/projection/MLP linears on the tokens they see -- window blocks pad the token grid to a multiple
    of the window --, attention scores and values, decomposed relative-position terms, and the neck).
    ViT-H at 1024: ~5.9e12 (~3.0 TMAC), ViT-B: ~0.97e12.
    """
    enc = sam.image_encoder
    proj = enc.patch_embed.proj
    p = int(proj.kernel_size[0])
    dim = int(proj.out_channels)
    grid = int(enc.img_size) // p
    n = grid * grid
    macs = n * proj.in_channels * p * p * dim
    for blk in enc.blocks:
        hidden = int(blk.mlp.lin1.out_features)
        ws = int(blk.window_size)
        if ws > 0:
            padded = math.ceil(grid / ws) * ws
            n_att, t, windows = padded * padded, ws * ws, (padded // ws) ** 2
        else:
            n_att, t, windows = n, n, 1
        side = int(math.isqrt(t))
        macs += 4 * n_att * dim * dim  # qkv (3) + output projection (1)
        macs += windows * 2 * t * t * dim  # q @ k^T and attn @ v over all heads
        if getattr(blk.attn, "use_rel_pos", False):
            macs += windows * t * 2 * side * dim  # q against the h and w relative-position tables
        macs += 2 * n * dim * hidden  # MLP
    for m in enc.neck:
        if isinstance(m, torch.nn.Conv2d):
            kh, kw = m.kernel_size
            macs += n * m.in_channels * m.out_channels * kh * kw
    return 2.0 * macs
