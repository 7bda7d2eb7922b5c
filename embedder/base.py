"""What the training and the frozen embedder share: inputs, ``transform``, pickling.

:class:`EmbedderBase` is not an estimator by itself. Subclasses set ``encoder_``,
``input_shape_``, ``n_features_in_`` and ``training_fingerprints_`` in ``fit``; this
base turns the three input forms (4-D images, flattened 2-D rows, image paths) into
what the encoder reads, embeds in batches, and pickles the Keras model as ``.keras``
bytes.
"""

from __future__ import annotations

import os

import numpy as np
from sklearn.base import ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

from embedder.checks import check_non_empty
from embedder.data.inputs import (
    as_paths,
    path_column,
    resolve_input_shape,
    shape_for_features,
)

#: Images given as file paths are decoded to this shape unless ``input_shape`` says else.
PATHS_DEFAULT_SHAPE = (112, 112, 3)


class EmbedderBase(ClassNamePrefixFeaturesOutMixin, TransformerMixin):
    """Shared behaviour of :class:`TripletEmbedder` and :class:`FrozenEmbedder`."""

    #: Images per ``predict`` batch.
    _batch_size = 256

    # ------------------------------------------------------------------ inputs
    def _prepare_X(self, X, *, reset):
        """Images as a 4-D array or a 1-D object array of paths; sets shapes on reset."""
        if isinstance(X, str | os.PathLike):
            raise TypeError(
                f"X must be a list or array of image paths or images, got a single "
                f"{type(X).__name__} {str(X)!r}; wrap it in a list"
            )
        paths, column = as_paths(X), None
        if paths is None:
            paths, column = path_column(X)
        if paths is not None:
            if reset:
                # one column of paths: that is what scikit-learn's feature names and
                # get_feature_names_out(input_features) describe, not the pixels
                self._set_shape(self._default_shape(PATHS_DEFAULT_SHAPE), n_features=1)
                self._forget_feature_names()
                if column is not None:
                    self.feature_names_in_ = np.asarray([column], dtype=object)
            return paths
        arr = X if isinstance(X, np.ndarray) else np.asarray(X)
        if arr.ndim == 4:
            if reset:
                self._forget_feature_names()
            return self._prepare_images(arr, reset)
        arr = self._validate_rows(X, reset)
        if arr.dtype.kind not in "uif":
            arr = arr.astype(np.float32)
        if reset:
            self._set_shape(self._default_shape(shape_for_features(arr.shape[1])))
            if self.n_features_in_ != arr.shape[1]:
                raise ValueError(
                    f"X has {arr.shape[1]} features per row, but input_shape="
                    f"{tuple(self.input_shape_)} needs {self.n_features_in_} (h * w * c): "
                    "pass images as a 4-D array or fix input_shape"
                )
        return arr.reshape((len(arr), *self.input_shape_))

    def _prepare_images(self, arr, reset):
        from embedder.checks import check_images

        check_non_empty(arr, "X")
        check_images(arr, name="X")
        if reset:
            self._set_shape(self._default_shape(arr.shape[1:]))
        if arr.shape[-1] != self.input_shape_[-1]:
            raise ValueError(
                f"X has images with {arr.shape[-1]} channels, but {type(self).__name__}"
                f" expects {self.input_shape_[-1]} (input_shape={self.input_shape_})"
            )
        return arr

    def _validate_rows(self, X, reset):
        """Flattened pixel rows, checked by scikit-learn against what ``fit`` was given.

        An embedder fitted on paths (one feature) still embeds rows of its pixel count.
        """
        pixels = int(np.prod(self.input_shape_)) if not reset else None
        if not reset and self.n_features_in_ != pixels:  # fitted on paths
            arr = check_array(X, dtype=None, ensure_min_samples=1)
            if arr.shape[1] != pixels:
                raise ValueError(
                    f"X has {arr.shape[1]} features per row, but {type(self).__name__} "
                    f"was fitted on image paths decoded to {tuple(self.input_shape_)}: "
                    f"rows need {pixels} (h * w * c)")
            return arr
        if reset:
            self._forget_feature_names()
        return validate_data(self, X, reset=reset, dtype=None, ensure_min_samples=1)

    def _forget_feature_names(self):
        if hasattr(self, "feature_names_in_"):
            del self.feature_names_in_

    def _default_shape(self, inferred):
        return resolve_input_shape(self.input_shape, inferred)

    def _set_shape(self, shape, n_features=None):
        self.input_shape_ = tuple(shape)
        self.n_features_in_ = (int(np.prod(self.input_shape_)) if n_features is None
                               else n_features)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.string = True  # image paths
        return tags

    # --------------------------------------------------------------- transform
    def transform(self, X):
        """Embed images.

        Parameters
        ----------
        X : ndarray (n, h, w, c), ndarray (n, h*w*c), or list/array of image paths
            Images in the form given to ``fit``.

        Returns
        -------
        ndarray of float32, shape (n, embedding_dim)
            One unit-norm row per image.
        """
        check_is_fitted(self)
        images = self._prepare_X(X, reset=False)
        if len(images) == 0:
            return np.zeros((0, self._n_features_out), dtype=np.float32)
        return self._embed_all(images)

    def _embed_all(self, images):
        """Embeddings of every image; subclasses may serve some from a cache."""
        return self._embed(images)

    def _embed(self, images):
        from embedder.data.decoding import decode_errors
        from embedder.data.image_pipeline import image_batches

        data = image_batches(images, self.input_shape_, batch_size=self._batch_size)
        with decode_errors():
            return np.asarray(self.encoder_.predict(data, verbose=0), dtype=np.float32)

    @property
    def _n_features_out(self):
        return int(self.encoder_.output_shape[-1])

    def save_encoder(self, path):
        """Save the encoder as ``.keras`` plus its fingerprint sidecar; return the path.

        Parameters
        ----------
        path : str or path-like
            Target file, ending with ``.keras``; written atomically.

        Returns
        -------
        pathlib.Path
        """
        from embedder.models.encoder_files import save_encoder

        check_is_fitted(self)
        return save_encoder(self.encoder_, path, self.training_fingerprints_)

    # ------------------------------------------------------------ persistence
    def __getstate__(self):
        state = dict(super().__getstate__())  # object.__getstate__ returns __dict__ itself
        if "encoder_" in state:
            from embedder.models.encoder_files import model_to_bytes

            state["encoder_"] = model_to_bytes(state["encoder_"])
        return state

    def __setstate__(self, state):
        if isinstance(state.get("encoder_"), bytes):
            from embedder.models.encoder_files import model_from_bytes

            # The pickle itself was trusted by whoever unpickled it; the archive inside
            # loads with Keras's safe mode all the same.
            state = {**state, "encoder_": model_from_bytes(state["encoder_"])}
        super().__setstate__(state)
