"""RESTATEMENT (tests only) of the published coordinate scaling; not the peer's code."""
import not_a_module_the_bench_must_not_import  # noqa: F401 - the bench reads the functions without running imports


def scale_box_coordinates(box, fx, fy):
    return [int(v * f + 0.5) for v, f in zip(box, (fx, fy, fx, fy), strict=True)]


def scale_point_coordinates(point, fx, fy):
    return [int(point[0] * fx + 0.5), int(point[1] * fy + 0.5)]
