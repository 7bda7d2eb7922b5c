"""``FrozenEmbedder``: a saved ``.keras`` encoder as a stage-two transformer."""

from __future__ import annotations

import os
from numbers import Integral

from sklearn.base import BaseEstimator

from classifiers.sklearn_compat import Interval, fit_context
from embedder.base import EmbedderBase
from embedder.checks import check_non_empty, summary
from embedder.embedding_cache import EmbeddingCache


class FrozenEmbedder(EmbedderBase, BaseEstimator):
    """Embed images with a saved encoder, trained elsewhere and left as it is.

    ``fit`` loads the encoder file (in Keras's safe mode), checks that it reads images
    like ``X``, and trains nothing; ``y`` is optional. ``transform`` returns one
    unit-norm float32 row per image. The encoder's training fingerprints (saved beside
    it by :meth:`TripletEmbedder.save_encoder`) let reports detect evaluated images that
    the encoder has already seen.

    Embedding is deterministic, so a search over *head* parameters can embed each image
    once: pass ``cache=EmbeddingCache()`` (shared by all clones, keyed by the encoder
    file's digest, the input shape and each image's digest), or cross-validate heads
    with :func:`pipelines.cross_validate_report` and ``refit_encoder="never"``.

    Parameters
    ----------
    encoder : str or path-like
        The saved ``.keras`` encoder.
    input_shape : tuple of 3 ints or None, default=None
        Shape the images are given in (2-D rows are reshaped to it, files decoded to it);
        None infers it from ``X`` (``(112, 112, 3)`` for image files).
    batch_size : int, default=256
        Images per inference batch.
    cache : EmbeddingCache or None, default=None
        A cache owned by the caller and shared by clones; None embeds every time.

    Attributes
    ----------
    encoder_ : keras.Model
        The loaded encoder.
    encoder_sha256_ : str
        Digest of the encoder file's bytes when it was loaded.
    training_fingerprints_ : ndarray of str
        Content digests of the images the encoder was trained on (empty when unknown).
    input_shape_ : tuple of int
        The resolved image shape.
    n_features_in_ : int
        What ``fit`` was given per image: 1 for a column of image paths, else the
        pixels per image (h * w * c of ``input_shape_``).
    feature_names_in_ : ndarray of str
        The column names of a ``DataFrame`` given to ``fit`` (one name for a column of
        paths, e.g. from a ``ColumnTransformer``); absent for other inputs.

    See Also
    --------
    TripletEmbedder : Train (or fine-tune) an encoder.

    Examples
    --------
    >>> import numpy as np
    >>> from embedder import FrozenEmbedder, TripletEmbedder
    >>> rng = np.random.default_rng(0)
    >>> X, y = rng.uniform(0, 255, (40, 8, 8, 1)), np.repeat([0, 1], 20)
    >>> path = TripletEmbedder("small_cnn", input_shape=(8, 8, 1), embedding_dim=8,
    ...                        epochs=1, random_state=0).fit(X, y).save_encoder("enc.keras")
    >>> FrozenEmbedder("enc.keras").fit(X).transform(X).shape
    (40, 8)
    """

    _parameter_constraints: dict = {
        "encoder": [str, os.PathLike],
        "input_shape": [tuple, list, None],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "cache": [EmbeddingCache, None],
    }

    def __init__(self, encoder, *, input_shape=None, batch_size=256, cache=None):
        self.encoder = encoder
        self.input_shape = input_shape
        self.batch_size = batch_size
        self.cache = cache

    @property
    def _batch_size(self):
        return self.batch_size

    @fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Load the encoder and check it against ``X``; nothing is trained.

        Parameters
        ----------
        X : ndarray (n, h, w, c), ndarray (n, h*w*c), or list/array of image paths
            Images in the form ``transform`` will get.
        y : None
            Ignored.

        Returns
        -------
        self : FrozenEmbedder
            The fitted embedder.
        """
        from embedder.models.encoder_files import check_encoder_channels, load_encoder_file

        if hasattr(X, "__len__") and not isinstance(X, str | os.PathLike):
            check_non_empty(X, "X")
        images = self._prepare_X(X, reset=True)
        self.encoder_, self.training_fingerprints_, self.encoder_sha256_ = (
            load_encoder_file(self.encoder))
        check_encoder_channels(self.encoder_, self.input_shape_, self.encoder)
        self._check_reads(images[:1])
        return self

    def _check_reads(self, sample):
        """Run one image through the encoder now, so a mismatch names the file at fit."""
        import numpy as np

        try:
            out = self._embed(sample)
        except ValueError:
            raise
        except Exception as exc:  # Keras/TF raise many types for a wrong input
            raise ValueError(
                f"encoder file {os.fspath(self.encoder)!r} cannot embed images of shape "
                f"{tuple(self.input_shape_)}: {summary(f'{type(exc).__name__}: {exc}', 150)}"
            ) from exc
        if out.ndim != 2:
            raise ValueError(
                f"encoder file {os.fspath(self.encoder)!r} is not an image encoder: it "
                f"returns arrays of shape {out.shape[1:]}, expected (embedding_dim,)")
        if not np.all(np.isfinite(out)):
            raise ValueError(f"encoder file {os.fspath(self.encoder)!r} returns non-finite "
                             "embeddings")

    def _embed_all(self, images):
        if self.cache is None:
            return self._embed(images)
        key = (self.encoder_sha256_, tuple(self.input_shape_))
        return self.cache.embed(key, images, self._embed)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = False
        tags.requires_fit = True
        tags.transformer_tags.preserves_dtype = ["float32"]
        return tags
