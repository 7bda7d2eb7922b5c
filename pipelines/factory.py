"""Build the two-stage ``Pipeline([("embed", embedder), ("head", head)])``.

This module imports no TensorFlow: the embedder is passed in, never imported here.
"""

from sklearn.pipeline import Pipeline

from classifiers import make_head


def _check_instance(value, name, methods, expected):
    if isinstance(value, type):
        raise TypeError(
            f"{name} must be an estimator instance, got the class {value.__name__}; "
            f"call it first, e.g. {value.__name__}()"
        )
    missing = [m for m in methods if not callable(getattr(value, m, None))]
    if missing:
        raise TypeError(
            f"{name} must be {expected} with {' and '.join(methods)}, got "
            f"{type(value).__name__} without {' or '.join(missing)}"
        )


def make_triplet_pipeline(embedder, head, *, memory=None):
    """Chain an embedding transformer and a classifier head.

    Parameters
    ----------
    embedder : transformer
        Any scikit-learn transformer (``fit`` and ``transform``), in practice an
        :class:`embedder.TripletEmbedder`. Used as given, not cloned.
    head : {"knn", "logreg", "svm"} or classifier
        A head name, built with :func:`classifiers.make_head` and its defaults, or a
        scikit-learn classifier instance (``fit`` and ``predict``), used as given.
    memory : str, joblib.Memory or None, default=None
        Passed to :class:`~sklearn.pipeline.Pipeline`: caches the fitted embedder, so
        refitting with other head parameters (e.g. in a grid search) does not embed the
        images again.

    Returns
    -------
    sklearn.pipeline.Pipeline
        Steps ``("embed", embedder)`` and ``("head", head)``.

    Raises
    ------
    TypeError
        If ``embedder`` or ``head`` is a class or lacks the methods above.
    ValueError
        If ``head`` is a string that is not a head name.
    """
    _check_instance(embedder, "embedder", ("fit", "transform"), "a transformer")
    if isinstance(head, str):
        head = make_head(head)
    else:
        _check_instance(head, "head", ("fit", "predict"), "a head name or a classifier")
    return Pipeline([("embed", embedder), ("head", head)], memory=memory)
