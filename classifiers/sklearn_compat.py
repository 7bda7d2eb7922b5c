"""scikit-learn internals the project's estimators use, behind one import with a fallback.

``fit_context`` (scikit-learn's ``_fit_context``: parameter validation before ``fit``)
and the constraint classes of ``sklearn.utils._param_validation`` are private. When a
scikit-learn release moves them, the estimators keep working: parameters are then
checked by ``fit`` itself only. This is the one module that imports private
scikit-learn names; it lives in ``classifiers`` (the package without TensorFlow) so
that both stages can import it.
"""

from __future__ import annotations

import functools

try:  # scikit-learn >= 1.3
    from sklearn.base import _fit_context as fit_context
    from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
except ImportError:  # pragma: no cover - exercised only on a future scikit-learn
    def fit_context(*, prefer_skip_nested_validation):
        def decorator(fit):
            @functools.wraps(fit)
            def wrapper(estimator, *args, **kwargs):
                return fit(estimator, *args, **kwargs)

            return wrapper

        return decorator

    class Interval:
        """Stand-in: records the constraint, checks nothing."""

        def __init__(self, type, left, right, *, closed):
            self.type, self.left, self.right, self.closed = type, left, right, closed

    class HasMethods:
        """Stand-in: records the method names, checks nothing."""

        def __init__(self, methods):
            self.methods = [methods] if isinstance(methods, str) else list(methods)

    class StrOptions:
        """Stand-in: records the options, checks nothing."""

        def __init__(self, options, *, deprecated=None):
            self.options = options

__all__ = ["HasMethods", "Interval", "StrOptions", "fit_context"]
