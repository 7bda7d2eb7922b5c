"""The 2-D embedding map: PCA (optional t-SNE) projection and its class-coloured scatter PNG.

The class key adapts to the number of classes: a legend up to :data:`MAX_LEGEND` classes,
names at the cluster centres up to :data:`MAX_CENTRE_LABELS`, a colour bar beyond; the
figure size does not grow with the number of classes.
"""

from __future__ import annotations

import matplotlib
import numpy as np
from matplotlib import patheffects
from matplotlib.colors import ListedColormap, Normalize
from matplotlib.figure import Figure

from pipelines.plots import common as _plot_common
from pipelines.plots.common import new_figure, place_axes, short_name
from pipelines.text import natural_key

#: Up to this many classes the embedding plot has a legend.
MAX_LEGEND = 12
#: Up to this many classes the embedding plot names each class at its cluster centre.
MAX_CENTRE_LABELS = 60


def _class_colours(n: int):
    """(colormap, whether it is qualitative) for ``n`` classes in natural order."""
    if n <= 10:
        return matplotlib.colormaps["tab10"], True
    if n <= 20:
        return matplotlib.colormaps["tab20"], True
    if n <= MAX_CENTRE_LABELS:  # 60 distinct colours; names at the centres tell them apart
        colours = [matplotlib.colormaps[name](i)
                   for name in ("tab20", "tab20b", "tab20c") for i in range(20)]
        return ListedColormap(colours), True
    return matplotlib.colormaps["turbo"], False


def plot_embeddings_2d(points, labels, path, *, title: str = "", tsne=None) -> str:
    """Scatter 2-D projected embeddings, one colour per class, and save it as PNG.

    The class key adapts to the number of classes: a legend up to :data:`MAX_LEGEND`
    classes, class names at the cluster centres (the median point of each class) up to
    :data:`MAX_CENTRE_LABELS`, and beyond that a colour bar over the classes in natural
    order. The figure size does not grow with the number of classes.

    Parameters
    ----------
    points : array-like of float, shape (n, 2)
        2-D coordinates, one row per image.
    labels : array-like, shape (n,)
        Class names (any type; shown with ``str``).
    path : str or Path
        PNG file to write (atomically).
    title : str, optional
        Title of the (first) panel; default "Embeddings (PCA)".
    tsne : tuple or None, optional
        ``(points, labels)`` of a second map (e.g. ``project_2d(...)["tsne"]``), drawn
        beside the first with the same class colours, titled "t-SNE".

    Returns
    -------
    str
        The written path.
    """
    panels = [_panel(points, labels, title or "Embeddings (PCA)")]
    if tsne is not None:
        panels.append(_panel(tsne[0], tsne[1], "t-SNE of the same embeddings\n"
                                               "(clusters; distances not to scale)"))
    classes = sorted({name for _, names, _ in panels for name in names.tolist()},
                     key=natural_key)
    index = {name: i for i, name in enumerate(classes)}
    cmap, qualitative = _class_colours(len(classes))
    key_width = 2.3 if len(classes) <= MAX_LEGEND else (1.3 if not qualitative else 0.2)
    fig = new_figure(1.0 + 5.6 * len(panels) + key_width, 5.0)
    for k, (xy, names, panel_title) in enumerate(panels):
        # 0.95 inch on the left: room for tick labels such as -0.75 and the axis title
        ax = place_axes(fig, 0.95 + 5.6 * k, 0.6, 4.9, 3.8)
        codes = np.asarray([index[name] for name in names.tolist()], dtype=int)
        colour = cmap(codes % cmap.N) if qualitative else cmap(codes / max(len(classes) - 1, 1))
        size = float(np.clip(20000 / max(len(xy), 1), 3, 14))
        ax.scatter(xy[:, 0], xy[:, 1], s=size, c=colour, alpha=0.75, linewidths=0)
        if MAX_LEGEND < len(classes) <= MAX_CENTRE_LABELS:
            _centre_labels(ax, xy, codes, classes)
        ax.set_title(panel_title, fontsize=10)
        ax.set_xlabel("component 1" if k == 0 else "t-SNE 1")
        ax.set_ylabel("component 2" if k == 0 else "t-SNE 2")
    right = 1.0 + 5.6 * len(panels) - 0.5
    if len(classes) <= MAX_LEGEND:
        _legend(fig, classes, cmap, right)
    elif not qualitative:
        _class_colour_bar(fig, cmap, classes, right)
    return _plot_common.save_png(fig, path)


def _panel(points, labels, title: str):
    points = np.asarray(points, dtype=float).reshape(-1, 2)
    names = np.asarray([str(v) for v in labels], dtype=object)
    if len(names) != len(points):
        raise ValueError(
            f"labels must have one entry per point ({len(points)}), got {len(names)}")
    return points, names, title


def _centre_labels(ax, xy: np.ndarray, codes: np.ndarray, classes: list) -> None:
    outline = [patheffects.withStroke(linewidth=2.5, foreground="white")]
    for code in np.unique(codes):
        centre = np.median(xy[codes == code], axis=0)
        # Just above the centre, so a tight cluster stays visible under its name.
        ax.annotate(short_name(classes[code], 12), centre, xytext=(0, 3),
                    textcoords="offset points", fontsize=7, ha="center", va="bottom",
                    path_effects=outline)


def _legend(fig: Figure, classes: list, cmap, left: float) -> None:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], marker="o", linestyle="", color=cmap(i % cmap.N),
                      label=short_name(name)) for i, name in enumerate(classes)]
    fw, fh = fig.get_size_inches()
    fig.legend(handles=handles, loc="upper left", bbox_to_anchor=(left / fw, 4.4 / fh),
               fontsize="small", title="class", frameon=False)


def _class_colour_bar(fig: Figure, cmap, classes: list, left: float) -> None:
    from matplotlib.cm import ScalarMappable

    n = len(classes)
    norm = Normalize(vmin=0, vmax=max(n - 1, 1))  # as the points: cmap(code / (n - 1))
    bar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap),
                       cax=place_axes(fig, left + 0.1, 0.6, 0.2, 3.8))
    ticks = np.unique(np.linspace(0, n - 1, min(n, 8)).round().astype(int))
    bar.set_ticks(ticks, labels=[short_name(classes[i], 12) for i in ticks], fontsize=7)
    bar.set_label(f"class ({n}, natural order)")


def project_2d(Z, labels, *, source: str, max_points: int = 2000, random_state=0,
               tsne_points: int = 0) -> dict:
    """PCA of (a random sample of at most ``max_points``) embeddings, for the 2-D plot.

    Parameters
    ----------
    Z : array-like of shape (n, dim)
        Embeddings.
    labels : array-like of shape (n,)
        Class label of each row.
    source : str
        Where the embeddings come from, for the title.
    max_points : int, default=2000
        Random sample size (the plot needs no more, and JSON stays small).
    random_state : int, default=0
        Seeds the samples and t-SNE.
    tsne_points : int, default=0
        Also a t-SNE map (scikit-learn's, after PCA to 30 dimensions) of a sample of
        this many of the points, when > 0: it shows clusters that PCA overlaps, at a cost
        of roughly 4 s per 1,000 points on 2 cores (18 s under heavy load), so it is
        off by default.

    Returns
    -------
    dict
        JSON-compatible: ``points`` (n, 2), ``labels``, ``explained_variance_ratio``,
        ``source``, ``title``, and with ``tsne_points`` a ``"tsne"`` entry
        ``{"points", "labels"}``.
    """
    from sklearn.decomposition import PCA

    Z, labels = np.asarray(Z, dtype=np.float64), np.asarray(labels)
    rng = np.random.default_rng(random_state)
    if len(Z) > max_points:
        keep = np.sort(rng.choice(len(Z), max_points, replace=False))
        Z, labels = Z[keep], labels[keep]
    n_comp = min(2, Z.shape[1], len(Z))
    pca = PCA(n_components=n_comp).fit(Z)
    points = np.zeros((len(Z), 2))
    points[:, :n_comp] = pca.transform(Z)
    out = {"points": np.round(points, 5).tolist(), "labels": [str(v) for v in labels],
           "explained_variance_ratio": pca.explained_variance_ratio_.tolist(),
           "source": source, "title": f"Embeddings, PCA\n({source})"}
    if tsne_points > 0 and len(Z) >= 5:
        keep = np.sort(rng.choice(len(Z), min(tsne_points, len(Z)), replace=False))
        out["tsne"] = {"points": np.round(_tsne(Z[keep], random_state), 5).tolist(),
                       "labels": [str(v) for v in labels[keep]]}
    return out


def _tsne(Z: np.ndarray, random_state) -> np.ndarray:
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    reduced = PCA(n_components=min(30, *Z.shape), random_state=random_state).fit_transform(Z)
    perplexity = float(min(30.0, (len(Z) - 1) / 3))
    return TSNE(n_components=2, init="pca", perplexity=perplexity, max_iter=500,
                random_state=random_state).fit_transform(reduced)
