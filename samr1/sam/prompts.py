"""Ragged SAM prompt batches and their packing into the mask decoder's sparse tokens.

A GRPO step asks SAM for N = B x G masks: B distinct images, each with G completions, each completion a
box and 0..k points. :class:`PromptBatch` holds all N prompts of a step as padded tensors (points padded
with label -1), and :func:`pack_prompts` turns them into the sparse prompt tokens SAM's mask decoder
reads, exactly as upstream ``PromptEncoder.forward`` would for each prompt on its own:

    token order per prompt:  [point 0, ..., point k-1, (not-a-point if no box), (box corner 1, corner 2)]

The packing itself is the op :func:`samr1.ops.pack_prompts` (samr1/ops/prompt_pack.py: the torch
reference :func:`samr1.ops.pack_prompts_reference` and the Triton body); both names are re-exported here.
This module keeps the batch, its validation and the tables both bodies read (:func:`prompt_tables`,
:func:`frame_scales`).

Coordinate frames:
    * original pixels: (x, y) in the image as the user has it, ``0 <= x < W``, ``0 <= y < H``;
    * frame pixels: after SAM's ResizeLongestSide to ``sam.image_encoder.img_size`` (1024 for upstream
      SAM), i.e. ``x * (new_w / W)``, ``y * (new_h / H)`` with ``new_h, new_w`` from
      ``ResizeLongestSide.get_preprocess_shape``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import torch

from samr1.geometry import resize_longest_side

__all__ = [
    "PromptBatch",
    "PromptError",
    "frame_scales",
    "prompt_tables",
]


class PromptError(ValueError):
    """A prompt batch is malformed; the message says which field, which prompt, and how to fix it."""


@dataclass
class PromptBatch:
    """All prompts of one step, ragged point counts padded with label -1.

    Fields (N prompts, B distinct images, K = the largest point count, at least 1):
        image_index: (N,) int64, index into the step's distinct images (rows of ``original_sizes`` and of
            the B x 256 x 64 x 64 embedding tensor).
        boxes: (N, 4) float32, XYXY in ORIGINAL pixels; rows with ``has_box`` False are ignored (zeros).
        has_box: (N,) bool.
        points: (N, K, 2) float32, (x, y) in ORIGINAL pixels; padding rows are ignored (zeros).
        point_labels: (N, K) int64: 1 foreground, 0 background, -1 padding. Padding comes after every
            real point of a prompt (ragged counts).
        original_sizes: (B, 2) int64, (H, W) of each distinct image.

    Every prompt needs a box or at least one point. Build it with :meth:`from_lists`; check it with
    :meth:`validate` (``pack_prompts`` and ``decode_batch`` do).
    """

    image_index: torch.Tensor
    boxes: torch.Tensor
    has_box: torch.Tensor
    points: torch.Tensor
    point_labels: torch.Tensor
    original_sizes: torch.Tensor

    @classmethod
    def from_lists(
        cls,
        image_index: Sequence[int],
        boxes: Sequence[Sequence[float] | None],
        points: Sequence[Sequence[Sequence[float]]],
        labels: Sequence[Sequence[int]] | None,
        original_sizes: Sequence[Sequence[int]],
        device: str | torch.device = "cpu",
    ) -> PromptBatch:
        """Build a batch from Python lists (one entry per prompt).

        Args:
            image_index: N ints, which distinct image each prompt is for.
            boxes: N entries, each ``[x1, y1, x2, y2]`` in original pixels or None (no box).
            points: N lists of ``[x, y]`` in original pixels (possibly empty).
            labels: N lists of 0/1 labels parallel to ``points``; None means every point is foreground (1).
            original_sizes: B pairs ``(H, W)``.
            device: where the tensors go.

        Raises:
            PromptError: lists of different lengths, malformed boxes/points, labels not 0/1, or a prompt
                with neither a box nor points.
        """
        n = len(image_index)
        if len(boxes) != n or len(points) != n or (labels is not None and len(labels) != n):
            raise PromptError(
                f"image_index, boxes, points and labels must have one entry per prompt; got lengths "
                f"{n}, {len(boxes)}, {len(points)}, {'None' if labels is None else len(labels)}"
            )
        counts = [len(p) for p in points]
        k = max([1, *counts])
        # Plain Python lists first, one tensor per field at the end (per-element tensor writes are slow).
        box_l = [[0.0] * 4 for _ in range(n)]
        has_l = [False] * n
        pts_l = [[[0.0, 0.0] for _ in range(k)] for _ in range(n)]
        lab_l = [[-1] * k for _ in range(n)]
        for i in range(n):
            b = boxes[i]
            if b is not None:
                if len(b) != 4:
                    raise PromptError(f"boxes[{i}] must be [x1, y1, x2, y2] (4 numbers), got {list(b)!r}")
                box_l[i] = [float(v) for v in b]
                has_l[i] = True
            for j, p in enumerate(points[i]):
                if len(p) != 2:
                    raise PromptError(f"points[{i}][{j}] must be [x, y] (2 numbers), got {list(p)!r}")
                pts_l[i][j] = [float(p[0]), float(p[1])]
            if labels is None:
                lab_l[i][: counts[i]] = [1] * counts[i]
            else:
                if len(labels[i]) != counts[i]:
                    raise PromptError(
                        f"labels[{i}] has {len(labels[i])} entries but points[{i}] has {counts[i]}; "
                        "give one label (1 foreground, 0 background) per point"
                    )
                for j, v in enumerate(labels[i]):
                    if int(v) not in (0, 1):
                        raise PromptError(f"labels[{i}][{j}] = {v!r}; use 1 (foreground) or 0 (background)")
                    lab_l[i][j] = int(v)
        box_t = torch.tensor(box_l, dtype=torch.float32).reshape(n, 4)
        has_box = torch.tensor(has_l, dtype=torch.bool).reshape(n)
        pts = torch.tensor(pts_l, dtype=torch.float32).reshape(n, k, 2)
        lab = torch.tensor(lab_l, dtype=torch.int64).reshape(n, k)
        sizes = torch.tensor([[int(h), int(w)] for h, w in original_sizes], dtype=torch.int64).reshape(-1, 2)
        batch = cls(
            image_index=torch.tensor(list(image_index), dtype=torch.int64).reshape(n),
            boxes=box_t,
            has_box=has_box,
            points=pts,
            point_labels=lab,
            original_sizes=sizes,
        ).to(device)
        batch.validate()
        return batch

    # ------------------------------------------------------------------ helpers
    @property
    def num_prompts(self) -> int:
        return int(self.image_index.shape[0])

    @property
    def num_images(self) -> int:
        return int(self.original_sizes.shape[0])

    @property
    def device(self) -> torch.device:
        return self.image_index.device

    def to(self, device: str | torch.device) -> PromptBatch:
        """The same batch with every tensor on ``device``."""
        return PromptBatch(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def point_counts(self) -> torch.Tensor:
        """(N,) int64: real points per prompt (labels != -1)."""
        return (self.point_labels >= 0).sum(dim=1)

    def token_counts(self) -> torch.Tensor:
        """(N,) int64: sparse tokens per prompt, as upstream PromptEncoder makes them.

        points + 2 box corners, or points + 1 not-a-point pad when there is no box (upstream
        ``pad = boxes is None``).
        """
        return self.point_counts() + torch.where(self.has_box, 2, 1)

    def validate(self, num_images: int | None = None) -> None:
        """Check shapes, dtypes, devices and values; raise :class:`PromptError` saying what to fix.

        Args:
            num_images: when given (e.g. the embedding tensor's batch size), ``original_sizes`` must have
                that many rows.
        """
        t = {f.name: getattr(self, f.name) for f in fields(self)}
        for name, v in t.items():
            if not isinstance(v, torch.Tensor):
                raise PromptError(f"PromptBatch.{name} must be a torch.Tensor, got {type(v).__name__}")
        devs = {v.device for v in t.values()}
        if len(devs) != 1:
            raise PromptError(
                f"PromptBatch tensors are on different devices {sorted(map(str, devs))}; use batch.to(device)"
            )
        if self.image_index.ndim != 1:
            raise PromptError(f"image_index must have shape (N,), got {tuple(self.image_index.shape)}")
        n = self.image_index.shape[0]
        k = self.point_labels.shape[1] if self.point_labels.ndim == 2 else None
        expect = {  # name: (description, shape with None = any, dtypes)
            "image_index": ("(N,)", (n,), (torch.int64, torch.int32)),
            "boxes": ("(N, 4)", (n, 4), (torch.float32,)),
            "has_box": ("(N,)", (n,), (torch.bool,)),
            "point_labels": ("(N, K)", (n, None), (torch.int64, torch.int32)),
            "points": ("(N, K, 2)", (n, k, 2), (torch.float32,)),
            "original_sizes": ("(B, 2)", (None, 2), (torch.int64, torch.int32)),
        }
        for name, (desc, want, dtypes) in expect.items():
            v = t[name]
            ok = v.ndim == len(want) and all(w is None or w == s for w, s in zip(want, v.shape, strict=False))
            if not ok:
                sizes = f"N={n}" + (f", K={k} (from point_labels)" if "K" in desc and name == "points" else "")
                raise PromptError(f"PromptBatch.{name} must have shape {desc} ({sizes}), got {tuple(v.shape)}")
            if v.dtype not in dtypes:
                raise PromptError(
                    f"PromptBatch.{name} must have dtype {' or '.join(map(str, dtypes))}, got {v.dtype}"
                )
        if k == 0:
            raise PromptError("point_labels must have at least one column (K >= 1); pad with label -1")
        b = self.original_sizes.shape[0]
        if num_images is not None and b != num_images:
            raise PromptError(
                f"original_sizes has {b} rows but there are {num_images} images (embeddings); "
                "give one (H, W) per distinct image"
            )
        if b == 0 and n > 0:
            raise PromptError("original_sizes is empty but there are prompts; give one (H, W) per image")
        if n == 0:
            return
        if (self.original_sizes <= 0).any():
            raise PromptError(f"original_sizes must be positive (H, W) pairs, got {self.original_sizes.tolist()}")
        lo, hi = int(self.image_index.min()), int(self.image_index.max())
        if lo < 0 or hi >= b:
            bad = int((self.image_index < 0).nonzero()[0]) if lo < 0 else int((self.image_index >= b).nonzero()[0])
            raise PromptError(
                f"image_index[{bad}] = {int(self.image_index[bad])} is out of range for {b} images "
                f"(valid 0..{b - 1})"
            )
        lab = self.point_labels
        if ((lab < -1) | (lab > 1)).any():
            i, j = (((lab < -1) | (lab > 1)).nonzero()[0]).tolist()
            raise PromptError(f"point_labels[{i}, {j}] = {int(lab[i, j])}; use 1 (fg), 0 (bg) or -1 (padding)")
        real = lab >= 0
        # Ragged counts: every real point must come before the padding of its row.
        if k > 1 and (real[:, 1:] & ~real[:, :-1]).any():
            i = int((real[:, 1:] & ~real[:, :-1]).any(dim=1).nonzero()[0])
            raise PromptError(
                f"point_labels[{i}] = {lab[i].tolist()} has a real point after padding (-1); "
                "put padding at the end of each row"
            )
        empty = (~self.has_box) & (~real.any(dim=1))
        if empty.any():
            i = int(empty.nonzero()[0])
            raise PromptError(f"prompt {i} has neither a box nor points; SAM needs at least one of them")
        # Only the entries that are used (boxes with has_box, real points) must be finite.
        for name, used in (("boxes", self.has_box[:, None].expand(-1, 4)), ("points", real[..., None].expand(-1, -1, 2))):
            bad = used & ~torch.isfinite(t[name])
            if bad.any():
                i = int(bad.nonzero()[0, 0])
                raise PromptError(f"PromptBatch.{name} of prompt {i} holds NaN or infinite coordinates; drop that prompt")


def frame_scales(original_sizes: torch.Tensor, frame: int) -> torch.Tensor:
    """(B, 2) float64 ``(sx, sy) = (new_w / W, new_h / H)``: original pixels -> frame pixels.

    Same numbers as ``ResizeLongestSide(frame).apply_coords`` uses (computed in Python doubles).
    """
    rows = []
    for h, w in original_sizes.tolist():
        nh, nw = resize_longest_side(int(h), int(w), frame)
        rows.append((nw / w, nh / h))
    return torch.tensor(rows, dtype=torch.float64, device=original_sizes.device).reshape(-1, 2)


def prompt_tables(sam) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
    """The prompt encoder's constants, in the layout both pack backends read.

    Returns:
        gaussian: (2, D/2) float32, PositionEmbeddingRandom's random Fourier matrix.
        label_embed: (5, D) float32 rows: [0] background point, [1] foreground point, [2] box corner 1,
            [3] box corner 2 (``point_embeddings[0..3]``), [4] ``not_a_point_embed``.
        input_size: (H_in, W_in) = ``prompt_encoder.input_image_size`` (the frame PE normalises by).
    """
    pe = sam.prompt_encoder
    gauss = pe.pe_layer.positional_encoding_gaussian_matrix.detach().float()
    rows = [pe.point_embeddings[i].weight.detach().reshape(-1) for i in range(4)]
    rows.append(pe.not_a_point_embed.weight.detach().reshape(-1))
    label_embed = torch.stack(rows, 0).float()
    h_in, w_in = pe.input_image_size
    return gauss, label_embed, (int(h_in), int(w_in))


def __getattr__(name: str):
    # pack_prompts / pack_prompts_reference live in samr1.ops.prompt_pack (the op, beside its reference);
    # re-exported here lazily because that module imports this one.
    if name in ("pack_prompts", "pack_prompts_reference"):
        from samr1.ops import prompt_pack

        return getattr(prompt_pack, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
