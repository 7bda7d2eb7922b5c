import json
import math

import numpy as np
import pytest

from pipelines.text import jsonable, last_value, markdown_table, natural_key


def test_jsonable_makes_strict_json_values():
    value = {1: (np.float32(0.5), np.int64(3), np.bool_(True)), "a": [math.nan, -math.inf],
             "arr": np.arange(2), "s": np.str_("x"), "none": None, "obj": {1, 2}.__class__}
    out = jsonable(value)
    assert out == {"1": [0.5, 3, True], "a": [None, None], "arr": [0, 1], "s": "x",
                   "none": None, "obj": "<class 'set'>"}
    assert type(out["1"][1]) is int and type(out["s"]) is str
    json.dumps(out, allow_nan=False)  # strict JSON


def test_markdown_table_escapes_cells_and_checks_row_lengths():
    assert markdown_table(["a", "b"], [[1, "x|y"], [2.5, "two\nlines"]]) == (
        "| a | b |\n|---|---|\n| 1 | x\\|y |\n| 2.5 | two lines |\n")
    assert markdown_table(["only"], []) == "| only |\n|---|\n"
    with pytest.raises(ValueError, match=r"rows\[1\] must have 2 cells like header, got 3"):
        markdown_table(["a", "b"], [[1, 2], [1, 2, 3]])


def test_natural_key_orders_numbers_by_value():
    names = ["s10", "s2", "s1", "s", "S3", "img_20_b", "img_3_a", "10", "9", "s01"]
    assert sorted(names, key=natural_key) == ["9", "10", "img_3_a", "img_20_b", "s", "s01",
                                              "s1", "s2", "S3", "s10"]
    assert sorted([10, 9, 100], key=natural_key) == [9, 10, 100]
    assert sorted(["A", "a"], key=natural_key) == ["A", "a"]  # ties: raw string order


def test_last_value_of_a_history():
    assert last_value({"loss": [0.5, np.float32(0.25)]}, "loss") == 0.25
    assert last_value({"loss": [0.5, None]}, "loss") is None
    assert last_value({"loss": [0.5, math.nan]}, "loss") is None
    assert last_value({"loss": []}, "loss") is None and last_value({}, "val") is None
    assert last_value({"loss": np.asarray([1.0, 2.0])}, "loss") == 2.0
