"""Helpers shared by the ``triplet`` commands: data loading, shapes, tables."""

from __future__ import annotations

import sys

import numpy as np

#: Largest --image-size: a 4096 x 4096 x 3 float32 image is 192 MiB before any batch.
MAX_IMAGE_SIZE = 4096


def progress() -> int:
    """Keras verbosity: progress bars on a terminal, one line per epoch in logs/pipes."""
    return 1 if sys.stdout.isatty() else 2


def load(data):
    """``load_dataset(data)`` with a one-line summary of what was found."""
    from embedder.data.datasets import load_dataset

    X, y = load_dataset(data)
    print(f"DATA {data}: {len(y)} images, {len(np.unique(y))} classes", flush=True)
    return X, y


def input_shape(args, X):
    """Arrays carry their own shape; files are decoded to --image-size (else the default)."""
    if getattr(args, "image_size", None) is None or np.asarray(X).ndim != 1:
        return None
    return (args.image_size, args.image_size, 3)  # checked by check_options


def table(rows) -> str:
    """Two aligned columns: ``name  value`` per row."""
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


#: Suffixes of ``predict --out`` (the table's format follows the suffix).
PREDICTION_FORMATS = (".csv", ".json", ".parquet")
#: Suffixes of ``embed --out``.
EMBEDDING_FORMATS = (".npy", ".csv", ".parquet")
#: In a pipe or a log, one progress line per this many images.
PROGRESS_EVERY = 1000


class Progress:
    """Images done out of a total, on stderr (stdout may carry a CSV).

    On a terminal: one bar redrawn in place. In a pipe or a log: one line per ``every``
    images and a last line with the time taken.

    Parameters
    ----------
    total : int
        Images to do.
    what : str, default="embedded"
        The verb of the line, e.g. ``"embedded"``.
    every : int, default=PROGRESS_EVERY
        Images between two lines when not on a terminal.
    stream : file or None, default=None
        Where to write; ``None``: ``sys.stderr`` at the time of writing.
    """

    def __init__(self, total, what="embedded", *, every=PROGRESS_EVERY, stream=None):
        import time

        self.total, self.what, self.every = int(total), what, max(1, int(every))
        self.stream = stream
        self.done = 0
        self._start = time.perf_counter()

    def _out(self):
        return self.stream if self.stream is not None else sys.stderr

    def update(self, n: int) -> None:
        """Count ``n`` more images done and show the progress."""
        before, self.done = self.done, min(self.total, self.done + int(n))
        out = self._out()
        if out.isatty():
            filled = int(30 * self.done / max(self.total, 1))
            out.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {self.done}/{self.total} "
                      f"images {self.what}")
        elif self.done // self.every > before // self.every and self.done < self.total:
            out.write(f"{self.done}/{self.total} images {self.what}\n")
        out.flush()

    def close(self) -> None:
        """The last line: images done and seconds taken."""
        import time

        out = self._out()
        seconds = time.perf_counter() - self._start
        out.write(("\n" if out.isatty() else "")
                  + f"{self.done}/{self.total} images {self.what} in {seconds:.1f} s\n")
        out.flush()

    def blocks(self, blocks):
        """Yield ``blocks`` (arrays of rows) unchanged, counting their rows; closes at the end."""
        for block in blocks:
            self.update(len(block))
            yield block
        self.close()


class ProgressTransformer:
    """A fitted transformer whose ``transform`` embeds in chunks and shows a :class:`Progress`.

    Rows are embedded independently, so chunking changes no value; each chunk costs one
    more ``transform`` call, so chunks are large.

    Parameters
    ----------
    transformer : object with ``transform``
        The fitted embedding step(s).
    chunk : int, default=PROGRESS_EVERY
        Images per ``transform`` call.
    every : int, default=PROGRESS_EVERY
        Images between two progress lines in a pipe.
    """

    def __init__(self, transformer, chunk=PROGRESS_EVERY, every=PROGRESS_EVERY):
        self.transformer, self.chunk, self.every = transformer, max(1, int(chunk)), every

    def transform(self, X):
        """``transformer.transform(X)``, chunk by chunk, with a progress display."""
        n = len(X)
        progress = Progress(n, every=self.every)
        parts = []
        for start in range(0, n, self.chunk):
            parts.append(np.asarray(self.transformer.transform(X[start:start + self.chunk])))
            progress.update(len(parts[-1]))
        progress.close()
        return np.concatenate(parts) if parts else self.transformer.transform(X)


def write_table(frame, path) -> None:
    """Write a DataFrame atomically as CSV, JSON (records) or Parquet, by ``path``'s suffix.

    Parameters
    ----------
    frame : pandas.DataFrame
        The table.
    path : str or path-like
        Ends with one of :data:`PREDICTION_FORMATS` (checked by :func:`check_options`).
    """
    from pathlib import Path

    from embedder.files import atomic_path, atomic_write_text

    suffix = Path(path).suffix
    if suffix == ".json":
        atomic_write_text(path, frame.to_json(orient="records", indent=2) + "\n")
    elif suffix == ".parquet":
        with atomic_path(path, suffix=".parquet") as tmp:
            frame.to_parquet(tmp, index=False)
    else:
        from pipelines.text import csv_column

        # class names and paths come from users' folders: no spreadsheet formulas
        atomic_write_text(path, frame.apply(csv_column).to_csv(index=False))


def _at_least(flag, low):
    def check(value):
        if value < low:
            raise ValueError(f"{flag} must be at least {low}, got {value}")
    return check


def _check_image_size(size):
    _at_least("--image-size", 8)(size)
    if size > MAX_IMAGE_SIZE:  # a decoded image this large would exhaust memory
        raise ValueError(f"--image-size must be between 8 and {MAX_IMAGE_SIZE} pixels, "
                         f"got {size}")


def _check_heads(value):
    from classifiers import HEADS

    names = [h.strip() for h in value.split(",") if h.strip()]
    if not names:
        raise ValueError("--heads must name at least one head, e.g. knn,logreg,svm")
    unknown = [h for h in names if h not in HEADS]
    if unknown:
        raise ValueError(f"--heads must be comma-separated names from {list(HEADS)}, got "
                         f"{', '.join(map(repr, unknown))}")


def _check_n_jobs(value):
    if value == 0:
        raise ValueError("--n-jobs must be a positive number of processes or -1 (all "
                         "cores), got 0")


def _check_tpr(value):
    if not 0 < value <= 1:
        raise ValueError(f"--target-tpr must be in (0, 1], got {value}")


# option (its args attribute) -> check of its value when given; each raises ValueError
_RULES = {"heads": _check_heads, "cv": _at_least("--cv", 2),
          "n_jobs": _check_n_jobs, "open_set": _at_least("--open-set", 1),
          "image_size": _check_image_size,
          "batch_size": _at_least("--batch-size", 1), "top": _at_least("--top", 1),
          "target_tpr": _check_tpr}
# command -> suffixes its --out may end with
_OUT_SUFFIXES = {"predict": PREDICTION_FORMATS, "embed": EMBEDDING_FORMATS}


def check_options(args) -> None:
    """Check every option's value before a model is loaded or any data is read.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed command line.

    Raises
    ------
    ValueError
        Naming the option, what it takes and what it got.
    """
    for name, rule in _RULES.items():
        if getattr(args, name, None) is not None:
            rule(getattr(args, name))
    suffixes = _OUT_SUFFIXES.get(args.command)
    out = getattr(args, "out", None)
    if suffixes and out is not None:
        from pathlib import Path

        suffix = Path(out).suffix
        if suffix not in suffixes:
            raise ValueError(f"--out must end with one of {', '.join(suffixes)}, "
                             f"got {out!r}")
        if suffix == ".parquet":
            import importlib.util

            if importlib.util.find_spec("pyarrow") is None:
                raise ValueError("--out .parquet needs the pyarrow package (pip install "
                                 "pyarrow); use a .csv file instead")
    if args.command == "predict" and not args.reject_unknown and (
            args.target_tpr is not None or args.calibration is not None):
        raise ValueError("--target-tpr and --calibration only apply with --reject-unknown")
