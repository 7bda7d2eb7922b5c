"""``TripletEmbedder``: a triplet-trained (or frozen) encoder as a scikit-learn transformer."""

from __future__ import annotations

import contextlib
import os
import tempfile
from numbers import Integral, Real
from pathlib import Path

import numpy as np
from sklearn.base import (
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    TransformerMixin,
    _fit_context,
)
from sklearn.preprocessing import LabelEncoder
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_consistent_length, check_is_fitted, validate_data

from embedder import embedding_cache
from embedder.data import check_images, decode_errors, image_batches
from embedder.distances import DISTANCES
from embedder.encoders import available_encoders, build_encoder, load_encoder
from embedder.fingerprints import image_fingerprints
from embedder.inputs import is_paths, resolve_input_shape, shape_for_features
from embedder.losses import LOSSES
from embedder.sampling import check_class_sizes
from embedder.serialization import model_from_bytes, model_to_bytes, seed_from, seeded
from embedder.training import train_encoder

PATHS_DEFAULT_SHAPE = (112, 112, 3)
FINGERPRINTS_SUFFIX = ".fingerprints.npy"


class TripletEmbedder(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Image embeddings from an encoder trained with a triplet-style loss.

    ``fit`` trains a registered encoder (``"seed_cnn"``, ``"small_cnn"``,
    ``"mobilenet_v2"``, ``"resnet50"``) on class-balanced P x K batches with in-batch
    mining, or, when ``encoder`` is the path of a saved ``.keras`` encoder, loads it
    *frozen* and trains nothing. ``transform`` returns one unit-norm float32 row per
    image, ready for kNN, logistic-regression or SVM heads in a ``Pipeline``.

    Parameters
    ----------
    encoder : str or path-like, default="seed_cnn"
        A registered encoder name, or the path of a saved ``.keras`` encoder (frozen).
    input_shape : tuple of 3 ints or None, default=(112, 112, 3)
        Shape the images are given in: 2-D ``X`` of shape (n, h*w*c) is reshaped to it and
        image files are decoded to it. ``None`` infers it from ``X`` (a square grey image
        when the feature count is a square, else a 1-pixel-high strip).
    embedding_dim : int, default=128
    loss : {"batch_all", "batch_hard", "semi_hard", "contrastive", "triplet"}, \
            default="batch_all"
        ``"triplet"`` is the seed's approach: offline random triplets through three
        inputs of one shared encoder, kept as a baseline.
    margin : float or None, default=None
        ``None`` takes the loss's default (0.2 for triplet losses, 0.5 for contrastive).
    distance : {"euclidean", "squared", "cosine"}, default="euclidean"
    classes_per_batch : int or None, default=None
        P of the P x K batches; ``None`` picks about 64 / K classes (all, if fewer).
    samples_per_class : int, default=4
        K of the P x K batches.
    epochs : int, default=20
        Upper bound: early stopping on validation MAP@R usually ends sooner.
    learning_rate : float, default=1e-3
        Peak Adam rate, reached after a one-epoch warm-up, then cosine decay.
    validation_fraction : float, default=0.1
        Stratified hold-out for validation P@1/MAP@R, early stopping and best-weights
        restore; 0 disables it (tiny sets are trained without one).
    augment : bool, default=False
        Random flips, shifts and brightness changes during training.
    strategy : {"mirrored"} or None, default=None
        ``"mirrored"`` trains with ``tf.distribute.MirroredStrategy`` (all local GPUs).
    random_state : int, RandomState or None, default=None
        Makes training reproducible on CPU (sampling, initial weights, augmentation).
    verbose : int, default=0
        0 silent, 1 Keras progress bar, 2 one line per epoch.
    checkpoint_dir : str or None, default=None
        Per-epoch training backups; ``fit`` resumes an interrupted run from them.

    Attributes
    ----------
    encoder_ : keras.Model
    history_ : dict of str -> list
        Per-epoch training logs (loss, active triplet fraction, mean positive/negative
        distance, embedding norms, validation P@1/MAP@R, ``collapsed`` flags); empty for a
        frozen encoder.
    classes_ : ndarray
    n_features_in_ : int
        Pixels per image (h * w * c of ``input_shape_``).
    input_shape_ : tuple of int
    frozen_ : bool
    collapsed_ : bool
        Whether the collapse detector fired during training.
    training_fingerprints_ : ndarray of str
        Content digests of the images the encoder was trained on (empty when unknown), so
        reports can detect an encoder that saw the evaluated images.
    """

    _parameter_constraints: dict = {
        "encoder": [str, os.PathLike],
        "input_shape": [tuple, list, None],
        "embedding_dim": [Interval(Integral, 1, None, closed="left")],
        "loss": [StrOptions(set(LOSSES))],
        "margin": [Interval(Real, 0, None, closed="left"), None],
        "distance": [StrOptions(set(DISTANCES))],
        "classes_per_batch": [Interval(Integral, 2, None, closed="left"), None],
        "samples_per_class": [Interval(Integral, 2, None, closed="left")],
        "epochs": [Interval(Integral, 1, None, closed="left")],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "validation_fraction": [Interval(Real, 0, 1, closed="left")],
        "augment": ["boolean"],
        "strategy": [StrOptions({"mirrored"}), None],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
        "checkpoint_dir": [str, os.PathLike, None],
    }

    def __init__(
        self,
        encoder="seed_cnn",
        input_shape=(112, 112, 3),
        embedding_dim=128,
        loss="batch_all",
        margin=None,
        distance="euclidean",
        classes_per_batch=None,
        samples_per_class=4,
        epochs=20,
        learning_rate=1e-3,
        validation_fraction=0.1,
        augment=False,
        strategy=None,
        random_state=None,
        verbose=0,
        checkpoint_dir=None,
    ):
        self.encoder = encoder
        self.input_shape = input_shape
        self.embedding_dim = embedding_dim
        self.loss = loss
        self.margin = margin
        self.distance = distance
        self.classes_per_batch = classes_per_batch
        self.samples_per_class = samples_per_class
        self.epochs = epochs
        self.learning_rate = learning_rate
        self.validation_fraction = validation_fraction
        self.augment = augment
        self.strategy = strategy
        self.random_state = random_state
        self.verbose = verbose
        self.checkpoint_dir = checkpoint_dir

    # ------------------------------------------------------------------ inputs
    def _prepare_X(self, X, *, reset):
        """Return images as a 4-D array or a 1-D object array of paths."""
        if isinstance(X, (str, os.PathLike)):
            raise TypeError(
                f"X must be a list or array of image paths or images, got a single "
                f"{type(X).__name__} {str(X)!r}; wrap it in a list"
            )
        if is_paths(X):
            paths = np.asarray([os.fspath(p) for p in X], dtype=object)
            if reset:
                self.input_shape_ = self._resolved_shape(PATHS_DEFAULT_SHAPE)
                self.n_features_in_ = int(np.prod(self.input_shape_))
            return paths
        arr = X if isinstance(X, np.ndarray) else np.asarray(X)
        if arr.ndim == 4:
            check_images(arr, name="X")
            if reset:
                self.input_shape_ = self._resolved_shape(arr.shape[1:])
                self.n_features_in_ = int(np.prod(self.input_shape_))
            if arr.shape[-1] != self.input_shape_[-1]:
                raise ValueError(
                    f"X has images with {arr.shape[-1]} channels, but {type(self).__name__}"
                    f" expects {self.input_shape_[-1]} (input_shape={self.input_shape_})"
                )
            return arr
        arr = validate_data(self, X, reset=reset, dtype=None, ensure_min_samples=1)
        if arr.dtype.kind not in "uif":
            arr = arr.astype(np.float32)
        if reset:
            self.input_shape_ = self._resolved_shape(shape_for_features(arr.shape[1]))
            if int(np.prod(self.input_shape_)) != arr.shape[1]:
                raise ValueError(
                    f"X has {arr.shape[1]} features per row, but input_shape="
                    f"{tuple(self.input_shape_)} needs {int(np.prod(self.input_shape_))}"
                    " (h * w * c): pass images as a 4-D array or fix input_shape"
                )
            self.n_features_in_ = arr.shape[1]
        return arr.reshape((len(arr), *self.input_shape_))

    def _resolved_shape(self, inferred):
        return resolve_input_shape(self.input_shape, inferred)

    # --------------------------------------------------------------------- fit
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Train the encoder on images ``X`` with labels ``y`` (or load a frozen one).

        Parameters
        ----------
        X : ndarray (n, h, w, c), ndarray (n, h*w*c), or list/array of image paths
        y : array-like of shape (n,)
            Required to train; optional for a frozen encoder.

        Returns
        -------
        self
        """
        images = self._prepare_X(X, reset=True)
        encoder = self.encoder
        trainable = isinstance(encoder, str) and encoder in available_encoders()
        if y is None:
            if trainable:
                raise ValueError(
                    f"{type(self).__name__} requires y to be passed, but the target y is None"
                    f" (encoder={encoder!r} is trained on labelled images)"
                )
            y = np.zeros(len(images), dtype=int)
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] == 1:
            y = y.ravel()
        check_consistent_length(images, y)
        check_classification_targets(y)
        if trainable:
            self._fit_trainable(images, y, encoder)
        else:
            self._fit_frozen(images, y, encoder)
        return self

    def _fit_frozen(self, images, y, path):
        if not str(path).endswith(".keras") and not os.path.exists(path):
            raise ValueError(
                f"encoder must be one of {available_encoders()} or the path of a saved "
                f".keras encoder, got {path!r}"
            )
        key = embedding_cache.file_key(path) if os.path.exists(path) else None
        if key not in embedding_cache.ENCODERS:
            model = load_encoder(path)  # raises ValueError naming the file
            sidecar = Path(os.fspath(path) + FINGERPRINTS_SUFFIX)
            prints = np.load(sidecar) if sidecar.exists() else np.asarray([], dtype=str)
            embedding_cache.ENCODERS[key] = (model, prints)
        self.encoder_, self.training_fingerprints_ = embedding_cache.ENCODERS[key]
        self._cache_key = key
        self.classes_ = np.unique(y)
        self.frozen_ = True
        self.collapsed_ = False
        self.history_ = {}

    def _fit_trainable(self, images, y, name):
        labels = LabelEncoder().fit(y)
        self.classes_ = labels.classes_
        if len(self.classes_) < 2:
            raise ValueError(
                f"y has 1 class ({self.classes_[0]!r}); triplet training needs at least 2"
                " classes with 2 or more images each"
            )
        y_enc = labels.transform(y)
        check_class_sizes(y)
        seed = seed_from(self.random_state)
        with seeded(seed):
            strategy = _strategy(self.strategy)
            scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
            with scope:
                encoder = build_encoder(name, self.input_shape_, self.embedding_dim)
            self.history_ = train_encoder(
                encoder, images, y_enc,
                input_shape=self.input_shape_, loss=self.loss, margin=self.margin,
                distance=self.distance, classes_per_batch=self.classes_per_batch,
                samples_per_class=self.samples_per_class, epochs=self.epochs,
                learning_rate=self.learning_rate,
                validation_fraction=self.validation_fraction, augment=self.augment,
                checkpoint_dir=self.checkpoint_dir, strategy=strategy, random_state=seed,
                verbose=self.verbose,
            )
        self.encoder_ = encoder
        self.frozen_ = False
        self.collapsed_ = bool(any(self.history_.get("collapsed", [])))
        self.training_fingerprints_ = image_fingerprints(images)
        self._cache_key = None

    # --------------------------------------------------------------- transform
    def transform(self, X):
        """Embed images: float32 array (n, embedding_dim) with unit-norm rows."""
        check_is_fitted(self)
        images = self._prepare_X(X, reset=False)
        if len(images) == 0:
            return np.zeros((0, self._n_features_out), dtype=np.float32)
        if self._cache_key is not None:
            return embedding_cache.CACHE.embed(self._cache_key, images, self._embed)
        return self._embed(images)

    def _embed(self, images):
        data = image_batches(images, self.input_shape_, batch_size=256)
        with decode_errors():
            return np.asarray(self.encoder_.predict(data, verbose=0), dtype=np.float32)

    @property
    def _n_features_out(self):
        return int(self.encoder_.output_shape[-1])

    def save_encoder(self, path):
        """Save the encoder as ``.keras`` plus a fingerprint sidecar; return the path."""
        check_is_fitted(self)
        path = Path(path)
        if path.suffix != ".keras":
            raise ValueError(f"path must end with '.keras', got {str(path)!r}")
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
            model_tmp, prints_tmp = Path(tmp) / "encoder.keras", Path(tmp) / "prints.npy"
            self.encoder_.save(model_tmp)
            np.save(prints_tmp, self.training_fingerprints_)
            os.replace(prints_tmp, os.fspath(path) + FINGERPRINTS_SUFFIX)
            os.replace(model_tmp, path)
        return path

    # ------------------------------------------------------------ persistence
    def __getstate__(self):
        state = dict(super().__getstate__())  # object.__getstate__ returns __dict__ itself
        if "encoder_" in state:
            state["encoder_"] = model_to_bytes(state["encoder_"])
        return state

    def __setstate__(self, state):
        if isinstance(state.get("encoder_"), bytes):
            state = {**state, "encoder_": model_from_bytes(state["encoder_"])}
        super().__setstate__(state)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        tags.transformer_tags.preserves_dtype = ["float32"]
        return tags


def _strategy(name):
    if name is None:
        return None
    import tensorflow as tf

    return tf.distribute.MirroredStrategy()
