"""Attack suite, output paths: no command writes over, or mixes its records with, what it did not create in
that run (samr1.outdirs), and training refuses runs that would silently do nothing or train data twice.

- ``train --output-dir``: any non-empty folder is refused before the data is read; ``--overwrite`` removes the
  previous run's records only (a real one-step run checks that nothing of the old run is left in the new
  one's metrics, summary or checkpoints); ``--resume`` and ``--overwrite`` exclude each other;
- a dataset smaller than one generation round is an error naming the fix, for several batch shapes;
- a resume from a checkpoint inside a generation block is refused, one on a block boundary is not;
- ``eval --out``, ``bench --out`` and ``train-sam --out`` follow the same rule.
"""

from __future__ import annotations

import json
import os

import pytest

from samr1.train.scene_data import write_scene_manifest
from samr1.train.tiny_policy import build_tiny_policy


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("outputs")
    return {"root": root, "policy": build_tiny_policy(root / "policy", hidden=16, seed=2),
            "manifest": write_scene_manifest(root / "data", 4, size=(40, 56), seed=4),
            "three": write_scene_manifest(root / "three", 3, size=(40, 56), seed=5)}


def _train(world, out, *extra, data=None):
    from samr1.cli import main

    return main(["train", "--model", world["policy"], "--data", str(data or world["manifest"]), "--sam",
                 "tiny-shapes", "--device", "cpu", "--max-steps", "1", "--num-generations", "2",
                 "--max-completion-length", "8", "--output-dir", str(out), "--policy-image-size", "56", "--no-progress",
                 *extra])


def _tree(folder) -> dict[str, bytes | None]:
    out = {}
    for dirpath, _, files in os.walk(folder):
        rel = os.path.relpath(dirpath, folder)
        out[rel] = None
        for f in files:
            with open(os.path.join(dirpath, f), "rb") as fh:
                out[os.path.join(rel, f)] = fh.read()
    return out


PREVIOUS = {
    "a-user-file": {"notes.txt": "mine"},
    "a-previous-run": {"metrics.jsonl": '{"step": 1, "reward": 2.0}\n', "summary.json": "{}",
                       "checkpoint-3/trainer_state.json": '{"global_step": 3}'},
    "only-a-hidden-file": {".keep": ""},
    "an-empty-subfolder": {"sub/": None},
}


def _fill(folder, files) -> None:
    for name, text in files.items():
        path = folder / name
        if text is None:
            path.mkdir(parents=True)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.mark.parametrize("name", list(PREVIOUS))
def test_train_refuses_a_non_empty_output_dir_before_reading_the_data(world, tmp_path, capsys, name):
    out = tmp_path / "run"
    _fill(out, PREVIOUS[name])
    before = _tree(out)
    # the data path does not exist: the folder is refused first (exit 6), not the data (exit 3)
    assert _train(world, out, data=tmp_path / "missing.jsonl") == 6
    err = capsys.readouterr().err
    assert "--output-dir" in err and "not empty" in err and "--resume" in err and "--overwrite" in err, err
    assert _tree(out) == before


def test_train_output_dir_that_is_a_file_and_resume_with_overwrite(world, tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    assert _train(world, tmp_path / "afile") == 6
    assert "is a file" in capsys.readouterr().err
    _fill(tmp_path / "run", PREVIOUS["a-previous-run"])
    assert _train(world, tmp_path / "run", "--resume", "latest", "--overwrite") == 6
    assert "exclude each other" in capsys.readouterr().err


def test_train_overwrite_leaves_nothing_of_the_previous_run(world, tmp_path, capsys):
    out = tmp_path / "run"
    _fill(out, {**PREVIOUS["a-previous-run"], **PREVIOUS["a-user-file"], "final/config.json": "{}",
                "reward_calls.jsonl": '{"step": 7}\n', "train_config.json": '{"data": "old"}'})
    assert _train(world, out, "--overwrite", "--save-steps", "1") == 0
    err = capsys.readouterr().err
    assert "--overwrite removed the previous run's" in err
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows and all(r.get("reward") != 2.0 for r in rows)  # no row of the old run
    assert not (out / "checkpoint-3").exists() and (out / "checkpoint-1").exists()
    assert json.loads((out / "summary.json").read_text())["steps"] == 1
    assert json.loads((out / "train_config.json").read_text())["data"] == str(world["manifest"])
    assert [json.loads(x)["step"] for x in (out / "reward_calls.jsonl").read_text().splitlines()] == [0]
    assert (out / "notes.txt").read_text() == "mine"  # not a record of a run: kept


@pytest.mark.parametrize("batch,g,spg", [(8, 2, None), (4, 2, 2), (6, 3, None), (8, 8, 4)])
def test_a_dataset_smaller_than_one_generation_round_is_refused(world, tmp_path, capsys, batch, g, spg):
    from samr1.cli import main

    per_round = batch * (spg or 1) // g
    data = world["three"] if per_round > 3 else write_scene_manifest(tmp_path / "d", per_round - 1, size=(40, 56))
    args = ["train", "--model", world["policy"], "--data", str(data), "--sam", "tiny-shapes", "--device", "cpu",
            "--max-steps", "1", "--num-generations", str(g), "--per-device-train-batch-size", str(batch),
            "--output-dir", str(tmp_path / "run"), "--policy-image-size", "56", "--no-progress"]
    if spg:
        args += ["--steps-per-generation", str(spg)]
    assert main(args) == 3
    err = capsys.readouterr().err
    assert f"fewer than one generation round takes ({per_round} prompts" in err and "0 steps" in err, err
    assert "--per-device-train-batch-size" in err and not (tmp_path / "run").exists()


@pytest.mark.parametrize("ga,spg,iters,step,refused", [
    (1, 2, 1, 1, True), (1, 2, 1, 2, False), (2, 4, 1, 1, True), (2, 4, 1, 2, False), (1, 1, 2, 1, True),
    (1, 1, 2, 4, False), (3, 2, 1, 1, True), (3, 2, 1, 2, False), (1, 1, 1, 5, False)])
def test_a_resume_inside_a_generation_block_is_refused(world, tmp_path, capsys, ga, spg, iters, step, refused):
    from samr1.cli import main

    out = tmp_path / "run"
    (out / f"checkpoint-{step}").mkdir(parents=True)
    (out / f"checkpoint-{step}" / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    # missing data: a resume that passes the block check stops at the data (exit 3), before any training
    rc = main(["train", "--model", world["policy"], "--data", str(tmp_path / "missing.jsonl"), "--sam", "tiny-shapes",
               "--device", "cpu", "--output-dir", str(out), "--resume", "latest", "--gradient-accumulation-steps",
               str(ga), "--steps-per-generation", str(spg), "--num-iterations", str(iters), "--num-generations", "2",
               "--no-progress"])
    err = capsys.readouterr().err
    if refused:
        assert rc == 2 and "inside a generation block" in err and "--save-steps" in err, err
    else:
        assert rc == 3 and "generation block" not in err, err


def test_resume_block_error_names_the_checkpoint_and_the_fix(tmp_path):
    from samr1.train.driver import resume_block_error

    (tmp_path / "trainer_state.json").write_text(json.dumps({"global_step": 3}))
    why = resume_block_error(str(tmp_path), 2, 4)
    assert why and "step 3 = 6 micro-steps" in why and "multiple of 2" in why
    assert resume_block_error(str(tmp_path), 4, 4) is None
    (tmp_path / "trainer_state.json").write_text("{broken")
    assert "cannot be read" in resume_block_error(str(tmp_path), 1, 2)


# ------------------------------------------------------------------------------------------- other commands


def _shards(folder):
    from samr1.cli.eval import write_outputs

    for k in range(2):
        res = {"giou": 0.5, "ciou": 0.5, "n": 1, "n_scored": 1, "n_skipped": 0, "n_parse_failures": 0,
               "empty_union": "lisa", "parse_failure_reasons": {}, "shard": [k, 2],
               "samples": [{"index": k, "position": "p", "query": "q", "parsed": True, "reason": None, "iou": 0.5,
                            "intersection": 1, "union": 2, "gt_pixels": 2, "pred_pixels": 1, "skipped": False,
                            "text": "t", "answer": None}]}
        write_outputs(res, str(folder / f"s{k}.json"), "t")


@pytest.mark.parametrize("existing", ["m.json", "m.samples.jsonl", "m.iou.png"])
def test_eval_out_refuses_any_existing_file_of_the_run_and_overwrite_replaces_all(tmp_path, capsys, existing):
    from samr1.cli import main

    _shards(tmp_path)
    (tmp_path / existing).write_text("the user's")
    merge = ["eval", "--merge", str(tmp_path / "s0.json"), str(tmp_path / "s1.json"), "--out", str(tmp_path / "m.json")]
    assert main(merge) == 6
    assert "--force" in capsys.readouterr().err and (tmp_path / existing).read_text() == "the user's"
    assert main([*merge, "--overwrite"]) == 0
    assert json.loads((tmp_path / "m.json").read_text())["n"] == 2
    assert (tmp_path / existing).read_bytes() != b"the user's"


def test_bench_out_needs_append_or_overwrite_for_a_folder_with_records(tmp_path, capsys):
    from samr1.cli import main

    out = tmp_path / "b"
    out.mkdir()
    (out / "parse.jsonl").write_text('{"old": 1}\n')
    (out / "README").write_text("mine")
    bench = ["bench", "parse", "--smoke", "--threads", "1", "--out", str(out)]
    assert main(bench) == 6 and "--append" in capsys.readouterr().err
    assert main([*bench, "--append"]) == 0
    lines = (out / "parse.jsonl").read_text().splitlines()
    assert lines[0] == '{"old": 1}' and len(lines) > 1
    assert main([*bench, "--overwrite"]) == 0
    assert '{"old": 1}' not in (out / "parse.jsonl").read_text() and (out / "README").read_text() == "mine"


def test_train_sam_refuses_a_non_empty_out_before_training(tmp_path, capsys):
    from samr1.cli import main

    (tmp_path / "card.json").write_text("{}")
    assert main(["train-sam", "--out", str(tmp_path), "--steps", "2", "--warmup", "0"]) == 6
    assert "--overwrite" in capsys.readouterr().err and (tmp_path / "card.json").read_text() == "{}"


@pytest.mark.parametrize("change", [("--data", "three"), ("--learning-rate", "5e-4"), ("--seed", "7"),
                                    ("--max-samples", "3"), ("--num-generations", "4"),
                                    ("--components", "think,answer")])
def test_a_resume_with_other_run_settings_is_refused_and_the_record_kept(world, tmp_path, capsys, change):
    """``--resume`` with other data, seed, sample cap, optimiser, group size or reward continued in silence and
    replaced train_config.json: the first run's settings were lost and two experiments mixed under one
    name. It is refused before anything is loaded, naming each difference; the folder is untouched. A resume
    that changes only steps or saving goes on, and the settings it ran with before are kept in
    train_config.history.jsonl."""
    from samr1.train.driver import RESUME_KEYS

    out = tmp_path / "run"
    assert _train(world, out, "--save-steps", "1") == 0
    recorded = json.loads((out / "train_config.json").read_text())
    assert set(RESUME_KEYS) <= set(recorded)
    capsys.readouterr()
    before = _tree(out)
    flag, value = change
    value = str(world[value]) if value in world else value
    assert _train(world, out, "--resume", "latest", "--max-steps", "2", flag, value) == 2
    err = capsys.readouterr().err
    key = flag[2:].replace("-", "_")
    assert "--resume continues the run recorded" in err and f"{key}: recorded" in err, err
    assert _tree(out) == before
    # the same run, more steps: resumed; the previous record is kept, the new one says max_steps 2
    assert _train(world, out, "--resume", "latest", "--max-steps", "2", "--save-steps", "1") == 0
    history = [json.loads(x) for x in (out / "train_config.history.jsonl").read_text().splitlines()]
    assert history == [recorded] and json.loads((out / "train_config.json").read_text())["max_steps"] == 2
