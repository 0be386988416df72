"""The TRL toolbox of ``samr1 train`` on CPU with a tiny Qwen2.5-VL: GRPOConfig passthrough, LoRA, loggers,
the completions table, the model card, evaluation during training, batch / G checks.

One module-scoped run (2 GRPO steps with ``--use-peft --eval-data --eval-steps 1 --report-to tensorboard``,
``grpo:`` fields from a YAML file and ``--grpo``, ``--merge-adapter``) serves most checks; everything is real:
transformers' Qwen2.5-VL, PEFT, TRL's GRPOTrainer, TensorBoard's event files, the tiny-shapes SAM.
"""

from __future__ import annotations

import json
import os
import warnings

import pytest
import torch

from samr1.config import ConfigError
from samr1.train.config import TrainConfig
from samr1.train.grpo_args import batch_error, check_grpo_overrides, parse_key_value
from samr1.train.scene_data import write_scene_manifest
from samr1.train.tiny_policy import build_tiny_policy

COMPONENTS = ("think_format", "answer_format", "tiered_iou")


# ------------------------------------------------------------------------------------------- fast checks
@pytest.mark.parametrize("grpo, match", [
    ({"lr_schedular_type": "cosine"}, "did you mean lr_scheduler_type"),
    ({"toppp": 0.9}, "did you mean top_p"),
    ({"not_a_field_at_all": 1}, "not a GRPOConfig field"),
    ({"learning_rate": 1e-5}, "use --learning-rate"),
    ({"num_generations": 4}, "use --num-generations"),
    ({"gradient_checkpointing": True}, "use --gradient-checkpointing"),
    ({"data_seed": 3}, "use --seed"),
    ({"remove_unused_columns": True}, "sam_image"),
    ({"top_p": "high"}, "declares it as float"),
    ({"top_k": 2.5}, "top_k=2.5"),
    ({"scale_rewards": 3}, "scale_rewards=3"),
    ({"reward_weights": [1.0, 2.0]}, "one weight per reward component"),
])
def test_grpo_mapping_refuses_with_the_fix(grpo, match):
    with pytest.raises(ConfigError, match=match):
        TrainConfig(model="m", data="d", grpo=grpo).validate()


def test_grpo_mapping_accepts_any_other_field_and_key_value_parses_yaml():
    good = {"top_p": 0.9, "top_k": 5, "lr_scheduler_type": "cosine", "weight_decay": 0.01, "scale_rewards": "batch",
            "reward_weights": [1, 1, 2], "run_name": "x", "model_init_kwargs": {"attn_implementation": "sdpa"},
            "log_multimodal": True, "vllm_importance_sampling_mode": "token_mask"}
    assert check_grpo_overrides(good, components=3) == good
    TrainConfig(model="m", data="d", grpo=good).validate()
    assert parse_key_value("top_p=0.9") == ("top_p", 0.9)
    assert parse_key_value("log_multimodal=true") == ("log_multimodal", True)
    assert parse_key_value("model_init_kwargs={dtype: bfloat16}") == ("model_init_kwargs", {"dtype": "bfloat16"})
    assert parse_key_value("run_name=a=b") == ("run_name", "a=b")
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_key_value("top_p")


def test_cli_grpo_flags_add_to_the_yaml_mapping(tmp_path):
    from samr1.cli import build_parser
    from samr1.cli.train import config_from_args

    yml = tmp_path / "t.yaml"
    yml.write_text("model: m\ndata: d\ngrpo:\n  top_p: 0.5\n  weight_decay: 0.1\n")
    args = build_parser().parse_args(["train", "--config", str(yml), "--grpo", "top_p=0.9", "--grpo",
                                      "lr_scheduler_type=cosine", "--report-to", "tensorboard", "none"])
    cfg = config_from_args(args)
    assert cfg.grpo == {"top_p": 0.9, "weight_decay": 0.1, "lr_scheduler_type": "cosine"}
    assert cfg.report_to == ["tensorboard", "none"]
    with pytest.raises(ConfigError, match="'none' cannot be combined"):
        cfg.validate()


@pytest.mark.parametrize("pd, spg, g, n", [(3, 1, 2, 1), (2, 1, 8, 2), (5, 3, 4, 1), (6, 1, 4, 3), (1, 1, 8, 1),
                                           (7, 1, 8, 4)])
def test_batch_rule_names_flags_whose_values_fix_it(pd, spg, g, n):
    msg = batch_error(pd, spg, g, n)
    assert msg is not None and f"{pd} x {spg} x {n} = {pd * spg * n}" in msg and "--per-device-train-batch-size" in msg
    fix_pd = int(msg.split("--per-device-train-batch-size ")[1].split(",")[0])
    fix_spg = int(msg.split("--steps-per-generation ")[1].split(",")[0].split(" ")[0])
    assert batch_error(fix_pd, spg, g, n) is None and fix_pd > pd
    assert batch_error(pd, fix_spg, g, n) is None
    if "--num-generations" in msg:
        assert batch_error(pd, spg, int(msg.rsplit(" ", 1)[1]), n) is None
    assert batch_error(pd * g, spg, g, n) is None  # whole groups: no message


def test_batch_rule_raised_before_anything_loads(tmp_path, capsys):
    """A G that does not divide the round fails in samr1's flags, before the (missing) data is read."""
    from samr1.cli import main

    code = main(["train", "--model", str(tmp_path), "--data", str(tmp_path / "absent.jsonl"), "--sam", "tiny-shapes",
                 "--per-device-train-batch-size", "3", "--num-generations", "2", "--output-dir", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert "--per-device-train-batch-size 4" in err and "absent.jsonl" not in err


def test_a_logger_not_installed_is_one_line_with_the_install_command(tmp_path, capsys):
    from transformers.integrations import integration_utils as iu

    from samr1.cli import main

    missing = next(n for n in ("mlflow", "wandb", "comet_ml", "neptune", "clearml")
                   if n not in iu.get_available_reporting_integrations())
    code = main(["train", "--model", str(tmp_path), "--data", str(tmp_path / "absent.jsonl"), "--sam", "tiny-shapes",
                 "--report-to", "tensorboard", missing, "--output-dir", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and f"pip install {missing}" in err, err
    assert "absent.jsonl" not in err  # raised before the data loads
    with pytest.raises(ConfigError, match="did you mean tensorboard"):
        TrainConfig(model="m", data="d", report_to=["tensorbord"]).validate()
    assert TrainConfig(report_to="tensorboard,wandb").report_list() == ["tensorboard", "wandb"]


def test_lora_targets_the_language_model_only(tiny_policy):
    from peft import get_peft_model
    from transformers import AutoModelForImageTextToText

    from samr1.train.lora import adapter_summary, lora_config

    path = tiny_policy[0]
    for names in (["q_proj", "v_proj"], ["gate_proj", "up_proj", "down_proj"]):  # the vision MLP has these too
        model = get_peft_model(AutoModelForImageTextToText.from_pretrained(path), lora_config(4, 8, 0.0, names))
        s = adapter_summary(model)
        assert s["lora_modules_language"] == len(names) and s["lora_modules_vision"] == 0, s
        assert s["vision_trainable"] == 0 and 0 < s["trainable"] < s["total"]
    model = get_peft_model(AutoModelForImageTextToText.from_pretrained(path), lora_config(4, 8, 0.0, ["all-linear"]))
    assert adapter_summary(model)["lora_modules_vision"] > 0  # PEFT's own rule reaches the vision tower


def test_adapter_folder_with_a_missing_base_is_a_model_error(tmp_path, shapes_engine):
    from samr1.pipeline import ReasoningSegmenter
    from samr1.policy import adapter_base, is_adapter
    from samr1.sam import ModelError

    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(tmp_path / "gone")}))
    assert is_adapter(folder) and not is_adapter(tmp_path)
    with pytest.raises(ModelError, match="base policy .*gone.* does not exist"):
        ReasoningSegmenter.from_pretrained(str(folder), shapes_engine)
    (tmp_path / "base").mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "../base"}))
    assert os.path.samefile(adapter_base(folder), tmp_path / "base")  # relative to the adapter folder


def test_no_deprecation_warning_from_samrs_grpo_config():
    from samr1.train.driver import build_grpo_config

    cfg = TrainConfig(model="m", data="d", output_dir="/tmp/samr1-x", gradient_checkpointing=True)
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        args = build_grpo_config(cfg, use_cpu=True, cuda=False)
    assert args.activation_checkpointing is True and args.gradient_checkpointing is True
    assert not [w for w in got if issubclass(w.category, (FutureWarning, DeprecationWarning))], \
        [str(w.message) for w in got]


def test_vllm_importance_sampling_is_set_explicitly():
    from samr1.train.driver import VLLM_IMPORTANCE_SAMPLING, build_grpo_config

    cfg = TrainConfig(model="m", data="d", output_dir="/tmp/samr1-x", use_vllm=True)
    args = build_grpo_config(cfg, use_cpu=True, cuda=False)
    assert args.vllm_importance_sampling_mode == "token_truncate" == VLLM_IMPORTANCE_SAMPLING[
        "vllm_importance_sampling_mode"]
    assert args.vllm_importance_sampling_clip_max == 2.0 and args.vllm_importance_sampling_correction
    cfg.grpo = {"vllm_importance_sampling_correction": False}
    assert build_grpo_config(cfg, use_cpu=True, cuda=False).vllm_importance_sampling_correction is False


# ------------------------------------------------------------------------------------------- one real run
class _Probe:
    """Reads the trainer's own args and the LoRA / base weights at the start and the end of training."""

    def __init__(self):
        from samr1.train.driver import trainer_callback_base

        probe = self

        class CB(trainer_callback_base()):
            def on_train_begin(self, args, state, control, model=None, **kw):
                probe.args = args
                probe.begin = {n: p.detach().clone() for n, p in model.named_parameters()}

            def on_train_end(self, args, state, control, model=None, **kw):
                probe.end = {n: p.detach().clone() for n, p in model.named_parameters()}
                probe.trainable = {n for n, p in model.named_parameters() if p.requires_grad}

        self.callback = CB()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from samr1.cli import build_parser
    from samr1.cli.train import config_from_args
    from samr1.train.data import check_rows, load_rows
    from samr1.train.driver import train
    from samr1.train.warmstart import warm_start

    root = tmp_path_factory.mktemp("toolbox")
    manifest = write_scene_manifest(root / "data", 6, size=(72, 96), seed=3)
    # A random policy writes byte soup: every reward 0, every advantage 0, no gradient reaches the adapter. A short
    # warm start towards one formatted answer makes SOME sampled completions earn the format reward (about half
    # at temperature 1 after 300 steps), so the groups' advantages differ from 0 and the adapter really trains.
    policy = str(root / "policy")
    warm_start(build_tiny_policy(root / "random", hidden=16, seed=1), check_rows(load_rows(manifest))[0], policy,
               steps=300, batch_size=6, lr=1e-2, policy_size=56, log=None, max_new_tokens=48,
               fixed_target="<think>a</think><answer>b</answer>")
    heldout = write_scene_manifest(root / "heldout", 3, size=(64, 64), seed=9)
    yml = root / "train.yaml"
    # top_p / top_k barely narrow the ~270-token vocabulary: a sharp sampler would make every completion of a
    # group alike (equal rewards, zero advantages, no gradient)
    yml.write_text("grpo:\n  lr_scheduler_type: cosine\n  weight_decay: 0.05\n  top_p: 0.999\n  run_name: toolbox\n")
    out = root / "out"
    argv = ["train", "--config", str(yml), "--model", policy, "--data", manifest, "--sam", "tiny-shapes",
            "--device", "cpu", "--max-steps", "2", "--num-generations", "4", "--max-completion-length", "48",
            "--per-device-train-batch-size", "8", "--policy-image-size", "56", "--no-progress",
            "--output-dir", str(out), "--learning-rate", "0.05", "--use-peft", "--lora-r", "4", "--merge-adapter",
            "--eval-data", heldout, "--eval-steps", "1", "--report-to", "tensorboard", "--grpo", "top_k=250",
            "--save-steps", "1"]
    probe = _Probe()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = train(config_from_args(build_parser().parse_args(argv)), callbacks=[probe.callback])
    return {"out": out, "summary": summary, "probe": probe, "policy": policy, "heldout": heldout, "argv": argv,
            "warnings": [f"{w.category.__name__}: {w.message}" for w in caught]}


def test_yaml_and_flag_grpo_fields_reach_the_trainer(run):
    args = run["probe"].args
    assert args.lr_scheduler_type.value == "cosine" and args.weight_decay == 0.05
    assert args.top_p == 0.999 and args.top_k == 250 and args.run_name == "toolbox"
    assert args.num_completions_to_print == 2  # samr1's default for TRL's console table
    assert args.report_to == ["tensorboard"] and args.log_completions is True
    saved = json.loads((run["out"] / "grpo_config.json").read_text())
    assert saved["top_k"] == 250 and saved["lr_scheduler_type"] == "cosine" and saved["use_bias_correction_kl"] is False


def test_lora_adapter_trains_and_base_stays(run):
    p = run["probe"]
    lora = [n for n in p.begin if "lora_" in n]
    assert lora and p.trainable == set(lora)  # only the adapter is trained; the vision tower has none
    assert not [n for n in lora if ".visual." in n]
    # lora_B starts at 0 and only a policy gradient moves it (weight decay alone keeps 0 at 0)
    moved = [n for n in lora if "lora_B" in n and not p.begin[n].equal(p.end[n])]
    assert moved, "no LoRA B weight moved: the adapter got no gradient"
    assert run["summary"]["reward_first"] > 0  # the warm start made some first-step answers earn the format reward
    assert all(p.begin[n].equal(p.end[n]) for n in p.begin if "lora_" not in n)  # base weights untouched
    final = run["out"] / "final"
    assert (final / "adapter_config.json").exists() and (final / "adapter_model.safetensors").exists()
    assert not (final / "model.safetensors").exists()
    base = json.loads((final / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert os.path.samefile(base, run["policy"])
    s = run["summary"]["adapter"]
    assert s["lora_modules_vision"] == 0 and s["lora_modules_language"] > 0


def test_adapter_folder_loads_for_eval_and_merges(run, tmp_path):
    """``samr1 eval --model final/`` loads base + adapter; the merged policy gives the adapter's logits."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    from samr1.cli import main
    from samr1.policy import load_policy_model

    final, merged = run["out"] / "final", run["out"] / "merged"
    ids = torch.tensor([[5, 17, 99, 3, 42]])
    with torch.no_grad():
        peft = PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained(run["policy"]), str(final))
        want = peft(input_ids=ids).logits
        base = AutoModelForImageTextToText.from_pretrained(run["policy"])(input_ids=ids).logits
        got = load_policy_model(final)(input_ids=ids).logits
        got_merged = AutoModelForImageTextToText.from_pretrained(merged)(input_ids=ids).logits
    assert not torch.allclose(want, base, atol=1e-6)  # the adapter does something
    assert torch.allclose(got, want, atol=1e-5) and torch.allclose(got_merged, want, atol=1e-5)
    out = tmp_path / "results.json"
    assert main(["eval", "--model", str(final), "--sam", "tiny-shapes", "--device", "cpu", "--data", run["heldout"],
                 "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["n"] == 3


def test_tensorboard_events_hold_components_and_heldout_giou(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = set()
    for dirpath, _, files in os.walk(run["out"] / "runs"):
        if any(f.startswith("events.out.tfevents") for f in files):
            acc = EventAccumulator(dirpath)
            acc.Reload()
            tags |= set(acc.Tags()["scalars"])
    for name in COMPONENTS:
        assert f"train/rewards/{name}/mean" in tags, sorted(tags)
    assert "train/heldout/giou" in tags and "train/samr1/parse_failure_rate" in tags, sorted(tags)


def test_completions_table_has_samr1_columns(run):
    import pandas as pd

    files = sorted((run["out"] / "completions").glob("completions_*.parquet"))
    tables = [pd.read_parquet(f) for f in files]
    rows = pd.concat([t for t in tables if len(t)])
    assert len(rows) >= 8
    for col in ("prompt", "completion", "advantage", "samr1_reason", "samr1_iou", *COMPONENTS):
        assert col in rows.columns, list(rows.columns)
    from samr1.rewards import ALL_CODES

    assert set(rows["samr1_reason"]) <= {"ok", *ALL_CODES}  # one code per completion
    assert rows["samr1_iou"].between(0.0, 1.0).all()


def test_model_card_names_the_reward_sam_and_quick_start(run):
    for folder in (run["out"], run["out"] / "final", run["out"] / "merged"):
        text = (folder / "README.md").read_text()
        assert "fine-tuned version of None" not in text
        for needle in ("tiny-shapes", "preset samr1", "think, answer, iou", "samr1 segment --model",
                       "Held-out evaluation", "| steps | 2", "pixels of the 56 x 56", "seg-zero", run["policy"]):
            assert needle in text, (folder, needle)
    assert "library_name: peft" in (run["out"] / "final" / "README.md").read_text()
    assert f"--model {run['out'] / 'final'}" in (run["out"] / "README.md").read_text()


def test_heldout_figures_in_summary_and_no_deprecation_warnings(run):
    h = run["summary"]["heldout"]
    assert [e["step"] for e in h["evaluations"]] == [0, 1, 2] and h["rows"] == 3 and h["processes"] == 1
    assert h["last"]["n"] == 3 and h["best"] is not None
    disk = json.loads((run["out"] / "summary.json").read_text())
    assert disk["heldout"]["last"] == h["last"]
    ours = [w for w in run["warnings"] if w.startswith(("FutureWarning", "DeprecationWarning"))]
    assert not ours, ours


def test_lora_resume_starts_from_the_checkpoints_adapter(run, tmp_path):
    """``--resume`` with ``--use-peft``: the resumed run trains the checkpoint's adapter (not a fresh one, whose
    lora_B is 0) on the base policy, and continues the step count."""
    import shutil

    from safetensors.torch import load_file

    from samr1.cli import build_parser
    from samr1.cli.train import config_from_args
    from samr1.train.driver import train

    out = tmp_path / "resumed"
    out.mkdir()
    shutil.copytree(run["out"] / "checkpoint-1", out / "checkpoint-1")
    saved = load_file(str(out / "checkpoint-1" / "adapter_model.safetensors"))
    assert any("lora_B" in k and v.abs().max() > 0 for k, v in saved.items())  # step 1 moved the adapter
    argv = list(run["argv"])
    argv[argv.index("--output-dir") + 1] = str(out)
    argv += ["--resume", str(out / "checkpoint-1")]
    probe = _Probe()
    summary = train(config_from_args(build_parser().parse_args(argv)), callbacks=[probe.callback])
    assert summary["steps"] == 2 and summary["resumed_from"].endswith("checkpoint-1")

    def key(name: str) -> str:  # the model's parameter name as PEFT saves it (no adapter name)
        return name.replace(".default.", ".")

    lora = {n: t for n, t in probe.begin.items() if "lora_" in n}
    assert lora and all(key(n) in saved for n in lora)
    for n, t in lora.items():
        assert torch.equal(t, saved[key(n)].to(t.dtype)), n  # started from the checkpoint's adapter
    base = {n: t for n, t in probe.begin.items() if "lora_" not in n}
    assert all(torch.equal(base[n], run["probe"].begin[n]) for n in base)  # on the same base policy
