"""Nearest-image search: the table, the contact sheet and ``triplet search``."""

import contextlib
import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.preprocessing import FunctionTransformer

from pipelines.cli.main import main
from pipelines.search import reference_labels, save_contact_sheet, search_gallery
from tests._helpers import TINY_SHAPE, tiny_embedder
from tests._images import make_shapes, write_image_folder

# 8x8 grey "images" whose embedding is their flattened pixels.
FLAT = FunctionTransformer(lambda X: np.asarray(X, dtype=float).reshape(len(X), -1))


def _levels(values):
    """One flat 8x8 image per value (pixel value = 25 * value)."""
    return np.stack([np.full((8, 8), 25.0 * v) for v in values])


def _run(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def _red_pixels(path) -> int:
    rgb = np.asarray(Image.open(path).convert("RGB")).astype(int)
    return int(((rgb[..., 0] > 200) & (rgb[..., 1] < 60) & (rgb[..., 2] < 60)).sum())


def test_hits_are_the_nearest_gallery_images_with_distances():
    gallery, labels = _levels([0, 1, 2, 8, 9]), np.array(["dark"] * 3 + ["light"] * 2)
    hits = search_gallery(FLAT, gallery, labels, _levels([2, 8.5]), top=2)
    assert hits.columns.tolist() == ["query", "query_label", "rank", "gallery",
                                     "gallery_label", "distance"]
    # distance between flat images: 25 * |a - b| * sqrt(64 pixels)
    assert hits.values.tolist() == [
        ["query#0", "", 1, "#2", "dark", 0.0],
        ["query#0", "", 2, "#1", "dark", 200.0],
        ["query#1", "", 1, "#3", "light", 100.0],
        ["query#1", "", 2, "#4", "light", 100.0],
    ]


def test_top_is_capped_at_the_gallery_and_checked():
    hits = search_gallery(FLAT, _levels([0, 1]), ["a", "b"], _levels([0]), top=5)
    assert hits["rank"].tolist() == [1, 2]
    with pytest.raises(ValueError, match=r"top must be a positive int, got 0"):
        search_gallery(FLAT, _levels([0, 1]), ["a", "b"], _levels([0]), top=0)
    with pytest.raises(ValueError, match=r"gallery_labels must have one label per gallery "
                                         r"image \(2\), got 3"):
        search_gallery(FLAT, _levels([0, 1]), ["a", "b", "c"], _levels([0]))


def test_reference_label_is_own_label_else_majority_of_hits():
    hits = pd.DataFrame({
        "query": ["q1"] * 3 + ["q2"] * 3 + ["q3"] * 2,
        "query_label": ["", "", "", "cat", "cat", "cat", "", ""],
        "rank": [1, 2, 3, 1, 2, 3, 1, 2],
        "gallery_label": ["dog", "cat", "cat", "dog", "dog", "dog", "cow", "pig"],
    })
    assert reference_labels(hits) == {"q1": "cat", "q2": "cat", "q3": "cow"}


def test_contact_sheet_frames_mismatches_in_red(tmp_path):
    gallery = _levels([0, 1, 2, 8, 9])
    same = search_gallery(FLAT, gallery, ["a"] * 5, _levels([1]), top=3)
    mixed = search_gallery(FLAT, gallery, ["a", "a", "a", "b", "b"], _levels([4]), top=4,
                           query_labels=["a"])
    images = {f"#{i}": img for i, img in enumerate(gallery)} | {"query#0": _levels([1])[0]}
    save_contact_sheet(same, tmp_path / "same.png", images=images)
    save_contact_sheet(mixed, tmp_path / "mixed.png",
                       images={**images, "query#0": _levels([4])[0]})
    assert _red_pixels(tmp_path / "same.png") == 0
    assert _red_pixels(tmp_path / "mixed.png") > 100  # frames and titles of 2 hits
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mixed.png", "same.png"]


@pytest.fixture(scope="module")
def gallery_models(tmp_path_factory):
    from pipelines import make_triplet_pipeline, save_pipeline

    root = tmp_path_factory.mktemp("search")
    X, y = make_shapes(6, size=16)
    paths = write_image_folder(root / "gallery", X, y,
                               class_names=["sq", "disc", "cross", "bar", "tri"])
    labels = np.array([p.split("/")[-2] for p in paths])
    pipeline = make_triplet_pipeline(tiny_embedder(epochs=1), "knn")
    pipeline.fit(np.asarray(paths, dtype=object), labels)
    save_pipeline(pipeline, root / "model.joblib")
    pipeline[0].save_encoder(root / "enc.keras")
    return root, paths


def test_cli_search_finds_the_query_itself_first(gallery_models):
    root, paths = gallery_models
    code, out, err = _run(["search", root / "model.joblib", root / "gallery", paths[7],
                           "--top", "3", "--out", root / "hits.csv"])
    assert code == 0, err
    hits = pd.read_csv(root / "hits.csv")
    assert len(hits) == 3 and hits["rank"].tolist() == [1, 2, 3]
    assert hits.loc[0, "gallery"] == paths[7] and hits.loc[0, "distance"] == 0.0
    assert hits["distance"].is_monotonic_increasing
    assert f"  1. disc         0.0000  {paths[7]}" in out
    assert Image.open(root / "hits.png").format == "PNG"


def test_cli_search_with_a_keras_encoder_and_labelled_queries(gallery_models):
    root, _ = gallery_models
    code, out, err = _run(["search", root / "enc.keras", root / "gallery", root / "gallery",
                           "--top", "2", "--image-size", TINY_SHAPE[0],
                           "--sheet", root / "sheet.png"])
    assert code == 0, err
    assert "contact sheet" in out and (root / "sheet.png").is_file()
    assert "(disc)" in out  # labelled queries show their own label
    assert not (root / "hits.csv.tmp").exists()


def test_cli_search_errors_name_the_argument(gallery_models, tmp_path):
    root, paths = gallery_models
    code, _, err = _run(["search", tmp_path / "missing.joblib", root / "gallery", paths[0]])
    assert code == 1
    assert "triplet: error: model or encoder file" in err and "does not exist" in err
    code, _, err = _run(["search", root / "model.joblib", root / "gallery", paths[0],
                         "--top", "0"])
    assert code == 1 and "triplet: error: --top must be at least 1, got 0" in err
