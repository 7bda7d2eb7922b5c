"""Embeddings of any number of images, computed and written batch by batch.

:func:`iter_embeddings` yields float32 blocks as the encoder produces them and
:func:`write_embeddings` writes them as they come, so memory stays flat in the number of
images: one batch of decoded images and one block of embeddings (for Parquet, one row
group) are all that is held, besides the caller's list of paths; the rows go straight to
the file::

    blocks = iter_embeddings(encoder, paths, (112, 112, 3), batch_size=256)
    write_embeddings(blocks, len(paths), 128, "embeddings.npy", columns={"path": paths})

Files are written to a temporary file in the target folder, fsynced and renamed into
place (:func:`embedder.files.atomic_path`): a run that fails or is killed leaves the
previous file untouched and never a partial one.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from pipelines.text import csv_column

FORMATS = (".npy", ".csv", ".parquet")
#: Rows per Parquet row group: 16384 x 128-d float32 is 8 MiB, large enough for fast
#: column reads, small enough to keep the writer's memory flat.
ROW_GROUP_ROWS = 16384


def iter_embeddings(model, X, input_shape, batch_size=256) -> Iterator[np.ndarray]:
    """Yield the embeddings of ``X`` in order, one float32 block per batch.

    Parameters
    ----------
    model : keras.Model
        An encoder mapping images ``(b, h, w, c)`` to embeddings ``(b, dim)``.
    X : ndarray or list of str
        A 4-D image array (sliced batch by batch) or a 1-D list/array of image file paths
        (decoded batch by batch, never all at once).
    input_shape : tuple of 3 ints
        ``(height, width, channels)`` the images of a batch are brought to.
    batch_size : int, default=256
        Images per batch, and rows per yielded block (the last block may be smaller).

    Yields
    ------
    block : ndarray of shape (b, dim), float32
        Raises ``ValueError`` naming the file if an image cannot be decoded.
    """
    import tensorflow as tf

    from embedder.data.decoding import decode_errors
    from embedder.data.image_pipeline import image_batches

    # one compiled call for all batches (predict_on_batch grew by ~2 kB a call, measured)
    embed = tf.function(lambda images: model(images, training=False), reduce_retracing=True)
    data = image_batches(X, input_shape, batch_size=batch_size)
    with decode_errors():
        for images in data:
            block = np.asarray(embed(images), dtype=np.float32)
            if block.ndim != 2:
                raise ValueError(f"model must output 2-D embeddings (batch, dim), got "
                                 f"shape {block.shape}")
            yield block


def write_embeddings(blocks: Iterable, n: int, dim: int, path, *, columns=None) -> Path:
    """Write ``n`` embedding rows arriving in ``blocks`` to ``path``, atomically.

    Parameters
    ----------
    blocks : iterable of ndarray of shape (b, dim)
        Consecutive rows, e.g. from :func:`iter_embeddings`; consumed once.
    n : int
        Total number of rows; the blocks must add up to exactly this many.
    dim : int
        Embedding dimension (columns of every block).
    path : str or path-like
        Output file: ``.npy`` (float32 ``(n, dim)``, rows appended as they come),
        ``.csv`` (appended in chunks) or ``.parquet`` (one row group per
        :data:`ROW_GROUP_ROWS` rows; needs ``pyarrow``). Its folder is created.
    columns : mapping of str to sequence, optional
        Per-row columns (e.g. ``{"path": paths, "label": y}``), each of length ``n``,
        written before the embedding columns ``e0 ... e{dim-1}`` of a CSV or Parquet file;
        ignored for ``.npy``.

    Returns
    -------
    path : Path
        The written file. On any error (also a kill) an earlier file at ``path`` is kept.
    """
    from embedder.files import atomic_path

    path = Path(path)
    n, dim, columns = _check_request(n, dim, path, columns)
    writer = {".npy": _write_npy, ".csv": _write_csv, ".parquet": _write_parquet}[path.suffix]
    if path.suffix == ".parquet":
        _pyarrow()  # fail before any image is embedded
    # disk full, file-size limit: atomic_path names the file (write() errors name none)
    with atomic_path(path) as tmp:
        writer(_checked_blocks(blocks, n, dim), n, dim, tmp, columns)
    return path


def _check_request(n, dim, path, columns):
    if path.suffix not in FORMATS:
        raise ValueError(f"path must end with one of {', '.join(FORMATS)}, got {str(path)!r}")
    for name, value in (("n", n), ("dim", dim)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    if dim == 0:
        raise ValueError("dim must be at least 1, got 0")
    columns = dict(columns or {})
    for name, values in columns.items():
        if len(values) != n:
            raise ValueError(f"columns[{name!r}] must have n={n} values, got {len(values)}")
    return int(n), int(dim), columns


def _checked_blocks(blocks, n, dim) -> Iterator[tuple[int, np.ndarray]]:
    """``(start_row, block)`` pairs; ValueError if a block's shape or the row count is off."""
    start = 0
    for block in blocks:
        block = np.asarray(block, dtype=np.float32)
        if block.ndim != 2 or block.shape[1] != dim:
            raise ValueError(f"blocks must have shape (rows, {dim}), got {block.shape} at "
                             f"row {start}")
        if start + len(block) > n:
            raise ValueError(f"blocks hold more than n={n} rows")
        yield start, block
        start += len(block)
    if start != n:
        raise ValueError(f"blocks hold {start} rows, expected n={n}")


def _write_npy(blocks, n, dim, tmp, columns):
    # Rows are appended in order after the header, the layout np.save writes. Not a
    # memory map: its written pages count in the process's resident memory while mapped
    # (measured: +512 B per 128-d image); plain writes leave them in the page cache.
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)),
              "fortran_order": False, "shape": (n, dim)}
    with open(tmp, "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        for _, block in blocks:
            f.write(np.ascontiguousarray(block).tobytes())


def _table(start, block, columns):
    """The rows ``start ..`` of ``columns`` and ``block`` as a dict of 1-D arrays."""
    stop = start + len(block)
    table = {name: np.asarray(values[start:stop]) for name, values in columns.items()}
    table.update((f"e{i}", block[:, i]) for i in range(block.shape[1]))
    return table


def _write_csv(blocks, n, dim, tmp, columns):
    import pandas as pd

    header = [*columns, *(f"e{i}" for i in range(dim))]
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        f.write(",".join(header) + "\n")
        for start, block in blocks:
            table = _table(start, block, columns)
            table.update((name, csv_column(table[name])) for name in columns)
            pd.DataFrame(table).to_csv(f, header=False, index=False)


def _pyarrow():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ValueError("writing .parquet needs the pyarrow package (pip install pyarrow); "
                         "write .npy or .csv instead") from None
    return pa, pq


def _write_parquet(blocks, n, dim, tmp, columns):
    pa, pq = _pyarrow()
    writer = None
    try:
        for start, block in _row_groups(blocks):
            table = pa.table(_table(start, block, columns))
            if writer is None:
                writer = pq.ParquetWriter(os.fspath(tmp), table.schema)
            writer.write_table(table, row_group_size=ROW_GROUP_ROWS)
        if writer is None:  # n == 0: an empty file with the columns
            empty = {name: np.asarray(values[:0]) for name, values in columns.items()}
            empty.update((f"e{i}", np.zeros(0, np.float32)) for i in range(dim))
            writer = pq.ParquetWriter(os.fspath(tmp), pa.table(empty).schema)
            writer.write_table(pa.table(empty))
    finally:
        if writer is not None:
            writer.close()


def _row_groups(blocks):
    """Join consecutive ``(start, block)`` pairs into blocks of ROW_GROUP_ROWS rows."""
    pending, first, rows = [], 0, 0
    for start, block in blocks:
        if not pending:
            first = start
        pending.append(block)
        rows += len(block)
        if rows >= ROW_GROUP_ROWS:
            yield first, np.concatenate(pending)
            pending, rows = [], 0
    if pending:
        yield first, np.concatenate(pending)


def embed_shard(encoder_path, X, input_shape, batch_size=256) -> np.ndarray:
    """Embeddings of one shard of images, on whatever process runs it (a Dask worker).

    Parameters
    ----------
    encoder_path : str
        A saved ``.keras`` encoder, readable where this runs.
    X : ndarray or list of str
        The shard's images or image paths (paths must be readable where this runs).
    input_shape : tuple of 3 ints
        ``(height, width, channels)`` the images are brought to.
    batch_size : int, default=256
        Images per inference batch.

    Returns
    -------
    ndarray of shape (len(X), dim), float32
    """
    from embedder.models.encoder_files import load_encoder_file

    model = load_encoder_file(encoder_path)[0]
    blocks = list(iter_embeddings(model, X, input_shape, batch_size))
    return np.concatenate(blocks) if blocks else np.zeros((0, model.output_shape[-1]),
                                                         dtype=np.float32)


def iter_cluster_embeddings(client, encoder_path, X, input_shape, *, shard_size=8192,
                            batch_size=256) -> Iterator[np.ndarray]:
    """Yield the embeddings of ``X`` in order, computed shard by shard on a Dask cluster.

    Every shard is submitted at once and the workers embed them in parallel; the blocks
    come back in order, one at a time, and each is released on the cluster as soon as it
    is handed on, so the caller holds one shard's rows (feed them to
    :func:`write_embeddings`).

    Parameters
    ----------
    client : distributed.Client
        A client of the cluster.
    encoder_path : str
        The saved ``.keras`` encoder, readable by every worker.
    X : ndarray or list of str
        Images or image paths (readable by every worker).
    input_shape : tuple of 3 ints
        ``(height, width, channels)`` the images are brought to.
    shard_size : int, default=8192
        Images per task.
    batch_size : int, default=256
        Images per inference batch on a worker.

    Yields
    ------
    block : ndarray of shape (b, dim), float32
    """
    path = os.fspath(encoder_path)
    futures = [client.submit(embed_shard, path, X[start:start + shard_size], input_shape,
                             batch_size, pure=False)
               for start in range(0, len(X), shard_size)]
    for i, future in enumerate(futures):
        block = future.result()
        futures[i] = None  # drop the reference: the cluster frees the shard's rows
        future.release()
        yield block
