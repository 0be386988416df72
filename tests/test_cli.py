"""The samr1 command line: subcommands are registered, segment writes the engine's mask, never overwrites."""

import numpy as np
import pytest
from PIL import Image

from samr1.cli import build_parser, main


def test_help_lists_the_subcommands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for name in ("demo", "segment", "embed", "export", "bench"):
        assert name in out


def test_no_command_prints_help_and_fails(capsys):
    assert main([]) == 2
    assert "usage" in capsys.readouterr().out


def test_segment_box_and_points_matches_engine(tmp_path):
    from samr1.answer import parse_answer
    from samr1.engine import SamEngine
    from samr1.sam import load_sam

    rng = np.random.default_rng()
    img = rng.integers(0, 256, (71, 93, 3), dtype=np.uint8)
    Image.fromarray(img).save(tmp_path / "im.png")
    out = tmp_path / "mask.png"
    assert main(["segment", "--image", str(tmp_path / "im.png"), "--box", "10,5,60,50", "--point", "30,20",
                 "--out", str(out), "--device", "cpu"]) == 0
    got = np.asarray(Image.open(out)) > 0
    ans = parse_answer('<answer>{"bbox": [10, 5, 60, 50], "points": [[30, 20]]}</answer>', image_size=(71, 93),
                       model_size=(71, 93))
    ref = SamEngine(load_sam("tiny")).segment(img, ans)
    assert got.shape == (71, 93) and np.array_equal(got, ref)
    # an existing output is never overwritten without --force
    before = out.read_bytes()
    with pytest.raises(SystemExit, match="exists; pass --force"):
        main(["segment", "--image", str(tmp_path / "im.png"), "--box", "1,1,20,20", "--out", str(out)])
    assert out.read_bytes() == before


def test_segment_errors_say_what_is_wrong(tmp_path):
    with pytest.raises(SystemExit, match="--box expects 4 comma-separated numbers"):
        main(["segment", "--image", str(tmp_path / "x.png"), "--box", "1,2,3", "--out", str(tmp_path / "o.png")])
    with pytest.raises(SystemExit, match="image file not found"):
        main(["segment", "--image", str(tmp_path / "x.png"), "--box", "1,2,3,4", "--out", str(tmp_path / "o.png")])
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(tmp_path / "z.png")
    with pytest.raises(SystemExit, match="--answer could not be parsed: no_answer_block"):
        main(["segment", "--image", str(tmp_path / "z.png"), "--answer", "hello", "--out", str(tmp_path / "o.png")])


def test_parser_builds_without_optional_commands():
    # every registered subcommand has a handler
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, p in sub.choices.items():
        assert p.get_default("func") is not None, name
