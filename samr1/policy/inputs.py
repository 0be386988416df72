"""One builder of the policy's model inputs, shaped exactly as TRL's ``GRPOTrainer`` shapes them.

TRL 1.16 renders a conversational prompt with ``prepare_multimodal_messages`` (the image part first) and the
processor's chat template, passes EVERY key the processor returns (``input_ids``, ``attention_mask``,
``mm_token_type_ids``, ``pixel_values``, ``image_grid_thw``, ...) to ``generate`` and to the loss forward, and
left-pads prompts (completions are appended on the right). In transformers >= 5 Qwen2.5-VL / Qwen3-VL build
their 3-D multimodal rope positions only when ``mm_token_type_ids`` is given, and select it with the
attention mask: a missing key (1-D positions) or a key padded on the other side (image positions on the wrong
tokens) silently changes what the model sees. Everything here therefore

- loads the processor with ``padding_side="left"`` (:func:`load_processor`), the side TRL pads its own ids on;
- keeps every processor key (:func:`encode_prompt`), and pads per-token keys on the left and completion
  tokens on the right (:func:`collate`), as TRL's loss forward does.

``tests/test_policy_inputs.py`` runs the real ``GRPOTrainer`` on a tiny policy and checks that the warm start,
generation, the loss forward and evaluation hand the model the same keys and identical position ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["load_processor", "render_prompt", "encode_prompt", "encode_prompts", "collate", "policy_inputs"]


def load_processor(path: str) -> Any:
    """The policy's ``AutoProcessor`` padding on the LEFT (a folder's tokenizer config may say otherwise).

    TRL left-pads the prompt ids itself but takes ``mm_token_type_ids`` from a processor call that pads on the
    processor's side; with right padding the image's rope positions land on the wrong tokens in the loss.
    """
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(path, padding_side="left", truncation_side="left")
    tok = getattr(processor, "tokenizer", processor)
    tok.padding_side = "left"
    tok.truncation_side = "left"
    return processor


def render_prompt(processor: Any, conversation: list[dict[str, Any]], image: Any) -> str:
    """The prompt text of one conversational prompt (TRL's rendering: the image part in front of the first
    user text, then the chat template with the generation prompt)."""
    from trl.data_utils import prepare_multimodal_messages

    msgs = prepare_multimodal_messages(conversation, images=[image])
    return processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)


def encode_prompt(processor: Any, conversation: list[dict[str, Any]], image: Any) -> dict[str, Any]:
    """Every key the processor returns for one prompt + image (PIL, already at the policy's size), unpadded:
    per-token keys are ``1 x L`` tensors, image keys as the processor gives them."""
    text = render_prompt(processor, conversation, image)
    return dict(processor(text=[text], images=[image], return_tensors="pt"))


def encode_prompts(processor: Any, conversations: Sequence[list[dict[str, Any]]], images: Sequence[Any]
                   ) -> list[dict[str, Any]]:
    """:func:`encode_prompt` for parallel lists."""
    if len(conversations) != len(images):
        raise ValueError(f"{len(conversations)} prompts for {len(images)} images: give one image per prompt")
    return [encode_prompt(processor, c, im) for c, im in zip(conversations, images, strict=True)]


def _per_token(enc: dict[str, Any]) -> list[str]:
    n = enc["input_ids"].shape[-1]
    return [k for k, v in enc.items() if hasattr(v, "dim") and v.dim() == 2 and v.shape[0] == 1 and v.shape[1] == n]


def collate(encodings: Sequence[dict[str, Any]], pad_token_id: int, completions: Sequence[Sequence[int]] | None = None,
            ) -> dict[str, Any]:
    """Batch :func:`encode_prompt` outputs as TRL does: prompts left-padded (``input_ids`` with
    ``pad_token_id``, every other per-token key with 0), image keys concatenated over rows.

    ``completions`` (token ids per row, end-of-sequence included) are appended on the right, right-padded;
    the per-token keys get zeros over them (TRL's loss forward) and ``labels`` holds the completion tokens
    (-100 elsewhere). Returns a dict of tensors: ``input_ids`` / ``attention_mask`` / per-token keys
    ``B x (P + C)``, image keys as concatenated, ``labels`` ``B x (P + C)`` when completions are given.
    """
    import torch

    if not encodings:
        raise ValueError("nothing to collate")
    keys = _per_token(encodings[0])
    p = max(e["input_ids"].shape[-1] for e in encodings)
    c = max((len(x) for x in completions), default=0) if completions is not None else 0
    if completions is not None and len(completions) != len(encodings):
        raise ValueError(f"{len(completions)} completions for {len(encodings)} prompts")
    b = len(encodings)
    out: dict[str, Any] = {}
    for k in keys:
        fill = pad_token_id if k == "input_ids" else 0
        t = torch.full((b, p + c), fill, dtype=encodings[0][k].dtype)
        for r, e in enumerate(encodings):
            row = e[k][0]
            t[r, p - row.shape[0]:p] = row
        out[k] = t
    if completions is not None:
        labels = torch.full((b, p + c), -100, dtype=torch.long)
        for r, ids in enumerate(completions):
            ids_t = torch.as_tensor(list(ids), dtype=torch.long)
            out["input_ids"][r, p:p + len(ids_t)] = ids_t
            out["attention_mask"][r, p:p + len(ids_t)] = 1
            labels[r, p:p + len(ids_t)] = ids_t
        out["labels"] = labels
    for k in encodings[0]:
        if k not in keys:
            out[k] = torch.cat([e[k] for e in encodings])
    return out


def policy_inputs(processor: Any, conversations: Sequence[list[dict[str, Any]]], images: Sequence[Any],
                  completions: Sequence[str] | None = None) -> dict[str, Any]:
    """Model inputs for prompts (and optionally their completion texts, end-of-sequence appended): the one
    entry point of :func:`encode_prompts` + :func:`collate`."""
    tok = getattr(processor, "tokenizer", processor)
    comp_ids = None
    if completions is not None:
        comp_ids = [tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for t in completions]
    return collate(encode_prompts(processor, conversations, images), tok.pad_token_id, comp_ids)
