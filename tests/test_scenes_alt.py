"""samr1.shapes.scenes_alt: the independent check generator keeps the Scene contract (reproducible, exact
disjoint visible masks, queries) and draws every shape it names; `samr1 shapes-check` runs both generators
end to end."""

import json

import numpy as np

from samr1.shapes.scenes import COLOURS, Scene
from samr1.shapes.scenes_alt import ALT_SHAPES, make_alt_scene


def test_contract_and_reproducibility():
    seeds = [int(v) for v in np.random.default_rng().integers(0, 10**6, 5)]
    for seed in seeds:  # fresh seeds each run; a failure names its seed
        a, b = make_alt_scene(seed), make_alt_scene(seed)
        assert isinstance(a, Scene) and a.image.dtype == np.uint8 and a.image.shape[2] == 3
        h, w = a.image.shape[:2]
        assert 200 <= h <= 720 and 200 <= w <= 720, seed
        assert np.array_equal(a.image, b.image) and len(a.objects) == len(b.objects), seed
        taken = np.zeros((h, w), bool)
        for oa, ob in zip(a.objects, b.objects, strict=True):
            assert np.array_equal(oa.mask, ob.mask) and oa.query == ob.query == f"the {oa.colour} {oa.shape}", seed
            assert oa.mask.shape == (h, w) and oa.mask.sum() >= 30 and oa.shape in ALT_SHAPES, seed
            assert oa.colour in COLOURS, seed
            assert not (taken & oa.mask).any(), seed
            taken |= oa.mask


def test_every_shape_occurs_and_objects_stand_out():
    shapes, gaps = set(), []
    for seed in range(40):
        s = make_alt_scene(seed, n_objects=1)
        for o in s.objects:
            shapes.add(o.shape)
            img = s.image.astype(np.float32)
            gaps.append(np.linalg.norm(img[o.mask].mean(0) - img[~o.mask].mean(0)))
    assert shapes == set(ALT_SHAPES)
    assert np.median(gaps) > 60  # solid shapes at RGB distance >= 80 from the base, noise averages out


def test_shapes_check_help_exits_0(capsys):
    from samr1.cli import main

    assert main(["shapes-check", "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: samr1 shapes-check") and all(f in out for f in ("--scenes", "--ceiling", "--json"))


def test_shapes_check_runs_both_generators(tmp_path, capsys):
    from samr1.cli import main

    out = tmp_path / "r.json"
    assert main(["shapes-check", "--scenes", "2", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4, lines  # one line per generator and output mode, as they finish
    for line, (gen, mode) in zip(lines, [(g, m) for g in ("own", "alt") for m in ("multimask", "single_mask")],
                                 strict=True):
        r = res[gen][mode]
        assert r["scenes"] == 2 and r["objects"] > 0 and 0.0 <= r["box"] <= 1.0
        # the printed numbers are the written ones
        assert line.split()[:2] == [gen, mode] and f"box {r['box']:.3f}" in line and f"({r['objects']} objects" in line
    # the shipped model, not a random one, was evaluated (random weights score ~0.0-0.05)
    assert res["own"]["multimask"]["box"] > 0.4 and res["alt"]["multimask"]["box"] > 0.4, res
