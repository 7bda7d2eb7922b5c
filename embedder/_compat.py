"""scikit-learn internals the estimators use, behind one import with a fallback.

``_fit_context`` (parameter validation before ``fit``) and the constraint classes of
``sklearn.utils._param_validation`` are private. When a scikit-learn release moves them,
the estimators keep working: parameters are then checked by ``fit`` itself only.
"""

from __future__ import annotations

import functools

try:  # scikit-learn >= 1.3
    from sklearn.base import _fit_context
    from sklearn.utils._param_validation import Interval, StrOptions
except ImportError:  # pragma: no cover - exercised only on a future scikit-learn
    def _fit_context(*, prefer_skip_nested_validation):
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

    class StrOptions:
        """Stand-in: records the options, checks nothing."""

        def __init__(self, options, *, deprecated=None):
            self.options = options

__all__ = ["Interval", "StrOptions", "_fit_context"]
