"""Prompt packing: a ragged :class:`~samr1.sam.prompts.PromptBatch` -> the mask decoder's padded sparse
prompt tokens, exactly as upstream ``PromptEncoder.forward`` makes them for each prompt on its own.

    token order per prompt:  [point 0, ..., point k-1, (not-a-point if no box), (box corner 1, corner 2)]

Each point / box corner token is SAM's random-Fourier positional encoding of its FRAME-pixel coordinate
(original pixels scaled by :func:`samr1.sam.prompts.frame_scales`, +0.5 pixel centre, normalised by
``prompt_encoder.input_image_size``) plus its label embedding; the not-a-point pad of a box-less prompt
is ``not_a_point_embed`` alone (its PE is zeroed upstream). Rows past a prompt's count are zeros.

Backends (``backend=``, the rule of :mod:`samr1.ops.backends`):

* ``"torch"`` -- :func:`pack_prompts_reference`, THE reference (tests and benches import it).
* ``"triton"`` -- :mod:`samr1.kernels.prompt_pack`, one launch for the whole batch. CUDA tensors, or CPU
  tensors under ``TRITON_INTERPRET=1`` (tests). Matches the reference to ~2e-6 (fp32 round-off: the
  kernel scales coordinates in float32, the reference in float64 like ``ResizeLongestSide``).
* ``"auto"`` -- Triton on CUDA tensors, torch otherwise (there is no C++ body: on the CPU the torch
  reference is a handful of vectorised ops). :func:`samr1.ops.backends.last` ``("prompt_pack")``
  says which ran.

The op is registered with ``torch.library`` as ``samr1::prompt_pack`` (tensors and plain scalars, not the
dataclass) with a fake implementation, so it composes with ``torch.compile``. The token count ``T`` is
data-dependent, so :func:`pack_prompts` reads it on the host (one sync) and passes it in: the output
shape is then known from the arguments. Not differentiable (SAM's weights are read detached).
"""

from __future__ import annotations

import math

import torch

from samr1.ops import backends
from samr1.sam.prompts import PromptBatch, PromptError, frame_scales, prompt_tables

__all__ = ["pack_prompts", "pack_prompts_reference", "select_backend"]

_BODIES = ("triton",)


def select_backend(backend: str, device: torch.device | str) -> str:
    """The backend a :func:`pack_prompts` call with ``backend`` on a model on ``device`` runs ("torch" or
    "triton"), without running it (:func:`samr1.ops.backends.resolve` for this op)."""
    return backends.resolve("prompt_pack", backend, device, _BODIES)


# ----------------------------------------------------------------------------- the reference
def _fourier(coords: torch.Tensor, gauss: torch.Tensor, input_size: tuple[int, int]) -> torch.Tensor:
    """SAM's random-Fourier PE of frame-pixel coords (..., 2) already shifted by +0.5 -> (..., D)."""
    # Same ops in the same order as PositionEmbeddingRandom.forward_with_coords + _pe_encoding.
    x = coords[..., 0] / input_size[1]
    y = coords[..., 1] / input_size[0]
    c = torch.stack([x, y], dim=-1)
    c = 2 * c - 1
    c = c @ gauss
    c = 2 * math.pi * c
    return torch.cat([torch.sin(c), torch.cos(c)], dim=-1)


def _pack_torch(points: torch.Tensor, point_labels: torch.Tensor, boxes: torch.Tensor, has_box: torch.Tensor,
                image_index: torch.Tensor, scale: torch.Tensor, gauss: torch.Tensor, label_embed: torch.Tensor,
                input_size: tuple[int, int], num_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference on the batch's tensors (shapes as in :class:`PromptBatch`; ``scale`` (B, 2) float64
    original -> frame; tables as in :func:`prompt_tables`); tokens (N, num_tokens, D) on the tables' device."""
    dev = gauss.device
    n, k = point_labels.shape
    d = label_embed.shape[1]
    tokens = torch.zeros((n, num_tokens, d), dtype=torch.float32, device=dev)
    labels = point_labels.to(dev).long()
    npts = (labels >= 0).sum(1)
    hb = has_box.to(dev)
    counts = npts + torch.where(hb, 2, 1)
    if n == 0:
        return tokens, counts
    img = image_index.to(dev).long()
    scale = scale.to(dev)[img]  # (N, 2) float64
    rows = torch.arange(n, device=dev)

    # Points: original -> frame in float64 then float32 (apply_coords works on float64 numpy), +0.5 shift.
    pts = (points.to(dev).double() * scale[:, None, :]).float() + 0.5
    pe_pts = _fourier(pts, gauss, input_size)  # (N, K, D)
    real = labels >= 0
    emb_idx = labels.clamp(min=0)  # 0 -> background row, 1 -> foreground row
    pe_pts = pe_pts + label_embed[emb_idx]
    jj = torch.arange(k, device=dev).expand(n, k)
    tokens[rows[:, None].expand(n, k)[real], jj[real]] = pe_pts[real]

    # Prompts without a box get one not-a-point token after their points (upstream pad = boxes is None);
    # its PE is zeroed upstream, so the token is exactly not_a_point_embed.
    nobox = ~hb
    tokens[rows[nobox], npts[nobox]] = label_embed[4]

    if hb.any():
        box = (boxes.to(dev)[hb].double().reshape(-1, 2, 2) * scale[hb][:, None, :]).float() + 0.5
        pe_box = _fourier(box, gauss, input_size) + label_embed[2:4][None]
        r = rows[hb]
        tokens[r, npts[hb]] = pe_box[:, 0]
        tokens[r, npts[hb] + 1] = pe_box[:, 1]
    return tokens, counts


def _num_tokens(batch: PromptBatch) -> int:
    """T = the largest token count of the batch (0 for no prompts); one host sync."""
    return int(batch.token_counts().max()) if batch.num_prompts else 0


def pack_prompts_reference(sam, batch: PromptBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """THE torch reference of prompt packing (no validation; call :func:`pack_prompts` from user code).

    Returns:
        tokens: (N, T, D) float32 on the model's device, T = max token count; row n holds prompt n's
            sparse tokens in upstream order (points, not-a-point pad when no box, box corners) then zero rows.
        counts: (N,) int64 tokens per prompt.
    """
    gauss, label_embed, input_size = prompt_tables(sam)
    scale = frame_scales(batch.original_sizes.to(gauss.device), int(sam.image_encoder.img_size))
    return _pack_torch(batch.points, batch.point_labels, batch.boxes, batch.has_box, batch.image_index, scale,
                       gauss, label_embed, input_size, _num_tokens(batch))


# ----------------------------------------------------------------------------- torch.library op
@torch.library.custom_op("samr1::prompt_pack", mutates_args=())
def _prompt_pack_op(points: torch.Tensor, point_labels: torch.Tensor, boxes: torch.Tensor, has_box: torch.Tensor,
                    image_index: torch.Tensor, scale: torch.Tensor, gauss: torch.Tensor, label_embed: torch.Tensor,
                    input_h: int, input_w: int, num_tokens: int, backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    chosen = select_backend(backend, label_embed.device)
    if chosen == "triton":
        from samr1.kernels.prompt_pack import prompt_pack_triton

        out = prompt_pack_triton(points, point_labels, boxes, has_box, image_index, scale, gauss, label_embed,
                                 (input_h, input_w), num_tokens)
    else:
        out = _pack_torch(points, point_labels, boxes, has_box, image_index, scale, gauss, label_embed,
                          (input_h, input_w), num_tokens)
    backends.record("prompt_pack", chosen)
    return out


@_prompt_pack_op.register_fake
def _(points, point_labels, boxes, has_box, image_index, scale, gauss, label_embed, input_h, input_w, num_tokens,
      backend):
    n, d = points.shape[0], label_embed.shape[1]
    return (label_embed.new_empty((n, num_tokens, d), dtype=torch.float32),
            label_embed.new_empty((n,), dtype=torch.int64))


# ----------------------------------------------------------------------------- public API
def pack_prompts(sam, batch: PromptBatch, backend: str = "auto",
                 num_images: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Pack a ragged prompt batch into the decoder's padded sparse tokens.

    Args:
        sam: a segment-anything ``Sam`` (its prompt encoder's weights and ``image_encoder.img_size``).
        batch: the prompts (ORIGINAL pixels), on the model's device; validated first.
        backend: "auto", "torch" (reference) or "triton" (one kernel launch; CUDA tensors, or CPU tensors
            with TRITON_INTERPRET=1); see the module docstring.
        num_images: when given, ``batch.original_sizes`` must have that many rows.

    Returns:
        tokens: (N, T, D) float32 on the model's device, T = max tokens per prompt, D =
            ``prompt_encoder.embed_dim``; row n's first ``counts[n]`` rows equal upstream
            ``PromptEncoder(points, boxes, None)[0][0]`` for prompt n alone; the rest are zeros.
        counts: (N,) int64.

    Raises:
        PromptError: a malformed batch, or a batch on another device than the model (says how to fix it).
        ValueError: unknown backend, or one this op has no body for / the wrong device for.
        RuntimeError: an explicitly requested backend is unavailable (with how to get it).
    """
    if backend not in backends.BACKENDS:
        raise ValueError(f"backend must be one of {backends.BACKENDS}, got {backend!r}")
    batch.validate(num_images)
    gauss, label_embed, input_size = prompt_tables(sam)
    dev = label_embed.device
    if batch.device != dev:
        raise PromptError(f"prompt batch is on {batch.device} but SAM is on {dev}; use batch.to({str(dev)!r})")
    scale = frame_scales(batch.original_sizes, int(sam.image_encoder.img_size))
    return torch.ops.samr1.prompt_pack(batch.points, batch.point_labels, batch.boxes, batch.has_box,
                                       batch.image_index, scale, gauss, label_embed, input_size[0], input_size[1],
                                       _num_tokens(batch), backend)
