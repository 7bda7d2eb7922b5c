"""Issue 12.4/12.5: our messages (bounded, naming the argument) instead of foreign errors."""

import pathlib

import numpy as np
import pandas as pd
import pytest

from embedder.checks import (
    check_images,
    check_non_empty,
    check_two_classes,
    column_labels,
    few,
    is_paths,
)
from embedder.data.sampling import PKSampler, check_class_sizes


def test_few():
    assert few([]) == ""
    assert few(["a", "b"]) == "'a', 'b'"
    assert few(np.arange(20), n=3) == "0, 1, 2 and 17 more (20 in all)"
    assert few([np.str_("x")]) == "'x'"
    assert few([(1, 2)], formatter=lambda p: f"{p[0]}->{p[1]}") == "1->2"


def test_column_labels_and_two_classes():
    assert column_labels(np.array([[3], [4]])).tolist() == [3, 4]
    assert column_labels(pd.Series(["a", "b"])).tolist() == ["a", "b"]
    with pytest.raises(ValueError, match=r"y must be 1-D labels \(or a single column\), got an "
                       r"array of shape \(2, 2\)"):
        column_labels(np.zeros((2, 2)))
    assert check_two_classes(["b", "a", "b"]).tolist() == ["a", "b"]
    with pytest.raises(ValueError, match=r"^labels must hold at least 2 classes, got 1 \('a'\)$"):
        check_two_classes(["a", "a"], name="labels")
    with pytest.raises(ValueError, match=r"y must hold at least 2 classes, got none"):
        check_two_classes([])


def test_empty_X_is_named():
    with pytest.raises(ValueError, match=r"^X has 0 images; expected at least 1 image"):
        check_non_empty(np.zeros((0, 8, 8, 3)))
    with pytest.raises(ValueError, match=r"^paths has 0 images"):
        check_non_empty([], name="paths")
    assert check_non_empty(["a.png"]) == 1


def test_zero_height_images():
    with pytest.raises(ValueError, match=r"X must hold images of at least 1 x 1 pixels and 1 "
                       r"channel, got shape \(3, 0, 8, 3\)"):
        check_images(np.zeros((3, 0, 8, 3), np.uint8))


@pytest.mark.parametrize(
    ("X", "expected"),
    [
        (["a.png", pathlib.Path("b.png")], True),
        (("a.png",), True),
        (np.array(["a.png", "b.png"]), True),
        (np.array(["a.png"], dtype=object), True),
        (pd.Series(["a.png", "b.png"]), True),  # was "Expected a 2-dimensional container"
        (pd.Index(["a.png"]), True),
        ([], False),
        (pd.Series([], dtype=object), False),
        (["a.png", 3], False),
        (np.zeros((2, 4)), False),
        (pd.Series([1.0, 2.0]), False),
        (pd.DataFrame({"path": ["a.png"]}), False),
        ("a.png", False),
    ],
)
def test_is_paths(X, expected):
    assert is_paths(X) is expected


def test_messages_about_many_classes_stay_short():
    labels = np.repeat(np.arange(5000), 1)  # 5000 classes of one image each
    with pytest.raises(ValueError) as info:
        check_class_sizes(labels)
    message = str(info.value)
    assert len(message) < 200, message
    assert message.endswith("too few in class(es) {0: 1, 1: 1, 2: 1, 3: 1, 4: 1 and 4995 more "
                            "(5000 in all)}")
    with pytest.raises(ValueError, match=r"got 1 \(\[7\]\)$"):
        check_class_sizes([7, 7])
    small = np.concatenate([np.repeat(np.arange(3000), 2), np.repeat([9999], 8)])
    with pytest.warns(UserWarning) as record:
        PKSampler(small, 2, samples_per_class=4, random_state=0)
    assert len(str(record[0].message)) < 200
    assert "and 2995 more (3000 in all)" in str(record[0].message)
