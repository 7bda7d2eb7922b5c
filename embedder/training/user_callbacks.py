"""The user's Keras callbacks: checked, copied for ``clone`` and pickles, logged per run.

A ``TripletEmbedder`` hands the callbacks it is given to every ``fit`` of its training
run (:func:`embedder.training.build_training_run`); this module holds what the estimator
and the command line need around them:

- :func:`check_callbacks`: the argument check;
- :func:`portable_callbacks`: copies without the run's state (the training model, open or
  closed files, summary writers), which ``clone`` and pickling use. Keras callbacks
  rebuild that state in ``on_train_begin``, so a copy trains like the original;
- :class:`RunLogger`: TensorBoard or CSV logs, one sub-folder or file per training run,
  for the folds of a cross-validation that all get copies of the same callback.
"""

from __future__ import annotations

import copy
import os
import pickle
from pathlib import Path

import keras

from embedder.checks import few

#: Attributes a Keras callback sets from the training run (``set_model``).
_RUN_STATE = ("_model", "model")


def check_callbacks(callbacks, name="callbacks"):
    """``callbacks`` as a list of Keras callbacks; ``None`` gives ``[]``.

    Parameters
    ----------
    callbacks : list or tuple of keras.callbacks.Callback, or None
        The callbacks to check.
    name : str, default="callbacks"
        The argument's name in error messages.

    Returns
    -------
    list of keras.callbacks.Callback

    Raises
    ------
    TypeError
        If ``callbacks`` is not a list/tuple or holds something else than callbacks.
    """
    if callbacks is None:
        return []
    if not isinstance(callbacks, list | tuple):
        raise TypeError(f"{name} must be a list of keras.callbacks.Callback, got "
                        f"{type(callbacks).__name__}")
    wrong = [type(c).__name__ for c in callbacks
             if not isinstance(c, keras.callbacks.Callback)]
    if wrong:
        raise TypeError(f"{name} must hold keras.callbacks.Callback instances, got "
                        f"{few(wrong, formatter=str)}")
    return list(callbacks)


def portable_callback(callback):
    """A copy of ``callback`` without what a training run left in it.

    The training model is dropped and so is every attribute that cannot be pickled:
    files and summary writers a callback opens in ``on_train_begin`` become None, a
    dict or list of them (TensorBoard's writers) becomes empty.
    The copy is deep, so training it does not change the original.

    Parameters
    ----------
    callback : keras.callbacks.Callback
        A callback, fresh or used.

    Returns
    -------
    keras.callbacks.Callback
    """
    state = {}
    for key, value in vars(callback).items():
        if key in _RUN_STATE:
            state[key] = None
            continue
        state[key] = value if _picklable(value) else _emptied(value)
    twin = copy.copy(callback)
    vars(twin).clear()
    vars(twin).update(copy.deepcopy(state))
    return twin


def _picklable(value):
    try:
        pickle.dumps(value)
    except Exception:  # each library raises its own type for unpicklable objects
        return False
    return True


def _emptied(value):
    # A container of run state (TensorBoard's summary writers by name) becomes empty,
    # as the callback's __init__ made it; anything else unpicklable becomes None.
    if isinstance(value, dict | list | set | tuple):
        return type(value)()
    return None


def portable_callbacks(callbacks):
    """:func:`portable_callback` of each of ``callbacks`` (None stays None).

    Parameters
    ----------
    callbacks : list or tuple of keras.callbacks.Callback, or None
        The callbacks to copy.

    Returns
    -------
    list of keras.callbacks.Callback or None
    """
    if callbacks is None:
        return None
    return type(callbacks)(portable_callback(c) for c in callbacks)


class RunLogger(keras.callbacks.Callback):
    """TensorBoard or CSV logs of every training run, each in its own sub-folder or file.

    Each run (``on_train_begin``) claims the next free number ``N`` in the target's
    folder by creating ``run-N`` (TensorBoard) or ``<stem>-run-N<suffix>`` (CSV); the
    claim is one ``mkdir`` or an exclusive file creation, so copies of this callback in
    parallel folds, threads or processes never share a log. The wrapped Keras callback
    is built then, so a copy (``clone``) starts clean.

    Parameters
    ----------
    kind : {"tensorboard", "csv"}
        ``keras.callbacks.TensorBoard`` or ``keras.callbacks.CSVLogger``.
    path : str or path-like
        The TensorBoard folder, or the CSV file whose name the runs are numbered after.
    """

    def __init__(self, kind, path):
        super().__init__()
        if kind not in ("tensorboard", "csv"):
            raise ValueError(f"kind must be 'tensorboard' or 'csv', got {kind!r}")
        self.kind = kind
        self.path = os.fspath(path)
        self.logger = None
        self.run_path = None

    def _claim(self) -> str:
        target = Path(self.path)
        folder = target if self.kind == "tensorboard" else target.parent
        folder.mkdir(parents=True, exist_ok=True)
        number = 1
        while True:
            if self.kind == "tensorboard":
                candidate = folder / f"run-{number}"
            else:
                candidate = folder / f"{target.stem}-run-{number}{target.suffix}"
            try:
                if self.kind == "tensorboard":
                    candidate.mkdir()
                else:
                    candidate.touch(exist_ok=False)
                return str(candidate)
            except FileExistsError:
                number += 1

    def on_train_begin(self, logs=None):
        self.run_path = self._claim()
        if self.kind == "tensorboard":
            self.logger = keras.callbacks.TensorBoard(self.run_path)
        else:
            self.logger = keras.callbacks.CSVLogger(self.run_path)
        self.logger.set_model(self.model)
        self.logger.set_params(self.params)
        self.logger.on_train_begin(logs)

    def set_model(self, model):
        super().set_model(model)
        if self.logger is not None:
            self.logger.set_model(model)

    def on_epoch_begin(self, epoch, logs=None):
        self.logger.on_epoch_begin(epoch, logs)

    def on_epoch_end(self, epoch, logs=None):
        self.logger.on_epoch_end(epoch, logs)

    def on_train_end(self, logs=None):
        self.logger.on_train_end(logs)
