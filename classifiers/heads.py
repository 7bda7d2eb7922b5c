"""Stage-two heads: scikit-learn classifiers with defaults for unit-norm embeddings.

Nothing here imports TensorFlow: a head fitted on embeddings loads without it.
"""

import numpy as np
from sklearn.base import clone, is_classifier
from sklearn.calibration import CalibratedClassifierCV
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import BaseCrossValidator, StratifiedKFold
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

# The SVM head's probabilities: temperature scaling (one parameter, softmax(d / T) of the
# SVC's decision values) fitted on cross-validated decision values, the SVC itself fitted
# on all training images. One temperature cannot move the argmax, so predictions stay the
# full-data SVC's (unlike per-class Platt sigmoids, whose argmax drifts when classes have
# few images), and the folds shrink to the smallest class (2 images per class suffice).
_CALIBRATION_FOLDS = 3


class SmallestClassFolds(BaseCrossValidator):
    """Stratified folds, at most ``max_splits`` and no more than the smallest class allows.

    The SVM head's calibration splitter: with ``max_splits=3`` and a class of 2 training
    images it makes 2 folds, so every class is in every training part.

    Parameters
    ----------
    max_splits : int, default=3
        Upper bound on the number of folds.

    Examples
    --------
    >>> SmallestClassFolds(3).get_n_splits(y=[0, 0, 1, 1, 1])
    2
    """

    # Deliberately no ``n_splits`` attribute: CalibratedClassifierCV would otherwise
    # refuse classes smaller than ``max_splits`` before asking this splitter.
    def __init__(self, max_splits=_CALIBRATION_FOLDS):
        self.max_splits = max_splits

    def get_n_splits(self, X=None, y=None, groups=None):
        """Number of folds for labels ``y`` (``max_splits`` when ``y`` is None).

        Parameters
        ----------
        X : ignored
            Embeddings (or features), one row per sample.
        y : array-like of shape (n_samples,) or None
            Class labels.
        groups : ignored
            Ignored; present for scikit-learn's splitter interface.

        Returns
        -------
        int

        Raises
        ------
        ValueError
            If a class of ``y`` has a single image: no fold split keeps it in training.
        """
        if y is None:
            return self.max_splits
        classes, counts = np.unique(np.asarray(y), return_counts=True)
        if counts.min() < 2:
            # CalibratedClassifierCV may hand over label-encoded y, so count, not name.
            raise ValueError(
                "the svm head calibrates its probabilities on cross-validated decision "
                f"values and needs at least 2 training images per class; "
                f"{int(np.sum(counts < 2))} of the {len(classes)} classes have 1. Use "
                "make_head('svm', probability=False) for a bare SVC without "
                "predict_proba, or another head")
        return int(min(self.max_splits, counts.min()))

    def split(self, X, y=None, groups=None):
        """Yield (train, test) index arrays of stratified folds.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Embeddings (or features), one row per sample.
        y : array-like of shape (n_samples,)
            Class labels.
        groups : ignored
            Ignored; present for scikit-learn's splitter interface.

        Yields
        ------
        train, test : ndarray of int
        """
        folds = StratifiedKFold(self.get_n_splits(X, y))
        yield from folds.split(X, y)


def make_head(name, **params):
    """Return an unfitted scikit-learn classifier for 2-D (unit-norm) embeddings.

    Parameters
    ----------
    name : {"knn", "logreg", "svm"} or classifier
        A scikit-learn classifier instance (``RandomForestClassifier()``, a
        ``Pipeline`` ending in one, ...) is returned as an unfitted ``clone`` with
        ``params`` set on it, as reports accept it.
        ``"knn"``: :class:`~sklearn.neighbors.KNeighborsClassifier`
        (``n_neighbors=5, weights="distance"``); with ``algorithm="ann"`` an
        approximate-neighbour :class:`classifiers.ann.ANNKNeighborsClassifier` for large
        galleries (needs the ``ann`` extra, faiss-cpu).
        ``"logreg"``: :class:`~sklearn.linear_model.LogisticRegression`
        (``C=10, max_iter=1000``: unit-norm features are small, so the default ``C=1``
        over-regularises).
        ``"svm"``: :class:`~sklearn.svm.SVC` (``kernel="rbf", C=10, gamma="scale"``).
    **params
        Override the defaults; they are the estimator's own parameters. The SVM head also
        takes ``probability`` (default True): True wraps the SVC in
        ``CalibratedClassifierCV(svc, method="temperature", cv=SmallestClassFolds(3),
        ensemble=False)``: ``predict_proba`` is a softmax of the decision values with
        one temperature fitted on cross-validated decision values (at most 3 folds,
        fewer when the smallest class has fewer images), and ``predict`` is the
        full-data SVC's argmax, so the calibration never starves the predictions on
        many classes with few images (see the measurements above); it equals
        ``SVC(break_ties=True).predict``. False returns the
        bare SVC, about 4x faster to fit, without ``predict_proba``. In a grid search the
        SVC's parameters are then ``head__estimator__C`` and so on.

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
        If a parameter is not one the estimator takes, or ``name`` is an estimator
        that is not a classifier.

    Examples
    --------
    >>> from sklearn.ensemble import RandomForestClassifier
    >>> make_head(RandomForestClassifier(), n_estimators=50)
    RandomForestClassifier(n_estimators=50)
    """
    if hasattr(name, "get_params") and hasattr(name, "fit"):
        return _head_from_estimator(name, params)
    if not isinstance(name, str) or name not in HEADS:
        raise ValueError(f"head must be one of {list(HEADS)}, got {name!r}")
    params = dict(params)
    if name == "knn" and params.get("algorithm") == "ann":
        from classifiers.ann import make_ann_head

        return make_ann_head(**{**_DEFAULTS["knn"], **params})
    probability = params.pop("probability", True) if name == "svm" else None
    if name == "svm" and not isinstance(probability, bool):
        raise TypeError(f"probability must be True or False, got {probability!r}")
    estimator_class = _ESTIMATORS[name]
    valid = set(estimator_class().get_params(deep=False))
    if name == "svm":
        valid.discard("probability")  # deprecated in scikit-learn 1.9; see above
    _check_params(name, estimator_class.__name__, params, valid)
    estimator = estimator_class(**{**_DEFAULTS[name], **params})
    if probability:
        return CalibratedClassifierCV(estimator, method="temperature",
                                      cv=SmallestClassFolds(), ensemble=False)
    return estimator


def _head_from_estimator(estimator, params):
    class_name = type(estimator).__name__
    if not is_classifier(estimator):
        raise TypeError(f"head must be a head name or a scikit-learn classifier, got "
                        f"{class_name}, which is not a classifier")
    head = clone(estimator)
    unknown = sorted(set(params) - set(head.get_params(deep=True)))
    if unknown:
        raise TypeError(f"unknown parameter {unknown[0]!r} for head {class_name}; its "
                        "parameters are those of its get_params()")
    return head.set_params(**params)


def _check_params(name, class_name, params, valid):
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise TypeError(
            f"unknown parameter {unknown[0]!r} for head {name!r} "
            f"({class_name}); valid parameters: {sorted(valid)}"
        )
