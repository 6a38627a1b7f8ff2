"""Hint JSON of any shape (issue 22, item 3): one line naming the file, exit code 2, before the model
loads and before any page is written; never a traceback, whatever the JSON holds."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mangacolor.cli import main
from mangacolor.inference.hints import HintError, load_hints, parse_hint_json
from mangacolor.io.images import encode_png

from .conftest import one_line, sha256_tree

CASES = {
    "nested_200k": "[" * 200_000 + "]" * 200_000,
    "int_5000_digits": '[{"x": 1, "y": 1, "rgb": [1, 2, 3], "radius": ' + "9" * 5000 + "}]",
    "nan_radius": '[{"x": 1, "y": 1, "rgb": [1, 2, 3], "radius": NaN}]',
    "huge_radius": '[{"x": 1, "y": 1, "rgb": [1, 2, 3], "radius": 3e9}]',
    "infinite_x": '[{"x": 1e999, "y": 1, "rgb": [1, 2, 3]}]',
    "string_x": '[{"x": "NaN", "y": 1, "rgb": [1, 2, 3]}]',
    "not_utf8": b"\xff\xfe[\x00{",
    "a_number": "5",
    "points_not_a_list": '{"points": {"x": 1}}',
    "too_many_points": json.dumps([{"x": 0, "y": 0, "rgb": [0, 0, 0]}] * 100_001),
}


@pytest.fixture()
def page_dir(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "001.png").write_bytes(encode_png(np.full((32, 24), 200, np.uint8)))
    return folder


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_hint_json_is_one_line_and_exit_2_before_anything_runs(tmp_path, page_dir, capsys, case):
    """Before: nesting raised RecursionError, 5,000 digits ValueError (tracebacks); NaN and 3e9 passed
    the check and failed a page later (cv2 and int() on NaN), after the model had loaded."""
    hints = tmp_path / "h.json"
    text = CASES[case]
    hints.write_bytes(text if isinstance(text, bytes) else text.encode())
    before = sha256_tree(tmp_path)
    code = main(["colorize", str(page_dir), "-o", str(tmp_path / "out"), "--hints", str(hints),
                 "--model", str(tmp_path / "no-model-needed"), "--quiet"])
    out, err = capsys.readouterr()
    line = one_line(err)
    assert code == 2 and out == ""
    assert line.startswith(f"error: {hints}") and len(line) < 400
    assert sha256_tree(tmp_path) == before  # nothing written, the inputs unchanged


def test_a_hint_fifo_is_refused_not_waited_on(tmp_path, page_dir, capsys):
    hints = tmp_path / "h.json"
    os.mkfifo(hints)
    code = main(["colorize", str(page_dir), "-o", str(tmp_path / "out"), "--hints", str(hints),
                 "--model", str(tmp_path / "none"), "--quiet"])
    line = one_line(capsys.readouterr().err)
    assert code == 2 and "not a regular file (FIFO)" in line


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
                    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
                    max_leaves=30)
POINT = st.fixed_dictionaries({"x": JSON | st.floats(-5, 40), "y": JSON | st.floats(-5, 40),
                               "rgb": JSON | st.lists(st.integers(-5, 300), min_size=3, max_size=3)},
                              optional={"radius": JSON | st.floats(-1, 1e12)})


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=st.one_of(JSON, st.lists(POINT, max_size=5), st.fixed_dictionaries({"points": st.lists(POINT, max_size=5)})))
def test_any_json_value_is_hints_or_a_one_line_hint_error(value):
    text = json.dumps(value)  # NaN and Infinity included: Python writes them, strangers too
    try:
        rgba = load_hints(json.loads(text), (32, 24))
    except HintError as exc:
        assert "\n" not in str(exc) and len(str(exc)) < 600
    else:
        assert rgba is None if value is None else rgba.shape == (32, 24, 4) and rgba.dtype == np.uint8
    try:
        parse_hint_json(text, "h.json")
    except HintError as exc:
        assert str(exc).startswith("h.json") and "\n" not in str(exc)


@settings(max_examples=200, deadline=None)
@given(text=st.text(alphabet='[]{}",:0123456789.eE-+ NaInfity"xyrgbadius', max_size=80))
def test_any_text_is_hints_or_a_one_line_hint_error(text):
    try:
        value = parse_hint_json(text, "h.json")
    except HintError as exc:
        assert "\n" not in str(exc)
        return
    for p in value["points"] if isinstance(value, dict) else value:
        assert math.isfinite(float(p.get("radius", 8)))
