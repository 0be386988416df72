"""The reward engine: scores a whole rollout step at once.

:class:`SamEngine` turns (image, parsed answer, ground-truth mask) triples into IoUs:

1. images are de-duplicated by content and their embeddings come from the :class:`EmbeddingCache`
   (misses of the step encoded in ONE batched encoder call; SAM is frozen, so an image is never encoded
   twice while it stays in the cache or an embedding store);
2. all prompts of the step are decoded in one batched pass across images (image-side work once per image);
3. the fused logits -> mask -> IoU op counts intersections and unions straight from the 256 x 256 logits,
   never materialising the full-resolution masks.

:func:`samr1.engine.reference.score_reference` is the straightforward path the engine is tested against.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from segment_anything.modeling import Sam

from samr1.config import ConfigError, with_overrides
from samr1.engine.config import SamEngineConfig
from samr1.engine.frozen import frozen_on
from samr1.engine.kept import KeepsLogits
from samr1.engine.prompt_check import prompt_labels, prompt_points
from samr1.engine.scoring import ScoringEngine, distinct_masks, iou_excluding, n_objects, prompt_rows
from samr1.threads import torch_threads

__all__ = ["SamEngine"]


class SamEngine(ScoringEngine, KeepsLogits):
    """Batched, cached SAM scoring for GRPO rewards and inference.

    Args:
        sam: a segment-anything ``Sam`` (e.g. from :func:`samr1.sam.load_sam`); frozen, eval mode.
        config: a :class:`samr1.engine.SamEngineConfig` holding the settings below (default: its defaults).
            The settings may also be given by keyword (``SamEngine(sam, encoder="onnx", threads=2)``); keywords
            given together with ``config`` override its fields. ``engine.config`` is the effective config.
        encoder: image-encoder backend: "torch", "onnx" or "tensorrt" (see :mod:`samr1.sam.encoder`).
        cache_bytes: byte budget of the embedding LRU cache (one ViT embedding is 4 MiB in fp32).
        multimask: ask SAM for 3 masks and keep the one with the highest predicted IoU (Seg-Zero's
            evaluation convention); False asks for one mask.
        device: where embeddings and decoding live (default: the model's device).
        iou_backend: backend of :func:`samr1.ops.mask_iou_from_logits` ("auto", "torch", "cpp", "triton").
        store: an optional :class:`samr1.store.EmbeddingStore` (or the path of one, built by ``samr1 embed``)
            read before encoding; it must have been built with this model (checked by model id).
        threshold: mask logit threshold (SAM's ``mask_threshold`` is 0.0).
        threads: CPU threads one ``score`` / ``segment_batch`` call uses: the decoder's worker threads (see
            :func:`samr1.sam.decoder.decode_batch`) and torch's intra-op threads (the torch encoder) during
            the call. None (default): ``torch.get_num_threads()`` at call time. The fused C++ IoU op has its
            own thread setting (``SAMR1_CPP_THREADS``, see :func:`samr1.ops.backends.cpp_threads`). IoUs do not
            depend on either (every decode op runs single-threaded in a worker; intersections and unions are
            integer counts). Ignored by the decoder on CUDA.
        dtype, compile, cache_dir, max_batch, cpu_fallback: encoder options passed to
            :func:`samr1.sam.encoder.make_encoder` when set (``max_batch`` defaults to 1 for the torch encoder on
            the CPU).

    ``stats`` holds counters (``encoder_images``, ``cache_hits``, ``cache_misses``, ...), the backend that
    ran each stage and per-stage seconds of the last ``score`` call (``time_*``), for a trainer to log.

    ``keep_logits = True`` keeps the last ``score`` call's low-res logits for :meth:`kept_logits` (the rollout
    log's masks without a second decode; :mod:`samr1.engine.kept`).
    """

    def __new__(cls, sam: Any = None, *args: Any, **kwargs: Any):
        # A SAM 2 model (the sam2 extra) gets the same API from its own engine: SAM 2's decoder needs the
        # high-res backbone features and its own postprocess (samr1/engine/sam2_engine.py)
        from samr1.sam.sam2_build import is_sam2_model

        if cls is SamEngine and is_sam2_model(sam):
            from samr1.engine.sam2_engine import Sam2Engine

            return Sam2Engine(sam, *args, **kwargs)
        return super().__new__(cls)

    def __init__(self, sam: Sam, config: SamEngineConfig | None = None, **options: Any):
        from samr1.engine.cache import EmbeddingCache
        from samr1.sam.encoder import make_encoder

        if not isinstance(sam, Sam):
            raise TypeError(f"sam must be a segment_anything Sam model (see samr1.sam.load_sam), got {type(sam).__name__}")
        cfg = self.config = with_overrides(SamEngineConfig, config, options, "SamEngine")
        if cfg.decode_chunk is not None:
            raise TypeError("decode_chunk applies to SAM 2 models only (prompts per SAM 2 decoder call); leave it "
                            "None for SAM models")
        if cfg.iou_backend == "fused":
            raise ConfigError("iou_backend 'fused' is the SAM 2 engine's; SAM models take auto, torch, cpp or triton",
                              field="iou_backend")
        self.threads = cfg.threads
        self.sam, self.device = frozen_on(sam, cfg.device)
        self.multimask = cfg.multimask
        self.iou_backend = cfg.iou_backend
        self.threshold = cfg.threshold
        encoder_kwargs = cfg.encoder_options()
        if self.device.type == "cpu" and cfg.encoder == "torch":
            # On the CPU a batched ViT pass costs more per image than single images (ViT-B: 28.7 s vs 20.3 s
            # per image at batch 2 on the 2-core machine; bench/RESULTS.md): encode misses one at a time.
            encoder_kwargs.setdefault("max_batch", 1)
        self.encoder = make_encoder(self.sam, backend=cfg.encoder, device=self.device, **encoder_kwargs)
        store = cfg.store
        if isinstance(store, (str, os.PathLike)):
            from samr1.store import EmbeddingStore

            store = EmbeddingStore.open(store, self.encoder.model_id)
        self.cache = EmbeddingCache(self.encoder, cache_bytes=cfg.cache_bytes, device=self.device, store=store)
        self._counters: dict[str, Any] = {"score_calls": 0, "answers_scored": 0, "answers_skipped": 0}
        self._last: dict[str, Any] = {}
        self._lock = threading.Lock()  # score() may be called from several threads (e.g. a server)

    # ------------------------------------------------------------------ public API
    @property
    def stats(self) -> dict[str, Any]:
        """Counters and timings: cache/encoder counts, backends, per-stage seconds of the last call."""
        out = dict(self.cache.stats)
        with self._lock:
            out.update(self._counters)
            out.update(self._last)
        out["encoder_backend"] = self.encoder.name
        # Every op's backend in the last score (None before the first): the IoU one as recorded in the
        # scoring thread (samr1.ops.backends keeps per-thread records), prompt packing by that op's rule
        # for the "auto" the decoder packs with on the model's device (it packs in a worker thread on
        # the CPU, whose record this thread cannot see), the encoder by name.
        from samr1.ops import prompt_pack

        scored = "iou_backend" in out
        out["backends"] = {"prompt_pack": prompt_pack.select_backend("auto", self.device) if scored else None,
                           "mask_iou": out.get("iou_backend"), "encoder": self.encoder.name}
        return out

    def _threads(self) -> int:
        """The thread count of a call: the ``threads`` setting, else torch's current one."""
        return self.threads if self.threads is not None else torch.get_num_threads()

    def _thread_scope(self) -> contextlib.AbstractContextManager:
        """Torch intra-op threads of the calling thread set to the engine's count for one call (CPU only)."""
        n = self._threads()
        if self.device.type != "cpu" or n == torch.get_num_threads():
            return contextlib.nullcontext()
        return torch_threads(n)

    def score(self, images: Sequence[Any], answers: Sequence[Any], gt_masks: Sequence[Any],
              ignore: Sequence[Any] | None = None) -> list[float]:
        """IoU per answer against its ground-truth mask, for a whole rollout step at once.

        Args:
            images: parallel to ``answers``; PIL images, H x W x 3 uint8 arrays or paths. Repeated images
                (same object or equal pixels) are encoded once.
            answers: :class:`samr1.answer.Answer` (box XYXY and points (x, y) in original image pixels); an
                answer that is not ``ok`` scores 0.0.
            gt_masks: parallel to ``answers``; H x W masks of each image's original size (bool/uint8
                arrays, PIL images, COCO RLE dicts or paths).
            ignore: optional, parallel to ``answers``: per answer None or an H x W mask (any form ``gt_masks``
                takes) of pixels that count in neither the intersection nor the union (ReasonSeg's "ignore"
                regions; the rule of :func:`samr1.metrics.sample_counts`).

        Returns:
            IoU per answer (float in [0, 1]), computed on the mask exactly as SAM's postprocessing makes it.

        Raises:
            InputError: lengths differ, an image or mask is malformed, or a mask's size is not its image's
                (the message names the index and field).
        """
        with self._thread_scope(), torch.inference_mode():
            return self._score(images, answers, gt_masks, ignore)

    def _score_rows(self, images: Sequence[Any], answers: Sequence[Any], gt_masks: Sequence[Any],
                    ok: list[int], ignore: Sequence[Any] | None = None) -> tuple[list[float], dict[str, Any]]:
        """The fused path of :meth:`ScoringEngine._score` for the ok single-object answers ``ok``."""
        t0 = time.perf_counter()
        # --- embeddings of the step's distinct images: the cache loads each image once (by object, then by
        # content), serves hits, reads the store, and encodes all misses in ONE batched encoder call
        fields = [f"images[{i}]" for i in ok]
        step = self.cache.lookup([images[i] for i in ok], fields)
        self.check_sizes([answers[i] for i in ok], [f"answers[{i}]" for i in ok],
                         [step.original_sizes[step.index[r]] for r in range(len(ok))], fields)
        t1 = self._now()
        # --- ground truths, loaded once per (mask object, image) and checked against their image's size
        gt_index, distinct_gts, gt_img, ignores = distinct_masks(
            [gt_masks[i] for i in ok], [f"gt_masks[{i}]" for i in ok], step.index, step.original_sizes,
            None if ignore is None else [ignore[i] for i in ok], [f"ignore[{i}]" for i in ok])
        t_load = self._now()
        # --- batched decode of every prompt of the step
        low_res = self._decode(step.embeddings, step.original_sizes, step.index, [answers[i] for i in ok])
        t2 = self._now()
        # --- fused logits -> mask -> IoU, grouped by (image, ground truth)
        from samr1.ops import last_backend, mask_iou_grouped

        dev = low_res.device  # masks go where the logits are (the fused op wants one device)
        group = torch.as_tensor(gt_index, dtype=torch.long, device=dev)

        def count(masks: list[np.ndarray], groups: list[int], rows: list[int] | None, row_group: list[int] | None):
            logits, index = prompt_rows(low_res, group, rows, row_group)
            return mask_iou_grouped(
                logits, [torch.from_numpy(m).to(dev, non_blocking=True) for m in masks], index,
                [tuple(step.input_sizes[gt_img[g]]) for g in groups], [m.shape for m in masks],
                threshold=self.threshold, backend=self.iou_backend, frame=self.sam.image_encoder.img_size)

        iou = iou_excluding(count, distinct_gts, ignores, gt_index)
        values = iou.tolist()  # one device-to-host copy (and sync) for the whole step
        t3 = time.perf_counter()
        rows = [step.index[r] for r in range(len(ok))]
        self._keep(low_res, [step.keys[j] for j in rows], [answers[i] for i in ok],
                   [tuple(step.input_sizes[j]) for j in rows], [step.original_sizes[j] for j in rows])
        return values, {
            "time_encode_s": t1 - t0, "time_load_s": t_load - t1, "time_decode_s": t2 - t_load,
            "time_iou_s": t3 - t2, "iou_backend": last_backend(), "step_images": len(step.keys),
            "step_prompts": len(ok), "threads": self._threads(),
        }

    def _check_image(self, arr: np.ndarray, field: str) -> None:
        """The cache's own check (:func:`samr1.engine.cache.check_resizable`): SAM resizes the long side to its
        frame, so a very thin image's short side would become 0 px."""
        from samr1.engine.cache import check_resizable

        check_resizable(arr, getattr(self.encoder, "frame", None), field)

    @torch.inference_mode()
    def segment(self, image: Any, answer: Any) -> np.ndarray:
        """The H x W bool mask SAM makes for ``answer`` on ``image`` (SAM's own postprocessing, at the
        original size); an answer that is not ``ok`` gives an all-False mask."""
        return self.segment_batch([image], [answer])[0]

    def segment_batch(self, images: Sequence[Any], answers: Sequence[Any]) -> list[np.ndarray]:
        """Masks for several (image, answer) pairs in one encoder call and one decode pass."""
        with self._thread_scope(), torch.inference_mode():
            return self._segment_checked(images, answers)

    def _segment_parts(self, images: Sequence[Any], answers: Sequence[Any], names: Sequence[str],
                       fields: Sequence[str]) -> list[np.ndarray]:
        """:meth:`segment_batch` of single-object (or "no object") answers whose prompts were checked;
        ``names`` / ``fields`` name each answer and image in errors."""
        out: list[np.ndarray | None] = [None] * len(answers)
        ok = [i for i, a in enumerate(answers) if n_objects(a) > 0]  # "no object" answers: empty masks
        step = self.cache.lookup(list(images), fields)  # every image is checked, even those of failed answers
        self.check_sizes([answers[i] for i in ok], [names[i] for i in ok],
                         [step.original_sizes[step.index[i]] for i in ok], [fields[i] for i in ok])
        for i in range(len(answers)):
            if i not in ok:
                out[i] = np.zeros(step.original_sizes[step.index[i]], dtype=bool)
        if ok:
            rows = [step.index[i] for i in ok]
            low_res = self._decode(step.embeddings, step.original_sizes, rows, [answers[i] for i in ok])
            for r, i in enumerate(ok):
                j = step.index[i]
                out[i] = self._row_mask(low_res[r], step.input_sizes[j], step.original_sizes[j])
        return out  # type: ignore[return-value]

    def _row_mask(self, logits: torch.Tensor, input_size: Any, original_size: tuple[int, int]) -> np.ndarray:
        """The H x W bool mask of one h x w low-res logit map: SAM's own postprocess (upsample to the square
        frame, crop the ``input_size`` (h, w) the image was resized to, resize to ``original_size`` (H, W)),
        then ``> threshold``. The one place both :meth:`segment_batch` and :meth:`kept_logits` make masks."""
        up = self.sam.postprocess_masks(logits[None, None], tuple(input_size), tuple(original_size))
        return (up[0, 0] > self.threshold).cpu().numpy()

    def _image_key(self, image: Any) -> str:
        """The cache's key of ``image`` (model id + pixel content): what :class:`KeptLogits` rows are found by."""
        return self.cache.key(image)

    # ------------------------------------------------------------------ stages
    def _decode(self, emb: torch.Tensor, original_sizes: list[tuple[int, int]], img_index: list[int],
                answers: list[Any]) -> torch.Tensor:
        """Low-res logits (N x h x w) of the best (or only) mask per answer, all prompts in one batched pass,
        each distinct prompt decoded once (:meth:`_decode_distinct`)."""
        return self._decode_distinct(img_index, answers,
                                     lambda idx, ans: self._decode_prompts(emb, original_sizes, idx, ans))

    def _decode_prompts(self, emb: torch.Tensor, original_sizes: list[tuple[int, int]], img_index: list[int],
                        answers: list[Any]) -> torch.Tensor:
        """:meth:`_decode` on every prompt as given (repeats included)."""
        from samr1.sam.decoder import decode_batch, select_best
        from samr1.sam.prompts import PromptBatch

        boxes = [a.bbox for a in answers]
        points = [prompt_points(a) for a in answers]  # None: a box-only prompt, as SAM 2's engine reads it
        labels = [prompt_labels(a, len(p)) for a, p in zip(answers, points, strict=True)]
        batch = PromptBatch.from_lists(img_index, boxes, points, labels,
                                       original_sizes=original_sizes, device=self.device)
        logits, iou_pred = decode_batch(self.sam, emb, batch, multimask=self.multimask, threads=self._threads())
        return select_best(logits, iou_pred)
