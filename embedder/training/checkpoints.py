"""Checkpoint folders that know which run they belong to.

``keras.callbacks.BackupAndRestore`` resumes from whatever backup it finds. A folder left
by a run on other data, with other settings or another architecture would be resumed
silently (or fail deep inside Keras), so the folder gets a manifest, ``run.json``: a
digest of the training images and labels, the settings and the encoder's weight shapes.
A later run resumes only when all three match; otherwise it stops with a ``ValueError``
naming ``checkpoint_dir``. A damaged backup (its metadata not JSON, its weights file
truncated) stops the run the same way, naming the file, instead of with the parser's or
HDF5's own text (:class:`CheckedBackupAndRestore`).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import keras
import numpy as np

from embedder.checks import MESSAGE_LIMIT, summary

MANIFEST = "run.json"
HISTORY = "history.json"
#: Where ``keras.callbacks.BackupAndRestore`` records the epoch it resumes at.
BACKUP_METADATA = "training_metadata.json"
#: The weights ``keras.callbacks.BackupAndRestore`` restores.
WEIGHTS = "latest.weights.h5"
#: Settings that do not change what is trained.
_IGNORED_SETTINGS = ("verbose", "checkpoint_dir")


def _digest(*parts) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part if isinstance(part, bytes) else str(part).encode())
        h.update(b"\0")
    return h.hexdigest()


def run_manifest(config, encoder, X_train, y_train, input_shape) -> dict:
    """What identifies a training run: digests of its data, settings and architecture."""
    from embedder.data.fingerprints import image_fingerprints

    prints = image_fingerprints(X_train)
    data = _digest(*prints, np.asarray(y_train).astype(np.int64).tobytes(),
                   tuple(input_shape))
    settings = {k: v for k, v in config.to_dict().items() if k not in _IGNORED_SETTINGS}
    shapes = [tuple(int(d) for d in w.shape) for w in encoder.weights]
    return {
        "data_sha256": data,
        "settings": settings,
        "architecture_sha256": _digest(*shapes),
    }


def claim_checkpoint_dir(config, encoder, X_train, y_train, input_shape) -> Path:
    """Check that ``config.checkpoint_dir`` is free or holds this run; record the run.

    Parameters
    ----------
    config : TrainingConfig
        Resolved settings; ``checkpoint_dir`` is the folder.
    encoder : keras.Model
        The encoder about to be trained (its weight shapes identify the architecture).
    X_train, y_train : array-like
        The training images and labels.
    input_shape : tuple of int
        Shape the images are read in.

    Returns
    -------
    pathlib.Path
        The folder.

    Raises
    ------
    ValueError
        If the folder holds a manifest of another run, or backups without a manifest.
    """
    folder = Path(config.checkpoint_dir)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"checkpoint_dir {str(folder)!r} is a file, expected a folder")
    manifest = run_manifest(config, encoder, X_train, y_train, input_shape)
    path = folder / MANIFEST
    if path.is_file():
        _compare(folder, _read(path), manifest)
    elif folder.is_dir() and any(p.name != HISTORY for p in folder.iterdir()):
        raise ValueError(
            f"checkpoint_dir {str(folder)!r} holds files of an unknown run (no {MANIFEST}): "
            "resuming them could silently mix two runs; use an empty folder")
    folder.mkdir(parents=True, exist_ok=True)
    from embedder.files import atomic_write_text

    atomic_write_text(path, json.dumps(manifest, indent=2, sort_keys=True))
    return folder


def _read(path) -> dict:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _bad_manifest(path, _unreadable(exc)) from exc
    if not isinstance(data, dict):
        raise _bad_manifest(path, f"expected a JSON object, got {type(data).__name__}")
    return data


def _bad_manifest(path, problem) -> ValueError:
    return ValueError(
        f"checkpoint_dir manifest {os.fspath(path)!r} is damaged ({problem}): which run "
        "the folder holds is unknown; delete the folder to start fresh")


def _compare(folder, saved, current) -> None:
    differences = []
    if saved.get("data_sha256") != current["data_sha256"]:
        differences.append("the training images or labels")
    if saved.get("architecture_sha256") != current["architecture_sha256"]:
        differences.append("the encoder architecture")
    old = saved.get("settings") or {}
    changed = sorted(k for k in current["settings"] if old.get(k) != current["settings"][k])
    if changed:
        shown = ", ".join(f"{k} ({old.get(k)!r} -> {current['settings'][k]!r})"
                          for k in changed[:3])
        more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
        differences.append(f"the settings {shown}{more}")
    if differences:
        raise ValueError(
            f"checkpoint_dir {str(folder)!r} belongs to another training run: "
            f"{'; '.join(differences)} differ. Resuming would mix two runs; use another "
            "folder, or delete this one to start fresh")


def resume_epoch(backup_dir) -> int | None:
    """The epoch a ``BackupAndRestore`` in ``backup_dir`` resumes ``fit`` at; None if none.

    The data sampler is moved there before ``fit``, so a resumed run trains its remaining
    epochs on the batches the uninterrupted run would have drawn.

    Raises
    ------
    ValueError
        Naming the folder and the file, when the metadata file is there but damaged
        (not JSON, or no non-negative ``"epoch"``): the backup cannot be resumed.
    """
    path = Path(backup_dir) / BACKUP_METADATA
    if not os.path.lexists(path):
        return None
    try:
        metadata = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise _damaged(backup_dir, BACKUP_METADATA, _unreadable(exc)) from exc
    epoch = metadata.get("epoch") if isinstance(metadata, dict) else None
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        raise _damaged(backup_dir, BACKUP_METADATA,
                       f"expected {{\"epoch\": N >= 0, ...}}, got {summary(metadata, 60)}")
    return epoch


def _unreadable(exc) -> str:
    """Why a JSON file could not be read, short (the parser's position adds nothing)."""
    if isinstance(exc, json.JSONDecodeError):
        return f"not JSON: {exc.msg}"
    return summary(f"{type(exc).__name__}: {exc}", 100)


def _damaged(backup_dir, name, problem) -> ValueError:
    head = (f"checkpoint_dir {os.fspath(backup_dir)!r} cannot be resumed: its {name} is "
            "damaged (")
    tail = "); delete the folder to train from the first epoch"
    # the folder's name is kept whole; the parser's or HDF5's text gets what room is left
    room = max(40, MESSAGE_LIMIT - len(head) - len(tail))
    return ValueError(head + summary(problem, room) + tail)


class CheckedBackupAndRestore(keras.callbacks.BackupAndRestore):
    """``keras.callbacks.BackupAndRestore`` that refuses a damaged backup in one line.

    Keras would fail with the JSON parser's or HDF5's own text, which names neither the
    folder nor what to do; here a ``ValueError`` names the folder and the damaged file.
    """

    def on_train_begin(self, logs=None):
        resume_epoch(self.backup_dir)  # the metadata, before Keras reads it
        try:
            super().on_train_begin(logs)
        except (OSError, ValueError, KeyError, TypeError) as exc:  # h5py, Keras
            raise _damaged(self.backup_dir, WEIGHTS, str(exc) or type(exc).__name__) from exc
