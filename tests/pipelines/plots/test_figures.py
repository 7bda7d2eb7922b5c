import types
import warnings

import numpy as np
import pytest
from matplotlib.image import imread

import pipelines.plots.common as plot_common
from pipelines.plots import (
    plot_confusion_matrix,
    plot_embeddings_2d,
    plot_training_curves,
    project_2d,
    save_report_figures,
)


@pytest.fixture
def figures(monkeypatch):
    """The Figure objects the plot functions save, in order."""
    saved = []
    original = plot_common.save_png

    def keep(fig, path):
        saved.append(fig)
        return original(fig, path)

    monkeypatch.setattr(plot_common, "save_png", keep)
    return saved


@pytest.fixture
def no_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def _not_collapsed(fig, min_share=0.25):
    """Every data axes (not colour bars) covers a sizeable share of the figure."""
    for ax in fig.axes:
        box = ax.get_position()
        if not hasattr(ax, "_colorbar") and ax.axison:
            assert box.width > min_share * 0.5 and box.height > min_share, box


def _confusion(n, seed=0):
    rng = np.random.default_rng(seed)
    truth = np.repeat(np.arange(n), 4)
    pred = np.where(rng.random(len(truth)) < 0.8, truth, rng.integers(0, n, len(truth)))
    cm = np.zeros((n, n), int)
    np.add.at(cm, (truth, pred), 1)
    return cm, [f"s{i + 1}" for i in range(n)]


def test_confusion_matrix_png(tmp_path, figures, no_warnings):
    path = plot_confusion_matrix([[3, 1], [0, 4]], ["cat", "dog"], tmp_path / "a" / "cm.png")
    assert path == str(tmp_path / "a" / "cm.png")
    fig = figures[0]
    pixels = imread(path)
    np.testing.assert_allclose(pixels.shape[:2], fig.get_size_inches()[::-1] * fig.dpi, atol=1)
    ax = fig.axes[0]
    np.testing.assert_allclose(ax.images[0].get_array(), [[0.75, 0.25], [0.0, 1.0]])
    assert [t.get_text() for t in ax.texts] == ["3", "1", "4"]  # zero cells stay empty
    _not_collapsed(fig)
    # the (dog, dog) cell, 100% of its class, is dark blue in the saved PNG (off its text)
    box = ax.get_window_extent()
    x, y = int(box.x0 + 0.9 * box.width), int(pixels.shape[0] - box.y0 - 0.1 * box.height)
    assert pixels[y, x, 2] > 0.2 and pixels[y, x, 0] < 0.2
    with pytest.raises(ValueError, match=r"matrix must have shape \(3, 3\) to match "
                                         r"class_names, got \(2, 2\)"):
        plot_confusion_matrix([[3, 1], [0, 4]], ["a", "b", "c"], tmp_path / "x.png")


def test_confusion_matrix_natural_order(tmp_path, figures):
    plot_confusion_matrix([[1, 0, 2], [0, 3, 0], [4, 0, 5]], ["s10", "s2", "s1"],
                          tmp_path / "cm.png")
    ax = figures[0].axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["s1", "s2", "s10"]
    np.testing.assert_allclose(ax.images[0].get_array(),
                               [[5 / 9, 0, 4 / 9], [0, 1, 0], [2 / 3, 0, 1 / 3]])


@pytest.mark.parametrize("n, cell_texts, tick_labels", [(30, True, 30), (61, False, 31),
                                                         (1000, False, 40)])
def test_confusion_matrix_scales(tmp_path, figures, no_warnings, n, cell_texts, tick_labels):
    cm, names = _confusion(n)
    plot_confusion_matrix(cm, names, tmp_path / "cm.png")
    fig = figures[0]
    ax = fig.axes[0]
    assert (len(ax.texts) == np.count_nonzero(cm)) if cell_texts else not ax.texts
    assert len(ax.get_xticks()) == tick_labels
    assert ax.get_yticklabels()[0].get_text() == "s1"
    width, height = fig.get_size_inches()
    assert width <= 12 and height <= 11
    _not_collapsed(fig, min_share=0.6)


@pytest.mark.parametrize("n, key", [(2, "legend"), (12, "legend"), (13, "names"),
                                    (40, "names"), (61, "colour bar"), (1000, "colour bar")])
def test_embeddings_class_key_scales(tmp_path, figures, no_warnings, n, key):
    rng = np.random.default_rng(0)
    labels = np.repeat([f"s{i + 1}" for i in range(n)], 3)
    points = rng.normal(size=(len(labels), 2)) + np.repeat(rng.normal(size=(n, 2)) * 5, 3, 0)
    plot_embeddings_2d(points, labels, tmp_path / "e.png", title="t")
    fig = figures[0]
    ax = fig.axes[0]
    assert len(fig.legends) == (key == "legend")
    if key == "legend":
        assert [t.get_text() for t in fig.legends[0].get_texts()][:2] == ["s1", "s2"]
    assert len(ax.texts) == (n if key == "names" else 0)
    assert len(fig.axes) == (2 if key == "colour bar" else 1)
    # the size does not grow with the classes: legend, names or colour bar beside one panel
    width = {"legend": 8.9, "names": 6.8, "colour bar": 7.9}[key]
    np.testing.assert_allclose(fig.get_size_inches(), (width, 5.0))
    _not_collapsed(fig, min_share=0.5)
    # the axis titles and tick labels lie inside the figure (none is cut at the edge)
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(fig).get_renderer()
    assert ax.get_tightbbox(renderer).x0 >= 0


def test_embeddings_with_tsne_panel(tmp_path, figures, no_warnings):
    points = np.random.default_rng(0).normal(size=(30, 2))
    labels = np.repeat(["a", "b", "c"], 10)
    plot_embeddings_2d(points, labels, tmp_path / "e.png", tsne=(points[::-1], labels[::-1]))
    fig = figures[0]
    assert len(fig.axes) == 2 and fig.axes[1].get_title().startswith("t-SNE")
    # one class, one colour in both panels
    first = fig.axes[0].collections[0].get_facecolors()
    second = fig.axes[1].collections[0].get_facecolors()
    np.testing.assert_allclose(first, second[::-1])
    _not_collapsed(fig)
    with pytest.raises(ValueError, match=r"labels must have one entry per point \(30\), got 29"):
        plot_embeddings_2d(points, labels[:29], tmp_path / "x.png")


def _texts(fig):
    return " ".join(t.get_text() for ax in fig.axes for t in ax.texts)


def test_training_curves_say_why_there_is_no_validation(tmp_path, figures, no_warnings):
    hist = {"loss": [0.4, 0.3, 0.25], "val_loss": [0.5, 0.4, 0.35],
            "val_map_at_r": [0.2, None, 0.5], "val_precision_at_1": [0.5, 0.6, 0.7]}
    plot_training_curves([hist, hist], tmp_path / "c.png", validation_note="unused")
    assert [len(ax.lines) for ax in figures[0].axes] == [4, 4] and not _texts(figures[0])
    note = "validation skipped: 8 images per class, needs 16; no early stopping"
    plot_training_curves([{"loss": [1.0]}], tmp_path / "d.png", validation_note=note)
    assert _texts(figures[1]) == "validation skipped: 8 images per class, needs\n16; no " \
                                 "early stopping"
    assert figures[1].axes[1].get_title() == "No validation curves"
    plot_training_curves([{"loss": [1.0]}], tmp_path / "e.png")
    assert "validation_fraction=0) or its split was skipped" in _texts(figures[2]).replace(
        "\n", " ")
    # frozen encoders have no history: a placeholder figure, not empty axes
    plot_training_curves([{}], tmp_path / "p.png")
    plot_training_curves([], tmp_path / "q.png")
    assert _texts(figures[3]).startswith("No training curves") and not figures[3].axes[0].axison
    assert _texts(figures[4]) == _texts(figures[3])
    for fig in figures:
        _not_collapsed(fig)


def test_project_2d_caps_and_pads():
    Z = np.random.default_rng(0).normal(size=(50, 8))
    labels = np.arange(50) % 5
    proj = project_2d(Z, labels, source="s", max_points=20, random_state=1)
    points = np.asarray(proj["points"])
    assert points.shape == (20, 2) and len(proj["labels"]) == 20
    assert set(proj["labels"]) <= {"0", "1", "2", "3", "4"}
    assert proj["title"] == "Embeddings, PCA\n(s)" and "tsne" not in proj
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


def test_project_2d_tsne_separates_clusters():
    rng = np.random.default_rng(0)
    Z = np.repeat(rng.normal(size=(3, 16)) * 4, 20, axis=0) + rng.normal(size=(60, 16))
    labels = np.repeat(["a", "b", "c"], 20)
    tsne = project_2d(Z, labels, source="s", tsne_points=45)["tsne"]
    points, names = np.asarray(tsne["points"]), np.asarray(tsne["labels"])
    assert points.shape == (45, 2) and set(names) == {"a", "b", "c"}
    from sklearn.metrics import silhouette_score

    assert silhouette_score(points, names) > 0.5


def test_save_report_figures_from_dict_and_object(tmp_path, figures, no_warnings):
    cm, names = _confusion(40)
    proj = project_2d(np.random.default_rng(0).normal(size=(160, 4)), np.repeat(names, 4),
                      source="s")
    common = {"best_head": "svm", "classes": names, "embedding_2d": proj,
              "validation": "validation skipped in all 5 folds"}
    report = {**common, "heads": {"svm": {"confusion_matrix": cm.tolist()}},
              "cv": {"n_splits": 5}, "embedder": {"frozen": False},
              "folds": [{"history": {"loss": [1.0, 0.5]}}]}
    paths = save_report_figures(report, tmp_path / "d")
    assert sorted(paths) == ["confusion_matrix", "embeddings_2d", "training_curves"]
    assert all(imread(p).shape[2] == 4 for p in paths.values())
    assert figures[0].axes[0].get_title() == "svm: confusion matrix summed over 5 folds"
    assert _texts(figures[2]) == "validation skipped in all 5 folds"
    typed = types.SimpleNamespace(
        **common, heads={"svm": types.SimpleNamespace(confusion_matrix=cm)},
        cv=types.SimpleNamespace(n_splits=3), histories=[{}])
    save_report_figures(typed, tmp_path / "o")
    assert figures[3].axes[0].get_title() == "svm: confusion matrix summed over 3 folds"
    assert _texts(figures[5]).startswith("No training curves")
