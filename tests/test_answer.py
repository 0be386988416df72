"""samr1.answer.parse_answer: accepted forms, rescaling, clipping, every rejection code, never raising."""

from __future__ import annotations

import json
import math
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from samr1.answer import (
    MAX_ANSWER_CHARS,
    MAX_DEPTH,
    MAX_OBJECTS,
    MAX_POINTS,
    REASON_CODES,
    Answer,
    extract_answer_block,
    parse_answer,
)

SEGZERO = '{"bbox": [100, 200, 300, 400], "points_1": [150, 250], "points_2": [200, 300]}'


def wrap(payload: str, think: str = "the object is the red chair") -> str:
    return f"<think>{think}</think>\n<answer>{payload}</answer>"


def rel_close(a, b, tol=1e-12):
    return all(math.isclose(x, y, rel_tol=tol, abs_tol=tol) for x, y in zip(a, b, strict=True))


# ------------------------------------------------------------------------------ round trips and rescaling
@pytest.mark.parametrize("image_size", [(840, 840), (480, 640), (1080, 1920), (7, 13), (1, 1), (2000, 333)])
@pytest.mark.parametrize("model_size", [(840, 840), (1000, 500), (224, 336)])
def test_round_trip_rescales_x_by_w_and_y_by_h(image_size, model_size):
    rng = random.Random(hash((image_size, model_size)) & 0xFFFF)
    mh, mw = model_size
    H, W = image_size
    for _ in range(20):
        x1, x2 = sorted(rng.uniform(0, mw) for _ in range(2))
        y1, y2 = sorted(rng.uniform(0, mh) for _ in range(2))
        if x2 - x1 < 1 or y2 - y1 < 1:
            continue
        pts = [[rng.uniform(0, mw - 1), rng.uniform(0, mh - 1)] for _ in range(rng.randint(1, 5))]
        text = wrap(json.dumps({"bbox": [x1, y1, x2, y2], "points": pts}))
        a = parse_answer(text, image_size, model_size)
        assert a.ok, a.reason
        sx, sy = W / mw, H / mh
        assert rel_close(a.bbox, (x1 * sx, y1 * sy, x2 * sx, y2 * sy), 1e-9)
        for (px, py), (qx, qy) in zip(pts, a.points, strict=True):
            assert math.isclose(qx, min(px * sx, W - 1), rel_tol=1e-9, abs_tol=1e-9)
            assert math.isclose(qy, min(py * sy, H - 1), rel_tol=1e-9, abs_tol=1e-9)
        assert a.labels == [1] * len(pts)


def test_segzero_example_exact_values_non_square():
    a = parse_answer(wrap(SEGZERO), image_size=(420, 1680))  # H=420 (y x0.5), W=1680 (x x2)
    assert a.ok and a.reason is None and a.code is None
    assert a.bbox == (200.0, 100.0, 600.0, 200.0)
    assert a.points == [(300.0, 125.0), (400.0, 150.0)]
    assert a.think == "the object is the red chair"
    assert a.syntax == "json" and not a.fenced


def test_default_image_size_is_the_model_frame():
    a = parse_answer(wrap(SEGZERO))
    assert a.bbox == (100.0, 200.0, 300.0, 400.0)
    assert parse_answer(wrap(SEGZERO), (840, 840)) == a


# ------------------------------------------------------------------------------ accepted forms
BOX = [10, 20, 110, 220]
ACCEPTED = {
    "segzero": ('{"bbox": [10, 20, 110, 220], "points_1": [30, 40], "points_2": [50, 60]}', [(30, 40), (50, 60)]),
    "points_list": ('{"bbox": [10, 20, 110, 220], "points": [[30, 40], [50, 60], [70, 80]]}',
                    [(30, 40), (50, 60), (70, 80)]),
    "points_single": ('{"bbox": [10, 20, 110, 220], "points": [30, 40]}', [(30, 40)]),
    "visionreasoner_one": ('{"bbox_2d": [10, 20, 110, 220], "point_2d": [30, 40]}', [(30, 40)]),
    "visionreasoner_many": ('{"bbox_2d": [10, 20, 110, 220], "point_2d": [[30, 40], [50, 60]]}', [(30, 40), (50, 60)]),
    "list_first_object": ('[{"bbox_2d": [10, 20, 110, 220], "point_2d": [30, 40]}, {"bbox_2d": [0, 0, 5, 5], '
                          '"point_2d": [1, 1]}]', [(30, 40)]),  # bbox/points: the FIRST object's
    "floats": ('{"bbox": [10.0, 20.0, 110.0, 220.0], "points": [[30.5, 40.25]]}', [(30.5, 40.25)]),
    "numbered_order": ('{"bbox": [10, 20, 110, 220], "points_10": [9, 9], "points_2": [50, 60], "points_1": [30, 40]}',
                       [(30, 40), (50, 60), (9, 9)]),
    "extra_keys_ignored": ('{"label": "chair", "bbox": [10, 20, 110, 220], "points": [[30, 40]], "score": true}',
                           [(30, 40)]),
    "points_beat_point_2d": ('{"bbox": [10, 20, 110, 220], "points": [[30, 40]], "point_2d": [1, 1]}', [(30, 40)]),
    "bbox_beats_bbox_2d": ('{"bbox": [10, 20, 110, 220], "bbox_2d": [0, 0, 1, 1], "points": [[30, 40]]}', [(30, 40)]),
}


@pytest.mark.parametrize("name", sorted(ACCEPTED))
def test_accepted_key_forms(name):
    payload, pts = ACCEPTED[name]
    a = parse_answer(wrap(payload))
    assert a.ok, a.reason
    assert a.bbox == tuple(float(v) for v in BOX)
    assert a.points == [(float(x), float(y)) for x, y in pts]
    assert a.labels == [1] * len(pts)


@pytest.mark.parametrize("payload,syntax,fenced", [
    ("```json\n" + SEGZERO + "\n```", "json", True),
    ("```\n" + SEGZERO + "\n```", "json", True),
    ("```json " + SEGZERO + "```", "json", True),
    ("  \n```JSON\n" + SEGZERO + "\n```  \n", "json", True),
    ("{'bbox': [100, 200, 300, 400], 'points_1': [150, 250], 'points_2': [200, 300]}", "python_literal", False),
    ("{'bbox': (100, 200, 300, 400), 'points_1': (150, 250), 'points_2': (200, 300),}", "python_literal", False),
    ('{"bbox": [100, 200, 300, 400,], "points_1": [150, 250], "points_2": [200, 300],}', "json_trailing_comma", False),
    ("{'bbox': [100, 200, 300, 400], 'points_1': [150, 250], 'points_2': [200, 300], 'x': True, 'n': None}",
     "python_literal", False),
    ("{'bbox': [100, 200, 300, 400], 'points': [[150, 250], [200, 300]], 'note': 'it\"s (x)'}", "python_literal",
     False),
    ('{"bbox": [100, 200, 300, 400,], "points_1": [150, 250], "points_2": [200, 300], "x": true,}',
     "json_trailing_comma", False),
    ("```python\n{'bbox': [100, 200, 300, 400], 'points': [[150, 250], [200, 300]]}\n```", "python_literal", True),
])
def test_fences_single_quotes_trailing_commas(payload, syntax, fenced):
    a = parse_answer(wrap(payload))
    assert a.ok, a.reason
    assert a.bbox == (100.0, 200.0, 300.0, 400.0)
    assert a.points == [(150.0, 250.0), (200.0, 300.0)]
    assert a.syntax == syntax and a.fenced == fenced


def test_last_answer_block_wins_and_unclosed_tail_is_ignored():
    first = '{"bbox": [0, 0, 10, 10], "points": [[1, 1]]}'
    text = f"<answer>{first}</answer> more thinking <answer>{SEGZERO}</answer>"
    assert parse_answer(text).bbox == (100.0, 200.0, 300.0, 400.0)
    # a truncated trailing block does not hide the complete one before it
    assert parse_answer(text + " <answer>{\"bbox\": [").bbox == (100.0, 200.0, 300.0, 400.0)
    # a bad last block fails even when an earlier one was good (the LAST block is the answer)
    assert parse_answer(f"<answer>{SEGZERO}</answer><answer>oops</answer>").code == "invalid_json"
    assert extract_answer_block("a<answer>x</answer>b<answer>y</answer>c") == "y"
    assert extract_answer_block("<answer>x") is None and extract_answer_block("x</answer>") is None


def test_think_extraction():
    assert parse_answer("<think>  a\nb </think><answer>nope</answer>").think == "a\nb"
    assert parse_answer("<answer>" + SEGZERO + "</answer>").think is None
    assert parse_answer("<think>unclosed <answer>" + SEGZERO + "</answer>").think is None
    assert parse_answer("no tags at all").think is None


# ------------------------------------------------------------------------------ sorting, clipping, caps
def test_corners_are_sorted():
    a = parse_answer(wrap('{"bbox": [300, 400, 100, 200], "points": [[150, 250]]}'))
    assert a.ok and a.bbox == (100.0, 200.0, 300.0, 400.0)


def test_box_clipped_to_image_and_points_to_last_pixel():
    text = wrap('{"bbox": [-50, -10, 900, 1000], "points": [[-5, 900], [839.9, 839.9], [1e6, -1e6]]}')
    a = parse_answer(text, image_size=(420, 1680))
    assert a.ok
    assert a.bbox == (0.0, 0.0, 1680.0, 420.0)
    assert a.points == [(0.0, 419.0), (1679.0, 419.0), (1679.0, 0.0)]
    # in the model frame: box to [0, 840], points to [0, 839]
    b = parse_answer(text)
    assert b.bbox == (0.0, 0.0, 840.0, 840.0)
    assert b.points == [(0.0, 839.0), (839.0, 839.0), (839.0, 0.0)]


def test_point_cap_is_a_rejection():
    pts = [[i % 800, i % 700] for i in range(MAX_POINTS)]
    assert parse_answer(wrap(json.dumps({"bbox": BOX, "points": pts}))).ok
    assert len(parse_answer(wrap(json.dumps({"bbox": BOX, "points": pts}))).points) == MAX_POINTS
    a = parse_answer(wrap(json.dumps({"bbox": BOX, "points": pts + [[1, 1]]})))
    assert not a.ok and a.code == "too_many_points" and a.points == []


def test_require_points_switch():
    text = wrap('{"bbox": [10, 20, 110, 220]}')
    assert parse_answer(text).code == "missing_points"
    a = parse_answer(text, require_points=False)
    assert a.ok and a.points == [] and a.labels == []


# ------------------------------------------------------------------------------ every rejection reason
REJECTIONS = {
    "no_answer_block": ["<think>x</think>", "<answer>{}", '{"bbox": [1, 2, 3, 4]}', "</answer><answer>"],
    "answer_too_long": ["<answer>" + " " * (MAX_ANSWER_CHARS + 1) + "</answer>"],
    "empty_answer": ["<answer></answer>", "<answer>  \n </answer>", "<answer>```json\n```</answer>"],
    "too_deep": ["<answer>" + "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1) + "</answer>",
                 "<answer>" + "{" * 5000 + "</answer>", "<answer>" + "(" * 9 + "1" + ")" * 9 + "</answer>"],
    "invalid_json": ["<answer>bbox: 1 2 3 4</answer>", '<answer>The box is {"bbox": [1, 2, 3, 4]}</answer>',
                     "<answer>{'bbox': [1, 2, 3, 4]</answer>", "<answer>" + "1+" * 3000 + "1</answer>",
                     "<answer>{\"bbox\": __import__('os').system('true')}</answer>"],
    "not_object": ["<answer>[1, 2, 3, 4]</answer>", "<answer>42</answer>",
                   '<answer>"bbox"</answer>', "<answer>{1, 2}</answer>", "<answer>[[1, 2]]</answer>"],
    "missing_bbox": ['<answer>{"box": [1, 2, 3, 4], "points": [[1, 2]]}</answer>', "<answer>{}</answer>",
                     '<answer>[{"points": [[1, 2]]}, {"bbox": [1, 2, 3, 4]}]</answer>'],
    "bad_bbox": ['<answer>{"bbox": [1, 2, 3], "points": [[1, 2]]}</answer>',
                 '<answer>{"bbox": [1, 2, 3, 4, 5], "points": [[1, 2]]}</answer>',
                 '<answer>{"bbox": [1, 2, 3, true], "points": [[1, 2]]}</answer>',
                 '<answer>{"bbox": ["1", 2, 3, 4], "points": [[1, 2]]}</answer>',
                 '<answer>{"bbox": [1, 2, 3, null], "points": [[1, 2]]}</answer>',
                 '<answer>{"bbox": [[1, 2], [3, 4]], "points": [[1, 2]]}</answer>',
                 '<answer>{"bbox": "1, 2, 3, 4", "points": [[1, 2]]}</answer>',
                 "<answer>{'bbox': [1, 2, 3, 1j], 'points': [[1, 2]]}</answer>"],
    "non_finite": ['<answer>{"bbox": [NaN, 2, 3, 4], "points": [[1, 2]]}</answer>',
                   '<answer>{"bbox": [1, 2, Infinity, 4], "points": [[1, 2]]}</answer>',
                   '<answer>{"bbox": [1, 2, -Infinity, 4], "points": [[1, 2]]}</answer>',
                   '<answer>{"bbox": [1, 2, 1e999, 4], "points": [[1, 2]]}</answer>',
                   '<answer>{"bbox": [1, 2, ' + "9" * 400 + ', 4], "points": [[1, 2]]}</answer>',
                   '<answer>{"bbox": [1, 2, 3, 4], "points": [[1, NaN]]}</answer>'],
    "zero_area_box": ['<answer>{"bbox": [900, 10, 1000, 20], "points": [[1, 2]]}</answer>',
                      '<answer>{"bbox": [-20, 10, -10, 20], "points": [[1, 2]]}</answer>',
                      '<answer>{"bbox": [10, -9, 20, -0.5], "points": [[1, 2]]}</answer>',
                      '<answer>{"bbox": [10, 839.5, 20, 900], "points": [[1, 2]]}</answer>',
                      '<answer>[{"bbox": [1, 2, 3, 4], "points": [[1, 2]]}, {"bbox": [850, 2, 860, 4], '
                      '"points": [[1, 2]]}]</answer>'],
    "missing_points": ['<answer>{"bbox": [1, 2, 3, 4]}</answer>', '<answer>{"bbox": [1, 2, 3, 4], "points": []}</answer>',
                       '<answer>{"bbox_2d": [1, 2, 3, 4], "point_2d": []}</answer>'],
    "bad_points": ['<answer>{"bbox": [1, 2, 3, 4], "points": [[1, 2, 3]]}</answer>',
                   '<answer>{"bbox": [1, 2, 3, 4], "points": [[1]]}</answer>',
                   '<answer>{"bbox": [1, 2, 3, 4], "points": [[1, 2], [false, 3]]}</answer>',
                   '<answer>{"bbox": [1, 2, 3, 4], "points": "1, 2"}</answer>',
                   '<answer>{"bbox": [1, 2, 3, 4], "points": 5}</answer>',
                   '<answer>{"bbox": [1, 2, 3, 4], "points_1": [1, 2], "points_2": [3]}</answer>',
                   '<answer>{"bbox": [1, 2, 3, 4], "point_2d": [[1, 2], 3]}</answer>',
                   '<answer>{"bbox": [1, 2, 3, 4], "points": [{"x": 1, "y": 2}]}</answer>'],
    "too_many_points": ['<answer>{"bbox": [1, 2, 3, 4], "points": ' + json.dumps([[1, 2]] * (MAX_POINTS + 1)) + "}</answer>",
                        "<answer>" + json.dumps([{"bbox": [1, 2, 3, 4], "points": [[1, 2]] * 40}] * 2) + "</answer>"],
    "too_many_objects": ["<answer>" + json.dumps([{"bbox": [1, 2, 3, 4], "points": [[1, 2]]}] * (MAX_OBJECTS + 1))
                         + "</answer>"],
}


def test_rejection_table_covers_every_code():
    assert set(REJECTIONS) | {"not_text"} == set(REASON_CODES)


@pytest.mark.parametrize("code,text", [(c, t) for c, ts in REJECTIONS.items() for t in ts])
def test_rejections(code, text):
    a = parse_answer(text, image_size=(480, 640))
    assert not a.ok
    assert a.code == code, a.reason
    assert a.reason.split(":")[0] == code
    assert a.bbox is None and a.points == [] and a.labels == []


@pytest.mark.parametrize("value", [None, 3, b"<answer>{}</answer>", ["<answer>"], {"text": "x"}])
def test_non_str_input(value):
    a = parse_answer(value)
    assert not a.ok and a.code == "not_text"


@pytest.mark.parametrize("bad", [(0, 10), (10, -1), (float("nan"), 3), (3,), "840", None, (True, 3)])
def test_bad_sizes_raise_value_error(bad):
    with pytest.raises(ValueError, match="size"):
        parse_answer(wrap(SEGZERO), image_size=bad) if bad is not None else parse_answer(wrap(SEGZERO), model_size=bad)


# ------------------------------------------------------------------------------ hostile inputs
def test_hostile_inputs_do_not_raise_and_stay_bounded():
    cases = [
        "x" * 200_000,
        "<answer>" * 50_000,
        "</answer>" * 50_000,
        "<answer>" + "[" * 200_000 + "</answer>",
        "<answer>" + "{\"a\":" * 5000 + "1" + "}" * 5000 + "</answer>",
        "<think>" + "\ud800\udfff\x00" * 10_000 + "</think><answer>" + SEGZERO + "</answer>",
        "\x00<answer>\x00" + SEGZERO + "\x00</answer>",
        "<answer>{\"bbox\": [1, 2, 3, 4], \"\ud800\": \"\x00\", \"points\": [[1, 2]]}</answer>",
        "<answer>" + "(" * 300 + ")" * 300 + "</answer>",
        "<answer>" + "-" * 5000 + "1</answer>",
        "<answer>" + "9" * 8000 + "</answer>",
        "<answer>" + ("<answer>" + SEGZERO + "</answer>") * 10_000,
    ]
    for text in cases:
        a = parse_answer(text, image_size=(33, 17))
        assert isinstance(a, Answer)
        assert (a.ok and a.reason is None) or (not a.ok and a.code in REASON_CODES)
    # NUL inside the JSON string keys/values are fine; a NUL outside strings is invalid JSON but never raises
    assert parse_answer(cases[6]).code == "invalid_json"
    assert parse_answer(cases[7]).ok
    assert parse_answer(cases[-1]).ok  # many blocks: the last complete one is used


_FRAGMENTS = [
    "<think>", "</think>", "<answer>", "</answer>", SEGZERO, '{"bbox": ', "[1, 2, 3, 4]", '"points": [[1, 2]]',
    "```json\n", "```", "{", "}", "[", "]", "(", ")", ",", "'", '"', "\\", "\x00", "\ud800", "\udc00", "NaN",
    "Infinity", "1e999", "-0", "true", "null", " ", "\n", "[" * 50, "{" * 50, "bbox_2d", "point_2d", "points_1",
]

hostile_text = st.lists(st.one_of(st.sampled_from(_FRAGMENTS), st.text(max_size=20),
                                  st.characters(codec=None, categories=("Cs", "Cc", "Lo", "Nd", "P"))),
                        max_size=40).map("".join)


def _valid_payload(box, pts, key_form):
    if key_form == 0:
        return json.dumps({"bbox": box, "points": pts})
    if key_form == 1:
        return json.dumps({"bbox_2d": box, "point_2d": pts})
    d = {"bbox": box}
    d.update({f"points_{i + 1}": p for i, p in enumerate(pts)})
    return repr(d)  # Python literal form


coord = st.floats(min_value=-2000, max_value=3000, allow_nan=False, allow_infinity=False) | st.integers(-2000, 3000)
sizes = st.tuples(st.integers(1, 4000), st.integers(1, 4000))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=hostile_text, image_size=sizes)
def test_property_never_raises_on_arbitrary_text(text, image_size):
    a = parse_answer(text, image_size=image_size)
    _check_answer(a, image_size)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(box=st.lists(coord, min_size=4, max_size=4), pts=st.lists(st.lists(coord, min_size=2, max_size=2), min_size=1,
                                                                   max_size=5),
       key_form=st.integers(0, 2), prefix=hostile_text, suffix=hostile_text, image_size=sizes,
       model_size=st.sampled_from([(840, 840), (1000, 500), (64, 96)]))
def test_property_valid_answers_inside_junk(box, pts, key_form, prefix, suffix, image_size, model_size):
    payload = _valid_payload(box, pts, key_form)
    while "</answer>" in suffix:  # one pass of replace() can create a new tag from its two halves
        suffix = suffix.replace("</answer>", "")
    text = prefix + "<answer>" + payload + "</answer>" + suffix
    a = parse_answer(text, image_size=image_size, model_size=model_size)
    _check_answer(a, image_size)
    # whatever surrounds it, the answer is the payload: ok exactly when the box (inclusive pixel indices)
    # covers a pixel of the model frame
    mh, mw = model_size
    x1, x2 = sorted((box[0], box[2]))
    y1, y2 = sorted((box[1], box[3]))
    expect_ok = x2 >= 0 and y2 >= 0 and x1 <= mw - 1 and y1 <= mh - 1
    assert a.ok == expect_ok, (a.reason, box)
    if not a.ok:
        assert a.code == "zero_area_box"
    else:
        assert len(a.points) == len(pts)
    # ok and reason never depend on the image size (the format reward parses in the model frame)
    b = parse_answer(text, image_size=None, model_size=model_size)
    assert (b.ok, b.reason) == (a.ok, a.reason)


def _check_answer(a, image_size):
    H, W = image_size
    assert isinstance(a, Answer)
    if not a.ok:
        assert a.code in REASON_CODES and a.bbox is None and a.points == []
        return
    x1, y1, x2, y2 = a.bbox
    assert all(math.isfinite(v) for v in a.bbox)
    assert 0 <= x1 <= x2 <= W and 0 <= y1 <= y2 <= H  # x1 == x2: a one-pixel-wide box
    assert 1 <= len(a.points) <= MAX_POINTS
    for x, y in a.points:
        assert 0 <= x <= max(W - 1, 0) and 0 <= y <= max(H - 1, 0)
    assert a.labels == [1] * len(a.points)


# ------------------------------------------------------------------------------ inclusive boxes, model-frame values
@pytest.mark.parametrize("box", [[5, 2, 5, 4], [1, 7, 3, 7], [7, 7, 7, 7], [1, 2, 1.0000001, 4], [0, 0, 0, 0],
                                 [839, 839, 839, 839]])
def test_one_pixel_boxes_are_valid(box):
    """Inclusive pixel indices: x1 == x2 names one column, a valid box for a one-pixel-wide object."""
    a = parse_answer(wrap(json.dumps({"bbox": box, "points": [[box[0], box[1]]]})), image_size=(420, 1680))
    assert a.ok, a.reason
    assert a.model_bbox == tuple(float(v) for v in box)
    assert rel_close(a.bbox, (box[0] * 2, box[1] * 0.5, box[2] * 2, box[3] * 0.5))


def test_model_frame_values_are_sorted_but_not_clipped():
    text = wrap('{"bbox": [900, -10, 100, 300], "points_1": [1000, -5], "points_2": [3.5, 4.25]}')
    a = parse_answer(text, image_size=(480, 640))
    assert a.ok
    assert a.model_bbox == (100.0, -10.0, 900.0, 300.0)
    assert a.model_points == [(1000.0, -5.0), (3.5, 4.25)]
    assert a.bbox == (100 * 640 / 840, 0.0, 640.0, 300 * 480 / 840)  # the SAM prompt is clipped
    assert len(a.objects) == 1 and a.objects[0].model_bbox == a.model_bbox and a.per_object() == [a]


# ------------------------------------------------------------------------------ multi-object answers
MULTI = ('[{"bbox_2d": [0, 0, 20, 20], "point_2d": [5, 5]}, {"bbox_2d": [100, 200, 300, 400], "point_2d": [150, 250]},'
         ' {"bbox_2d": [500, 500, 600, 700], "point_2d": [[550, 600], [560, 610]]}]')


def test_multi_object_union_keeps_every_object_in_order():
    a = parse_answer(wrap(MULTI), image_size=(420, 1680))
    assert a.ok
    assert [o.model_bbox for o in a.objects] == [(0.0, 0.0, 20.0, 20.0), (100.0, 200.0, 300.0, 400.0),
                                                 (500.0, 500.0, 600.0, 700.0)]
    assert [o.model_points for o in a.objects] == [[(5.0, 5.0)], [(150.0, 250.0)], [(550.0, 600.0), (560.0, 610.0)]]
    assert a.bbox == a.objects[0].bbox and a.points == a.objects[0].points  # the contract fields: first object
    assert a.objects[1].bbox == (200.0, 100.0, 600.0, 200.0)  # x * 1680/840, y * 420/840
    parts = a.per_object()
    assert [p.bbox for p in parts] == [o.bbox for o in a.objects]
    assert all(p.ok and len(p.objects) == 1 for p in parts)


def test_multi_object_first_is_an_explicit_choice():
    a = parse_answer(wrap(MULTI), multi_object="first")
    assert a.ok and len(a.objects) == 1 and a.model_bbox == (0.0, 0.0, 20.0, 20.0)
    # "first" ignores later objects unchecked; "union" checks every one and names the bad one
    bad = '[{"bbox_2d": [0, 0, 20, 20], "point_2d": [5, 5]}, {"bbox_2d": [1, 2], "point_2d": [5, 5]}]'
    assert parse_answer(wrap(bad), multi_object="first").ok
    u = parse_answer(wrap(bad))
    assert not u.ok and u.code == "bad_bbox" and "objects[1]" in u.reason
    with pytest.raises(ValueError, match="multi_object"):
        parse_answer(wrap(MULTI), multi_object="all")


def test_garbled_python_literal_is_a_parse_failure_without_a_warning():
    import warnings

    text = "<think>x</think><answer>{'bbox': [1, 2, 3, 4and 5], 'points_1': [1, 2], 'points_2': [3, 4]}</answer>"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # record every warning the parser lets out
        a = parse_answer(text, image_size=(100, 100))
    assert not a.ok and a.code == "invalid_json"
    assert [str(w.message) for w in caught] == []


@pytest.mark.parametrize("text", ["<think>none here</think><answer>[]</answer>", "<answer> [ ] </answer>",
                                  "<answer>```json\n[]\n```</answer>", "<answer>()</answer>"])
def test_empty_list_is_the_answer_no_object(text):
    """``[]`` says "there is no such object": it parses (ok), names no object, and its mask is empty."""
    for size in (None, (480, 640)):
        a = parse_answer(text, size)
        assert a.ok and a.no_object and a.reason is None and a.code is None
        assert a.bbox is None and a.points == [] and a.objects == () and a.per_object() == []
    one = parse_answer('<answer>[{"bbox_2d": [1, 2, 30, 40], "point_2d": [5, 6]}]</answer>')
    assert one.ok and not one.no_object
    assert not parse_answer("<answer>[[]]</answer>").no_object  # a list holding a non-object is no answer
    # answers built by hand: a points-only prompt (no box) is a prompt, not "no object"
    from samr1.answer import Answer

    assert not Answer(ok=True, points=[(3.0, 4.0)], labels=[1]).no_object and Answer(ok=True).no_object
    assert not Answer(ok=False).no_object
