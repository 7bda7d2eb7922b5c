import numpy as np
import pytest

from pipelines.plots import (
    plot_confusion_matrix,
    plot_embeddings_2d,
    plot_training_curves,
    project_2d,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _png(path):
    data = open(path, "rb").read()
    assert data[:8] == PNG_MAGIC
    return len(data)


def test_confusion_matrix_png(tmp_path):
    path = plot_confusion_matrix([[3, 1], [0, 4]], ["cat", "dog"], tmp_path / "a" / "cm.png")
    assert path == str(tmp_path / "a" / "cm.png") and _png(path) > 1000
    with pytest.raises(ValueError, match=r"matrix must have shape \(3, 3\) to match "
                                         r"class_names, got \(2, 2\)"):
        plot_confusion_matrix([[3, 1], [0, 4]], ["a", "b", "c"], tmp_path / "x.png")


def test_embeddings_png(tmp_path):
    points = np.random.default_rng(0).normal(size=(30, 2))
    labels = np.repeat(["a", "b", "c"], 10)
    assert _png(plot_embeddings_2d(points, labels, tmp_path / "e.png", title="t")) > 1000
    with pytest.raises(ValueError, match=r"labels must have one entry per point \(30\), got 29"):
        plot_embeddings_2d(points, labels[:29], tmp_path / "x.png")


def test_training_curves_and_placeholder(tmp_path):
    hist = {"loss": [0.4, 0.3, 0.25], "val_loss": [0.5, 0.4, 0.35],
            "val_map_at_r": [0.2, None, 0.5], "val_precision_at_1": [0.5, 0.6, 0.7]}
    full = _png(plot_training_curves([hist, hist], tmp_path / "c.png"))
    no_val = _png(plot_training_curves([{"loss": [1.0]}], tmp_path / "d.png"))
    # frozen encoders have no history: a placeholder figure, not empty axes
    placeholder = _png(plot_training_curves([{}], tmp_path / "p.png"))
    assert full > no_val > 0 and placeholder > 1000
    assert _png(plot_training_curves([], tmp_path / "q.png")) == placeholder


def test_project_2d_caps_and_pads():
    Z = np.random.default_rng(0).normal(size=(50, 8))
    labels = np.arange(50) % 5
    proj = project_2d(Z, labels, source="s", max_points=20, random_state=1)
    points = np.asarray(proj["points"])
    assert points.shape == (20, 2) and len(proj["labels"]) == 20
    assert set(proj["labels"]) <= {"0", "1", "2", "3", "4"}
    assert proj["title"] == "Embeddings, PCA\n(s)"
    assert proj["explained_variance_ratio"][0] >= proj["explained_variance_ratio"][1]
    # full set: the projection is PCA's (up to sign); 1-D embeddings get a zero 2nd axis
    centred = Z - Z.mean(axis=0)
    full = np.asarray(project_2d(Z, labels, source="s")["points"])
    var = centred.var(axis=0).sum()
    np.testing.assert_allclose(full.var(axis=0).sum() / var,
                               sum(project_2d(Z, labels, source="s")
                                   ["explained_variance_ratio"]), rtol=1e-3)
    one_d = np.asarray(project_2d(Z[:, :1], labels, source="s")["points"])
    np.testing.assert_array_equal(one_d[:, 1], 0.0)
