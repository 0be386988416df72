"""The reward engine for SAM 2 models: the :class:`samr1.engine.SamEngine` API on SAM 2's pieces.

Same three stages as the SAM v1 engine, with SAM 2's rules:

1. images are de-duplicated by content; each distinct image is encoded ONCE (``forward_image`` +
   ``_prepare_backbone_features``, ``no_mem_embed`` added to the lowest-resolution map as
   ``SAM2ImagePredictor.set_image`` does) and the cache keeps what SAM 2's decoder needs: the image
   embedding (C x 64 x 64) and the high-resolution backbone features (32 x 256 x 256, 64 x 128 x 128);
2. all prompts of the step are decoded in batched passes across images with SAM 2's prompt encoder and
   mask decoder; embeddings and high-res features are gathered per prompt. A box becomes two corner
   points (labels 2, 3) before the clicks, as the predictor does, and prompts are grouped by token count
   (SAM 2 pads every prompt with one "not a point" token; padding shorter prompts further would change
   the decoder's attention, so ragged prompts are not padded);
3. the best of the three masks by predicted score (``multimask``), then SAM 2's postprocess (one bilinear
   resize of the low-res logits to the original size, the image having been squashed to the square frame
   without keeping its aspect ratio) and ``> mask_threshold``, counted by the fused
   :func:`samr1.ops.mask_iou_sam2.mask_iou_sam2`.

:func:`samr1.engine.reference_sam2.score_reference_sam2` (a ``SAM2ImagePredictor`` loop) is the reference.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from samr1.engine.frozen import frozen_on
from samr1.io import InputError, load_image, load_mask

__all__ = ["Sam2Engine"]

# Prompts per decoder call. Each prompt carries its image's high-res features (32 x 256 x 256 + 64 x 128 x 128
# floats = 12 MiB), so a B x G = 128 step in one call would hold 1.5 GiB of gathered copies: 32 at most. On the
# CPU batching SAM 2's decoder does not pay: sam2_hiera_t, 16 prompts of one 480 x 640 image, 2 threads: 93 ms
# per prompt one at a time, 104 ms in calls of 4, 152 ms in one call of 16 (the per-prompt upsampling with
# the high-res maps is memory-bound), so the CPU default is one prompt per call.
_DECODE_CHUNK = {"cpu": 1}
_DECODE_CHUNK_DEFAULT = 32


class _Entry:
    __slots__ = ("embed", "high_res", "size", "nbytes")

    def __init__(self, embed: torch.Tensor, high_res: list[torch.Tensor], size: tuple[int, int]):
        self.embed = embed  # C x h x w (no_mem_embed already added)
        self.high_res = high_res  # [32 x 4h x 4w, 64 x 2h x 2w] upstream
        self.size = size  # original (H, W)
        self.nbytes = embed.numel() * embed.element_size() + sum(t.numel() * t.element_size() for t in high_res)


class Sam2Engine:
    """Batched, cached SAM 2 scoring; :class:`samr1.engine.SamEngine` hands SAM 2 models to it.

    Args:
        sam: a ``sam2.modeling.sam2_base.SAM2Base`` (e.g. ``samr1.sam.load_sam("sam2.1_hiera_t")``); frozen.
        encoder: "torch" (the only SAM 2 encoder backend here).
        cache_bytes: byte budget of the image-feature LRU cache (one upstream entry is 16 MiB in fp32).
        multimask: ask for 3 masks and keep the one with the highest predicted score; False: one mask
            (SAM 2's dynamic multimask fallback applies, as in the predictor).
        device: where features and decoding live (default: the model's device).
        iou_backend: "auto" / "fused" (row-blocked, never N x H x W) or "torch" (the reference).
        threshold: mask logit threshold (``SAM2ImagePredictor``'s ``mask_threshold`` is 0.0).
        store, threads: accepted for API parity; an embedding store is not supported for SAM 2 (raises).
        decode_chunk: prompts per decoder call (default: 1 on the CPU, where batching measured slower, else 32).
    """

    def __init__(self, sam: Any, encoder: str = "torch", cache_bytes: int = 2 << 30, multimask: bool = True,
                 device: str | torch.device | None = None, iou_backend: str = "auto", store: Any = None,
                 threshold: float = 0.0, threads: int | None = None, decode_chunk: int | None = None,
                 **encoder_kwargs: Any):
        from samr1.sam.sam2_build import is_sam2_model, require_sam2

        require_sam2()
        if not is_sam2_model(sam):
            raise TypeError(f"sam must be a SAM 2 model (sam2 SAM2Base, see samr1.sam.load_sam('sam2.1_hiera_t')), "
                            f"got {type(sam).__name__}")
        if encoder != "torch":
            raise ValueError(f"encoder {encoder!r} is not available for SAM 2 models; use encoder='torch'")
        if store is not None:
            raise ValueError("store: embedding stores hold SAM v1 embeddings only; pass store=None for SAM 2 models")
        if encoder_kwargs:
            raise TypeError(f"unexpected arguments for a SAM 2 engine: {sorted(encoder_kwargs)}")
        if cache_bytes < 0:
            raise ValueError(f"cache_bytes must be >= 0, got {cache_bytes}")
        if iou_backend not in ("auto", "fused", "torch"):
            raise ValueError(f"iou_backend must be 'auto', 'fused' or 'torch' for SAM 2 models, got {iou_backend!r}")
        from sam2.utils.transforms import SAM2Transforms

        self.sam, self.device = frozen_on(sam, device)
        self.multimask = bool(multimask)
        self.iou_backend = iou_backend
        self.threshold = float(threshold)
        self.threads = threads
        if decode_chunk is not None and (not isinstance(decode_chunk, int) or decode_chunk < 1):
            raise ValueError(f"decode_chunk must be a positive int (prompts per decoder call), got {decode_chunk!r}")
        self.decode_chunk = decode_chunk or _DECODE_CHUNK.get(self.device.type, _DECODE_CHUNK_DEFAULT)
        self.cache_bytes = int(cache_bytes)
        self.frame = int(self.sam.image_size)
        s = int(self.sam.sam_image_embedding_size)
        # feature map sizes, highest resolution first (the predictor hard-codes 256/128/64 for the 1024 frame)
        self._feat_sizes = [(4 * s, 4 * s), (2 * s, 2 * s), (s, s)]
        self._transforms = SAM2Transforms(resolution=self.frame, mask_threshold=self.threshold)
        self._cache: OrderedDict[str, _Entry] = OrderedDict()
        self._cache_used = 0
        self._counters: dict[str, Any] = {"encoder_images": 0, "cache_hits": 0, "cache_misses": 0,
                                          "score_calls": 0, "answers_scored": 0, "answers_skipped": 0}
        self._last: dict[str, Any] = {}
        self._lock = threading.RLock()

    @property
    def stats(self) -> dict[str, Any]:
        """Counters (``encoder_images``, ``cache_hits``, ``cache_misses``, ...) and last-call stage seconds."""
        with self._lock:
            out = dict(self._counters)
            out.update(self._last)
            out["cache_bytes_used"] = self._cache_used
            out["cache_entries"] = len(self._cache)
        out["encoder_backend"] = "torch"
        out["model"] = "sam2"
        return out

    # ------------------------------------------------------------------ image side
    def _encode(self, image: np.ndarray) -> _Entry:
        """SAM2ImagePredictor.set_image's features for one H x W x 3 uint8 image."""
        x = self._transforms(image)[None].to(self.device)
        backbone_out = self.sam.forward_image(x)
        _, vision_feats, _, _ = self.sam._prepare_backbone_features(backbone_out)
        if self.sam.directly_add_no_mem_embed:  # as the predictor does for single images
            vision_feats[-1] = vision_feats[-1] + self.sam.no_mem_embed
        feats = [f.permute(1, 2, 0).reshape(1, -1, *fs)[0]
                 for f, fs in zip(vision_feats[::-1], self._feat_sizes[::-1], strict=True)][::-1]
        return _Entry(feats[-1].contiguous(), [f.contiguous() for f in feats[:-1]], tuple(image.shape[:2]))

    def _lookup(self, images: Sequence[Any], fields: Sequence[str]) -> tuple[list[int], list[_Entry]]:
        """(distinct index per input, entry per distinct image); each distinct image encoded at most once."""
        from samr1.store import image_key

        by_obj: dict[int, int] = {}
        by_key: dict[str, int] = {}
        entries: list[_Entry] = []
        index: list[int] = []
        for img, field in zip(images, fields, strict=True):
            j = by_obj.get(id(img))
            if j is None:
                arr = load_image(img, field=field)
                key = image_key(arr)
                j = by_key.get(key)
                if j is None:
                    with self._lock:
                        entry = self._cache.get(key)
                        if entry is not None:
                            self._cache.move_to_end(key)
                            self._counters["cache_hits"] += 1
                    if entry is None:
                        entry = self._encode(arr)
                        with self._lock:
                            self._counters["cache_misses"] += 1
                            self._counters["encoder_images"] += 1
                            self._insert(key, entry)
                    j = by_key[key] = len(entries)
                    entries.append(entry)
                by_obj[id(img)] = j
            index.append(j)
        return index, entries

    def _insert(self, key: str, entry: _Entry) -> None:
        if entry.nbytes > self.cache_bytes:
            return
        self._cache[key] = entry
        self._cache_used += entry.nbytes
        while self._cache_used > self.cache_bytes:
            _, old = self._cache.popitem(last=False)
            self._cache_used -= old.nbytes

    # ------------------------------------------------------------------ prompt side
    def _prompt_tokens(self, answer: Any, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """(K x 2 float32 coords in the frame, K int32 labels): box corners (2, 3) first, then the clicks."""
        h, w = size
        coords: list[tuple[float, float]] = []
        labels: list[int] = []
        if answer.bbox is not None:
            x0, y0, x1, y1 = (float(v) for v in answer.bbox)
            coords += [(x0, y0), (x1, y1)]
            labels += [2, 3]
        pts = list(answer.points or [])
        lab = list(getattr(answer, "labels", None) or [1] * len(pts))
        coords += [(float(x), float(y)) for x, y in pts]
        labels += [int(v) for v in lab]
        arr = np.asarray(coords, dtype=np.float32).reshape(-1, 2)
        # the predictor's normalize_coords=True: original pixels -> [0, 1] -> the square frame (aspect not kept)
        arr = arr / np.asarray([w, h], dtype=np.float32) * self.frame
        return arr, np.asarray(labels, dtype=np.int32)

    def _decode(self, entries: list[_Entry], img_index: list[int], answers: list[Any]) -> torch.Tensor:
        """N x h x w float32 low-res logits of the chosen mask per answer (input order)."""
        n = len(answers)
        tokens = [self._prompt_tokens(a, entries[j].size) for a, j in zip(answers, img_index, strict=True)]
        for i, (c, _) in enumerate(tokens):
            if len(c) == 0:
                raise InputError(f"answers[{i}]: an ok answer needs a box or at least one point")
        groups: dict[int, list[int]] = {}
        for i, (c, _) in enumerate(tokens):
            groups.setdefault(len(c), []).append(i)
        embed_all = torch.stack([e.embed for e in entries])
        high_all = [torch.stack([e.high_res[k] for e in entries]) for k in range(len(entries[0].high_res))]
        image_pe = self.sam.sam_prompt_encoder.get_dense_pe()
        out: torch.Tensor | None = None
        for members in groups.values():
            for c0 in range(0, len(members), self.decode_chunk):
                rows = members[c0:c0 + self.decode_chunk]
                coords = torch.from_numpy(np.stack([tokens[i][0] for i in rows])).to(self.device)
                labels = torch.from_numpy(np.stack([tokens[i][1] for i in rows])).to(self.device)
                idx = torch.as_tensor([img_index[i] for i in rows], dtype=torch.long, device=self.device)
                sparse, dense = self.sam.sam_prompt_encoder(points=(coords, labels), boxes=None, masks=None)
                low_res, scores, _, _ = self.sam.sam_mask_decoder(
                    image_embeddings=embed_all.index_select(0, idx), image_pe=image_pe,
                    sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                    multimask_output=self.multimask, repeat_image=False,
                    high_res_features=[f.index_select(0, idx) for f in high_all])
                # SAM2ImagePredictor + np.argmax: the first mask with the highest predicted score
                best = scores.argmax(dim=1)
                chosen = low_res[torch.arange(len(rows), device=low_res.device), best].float()
                if out is None:
                    out = torch.empty((n, *chosen.shape[1:]), dtype=torch.float32, device=chosen.device)
                out[torch.as_tensor(rows, dtype=torch.long, device=chosen.device)] = chosen
        assert out is not None
        return out

    # ------------------------------------------------------------------ public API
    def score(self, images: Sequence[Any], answers: Sequence[Any], gt_masks: Sequence[Any]) -> list[float]:
        """IoU per answer against its ground-truth mask (same contract as :meth:`SamEngine.score`)."""
        with torch.inference_mode():
            return self._score(images, answers, gt_masks)

    def _score(self, images: Sequence[Any], answers: Sequence[Any], gt_masks: Sequence[Any]) -> list[float]:
        from samr1.ops.mask_iou_sam2 import mask_iou_sam2

        n = len(answers)
        if len(images) != n or len(gt_masks) != n:
            raise InputError(f"images ({len(images)}), answers ({n}) and gt_masks ({len(gt_masks)}) must be parallel lists")
        if any(len(getattr(a, "objects", None) or ()) > 1 for a in answers if getattr(a, "ok", False)):
            raise InputError("multi-object answers are not supported with SAM 2 models yet; give one box per answer")
        t0 = time.perf_counter()
        ok = [i for i, a in enumerate(answers) if getattr(a, "ok", False)]
        with self._lock:
            self._counters["score_calls"] += 1
            self._counters["answers_scored"] += len(ok)
            self._counters["answers_skipped"] += n - len(ok)
        ious = [0.0] * n
        if not ok:
            return ious
        index, entries = self._lookup([images[i] for i in ok], [f"images[{i}]" for i in ok])
        t1 = time.perf_counter()
        low_res = self._decode(entries, index, [answers[i] for i in ok])
        t2 = time.perf_counter()
        # group rows by (ground-truth object, image) so each mask is loaded and moved once
        groups: dict[tuple[int, int], list[int]] = {}
        for r, i in enumerate(ok):
            groups.setdefault((id(gt_masks[i]), index[r]), []).append(r)
        for (_, j), rows in groups.items():
            i0 = ok[rows[0]]
            gt = load_mask(gt_masks[i0], field=f"gt_masks[{i0}]", expected_size=entries[j].size)
            if gt.shape != entries[j].size:
                raise InputError(f"gt_masks[{i0}]: mask is {gt.shape[0]}x{gt.shape[1]} but its image is "
                                 f"{entries[j].size[0]}x{entries[j].size[1]} (H x W); masks are at the original size")
            sel = torch.as_tensor(rows, dtype=torch.long, device=low_res.device)
            iou, _, _ = mask_iou_sam2(low_res.index_select(0, sel), torch.from_numpy(gt).to(low_res.device),
                                      threshold=self.threshold, backend=self.iou_backend)
            for r, v in zip(rows, iou.tolist(), strict=True):
                ious[ok[r]] = float(v)
        t3 = time.perf_counter()
        with self._lock:
            self._last = {"time_encode_s": t1 - t0, "time_decode_s": t2 - t1, "time_iou_s": t3 - t2,
                          "iou_backend": "torch" if self.iou_backend == "torch" else "fused",
                          "step_images": len(entries), "step_prompts": len(ok)}
        return ious

    def segment(self, image: Any, answer: Any) -> np.ndarray:
        """The H x W bool mask SAM 2 makes for ``answer`` (its own postprocess, original size)."""
        return self.segment_batch([image], [answer])[0]

    def segment_batch(self, images: Sequence[Any], answers: Sequence[Any]) -> list[np.ndarray]:
        """Masks for several (image, answer) pairs; each distinct image encoded once, one decode pass."""
        from samr1.ops.mask_iou_sam2 import postprocess_sam2_reference

        if len(images) != len(answers):
            raise InputError(f"images ({len(images)}) and answers ({len(answers)}) must be parallel lists")
        with torch.inference_mode():
            index, entries = self._lookup(list(images), [f"images[{i}]" for i in range(len(images))])
            out = [np.zeros(entries[j].size, dtype=bool) for j in index]
            ok = [i for i, a in enumerate(answers) if getattr(a, "ok", False)]
            if ok:
                low_res = self._decode(entries, [index[i] for i in ok], [answers[i] for i in ok])
                for r, i in enumerate(ok):
                    up = postprocess_sam2_reference(low_res[r][None], entries[index[i]].size)
                    out[i] = (up[0] > self.threshold).cpu().numpy()
        return out
