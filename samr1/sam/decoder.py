"""Batched SAM mask decoding for a whole rollout step (B distinct images x their prompts).

:func:`decode_batch` gives, for N prompts over B image embeddings, the same low-res logits and predicted
IoUs as N separate upstream ``SamPredictor.predict(..., return_logits=True)`` calls (third output and
second output), to fp32 round-off, but does image-only work once per image and never copies the
embedding per prompt. It reuses the upstream modules' weights (``sam.mask_decoder``); the forward is
written here because the upstream one cannot share work across prompts of the same image.

Where this forward differs from upstream ``MaskDecoder.predict_masks`` / ``TwoWayTransformer`` and why:

1. No ``repeat_interleave`` of the embedding: with no mask input the dense prompt embedding is the
   constant ``no_mask_embed``, so ``src = embedding + no_mask_embed`` and ``pos = image_pe`` are per
   image. In layer 1 the token->image keys/values ``k_proj(src + pos)``, ``v_proj(src)`` and the
   image->token queries ``q_proj(src + pos)`` depend only on the image: computed once per image, used by
   all its prompts through one matmul per image.
2. Ragged prompts in one pass: tokens are padded to the longest prompt and padded tokens are masked out
   of every attention where they would be keys (-inf logits, so their softmax weight is exactly 0).
   Padded rows as queries only produce rows that nothing reads. Extra not-a-point tokens would change
   the result; masking does not (tests compare against per-prompt upstream).
3. Attention between T prompt tokens and L = h*w image tokens is reassociated so that the L x D image
   side is never projected per prompt (projecting costs L*D*Di per projection; T*H is ~40-80 vs
   Di = 128): ``softmax(q Wk (X)^T)`` uses ``(q Wk) X^T`` (the key bias adds a per-row constant, which
   softmax ignores), ``softmax(.) (X Wv^T + bv) = (softmax(.) X) Wv^T + bv`` (rows sum to 1), and for
   image->token attention ``q_proj(X) k^T = X (Wq^T k^T) + bq k^T`` and ``out_proj(A v) = A (v Wo^T) +
   bo``, fused with the residual into one ``baddbmm``. Same math, different summation order: round-off
   only (observed ~3e-7 on logits ~0.4 of random weights, up to 5.5e-5 on logits ~60 of the trained
   tiny-shapes weights; the tests bound it by 2e-5 x max(1, max |logit|)).
4. The final token->image attention runs only for the IoU token and the kept mask tokens (the other
   tokens' outputs are never read upstream either).
5. The two stride-2 2x2 transposed convolutions of the upscaler are per-pixel linear maps: they run as
   plain matmuls in a "sub-pixel" layout (channels last), and the pixels are put in place once at the
   end for the C kept masks only. LayerNorm2d is ``F.layer_norm`` over the channel axis (same formula).
6. Only the kept mask tokens' hypernetwork MLPs run (upstream computes all and slices).

On the CPU, the passes (and each image's layer-1 work) run concurrently on ``threads`` worker threads, each
with torch single-threaded (see the comment above ``_pool`` for the measurements). The passes are fixed by
the batch alone, so the logits are bitwise equal for any thread count.
"""

from __future__ import annotations

import math
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from samr1.sam.prompts import PromptBatch, PromptError, pack_prompts

__all__ = ["decode_batch", "select_best", "default_max_prompts_per_pass", "resolve_threads",
           "DEFAULT_MAX_PROMPTS_PER_PASS"]

# Default prompts per pass, by device type. On the CPU a pass's per-prompt working set (~6 image-sized
# L x D fp32 tensors, 4 MB each at 64 x 64 x 256, plus 12 MB in the upscaler) should stay in the 32 MB L3:
# measured on the 2-core CPU (one thread, CPU ms per prompt, median of 4): 1 -> 39.9, 2 -> 39.3, 4 -> 41.0,
# 8 -> 41.9. On CUDA bigger passes mean fewer, fuller launches; 64 prompts need ~2 GB.
DEFAULT_MAX_PROMPTS_PER_PASS = {"cpu": 2, "cuda": 64}

# The CPU runs the upscaler one prompt at a time into reused buffers (cache-resident); other devices run
# it batched over the pass. Tests flip this to exercise the batched path on the CPU.
_PER_PROMPT_UPSCALER_ON_CPU = True


def default_max_prompts_per_pass(device: torch.device | str) -> int:
    """The pass size :func:`decode_batch` uses when ``max_prompts_per_pass`` is None."""
    return DEFAULT_MAX_PROMPTS_PER_PASS.get(torch.device(device).type, 16)


def _heads(w: torch.Tensor, h: int) -> torch.Tensor:
    """(H*dh, E) weight -> (H, dh, E)."""
    return w.reshape(h, w.shape[0] // h, w.shape[1])


@dataclass
class _ImageSide:
    """Layer-1 image-only tensors of one image (channels last, per head), shared by all its prompts."""

    src: torch.Tensor  # (L, D) embedding + no_mask_embed
    k0: torch.Tensor  # (H, dh, L) token->image keys k_proj(src + pos), transposed for q @ k^T
    v0: torch.Tensor  # (H, dh, L) token->image values v_proj(src), transposed
    q0: torch.Tensor  # (H, dh, L) image->token queries q_proj(src + pos), transposed


def _check_decoder(sam) -> None:
    md = sam.mask_decoder
    up = getattr(md, "output_upscaling", None)
    ok = (
        up is not None
        and len(up) == 5
        and isinstance(up[0], nn.ConvTranspose2d)
        and isinstance(up[3], nn.ConvTranspose2d)
        and all(c.kernel_size == (2, 2) and c.stride == (2, 2) and c.padding == (0, 0) for c in (up[0], up[3]))
        and hasattr(md, "transformer")
        and len(md.transformer.layers) >= 1
        and md.transformer.layers[0].skip_first_layer_pe
    )
    if not ok:
        raise TypeError(
            "decode_batch supports segment-anything's standard MaskDecoder (TwoWayTransformer, 2x2/stride-2 "
            f"upscaler); got {type(md).__name__}. Use SamPredictor for other decoders."
        )


def _layer_norm(mod: nn.Module, x: torch.Tensor) -> torch.Tensor:
    # nn.LayerNorm, and LayerNorm2d applied over a channels-last axis (same formula: biased variance).
    return F.layer_norm(x, (x.shape[-1],), mod.weight, mod.bias, mod.eps)


class _Workspace:
    """Image-sized buffers reused by every pass one worker runs in one ``decode_batch`` call (outputs of
    ops that take ``out=``; LayerNorm has no real out= kernel, its out variant allocates and copies).

    Why: on the CPU a fresh multi-MB tensor is paid in page faults on first touch. Measured on the
    2-core CPU (one thread): writing a pass's 8 MB residual sum into a fresh tensor took 8.7 ms, into a
    reused buffer ~1 ms. (On CUDA the caching allocator already does this.)
    """

    def __init__(self, n: int, l_: int, d: int, up: _Upscaler, c: int, dtype, device) -> None:
        e = dict(dtype=dtype, device=device)
        self.tmp = torch.empty((n, l_, d), **e)  # layer-1 residual sums (before LayerNorm)
        self.xk = torch.empty((n, l_, d), **e)  # keys + image PE
        if _per_prompt_upscaler(device):
            o1, o2 = up.w2.shape[0], up.w2.shape[1] // 4
            self.y = torch.empty((l_, 4 * o1), **e)  # stage 1, columns (dy, dx, channel)
            self.z = torch.empty((l_ * 4, 4 * o2), **e)  # stage 2, columns (dy2, dx2, channel)
            self.m = torch.empty((c, l_ * 16), **e)  # mask logits in sub-pixel order


def _per_prompt_upscaler(device) -> bool:
    return torch.device(device).type == "cpu" and _PER_PROMPT_UPSCALER_ON_CPU


def _act_(act: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Apply an activation module in place when it is a GELU (saves an allocation per prompt)."""
    if isinstance(act, nn.GELU):
        return torch.ops.aten.gelu_(x, approximate=act.approximate)
    return act(x)


def _token_self_attention(attn, q_in, k_in, v_in, key_bias) -> torch.Tensor:
    """Upstream ``Attention.forward`` among prompt tokens, with padded keys masked.

    ``key_bias`` (n, 1, 1, T) holds 0 for real tokens and -inf for padding, or is None (no padding).
    """
    n, t, _ = q_in.shape
    h = attn.num_heads
    q = attn.q_proj(q_in).reshape(n, t, h, -1).transpose(1, 2)
    k = attn.k_proj(k_in).reshape(n, t, h, -1).transpose(1, 2)
    v = attn.v_proj(v_in).reshape(n, t, h, -1).transpose(1, 2)
    logits = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    if key_bias is not None:
        logits = logits + key_bias
    out = torch.softmax(logits, dim=-1) @ v
    return attn.out_proj(out.transpose(1, 2).reshape(n, t, -1))


def _token_to_image(attn, q_in: torch.Tensor, x_k: torch.Tensor, x_v: torch.Tensor) -> torch.Tensor:
    """Per-prompt token->image attention without projecting the L image tokens (note 3).

    q_in (n, T, D) tokens (+PE); x_k (n, L, D) image keys (+PE); x_v (n, L, D) image values.
    Returns (n, T, D), equal to ``attn(q=q_in, k=x_k, v=x_v)``.
    """
    n, t, _ = q_in.shape
    h = attn.num_heads
    q = attn.q_proj(q_in).reshape(n, t, h, -1)  # (n, T, H, dh)
    dh = q.shape[-1]
    # (q Wk_h) / sqrt(dh): (n, H*T, D). The key bias term q.bk is constant along each softmax row: dropped.
    qk = torch.einsum("nthd,hde->nhte", q, _heads(attn.k_proj.weight, h) / math.sqrt(dh)).reshape(n, h * t, -1)
    p = torch.softmax(torch.bmm(qk, x_k.transpose(1, 2)), dim=-1)  # (n, H*T, L)
    px = torch.bmm(p, x_v).reshape(n, h, t, -1)  # (n, H, T, D) softmax-weighted image tokens
    out = torch.einsum("nhte,hde->nthd", px, _heads(attn.v_proj.weight, h)).reshape(n, t, -1) + attn.v_proj.bias
    return attn.out_proj(out)


def _image_to_token_kv(attn, k_in, v_in):
    """Per-prompt keys and folded values of image->token attention (note 3).

    k_in (n, T, D) tokens (+PE) the image attends to; v_in (n, T, D) their values.
    Returns k (n, T, H, dh) and vw (n, H*T, D) such that ``attn(q=X, k=k_in, v=v_in) = A @ vw`` for A the
    per-head softmax laid out (n, L, H*T): ``vw`` rows are ``v_h Wo_h^T`` with the out_proj bias folded in
    as bo / H per row (each head's softmax weights sum to 1, so the H heads add up to bo).
    """
    n, t, _ = k_in.shape
    h = attn.num_heads
    k = attn.k_proj(k_in).reshape(n, t, h, -1)
    v = attn.v_proj(v_in).reshape(n, t, h, -1)
    wo = attn.out_proj.weight.reshape(-1, h, k.shape[-1])  # (D, H, dh)
    vw = torch.einsum("nthd,ehd->nhte", v, wo) + attn.out_proj.bias / h
    return k, vw.reshape(n, h * t, -1)


def _softmax_over_tokens(logits_t: torch.Tensor, t: int, key_bias) -> torch.Tensor:
    """Softmax over the T tokens of each head for image->token attention (the bias is added in place).

    logits_t (..., H*T, L) holds the logits transposed (image tokens last): torch's CPU softmax is ~10x
    faster over a middle axis with a long contiguous inner axis than over a last axis of size ~9
    (measured: 6 ms vs 70-90 ms for 8 x 4096 x 8 x 9 on the 2-core CPU).
    """
    shape = logits_t.shape
    x = logits_t.view(*shape[:-2], shape[-2] // t, t, shape[-1])
    if key_bias is not None:
        x += key_bias
    return torch.softmax(x, dim=-2).view(shape)


def _image_side(sam, src: torch.Tensor, pos: torch.Tensor) -> _ImageSide:
    """Layer-1 image-only work for one image: src (L, D) (embedding + no_mask_embed), pos (L, D).

    The projections are computed transposed, ``W @ X^T + b`` -> (Di, L) = (H, dh, L), so that the
    per-head layout comes out of the matmul without a transpose copy.
    """
    layer = sam.mask_decoder.transformer.layers[0]
    t2i, i2t = layer.cross_attn_token_to_image, layer.cross_attn_image_to_token
    l_ = src.shape[0]

    def proj_t(lin: nn.Linear, x: torch.Tensor, heads: int) -> torch.Tensor:
        return torch.addmm(lin.bias[:, None], lin.weight, x.t()).view(heads, -1, l_)

    x0 = src + pos
    return _ImageSide(src=src, k0=proj_t(t2i.k_proj, x0, t2i.num_heads), v0=proj_t(t2i.v_proj, src, t2i.num_heads),
                      q0=proj_t(i2t.q_proj, x0, i2t.num_heads))


def _first_layer(sam, sides: list[_ImageSide], groups, tokens, key_bias, ws: _Workspace):
    """Layer 1 of the two-way transformer (skip_first_layer_pe) with the image side shared.

    groups: list of (u, start, end): prompts start:end of the pass belong to the image of ``sides[u]``.
    Returns (queries (n, T, D), keys (n, L, D)).
    """
    layer = sam.mask_decoder.transformer.layers[0]
    t2i, i2t = layer.cross_attn_token_to_image, layer.cross_attn_image_to_token
    n, t, d = tokens.shape
    query_pe = tokens
    # Self attention without PE and without residual (upstream skip_first_layer_pe).
    queries = _layer_norm(layer.norm1, _token_self_attention(layer.self_attn, tokens, tokens, tokens, key_bias))

    # Token -> image: keys/values per image; one matmul per image for all of its prompts.
    h = t2i.num_heads
    q = t2i.q_proj(queries + query_pe)  # (n, T, Di)
    dh = q.shape[-1] // h
    out = torch.empty_like(q)
    for u, s, e in groups:
        qh = q[s:e].reshape((e - s) * t, h, dh).transpose(0, 1) / math.sqrt(dh)  # (H, m*T, dh), pre-scaled
        a = torch.softmax(qh @ sides[u].k0, dim=-1)  # (H, m*T, L)
        out[s:e] = (a @ sides[u].v0.transpose(1, 2)).transpose(0, 1).reshape(e - s, t, -1)
    queries = _layer_norm(layer.norm2, queries + t2i.out_proj(out))
    queries = _layer_norm(layer.norm3, queries + layer.mlp(queries))

    # Image -> token: queries q_proj(src + pos) per image, keys/values per prompt; the attention output
    # projection and the residual src are fused into one baddbmm per image.
    h = i2t.num_heads
    k, vw = _image_to_token_kv(i2t, queries + query_pe, queries)
    dh = k.shape[-1]
    pre = ws.tmp[:n]
    for u, s, e in groups:
        m = e - s
        kh = k[s:e].permute(2, 0, 1, 3).reshape(h, m * t, dh) / math.sqrt(dh)  # (H, m*T, dh)
        logits_t = (kh @ sides[u].q0).view(h, m, t, -1)  # (H, m, T, L): logits transposed
        kb = None if key_bias is None else key_bias[s:e].view(1, m, t, 1)
        a_t = _softmax_over_tokens(logits_t.view(h, m * t, -1), t, kb)
        a_t = a_t.view(h, m, t, -1).transpose(0, 1).reshape(m, h * t, -1)  # (m, H*T, L)
        torch.baddbmm(sides[u].src.expand(m, -1, -1), a_t.transpose(1, 2), vw[s:e], out=pre[s:e])
    keys = _layer_norm(layer.norm4, pre)
    return queries, keys


def _later_layer(layer, queries, keys, query_pe, pos, key_bias, ws: _Workspace):
    """Layers 2.. of the two-way transformer, everything per prompt (keys differ per prompt now)."""
    n, t, _ = queries.shape
    q = queries + query_pe
    queries = _layer_norm(layer.norm1, queries + _token_self_attention(layer.self_attn, q, q, queries, key_bias))
    xk = torch.add(keys, pos, out=ws.xk[:n])
    q = queries + query_pe
    queries = _layer_norm(layer.norm2, queries + _token_to_image(layer.cross_attn_token_to_image, q, xk, keys))
    queries = _layer_norm(layer.norm3, queries + layer.mlp(queries))

    i2t = layer.cross_attn_image_to_token
    h = i2t.num_heads
    k, vw = _image_to_token_kv(i2t, queries + query_pe, queries)
    dh = k.shape[-1]
    # q_proj(X) k^T / sqrt(dh) = X (Wq^T k^T) / sqrt(dh) + bq k^T / sqrt(dh), computed transposed (H*T, L).
    wq = _heads(i2t.q_proj.weight, h) / math.sqrt(dh)  # (H, dh, D)
    wqk_t = torch.einsum("hde,nthd->nhte", wq, k).reshape(n, h * t, -1)  # (n, H*T, D)
    bqk = torch.einsum("hd,nthd->nht", i2t.q_proj.bias.reshape(h, dh) / math.sqrt(dh), k).reshape(n, h * t, 1)
    logits_t = torch.baddbmm(bqk, wqk_t, xk.transpose(1, 2))  # (n, H*T, L)
    kb = None if key_bias is None else key_bias.view(n, 1, t, 1)
    a_t = _softmax_over_tokens(logits_t, t, kb)
    # keys are this pass's own tensor and dead after this: accumulate the attention output into them in
    # place (saves copying 4 MB per prompt into a fresh buffer first).
    keys = _layer_norm(layer.norm4, keys.baddbmm_(a_t.transpose(1, 2), vw))
    return queries, keys


@dataclass
class _Upscaler:
    """The upscaler's transposed convolutions as per-pixel matmuls (note 5), weights rearranged once."""

    w1: torch.Tensor  # (D, 4*o1), columns (dy, dx, channel)
    b1: torch.Tensor  # (4*o1,)
    ln: nn.Module
    act1: nn.Module
    w2: torch.Tensor  # (o1, 4*o2)
    b2: torch.Tensor  # (4*o2,)
    act2: nn.Module

    @classmethod
    def from_decoder(cls, md) -> _Upscaler:
        c1, ln, act1, c2, act2 = (md.output_upscaling[i] for i in range(5))
        d, o1, o2 = c1.in_channels, c1.out_channels, c2.out_channels
        return cls(
            w1=c1.weight.permute(0, 2, 3, 1).reshape(d, 4 * o1).contiguous(),
            b1=c1.bias.repeat(4),
            ln=ln,
            act1=act1,
            w2=c2.weight.permute(0, 2, 3, 1).reshape(o1, 4 * o2).contiguous(),
            b2=c2.bias.repeat(4),
            act2=act2,
        )

    def one(self, keys: torch.Tensor, hyper: torch.Tensor, out: torch.Tensor, h: int, w: int, ws: _Workspace) -> None:
        """keys (L, D) of one prompt, hyper (C, o2) -> logits written into out (C, 4h, 4w) (CPU path).

        One prompt at a time into reused buffers (no page faults; 4 + 8 MB of intermediates per prompt
        rather than a pass's worth). Processing it in L2-sized bands of rows instead was measured no
        faster (13.8-14.5 ms per prompt for bands of 4 to 64 rows, one thread): the GEMMs dominate.
        """
        l_ = keys.shape[0]
        o1 = self.w2.shape[0]
        torch.addmm(self.b1, keys, self.w1, out=ws.y)  # rows: pixels; columns (dy, dx, channel)
        y = _act_(self.act1, _layer_norm(self.ln, ws.y.view(l_ * 4, o1)))
        z = _act_(self.act2, torch.addmm(self.b2, y, self.w2, out=ws.z))  # columns (dy2, dx2, channel)
        c = hyper.shape[0]
        m = torch.mm(hyper, z.view(l_ * 16, -1).t(), out=ws.m[:c])  # (C, L*16), (pixel, dy, dx, dy2, dx2)
        _place(m.view(c, h, w, 2, 2, 2, 2), out)

    def batched(self, keys: torch.Tensor, hyper: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """keys (n, L, D), hyper (n, C, o2) -> logits (n, C, 4h, 4w) (CUDA path: one launch per op)."""
        n, l_, d = keys.shape
        o1 = self.w2.shape[0]
        y = _act_(self.act1, _layer_norm(self.ln, torch.addmm(self.b1, keys.reshape(n * l_, d), self.w1).view(-1, o1)))
        z = _act_(self.act2, torch.addmm(self.b2, y, self.w2)).view(n, l_ * 16, -1)
        m = torch.bmm(hyper, z.transpose(1, 2))  # (n, C, L*16)
        c = hyper.shape[1]
        out = torch.empty((n, c, 4 * h, 4 * w), dtype=m.dtype, device=m.device)
        _place(m.view(n, c, h, w, 2, 2, 2, 2), out)
        return out


def _place(m: torch.Tensor, out: torch.Tensor) -> None:
    """Put sub-pixel-ordered logits (..., C, y, x, dy, dx, dy2, dx2) into out (..., C, 4h, 4w) at pixel
    (4y + 2dy + dy2, 4x + 2dx + dx2): one strided copy."""
    *lead, c, h, w = m.shape[:-4]
    src = m.permute(*range(len(lead)), len(lead), len(lead) + 1, len(lead) + 3, len(lead) + 5,
                    len(lead) + 2, len(lead) + 4, len(lead) + 6)
    out.view(*lead, c, h, 2, 2, w, 2, 2).copy_(src)


@dataclass
class _Outputs:
    """The outputs of one :func:`decode_batch` call, which its passes fill row by row, and their sizes."""

    logits: torch.Tensor  # (N, C, 4h, 4w) float32 low-res mask logits
    iou: torch.Tensor  # (N, C) float32 predicted IoUs
    h: int  # image-embedding grid (L = h * w tokens); masks are 4h x 4w
    w: int
    mask_slice: slice  # the kept mask tokens: 1: (multimask, C = 3) or 0:1 (C = 1)


@dataclass
class _Pass:
    """One pass: n prompts of the call decoded together, sorted by image, and the rows they fill."""

    sides: list[_ImageSide]  # layer-1 image-side tensors of the pass's distinct images
    groups: list[tuple[int, int, int]]  # (u, start, end): prompts start:end belong to the image of sides[u]
    sparse: torch.Tensor  # (n, S, D) packed prompt tokens, S = the pass's longest prompt
    counts: torch.Tensor  # (n,) real tokens per prompt (the rest of S is padding)
    rows: torch.Tensor  # (n,) int64 rows of the call's outputs these prompts fill
    pos: torch.Tensor  # (L, D) image positional encoding (the call's)
    up: _Upscaler  # the upscaler's rearranged weights (the call's)
    out: _Outputs  # where the results go (shared by the call's passes; each writes only its own rows)


def _decode_pass(sam, p: _Pass, ws: _Workspace) -> None:
    """Decode one pass: the two-way transformer, the IoU head and the upscaler for its n prompts, written
    into rows ``p.rows`` of ``p.out``."""
    md = sam.mask_decoder
    tr = md.transformer
    pos = p.pos
    n = p.sparse.shape[0]
    out_tok = torch.cat([md.iou_token.weight, md.mask_tokens.weight], dim=0)  # (O, D): IoU + mask tokens
    o = out_tok.shape[0]
    tokens = torch.cat([out_tok.expand(n, -1, -1), p.sparse], dim=1)  # (n, T, D); also the query PE
    t = tokens.shape[1]
    real = torch.arange(t, device=tokens.device)[None, :] < (o + p.counts)[:, None]
    key_bias = None
    if not bool(real.all()):  # padding only when the pass mixes token counts
        key_bias = torch.zeros((n, t), dtype=tokens.dtype, device=tokens.device).masked_fill_(~real, float("-inf"))
        key_bias = key_bias.view(n, 1, 1, t)

    queries, keys = _first_layer(sam, p.sides, p.groups, tokens, key_bias, ws)
    for layer in tr.layers[1:]:
        queries, keys = _later_layer(layer, queries, keys, tokens, pos, key_bias, ws)

    # Final token->image attention only for the tokens read afterwards (note 4): the IoU token and the
    # kept mask tokens (queries are independent rows, so dropping the others changes nothing).
    idx = list(range(md.num_mask_tokens))[p.out.mask_slice]
    kept = [0] + [1 + i for i in idx]  # token rows: the IoU token, then the kept mask tokens
    q = queries[:, kept] + tokens[:, kept]
    fin = _token_to_image(tr.final_attn_token_to_image, q, torch.add(keys, pos, out=ws.xk[:n]), keys)
    hs = _layer_norm(tr.norm_final_attn, queries[:, kept] + fin)

    p.out.iou[p.rows] = md.iou_prediction_head(hs[:, 0])[:, p.out.mask_slice]
    hyper = torch.stack([md.output_hypernetworks_mlps[i](hs[:, 1 + j]) for j, i in enumerate(idx)], dim=1)  # (n, C, D/8)
    if _per_prompt_upscaler(keys.device):
        for j, row in enumerate(p.rows.tolist()):
            p.up.one(keys[j], hyper[j], p.out.logits[row], p.out.h, p.out.w, ws)
    else:
        p.out.logits[p.rows] = p.up.batched(keys, hyper, p.out.h, p.out.w)


def _validate(sam, embeddings: torch.Tensor, batch: PromptBatch, max_prompts_per_pass: int) -> None:
    if not isinstance(embeddings, torch.Tensor):
        raise TypeError(f"embeddings must be a torch.Tensor (B x D x h x w), got {type(embeddings).__name__}")
    pe = sam.prompt_encoder
    d = pe.embed_dim
    eh, ew = pe.image_embedding_size
    if embeddings.ndim != 4 or embeddings.shape[1] != d or tuple(embeddings.shape[2:]) != (eh, ew):
        raise ValueError(
            f"embeddings must have shape (B, {d}, {eh}, {ew}) (SAM image encoder output for B distinct "
            f"images), got {tuple(embeddings.shape)}"
        )
    if embeddings.dtype != torch.float32:
        raise ValueError(f"embeddings must be float32, got {embeddings.dtype}; use embeddings.float()")
    dev = pe.no_mask_embed.weight.device
    if embeddings.device != dev:
        raise ValueError(f"embeddings are on {embeddings.device} but SAM is on {dev}; move one of them")
    if not isinstance(batch, PromptBatch):
        raise TypeError(f"batch must be a samr1.sam.prompts.PromptBatch, got {type(batch).__name__}")
    if isinstance(max_prompts_per_pass, bool) or not isinstance(max_prompts_per_pass, int) or max_prompts_per_pass < 1:
        raise ValueError(f"max_prompts_per_pass must be a positive int, got {max_prompts_per_pass!r}")
    batch.validate(num_images=embeddings.shape[0])
    if batch.device != dev:
        raise PromptError(f"prompt batch is on {batch.device} but SAM is on {dev}; use batch.to({str(dev)!r})")
    _check_decoder(sam)


@torch.no_grad()
def decode_batch(
    sam,
    embeddings: torch.Tensor,
    batch: PromptBatch,
    multimask: bool = True,
    max_prompts_per_pass: int | None = None,
    pack_backend: str = "auto",
    threads: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode all prompts of a step at once.

    Args:
        sam: segment-anything ``Sam`` (frozen; only its prompt encoder and mask decoder are used).
        embeddings: (B, D, h, w) float32 image-encoder outputs of the step's B distinct images (256 x 64 x
            64 for upstream SAM), on SAM's device; prompt n uses ``embeddings[batch.image_index[n]]``.
        batch: the N prompts, coordinates in ORIGINAL pixels; ``batch.original_sizes`` holds the B sizes.
        multimask: True -> C = 3 masks per prompt (upstream mask tokens 1..3), False -> C = 1 (token 0),
            exactly upstream's ``multimask_output`` slicing.
        max_prompts_per_pass: prompts decoded together (any N is processed in passes); each needs ~30
            MB of fp32 intermediates at the standard sizes, so this bounds memory. None: 2 on the CPU (cache-
            resident, fastest there), 64 on CUDA (see ``DEFAULT_MAX_PROMPTS_PER_PASS``). Results do not
            depend on it beyond round-off.
        pack_backend: prompt packing backend ("auto", "torch", "triton"), see ``pack_prompts``.
        threads: CPU only: worker threads that decode passes (and images' shared work) concurrently, each
            running torch single-threaded (see ``_pool``). None: ``torch.get_num_threads()`` of the caller.
            The passes and every op in them are the same for any value, so the results are bitwise equal
            for any ``threads``. Ignored on CUDA.

    Returns:
        low_res_logits: (N, C, 4h, 4w) float32 (N x C x 256 x 256 for upstream SAM): the mask logits
            before postprocessing, in the padded model frame, like ``predict(...)[2]``.
        iou_pred: (N, C) float32 predicted IoUs, like ``predict(...)[1]``.
    """
    if max_prompts_per_pass is None and isinstance(embeddings, torch.Tensor):
        max_prompts_per_pass = default_max_prompts_per_pass(embeddings.device)
    _validate(sam, embeddings, batch, max_prompts_per_pass)
    threads = resolve_threads(threads)
    md = sam.mask_decoder
    b, d, h, w = embeddings.shape
    mask_slice = slice(1, None) if multimask else slice(0, 1)
    c = len(range(md.num_mask_tokens)[mask_slice])
    n = batch.num_prompts
    dev = embeddings.device
    out = _Outputs(logits=torch.empty((n, c, 4 * h, 4 * w), dtype=torch.float32, device=dev),
                   iou=torch.empty((n, c), dtype=torch.float32, device=dev), h=h, w=w, mask_slice=mask_slice)
    if n == 0:
        return out.logits, out.iou

    # The plan (which prompts share a pass) depends only on the batch and the pass size, never on the
    # thread count: prompts sorted by image so that each image's prompts are contiguous within a pass.
    img = batch.image_index.long()
    order = torch.sort(img, stable=True).indices
    img_sorted = img[order].tolist()
    passes = [(s, min(n, s + max_prompts_per_pass)) for s in range(0, n, max_prompts_per_pass)]
    images = sorted(set(img_sorted))

    run = _Runner(dev, threads)
    prep = run.submit(_prepare, sam, batch, pack_backend, b)
    sides = {i: run.submit(_side_task, sam, embeddings, i, prep) for i in images}
    workspaces: dict[int, _Workspace] = {}  # one per worker thread (buffers reused by its passes)
    ws_args = (min(n, max_prompts_per_pass), h * w, d, c, embeddings.dtype, dev)
    tasks = [run.submit(_pass_task, sam, prep, sides, workspaces, ws_args, img_sorted[s:e], order[s:e], out)
             for s, e in passes]
    run.wait([prep, *sides.values(), *tasks])
    return out.logits, out.iou


MAX_DECODE_THREADS = 256
"""Largest worker count :func:`decode_batch` accepts."""


def resolve_threads(threads: int | None) -> int:
    """The worker count :func:`decode_batch` uses: ``threads``, or torch's intra-op thread count when None."""
    if threads is None:
        return torch.get_num_threads()
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive int (or None for torch.get_num_threads()), got {threads!r}")
    if threads > MAX_DECODE_THREADS:
        # each count gets a process-wide pool that is kept: an unbounded count would spawn unbounded threads
        raise ValueError(f"threads must be at most {MAX_DECODE_THREADS}, got {threads}")
    return threads


@dataclass
class _Prepared:
    sparse: torch.Tensor  # (N, S, D) packed prompt tokens
    counts: torch.Tensor  # (N,) real tokens per prompt
    pos: torch.Tensor  # (L, D) image positional encoding
    no_mask: torch.Tensor  # (1, D)
    up: _Upscaler


def _prepare(sam, batch: PromptBatch, pack_backend: str, num_images: int) -> _Prepared:
    """Per-call work shared by every pass: prompt packing, the dense PE, the upscaler's weights."""
    pe = sam.prompt_encoder
    d = pe.embed_dim
    sparse, counts = pack_prompts(sam, batch, backend=pack_backend, num_images=num_images)
    pos = pe.get_dense_pe().reshape(d, -1).t().contiguous()  # (L, D)
    return _Prepared(sparse, counts, pos, pe.no_mask_embed.weight.reshape(1, d), _Upscaler.from_decoder(sam.mask_decoder))


def _side_task(sam, embeddings: torch.Tensor, i: int, prep: Future) -> _ImageSide:
    p: _Prepared = prep.result()
    d = embeddings.shape[1]
    src = embeddings[i].reshape(d, -1).t() + p.no_mask  # (L, D)
    return _image_side(sam, src, p.pos)


def _pass_task(sam, prep: Future, side_futs: dict[int, Future], workspaces: dict, ws_args, ids: list[int],
               sel: torch.Tensor, out: _Outputs) -> None:
    """One pass of prompts ``sel`` (image ``ids[k]`` for the k-th), once the call's shared work is ready."""
    p: _Prepared = prep.result()
    uniq = sorted(set(ids))
    sides = [side_futs[i].result() for i in uniq]
    pos_of = {im: u for u, im in enumerate(uniq)}
    groups, s = [], 0  # (u, start, end): prompts start:end of the pass belong to the image of sides[u]
    while s < len(ids):
        e = s
        while e < len(ids) and ids[e] == ids[s]:
            e += 1
        groups.append((pos_of[ids[s]], s, e))
        s = e
    tid = threading.get_ident()
    ws = workspaces.get(tid)
    if ws is None:
        n, l_, d, c, dtype, dev = ws_args
        ws = workspaces.setdefault(tid, _Workspace(n, l_, d, p.up, c, dtype, dev))
    cnt = p.counts[sel]
    smax = int(cnt.max())
    _decode_pass(sam, _Pass(sides=sides, groups=groups, sparse=p.sparse[sel, :smax], counts=cnt, rows=sel,
                            pos=p.pos, up=p.up, out=out), ws)


# ------------------------------------------------------------------ CPU worker threads
#
# Why a pool of single-threaded workers rather than torch's intra-op threads: a CPU pass is ~2 prompts
# of small matmuls (T ~ 8 token rows, D = 256) and one-prompt upscaler GEMMs, sized to stay in the L3
# cache; split over cores by OpenMP, every op ends at a barrier and the threads mostly wait there.
# Measured on the 2-core CPU with torch's intra-op threads (idle machine, `samr1 bench decode --quick`,
# 32 prompts, decode + select + fused IoU): 1 thread 41.0 ms/prompt, 2 threads 29.7 (1.38x; CPU time
# 41 -> 59 ms/prompt). Passes of several prompts instead: on the same machine under load (1-min load
# average 9-10; decode_batch alone, 32 prompts, wall / CPU ms per prompt) intra-op 2 threads with passes
# of 2: 915 / 312, of 8: 584 / 171; this pool, 2 workers, passes of 1 / 2 / 4: 244 / 68, 226 / 63,
# 199 / 57, against 220 / 61 for 1 worker. Again at load 3.6-5.5, alternating, best of 2: intra-op 1
# thread 60-89 / 58-65, 2 threads 266-404 / 176-263; pool 1 worker 75-91 / 62-68, 2 workers 85-96 / 56-59.
# The pool's CPU time per prompt stays that of one thread (no barrier, no spinning OpenMP worker; the
# GIL is released inside every torch op), so on an idle machine its wall time per prompt is about the
# one-thread time / workers; the intra-op path spends up to 4x the CPU time when a core is contended.
# The pass size stays 2 (1 / 2 / 4 are within the noise of these runs; 2 was best at one thread).
# Workers also make the result independent of the thread count: every op runs on one thread whichever
# worker runs it, and the passes are fixed by the batch, so 1, 2 or 4 threads give bitwise equal logits.

_POOLS: dict[int, ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()


def _forget_pools_in_child() -> None:
    # A forked child (a DataLoader or server worker) inherits the pools without their threads: a task
    # submitted there would never run. It starts with no pools and makes its own on first use.
    global _POOLS_LOCK
    _POOLS.clear()
    _POOLS_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pools_in_child)


def _init_worker(barrier: threading.Barrier) -> None:
    # get first: torch initialises a thread's OpenMP/MKL thread count lazily on its first parallel op,
    # from the process default; reading it forces that now, so set_num_threads(1) below is not undone later.
    torch.get_num_threads()
    torch.set_num_threads(1)
    barrier.wait(timeout=60)  # one init task per thread: each waits until all k threads exist


def _pool(k: int) -> ThreadPoolExecutor:
    """The process-wide pool of ``k`` decode workers, each with torch set to one intra-op thread.

    Created once per size and kept (idle threads cost nothing). ``torch.set_num_threads`` also sets the
    process default that threads created later start with: it is put back to the caller's value after the
    workers are set up, so nothing outside the pool sees a change.
    """
    with _POOLS_LOCK:
        pool = _POOLS.get(k)
        if pool is None:
            caller = torch.get_num_threads()
            pool = ThreadPoolExecutor(max_workers=k, thread_name_prefix=f"samr1-decode-{k}")
            barrier = threading.Barrier(k)
            for f in [pool.submit(_init_worker, barrier) for _ in range(k)]:
                f.result()
            torch.set_num_threads(caller)
            _POOLS[k] = pool
    return pool


class _Runner:
    """Runs decode tasks: on the CPU in the ``threads`` worker pool (under the caller's grad/inference
    mode, which is thread-local), elsewhere inline in submission order (CUDA ops are asynchronous anyway)."""

    def __init__(self, device: torch.device, threads: int) -> None:
        self.pool = _pool(threads) if device.type == "cpu" else None
        self.inference = torch.is_inference_mode_enabled()

    def submit(self, fn, *args) -> Future:
        if self.pool is not None:
            return self.pool.submit(self._call, fn, *args)
        f: Future = Future()
        try:
            f.set_result(fn(*args))
        except BaseException as exc:  # noqa: BLE001 - re-raised by wait(), like the pool's futures
            f.set_exception(exc)
        return f

    def _call(self, fn, *args):
        with torch.inference_mode(self.inference), torch.no_grad():
            return fn(*args)

    @staticmethod
    def wait(futures: list[Future]) -> None:
        """Wait for every task (none is left running on shared outputs), then raise the first error."""
        wait(futures)
        for f in futures:
            f.result()


def select_best(low_res_logits: torch.Tensor, iou_pred: torch.Tensor, return_index: bool = False):
    """Pick each prompt's mask with the highest predicted IoU (Seg-Zero's rule for multimask output).

    Args:
        low_res_logits: (N, C, h, w) float logits from :func:`decode_batch` (C = 1 gives that mask).
        iou_pred: (N, C) predicted IoUs.
        return_index: also return the chosen indices.

    Returns:
        best_logits (N, h, w), the chosen mask's logits (a new tensor, not a view); with
        ``return_index``, ``(best_logits, best_index)`` with best_index (N,) int64 in 0..C-1 (the first
        one on ties, like ``argmax``).
    """
    if low_res_logits.ndim != 4 or iou_pred.ndim != 2 or low_res_logits.shape[:2] != iou_pred.shape:
        raise ValueError(
            f"expected low_res_logits (N, C, h, w) and iou_pred (N, C) with the same N, C; got "
            f"{tuple(low_res_logits.shape)} and {tuple(iou_pred.shape)}"
        )
    best = iou_pred.argmax(dim=1)
    rows = torch.arange(low_res_logits.shape[0], device=low_res_logits.device)
    out = low_res_logits[rows, best]
    return (out, best) if return_index else out
