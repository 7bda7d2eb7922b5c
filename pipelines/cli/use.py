"""The ``triplet predict``, ``search`` and ``embed`` commands."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import numpy as np

from pipelines.cli.common import (
    Progress,
    ProgressTransformer,
    input_shape,
    load,
    table,
    write_table,
)
from pipelines.text import csv_column


def _collect_images(items) -> list:
    from embedder.data.decoding import IMAGE_EXTENSIONS

    paths = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = sorted(str(f) for f in p.rglob("*") if f.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                raise ValueError(f"folder {item!r} contains no image files "
                                 f"({', '.join(IMAGE_EXTENSIONS)})")
            paths += found
        elif p.is_file():
            paths.append(str(p))
        else:
            raise FileNotFoundError(f"image or folder {item!r} does not exist")
    return paths


def _check_not_an_encoder(path) -> None:
    """A ``.keras`` encoder given where a pipeline is needed gets told what to do."""
    with open(path, "rb") as file:
        is_zip = file.read(4) == b"PK\x03\x04"  # a pickle may hold a .keras zip inside
    if Path(path).suffix == ".keras" or (is_zip and _holds_keras_config(path)):
        raise ValueError(f"model file {str(path)!r} is an encoder, not a pipeline with a "
                         "head: use it with `triplet embed` or `triplet search`; predict "
                         "needs the model.joblib of `triplet evaluate`")


def _holds_keras_config(path) -> bool:
    """Whether the zip archive ``path`` is a Keras model (a damaged zip is not: loading it
    as a pipeline then says what is wrong with it)."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            return "config.json" in archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return False


def predict(args):
    import pandas as pd

    from pipelines.persistence.pipeline_files import load_pipeline

    if not Path(args.model).is_file():
        raise FileNotFoundError(f"model file {args.model!r} does not exist")
    _check_not_an_encoder(args.model)
    pipeline = load_pipeline(args.model, trusted=args.trust)
    if not isinstance(getattr(pipeline, "steps", None), list) or len(pipeline.steps) < 2:
        raise ValueError(f"model file {args.model!r} must hold a pipeline with an embedding "
                         f"step and a head (as `triplet evaluate` saves), got a "
                         f"{type(pipeline).__name__}")
    head = _rejecting_head(args, pipeline) if args.reject_unknown else pipeline[-1]
    if args.all_probabilities and not hasattr(head, "predict_proba"):
        raise ValueError(f"--all-probabilities needs a head with predict_proba; the head of "
                         f"{args.model!r} is a {type(head).__name__}")
    paths = _collect_images(args.images)
    Z = ProgressTransformer(pipeline[:-1]).transform(np.asarray(paths, dtype=object))
    predictions = pd.DataFrame({"path": paths, "class": head.predict(Z)})
    if hasattr(head, "predict_proba"):
        proba = head.predict_proba(Z)
        predictions["probability"] = np.round(proba.max(axis=1), 4)
        if args.all_probabilities:
            for j, name in enumerate(head.classes_):
                predictions[f"probability_{name}"] = np.round(proba[:, j], 4)
    if args.reject_unknown:
        predictions["open_set_score"] = np.round(head.score_samples(Z), 6)
        rejected = int((predictions["class"] == head.unknown_label).sum())
        print(f"open-set threshold {head.threshold_:.6f} ({head.open_set_score}, accepts "
              f"{head.target_tpr:g} of known images); {rejected} of {len(paths)} images "
              f"rejected as {head.unknown_label!r}", file=sys.stderr)
    if args.out:
        write_table(predictions, args.out)
        print(f"{len(paths)} predictions written to {args.out}")
    else:
        # class names and paths come from users' folders: no spreadsheet formulas
        predictions.apply(csv_column).to_csv(sys.stdout, index=False)


def _rejecting_head(args, pipeline):
    """The model's head as an OpenSetClassifier (calibrated on --calibration if given)."""
    from classifiers import OpenSetClassifier
    from pipelines.report.open_set import rejecting_head

    head = pipeline[-1]
    if args.calibration is None and not isinstance(head, OpenSetClassifier):
        raise ValueError(
            "--reject-unknown needs --calibration DATA (labelled images of the known "
            "classes) unless the model's head is an OpenSetClassifier; the head of "
            f"{args.model!r} is a {type(head).__name__}")
    calibration = None
    if args.calibration is not None:
        from embedder.data.datasets import load_dataset

        X_cal, y_cal = load_dataset(args.calibration)
        # stderr: the predictions may be going to stdout as CSV
        print(f"calibration DATA {args.calibration}: {len(y_cal)} images, "
              f"{len(np.unique(y_cal))} classes", file=sys.stderr, flush=True)
        calibration = (ProgressTransformer(pipeline[:-1]).transform(X_cal), y_cal)
    return rejecting_head(head, calibration, target_tpr=args.target_tpr)


def search(args):
    from embedder.data.datasets import load_dataset
    from pipelines.search import load_search_embedder, run_search

    if not Path(args.model).is_file():
        raise FileNotFoundError(f"model or encoder file {args.model!r} does not exist")
    X, y = load(args.gallery)
    queries = _search_queries(args.queries, load_dataset)
    sheet = args.sheet or (str(Path(args.out).with_suffix(".png")) if args.out else None)
    embedder = load_search_embedder(args.model, X, input_shape=input_shape(args, X),
                                    trusted=args.trust)
    hits = run_search(ProgressTransformer(embedder), (X, y), queries, top=args.top,
                      out=args.out, sheet=sheet)
    for query, rows in hits.groupby("query", sort=False):
        print(f"{query}" + (f" ({rows['query_label'].iloc[0]})"
                            if rows["query_label"].iloc[0] else ""))
        for hit in rows.itertuples():
            print(f"  {hit.rank}. {hit.gallery_label:<12} {hit.distance:.4f}  {hit.gallery}")
    print(table([("hits", args.out or "not written (no --out)"),
                  ("contact sheet", sheet or "not written (no --out or --sheet)")]))


def _search_queries(items, load_dataset):
    """Query images and labels: one labelled DATA (class folders or CSV), else files."""
    if len(items) == 1:
        source = Path(items[0])
        labelled = source.suffix.lower() == ".csv" or (
            source.is_dir() and any(p.is_dir() for p in source.iterdir()))
        if labelled:
            X, y = load_dataset(str(source))
            return X, y
    return np.asarray(_collect_images(items), dtype=object), None


def embed(args):
    from embedder.models.encoder_files import load_encoder_file
    from pipelines.streaming import write_embeddings

    out = Path(args.out)  # its suffix and the other options: common.check_options
    if not Path(args.encoder).is_file():
        raise FileNotFoundError(f"encoder file {args.encoder!r} does not exist")
    X, y = load(args.data)
    model = load_encoder_file(args.encoder)[0]
    shape = _embed_shape(args, X, int(model.input_shape[-1]))
    dim = int(model.output_shape[-1])
    columns = {} if out.suffix == ".npy" else {"label": y}
    if out.suffix != ".npy" and np.asarray(X).ndim == 1:
        columns = {"path": X, **columns}
    # streamed: memory stays flat in the number of images (pipelines/streaming.py)
    with _embedding_blocks(args, model, X, shape) as blocks:
        write_embeddings(Progress(len(X)).blocks(blocks), len(X), dim, out,
                         columns=columns)
    print(f"{len(X)} embeddings of dimension {dim} written to {out}")


@contextlib.contextmanager
def _embedding_blocks(args, model, X, shape):
    """Blocks embedded here, or shard by shard on the Dask cluster at --scheduler."""
    from pipelines.streaming import iter_cluster_embeddings, iter_embeddings

    if args.scheduler is None:
        yield iter_embeddings(model, X, shape, batch_size=args.batch_size)
        return
    from pipelines.cluster import scheduler_client

    with scheduler_client(args.scheduler, args.scheduler_timeout) as client:
        print(f"embedding on the Dask cluster at {args.scheduler} "
              f"({len(client.scheduler_info()['workers'])} workers)", flush=True)
        yield iter_cluster_embeddings(client, os.path.abspath(args.encoder), X, shape,
                                      batch_size=args.batch_size)


def _embed_shape(args, X, channels):
    """Shape images are brought to: --image-size for files (else 112), arrays' own size."""
    if np.asarray(X).ndim != 1:
        return (*np.asarray(X).shape[1:3], channels)
    size = 112 if args.image_size is None else args.image_size  # checked by check_options
    return (size, size, channels)
