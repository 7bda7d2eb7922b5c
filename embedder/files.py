"""Atomic file outputs: a reader sees the old file or the new one, never a partial one.

Every file the library writes goes through :func:`atomic_path`: the content is written to
a uniquely named temporary file in the target's own folder (so the final rename never
crosses file systems), flushed to disk with ``fsync`` and moved over the target with
``os.replace``, which is atomic on POSIX and Windows. A crash or ``kill -9`` before the
rename leaves the earlier target untouched; the temporary file it leaves behind is
removed by the next write to the same target (:func:`clean_stale_temporaries`). A writer
holds an exclusive ``flock`` on a lock file beside its temporary for as long as it
writes; the kernel drops the lock when the writer ends, however it ends, so clean-up
tells live writers from dead ones on a shared folder too, where process ids of other
machines or containers (PID namespaces) mean nothing.
Concurrent writers to one path each write their own temporary file, so the target is
always one writer's complete output (the last rename wins).

Pure Python and NumPy: no TensorFlow import, so heads and reports can use it.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np

__all__ = [
    "atomic_path",
    "atomic_save_npy",
    "atomic_write_bytes",
    "atomic_write_text",
    "clean_stale_temporaries",
    "os_errors_named",
    "temporary_name",
]

#: Temporaries without a lock (older versions, or no ``flock``) are removed once older
#: than this (s).
STALE_AFTER_S = 3600.0

# ".<target name>.<pid>-<32 hex>.tmp" optionally followed by the writer's suffix; the
# "<pid>.<hex>" form is what earlier versions of save_pipeline left behind.
_TEMP_RE = re.compile(
    r"^(?P<base>\.(?P<stem>.+)\.(?P<pid>\d+)[-.][0-9a-f]{32})\.tmp(\.[^.]+)?$")
_LOCK_RE = re.compile(r"^\.(?P<stem>.+)\.\d+-[0-9a-f]{32}\.lock$")


def temporary_name(target_name, suffix=None):
    """A unique hidden temporary name for ``target_name``: ``.<name>.<pid>-<hex>.tmp``.

    Parameters
    ----------
    target_name : str
        File name (no folder) of the final target.
    suffix : str or None, default=None
        Appended after ``.tmp`` for writers that insist on an extension (Keras needs
        ``.keras``).

    Returns
    -------
    str
        The temporary file name; the writer's process id lets
        :func:`clean_stale_temporaries` tell a crashed writer from a running one.
    """
    return f".{target_name}.{os.getpid()}-{uuid.uuid4().hex}.tmp{suffix or ''}"


@contextlib.contextmanager
def os_errors_named(path, action="cannot write"):
    """OS errors of the body that name no file say ``action path`` instead.

    ``write()`` failing on a full disk or at the file-size limit raises an ``OSError``
    without a file name ("[Errno 28] No space left on device"); here it becomes
    ``OSError(errno, "cannot write <path>: No space left on device")``, of the same
    subclass. Errors that already name a file pass unchanged.

    Parameters
    ----------
    path : str or os.PathLike
        The file the body writes.
    action : str, default="cannot write"
        What the message says was not possible, before ``path``.
    """
    try:
        yield
    except OSError as exc:
        if exc.filename is not None or exc.errno is None:
            raise
        raise OSError(exc.errno, f"{action} {os.fspath(path)}: {exc.strerror}") from exc


def _fsync_file(path):
    fd = os.open(path, os.O_RDWR)  # Windows needs write access to flush
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_folder(folder):
    # Makes the rename itself durable; not possible on every platform, hence best effort.
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _prepare_folder(path):
    """Create the target's folder; a ValueError naming ``path`` if that cannot be."""
    if path.is_dir():
        raise ValueError(f"cannot write {path}: it is a folder, expected a file name")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as exc:
        raise ValueError(
            f"cannot write {path}: a part of its folder {path.parent} is a regular file,"
            " expected a folder"
        ) from exc


def _fcntl():
    """The ``fcntl`` module, or None where there is none (Windows): age decides there."""
    if sys.platform == "win32":
        return None
    import fcntl

    return fcntl


def _lock_path(tmp):
    """The lock file of temporary ``tmp``: its name with ``.lock`` for ``.tmp...``."""
    return tmp.with_name(_TEMP_RE.match(tmp.name)["base"] + ".lock")


@contextlib.contextmanager
def _writer_lock(tmp):
    """Hold an exclusive lock on the lock file of ``tmp`` while the body writes."""
    fcntl = _fcntl()
    if fcntl is None:
        yield
        return
    lock = _lock_path(tmp)
    fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock)
        os.close(fd)


def _unlocked(lock):
    """Whether nobody holds ``lock`` (then it is removed, under the lock); False if held."""
    fcntl = _fcntl()
    try:
        fd = os.open(lock, os.O_WRONLY)
    except FileNotFoundError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return False
    with contextlib.suppress(OSError):
        os.unlink(lock)
    os.close(fd)
    return True


def _stale(entry, match, folder, old):
    """Whether the temporary ``entry`` was left by a writer that has ended."""
    lock = Path(folder) / (match["base"] + ".lock")
    if _fcntl() is None or not os.path.lexists(lock):
        return old  # no lock to ask (an older version's temporary): age decides
    return _unlocked(lock)


def clean_stale_temporaries(folder, stem, *, max_age_s=STALE_AFTER_S):
    """Remove temporaries of target ``stem`` in ``folder`` left by crashed writers.

    A temporary is stale when nobody holds the lock beside it (its writer ended: the
    kernel releases a ``flock`` when its process ends), or, for a temporary without a
    lock (older versions, systems without ``flock``), when it is older than
    ``max_age_s``. Temporaries of running writers are kept, whatever machine or PID
    namespace they run in, so concurrent writers on a shared folder do not delete each
    other's work. Lock files left without a temporary are removed too.

    Parameters
    ----------
    folder : str or os.PathLike
        The target's folder.
    stem : str
        The target's file name, e.g. ``"model.joblib"``.
    max_age_s : float, default=STALE_AFTER_S
        Age after which a temporary without a lock counts as stale.

    Returns
    -------
    int
        The number of files removed.
    """
    folder = Path(folder)
    removed = 0
    prefix = f".{stem}."
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    now = time.time()
    for entry in entries:
        match = _TEMP_RE.match(entry.name) if entry.name.startswith(prefix) else None
        if match is None or match["stem"] != stem:
            lock = _LOCK_RE.match(entry.name) if entry.name.startswith(prefix) else None
            if lock is not None and lock["stem"] == stem and _fcntl() is not None:
                orphan = not any(e.name.startswith(entry.name[:-len(".lock")] + ".tmp")
                                 for e in entries)
                with contextlib.suppress(OSError):
                    if orphan:
                        _unlocked(entry.path)
            continue
        with contextlib.suppress(OSError):
            old = now - entry.stat(follow_symlinks=False).st_mtime > max_age_s
            if _stale(entry, match, folder, old):
                os.unlink(entry.path)
                removed += 1
    return removed


@contextlib.contextmanager
def atomic_path(path, *, suffix=None) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path`` atomically.

    Parameters
    ----------
    path : str or os.PathLike
        The final file. Missing parent folders are created.
    suffix : str or None, default=None
        Extension appended to the temporary name (e.g. ``".keras"``, which Keras
        requires); the name otherwise starts with ``"."`` and ends with ``".tmp"``.

    Yields
    ------
    pathlib.Path
        A unique, not yet existing path in the same folder. The body must create it.

    Raises
    ------
    ValueError
        If ``path`` is a folder or a part of its folder is a regular file, or if the
        body finished without creating the temporary file.
    OSError
        Naming ``path`` when the body's error named no file (disk full, file-size
        limit: :func:`os_errors_named`).

    Notes
    -----
    On success the temporary file is fsynced and moved over ``path`` with
    ``os.replace``. On any exception (``KeyboardInterrupt`` too) it is removed and
    ``path`` is left as it was. Stale temporaries of the same target left by killed
    writers are removed first.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> with atomic_path(folder / "a.txt") as tmp:
    ...     _ = tmp.write_text("hello")
    >>> (folder / "a.txt").read_text()
    'hello'
    """
    path = Path(os.fspath(path))
    _prepare_folder(path)
    clean_stale_temporaries(path.parent, path.name)
    tmp = path.with_name(temporary_name(path.name, suffix))
    with _writer_lock(tmp), os_errors_named(path):
        try:
            yield tmp
            if not tmp.is_file():
                raise ValueError(f"writing {path} produced no file at the temporary path "
                                 f"{tmp}")
            _fsync_file(tmp)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise
    _fsync_folder(path.parent)


def atomic_write_bytes(path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`).

    Parameters
    ----------
    path : str or os.PathLike
        The final file.
    data : bytes
        The content.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path, text: str, *, encoding="utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_path`).

    Parameters
    ----------
    path : str or os.PathLike
        The final file.
    text : str
        The content; newlines are written as given (no platform translation).
    encoding : str, default="utf-8"
        Text encoding.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    return atomic_write_bytes(path, text.encode(encoding))


def atomic_save_npy(path, array) -> Path:
    """Save ``array`` as ``.npy`` to ``path`` atomically, without pickled objects.

    Parameters
    ----------
    path : str or os.PathLike
        The final file, used as given (unlike :func:`numpy.save`, no ``.npy`` is
        appended).
    array : array-like
        The data; object arrays are refused, as :func:`numpy.load` refuses them by
        default.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    array = np.asarray(array)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array, allow_pickle=False)
    return Path(path)
