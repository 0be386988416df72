"""The demo runs end to end on generated scenes and its table agrees with the reward components."""

import os

from samr1.cli import main


def test_demo_cli_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--scenes", "1", "--device", "cpu", "--sam", "tiny"]) == 0
    text = capsys.readouterr().out
    assert "RANDOM weights" in text  # says plainly that masks are meaningless
    for kind in ("good", "off-target", "bad JSON", "no answer", "conversational"):
        assert kind in text
    assert os.path.exists(out / "scene0.png")
    # a second run never overwrites: it goes into a new subfolder
    assert main(["demo", "--out", str(out), "--scenes", "1"]) == 0
    runs = [d for d in os.listdir(out) if d.startswith("run-")]
    assert len(runs) == 1 and os.path.exists(out / runs[0] / "scene0.png")


def test_demo_rows_are_consistent(tmp_path):
    from samr1.demo import run_demo

    lines = []
    rows, _ = run_demo(out_dir=str(tmp_path), n_scenes=2, echo=lines.append)  # default: shipped tiny-shapes
    assert not any("RANDOM" in ln for ln in lines) and any("synthetic shapes" in ln for ln in lines)
    by_kind = {r.kind: r for r in rows}
    assert by_kind["good"].answer.ok and by_kind["conversational"].answer.ok
    assert not by_kind["bad JSON"].answer.ok and by_kind["bad JSON"].answer.reason
    assert not by_kind["no answer"].answer.ok
    for r in rows:
        assert 0.0 <= r.total <= 6.0
        assert abs(r.total - sum(r.rewards.values())) < 1e-6
    # the same completion as a string or as a conversation scores the same
    assert by_kind["good"].total == by_kind["conversational"].total
    assert by_kind["no think"].rewards["think_format"] == 0.0
    # with the trained model the rewards mean something: on-target beats off-target in every scene
    for s in (0, 1):
        scene = {r.kind: r for r in rows if r.scene == s}
        assert scene["good"].iou > scene["off-target"].iou + 0.3
