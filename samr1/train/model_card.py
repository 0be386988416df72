"""The model card (``README.md``) of a policy trained by ``samr1 train``: what it is and how to run it.

TRL's own card describes a text-generation fine-tune of an unnamed model; a samr1 policy is a reasoning
segmenter that only makes masks together with a SAM, with a fixed prompt template and answer frame. The card
names all of it: the base policy, samr1's version, the reward (components, tiers, preset), the SAM (kind and
checkpoint digest), the data, the steps, the held-out figures, the template and frame, and a quick start
that works (``samr1 segment --model ...``). :func:`card_text` renders it from a plain dict built by the driver.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

__all__ = ["card_text", "write_card", "sam_checkpoint_digest", "run_card_info"]

_DIGESTS: dict[tuple[str, float, int], str] = {}


def sam_checkpoint_digest(path: str | None) -> str | None:
    """``blake2b-128:<hex>`` of the SAM checkpoint file (memoised per path, mtime and size), None without one."""
    if not path or not os.path.isfile(path):
        return None
    from samr1.hashing import file_digest

    st = os.stat(path)
    key = (os.path.abspath(path), st.st_mtime, st.st_size)
    if key not in _DIGESTS:
        _DIGESTS[key] = "blake2b-128:" + file_digest(path, "blake2b", 16)
    return _DIGESTS[key]


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    return "-" if v is None else str(v)


def _eval_rows(heldout: Mapping[str, Any] | None) -> list[str]:
    if not heldout or not heldout.get("evaluations"):
        return ["No held-out evaluation during training (`--eval-data` was not given); evaluate with "
                "`samr1 eval --model <this folder> --data val.jsonl ...`."]
    lines = [f"Held-out data: `{heldout.get('data')}` ({heldout.get('rows')} rows), greedy decoding, SAM's mask "
             "(the code of `samr1 eval`).", "", "| when | step | gIoU | cIoU | parse rate |", "|---|---|---|---|---|"]
    for label in ("first", "best", "last"):
        r = heldout.get(label)
        if r:
            lines.append(f"| {label} | {r['step']} | {_fmt(r['giou'])} | {_fmt(r['ciou'])} | {_fmt(r['parse'])} |")
    return lines


def card_text(info: Mapping[str, Any]) -> str:
    """The card's Markdown. ``info`` keys (all optional but ``base_model``): ``kind`` ("policy" / "adapter" /
    "merged"), ``base_model``, ``samr1_version``, ``samr1_commit``, ``reward`` (components, tiers, preset,
    options), ``sam`` (kind, checkpoint, digest), ``data`` (path, rows), ``steps``, ``train_seconds``,
    ``heldout`` (the summary's block), ``template``, ``frame``, ``answer_frame``, ``max_new_tokens``, ``grpo``
    (the main GRPO settings), ``lora`` (r, alpha, dropout, targets), ``folder`` (for the quick start)."""
    kind = info.get("kind", "policy")
    reward = info.get("reward") or {}
    sam = info.get("sam") or {}
    data = info.get("data") or {}
    lora = info.get("lora")
    folder = info.get("folder") or "<this folder>"
    sam_flags = f"--sam {sam.get('kind', 'vit_h')}"
    if sam.get("checkpoint"):
        sam_flags += f" --sam-checkpoint {sam['checkpoint']}"
    library = "peft" if kind == "adapter" else "transformers"
    front = ["---", f"base_model: {json.dumps(str(info.get('base_model')))}", f"library_name: {library}",
             "pipeline_tag: image-segmentation",
             "tags: [samr1, sam-r1, reasoning-segmentation, grpo, trl" + (", lora" if lora else "") + "]", "---", ""]
    what = {"adapter": "a LoRA adapter on the base policy (the base's weights are unchanged; "
                       "`samr1 eval / segment / serve --model` load this folder with the base named in "
                       "`adapter_config.json` and merge it in)",
            "merged": "the base policy with its LoRA adapter merged into the weights (a plain policy folder)",
            }.get(kind, "the full policy weights")
    body = [
        f"# {os.path.basename(os.path.normpath(str(folder))) or 'samr1 policy'}: a SAM-R1-style reasoning segmentation "
        "policy", "",
        "A vision-language policy trained with GRPO (TRL's `GRPOTrainer`) by "
        f"samr1 {info.get('samr1_version', '')}"
        + (f" (source `{info['samr1_commit']}`)" if info.get("samr1_commit") else "")
        + ". Given an image and a query it reasons in `<think>` and answers one box and two points in `<answer>`; "
        "**SAM turns that answer into the mask**, so the policy is used together with the SAM below.", "",
        f"This folder holds {what}.", "",
        "## Quick start", "",
        "```bash",
        "# samr1 installed with its train extra (pip install -e '.[train]' in a samr1 checkout)",
        f"samr1 segment --model {folder} {sam_flags} \\",
        "    --image photo.jpg --query \"the object the question is about\" --out mask.png",
        f"samr1 eval --model {folder} {sam_flags} --data val.jsonl --out results.json",
        "```", "",
        "The prompt template, answer frame and generation budget are read from `samr1_policy.json` in this folder.",
        "",
        "## What it is", "",
        "| | |", "|---|---|",
        f"| base policy | `{info.get('base_model')}`" + (f" ({info['architecture']})" if info.get("architecture") else "")
        + " |",
        f"| reward | {reward.get('preset', 'SAM-R1')}: components `{', '.join(reward.get('components', []))}`, "
        f"tiers `{reward.get('tiers')}`" + (f", options `{reward['options']}`" if reward.get("options") else "")
        + " |",
        f"| SAM (reward and masks) | `{sam.get('kind')}`, checkpoint `{sam.get('checkpoint') or 'none (built-in weights)'}`"
        + (f", `{sam['digest']}`" if sam.get("digest") else "") + " |",
        f"| training data | `{data.get('path')}` ({data.get('format', 'auto')}, {data.get('rows')} rows) |",
        f"| steps | {info.get('steps')}" + (f" ({_fmt(info.get('train_seconds'))} s)" if info.get("train_seconds")
                                            else "") + " |",
        f"| prompt template | see below (`{info.get('template_name', 'custom')}`) |",
        f"| answer frame | {info.get('answer_frame', 'pixels')} of the {info.get('frame')} x {info.get('frame')} image "
        "the policy sees (SAM gets the answer mapped back to the original image) |",
        f"| generation budget | {info.get('max_new_tokens')} new tokens |",
    ]
    if lora:
        body.append(f"| LoRA | r {lora.get('r')}, alpha {lora.get('alpha')}, dropout {lora.get('dropout')}, "
                    f"targets `{lora.get('targets')}` (language model only) |")
    grpo = info.get("grpo") or {}
    if grpo:
        body.append("| GRPO | " + ", ".join(f"{k} {v}" for k, v in grpo.items()) + " |")
    body += ["", "## Held-out evaluation", "", *_eval_rows(info.get("heldout")), "",
             "## Prompt template", "", "```text", str(info.get("template", "")), "```", "",
             "Written by `samr1 train`; the run folder also holds `summary.json`, `metrics.jsonl`, "
             "`grpo_config.json` (every GRPOConfig setting) and `train_config.json`.", ""]
    return "\n".join(front + body)


def write_card(folder: str | os.PathLike, info: Mapping[str, Any]) -> str:
    """Write :func:`card_text` to ``folder/README.md`` (the folder must exist); return the path."""
    path = os.path.join(os.fspath(folder), "README.md")
    with open(path, "w", encoding="utf-8") as f:
        f.write(card_text({**info, "folder": info.get("folder") or os.fspath(folder)}))
    return path


def run_card_info(cfg: Any, *, kind: str, steps: int, train_seconds: float | None, rows: int, record: Any,
                  heldout: Mapping[str, Any] | None) -> dict[str, Any]:
    """:func:`card_text`'s ``info`` for a ``samr1 train`` run (``cfg`` a :class:`samr1.train.TrainConfig`,
    ``record`` its :class:`samr1.policy.PolicyRecord`)."""
    import samr1
    from samr1.provenance import git_commit
    from samr1.train.prompts import TEMPLATES

    rcfg = cfg.reward_config()
    arch = None
    try:
        with open(os.path.join(cfg.model, "config.json"), encoding="utf-8") as f:
            arch = ", ".join(json.load(f).get("architectures") or []) or None
    except (OSError, ValueError):
        pass
    lora = None
    if cfg.use_peft:
        lora = {"r": cfg.lora_r, "alpha": cfg.lora_alpha, "dropout": cfg.lora_dropout,
                "targets": " ".join(cfg.lora_target_modules)}
    grpo = {"G": cfg.num_generations, "loss": cfg.loss_type, "lr": cfg.learning_rate, "beta": cfg.beta,
            "epsilon": f"{cfg.epsilon}/{cfg.epsilon_high}", "temperature": cfg.temperature, **dict(cfg.grpo)}
    return {
        "kind": kind, "base_model": os.path.abspath(cfg.model) if os.path.isdir(cfg.model) else cfg.model,
        "architecture": arch, "samr1_version": samr1.__version__, "samr1_commit": git_commit(),
        "reward": {"components": list(rcfg.components), "tiers": [list(t) for t in rcfg.tiers],
                   "preset": f"preset {cfg.reward_preset}" + ("" if cfg.components is None else
                                                               " with the components chosen by --components"),
                   "options": dict(cfg.reward_options) or None},
        "sam": {"kind": cfg.sam, "checkpoint": cfg.sam_checkpoint, "digest": sam_checkpoint_digest(cfg.sam_checkpoint)},
        "data": {"path": cfg.data, "format": cfg.data_format, "rows": rows},
        "steps": steps, "train_seconds": train_seconds, "heldout": heldout,
        "template": record.template, "template_name": cfg.prompt if cfg.prompt in TEMPLATES else "custom",
        "frame": record.frame, "answer_frame": record.answer_frame, "max_new_tokens": record.max_new_tokens,
        "grpo": grpo, "lora": lora,
    }
