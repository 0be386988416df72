"""The samr1 command line: the subcommands it lists work, segment writes the engine's mask and never overwrites,
and every user error is one line ``samr1 <cmd>: error: ...`` on stderr with its documented exit code."""

import errno
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from samr1.cli import (
    COMMANDS,
    EXIT_CODES,
    build_parser,
    classify,
    join_negative_values,
    listed_commands,
    main,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _no_debug_env(monkeypatch):
    monkeypatch.delenv("SAMR1_DEBUG", raising=False)


def _image(path: Path, shape=(71, 93)) -> np.ndarray:
    img = np.random.default_rng().integers(0, 256, (*shape, 3), dtype=np.uint8)
    Image.fromarray(img).save(path)
    return img


def _one_line_error(capsys, cmd: str) -> str:
    """The stderr of a failed command: exactly one line, ``samr1 <cmd>: error: ...``, no traceback (warnings and
    notes said before it, such as the random-SAM warning, are lines of their own and are set aside)."""
    err = "".join(line for line in capsys.readouterr().err.splitlines(keepends=True)
                  if not line.startswith((f"samr1 {cmd}: warning: ", f"samr1 {cmd}: note: ")))
    assert err.count("\n") == 1 and err.startswith(f"samr1 {cmd}: error: "), err
    assert "Traceback" not in err
    return err


# ----------------------------------------------------------------------------------------- listing


def test_help_lists_only_existing_commands_and_each_help_exits_0(capsys):
    assert main(["--help"]) == 0
    top = capsys.readouterr().out
    listed = listed_commands()
    assert listed, top
    for module in COMMANDS:
        name = module.replace("_", "-")
        exists = importlib.util.find_spec(f"samr1.cli.{module}") is not None
        shown = re.search(rf"^\s+{re.escape(name)}\b", top, re.M) is not None
        assert shown == exists == (name in listed), (name, exists, shown)
    for name in listed:
        assert main([name, "--help"]) == 0, name
        out = capsys.readouterr().out
        assert out.startswith(f"usage: samr1 {name}"), out[:200]


def test_help_and_the_cli_page_document_the_same_exit_codes(capsys):
    assert main(["--help"]) == 0
    top = capsys.readouterr().out
    epilog = top[top.index("exit codes:"):]
    in_help = {int(m) for m in re.findall(r"^\s+(\d+)\s", epilog, re.M)}
    page = (ROOT / "docs" / "cli.md").read_text()
    table = page[page.index("| exit code |"):]
    in_docs = {int(m) for m in re.findall(r"^\| (\d+) \|", table.split("\n\n")[0], re.M)}
    # the page may also list codes a single command adds (7 and up)
    assert in_help == set(EXIT_CODES) <= in_docs and {0, 1, 2, 3, 4, 5, 6, 75, 130} <= in_help


def test_no_command_prints_help_and_fails(capsys):
    assert main([]) == 2
    assert "usage" in capsys.readouterr().out


def test_parser_builds_without_optional_commands():
    # every registered subcommand has a handler
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, p in sub.choices.items():
        assert p.get_default("func") is not None, name


# ----------------------------------------------------------------------------------------- segment


def _engine_mask(img: np.ndarray, box, points=()) -> np.ndarray:
    import json

    from samr1.answer import parse_answer
    from samr1.engine import SamEngine
    from samr1.sam import DEFAULT_SAM, load_sam

    h, w = img.shape[:2]
    obj = {"bbox": list(box), "points": [list(p) for p in points]} if points else {"bbox": list(box)}
    ans = parse_answer(f"<answer>{json.dumps(obj)}</answer>", image_size=(h, w), model_size=(h, w),
                       require_points=False)
    assert ans.ok, ans.reason
    return SamEngine(load_sam(DEFAULT_SAM)).segment(img, ans)


def test_segment_box_and_points_matches_engine(tmp_path, capsys):
    img = _image(tmp_path / "im.png")
    out = tmp_path / "mask.png"
    assert main(["segment", "--image", str(tmp_path / "im.png"), "--box", "10,5,60,50", "--point", "30,20",
                 "--out", str(out), "--device", "cpu"]) == 0
    got = np.asarray(Image.open(out)) > 0
    assert got.shape == (71, 93) and np.array_equal(got, _engine_mask(img, (10, 5, 60, 50), [(30, 20)]))
    # an existing output is never overwritten without --force
    before = out.read_bytes()
    capsys.readouterr()
    assert main(["segment", "--image", str(tmp_path / "im.png"), "--box", "1,1,20,20", "--out", str(out)]) == 6
    assert "exists; pass --force" in _one_line_error(capsys, "segment")
    assert out.read_bytes() == before


def test_negative_coordinates_are_values_in_both_forms(tmp_path, capsys):
    img = _image(tmp_path / "im.png")
    # a box partly left of / above the image is clipped to it, exactly as the parser clips any box
    x1, y1 = -int(np.random.default_rng().integers(1, 60)), -7
    ref = _engine_mask(img, (max(x1, 0), max(y1, 0), 40, 33), [(0, 20)])
    for i, box_args in enumerate((["--box", f"{x1},{y1},40,33"], [f"--box={x1},{y1},40,33"])):
        out = tmp_path / f"m{i}.png"
        assert main(["segment", "--image", str(tmp_path / "im.png"), *box_args, "--point", "-3,20",
                     "--out", str(out)]) == 0, capsys.readouterr().err
        assert np.array_equal(np.asarray(Image.open(out)) > 0, ref)
    # a box wholly outside the image is parsed as numbers and then refused for what it is
    capsys.readouterr()
    assert main(["segment", "--image", str(tmp_path / "im.png"), "--box", "-50,-50,-10,-10",
                 "--out", str(tmp_path / "o.png")]) == 2
    err = _one_line_error(capsys, "segment")
    assert "zero_area_box" in err and "expected one argument" not in err


def test_join_negative_values_only_joins_one_value_flags_of_the_command():
    parser = build_parser()
    argv = ["--debug", "segment", "--box", "-5,-6,7,8", "--point", "-1,2", "--force", "-3", "--model-frame", "-1,2",
            "--", "--point", "-9,9"]
    assert join_negative_values(parser, argv) == [
        "--debug", "segment", "--box=-5,-6,7,8", "--point=-1,2", "--force", "-3", "--model-frame=-1,2",
        "--", "--point", "-9,9"]
    # not a number: left for argparse to judge; no command: unchanged
    assert join_negative_values(parser, ["segment", "--box", "-x"]) == ["segment", "--box", "-x"]
    assert join_negative_values(parser, ["--box", "-1,2"]) == ["--box", "-1,2"]


# ----------------------------------------------------------------------------------------- user errors


@pytest.fixture
def scene(tmp_path):
    _image(tmp_path / "im.png")
    return tmp_path


def _seg(scene: Path, *extra: str) -> list[str]:
    return ["segment", "--image", str(scene / "im.png"), "--box", "10,5,60,50", "--out", str(scene / "o.png"), *extra]


def _evil_checkpoint(path: Path, marker: Path) -> None:
    """A .pth whose unpickling would create ``marker`` (any code could run in its place)."""

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"image_encoder.patch_embed.proj.weight": torch.zeros(1), "x": Payload()}, path)


def test_missing_manifest(tmp_path, capsys):
    assert main(["embed", "--data", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "store")]) == 3
    assert "manifest not found" in _one_line_error(capsys, "embed")
    assert not (tmp_path / "store").exists()


def test_unknown_sam_kind(scene, capsys):
    assert main(_seg(scene, "--sam", "vit_x")) == 4
    assert "unknown SAM kind 'vit_x'" in _one_line_error(capsys, "segment")


def test_missing_corrupt_and_malicious_checkpoints(scene, capsys):
    assert main(_seg(scene, "--sam-checkpoint", str(scene / "nope.pth"))) == 4
    assert "nope.pth: file not found" in _one_line_error(capsys, "segment")
    (scene / "junk.pth").write_bytes(os.urandom(300))
    assert main(_seg(scene, "--sam-checkpoint", str(scene / "junk.pth"))) == 4
    assert "junk.pth could not be read" in _one_line_error(capsys, "segment")
    marker = scene / "pwned"
    _evil_checkpoint(scene / "evil.pth", marker)
    assert main(_seg(scene, "--sam-checkpoint", str(scene / "evil.pth"))) == 4
    err = _one_line_error(capsys, "segment")
    assert "evil.pth was refused" in err and "could run code" in err and "weights_only=False" not in err
    assert not marker.exists() and not (scene / "o.png").exists()


def test_debug_adds_the_traceback_and_keeps_the_code(scene, capsys):
    _evil_checkpoint(scene / "evil.pth", scene / "pwned")
    for argv in (["--debug", *_seg(scene, "--sam-checkpoint", str(scene / "evil.pth"))],
                 [*_seg(scene, "--sam-checkpoint", str(scene / "evil.pth")), "--debug"]):
        assert main(argv) == 4
        err = capsys.readouterr().err
        assert "Traceback" in err and "CheckpointError" in err
        assert err.splitlines()[-1].startswith("samr1 segment: error: ")
    assert not (scene / "pwned").exists()


def test_cuda_device_without_a_gpu_is_refused_up_front(scene, capsys):
    # where a GPU exists, ask for one index past the last
    dev = f"cuda:{torch.cuda.device_count()}" if torch.cuda.is_available() else "cuda"
    assert main(_seg(scene, "--device", dev)) == 5
    err = _one_line_error(capsys, "segment")
    assert f"device '{dev}'" in err and ("use device 'cpu'" in err or "visible" in err)
    assert main(_seg(scene, "--device", "gpu0")) == 5
    assert "not a torch device" in _one_line_error(capsys, "segment")


def test_unwritable_out(scene, capsys):
    (scene / "afile").write_text("x")
    assert main(_seg(scene)[:-2] + ["--out", str(scene / "afile" / "sub" / "m.png")]) == 6
    assert "is a file, not a folder" in _one_line_error(capsys, "segment")
    assert main(_seg(scene)[:-2] + ["--out", str(scene)]) == 6
    assert "is a folder; give a file path" in _one_line_error(capsys, "segment")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes through permission bits")
def test_out_in_a_read_only_folder(scene, capsys):
    ro = scene / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        assert main(_seg(scene)[:-2] + ["--out", str(ro / "m.png")]) == 6
        assert "is not writable" in _one_line_error(capsys, "segment")
    finally:
        ro.chmod(0o755)


def test_unwritable_cache_dir(tmp_path, capsys):
    # a cache root that cannot be created (a file is in the way): the ONNX export cannot be written
    (tmp_path / "afile").write_text("x")
    assert main(["export", "--sam", "tiny", "--backend", "onnx", "--device", "cpu",
                 "--cache-dir", str(tmp_path / "afile" / "cache")]) == 6
    err = _one_line_error(capsys, "export")
    assert "cannot write the artefact cache" in err and "--cache-dir" in err


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes through permission bits")
def test_read_only_cache_dir(tmp_path, capsys):
    ro = tmp_path / "cache"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        assert main(["export", "--sam", "tiny", "--backend", "onnx", "--device", "cpu", "--cache-dir", str(ro)]) == 6
        assert "Permission denied" in _one_line_error(capsys, "export")
    finally:
        ro.chmod(0o755)


def test_images_the_engine_or_reader_refuses(tmp_path, capsys):
    Image.fromarray(np.zeros((1, 3000, 3), np.uint8)).save(tmp_path / "thin.png")
    (tmp_path / "junk.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(40))
    for name, said in (("thin.png", "aspect ratio is too extreme"), ("junk.png", "cannot read image file"),
                       ("missing.png", "image file not found")):
        assert main(["segment", "--image", str(tmp_path / name), "--box", "1,0,100,1",
                     "--out", str(tmp_path / "o.png")]) == 3, name
        err = _one_line_error(capsys, "segment")
        assert said in err and name in err, err


def test_bad_flag_values_are_usage_errors(scene, capsys):
    for extra, said in ((["--box", "1,2,3"], "--box expects 4 comma-separated finite numbers"),
                        (["--box", "1,2,3,nan"], "finite"),
                        (["--answer", "hello"], "--answer could not be parsed: no_answer_block")):
        argv = ["segment", "--image", str(scene / "im.png"), *extra, "--out", str(scene / "o.png")]
        assert main(argv) == 2, extra
        assert said in _one_line_error(capsys, "segment")
    assert main(["segment", "--image", str(scene / "im.png")]) == 2
    assert "required: --out" in _one_line_error(capsys, "segment")
    assert main(["no-such-command"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("samr1: error: ") and err.count("\n") == 1


def test_classify_maps_exception_types_to_documented_codes():
    from samr1.io import InputError
    from samr1.sam import CheckpointError, DeviceError, ModelError
    from samr1.store import StoreError, StoreLockedError, StoreWriteError

    cases = [(InputError("x"), 3), (StoreError("x"), 3), (ModelError("x"), 4), (CheckpointError("x"), 4),
             (DeviceError("x"), 5), (ImportError("No module named 'onnxruntime'"), 5),
             (PermissionError(errno.EACCES, "Permission denied", "/ro/out.png"), 6),
             (IsADirectoryError(errno.EISDIR, "Is a directory", "/tmp"), 6),
             (OSError(errno.EROFS, "Read-only file system", "/ro"), 6),
             (ValueError("bad value"), 2), (RuntimeError("boom"), 1), (KeyboardInterrupt(), 130),
             (StoreLockedError("held by pid 1"), 75), (StoreWriteError("cannot create the lock file"), 6)]
    for exc, code in cases:
        got, message = classify(exc)
        assert got == code and got in EXIT_CODES, (exc, got)
        assert "\n" not in message
    assert "/ro/out.png" in classify(cases[6][0])[1] and "read-only" in classify(cases[8][0])[1]
    assert "--debug" in classify(RuntimeError("boom"))[1]


def test_console_entry_prints_one_line_and_exits_with_the_code(scene):
    # the real process: python -m samr1.cli, stderr as a user sees it
    marker = scene / "pwned"
    _evil_checkpoint(scene / "evil.pth", marker)
    env = {k: v for k, v in os.environ.items() if k != "SAMR1_DEBUG"}
    r = subprocess.run([sys.executable, "-m", "samr1.cli", *_seg(scene, "--sam-checkpoint", str(scene / "evil.pth"))],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 4, r.stderr
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("samr1 segment: error: "), r.stderr
    assert not marker.exists()


def test_a_command_missing_an_optional_package_is_unlisted_and_explained(monkeypatch, capsys):
    import types

    import samr1.cli as cli

    def register(sub):
        sub.add_parser("needs-extra", help="a command whose optional package is not installed")
        raise ModuleNotFoundError("No module named 'samr1_test_absent_pkg'", name="samr1_test_absent_pkg")

    module = types.ModuleType("samr1.cli.needs_extra")
    module.register = register
    monkeypatch.setitem(sys.modules, "samr1.cli.needs_extra", module)
    monkeypatch.setattr(cli, "COMMANDS", [*cli.COMMANDS, "needs_extra"])
    assert main(["--help"]) == 0
    top = capsys.readouterr().out
    assert "needs-extra" not in listed_commands() and "segment" in listed_commands()
    assert not re.search(r"^\s+needs-extra\b", top, re.M) and "samr1_test_absent_pkg" in top
    assert main(["needs-extra", "--help"]) == 5
    err = _one_line_error(capsys, "needs-extra")
    assert "unavailable here" in err and "samr1_test_absent_pkg" in err
