"""Stage-two heads: scikit-learn classifiers with defaults for unit-norm embeddings.

Nothing here imports TensorFlow: a head fitted on embeddings loads without it.
"""

from sklearn.calibration import CalibratedClassifierCV
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.svm import SVC

HEADS = ("knn", "logreg", "svm")

_ESTIMATORS = {"knn": KNeighborsClassifier, "logreg": LogisticRegression, "svm": SVC}

_DEFAULTS = {
    # On unit vectors Euclidean and cosine neighbours agree; distance weighting lets a
    # tight cluster outvote farther neighbours of other classes.
    "knn": {"n_neighbors": 5, "weights": "distance"},
    # Unit-norm features are small (about 1/sqrt(dim) each), so a logit gap between
    # classes needs a large weight norm, which C=1 penalises: the fit underfits and the
    # probabilities come out too soft. C=10 keeps well separated classes confident
    # (log-loss several times lower than C=1 on clustered unit vectors) while staying
    # regularised; lbfgs needs more than the default 100 iterations to converge.
    "logreg": {"C": 10.0, "max_iter": 1000},
    # The RBF kernel with gamma="scale" adapts to the spread of the embeddings; C=10
    # fits the tight clusters a triplet loss produces more closely than C=1.
    "svm": {"kernel": "rbf", "C": 10.0, "gamma": "scale"},
}


def make_head(name, **params):
    """Return an unfitted scikit-learn classifier for 2-D (unit-norm) embeddings.

    Parameters
    ----------
    name : {"knn", "logreg", "svm"}
        ``"knn"``: :class:`~sklearn.neighbors.KNeighborsClassifier`
        (``n_neighbors=5, weights="distance"``).
        ``"logreg"``: :class:`~sklearn.linear_model.LogisticRegression`
        (``C=10, max_iter=1000``: unit-norm features are small, so the default ``C=1``
        over-regularises).
        ``"svm"``: :class:`~sklearn.svm.SVC` (``kernel="rbf", C=10, gamma="scale"``).
    **params
        Override the defaults; they are the estimator's own parameters. The SVM head also
        takes ``probability`` (default True): True wraps the SVC in
        ``CalibratedClassifierCV(svc, cv=3, ensemble=False)``, the replacement
        scikit-learn recommends for the deprecated ``SVC(probability=True)``: Platt
        scaling fitted on 3-fold cross-validated decision values, so ``predict_proba``
        exists and ``predict`` is its argmax. Three folds rather than five keep it usable
        with 3 training items per class and cost 4 SVC fits instead of 6. False returns
        the bare SVC, about 4x faster to fit, without ``predict_proba``. In a grid
        search the SVC's parameters are then ``head__estimator__C`` and so on.

    Returns
    -------
    sklearn.base.ClassifierMixin
        An unfitted classifier with ``fit`` and ``predict``, and ``predict_proba`` unless
        ``name="svm"`` with ``probability=False``.

    Raises
    ------
    ValueError
        If ``name`` is not one of :data:`HEADS`.
    TypeError
        If a parameter is not one the estimator takes.
    """
    if not isinstance(name, str) or name not in HEADS:
        raise ValueError(f"head must be one of {list(HEADS)}, got {name!r}")
    params = dict(params)
    probability = params.pop("probability", True) if name == "svm" else None
    if name == "svm" and not isinstance(probability, bool):
        raise TypeError(f"probability must be True or False, got {probability!r}")
    estimator_class = _ESTIMATORS[name]
    valid = set(estimator_class().get_params(deep=False))
    if name == "svm":
        valid.discard("probability")  # deprecated in scikit-learn 1.9; see above
    unknown = sorted(set(params) - valid)
    if unknown:
        raise TypeError(
            f"unknown parameter {unknown[0]!r} for head {name!r} "
            f"({estimator_class.__name__}); valid parameters: {sorted(valid)}"
        )
    estimator = estimator_class(**{**_DEFAULTS[name], **params})
    if probability:
        return CalibratedClassifierCV(estimator, cv=3, ensemble=False)
    return estimator
