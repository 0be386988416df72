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

Input checks, counters and multi-object answers (IoU of the union of the objects' masks) follow the SAM v1
engine's rules, from one place (:class:`samr1.engine.scoring.ScoringEngine`). A SAM 2 embedding store
(``samr1 embed --sam sam2.1_hiera_t``) holds every map of step 1 per image, so a filled store never runs the
encoder.

:func:`samr1.engine.reference_sam2.score_reference_sam2` (a ``SAM2ImagePredictor`` loop) is the reference.
"""

from __future__ import annotations

import os
import threading
import time
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from samr1.config import with_overrides
from samr1.engine.config import SamEngineConfig
from samr1.engine.frozen import frozen_on
from samr1.engine.kept import KeepsLogits
from samr1.engine.prompt_check import prompt_labels, prompt_points
from samr1.engine.scoring import ScoringEngine, distinct_masks, iou_excluding, n_objects, prompt_rows
from samr1.io import load_image
from samr1.lru import ByteLRU
from samr1.ops.mask_iou_sam2 import BACKENDS as SAM2_IOU_BACKENDS

__all__ = ["Sam2Engine", "store_layout"]

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


def store_layout(encoder: Any) -> list[tuple[str, tuple[int, ...]]]:
    """The layout of a SAM 2 embedding-store row for ``encoder`` (a :mod:`samr1.sam.sam2_encoder` encoder):
    ``[(name, (C, h, w)), ...]``, the image embedding first (the store's ``shape``), then the high-resolution
    maps, highest resolution first. ``encoder.encode`` returns them highest resolution first."""
    *high, embed = zip(("high_res_s0", "high_res_s1", "image_embed"), encoder.feature_shapes, strict=True)
    return [(n, tuple(int(v) for v in s)) for n, s in (embed, *high)]


class Sam2Engine(ScoringEngine, KeepsLogits):
    """Batched, cached SAM 2 scoring; :class:`samr1.engine.SamEngine` hands SAM 2 models to it.

    Args:
        sam: a ``sam2.modeling.sam2_base.SAM2Base`` (e.g. ``samr1.sam.load_sam("sam2.1_hiera_t")``); frozen.
        config: a :class:`samr1.engine.SamEngineConfig` (the settings below); keywords override its fields, as
            for :class:`samr1.engine.SamEngine`. ``engine.config`` is the effective config.
        encoder: image-encoder backend, "torch" (the reference), "onnx" (ONNX Runtime) or "tensorrt"; the
            config's encoder options (dtype, compile, cache_dir, max_batch, cpu_fallback) go to
            :func:`samr1.sam.sam2_encoder.make_sam2_encoder`.
        cache_bytes: byte budget of the image-feature LRU cache (one upstream entry is 16 MiB in fp32).
        multimask: ask for 3 masks and keep the one with the highest predicted score; False: one mask
            (SAM 2's dynamic multimask fallback applies, as in the predictor).
        device: where features and decoding live (default: the model's device).
        iou_backend: "auto" (C++ on CPU, Triton on CUDA, else "fused"), "cpp", "triton", "fused" (torch row
            blocks, never N x H x W) or "torch" (the reference); see :func:`samr1.ops.mask_iou_sam2`.
        threshold: mask logit threshold (``SAM2ImagePredictor``'s ``mask_threshold`` is 0.0).
        store: an optional SAM 2 :class:`samr1.store.EmbeddingStore` (``kind="sam2"``, built by ``samr1 embed
            --sam <SAM 2 kind>``), or its path, read before encoding: its rows hold every map the decoder
            reads (:func:`store_layout`), so a filled store never runs the encoder (``store_hits``). It must
            be of this model (model id) and layout; a SAM v1 store is refused (a StoreError naming 'kind').
        threads: accepted for API parity.
        decode_chunk: prompts per decoder call (default: 1 on the CPU, where batching measured slower, else 32).

    ``keep_logits = True`` keeps the last ``score`` call's low-res logits for :meth:`kept_logits`, as
    :class:`samr1.engine.SamEngine` does (:mod:`samr1.engine.kept`).
    """

    def __init__(self, sam: Any, config: SamEngineConfig | None = None, **options: Any):
        from samr1.sam.sam2_build import is_sam2_model, require_sam2

        require_sam2()
        if not is_sam2_model(sam):
            raise TypeError(f"sam must be a SAM 2 model (sam2 SAM2Base, see samr1.sam.load_sam('sam2.1_hiera_t')), "
                            f"got {type(sam).__name__}")
        cfg = self.config = with_overrides(SamEngineConfig, config, options, "Sam2Engine")
        encoder, store, iou_backend, decode_chunk = cfg.encoder, cfg.store, cfg.iou_backend, cfg.decode_chunk
        encoder_kwargs = cfg.encoder_options()
        if iou_backend not in SAM2_IOU_BACKENDS:
            raise ValueError(f"iou_backend must be one of {SAM2_IOU_BACKENDS} for SAM 2 models, got {iou_backend!r}")
        from samr1.sam.sam2_encoder import make_sam2_encoder

        self.sam, self.device = frozen_on(sam, cfg.device)
        # the image side (samr1.sam.sam2_encoder): torch, ONNX Runtime or TensorRT, artefacts cached on disk
        self.encoder = make_sam2_encoder(self.sam, backend=encoder, device=self.device, **encoder_kwargs)
        self.multimask = cfg.multimask
        self.iou_backend = iou_backend
        self.threshold = cfg.threshold
        self.threads = cfg.threads
        self.decode_chunk = decode_chunk or _DECODE_CHUNK.get(self.device.type, _DECODE_CHUNK_DEFAULT)
        self.cache_bytes = cfg.cache_bytes
        self.frame = int(self.sam.image_size)
        self._cache: ByteLRU[_Entry] = ByteLRU(self.cache_bytes, lambda e: e.nbytes)
        self._counters: dict[str, Any] = {"encoder_images": 0, "cache_hits": 0, "cache_misses": 0,
                                          "score_calls": 0, "answers_scored": 0, "answers_skipped": 0,
                                          "store_hits": 0, "store_nonfinite": 0, "store_damaged": 0}
        self._last: dict[str, Any] = {}
        self._lock = threading.RLock()
        self.store = self._open_store(store)

    @property
    def stats(self) -> dict[str, Any]:
        """Counters (``encoder_images``, ``cache_hits``, ``cache_misses``, ...) and last-call stage seconds."""
        with self._lock:
            out = dict(self._counters)
            out.update(self._last)
            out["cache_bytes_used"] = self._cache.nbytes
            out["cache_entries"] = len(self._cache)
        out["encoder_backend"] = self.encoder.name
        out["model"] = "sam2"
        # Every op's backend in the last score (None before the first), as SamEngine reports them: SAM 2
        # encodes prompts with its own (torch) prompt encoder; the IoU backend as the scoring thread recorded it.
        scored = "iou_backend" in out
        out["backends"] = {"prompt_pack": "torch" if scored else None, "mask_iou": out.get("iou_backend"),
                           "encoder": out["encoder_backend"]}
        return out

    # ------------------------------------------------------------------ image side
    def _encode(self, image: np.ndarray) -> _Entry:
        """SAM2ImagePredictor.set_image's features for one H x W x 3 uint8 image (by the encoder backend)."""
        *high_res, embed = self.encoder.encode([image])
        return _Entry(embed[0], [f[0] for f in high_res], tuple(image.shape[:2]))

    def _open_store(self, store: Any) -> Any:
        """The SAM 2 embedding store to read before encoding, or None: a path is opened read-only; an open
        store (or the opened one) must be a ``"sam2"`` store of this model with this model's layout."""
        if store is None:
            return None
        from samr1.store import EmbeddingStore, encoder_precision

        if isinstance(store, (str, os.PathLike)):
            store = EmbeddingStore.open(store, self.encoder.model_id, kind="sam2")
        elif not isinstance(store, EmbeddingStore):
            raise TypeError(f"store must be an EmbeddingStore or the path of one (samr1 embed --sam KIND --out DIR), "
                            f"got {type(store).__name__}")
        store.require(model_id=self.encoder.model_id, kind="sam2", layout=store_layout(self.encoder))
        if store.encoder is not None and encoder_precision(store.encoder) != encoder_precision(self.encoder.name):
            # same weights, other precision: usable, but not bit-comparable with fresh encodes
            warnings.warn(f"embedding store {store.path} was written by encoder {store.encoder!r} "
                          f"({encoder_precision(store.encoder)}), this engine encodes misses with "
                          f"{self.encoder.name!r} ({encoder_precision(self.encoder.name)}): features from the "
                          "store and fresh ones differ at the less precise of the two", stacklevel=3)
        return store

    def _from_store(self, key: str, size: tuple[int, int]) -> _Entry | None:
        """The entry of image ``key`` (original size ``size``) from the store, or None (no store, absent, or a
        damaged row: non-finite values would give NaN logits and a silent IoU of 0, so the image is encoded
        afresh, with a StoreWarning)."""
        if self.store is None:
            return None
        from samr1.store import StoreRowError, StoreWarning

        try:
            got = self.store.get_parts(key)
        except StoreRowError as exc:  # not what was written (digest or input size): encode afresh, and say so
            warnings.warn(f"{exc}; re-encoding the image. Rebuild the store with samr1 embed into a new folder",
                          StoreWarning, stacklevel=4)
            with self._lock:
                self._counters["store_damaged"] += 1
            return None
        if got is None:
            return None
        parts = [p.to(self.device, torch.float32) for p in got[0]]
        if not all(bool(torch.isfinite(p).all()) for p in parts):
            warnings.warn(f"embedding store {self.store.path}: the row of image {key} holds non-finite values (NaN "
                          "or inf); re-encoding the image. The store is damaged: rebuild it with samr1 embed into "
                          "a new folder", StoreWarning, stacklevel=4)
            with self._lock:
                self._counters["store_nonfinite"] += 1
            return None
        with self._lock:
            self._counters["store_hits"] += 1
        return _Entry(parts[0], parts[1:], size)  # the store's layout: image embedding first

    def _image_key(self, image: Any, field: str = "image") -> str:
        """The cache's (and the store's) key of ``image``'s pixels: what :class:`KeptLogits` rows are found by."""
        from samr1.store import image_key

        return image_key(load_image(image, field=field), self.store.hash if self.store is not None else None)

    def _lookup(self, images: Sequence[Any], fields: Sequence[str],
                keys: list[str] | None = None) -> tuple[list[int], list[_Entry]]:
        """(distinct index per input, entry per distinct image); each distinct image encoded at most once:
        served by the in-memory cache, else by the store, else by the encoder. ``keys``, when given, gets the
        content key of each distinct image appended (parallel to the entries)."""
        from samr1.store import image_key

        by_obj: dict[int, int] = {}
        by_key: dict[str, int] = {}
        entries: list[_Entry] = []
        index: list[int] = []
        for img, field in zip(images, fields, strict=True):
            j = by_obj.get(id(img))
            if j is None:
                arr = load_image(img, field=field)
                key = image_key(arr, self.store.hash if self.store is not None else None)  # the store's keys
                j = by_key.get(key)
                if j is None:
                    with self._lock:
                        entry = self._cache.get(key)
                        if entry is not None:
                            self._counters["cache_hits"] += 1
                    if entry is None:
                        entry = self._from_store(key, tuple(arr.shape[:2]))
                        encoded = entry is None
                        if encoded:
                            entry = self._encode(arr)
                        with self._lock:
                            self._counters["cache_misses"] += 1
                            self._counters["encoder_images"] += int(encoded)
                            self._cache.put(key, entry)
                    j = by_key[key] = len(entries)
                    entries.append(entry)
                    if keys is not None:
                        keys.append(key)
                by_obj[id(img)] = j
            index.append(j)
        return index, entries

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
        pts = prompt_points(answer)
        lab = prompt_labels(answer, len(pts))
        coords += [(float(x), float(y)) for x, y in pts]
        labels += [int(v) for v in lab]
        arr = np.asarray(coords, dtype=np.float32).reshape(-1, 2)
        # the predictor's normalize_coords=True: original pixels -> [0, 1] -> the square frame (aspect not kept)
        arr = arr / np.asarray([w, h], dtype=np.float32) * self.frame
        return arr, np.asarray(labels, dtype=np.int32)

    def _decode(self, entries: list[_Entry], img_index: list[int], answers: list[Any]) -> torch.Tensor:
        """N x h x w float32 low-res logits of the chosen mask per answer (input order), each distinct prompt
        decoded once (:meth:`_decode_distinct`)."""
        return self._decode_distinct(img_index, answers, lambda idx, ans: self._decode_prompts(entries, idx, ans))

    def _decode_prompts(self, entries: list[_Entry], img_index: list[int], answers: list[Any]) -> torch.Tensor:
        """:meth:`_decode` on every prompt as given (repeats included)."""
        n = len(answers)
        # the prompts were checked up front (check_prompts): each has a box or a point, finite numbers
        tokens = [self._prompt_tokens(a, entries[j].size) for a, j in zip(answers, img_index, strict=True)]
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
    def score(self, images: Sequence[Any], answers: Sequence[Any], gt_masks: Sequence[Any],
              ignore: Sequence[Any] | None = None) -> list[float]:
        """IoU per answer against its ground-truth mask, ignore pixels excluded (same contract as
        :meth:`SamEngine.score`)."""
        with torch.inference_mode():
            return self._score(images, answers, gt_masks, ignore)

    def _score_rows(self, images: Sequence[Any], answers: Sequence[Any], gt_masks: Sequence[Any],
                    ok: list[int], ignore: Sequence[Any] | None = None) -> tuple[list[float], dict[str, Any]]:
        """The fused path of :meth:`ScoringEngine._score` for the ok single-object answers ``ok``."""
        from samr1.ops import backends
        from samr1.ops.mask_iou_sam2 import mask_iou_sam2_grouped

        t0 = time.perf_counter()
        # --- features of the step's distinct images: cache, store, else one encode per image
        keys: list[str] = []
        fields = [f"images[{i}]" for i in ok]
        index, entries = self._lookup([images[i] for i in ok], fields, keys)
        self.check_sizes([answers[i] for i in ok], [f"answers[{i}]" for i in ok], [entries[j].size for j in index],
                         fields)
        t1 = self._now()
        # --- ground truths, loaded once per (mask object, image) and checked against their image's size. Its own
        # stage: counted inside the IoU stage it made that stage look as slow warm as cold
        gt_index, gts, _, ignores = distinct_masks(
            [gt_masks[i] for i in ok], [f"gt_masks[{i}]" for i in ok], index, [e.size for e in entries],
            None if ignore is None else [ignore[i] for i in ok], [f"ignore[{i}]" for i in ok])
        t_load = self._now()
        # --- batched decode of every prompt of the step
        low_res = self._decode(entries, index, [answers[i] for i in ok])
        t2 = self._now()
        # --- fused logits -> SAM 2 postprocess -> mask -> IoU for every prompt of the step in one call
        dev = low_res.device
        group = torch.as_tensor(gt_index, dtype=torch.long, device=dev)

        def count(masks: list[np.ndarray], groups: list[int], rows: list[int] | None, row_group: list[int] | None):
            logits, index = prompt_rows(low_res, group, rows, row_group)
            return mask_iou_sam2_grouped(logits, [torch.from_numpy(m).to(dev) for m in masks], index,
                                         threshold=self.threshold, backend=self.iou_backend)

        iou = iou_excluding(count, gts, ignores, gt_index)
        values = [float(v) for v in iou.tolist()]  # tolist: the device-to-host copy (and sync)
        t3 = time.perf_counter()
        self._keep(low_res, [keys[j] for j in index], [answers[i] for i in ok], [None] * len(ok),
                   [entries[j].size for j in index])
        return values, {"time_encode_s": t1 - t0, "time_load_s": t_load - t1, "time_decode_s": t2 - t_load,
                        "time_iou_s": t3 - t2, "iou_backend": backends.last("mask_iou_sam2"),
                        "step_images": len(entries), "step_prompts": len(ok)}

    def segment(self, image: Any, answer: Any) -> np.ndarray:
        """The H x W bool mask SAM 2 makes for ``answer`` (its own postprocess, original size)."""
        return self.segment_batch([image], [answer])[0]

    def segment_batch(self, images: Sequence[Any], answers: Sequence[Any]) -> list[np.ndarray]:
        """Masks for several (image, answer) pairs; each distinct image encoded once, one decode pass."""
        with torch.inference_mode():
            return self._segment_checked(images, answers)

    def _segment_parts(self, images: Sequence[Any], answers: Sequence[Any], names: Sequence[str],
                       fields: Sequence[str]) -> list[np.ndarray]:
        """:meth:`segment_batch` of single-object (or "no object") answers whose prompts were checked;
        ``names`` / ``fields`` name each answer and image in errors."""
        with torch.inference_mode():
            index, entries = self._lookup(list(images), list(fields))
            out = [np.zeros(entries[j].size, dtype=bool) for j in index]
            ok = [i for i, a in enumerate(answers) if n_objects(a) > 0]  # "no object" answers: empty masks
            self.check_sizes([answers[i] for i in ok], [names[i] for i in ok], [entries[index[i]].size for i in ok],
                             [fields[i] for i in ok])
            if ok:
                low_res = self._decode(entries, [index[i] for i in ok], [answers[i] for i in ok])
                for r, i in enumerate(ok):
                    out[i] = self._row_mask(low_res[r], None, entries[index[i]].size)
        return out

    def _row_mask(self, logits: torch.Tensor, input_size: Any, original_size: tuple[int, int]) -> np.ndarray:
        """The H x W bool mask of one h x w low-res logit map: SAM 2's postprocess (one bilinear resize to
        ``original_size`` (H, W); ``input_size`` is unused: SAM 2 squashes the whole frame), ``> threshold``.
        The one place both :meth:`segment_batch` and :meth:`kept_logits` make masks."""
        from samr1.ops.mask_iou_sam2 import postprocess_sam2_reference

        return (postprocess_sam2_reference(logits[None], original_size)[0] > self.threshold).cpu().numpy()
