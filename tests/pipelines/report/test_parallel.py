"""Folds through joblib: a loky pool and a 2-worker Dask cluster give the sequential report."""

import os
import time
from pathlib import Path

import joblib
import numpy as np
import pytest

from pipelines.report import cross_validate_report
from tests._images import make_shapes
from tests.pipelines.report.test_cross_validation import HEADS, _pipeline


def _scores(report) -> dict:
    """Everything in a report that must not depend on where the folds ran (no times)."""
    heads = {name: ({m: v for m, v in row.folds.items() if not m.endswith("_time")},
                    row.confusion_matrix, row.classification_report)
             for name, row in report.heads.items()}
    folds = [(f.index, f.n_train, f.n_test, f.history, f.validation) for f in report.folds]
    return {"heads": heads, "best": report.best_head, "folds": folds,
            "retrieval": (report.retrieval.folds, report.retrieval.k),
            "embedding_2d": report.embedding_2d["points"]}


def test_loky_folds_equal_sequential_folds():
    X, y = make_shapes(8, size=8)
    sequential = cross_validate_report(_pipeline(), X, y, cv=3, heads=HEADS)
    parallel = cross_validate_report(_pipeline(), X, y, cv=3, heads=HEADS, n_jobs=2)
    assert parallel.cv.n_jobs == 2
    assert _scores(parallel) == _scores(sequential)


def _register_tiny_cnn():
    # Dask workers are fresh processes: the test-only encoder must be registered there too.
    from embedder.models.encoders import ENCODERS, register_encoder
    from tests.conftest import _tiny_cnn

    if "tiny_cnn" not in ENCODERS:
        register_encoder("tiny_cnn")(_tiny_cnn)


@pytest.fixture(scope="module")
def dask_client():
    distributed = pytest.importorskip("distributed", reason="the optional dask extra")
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       host="127.0.0.1", dashboard_address=None)
    try:
        client = distributed.Client(cluster)
        try:
            client.run(_register_tiny_cnn)
            yield client
        finally:
            client.close()
    finally:
        cluster.close()


def test_dask_folds_equal_sequential_folds(dask_client):
    from distributed import get_task_stream

    from pipelines.factory import make_triplet_pipeline
    from tests._helpers import tiny_embedder

    X, y = make_shapes(8, size=16)
    pipeline = make_triplet_pipeline(tiny_embedder(epochs=2), "logreg")
    start = time.perf_counter()
    sequential = cross_validate_report(pipeline, X, y, cv=2, heads=("knn", "logreg"))
    sequential_s = time.perf_counter() - start
    start = time.perf_counter()
    with get_task_stream(dask_client) as stream, joblib.parallel_config(backend="dask"):
        parallel = cross_validate_report(pipeline, X, y, cv=2, heads=("knn", "logreg"))
    parallel_s = time.perf_counter() - start
    print(f"sequential {sequential_s:.1f} s, 2 Dask workers {parallel_s:.1f} s")
    workers = {task["worker"] for task in stream.data}
    assert len(workers) == 2  # both folds left this process, one per worker
    assert [len(h["loss"]) for h in parallel.histories] == [2, 2]
    assert _scores(parallel) == _scores(sequential)


def _record_pid(X, folder):
    # identity embedding that leaves a trace of the process it ran in
    (Path(folder) / str(os.getpid())).touch()
    return X


def _pid_pipeline(folder):
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    embed = FunctionTransformer(_record_pid, kw_args={"folder": str(folder)})
    return Pipeline([("embed", embed), ("head", KNeighborsClassifier(3))])


def test_open_set_folds_run_on_the_same_engine_in_parallel(tmp_path):
    # open_set_report shares cross_validate_report's fold engine (run_folds): n_jobs=2 runs
    # the folds in a loky pool (other processes) and gives the sequential report.
    from pipelines.report import open_set_report
    from tests.pipelines.report.test_open_set import _corners

    X, y = _corners(n_per_class=12)
    X = np.vstack([X, X[:12] + [5.0, 5.0]])  # a fifth, central class
    y = np.concatenate([y, np.full(12, "c")])
    kwargs = dict(unknown_classes=2, cv=3, random_state=0)
    (tmp_path / "seq").mkdir()
    (tmp_path / "par").mkdir()
    sequential = open_set_report(_pid_pipeline(tmp_path / "seq"), X, y, **kwargs)
    parallel = open_set_report(_pid_pipeline(tmp_path / "par"), X, y, n_jobs=2, **kwargs)
    assert [p.name for p in (tmp_path / "seq").iterdir()] == [str(os.getpid())]
    assert str(os.getpid()) not in [p.name for p in (tmp_path / "par").iterdir()]
    assert [f["unknown_classes"] for f in parallel.folds] == [
        f["unknown_classes"] for f in sequential.folds]
    assert parallel.folds == sequential.folds
    assert parallel.mean == sequential.mean and parallel.scores == sequential.scores
