"""``samr1 train``: GRPO with the SAM-R1 objective on TRL's GRPOTrainer.

Every option is a field of ``samr1.train.TrainConfig``; ``--config train.yaml`` sets them from a file (keys
are field names with underscores) and flags given here override the file. Defaults are SAM-R1's: G = 8,
token-level loss with clip-higher (loss_type dapo, epsilon 0.2, epsilon_high 0.3), KL beta 5e-3, lr 1e-6,
temperature 1.0, 840 x 840 policy images, 1024 new tokens.

Example (CPU smoke run with a tiny policy and the shipped tiny-shapes SAM):

  samr1 train --model tiny-policy/ --data train.jsonl --sam tiny-shapes --device cpu --max-steps 2 \\
      --num-generations 2 --max-completion-length 16 --output-dir out/

Any other field of TRL's GRPOConfig: ``--grpo KEY=VALUE`` (repeatable, VALUE read as YAML) or a ``grpo:``
mapping in the YAML file, checked against GRPOConfig before anything loads; LoRA with ``--use-peft``; loggers
with ``--report-to tensorboard wandb`` (see docs/trl.md).

Multi-GPU: ``accelerate launch --config_file configs/accelerate/ddp.yaml -m samr1.cli train ...``.
Writes to --output-dir: checkpoint-N/ (every --save-steps), final/ (with its model card, README.md), best/ (with
--eval-data), merged/ (with --merge-adapter), metrics.jsonl, reward_calls.jsonl, completions/, runs/ (TensorBoard),
summary.json, train_config.json, grpo_config.json and learning_curve.png; with --rollouts-every K also rollouts/
(a few groups every K steps, for `samr1 view`). A non-empty --output-dir is refused unless --resume continues the
run recorded there or --overwrite removes that run's records first: two runs never mix.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any

# Flags whose argparse type is not obvious from the default.
_INT_OR_NONE = {"max_samples", "steps_per_generation", "save_total_limit", "eval_samples"}
_BOOL_OR_NONE = {"bf16", "gradient_checkpointing"}
_CHOICES = {"data_format": None, "encoder": ("torch", "onnx", "tensorrt"), "reward_gather": ("rank", "node"),
            "reward_preset": ("samr1", "segzero", "visionreasoner"), "answer_frame": ("auto", "pixels", "norm1000"),
            "loss_type": ("grpo", "dapo", "dr_grpo", "bnpo", "cispo", "sapo")}


def _fmt_default(v: Any) -> str:
    if isinstance(v, list):
        return " ".join(map(str, v))
    return str(v)


def _json_mapping(text: str) -> dict[str, Any]:
    """A flag value written as a JSON object, e.g. '{"box_l1_threshold": 1.3}'."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON ({exc.msg}): write a JSON object, e.g. '{{\"key\": 1}}'") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object {...}")
    return value


class _KeyValues(argparse.Action):
    """``--grpo KEY=VALUE`` (repeatable) collected into one mapping; a later KEY wins."""

    def __call__(self, parser, namespace, values, option_string=None):
        from samr1.train.grpo_args import parse_key_value

        try:
            key, value = parse_key_value(values)
        except ValueError as exc:
            parser.error(f"{option_string}: {exc}")
        current = dict(getattr(namespace, self.dest, None) or {})
        current[key] = value
        setattr(namespace, self.dest, current)


def register(sub: argparse._SubParsersAction) -> None:
    from samr1.cli import (
        COMPONENTS_HELP,
        COMPONENTS_METAVAR,
        DEFAULT_SAM,
        SAM_CHECKPOINT_HELP,
        SAM_HELP,
        SAM_METAVAR,
    )
    from samr1.train.config import DATA_FORMATS, TrainConfig

    p = sub.add_parser("train", help="GRPO training of a Qwen2/2.5-VL policy with SAM-R1's reward (TRL)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # Defaults are SUPPRESSed so that only flags actually given override --config; the help shows the real ones.
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        help_text = f"{f.metadata.get('help', '')} (default: {_fmt_default(default)})"
        kw: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": help_text}
        if f.name == "grpo":
            kw.update(action=_KeyValues, metavar="KEY=VALUE")
        elif f.name in _BOOL_OR_NONE or isinstance(default, bool):
            kw["action"] = argparse.BooleanOptionalAction
        elif isinstance(default, list) or f.name == "components":
            kw.update(nargs="+", metavar="NAME")
        elif isinstance(default, dict):
            kw.update(type=_json_mapping, metavar="JSON")
        elif f.name in _INT_OR_NONE or (isinstance(default, int) and not isinstance(default, bool)):
            kw["type"] = int
        elif isinstance(default, float) or f.name == "warmup_steps":
            kw["type"] = float
        else:
            kw["type"] = str
        choices = DATA_FORMATS if f.name == "data_format" else _CHOICES.get(f.name)
        if choices:
            kw["choices"] = choices
        if f.name in ("model", "data", "output_dir", "config", "image_dir", "embeddings", "sam_checkpoint", "resume"):
            kw["metavar"] = "PATH"
        # the flags every command shares read the same here (their defaults still come from TrainConfig)
        if f.name == "sam":
            kw.update(metavar=SAM_METAVAR, help=SAM_HELP.replace(f"(default: {DEFAULT_SAM})", f"(default: {default})"))
        elif f.name == "sam_checkpoint":
            kw["help"] = SAM_CHECKPOINT_HELP
        elif f.name == "components":  # comma-separated, as in `samr1 serve` (see samr1.cli.split_components)
            kw.update(nargs=None, type=str, metavar=COMPONENTS_METAVAR,
                      help=f"{COMPONENTS_HELP} (default: the --reward-preset's: samr1 think,answer,iou)"
                      if default is None else f"{COMPONENTS_HELP} (default: {','.join(default)})")
        p.add_argument(flag, **kw)
    p.add_argument("--overwrite", action="store_true",
                   help="train into a non-empty --output-dir: first remove the previous run's checkpoints, final/, "
                        "metrics and summary there (without it, or --resume, such a folder is refused)")
    p.set_defaults(func=_run)


def config_from_args(args: argparse.Namespace):
    """TrainConfig from (dataclass defaults) < (--config YAML) < (flags given)."""
    from samr1.cli import split_components
    from samr1.train.config import TrainConfig, load_yaml_config

    given = {k: v for k, v in vars(args).items() if k in TrainConfig.field_names()}
    if "components" in given:
        given["components"] = list(split_components(given["components"]))
    values: dict[str, Any] = {}
    if given.get("config"):
        values.update(load_yaml_config(given["config"]))
    if isinstance(values.get("grpo"), dict) and "grpo" in given:
        given = {**given, "grpo": {**values["grpo"], **given["grpo"]}}  # --grpo KEY=VALUE adds to the file's grpo:
    values.update(given)
    return TrainConfig.from_dict(values, where=given.get("config") or "samr1 train")


def _run(args: argparse.Namespace) -> int:
    from samr1.cli import require_extra

    require_extra("train")  # before the config and the data are read: TRL, transformers, datasets, yaml
    from samr1.train.driver import end_process_group, train

    cfg = config_from_args(args)
    _note_default_sam(args, cfg)
    summary = train(cfg, overwrite=args.overwrite)
    if summary.get("num_processes", 1) == 1 or _is_main():
        comps = ", ".join(f"{k} {v:.3f}" for k, v in summary.get("components", {}).items()
                          if isinstance(v, (int, float)))
        def pct(v: Any) -> str:
            return "-" if v is None else f"{v:.1%}"

        print(f"samr1 train: {summary['steps']} steps in {summary['train_seconds']:.1f} s; "
              f"last reward {summary.get('reward_last')} ({comps}); "
              f"parse failures {pct(summary.get('parse_failure_rate'))}; "
              f"cache hits {pct(summary.get('cache_hit_rate'))}; encoder images {summary['encoder_images']}; "
              f"reward {summary['reward_seconds']:.2f} s ({pct(summary.get('reward_share'))} of training)")
        if summary.get("bad_rows_skipped"):
            print(f"samr1 train: skipped {summary['bad_rows_skipped']} bad row(s)")
        print(f"samr1 train: outputs in {summary['output_dir']} (summary.json, metrics.jsonl, learning_curve.png)")
        print(json.dumps(summary), file=sys.stderr)
    end_process_group()  # every rank has returned from train(): nothing collective is left to run
    return 0


def _note_default_sam(args: argparse.Namespace, cfg: Any) -> None:
    """Say which SAM scores the rewards when neither a flag nor the --config file chose one (the default knows
    synthetic shapes only); a random-weight SAM is warned about by load_sam itself."""
    from samr1.cli import DEFAULT_SAM, SAM_WEIGHTS_URL
    from samr1.train.config import load_yaml_config

    chosen = "sam" in vars(args) or bool(getattr(args, "config", None) and "sam" in load_yaml_config(args.config))
    if not chosen and cfg.sam == DEFAULT_SAM and _is_main():
        print(f"samr1 train: note: no --sam given: the reward uses {DEFAULT_SAM}, the small SAM samr1 ships, "
              "trained on synthetic shapes only; for real data pass --sam vit_h --sam-checkpoint PATH (weights: "
              f"{SAM_WEIGHTS_URL})", file=sys.stderr)


def _is_main() -> bool:
    import os

    return os.environ.get("RANK", "0") == "0"
