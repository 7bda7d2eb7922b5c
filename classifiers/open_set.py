"""Open-set recognition: reject embeddings of classes no head was trained on.

A closed-set head must name one of its training classes for every input, even for an
image of a class it never saw. :class:`OpenSetClassifier` wraps any head and measures how
far an embedding lies from everything it knows (an *open-set score*); above a threshold
calibrated on held-out known-class embeddings it answers ``unknown_label`` instead.

Nothing here imports TensorFlow: the classifier works on 2-D embeddings.
"""

from __future__ import annotations

import inspect
import math
from numbers import Integral, Real

import numpy as np
from sklearn.base import (
    BaseEstimator,
    ClassifierMixin,
    MetaEstimatorMixin,
    _fit_context,
    clone,
)
from sklearn.metrics.pairwise import euclidean_distances
from sklearn.neighbors import NearestNeighbors
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, check_random_state, validate_data

from classifiers.sklearn_compat import HasMethods, Interval, StrOptions

SCORES = ("knn_distance", "centroid", "max_proba")
__all__ = ["SCORES", "OpenSetClassifier", "acceptance_threshold"]


def _head_has(method):
    """``available_if`` check: the fitted head (else the unfitted one) has ``method``."""

    def check(self):
        head = getattr(self, "head_", self.head)
        getattr(head, method)  # raises AttributeError, which hides the method
        return True

    return check


class OpenSetClassifier(MetaEstimatorMixin, ClassifierMixin, BaseEstimator):
    """Classify embeddings, or reject them as ``unknown_label`` when far from every class.

    ``fit`` holds out part of the known-class training data, scores it against the rest
    and sets the threshold that accepts ``target_tpr`` of those held-out embeddings; the
    reference data and the head are then refitted on all the training data. ``predict``
    returns the head's class where the open-set score is at most the threshold and
    ``unknown_label`` where it is above.

    Parameters
    ----------
    head : classifier
        An unfitted scikit-learn classifier (e.g. from :func:`classifiers.make_head`),
        cloned in ``fit``. To calibrate around an already fitted head without refitting
        it, pass ``sklearn.frozen.FrozenEstimator(head)``.
    open_set_score : {"knn_distance", "centroid", "max_proba"}, default="knn_distance"
        The open-set score, higher meaning more likely unknown. ``score=`` is accepted
        as an alias (DESIGN's spelling); the parameter itself is not called ``score``,
        which would hide the ``score`` method every scikit-learn classifier has and grid
        searches call:

        - ``"knn_distance"``: Euclidean distance to the ``k``-th nearest training
          embedding (Sun et al. 2022, "Out-of-Distribution Detection with Deep Nearest
          Neighbors"; they use unit-norm features, as :class:`embedder.TripletEmbedder`
          produces);
        - ``"centroid"``: Euclidean distance to the nearest class mean;
        - ``"max_proba"``: one minus the head's largest class probability (the head must
          have ``predict_proba``).
    target_tpr : float in (0, 1], default=0.95
        Share of held-out known-class embeddings the threshold accepts (the true
        positive rate of "known" on the calibration data).
    unknown_label : str, int or float, default="unknown"
        What ``predict`` returns for rejected embeddings; must not be a class label.
    k : int, default=5
        Neighbour rank of ``"knn_distance"`` (capped at the number of training
        embeddings); unused by the other scores.
    calibration_fraction : float in (0, 1), default=0.2
        Share of each class held out to calibrate the threshold (at least one embedding
        of every class with two or more, never all of a class).
    random_state : int, RandomState instance or None, default=None
        Seed of the calibration split.

    Attributes
    ----------
    head_ : classifier
        The head fitted on all the training data.
    classes_ : ndarray of shape (n_classes,)
        The known classes (those of ``head_``).
    n_features_in_ : int
        Number of embedding dimensions seen in ``fit``.
    feature_names_in_ : ndarray of str
        Column names, when ``X`` in ``fit`` was a DataFrame with string column names.
    threshold_ : float
        Open-set scores above it are rejected.
    calibration_scores_ : ndarray of shape (n_calibration,)
        Scores of the held-out known-class embeddings the threshold was set on.
    k_ : int
        The neighbour rank used (``k`` capped at the number of training embeddings).
    centroids_ : ndarray of shape (n_classes_in_y, n_features)
        Class means of the training embeddings (``open_set_score="centroid"`` only).
    neighbors_ : sklearn.neighbors.NearestNeighbors
        Index of the training embeddings (``open_set_score="knn_distance"`` only).

    See Also
    --------
    classifiers.make_head : The heads to wrap.
    pipelines.open_set_report : Open-set evaluation with whole classes held out.

    Notes
    -----
    ``score_samples`` follows this module's convention, higher = more unknown, which is
    the opposite of scikit-learn's outlier detectors (there higher = more normal).
    ``predict_proba`` and ``decision_function`` are the inner head's: their columns are
    the known classes only, so their argmax is the closed-set prediction.

    The calibration embeddings are held out from the head and the reference data, not
    from the encoder that made them: when the encoder was trained on the same images,
    they lie a little closer to their classes than new images do, and new known images
    are accepted slightly less often than ``target_tpr`` (Fashion-MNIST, 8 known
    classes: 0.93 measured for 0.95). Embeddings of images the encoder never saw
    calibrate exactly.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.neighbors import KNeighborsClassifier
    >>> from classifiers import OpenSetClassifier
    >>> rng = np.random.default_rng(0)
    >>> X = np.vstack([rng.normal([0, 0], 0.1, (20, 2)), rng.normal([1, 1], 0.1, (20, 2))])
    >>> y = np.repeat(["a", "b"], 20)
    >>> clf = OpenSetClassifier(KNeighborsClassifier(3), k=1, random_state=0).fit(X, y)
    >>> clf.predict([[0.0, 0.05], [1.0, 0.95], [5.0, -5.0]]).tolist()
    ['a', 'b', 'unknown']
    """

    _parameter_constraints: dict = {
        "head": [HasMethods(["fit", "predict"])],
        "open_set_score": [StrOptions(set(SCORES))],
        "target_tpr": [Interval(Real, 0, 1, closed="right")],
        "unknown_label": [str, Integral, Real],
        "k": [Interval(Integral, 1, None, closed="left")],
        "calibration_fraction": [Interval(Real, 0, 1, closed="neither")],
        "random_state": ["random_state"],
    }

    def __init__(self, head, *, open_set_score="knn_distance", target_tpr=0.95,
                 unknown_label="unknown", k=5, calibration_fraction=0.2,
                 random_state=None, **alias):
        # DESIGN spells the score ``score=``; an attribute of that name would hide the
        # ``score(X, y)`` method, so it is accepted as an alias and stored under its name.
        if set(alias) - {"score"}:
            raise TypeError(f"OpenSetClassifier got unexpected keyword arguments "
                            f"{sorted(set(alias) - {'score'})}")
        self.head = head
        self.open_set_score = alias.get("score", open_set_score)
        self.target_tpr = target_tpr
        self.unknown_label = unknown_label
        self.k = k
        self.calibration_fraction = calibration_fraction
        self.random_state = random_state

    # scikit-learn reads the parameters from the signature: hide the alias catch-all
    __init__.__signature__ = inspect.Signature(
        [p for p in inspect.signature(__init__).parameters.values()
         if p.kind is not inspect.Parameter.VAR_KEYWORD])

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y):
        """Calibrate the threshold on held-out embeddings, then fit on all of them.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Embeddings of known-class images.
        y : array-like of shape (n_samples,)
            Their class labels (at least one class with two or more embeddings, so
            some can be held out for the calibration).

        Returns
        -------
        self : OpenSetClassifier
        """
        X, y = validate_data(self, X, y, dtype=np.float64)
        check_classification_targets(y)
        if self.unknown_label != self.unknown_label:  # NaN: `pred == unknown_label` never holds
            raise ValueError(
                f"unknown_label must equal itself so predictions can be compared with it, "
                f"got {self.unknown_label!r}; use e.g. -1 or 'unknown'"
            )
        if np.isin(np.asarray([self.unknown_label], dtype=object), y.astype(object)).any():
            raise ValueError(
                f"unknown_label {self.unknown_label!r} is also a class label in y; choose "
                "an unknown_label that no class uses"
            )
        calibration = _calibration_mask(y, self.calibration_fraction,
                                        check_random_state(self.random_state))
        if not calibration.any():
            raise ValueError(
                "y must have at least one class with 2 or more samples, so that some can "
                f"be held out to calibrate the threshold; got {len(y)} samples of "
                f"{len(np.unique(y))} classes"
            )
        probe = self._fit_parts(X[~calibration], y[~calibration])
        self.calibration_scores_ = _open_set_scores(probe, X[calibration])
        self.threshold_ = acceptance_threshold(self.calibration_scores_, self.target_tpr)
        self._fit_parts(X, y, into=self)
        return self

    def _fit_parts(self, X, y, into=None):
        """Fit the score's reference data (and the head, where the score or ``into``
        needs it) on (X, y); return the holder of the fitted parts."""
        holder = into if into is not None else _Parts(self.open_set_score)
        holder.k_ = min(self.k, len(X))
        if self.open_set_score == "knn_distance":
            holder.neighbors_ = NearestNeighbors(n_neighbors=holder.k_).fit(X)
        elif self.open_set_score == "centroid":
            holder.centroids_ = np.stack([X[y == c].mean(axis=0) for c in np.unique(y)])
        if into is None and self.open_set_score != "max_proba":
            return holder  # calibration of a distance score: no head needed
        holder.head_ = clone(self.head).fit(X, y)
        if self.open_set_score == "max_proba" and not hasattr(holder.head_, "predict_proba"):
            raise ValueError(
                f"open_set_score='max_proba' needs a head with predict_proba, got "
                f"{type(holder.head_).__name__} without it; use 'knn_distance' or "
                "'centroid', or a head with probabilities (e.g. make_head('svm'))"
            )
        holder.classes_ = getattr(holder.head_, "classes_", None)
        if holder.classes_ is None:
            holder.classes_ = np.unique(y)
        strangers = np.setdiff1d(np.unique(y), holder.classes_)
        if len(strangers):  # only a prefitted (frozen) head can miss classes of y
            raise ValueError(
                f"y has {len(strangers)} labels the head was not trained on "
                f"({', '.join(repr(s) for s in strangers[:5].tolist())}); the head's "
                f"classes are {holder.classes_[:5].tolist()}"
                + (f" and {len(holder.classes_) - 5} more" if len(holder.classes_) > 5 else "")
            )
        return holder

    def score_samples(self, X):
        """Open-set score of each embedding: higher means more likely of an unknown class.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Embeddings (or features), one row per sample.

        Returns
        -------
        ndarray of shape (n_samples,)
            Distances for ``"knn_distance"`` and ``"centroid"``; one minus the largest
            class probability for ``"max_proba"``.
        """
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, reset=False)
        return _open_set_scores(self, X)

    def predict(self, X):
        """The head's class, or ``unknown_label`` where the score is above the threshold.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Embeddings (or features), one row per sample.

        Returns
        -------
        ndarray of shape (n_samples,)
            Of the classes' dtype when it can hold ``unknown_label`` (e.g. strings, or
            integers with an integer ``unknown_label``), else of dtype object.
        """
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, reset=False)
        predicted = np.asarray(self.head_.predict(X))
        out = predicted.astype(_output_dtype(self.classes_, self.unknown_label))
        out[_open_set_scores(self, X) > self.threshold_] = self.unknown_label
        return out

    @available_if(_head_has("predict_proba"))
    def predict_proba(self, X):
        """The inner head's class probabilities (columns: ``classes_``, no unknown).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Embeddings (or features), one row per sample.

        Returns
        -------
        ndarray of shape (n_samples, n_classes)
        """
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, reset=False)
        return self.head_.predict_proba(X)

    @available_if(_head_has("decision_function"))
    def decision_function(self, X):
        """The inner head's decision function.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Embeddings (or features), one row per sample.

        Returns
        -------
        ndarray of shape (n_samples,) or (n_samples, n_classes)
        """
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, reset=False)
        return self.head_.decision_function(X)

    def threshold_at(self, target_tpr):
        """The threshold that would accept ``target_tpr`` of the calibration scores.

        Parameters
        ----------
        target_tpr : float in (0, 1]
            Share of known-class calibration points to accept.

        Returns
        -------
        float
        """
        check_is_fitted(self)
        if isinstance(target_tpr, bool) or not isinstance(target_tpr, Real) or not (
                0 < target_tpr <= 1):
            raise ValueError(f"target_tpr must be a float in (0, 1], got {target_tpr!r}")
        return acceptance_threshold(self.calibration_scores_, target_tpr)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = False
        return tags


class _Parts:
    """The fitted parts of the calibration fit (a head and the score's reference data)."""

    def __init__(self, open_set_score):
        self.open_set_score = open_set_score


def _open_set_scores(fitted, X):
    """Scores of ``X`` by ``fitted`` (an :class:`OpenSetClassifier` or :class:`_Parts`)."""
    if fitted.open_set_score == "knn_distance":
        distances, _ = fitted.neighbors_.kneighbors(X, n_neighbors=fitted.k_)
        return distances[:, -1]
    if fitted.open_set_score == "centroid":
        return euclidean_distances(X, fitted.centroids_).min(axis=1)
    return 1.0 - np.asarray(fitted.head_.predict_proba(X)).max(axis=1)


def _calibration_mask(y, fraction, rng):
    """Boolean mask of the held-out embeddings: ``round(fraction * n_c)`` of each class
    of size ``n_c >= 2``, at least 1 and at most ``n_c - 1`` (the head sees every class)."""
    mask = np.zeros(len(y), dtype=bool)
    for label in np.unique(y):
        members = np.flatnonzero(y == label)
        if len(members) < 2:
            continue
        n_held = min(max(1, round(fraction * len(members))), len(members) - 1)
        mask[rng.choice(members, size=n_held, replace=False)] = True
    return mask


def acceptance_threshold(scores, target_tpr):
    """The smallest of ``scores`` that at least ``target_tpr`` of them do not exceed.

    Parameters
    ----------
    scores : array-like of shape (n,)
        Open-set scores of known-class embeddings (higher = more unknown).
    target_tpr : float in (0, 1]
        Share of ``scores`` to accept.

    Returns
    -------
    float
        Accepting ``score <= threshold`` keeps ``ceil(target_tpr * n)`` of the ``n``
        scores (more only on ties): at least ``target_tpr``, and less than one item over.
    """
    ordered = np.sort(np.asarray(scores, dtype=np.float64))
    # The tolerance keeps e.g. 0.7 * 10 = 7.000000000000001 from accepting 8 of 10.
    n_accept = max(1, math.ceil(target_tpr * len(ordered) - 1e-9))
    return float(ordered[n_accept - 1])


def _output_dtype(classes, unknown_label):
    """A dtype holding every class and ``unknown_label`` without converting either."""
    classes = np.asarray(classes)
    unknown = np.asarray(unknown_label)
    kinds = classes.dtype.kind, unknown.dtype.kind
    if kinds[0] == "U" and kinds[1] == "U":
        return np.result_type(classes.dtype, unknown.dtype)  # wide enough for both
    if kinds[0] in "iu" and kinds[1] in "iu" or kinds[0] == "f" and kinds[1] in "iuf":
        return np.result_type(classes.dtype, unknown.dtype)
    return np.dtype(object)
