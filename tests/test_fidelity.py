"""samr1's rewards against a restatement of Seg-Zero's (bench/bench_fidelity.py): every difference is one of
the documented ones, and on answers in Seg-Zero's own format the reward rules agree exactly."""

from __future__ import annotations

import numpy as np
import pytest
from samr1.bench import bench_fidelity as bf

from samr1.geometry import mask_to_points, resize_mask_nearest, squared_edt

# (component, direction) -> the completion kinds whose difference README documents
DOCUMENTED = {
    ("think", "more lenient"): {"whitespace_around"},
    ("think", "stricter"): {"two_answer_blocks"},
    ("answer", "more lenient"): {"braces_in_think", "malformed_missing_point", "multi_point_list", "single_quotes",
                                 "visionreasoner_list"},
    ("answer", "stricter"): {"malformed_no_answer"},
}
for _c in ("box_iou", "box_l1", "point_dist"):
    DOCUMENTED[(_c, "more lenient")] = DOCUMENTED[("answer", "more lenient")] | {"inverted_corners"}
    DOCUMENTED[(_c, "stricter")] = {"malformed_no_answer", "two_answer_blocks"}


def brute_sq_edt_scipy(mask):
    """Squared distance to the nearest zero pixel by brute force (border not background; inf when none)."""
    zeros = np.argwhere(~mask)
    out = np.zeros(mask.shape)
    for i, j in np.argwhere(mask):
        out[i, j] = ((zeros - (i, j)) ** 2).sum(1).min() if len(zeros) else np.inf
    return out


def test_restated_edt_and_resize_are_exact():
    """The bench's independent EDT and resize against brute force and against samr1's (scipy semantics)."""
    rng = np.random.default_rng()
    for _ in range(40):
        h, w = (int(v) for v in rng.integers(2, 24, 2))
        m = rng.random((h, w)) < rng.uniform(0.3, 0.95)
        m[int(rng.integers(0, h)), int(rng.integers(0, w))] = False  # at least one background pixel
        want = brute_sq_edt_scipy(m)
        np.testing.assert_array_equal(bf.restated_sq_edt(m), want)
        np.testing.assert_array_equal(squared_edt(m, border_is_background=False), want)
    for H, W in ((480, 640), (1680, 1680), (333, 517), (841, 839)):
        m = rng.random((H, W)) < 0.5
        np.testing.assert_array_equal(bf.restated_resize(m), resize_mask_nearest(m, (840, 840)))


def test_reference_points_match_the_restatement_on_scene_masks():
    from samr1.shapes.scenes import make_scene

    rng = np.random.default_rng()
    for seed in rng.integers(0, 10_000, 2):
        sc = make_scene(int(seed), size=(200, 260))
        for obj in sc.objects[:2]:
            small = resize_mask_nearest(obj.mask, (840, 840))
            _, pts = bf.restated_reference(small)
            assert mask_to_points(small) == [(float(x), float(y)) for x, y in pts]


def test_every_difference_is_documented_and_seg_zero_format_answers_agree():
    seed = int(np.random.default_rng().integers(0, 1_000_000))
    res = bf.run_restated(n_scenes=6, seed=seed, sizes=((840, 840), (1680, 1680), (480, 640), (333, 517)))
    assert res["n_completions"] >= 40
    for row in res["rows"]:
        comp = next(c for c in bf.COMPONENTS if bf.NAMES[c] == row["component"])
        assert row["core_agree"] == row["core_n"] > 0, (seed, row)  # the rules themselves: exact agreement
        for key, count in row["disagreements_by_kind"].items():
            verdict, kind = key.split(": ", 1)
            direction = "stricter" if verdict == "samr1 stricter" else "more lenient"
            assert kind in DOCUMENTED[(comp, direction)], (seed, row["component"], key, count)


@pytest.mark.parametrize("kind", ["good", "jitter", "shifted", "far"])
def test_seg_zero_rewards_restatement_hand_cases(kind):
    """The restatement itself on a hand-built ground truth, so the agreement above is not vacuous."""
    ref = ([100, 100, 199, 149], [(150, 125), (120, 110)])
    box = {"good": [100, 100, 199, 149], "jitter": [103, 98, 201, 150], "shifted": [130, 100, 229, 149],
           "far": [500, 500, 600, 600]}[kind]
    pts = {"good": [(150, 125), (120, 110)], "jitter": [(150, 125), (120, 110)], "shifted": [(250, 125), (220, 110)],
           "far": [(550, 550), (560, 560)]}[kind]
    text = bf._wrap(bf._seg(box, *pts))
    got = bf.segzero_rewards(text, ref)
    want = {"good": (1, 1, 1, 1, 1), "jitter": (1, 1, 1, 1, 1), "shifted": (1, 1, 1, 0, 0),
            "far": (1, 1, 0, 0, 0)}[kind]
    assert tuple(got[c] for c in bf.COMPONENTS) == want


def test_peer_bench_says_what_to_pass_without_a_checkout(tmp_path, capsys):
    from samr1.cli import main

    with pytest.raises(SystemExit, match="--peer-repo PATH: a git checkout of the Seg-Zero repository"):
        bf.run(smoke=True)
    with pytest.raises(SystemExit, match="seg_restrict.py not found"):
        bf.run(smoke=True, peer_repo=str(tmp_path))
    assert main(["bench", "fidelity", "--smoke"]) != 0
    assert "--peer-repo PATH" in capsys.readouterr().err
