"""Reasoning segmentation end to end: image + query -> the policy's reasoning, its parsed answer, SAM's mask.

:class:`ReasoningSegmenter` runs the policy (any Qwen2-VL / Qwen2.5-VL-style model loaded with
``AutoModelForImageTextToText`` and its ``AutoProcessor``) on the image resized to the policy frame
(840 x 840 by default, Seg-Zero's), parses the completion with :func:`samr1.answer.parse_answer` (box and
points back in ORIGINAL image pixels), and asks the :class:`samr1.engine.SamEngine` for the mask at the
original size.

SAM's image encoding does not depend on the answer, so it starts when the request arrives, on a worker
thread (and its own CUDA stream on a GPU), while the policy generates: once generation ends SAM only adds
its prompt decoder and postprocessing (``timings["sam_after_generate_s"]``). ``overlap=False`` runs the
two one after the other, for comparison.

Batch mode (:meth:`ReasoningSegmenter.segment_batch`): one batched ``generate`` (left padding), one engine
lookup for the distinct images, one batched SAM decode.
"""

from __future__ import annotations

import concurrent.futures
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from samr1.answer import DEFAULT_MODEL_SIZE, Answer, parse_answer
from samr1.io import load_image, rle_encode

__all__ = ["ReasoningSegmenter", "SegmentationResult", "ScriptedText", "result_json", "evaluate_rows", "merge_results",
           "shard_indices"]


@dataclass
class SegmentationResult:
    """One request's outcome.

    Attributes:
        text: the policy's raw completion (special tokens removed).
        answer: the parsed answer (box XYXY and points (x, y) in ORIGINAL image pixels); ``answer.ok`` False
            with ``answer.reason`` when the completion did not parse.
        mask: ``H x W`` bool (True = object) at the original image size; None when the answer did not parse.
        image_size: ``(H, W)`` of the original image.
        timings: seconds per stage: ``preprocess_s`` (resize + processor), ``generate_s``, ``parse_s``,
            ``encode_s`` (SAM's image encoder, on its thread when overlapped), ``encode_wait_s`` (time spent
            waiting for the encoder after generation ended), ``decode_s`` (prompt decoder), ``postprocess_s``
            (logits -> mask at the original size), ``sam_after_generate_s`` (what SAM adds after generation:
            wait + decode + postprocess), ``encode_overlap_s`` (how long encoding and generation ran at the
            same time), ``total_s``. In batch mode the stage times are the batch's.
    """

    text: str
    answer: Answer
    mask: np.ndarray | None
    image_size: tuple[int, int]
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return bool(self.answer.ok and self.mask is not None)

    @property
    def think(self) -> str | None:
        return self.answer.think

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict (see :func:`result_json`)."""
        return result_json(self.answer, self.mask, self.timings, text=self.text, image_size=self.image_size)


def result_json(answer: Answer, mask: np.ndarray | None, timings: dict[str, float] | None = None, *,
                text: str | None = None, image_size: tuple[int, int] | None = None) -> dict[str, Any]:
    """The machine-readable form of a segmentation, shared by ``samr1 segment --json`` and ``POST /segment``.

    Keys: ``ok``, ``reason`` (None when ok), ``think``, ``text`` (raw completion or None), ``answer``
    (``{"bbox": [x1, y1, x2, y2], "points": [[x, y], ...]}`` in original pixels, or None), ``box`` (the
    same bbox), ``size`` ``[H, W]``, ``mask`` (COCO RLE of the ``H x W`` mask, :func:`samr1.io.rle_decode`
    reads it; None without a mask), ``mask_pixels`` and ``timings`` (seconds).
    """
    ok = bool(answer.ok and mask is not None)
    ans = None
    if answer.ok and answer.bbox is not None:
        ans = {"bbox": [float(v) for v in answer.bbox], "points": [[float(x), float(y)] for x, y in answer.points]}
    size = list(mask.shape) if mask is not None else (list(image_size) if image_size is not None else None)
    return {
        "ok": ok, "reason": answer.reason, "think": answer.think, "text": text, "answer": ans,
        "box": ans["bbox"] if ans else None, "size": size,
        "mask": rle_encode(mask) if mask is not None else None,
        "mask_pixels": int(mask.sum()) if mask is not None else 0,
        "timings": {k: float(v) for k, v in (timings or {}).items()},
    }


class ReasoningSegmenter:
    """A policy + SAM: image and query in, reasoning, answer and mask out.

    Args:
        model: a transformers image-text-to-text model (Qwen2-VL / Qwen2.5-VL style) with ``generate``.
        processor: its ``AutoProcessor`` (chat template + image processor + tokenizer).
        engine: a :class:`samr1.engine.SamEngine` (its embedding cache is shared: an image asked about twice
            is encoded once).
        template: prompt template, a name in ``samr1.train.prompts.TEMPLATES`` ("seg-zero", ...) or a string
            with ``{query}`` (the one the policy was trained with).
        model_size: ``(h, w)`` the image is resized to for the policy; with ``answer_frame="pixels"`` answers
            are read in this frame.
        answer_frame: "pixels" (the answer's numbers are pixels of ``model_size``; Qwen2.5-VL) or "norm1000"
            (0..1000 on each axis; Qwen2-VL, Qwen3-VL). ``from_pretrained`` takes it from the saved policy's
            record, else from the model's ``model_type``.
        max_new_tokens: generation budget per request.
        overlap: encode the image with SAM on a worker thread while the policy generates.
        require_points: passed to :func:`samr1.answer.parse_answer`.
        generate_kwargs: extra ``model.generate`` arguments (default greedy: ``do_sample=False``).
    """

    def __init__(self, model: Any, processor: Any, engine: Any, *, template: str = "seg-zero",
                 model_size: tuple[int, int] = DEFAULT_MODEL_SIZE, max_new_tokens: int = 1024, overlap: bool = True,
                 require_points: bool = True, answer_frame: str = "pixels", **generate_kwargs: Any):
        from samr1.train.prompts import resolve_prompt

        if not callable(getattr(model, "generate", None)):
            raise TypeError(f"model must be a transformers generation model, got {type(model).__name__}")
        if not callable(processor) or not hasattr(processor, "apply_chat_template"):
            raise TypeError(f"processor must be the model's AutoProcessor, got {type(processor).__name__}")
        if not hasattr(engine, "cache") or not hasattr(engine, "sam"):
            raise TypeError(f"engine must be a samr1.engine.SamEngine, got {type(engine).__name__}")
        if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}")
        self.model = model.eval()
        self.processor = processor
        self.engine = engine
        self.template = resolve_prompt(template)
        if (not isinstance(model_size, (tuple, list)) or len(model_size) != 2
                or not all(isinstance(v, int) and v >= 1 for v in model_size)):
            raise ValueError(f"model_size must be (h, w) positive ints, e.g. (840, 840), got {model_size!r}")
        self.model_size = (int(model_size[0]), int(model_size[1]))
        from samr1.policy.frame import ANSWER_FRAMES

        if answer_frame not in ANSWER_FRAMES:
            raise ValueError(f"answer_frame must be one of {ANSWER_FRAMES}, got {answer_frame!r}")
        self.answer_frame = answer_frame
        # the frame the answer's numbers are in: the policy's image, or 0..1000 whatever its size
        self.answer_size = (1000, 1000) if answer_frame == "norm1000" else self.model_size
        self.max_new_tokens = max_new_tokens
        self.record: Any = None  # the saved policy's samr1.policy.PolicyRecord (from_pretrained), if any
        self.overlap = bool(overlap)
        self.require_points = bool(require_points)
        # greedy, and TRL's sampling settings rather than the checkpoint's generation config (Qwen ships
        # repetition_penalty 1.05; the rollouts were sampled with 1.0)
        self.generate_kwargs = {"do_sample": False, "repetition_penalty": 1.0, **generate_kwargs}
        # one worker: encodes run one at a time, in request order, beside the generating thread
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="samr1-sam-encode")
        self._stream = torch.cuda.Stream(device=engine.device) if engine.device.type == "cuda" else None

    @classmethod
    def from_pretrained(cls, path: str, engine: Any, *, device: str | None = None, dtype: Any = None,
                        **kwargs: Any) -> ReasoningSegmenter:
        """Load a policy directory with ``AutoModelForImageTextToText`` / ``AutoProcessor`` (no downloads
        unless ``path`` is a hub id and the machine can reach the hub). A folder holding a LoRA adapter
        (``adapter_config.json``, as ``samr1 train --use-peft`` saves) loads the base policy its config names,
        with the adapter merged in (:func:`samr1.policy.load_policy_model`).

        The folder's :class:`samr1.policy.PolicyRecord` (``samr1_policy.json``, written by training) gives the
        defaults of ``template``, ``model_size``, ``max_new_tokens`` and the decoding settings; a keyword given
        here (None counts as not given) wins.

        Raises:
            samr1.sam.ModelError: ``path`` is a file, a missing local folder, or transformers cannot load it
                (the message names the path and transformers' reason).
        """
        import os

        from samr1.sam import ModelError

        p = os.path.expanduser(os.fspath(path))
        if os.path.exists(p) and not os.path.isdir(p):
            raise ModelError(f"--model {path}: a file; give the policy's folder (config.json, weights, processor)")
        if not os.path.exists(p) and (p.startswith((".", "/")) or p.count("/") != 1):
            # a hub id is exactly "owner/name"; anything else that does not exist is a mistyped local path
            raise ModelError(f"--model {path}: no such folder")
        from samr1.policy import load_policy_model, load_processor, processor_folder, read_record

        try:
            record = read_record(p) if os.path.isdir(p) else None
        except ValueError as exc:
            raise ModelError(f"--model {path}: {exc}") from None
        try:
            # a folder holding a LoRA adapter loads its base (adapter_config.json) with the adapter merged in
            model = load_policy_model(p, dtype=dtype or "auto")
            processor = load_processor(processor_folder(p))
        except (OSError, ValueError, KeyError, ImportError) as exc:
            raise ModelError(f"--model {path}: transformers cannot load it as an image-text-to-text policy "
                             f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from exc
        if device is not None:
            model = model.to(device)
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
        from samr1.policy.frame import default_answer_frame

        kwargs.setdefault("answer_frame", record.answer_frame if record is not None
                          else default_answer_frame(getattr(model.config, "model_type", None)))
        if record is not None:
            kwargs.setdefault("template", record.template)
            kwargs.setdefault("model_size", (record.frame, record.frame))
            kwargs.setdefault("max_new_tokens", record.max_new_tokens)
            for k, v in record.generation.items():
                kwargs.setdefault(k, v)
        seg = cls(model, processor, engine, **kwargs)
        seg.record = record
        return seg

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    # ------------------------------------------------------------------ public
    def segment(self, image: Any, query: str, **generate_kwargs: Any) -> SegmentationResult:
        """One image and query (see :meth:`segment_batch`)."""
        return self.segment_batch([image], [query], **generate_kwargs)[0]

    def segment_batch(self, images: Sequence[Any], queries: Sequence[str], **generate_kwargs: Any
                      ) -> list[SegmentationResult]:
        """Segment ``images[i]`` by ``queries[i]`` for all i: one batched generation, one SAM lookup and decode.

        Args:
            images: PIL images, ``H x W x 3`` uint8 arrays or paths (original resolution).
            queries: one text query per image.
            generate_kwargs: extra ``model.generate`` arguments for this call.

        Returns:
            One :class:`SegmentationResult` per request, in order.
        """
        from samr1.io import InputError

        t0 = time.perf_counter()
        if isinstance(queries, str):
            raise InputError("queries: expected a list of strings (one per image), got one string")
        if len(images) != len(queries) or not images:
            raise InputError(f"images ({len(images)}) and queries ({len(queries)}) must be non-empty parallel lists")
        for i, q in enumerate(queries):
            if not isinstance(q, str) or not q.strip():
                raise InputError(f"queries[{i}]: expected non-empty text")
        arrays = [load_image(im, field=f"images[{i}]") for i, im in enumerate(images)]
        sizes = [tuple(a.shape[:2]) for a in arrays]
        # images SAM cannot take (e.g. 1 x 3000) fail their own row (reason bad_image), not the whole batch
        refused = self.engine.image_errors(arrays)
        sam_rows = [i for i, e in enumerate(refused) if e is None]
        sam_pos = {i: k for k, i in enumerate(sam_rows)}  # row -> its position in the encoded step
        encode_time: dict[str, float] = {}
        sam_arrays = [arrays[i] for i in sam_rows]
        future = self._pool.submit(self._encode, sam_arrays, encode_time) if self.overlap else None
        # --- the policy
        t1 = time.perf_counter()
        inputs = self._inputs(arrays, list(queries))
        t2 = time.perf_counter()
        kw = {**self.generate_kwargs, **generate_kwargs}
        kw.setdefault("max_new_tokens", self.max_new_tokens)
        with torch.inference_mode():
            out = self.model.generate(**inputs, **kw)
        new = out[:, inputs["input_ids"].shape[1]:]
        texts = self.processor.batch_decode(new, skip_special_tokens=True)
        t3 = time.perf_counter()
        answers = [parse_answer(t, image_size=s, model_size=self.answer_size, require_points=self.require_points)
                   if e is None else Answer(ok=False, reason=f"bad_image: {e}")
                   for t, s, e in zip(texts, sizes, refused, strict=True)]
        t4 = time.perf_counter()
        # --- SAM: the embeddings (already on their way when overlapped), then the prompt decoder
        if future is not None:
            step = future.result()
        else:
            step = self._encode(sam_arrays, encode_time)
        t5 = time.perf_counter()
        from samr1.engine.scoring import n_objects

        ok = [i for i, a in enumerate(answers) if n_objects(a) == 1]
        multi = [i for i, a in enumerate(answers) if n_objects(a) > 1]
        masks: list[np.ndarray | None] = [None] * len(arrays)
        for i, a in enumerate(answers):
            if a.no_object:  # "no object": the empty mask
                masks[i] = np.zeros(sizes[i], dtype=bool)
        t_dec = 0.0
        if multi:  # several objects (VisionReasoner's list): the union of SAM's masks of every object
            for i, m in zip(multi, self.engine.segment_batch([arrays[i] for i in multi], [answers[i] for i in multi]),
                            strict=True):
                masks[i] = m
        if ok:
            low_res = self._decode(step, [answers[i] for i in ok], [sam_pos[i] for i in ok])
            t_dec = time.perf_counter() - t5
            sam = self.engine.sam
            with torch.inference_mode():
                for r, i in enumerate(ok):
                    j = step.index[sam_pos[i]]
                    up = sam.postprocess_masks(low_res[r][None, None], tuple(step.input_sizes[j]), step.original_sizes[j])
                    masks[i] = (up[0, 0] > self.engine.threshold).cpu().numpy()
        t6 = time.perf_counter()
        timings = {
            "preprocess_s": t2 - t1, "generate_s": t3 - t2, "parse_s": t4 - t3,
            "encode_s": encode_time.get("encode_s", 0.0), "encode_wait_s": t5 - t4, "decode_s": t_dec,
            "postprocess_s": t6 - t5 - t_dec, "sam_after_generate_s": t6 - t4, "total_s": t6 - t0,
            "overlap": float(self.overlap), "batch_size": float(len(arrays)),
            # how long SAM's encoder and the policy's generation actually ran at the same time
            "encode_overlap_s": max(0.0, min(t3, encode_time.get("encode_end", 0.0))
                                    - max(t2, encode_time.get("encode_start", t3))),
        }
        return [SegmentationResult(text=t, answer=a, mask=m, image_size=s, timings=dict(timings))
                for t, a, m, s in zip(texts, answers, masks, sizes, strict=True)]

    # ------------------------------------------------------------------ stages
    def _encode(self, arrays: list[np.ndarray], times: dict[str, float]) -> Any:
        """SAM embeddings of the distinct images (the engine's cache: hits cost nothing)."""
        t = times["encode_start"] = time.perf_counter()
        if self._stream is not None:
            with torch.cuda.stream(self._stream):
                step = self.engine.cache.lookup(arrays)
            self._stream.synchronize()
        else:
            step = self.engine.cache.lookup(arrays)
        times["encode_end"] = time.perf_counter()
        times["encode_s"] = times["encode_end"] - t
        return step

    def _inputs(self, arrays: list[np.ndarray], queries: list[str]) -> Any:
        from PIL import Image

        from samr1.policy import policy_inputs
        from samr1.train.prompts import conversation

        mh, mw = self.model_size
        # bicubic, like Qwen's own resize and samr1's training data (samr1.train.data.PolicyDataset)
        pils = [Image.fromarray(a).resize((mw, mh), Image.BICUBIC) for a in arrays]
        # the one builder of the policy's inputs: the keys, padding side and positions TRL trains with
        inputs = policy_inputs(self.processor, [conversation(self.template, q) for q in queries], pils)
        return {k: v.to(self.model.device) for k, v in inputs.items()}

    def _decode(self, step: Any, answers: list[Answer], rows: list[int]) -> torch.Tensor:
        from samr1.sam.decoder import decode_batch, select_best
        from samr1.sam.prompts import PromptBatch

        with torch.inference_mode():
            batch = PromptBatch.from_lists([step.index[i] for i in rows], [a.bbox for a in answers],
                                           [list(a.points) for a in answers],
                                           [list(a.labels or [1] * len(a.points)) for a in answers],
                                           original_sizes=step.original_sizes, device=self.engine.device)
            logits, iou_pred = decode_batch(self.engine.sam, step.embeddings, batch, multimask=self.engine.multimask)
            return select_best(logits, iou_pred)


class ScriptedText:
    """A ``prefix_allowed_tokens_fn`` for ``model.generate`` that makes batch row i emit exactly ``texts[i]``
    and then end-of-sequence: a real model generating through the real decoding loop, with its output fixed.

    For smoke runs, benchmarks and tests of everything around a policy before one is trained (an untrained
    policy never writes a parseable answer). One instance serves ONE ``generate`` call: the prompt length of
    each row is taken at its first step. Use it as
    ``segmenter.segment_batch(images, queries, prefix_allowed_tokens_fn=ScriptedText(tokenizer, texts))``.
    """

    def __init__(self, tokenizer: Any, texts: Sequence[str]):
        self.ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
        eos = tokenizer.eos_token_id
        if eos is None:
            raise ValueError("the tokenizer has no eos_token_id; ScriptedText needs one to end each text")
        self.eos = int(eos)
        self._start: dict[int, int] = {}

    def __call__(self, batch_id: int, input_ids: torch.Tensor) -> list[int]:
        n = int(input_ids.shape[-1])
        k = n - self._start.setdefault(batch_id, n)
        ids = self.ids[batch_id]
        return [ids[k]] if k < len(ids) else [self.eos]


# ----------------------------------------------------------------------------------------------- evaluation
def shard_indices(n: int, num_shards: int = 1, shard: int = 0) -> list[int]:
    """The sample indices shard ``shard`` of ``num_shards`` evaluates: every ``num_shards``-th from ``shard``
    (strided, so shards get similar mixes when a set is sorted by image or difficulty)."""
    if not isinstance(num_shards, int) or num_shards < 1:
        raise ValueError(f"num_shards must be a positive int, got {num_shards!r}")
    if not isinstance(shard, int) or not 0 <= shard < num_shards:
        raise ValueError(f"shard must be in 0..{num_shards - 1}, got {shard!r}")
    return list(range(shard, n, num_shards))


def evaluate_rows(segmenter: ReasoningSegmenter, rows: Sequence[Any], indices: Sequence[int] | None = None, *,
                  batch_size: int = 8, empty_union: str = "lisa", progress: bool = False,
                  policy_size: int | None = None) -> dict[str, Any]:
    """Evaluate a policy + SAM on dataset rows: gIoU, cIoU, parse failures and one record per sample.

    Args:
        segmenter: the policy and SAM.
        rows: :class:`samr1.train.data.TrainRow` objects (any loader of :mod:`samr1.train.data`).
        indices: which rows (default all); records keep these global indices, so shards can be merged.
        batch_size: requests per batched generation.
        empty_union: :mod:`samr1.metrics` rule for an empty prediction on an empty ground truth ("lisa": IoU
            1, "visionreasoner": 0, "segzero": skip the sample).
        progress: show a tqdm progress bar (stderr).
        policy_size: unused by the metrics; recorded in the result.

    Returns:
        ``{"giou", "ciou", "n", "n_scored", "n_skipped", "n_parse_failures", "empty_union",
        "parse_failure_reasons": {code: count}, "samples": [record, ...]}``; a record holds ``index``,
        ``position``, ``query``, ``parsed``, ``reason``, ``iou`` (None when skipped), ``intersection``,
        ``union``, ``gt_pixels``, ``pred_pixels``, ``skipped``, ``text`` (the raw completion) and ``answer``.
        A parse failure counts intersection 0 and union ``|gt|`` (:mod:`samr1.metrics`). ReasonSeg ignore
        regions (mask value 255) are excluded from both.
    """
    from samr1.metrics import SegmentationMetrics
    from samr1.train.data import PolicyDataset

    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    idx = list(range(len(rows))) if indices is None else [int(i) for i in indices]
    acc = SegmentationMetrics(empty_union=empty_union)
    # the dataset class the trainer uses: same image loading, size checks and ignore-region handling
    ds = PolicyDataset([rows[i] for i in idx], policy_size=policy_size or segmenter.model_size[0])
    samples: list[dict[str, Any]] = []
    reasons: dict[str, int] = {}
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(idx), desc="eval", unit="sample")
    for start in range(0, len(idx), batch_size):
        local = list(range(start, min(start + batch_size, len(idx))))
        items = [ds[j] for j in local]
        results = segmenter.segment_batch([it["sam_image"] for it in items], [rows[idx[j]].query for j in local])
        for j, it, res in zip(local, items, results, strict=True):
            row = acc.add(res.mask if res.ok else None, it["mask"], id=idx[j], ignore=it["ignore"])
            if not res.ok:
                code = res.answer.code or "no_mask"
                reasons[code] = reasons.get(code, 0) + 1
            ans = res.to_json()["answer"]
            samples.append({"index": idx[j], "position": rows[idx[j]].position, "query": rows[idx[j]].query,
                            "parsed": row.parsed, "reason": res.answer.reason, "iou": row.iou,
                            "intersection": row.intersection, "union": row.union, "gt_pixels": row.gt_pixels,
                            "pred_pixels": row.pred_pixels, "skipped": row.skipped, "text": res.text, "answer": ans})
        if bar is not None:
            bar.update(len(local))
    if bar is not None:
        bar.close()
    out = acc.result().as_dict()
    out["parse_failure_reasons"] = dict(sorted(reasons.items()))
    out["samples"] = samples
    return out


RUN_KEYS = ("model", "sam", "data", "split", "max_samples", "n_rows")
"""What the shards of one ``samr1 eval`` run agree on (as recorded in each results file)."""


def merge_results(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Merge the results of ``--num-shards K`` evaluations (each from :func:`evaluate_rows` plus its ``shard``
    ``[i, K]`` and ``empty_union``) into the result of one unsharded run.

    Samples are put back in global index order and gIoU / cIoU recomputed from their counts with
    :mod:`samr1.metrics`' definitions (mean IoU over scored samples; summed intersections over summed
    unions), summing in the same order as an unsharded run, so the numbers are equal, not just close.

    Raises:
        ValueError: shards of different runs (K, empty-union rule, model, SAM, data, the rows evaluated), a
            shard missing or given twice, a sample index present twice, or (when the shards record
            ``n_rows``) indices that do not cover 0..n_rows-1 less the bad rows skipped.
    """
    import math

    from samr1.metrics import no_target_rates

    if not parts:
        raise ValueError("nothing to merge: give the results.json of every shard")
    ks = {tuple(p.get("shard") or (0, 1))[1] for p in parts}
    rules = {p.get("empty_union") for p in parts}
    if len(ks) != 1 or len(rules) != 1:
        raise ValueError(f"these results come from different runs: num_shards {sorted(ks)}, empty_union {sorted(rules)}")
    # one run = one policy, one SAM, one dataset, the same rows: a stale shard of another checkpoint or data
    # would otherwise be averaged in without a word
    for key in RUN_KEYS:
        values = {json.dumps(p.get(key), sort_keys=True) for p in parts}
        if len(values) > 1:
            raise ValueError(f"these results come from different runs: {key} differs between shards "
                             f"({', '.join(sorted(values))})")
    k = ks.pop()
    got = sorted(tuple(p.get("shard") or (0, 1))[0] for p in parts)
    if got != list(range(k)):
        raise ValueError(f"expected shards 0..{k - 1} once each, got {got}")
    samples = sorted((s for p in parts for s in p["samples"]), key=lambda s: s["index"])
    seen = [s["index"] for s in samples]
    if len(set(seen)) != len(seen):
        raise ValueError("a sample index appears in two shards: were they run with the same --num-shards?")
    n_rows = parts[0].get("n_rows")
    if n_rows is not None:
        skipped = {int(b["index"]) for p in parts for b in p.get("bad_rows", [])}
        missing = sorted(set(range(int(n_rows))) - set(seen) - skipped)
        if missing or len(seen) + len(skipped) != int(n_rows):
            raise ValueError(f"the shards evaluated {len(seen)} of {n_rows} rows (and skipped {len(skipped)} bad "
                             f"ones); missing indices {missing[:10]}{'...' if len(missing) > 10 else ''}")
    scored = [s for s in samples if not s["skipped"]]
    giou = float(sum(s["iou"] for s in scored) / len(scored)) if scored else math.nan
    inter = sum(s["intersection"] for s in scored)
    union = sum(s["union"] for s in scored)
    reasons: dict[str, int] = {}
    for p in parts:
        for code, c in p.get("parse_failure_reasons", {}).items():
            reasons[code] = reasons.get(code, 0) + c
    merged = {key: parts[0][key] for key in parts[0] if key not in ("samples", "shard", "bad_rows")}
    bad_rows = sorted((b for p in parts for b in p.get("bad_rows", [])), key=lambda b: b["index"])
    if bad_rows or any("bad_rows" in p for p in parts):
        merged["bad_rows"] = bad_rows
    merged.update({"giou": giou, "ciou": float(inter / union) if union else math.nan, "n": len(samples),
                   "n_scored": len(scored), "n_skipped": len(samples) - len(scored),
                   "n_parse_failures": sum(1 for s in samples if not s["parsed"]),
                   "parse_failure_reasons": dict(sorted(reasons.items())), "shard": [0, 1],
                   "merged_from": k, "samples": samples, **no_target_rates(samples)})
    return merged
