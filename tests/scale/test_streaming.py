"""Streaming embeddings (``pipelines.streaming``, ``triplet embed``): same numbers as one
``predict`` over all images, output files never partial, memory flat in the image count."""

import contextlib
import io
import os
import signal
import subprocess
import sys
import textwrap
import tracemalloc

import numpy as np
import pandas as pd
import pytest

from pipelines.streaming import ROW_GROUP_ROWS, iter_embeddings, write_embeddings
from tests._images import make_shapes, write_image_folder

N_IMAGES = 2000


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """2,000 16x16 PNGs in 5 class folders, and the pixels they hold."""
    root = tmp_path_factory.mktemp("stream")
    X, y = make_shapes(N_IMAGES // 5, size=16)
    paths = write_image_folder(root / "images", X, y)
    return root, X, np.asarray(paths, dtype=object)


@pytest.fixture(scope="module")
def encoder(folder):
    import keras

    from embedder.models.encoders import build_encoder

    keras.utils.set_random_seed(0)
    model = build_encoder("tiny_cnn", (16, 16, 3), embedding_dim=8)
    path = folder[0] / "enc.keras"
    model.save(path)
    return model, path


@pytest.fixture(scope="module")
def expected(folder, encoder):
    """Embeddings of all images in one ``predict`` call (PNG is lossless: same pixels)."""
    return encoder[0].predict(folder[1].astype(np.float32), batch_size=N_IMAGES, verbose=0)


def test_streamed_blocks_equal_one_predict(folder, encoder, expected):
    blocks = list(iter_embeddings(encoder[0], folder[2], (16, 16, 3), batch_size=300))
    assert [len(b) for b in blocks] == [300] * 6 + [200]
    assert all(b.dtype == np.float32 and b.shape[1] == 8 for b in blocks)
    np.testing.assert_allclose(np.concatenate(blocks), expected, atol=1e-5)


@pytest.mark.parametrize("suffix", [".npy", ".csv", ".parquet"])
def test_written_file_equals_one_predict(folder, encoder, expected, tmp_path, suffix):
    if suffix == ".parquet":
        pytest.importorskip("pyarrow")
    paths = folder[2]
    out = tmp_path / "sub" / f"emb{suffix}"  # the folder is created
    blocks = iter_embeddings(encoder[0], paths, (16, 16, 3), batch_size=256)
    assert write_embeddings(blocks, N_IMAGES, 8, out, columns={"path": paths}) == out
    if suffix == ".npy":
        Z = np.load(out)
        assert Z.dtype == np.float32 and Z.shape == (N_IMAGES, 8)
    else:
        table = pd.read_csv(out) if suffix == ".csv" else pd.read_parquet(out)
        assert list(table.columns) == ["path", *(f"e{i}" for i in range(8))]
        assert table["path"].tolist() == list(paths)
        Z = table.iloc[:, 1:].to_numpy()
    np.testing.assert_allclose(Z, expected, atol=1e-6)
    assert os.listdir(out.parent) == [out.name]  # no temporary file left


def _blocks(n, dim, rows=1000):
    rng = np.random.default_rng(0)
    for start in range(0, n, rows):
        yield rng.normal(size=(min(rows, n - start), dim)).astype(np.float32)


def _traced_peak(suffix, n, dim, folder):
    tracemalloc.start()
    try:
        write_embeddings(_blocks(n, dim), n, dim, folder / f"{n}{suffix}")
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize(("suffix", "n", "dim"), [(".npy", 200_000, 16),
                                                  (".parquet", 200_000, 16),
                                                  (".csv", 20_000, 4)])
def test_writer_memory_does_not_grow_with_rows(tmp_path, suffix, n, dim):
    """The Python-level peak while writing n rows exceeds that of n/10 rows by less than
    a quarter of the extra output (measured: under 10 kB; collecting the rows: > 100%)."""
    if suffix == ".parquet":
        pytest.importorskip("pyarrow")
    write_embeddings(_blocks(100, dim), 100, dim, tmp_path / f"warm{suffix}")  # imports
    small, large = (_traced_peak(suffix, m, dim, tmp_path) for m in (n // 10, n))
    extra_output = (n - n // 10) * dim * 4
    assert large - small < extra_output / 4, (small, large)
    if suffix == ".parquet":  # one row group is held: it must fit in the bound
        assert ROW_GROUP_ROWS * dim * 4 < extra_output / 4


@pytest.mark.parametrize("suffix", [".npy", ".csv"])
def test_failed_write_keeps_the_old_file(tmp_path, suffix):
    out = tmp_path / f"emb{suffix}"
    write_embeddings(_blocks(10, 4), 10, 4, out)
    before = out.read_bytes()

    def failing():
        yield np.zeros((5, 4), np.float32)
        raise ValueError("cannot read image file 'x.png'")

    with pytest.raises(ValueError, match="cannot read image file 'x.png'"):
        write_embeddings(failing(), 10, 4, out)
    with pytest.raises(ValueError, match=r"blocks hold 10 rows, expected n=12"):
        write_embeddings(_blocks(10, 4), 12, 4, out)
    with pytest.raises(ValueError, match=r"blocks must have shape \(rows, 3\), got \(10, 4\)"):
        write_embeddings(_blocks(10, 4), 10, 3, out)
    assert out.read_bytes() == before and os.listdir(tmp_path) == [out.name]


def test_killed_write_keeps_the_old_file(tmp_path):
    """A process killed (SIGKILL) half-way through leaves the earlier file intact; its
    temporary file is removed by the next write."""
    out = tmp_path / "emb.npy"
    write_embeddings(_blocks(10, 4), 10, 4, out)
    before = np.load(out)
    code = textwrap.dedent(f"""
        import os, signal
        import numpy as np
        from pipelines.streaming import write_embeddings

        def blocks():
            for _ in range(3):
                yield np.ones((1000, 4), np.float32)
            os.kill(os.getpid(), signal.SIGKILL)

        write_embeddings(blocks(), 10_000, 4, {str(out)!r})
    """)
    done = subprocess.run([sys.executable, "-c", code], cwd=_root(), capture_output=True)
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()
    np.testing.assert_array_equal(np.load(out), before)
    # the killed writer's temporary and its lock (the kernel dropped the flock: stale)
    left = sorted(p.name for p in tmp_path.iterdir() if p.name != out.name)
    assert len(left) == 2 and all(n.startswith(".emb.npy.") for n in left)
    assert left[0].endswith(".lock") and left[1].endswith(".tmp")
    write_embeddings(_blocks(10, 4), 10, 4, out)
    assert os.listdir(tmp_path) == [out.name]


def _root():
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_bad_requests_are_named(tmp_path):
    with pytest.raises(ValueError, match=r"path must end with one of \.npy, \.csv, \.parquet"
                                         r", got '.*e\.txt'"):
        write_embeddings([], 0, 4, tmp_path / "e.txt")
    with pytest.raises(ValueError, match=r"columns\['path'\] must have n=3 values, got 2"):
        write_embeddings([], 3, 4, tmp_path / "e.csv", columns={"path": ["a", "b"]})
    with pytest.raises(ValueError, match="dim must be at least 1, got 0"):
        write_embeddings([], 3, 0, tmp_path / "e.npy")
    assert list(tmp_path.iterdir()) == []


def test_cli_embed_streams_to_npy_and_csv(folder, encoder, expected, tmp_path):
    from pipelines.cli.main import main

    root = folder[0]
    for suffix in (".npy", ".csv"):
        out, err = io.StringIO(), io.StringIO()
        argv = ["embed", str(encoder[1]), str(root / "images"), "--image-size", "16",
                "--batch-size", "128", "--out", str(tmp_path / f"e{suffix}")]
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            assert main(argv) == 0, err.getvalue()
        assert f"{N_IMAGES} embeddings of dimension 8 written to" in out.getvalue()
    order = np.argsort(folder[2])  # the folder loader sorts by class then file name
    table = pd.read_csv(tmp_path / "e.csv")
    assert list(table.columns[:3]) == ["path", "label", "e0"]
    assert table["path"].tolist() == sorted(folder[2])
    np.testing.assert_allclose(np.load(tmp_path / "e.npy"), expected[order], atol=1e-5)
    np.testing.assert_allclose(table.iloc[:, 2:].to_numpy(), expected[order], atol=1e-5)


def test_shards_on_a_dask_cluster_equal_one_predict(folder, encoder, expected, tmp_path):
    distributed = pytest.importorskip("distributed", reason="the optional dask extra")
    from pipelines.cli.main import main
    from pipelines.streaming import iter_cluster_embeddings

    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None) as cluster:
        with distributed.Client(cluster) as client:
            blocks = list(iter_cluster_embeddings(client, encoder[1], folder[2], (16, 16, 3),
                                                  shard_size=700, batch_size=128))
            assert [len(b) for b in blocks] == [700, 700, 600]  # in order, shard by shard
            np.testing.assert_allclose(np.concatenate(blocks), expected, atol=1e-5)
        out, err = io.StringIO(), io.StringIO()
        argv = ["embed", str(encoder[1]), str(folder[0] / "images"), "--image-size", "16",
                "--scheduler", cluster.scheduler_address, "--out", str(tmp_path / "e.npy")]
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            assert main(argv) == 0, err.getvalue()
    assert "embedding on the Dask cluster at tcp://127.0.0.1:" in out.getvalue()
    order = np.argsort(folder[2])
    np.testing.assert_allclose(np.load(tmp_path / "e.npy"), expected[order], atol=1e-5)
