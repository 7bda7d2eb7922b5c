"""Look up the gallery images nearest to query images in embedding space.

A saved pipeline (its embedding part) or a saved ``.keras`` encoder
(:class:`embedder.FrozenEmbedder`) embeds a labelled gallery and the queries; the hits
are the ``top`` nearest gallery images by Euclidean distance between embeddings. A
contact sheet shows each query beside its hits, with a red frame on every hit whose
label differs from the query's (its own label when known, else the majority label of
its hits).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipelines.text import csv_column

#: Queries drawn on a contact sheet at most (the CSV always has all of them).
MAX_SHEET_QUERIES = 25
HIT_COLUMNS = ("query", "query_label", "rank", "gallery", "gallery_label", "distance")


def load_search_embedder(source, X, *, input_shape=None, trusted=False):
    """A fitted transformer from a saved pipeline or a saved ``.keras`` encoder.

    Parameters
    ----------
    source : str or path-like
        A pipeline file (:func:`pipelines.save_pipeline`; its steps before the head are
        used) or a ``.keras`` encoder (wrapped in :class:`embedder.FrozenEmbedder`).
    X : array-like
        Images the encoder will embed (used to resolve a ``FrozenEmbedder``'s input
        shape; nothing is trained).
    input_shape : tuple of int or None, default=None
        Shape files are decoded to, for a ``.keras`` encoder.
    trusted : bool, default=False
        Load a ``.joblib`` pipeline without a verified sidecar.

    Returns
    -------
    transformer
        Fitted, with ``transform``.
    """
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"model or encoder file {str(source)!r} does not exist")
    if path.suffix == ".keras":
        from embedder import FrozenEmbedder

        return FrozenEmbedder(str(path), input_shape=input_shape).fit(X)
    from pipelines.persistence.pipeline_files import load_pipeline

    pipeline = load_pipeline(path, trusted=trusted)
    steps = getattr(pipeline, "steps", None)
    if not steps or len(steps) < 2:
        raise ValueError(f"model file {str(source)!r} must hold a pipeline with an "
                         f"embedding step and a head, got {type(pipeline).__name__}")
    return pipeline[:-1]


def search_gallery(embedder, gallery, gallery_labels, queries, *, top=5, query_labels=None):
    """The ``top`` nearest gallery images of every query, as a table.

    Parameters
    ----------
    embedder : transformer
        Fitted; ``transform`` maps images to embeddings.
    gallery : array-like
        Gallery images (paths or pixel arrays).
    gallery_labels : array-like of shape (n_gallery,)
        Class label of each gallery image.
    queries : array-like
        Query images (paths or pixel arrays).
    top : int, default=5
        Hits per query (capped at the gallery size).
    query_labels : array-like of shape (n_queries,) or None, default=None
        The queries' own labels, when known.

    Returns
    -------
    pandas.DataFrame
        One row per hit, columns :data:`HIT_COLUMNS`: the query and gallery image (path,
        or ``query#index`` / ``#index`` for arrays), the query's label (empty when
        unknown), the hit's rank (1 = nearest) and label, and the Euclidean distance
        between the embeddings.
    """
    import pandas as pd
    from sklearn.neighbors import NearestNeighbors

    if isinstance(top, bool) or not isinstance(top, int | np.integer) or top < 1:
        raise ValueError(f"top must be a positive int, got {top!r}")
    gallery_labels = np.asarray(gallery_labels)
    if len(gallery_labels) != len(gallery):
        raise ValueError(f"gallery_labels must have one label per gallery image "
                         f"({len(gallery)}), got {len(gallery_labels)}")
    if query_labels is not None and len(query_labels) != len(queries):
        raise ValueError(f"query_labels must have one label per query ({len(queries)}), "
                         f"got {len(query_labels)}")
    k = min(int(top), len(gallery))
    index = NearestNeighbors(n_neighbors=k).fit(embedder.transform(gallery))
    distances, hits = index.kneighbors(embedder.transform(queries))
    query_names, gallery_names = _names(queries, "query#"), _names(gallery, "#")
    own = [""] * len(queries) if query_labels is None else [str(v) for v in query_labels]
    return pd.DataFrame({
        "query": np.repeat(query_names, k),
        "query_label": np.repeat(own, k),
        "rank": np.tile(np.arange(1, k + 1), len(queries)),
        "gallery": gallery_names[hits.ravel()],
        "gallery_label": [str(v) for v in gallery_labels[hits.ravel()]],
        "distance": np.round(distances.ravel(), 6),
    }, columns=list(HIT_COLUMNS))


def _names(images, prefix) -> np.ndarray:
    """File paths as they are; in-memory images as ``prefix`` + their index."""
    arr = np.asarray(images) if not isinstance(images, np.ndarray) else images
    if arr.ndim == 1 and arr.dtype.kind in "USO":
        return arr.astype(str)
    return np.asarray([f"{prefix}{i}" for i in range(len(arr))])


def reference_labels(hits) -> dict:
    """Each query's label to compare hits with: its own, else the majority of its hits.

    Parameters
    ----------
    hits : pandas.DataFrame
        From :func:`search_gallery`.

    Returns
    -------
    dict
        Query -> label; among equally frequent labels the nearest hit's wins.
    """
    out = {}
    for query, rows in hits.groupby("query", sort=False):
        own = rows["query_label"].iloc[0]
        labels = rows.sort_values("rank")["gallery_label"].tolist()
        out[query] = own or max(labels, key=lambda v: (labels.count(v), -labels.index(v)))
    return out


def save_contact_sheet(hits, path, *, images=None) -> str:
    """Draw each query beside its hits (red frame: label differs) and save it as PNG.

    Parameters
    ----------
    hits : pandas.DataFrame
        From :func:`search_gallery`; the first :data:`MAX_SHEET_QUERIES` queries are
        drawn.
    path : str or path-like
        The PNG to write (atomically).
    images : dict or None, default=None
        Name (``#index``) -> pixel array, for images that are not files.

    Returns
    -------
    str
        The written path.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from embedder.files import atomic_path

    reference = reference_labels(hits)
    queries = list(reference)[:MAX_SHEET_QUERIES]
    k = int(hits["rank"].max())
    fig = Figure(figsize=(1.5 * (k + 1), 1.75 * len(queries)), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(queries), k + 1, squeeze=False)
    for row, query in zip(axes, queries, strict=True):
        rows = hits[hits["query"] == query].sort_values("rank")
        own = rows["query_label"].iloc[0]
        _cell(row[0], query, images, f"query\n{own or 'predicted: ' + reference[query]}",
              "black")
        for ax, hit in zip(row[1:], rows.itertuples(), strict=False):
            colour = "red" if hit.gallery_label != reference[query] else "0.75"
            _cell(ax, hit.gallery, images, f"#{hit.rank} {hit.gallery_label}\n"
                  f"d={hit.distance:.3f}", colour)
        for ax in row[1 + len(rows):]:
            ax.axis("off")
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    return str(path)


def _cell(ax, name, images, title, colour):
    ax.imshow(_thumbnail(name, images), cmap="gray", vmin=0, vmax=255)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=7, color="red" if colour == "red" else "black")
    for spine in ax.spines.values():
        spine.set_edgecolor(colour)
        spine.set_linewidth(3 if colour == "red" else 1)


def _thumbnail(name, images, size=96) -> np.ndarray:
    """A uint8 image for display: pixels from ``images`` or the file ``name``."""
    if images is not None and name in images:
        arr = np.asarray(images[name], dtype=np.float64)
    else:
        from PIL import Image

        from embedder.data.decoding import check_pixels

        check_pixels(name)  # the header's size, before Pillow decodes
        with Image.open(name) as img:
            img = img.convert("RGB")
            img.thumbnail((size, size))
            arr = np.asarray(img, dtype=np.float64)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.max(initial=0) <= 1.0:  # images scaled to 0..1
        arr = arr * 255.0
    return np.clip(arr, 0, 255).astype(np.uint8)


def run_search(source, gallery, queries, *, top=5, out=None, sheet=None, input_shape=None,
               trusted=False):
    """Load, embed, search, write the hits CSV and the contact sheet (the CLI's ``search``).

    Parameters
    ----------
    source : str or path-like or transformer
        A saved pipeline or ``.keras`` encoder (see :func:`load_search_embedder`), or a
        fitted transformer (anything with ``transform``) used as it is.
    gallery : tuple (X, y)
        Labelled gallery images.
    queries : tuple (X, labels or None)
        Query images and their labels when known.
    top : int, default=5
        Hits per query.
    out : str or path-like or None, default=None
        CSV file for the hits (written atomically); None writes none.
    sheet : str or path-like or None, default=None
        Contact-sheet PNG; None writes none.
    input_shape : tuple of int or None, default=None
        Shape files are decoded to, for a ``.keras`` encoder.
    trusted : bool, default=False
        Load a ``.joblib`` pipeline without a verified sidecar (see
        :func:`pipelines.load_pipeline`).

    Returns
    -------
    pandas.DataFrame
        The hits (see :func:`search_gallery`).
    """
    from embedder.files import atomic_write_text

    (X_gallery, y_gallery), (X_query, y_query) = gallery, queries
    embedder = source if hasattr(source, "transform") else load_search_embedder(
        source, X_gallery, input_shape=input_shape, trusted=trusted)
    hits = search_gallery(embedder, X_gallery, y_gallery, X_query, top=top,
                          query_labels=y_query)
    if out is not None:
        atomic_write_text(out, hits.apply(csv_column).to_csv(index=False))
    if sheet is not None:
        arrays = {}
        for names, X in ((_names(X_gallery, "#"), X_gallery),
                         (_names(X_query, "query#"), X_query)):
            if not (np.asarray(X).ndim == 1):
                arrays.update(zip(names, X, strict=True))
        save_contact_sheet(hits, sheet, images=arrays or None)
    return hits
