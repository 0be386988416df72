"""Train ``tiny-shapes``: a small SAM-architecture model on the synthetic scenes of
:mod:`samr1.shapes.scenes`.

The model is SAM's own modules (``ImageEncoderViT`` + ``PromptEncoder`` + ``MaskDecoder``, built by
:func:`samr1.sam.build_sam` from :data:`TINY_SHAPES_SPEC`, which is ``SAM_KINDS["tiny-shapes"]``), so
``SamPredictor``, the engine and every other path that takes a ``Sam`` work unchanged; only the frame
(``image_encoder.img_size``) is smaller.

Recipe (SAM's, scaled down):

* prompts per image, one kind per image so a decoder call has a fixed token count: box (jittered in
  half of the cases), box + 1 or 2 points, 1 or 2 points (weights :data:`PROMPT_WEIGHTS`: three quarters
  carry a box); points are drawn inside the visible mask;
* loss on the low-res logits against the ground truth area-downsampled to the same grid (soft targets
  keep the sub-pixel boundary): BCE + dice per mask (SAM's 20 * focal + dice collapsed to "no mask"
  from scratch, see :func:`_mask_loss`); best-of-3 over the multimask outputs, plus the single-mask
  token (0) for unambiguous prompts (a box, or
  two or more points) and, with ``all_masks_weight``, the mean over all three multimask outputs for them
  too (the engine keeps the multimask output of highest predicted IoU, so the other two must not be left
  untrained); IoU-head MSE toward the actual IoU of each of the 4 masks;
* AdamW, linear warm-up then cosine decay, gradient clipping;
* augmentation on top of the (already wide) scene distribution: blur, brightness / contrast jitter;
* scenes are drawn and rasterised to the frame by a data worker process (``workers``, default 1) while
  the training process computes: on a 2-core CPU one core trains, the other makes scenes; with
  ``scene_reuse`` N a drawn scene serves N consecutive steps (other prompts, other augmentation);
* everything follows from ``seed`` (model init, scene seeds, prompt draws): the same seed, step count,
  device and thread count give the same weights hash, with or without the data worker.

Held-out evaluation (:func:`evaluate`) runs the real inference path (``SamPredictor`` at each scene's
original size, multimask + highest predicted IoU, as the engine does by default) on scene seeds below
:data:`TRAIN_SEED_BASE`, which training never draws.

Use ``samr1 train-sam`` (see :mod:`samr1.cli.train_sam`) or :func:`train`.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from samr1.geometry import mask_iou_numpy, mask_to_box, resize_longest_side
from samr1.hashing import state_dict_digest
from samr1.provenance import git_commit
from samr1.sam import SAM_KINDS, build_sam, load_weights
from samr1.shapes.scenes import Scene, make_scene
from samr1.shapes.train_config import TrainConfig
from samr1.shapes.viz import plot_curve

__all__ = ["TrainConfig", "TINY_SHAPES_SPEC", "TRAIN_SEED_BASE", "train", "evaluate", "weights_hash",
           "save_weights", "centre_point", "StepBatches", "size_bucket", "frame_mask", "box_prompt"]

# The architecture trained and shipped: one definition, in samr1.sam.build (load_sam reads it there too; the
# comment there says why the frame is 384).
TINY_SHAPES_SPEC = SAM_KINDS["tiny-shapes"]

# Training scenes use seeds >= this; held-out evaluation uses seeds below it.
TRAIN_SEED_BASE = 1_000_000

# Prompt kinds: (name, number of points, has box) and their sampling weights.
PROMPT_KINDS = (("box", 0, True), ("box+1pt", 1, True), ("box+2pt", 2, True), ("1pt", 1, False),
                ("2pt", 2, False))
# Box-carrying prompts dominate: they are what the reward engine decodes (the policy answers a box and
# points) and what the goals are stated for; point-only prompts (ambiguous, harder) keep a quarter.
PROMPT_WEIGHTS = (0.35, 0.3, 0.1, 0.18, 0.07)


def decay_start_of(cfg: TrainConfig) -> int:
    return cfg.decay_start if cfg.decay_start >= 0 else max(cfg.warmup, int(0.75 * cfg.steps))


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Warm-up, stable, decay: linear warm-up to ``lr``, constant until the decay start, then cosine to
    ``min_lr`` at ``steps``. The learning rate before the decay does not depend on ``steps``, so a run whose
    time budget fixed ``steps`` / ``decay_start`` on the way is reproduced by passing those two values."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    d0 = decay_start_of(cfg)
    if step < d0:
        return cfg.lr
    t = (step - d0) / max(1, cfg.steps - d0)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * min(1.0, t)))


# ----------------------------------------------------------------------------------------------- data

def _frame_image(image: np.ndarray, frame: int) -> np.ndarray:
    """H x W x 3 uint8 -> h' x w' x 3 uint8 exactly as ``SamPredictor.set_image`` resizes it."""
    from segment_anything.utils.transforms import ResizeLongestSide

    return ResizeLongestSide(frame).apply_image(image)


def frame_mask(mask: np.ndarray, frame: int) -> np.ndarray:
    """H x W bool mask in original pixels -> ``frame`` x ``frame`` float32 in [0, 1], the training target:
    resized (bilinear on the 0/255 mask, so edge pixels keep their covered fraction) to the (h', w') that
    ``SamPredictor.set_image`` resizes the image to (longest side = ``frame``), then zero-padded bottom and
    right as ``Sam.preprocess`` pads the image."""
    from PIL import Image

    h, w = resize_longest_side(*mask.shape, frame)
    m = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((w, h), Image.BILINEAR), np.float32) / 255
    out = np.zeros((frame, frame), np.float32)
    out[:h, :w] = m
    return out


def centre_point(mask: np.ndarray) -> tuple[float, float]:
    """The (x, y) pixel of ``mask`` (H x W bool, non-empty) farthest from its boundary (chessboard
    distance, by repeated erosion): the "centre point" prompt of the evaluation, inside the object even
    when it is concave or partly occluded."""
    full = mask.astype(bool)
    ys, xs = np.nonzero(full)
    # erode only the bounding box (+1 px where the image has room): same result, far fewer pixels
    y0, x0 = max(int(ys.min()) - 1, 0), max(int(xs.min()) - 1, 0)
    m = full[y0:int(ys.max()) + 2, x0:int(xs.max()) + 2]
    last = m
    while m.any():
        last = m
        e = m.copy()
        e[1:, :] &= m[:-1, :]
        e[:-1, :] &= m[1:, :]
        e[:, 1:] &= m[:, :-1]
        e[:, :-1] &= m[:, 1:]
        e[0, :] = e[-1, :] = False
        e[:, 0] = e[:, -1] = False
        m = e
    ys, xs = np.nonzero(last)
    cy, cx = ys.mean(), xs.mean()
    i = int(np.argmin((ys - cy) ** 2 + (xs - cx) ** 2))
    return float(xs[i] + x0), float(ys[i] + y0)


def box_prompt(mask: np.ndarray) -> np.ndarray:
    """Tight XYXY box of a non-empty H x W mask in SAM's inclusive convention (max col / row, not +1), as
    the float32 array ``SamPredictor.predict(box=...)`` takes."""
    return np.asarray(mask_to_box(mask, "inclusive"), np.float32)


def _augment(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    from PIL import Image, ImageFilter

    if rng.random() < 0.25:  # soft edges, as antialiased or resampled images have
        image = np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 1.5))))
    if rng.random() < 0.3:
        a, b = rng.uniform(0.7, 1.3), rng.uniform(-30, 30)
        image = np.clip(image.astype(np.float32) * a + b, 0, 255).astype(np.uint8)
    return image


@dataclass
class _Sample:
    image: torch.Tensor  # 3 x frame x frame float32, normalised and padded (Sam.preprocess)
    kind: int  # index into PROMPT_KINDS
    coords: torch.Tensor | None  # K x P x 2 (x, y): integer mask pixels scaled into the frame
    boxes: torch.Tensor | None  # K x 4 frame pixels, XYXY
    target: torch.Tensor  # K x frame x frame float32 soft masks


def _make_sample(scene: int | Scene, rng: np.random.Generator, k: int, frame: int,
                 pixel_mean: torch.Tensor, pixel_std: torch.Tensor) -> _Sample | None:
    """One training scene with ``k`` prompts of one kind, all tensors on the CPU (the training loop moves
    them), or None when the scene has no object big enough to prompt. ``pixel_mean`` / ``pixel_std``
    (3 x 1 x 1) are the model's: the image is normalised and zero-padded exactly as ``Sam.preprocess``
    does, so it can be built in a data worker without the model. ``scene`` is a scene seed or the drawn
    :class:`~samr1.shapes.scenes.Scene` itself (``make_scene`` is a pure function of the seed); it is only read."""
    scene = scene if isinstance(scene, Scene) else make_scene(scene)
    h, w = scene.image.shape[:2]
    nh, nw = resize_longest_side(h, w, frame)
    sx, sy = nw / w, nh / h
    scale = sy if h >= w else sx
    # objects too small to prompt sensibly at this frame (< ~6 frame pixels) are not trained on
    objs = [o for o in scene.objects if o.mask.sum() * scale * scale >= 6]
    if not objs:
        return None
    image = _augment(scene.image, rng)
    x = torch.from_numpy(_frame_image(image, frame)).permute(2, 0, 1).float()
    x = (x - pixel_mean) / pixel_std
    x = F.pad(x, (0, frame - x.shape[-1], 0, frame - x.shape[-2]))
    kind = int(rng.choice(len(PROMPT_KINDS), p=PROMPT_WEIGHTS))
    _, n_pts, has_box = PROMPT_KINDS[kind]
    coords, boxes, targets = [], [], []
    for _ in range(k):
        o = objs[int(rng.integers(len(objs)))]
        targets.append(frame_mask(o.mask, frame))
        if has_box:
            b = box_prompt(o.mask)
            if rng.random() < 0.5:  # SAM: noise with std 10 % of the side, at most 20 px
                bw, bh = b[2] - b[0] + 1, b[3] - b[1] + 1
                noise = rng.normal(0, 0.1, 4) * np.array([bw, bh, bw, bh])
                b = b + np.clip(noise, -20, 20).astype(np.float32)
                b = np.clip(b, 0, [w - 1, h - 1, w - 1, h - 1]).astype(np.float32)
            boxes.append(b * np.array([sx, sy, sx, sy], np.float32))
        if n_pts:
            ys, xs = np.nonzero(o.mask)
            idx = rng.integers(len(xs), size=n_pts)
            coords.append(np.stack([xs[idx] * sx, ys[idx] * sy], 1).astype(np.float32))
    return _Sample(
        image=x,
        kind=kind,
        coords=torch.from_numpy(np.stack(coords)) if coords else None,
        boxes=torch.from_numpy(np.stack(boxes)) if boxes else None,
        target=torch.from_numpy(np.stack(targets)),
    )


def _to(s: _Sample, dev: torch.device) -> _Sample:
    return _Sample(image=s.image.to(dev), kind=s.kind, coords=None if s.coords is None else s.coords.to(dev),
                   boxes=None if s.boxes is None else s.boxes.to(dev), target=s.target.to(dev))


class StepBatches(torch.utils.data.Dataset):
    """Item ``step`` = the list of ``batch_images`` samples of that training step (CPU tensors).

    Everything in it follows from (seed, step): the prompt draws from ``default_rng([seed, step])``, the
    scenes from seeds ``TRAIN_SEED_BASE + (1000 * seed + step // scene_reuse) * 64 + j`` (j counts the
    draws of the step; runs with seeds s and s + 1 therefore share scenes from step 1000 * scene_reuse on,
    with other prompts and augmentation; kept so that the shipped weights stay reproducible), so a data worker
    process (``TrainConfig.workers``) yields exactly what the training process would have built itself,
    in the same order, and the weights hash does not depend on the number of workers (a test checks)."""

    def __init__(self, cfg: TrainConfig, frame: int, pixel_mean: torch.Tensor, pixel_std: torch.Tensor):
        self.seed, self.n, self.k, self.frame = cfg.seed, cfg.batch_images, cfg.prompts_per_image, frame
        self.reuse = cfg.scene_reuse
        self.steps = cfg.stop_at or cfg.steps
        self.mean, self.std = pixel_mean.detach().cpu().clone(), pixel_std.detach().cpu().clone()
        # the scenes of the current group of ``scene_reuse`` steps (each process holds its own copy; a
        # miss only redraws, so the items never depend on which process builds them)
        self._scenes: dict[int, Scene] = {}
        self._group = -1

    def __len__(self) -> int:
        return self.steps

    def _scene(self, group: int, scene_seed: int) -> Scene:
        # one process sees its steps in order (workers 0 or 1; with 2+ workers each gets every other step and
        # the cache saves nothing, though the items stay the same): an earlier group is not asked for again
        if group != self._group:
            self._scenes.clear()
            self._group = group
        if scene_seed not in self._scenes:
            scene = make_scene(scene_seed)
            # a reused step must see exactly what a cold build sees: make any in-place edit an error
            scene.image.setflags(write=False)
            for o in scene.objects:
                o.mask.setflags(write=False)
            self._scenes[scene_seed] = scene
        return self._scenes[scene_seed]

    def __getitem__(self, step: int) -> list[_Sample]:
        rng = np.random.default_rng([self.seed, step])
        samples: list[_Sample] = []
        j = 0
        # steps g * reuse .. g * reuse + reuse - 1 draw from the same scenes (group g); with reuse 1 this is
        # the scene numbering the shipped weights were trained with
        group = step // self.reuse
        while len(samples) < self.n:
            scene = self._scene(group, TRAIN_SEED_BASE + (self.seed * 1000 + group) * 64 + j)
            s = _make_sample(scene, rng, self.k, self.frame, self.mean, self.std)
            j += 1
            if s is not None:
                samples.append(s)
        return samples


def _identity(x):
    return x


def _batches(data: StepBatches, workers: int):
    """Iterate the steps' batches in order; with ``workers`` > 0 they are built ahead (at most 4 per
    worker) in separate processes, one torch thread each, while the training process computes."""
    if workers == 0:
        return (data[i] for i in range(len(data)))
    # Starting workers draws their base seed from a generator; give it its own so the global torch RNG the
    # training may use is left exactly as in the in-process path.
    loader = torch.utils.data.DataLoader(data, batch_size=None, shuffle=False, num_workers=workers,
                                         collate_fn=_identity, prefetch_factor=4, persistent_workers=False,
                                         generator=torch.Generator().manual_seed(data.seed))
    return iter(loader)


# ----------------------------------------------------------------------------------------------- loss

def _dice(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    p = torch.sigmoid(logits)
    inter = (p * target).sum(dim=(-2, -1))
    return 1 - (2 * inter + 1) / (p.sum(dim=(-2, -1)) + target.sum(dim=(-2, -1)) + 1)


def _mask_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-mask loss (... x h x w -> ...): BCE (mean over pixels) + dice.

    Why not SAM's 20 * focal(alpha=0.25) + dice: from scratch, that mix sat at "no mask" (train IoU 0.001
    after 225 steps, loss stuck near the dice value); SAM itself starts from MAE-pretrained weights. Every
    mix tried first sits on that plateau for some hundreds of steps (a one-scene overfit leaves it after
    ~25), so the recipe relies on enough steps rather than on the loss alone."""
    return F.binary_cross_entropy_with_logits(logits, target, reduction="none").mean(dim=(-2, -1)) + _dice(logits, target)


def _sample_loss(sam, emb: torch.Tensor, s: _Sample, frame: int,
                 all_masks_weight: float = 0.0) -> tuple[torch.Tensor, dict[str, float]]:
    points = None
    if s.coords is not None:
        points = (s.coords, torch.ones(s.coords.shape[:2], device=s.coords.device))
    sparse, dense = sam.prompt_encoder(points=points, boxes=s.boxes, masks=None)
    low, iou_pred = sam.mask_decoder.predict_masks(
        image_embeddings=emb[None], image_pe=sam.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense)
    # loss on the low-res logits against the area-downsampled soft target: 4x fewer pixels than at the
    # frame, and the soft target still carries the sub-pixel boundary
    up = low
    t = F.avg_pool2d(s.target[:, None], frame // low.shape[-1]).expand_as(up)
    per_mask = _mask_loss(up, t)  # K x 4
    multi = per_mask[:, 1:].min(dim=1).values
    _, n_pts, has_box = PROMPT_KINDS[s.kind]
    unambiguous = has_box or n_pts >= 2
    mask_loss = multi + (per_mask[:, 0] if unambiguous else 0)
    if unambiguous and all_masks_weight:
        # best-of-3 leaves the two other multimask outputs untrained, yet the engine keeps whichever has the
        # highest predicted IoU (picked the best of 3 only 44 % of the time on held-out boxes with the
        # 6.9k-step model, costing 0.024 IoU): pull all three toward an unambiguous target
        mask_loss = mask_loss + all_masks_weight * per_mask[:, 1:].mean(dim=1)
    with torch.no_grad():
        pred = up > 0
        gt = t > 0.5
        inter = (pred & gt).sum(dim=(-2, -1)).float()
        union = (pred | gt).sum(dim=(-2, -1)).float()
        iou = torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))
    iou_loss = F.mse_loss(iou_pred, iou, reduction="none").mean(dim=1)
    loss = (mask_loss + iou_loss).mean()
    best = iou[:, 0] if unambiguous else iou[:, 1:].max(dim=1).values
    return loss, {"iou": float(best.mean()), "iou_mse": float(iou_loss.detach().mean())}


# ------------------------------------------------------------------------------------------ helpers

def weights_hash(state: dict[str, torch.Tensor]) -> str:
    """blake2b-96 of the names and bytes of a state dict (sorted by name): equal weights, equal hash."""
    return state_dict_digest(state)


def fp16_state(sam) -> dict[str, torch.Tensor]:
    """The model's state dict in float16 on the CPU (the shipped form)."""
    return {k: (v.detach().half() if v.is_floating_point() else v.detach()).cpu().contiguous()
            for k, v in sam.state_dict().items()}


def save_weights(sam, path: str) -> str:
    """Write the fp16 state dict to ``path`` (torch.save); returns its :func:`weights_hash`."""
    state = fp16_state(sam)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    torch.save(state, path)
    return weights_hash(state)


# --------------------------------------------------------------------------------------- evaluation

def size_bucket(frac: float) -> str:
    """Size class of an object covering ``frac`` of its image: "small" (< 1 %), "medium" (< 5 %), "large"."""
    return "small" if frac < 0.01 else "medium" if frac < 0.05 else "large"


@torch.no_grad()
def evaluate(sam, n_scenes: int = 100, first_seed: int = 0, multimask: bool = True,
             min_area: int = 0, scene_fn=make_scene) -> dict[str, Any]:
    """Mean IoU on held-out scenes (seeds ``first_seed .. first_seed + n_scenes - 1``, all below
    :data:`TRAIN_SEED_BASE`), for three prompts per visible object: its tight box, box + centre point,
    centre point alone (:func:`centre_point`). Masks come from ``SamPredictor`` at the scene's original
    size (SAM's postprocessing, threshold 0); with ``multimask`` the mask of highest predicted IoU is kept
    (the engine's default). Objects smaller than ``min_area`` pixels are skipped.

    Returns {"box": mean IoU, "box+point": ..., "point": ..., "objects": count, "scenes": n_scenes,
    "by_size": {"small"/"medium"/"large": {"box": ..., "n": ...}}} (size by the object's share of the
    image area: < 1 %, < 5 %, >= 5 %).

    ``scene_fn(seed) -> Scene`` draws the scenes: :func:`samr1.shapes.scenes.make_scene` (the training
    generator, held-out seeds) by default, or another generator such as
    :func:`samr1.shapes.scenes_alt.make_alt_scene`.
    """
    from segment_anything import SamPredictor

    if scene_fn is make_scene and first_seed + n_scenes > TRAIN_SEED_BASE:
        raise ValueError(f"held-out seeds must stay below {TRAIN_SEED_BASE} (training scenes start there)")
    was_training = sam.training
    sam.eval()
    pred = SamPredictor(sam)
    res: dict[str, list[float]] = {"box": [], "box+point": [], "point": []}
    sizes: dict[str, list[float]] = {"small": [], "medium": [], "large": []}
    for seed in range(first_seed, first_seed + n_scenes):
        scene = scene_fn(seed)
        pred.set_image(scene.image)
        hw = scene.image.shape[0] * scene.image.shape[1]
        for o in scene.objects:
            if o.mask.sum() < max(1, min_area):
                continue
            box = box_prompt(o.mask)
            cp = np.array([centre_point(o.mask)], np.float32)
            one = np.ones(1, np.int64)
            for name, kw in (("box", {"box": box}), ("box+point", {"box": box, "point_coords": cp,
                                                                    "point_labels": one}),
                             ("point", {"point_coords": cp, "point_labels": one})):
                masks, scores, _ = pred.predict(multimask_output=multimask, **kw)
                m = masks[int(np.argmax(scores))]
                iou = mask_iou_numpy(m, o.mask)
                res[name].append(iou)
                if name == "box":
                    frac = o.mask.sum() / hw
                    sizes[size_bucket(frac)].append(iou)
    sam.train(was_training)
    out: dict[str, Any] = {k: round(float(np.mean(v)), 4) if v else None for k, v in res.items()}
    out["objects"] = len(res["box"])
    out["scenes"] = n_scenes
    out["first_seed"] = first_seed
    out["multimask"] = multimask
    out["by_size"] = {k: {"box": round(float(np.mean(v)), 4) if v else None, "n": len(v)} for k, v in sizes.items()}
    return out


# ------------------------------------------------------------------------------------------ training

def _history(path: str, row: dict[str, Any]) -> None:
    """Append one JSON line to the run's ``history.jsonl`` (train rows every 25 steps, eval rows)."""
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


def train(cfg: TrainConfig, log=print) -> dict[str, Any]:
    """Train from scratch per ``cfg``; writes ``{out}/tiny_shapes.pth`` (fp16), ``{out}/card.json`` and
    ``{out}/history.jsonl`` (the curve: loss / train IoU / lr every 25 steps, and the periodic evals).

    Returns the card (spec, config, steps done, wall time, held-out metrics, weights hash).
    """
    cfg.validate()
    torch.set_num_threads(cfg.threads)
    dev = torch.device(cfg.device)
    if dev.type == "cuda":
        # deterministic cuDNN and no TF32; some CUDA backward kernels still use atomics, so CUDA runs are
        # reproducible up to float rounding only (CPU runs bit for bit: same hash). Not run on a GPU yet.
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(cfg.seed)
    sam = build_sam(TINY_SHAPES_SPEC).to(dev)
    sam.train()
    frame = TINY_SHAPES_SPEC.img_size
    decay, no_decay = [], []
    for name, p in sam.named_parameters():
        (no_decay if p.ndim < 2 or "rel_pos" in name or "pos_embed" in name else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.999))
    n_params = sum(p.numel() for p in sam.parameters())
    log(f"tiny-shapes: {n_params / 1e6:.2f} M parameters, frame {frame}, device {dev}, threads {cfg.threads}")
    os.makedirs(cfg.out, exist_ok=True)
    t0 = time.time()
    hist: list[float] = []
    if cfg.decay_start < 0 and not cfg.time_budget_s:
        cfg.decay_start = decay_start_of(cfg)
    budget_decided = False
    history = os.path.join(cfg.out, "history.jsonl")
    open(history, "w").close()  # this run's curve only
    batches = _batches(StepBatches(cfg, frame, sam.pixel_mean, sam.pixel_std), cfg.workers)
    step = 0
    while step < (cfg.stop_at or cfg.steps):
        el = time.time() - t0
        if cfg.time_budget_s and el > cfg.time_budget_s:
            log(f"time budget {cfg.time_budget_s:.0f} s reached at step {step}: stopping (hard stop)")
            break
        if cfg.time_budget_s and not budget_decided and el > 0.78 * cfg.time_budget_s:
            # fix the schedule from here on: decay over a quarter of the steps done so far
            budget_decided = True
            if decay_start_of(cfg) > step:
                cfg.decay_start = max(step, cfg.warmup)
                cfg.steps = min(cfg.steps, cfg.decay_start + max(20, step // 4))
                log(f"time budget: decay from step {cfg.decay_start} to {cfg.steps}")
        samples = [_to(s, dev) for s in next(batches)]
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        embs = sam.image_encoder(torch.stack([s.image for s in samples]))
        losses, stats = [], []
        for i, s in enumerate(samples):
            loss_i, st = _sample_loss(sam, embs[i], s, frame, cfg.all_masks_weight)
            losses.append(loss_i)
            stats.append(st)
        loss = torch.stack(losses).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(sam.parameters(), cfg.grad_clip)
        opt.step()
        hist.append(float(np.mean([st["iou"] for st in stats])))
        if step % 25 == 0 or step == cfg.steps - 1:
            el = time.time() - t0
            log(f"step {step:5d}  loss {loss.item():.4f}  train IoU(50) {np.mean(hist[-50:]):.3f}  "
                f"lr {lr_at(step, cfg):.2e}  {el / (step + 1):.2f} s/step  elapsed {el / 60:.1f} min")
            _history(history, {"step": step, "loss": round(loss.item(), 5), "lr": lr_at(step, cfg),
                               "train_iou": round(float(np.mean(hist[-50:])), 4), "elapsed_s": round(el, 1)})
            sys.stdout.flush()
        if cfg.eval_every and step and step % cfg.eval_every == 0:
            ev = evaluate(sam, n_scenes=20, first_seed=TRAIN_SEED_BASE - 1000)
            log(f"eval@{step} (20 scenes, seeds {TRAIN_SEED_BASE - 1000}+): {json.dumps(ev)}")
            _history(history, {"step": step, "eval": ev})
            save_weights(sam, os.path.join(cfg.out, f"step{step}.pth"))
        step += 1
    wall = time.time() - t0
    path = os.path.join(cfg.out, "tiny_shapes.pth")
    whash = save_weights(sam, path)
    # evaluate the SHIPPED form: the fp16 weights loaded back into an fp32 model
    ship = build_sam(TINY_SHAPES_SPEC)
    load_weights(ship, path, "tiny-shapes")
    metrics = evaluate(ship, n_scenes=cfg.eval_scenes, first_seed=0)
    metrics_single = evaluate(ship, n_scenes=cfg.eval_scenes, first_seed=0, multimask=False)
    card = {
        "name": "tiny-shapes",
        "what": "SAM-architecture model (segment-anything ImageEncoderViT + PromptEncoder + MaskDecoder) "
                "trained from scratch on samr1.shapes.scenes synthetic shapes; NOT a general segmenter",
        "spec": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(TINY_SHAPES_SPEC).items()},
        "parameters": n_params,
        "config": asdict(cfg),
        "steps_done": step,
        "stopped_early": step < cfg.steps,  # hard stop (budget) or --stop-at: the schedule was not finished
        "wall_s": round(wall, 1),
        # the command that reproduces these weights (the budget, if any, already fixed steps/decay_start)
        "command": "samr1 train-sam " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in {**asdict(cfg), "stop_at": step if step < cfg.steps else 0}.items()
            if k not in ("out", "time_budget_s")),
        "prompt_kinds": [k[0] for k in PROMPT_KINDS],
        "prompt_weights": list(PROMPT_WEIGHTS),
        "code_revision": git_commit(),
        "torch": torch.__version__,
        "device": str(dev),
        "weights_file": os.path.basename(path),
        "weights_dtype": "float16",
        "weights_hash": whash,
        "weights_hash_note": "blake2b-96 over sorted (name, fp16 bytes) of the state dict (samr1.shapes.train.weights_hash)",
        "heldout_multimask": metrics,
        "heldout_single_mask": metrics_single,
    }
    with open(os.path.join(cfg.out, "card.json"), "w") as f:
        json.dump(card, f, indent=1)
    plot_curve(history, os.path.join(cfg.out, "curve.png"))
    log(f"done: {step} steps in {wall / 60:.1f} min; hash {whash}; held-out {json.dumps(metrics)}")
    return card
