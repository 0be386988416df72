"""The command line as a newcomer meets it: one SAM default and one --sam / --components text for every command,
no random SAM without a warning, plain-text help, suggestions for near misses, light imports, one exit code per
class of error, a samr1 error from the client when the server is down, and figures that explain themselves."""

from __future__ import annotations

import argparse
import ast
import json
import pathlib
import socket
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from samr1.cli import (
    COMPONENTS_METAVAR,
    DEFAULT_SAM,
    EXIT_DEVICE,
    EXIT_INPUT,
    EXIT_MODEL,
    EXIT_USAGE,
    SAM_HELP,
    SAM_METAVAR,
    build_parser,
    main,
    plain_text,
)

PKG = pathlib.Path(__file__).resolve().parents[1] / "samr1"


@pytest.fixture(autouse=True)
def _no_debug_env(monkeypatch):
    monkeypatch.delenv("SAMR1_DEBUG", raising=False)


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _child(code: str) -> str:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()[-1]


# ------------------------------------------------------------------------------------------ one SAM, one text


def test_every_command_has_the_same_sam_default_metavar_and_help():
    from samr1.sam import DEFAULT_SAM as LIBRARY_DEFAULT

    assert DEFAULT_SAM == LIBRARY_DEFAULT  # the CLI's copy (kept so --help does not import SAM) agrees
    seen = []
    for name, p in _subparsers(build_parser()).items():
        action = p._option_string_actions.get("--sam")
        if action is None:
            continue
        seen.append(name)
        default = DEFAULT_SAM if action.default is argparse.SUPPRESS else action.default  # train: from TrainConfig
        assert default == DEFAULT_SAM, (name, action.default)
        assert action.metavar == SAM_METAVAR and action.help == SAM_HELP, (name, action.metavar, action.help)
        ckpt = p._option_string_actions["--sam-checkpoint"]
        assert ckpt.metavar == "PATH", name
    assert {"demo", "train", "segment", "eval", "serve", "embed", "export", "bench"} <= set(seen)


def test_components_is_one_comma_separated_flag_in_train_and_serve():
    from samr1.cli import split_components
    from samr1.cli.train import config_from_args

    parser = build_parser()
    subs = _subparsers(parser)
    for name in ("train", "serve"):
        action = subs[name]._option_string_actions["--components"]
        assert action.metavar == COMPONENTS_METAVAR and action.nargs is None, name
    args = parser.parse_args(["train", "--model", "m", "--data", "d", "--components", "think, iou"])
    assert config_from_args(args).components == ["think", "iou"]
    assert parser.parse_args(["serve", "--components", "think,iou"]).components == "think,iou"
    assert split_components(["think", "answer"]) == ("think", "answer")  # a YAML list reads the same
    with pytest.raises(SystemExit):  # the space-separated form is not a second grammar
        parser.parse_args(["train", "--components", "think", "iou"])


def test_help_is_plain_text_for_every_command():
    parser = build_parser()
    texts = {"samr1": parser.format_help(), **{n: p.format_help() for n, p in _subparsers(parser).items()}}
    for name, text in texts.items():
        assert "``" not in text, name
        for role in (":func:`", ":class:`", ":mod:`", ":data:`", ":meth:`"):
            assert role not in text, (name, role)
    assert plain_text("see :func:`samr1.io.rle_decode` and ``--box``") == "see samr1.io.rle_decode and --box"


# ------------------------------------------------------------------------------------------ near misses


def test_a_misspelt_subcommand_or_choice_names_the_one_meant(capsys):
    assert main(["sgment"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "did you mean 'segment'?" in err, err
    assert main(["shapes_check"]) == EXIT_USAGE  # '_' for '-'
    assert "did you mean 'shapes-check'?" in capsys.readouterr().err
    assert main(["eval", "--data-format", "refcoco", "--out", "x.json"]) == EXIT_USAGE
    assert "did you mean 'refcocog'?" in capsys.readouterr().err
    assert main(["qwerty"]) == EXIT_USAGE
    assert "did you mean" not in capsys.readouterr().err  # nothing close: no guess


@pytest.mark.parametrize(("kind", "meant"), [("vit-h", "vit_h"), ("VIT_B", "vit_b"), ("tiny_shapes", "tiny-shapes"),
                                             ("vit_hh", "vit_h"), ("sam2.1-hiera-t", "sam2.1_hiera_t"),
                                             ("banana", None)])
def test_an_unknown_sam_kind_suggests_the_near_one(kind, meant):
    from samr1.sam import ModelError, check_kind

    with pytest.raises(ModelError) as info:
        check_kind(kind)
    msg = str(info.value)
    assert ("did you mean" in msg) == (meant is not None), msg
    if meant:
        assert f"did you mean {meant!r}?" in msg, msg


# ------------------------------------------------------------------------------------------ no silent random SAM


@pytest.mark.parametrize(("kind", "checkpoint", "random"), [("tiny", None, True), ("vit_h", None, True),
                                                            ("sam2.1_hiera_t", None, True), ("vit_h", "x.pth", False),
                                                            ("tiny-shapes", None, False)])
def test_which_kinds_have_random_weights(kind, checkpoint, random):
    from samr1.sam import has_random_weights, random_weights_message

    assert has_random_weights(kind, checkpoint) is random
    msg = random_weights_message(kind)
    assert "--sam-checkpoint" in msg and "https://github.com/facebookresearch/" in msg and "\n" not in msg


@pytest.mark.filterwarnings("default:SAM '[^']*' has random weights")
def test_a_random_sam_warns_once_on_stderr_and_the_default_sam_is_named(tmp_path, capsys):
    img = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    Image.fromarray(img).save(tmp_path / "im.png")
    base = ["segment", "--image", str(tmp_path / "im.png"), "--box", "5,5,30,30", "--device", "cpu"]
    assert main([*base, "--sam", "tiny", "--out", str(tmp_path / "a.png")]) == 0
    err = capsys.readouterr().err
    # said up front by the CLI and again by load_sam: printed once
    assert err.count("random weights") == 1 and err.startswith("samr1 segment: warning: "), err
    assert "--sam-checkpoint" in err and "segment-anything#model-checkpoints" in err
    assert main([*base, "--out", str(tmp_path / "b.png")]) == 0
    err = capsys.readouterr().err
    assert "random weights" not in err and f"using {DEFAULT_SAM}" in err and "--sam vit_h" in err, err
    assert main([*base, "--sam", DEFAULT_SAM, "--out", str(tmp_path / "c.png")]) == 0
    assert capsys.readouterr().err == ""  # chosen on purpose: nothing to say


def test_load_sam_warns_about_random_weights_unless_chosen_on_purpose(recwarn):
    from samr1.sam import RandomWeightsWarning, load_sam

    load_sam("tiny", warn_random=False)
    assert not [w for w in recwarn if issubclass(w.category, RandomWeightsWarning)]
    with pytest.warns(RandomWeightsWarning, match="--sam-checkpoint"):
        load_sam("tiny")


@pytest.mark.filterwarnings("default:SAM '[^']*' has random weights")
def test_eval_refuses_a_random_sam_before_reading_anything(tmp_path, capsys):
    base = ["eval", "--model", str(tmp_path / "policy"), "--data", str(tmp_path / "missing.jsonl"),
            "--out", str(tmp_path / "r.json")]
    assert main([*base, "--sam", "tiny"]) == EXIT_MODEL
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--allow-random-sam" in err and "--sam-checkpoint" in err, err
    assert main([*base, "--sam", "vit_b"]) == EXIT_MODEL  # any kind without its checkpoint
    capsys.readouterr()
    # allowed: it warns, then goes on to read the data (missing here: an input error)
    assert main([*base, "--sam", "tiny", "--allow-random-sam"]) == EXIT_INPUT
    err = capsys.readouterr().err
    assert "warning: SAM 'tiny' has random weights" in err and "missing.jsonl" in err, err
    assert not (tmp_path / "r.json").exists()


# ------------------------------------------------------------------------------------------ exit codes


def test_a_sam2_kind_without_its_extra_exits_as_a_missing_package(tmp_path, monkeypatch, capsys):
    for name in [m for m in sys.modules if m == "sam2" or m.startswith("sam2.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "sam2", None)
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(tmp_path / "im.png")
    code = main(["segment", "--image", str(tmp_path / "im.png"), "--box", "1,1,9,9", "--out",
                 str(tmp_path / "m.png"), "--sam", "sam2_hiera_t"])
    err = capsys.readouterr().err
    assert code == EXIT_DEVICE and "samr1[sam2]" in err and err.count("\n") == 1, err


# ------------------------------------------------------------------------------------------ light imports


def test_help_and_the_ops_door_stay_light():
    loaded = json.loads(_child(
        "import io, json, sys, contextlib\n"
        "from samr1.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    assert main(['--help']) == 0 and main(['train', '--help']) == 0 and main(['train-sam', '--help']) == 0\n"
        "print(json.dumps(sorted(m for m in ('torch', 'segment_anything', 'transformers', 'trl') if m in sys.modules)))"))
    assert loaded == [], loaded
    loaded = json.loads(_child(
        "import json, sys\nimport samr1.ops\n"
        "print(json.dumps(sorted(m for m in sys.modules if m in ('segment_anything', 'torchvision', 'samr1.engine', "
        "'samr1.sam.build', 'samr1.rewards') or m.startswith('samr1.engine.'))))"))
    assert loaded == [], loaded


def test_nothing_below_the_face_imports_from_the_face():
    """``from samr1 import load_sam`` takes a name from samr1/__init__.py (which lazily loads the engine and
    everything on it); inside the package, modules import the submodule that defines it instead. A submodule
    itself (``from samr1 import jsonout``) is fine: that imports the module, not the face's names."""
    import samr1

    submodules = {p.stem for p in PKG.glob("*.py")} | {p.name for p in PKG.iterdir() if (p / "__init__.py").exists()}
    offenders = []
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG)
        if rel.parts[0] in ("cli", "__main__.py", "__init__.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module == "samr1":
                offenders += [f"{rel}: from samr1 import {a.name}" for a in node.names if a.name not in submodules]
    assert not offenders, offenders
    assert {"load_sam", "SamEngine"} <= set(samr1._EXPORTS) and not submodules & set(samr1._EXPORTS)


def test_python_dash_m_samr1_is_the_command_line():
    proc = subprocess.run([sys.executable, "-m", "samr1", "--version"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.startswith("samr1 "), proc.stderr
    proc = subprocess.run([sys.executable, "-m", "samr1", "sgment"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == EXIT_USAGE and "did you mean 'segment'?" in proc.stderr


# ------------------------------------------------------------------------------------------ the client


def test_the_client_says_when_the_server_cannot_be_reached():
    from samr1.client import SamR1Client, ServerUnreachableError

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = SamR1Client(f"http://127.0.0.1:{port}", retries=1, timeout_s=5)
    with pytest.raises(ServerUnreachableError) as info:
        client.health()
    msg = str(info.value)
    assert f"127.0.0.1:{port}" in msg and "samr1 serve" in msg and "2 attempts" in msg, msg
    assert isinstance(info.value, ConnectionError) and client.stats["retries_unreachable"] == 1
    with pytest.raises(ServerUnreachableError):  # the TRL reward-function path too
        client(completions=["<answer>{}</answer>"], image=[np.zeros((8, 8, 3), np.uint8)],
               mask=[np.zeros((8, 8), bool)])


# ------------------------------------------------------------------------------------------ figures


def _colours(im: Image.Image) -> set[tuple[int, int, int]]:
    return {tuple(int(v) for v in c) for c in np.asarray(im.convert("RGB")).reshape(-1, 3)}


def test_overlays_leave_no_scene_colour_and_carry_a_legend():
    from samr1.answer import parse_answer
    from samr1.demo import overlay_image
    from samr1.shapes.viz import MARKS

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    img[10:30, 10:30] = MARKS["SAM mask"]  # a scene object of exactly the mask's colour
    img[35:55, 40:70] = MARKS["ground truth"]
    empty = np.zeros((60, 80), bool)
    plain = np.asarray(overlay_image(img, empty, None))
    assert plain.shape == (60, 80, 3)
    assert (plain[..., 0] == plain[..., 1]).all() and (plain[..., 1] == plain[..., 2]).all()  # grey: no hue left
    pred = np.zeros((60, 80), bool)
    pred[12:20, 12:20] = True
    ans = parse_answer('<answer>{"bbox": [100, 100, 300, 300], "points_1": [200, 200], "points_2": [210, 210]}'
                       "</answer>", image_size=(60, 80))
    fig = overlay_image(img, pred, ans, gt=pred, legend=True)
    assert fig.height > 60 and fig.width == 80  # the legend strip below the image, in rows as narrow as this
    assert set(MARKS.values()) <= _colours(fig.crop((0, 60, 80, fig.height)))
    assert MARKS["box"] in _colours(fig.crop((0, 0, 80, 60))) and MARKS["points"] in _colours(fig.crop((0, 0, 80, 60)))
    body = np.asarray(overlay_image(img, pred, None, gt=pred)).astype(int)
    inside = body[14:18, 14:18].reshape(-1, 3)  # the mask's inside (within the 2 px ground-truth outline)
    assert (inside[:, 0] > inside[:, 2] + 60).all()  # orange tint on grey, never the scene's own colours


def test_the_demo_sheet_and_the_shapes_check_figure_carry_their_legend(tmp_path):
    from samr1.demo import run_demo
    from samr1.shapes.check import examples_figure
    from samr1.shapes.viz import MARKS, legend_bar

    def legend_of(fig: Image.Image, items: dict) -> Image.Image:
        return fig.crop((0, fig.height - legend_bar(fig.width, items).height, fig.width, fig.height))

    _, out = run_demo(str(tmp_path / "demo"), n_scenes=1, echo=lambda *a: None)
    sheet = Image.open(pathlib.Path(out) / "scene0.png")
    assert set(MARKS.values()) <= _colours(legend_of(sheet, MARKS))
    drawn = {k: v for k, v in MARKS.items() if k != "points"}  # the checker prompts with boxes only
    fig = Image.open(examples_figure(None, str(tmp_path / "check.png"), n=1))
    assert set(drawn.values()) <= _colours(legend_of(fig, drawn))
