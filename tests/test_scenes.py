"""samr1.shapes.scenes: reproducible scenes whose masks, queries and distribution are what the docstring says."""

import numpy as np
import pytest

from samr1.shapes.scenes import COLOURS, SHAPES, Scene, make_scene, nearest_colour_name


@pytest.mark.parametrize("size", [None, (192, 640), (641, 193), (257, 257)])
def test_scene_contract_and_reproducibility(size):
    seed = int(np.random.default_rng().integers(0, 10**6))  # fresh seed each run
    a, b = make_scene(seed, size=size), make_scene(seed, size=size)
    assert isinstance(a, Scene) and a.image.dtype == np.uint8 and a.image.ndim == 3 and a.image.shape[2] == 3
    h, w = a.image.shape[:2]
    if size is not None:
        assert (h, w) == size
    else:
        assert 192 <= h <= 640 and 192 <= w <= 640
    assert np.array_equal(a.image, b.image) and len(a.objects) == len(b.objects)
    taken = np.zeros((h, w), bool)
    for oa, ob in zip(a.objects, b.objects, strict=True):
        assert np.array_equal(oa.mask, ob.mask) and oa.query == ob.query
        assert oa.mask.dtype == bool and oa.mask.shape == (h, w) and oa.mask.any()
        assert not (taken & oa.mask).any(), "visible masks must not overlap (occlusion removes covered pixels)"
        taken |= oa.mask
        assert oa.shape in SHAPES and oa.colour in COLOURS
        assert oa.query.startswith(f"the {oa.colour} {oa.shape} ")


def test_different_seeds_differ_and_n_objects_is_respected():
    a, b = make_scene(1, size=(200, 240)), make_scene(2, size=(200, 240))
    assert not np.array_equal(a.image, b.image)
    for n in (1, 3, 6):
        s = make_scene(7, size=(220, 300), n_objects=n, min_visible=0.0)
        assert 1 <= len(s.objects) <= n  # a fully covered shape has no visible pixels and is dropped


def test_min_visible_filters_occluded_objects():
    total_all = total_strict = 0
    for seed in range(12):
        total_all += len(make_scene(seed, size=(200, 200), n_objects=6, min_visible=0.0).objects)
        total_strict += len(make_scene(seed, size=(200, 200), n_objects=6, min_visible=0.95).objects)
    assert total_strict < total_all


def test_distribution_is_wide():
    """Over 40 scenes: every shape occurs, object sizes span small to large, images are not all square,
    and some objects have low contrast against their surroundings."""
    shapes, fracs, aspect, contrasts = set(), [], [], []
    for seed in range(40):
        s = make_scene(10_000 + seed)
        h, w = s.image.shape[:2]
        aspect.append(w / h)
        img = s.image.astype(np.float32)
        for o in s.objects:
            shapes.add(o.shape)
            fracs.append(o.mask.sum() / (h * w))
            ring = np.zeros_like(o.mask)
            ys, xs = np.nonzero(o.mask)
            y0, y1 = max(ys.min() - 4, 0), min(ys.max() + 5, h)
            x0, x1 = max(xs.min() - 4, 0), min(xs.max() + 5, w)
            ring[y0:y1, x0:x1] = True
            ring &= ~o.mask
            if ring.sum() > 20:
                contrasts.append(float(np.linalg.norm(img[o.mask].mean(0) - img[ring].mean(0))))
    assert shapes == set(SHAPES)
    assert min(fracs) < 0.005 and max(fracs) > 0.1
    assert min(aspect) < 0.7 and max(aspect) > 1.4
    assert min(contrasts) < 40 and max(contrasts) > 150


def test_nearest_colour_name():
    for name, rgb in COLOURS.items():
        assert nearest_colour_name(rgb) == name
        assert nearest_colour_name(np.asarray(rgb) + 3) == name
