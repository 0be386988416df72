"""A tiny Qwen2.5-VL (or Qwen3-VL) policy built in code, for tests, smoke runs and CPU benches (no model hub).

:func:`build_tiny_policy` writes a directory that ``AutoModelForImageTextToText.from_pretrained`` and
``AutoProcessor.from_pretrained`` load, exactly like a real Qwen2.5-VL checkpoint:

- tokenizer: a byte-level ``Qwen2Tokenizer`` whose vocabulary is the 256 byte symbols (GPT-2's byte to
  unicode map) and no merges, so every byte is one token and any text round-trips without training;
  Qwen's special tokens (``<|im_start|>``, ``<|vision_start|>``, ``<|image_pad|>``, ...) come after them;
- processor: ``Qwen2_5_VLProcessor`` with a ``Qwen2VLImageProcessor`` limited to ``max_pixels`` (56 x 56 by
  default: 4 patches of 28 px, i.e. one image token per 28 x 28 block after the 2 x 2 merge) and a chat
  template in Qwen2-VL's format (TRL's VLM path needs conversational prompts and a template);
- model: ``Qwen2_5_VLForConditionalGeneration`` with one vision block and one text layer (~43 k
  parameters at the defaults), random weights from ``seed``.

``family="qwen3_vl"`` builds a tiny Qwen3-VL instead (``Qwen3VLForConditionalGeneration``, its processor
with 16 px patches: one image token per 32 x 32 block; one vision block with a deepstack merger): the family
that answers in 0..1000 coordinates relative to the image (``answer_frame="norm1000"``).

The weights are random: the policy writes byte soup until it is trained (see ``samr1.train.warmstart``).
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["SPECIAL_TOKENS", "CHAT_TEMPLATE", "FAMILIES", "byte_vocab", "build_tiny_tokenizer", "build_tiny_processor",
           "build_tiny_policy"]

FAMILIES: tuple[str, ...] = ("qwen2_5_vl", "qwen3_vl")
"""Model families :func:`build_tiny_policy` builds (transformers' ``model_type`` names)."""

SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>",
    "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
)
"""Qwen2.5-VL's special tokens, in Qwen's order; their ids follow the 256 byte symbols."""

# Qwen2-VL's chat template, reduced to what training needs: system/user/assistant turns whose content is a
# string or a list of {"type": "image"} / {"type": "text"} parts, and the generation prompt.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def byte_vocab() -> dict[str, int]:
    """GPT-2's byte -> printable unicode map as a vocabulary: byte b's symbol gets id b (0..255)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    table = dict(zip(bs, (chr(c) for c in cs), strict=True))
    return {table[b]: b for b in range(256)}


def build_tiny_tokenizer():
    """A byte-level ``Qwen2Tokenizer``: 256 byte tokens (id = byte value), no merges, then Qwen's specials."""
    from transformers import Qwen2Tokenizer

    vocab = byte_vocab()
    for i, tok in enumerate(SPECIAL_TOKENS):
        vocab[tok] = 256 + i
    tok = Qwen2Tokenizer(vocab=vocab, merges=[], unk_token=None, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                         additional_special_tokens=list(SPECIAL_TOKENS[1:]))
    tok.chat_template = CHAT_TEMPLATE
    return tok


def build_tiny_processor(min_pixels: int = 28 * 28, max_pixels: int = 56 * 56, family: str = "qwen2_5_vl"):
    """``Qwen2_5_VLProcessor`` (or ``Qwen3VLProcessor``) over :func:`build_tiny_tokenizer`; images resized to at
    most ``max_pixels``."""
    from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    if family == "qwen3_vl":
        from transformers import Qwen3VLProcessor
        from transformers.models.qwen3_vl import Qwen3VLVideoProcessor

        kw = dict(min_pixels=min_pixels, max_pixels=max_pixels, patch_size=16, merge_size=2)
        return Qwen3VLProcessor(image_processor=Qwen2VLImageProcessor(**kw, image_mean=[0.5] * 3, image_std=[0.5] * 3),
                                tokenizer=build_tiny_tokenizer(), video_processor=Qwen3VLVideoProcessor(**kw),
                                chat_template=CHAT_TEMPLATE)
    image_processor = Qwen2VLImageProcessor(min_pixels=min_pixels, max_pixels=max_pixels)
    video_processor = Qwen2VLVideoProcessor(min_pixels=min_pixels, max_pixels=max_pixels)
    return Qwen2_5_VLProcessor(image_processor=image_processor, tokenizer=build_tiny_tokenizer(),
                               video_processor=video_processor, chat_template=CHAT_TEMPLATE)


def _tiny_config(tokenizer: Any, hidden: int, layers: int, heads: int, family: str = "qwen2_5_vl"):
    from transformers import Qwen2_5_VLConfig

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    head_dim = hidden // heads
    # mrope splits head_dim / 2 rotary frequencies over (time, height, width); Qwen's ratio is 2:3:3.
    half = head_dim // 2
    t = max(1, half // 4)
    h = (half - t) // 2
    mrope = [t, h, half - t - h]
    text = dict(vocab_size=256 + len(SPECIAL_TOKENS), hidden_size=hidden, intermediate_size=2 * hidden,
                num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=max(1, heads // 2),
                max_position_embeddings=4096, rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                               "mrope_section": mrope},
                bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
                pad_token_id=ids["<|endoftext|>"])
    tokens = dict(image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                  vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
                  tie_word_embeddings=False)
    if family == "qwen3_vl":
        from transformers import Qwen3VLConfig

        text3 = {k: v for k, v in text.items() if k not in ("bos_token_id", "eos_token_id")}
        text3.update(head_dim=head_dim, rope_parameters={**text["rope_parameters"], "mrope_interleaved": True})
        # num_position_embeddings: a square grid of learned positions, interpolated to the image's patches
        vision3 = dict(depth=1, hidden_size=hidden, intermediate_size=2 * hidden, num_heads=heads,
                       out_hidden_size=hidden, patch_size=16, spatial_merge_size=2, temporal_patch_size=2,
                       num_position_embeddings=16, deepstack_visual_indexes=[0])
        return Qwen3VLConfig(text_config=text3, vision_config=vision3, **tokens)
    vision = dict(depth=1, hidden_size=hidden, intermediate_size=2 * hidden, num_heads=heads, out_hidden_size=hidden,
                  patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                  fullatt_block_indexes=[0])
    return Qwen2_5_VLConfig(text_config=text, vision_config=vision, **tokens)


def build_tiny_policy(out_dir: str | os.PathLike, *, hidden: int = 32, layers: int = 1, heads: int = 2, seed: int = 0,
                      min_pixels: int | None = None, max_pixels: int | None = None, family: str = "qwen2_5_vl") -> str:
    """Write a tiny random Qwen2.5-VL or Qwen3-VL (model + processor) to ``out_dir`` and return its path.

    Args:
        out_dir: created when missing; ``config.json``, weights, tokenizer and processor files are written.
        hidden: text and vision width (the vision tower's output width equals it); must be divisible by
            ``heads`` with an even head size of at least 6 (mrope needs 3 frequency groups).
        layers: text decoder layers.
        heads: attention heads (key/value heads: half of them).
        seed: torch seed of the random weights.
        min_pixels, max_pixels: the image processor's pixel bounds (small images mean few image tokens;
            default one to four merged blocks: 28 x 28 .. 56 x 56 for Qwen2.5-VL, 32 x 32 .. 64 x 64 for Qwen3-VL).
        family: "qwen2_5_vl" (default) or "qwen3_vl" (:data:`FAMILIES`).
    """
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    block = 32 if family == "qwen3_vl" else 28
    min_pixels = block * block if min_pixels is None else min_pixels
    max_pixels = 4 * block * block if max_pixels is None else max_pixels
    if hidden % heads or (hidden // heads) % 2 or hidden // heads < 6:
        raise ValueError(f"hidden={hidden} / heads={heads} must give an even head size >= 6, e.g. hidden=32, heads=2")
    out = os.fspath(out_dir)
    os.makedirs(out, exist_ok=True)
    processor = build_tiny_processor(min_pixels, max_pixels, family)
    config = _tiny_config(processor.tokenizer, hidden, layers, heads, family)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if family == "qwen3_vl":
            from transformers import Qwen3VLForConditionalGeneration

            model = Qwen3VLForConditionalGeneration(config)
        else:
            model = Qwen2_5_VLForConditionalGeneration(config)
    tok = processor.tokenizer
    model.generation_config.eos_token_id = tok.convert_tokens_to_ids("<|im_end|>")
    model.generation_config.pad_token_id = tok.convert_tokens_to_ids("<|endoftext|>")
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out
