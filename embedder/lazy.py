"""Lazy package attributes (PEP 562), so importing a package does not import TensorFlow.

``embedder`` and ``pipelines`` export their main names through :func:`lazy_exports`: the
defining module is imported on first access, so ``import embedder.metrics`` (NumPy only)
or ``pipelines.load_pipeline`` of a head-only file never pay for TensorFlow.
"""

from importlib import import_module


def lazy_exports(package, exports):
    """``(__getattr__, __dir__, __all__)`` for a package whose names load on first use.

    Parameters
    ----------
    package : str
        The package's ``__name__`` (for error messages).
    exports : dict of str -> str
        Each exported name and the module that defines it.

    Examples
    --------
    >>> getattr_, dir_, all_ = lazy_exports("pkg", {"sqrt": "math"})
    >>> getattr_("sqrt")(4.0), all_
    (2.0, ['sqrt'])
    """
    names = sorted(exports)

    def __getattr__(name):
        if name in exports:
            return getattr(import_module(exports[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__():
        return names

    return __getattr__, __dir__, names
