"""An embedding cache that the user creates, passes in and owns.

A frozen encoder gives every image the same embedding, so a sweep over *head* parameters
(``GridSearchCV`` with many candidates and folds) need not embed an image more than
once. ``FrozenEmbedder(path, cache=EmbeddingCache())`` shares one cache among all clones
of the estimator (cloning keeps the same cache object: sharing is what it is for). Rows
are keyed by everything that changes them: the encoder file's digest, the input shape
and each image's content digest. There is no process-wide cache.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from embedder.data.fingerprints import image_fingerprints


class EmbeddingCache:
    """LRU map ``(encoder digest, input shape, image digest) -> embedding row``.

    Parameters
    ----------
    max_rows : int, default=200_000
        Upper bound on cached rows (128-d float32: 200k rows ~ 100 MB).

    Attributes
    ----------
    hits : int
        Rows served from the cache.
    misses : int
        Rows computed.
    """

    def __init__(self, max_rows=200_000):
        self.max_rows = int(max_rows)
        self._rows: OrderedDict = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __deepcopy__(self, memo):
        # sklearn's clone deep-copies non-estimator parameters; clones must share this one
        return self

    def __getstate__(self):
        # a pickled pipeline carries the cache's settings, not its rows
        return {"max_rows": self.max_rows}

    def __setstate__(self, state):
        self.__init__(state["max_rows"])

    def __repr__(self):
        return f"EmbeddingCache(max_rows={self.max_rows})"

    def clear(self):
        """Drop every row and reset the counters."""
        self._rows.clear()
        self.hits = self.misses = 0

    def embed(self, key, X, compute):
        """Embeddings of ``X`` under ``key``; ``compute(X_subset)`` fills the gaps.

        Parameters
        ----------
        key : hashable
            What identifies the encoder and how images are read.
        X : ndarray of images, or 1-D array of paths
            The images.
        compute : callable
            Embeds a subset of ``X`` (same form), returning float32 rows.

        Returns
        -------
        ndarray of float32, shape (len(X), dim)
        """
        digests = image_fingerprints(X)
        found = [self._rows.get((key, d)) for d in digests]
        missing = np.flatnonzero([row is None for row in found])
        self.hits += len(digests) - len(missing)
        self.misses += len(missing)
        if len(missing):
            subset = X[missing] if isinstance(X, np.ndarray) else np.asarray(X)[missing]
            for i, row in zip(missing, compute(subset), strict=True):
                found[i] = row
                self._rows[(key, digests[i])] = row
        for d in digests:
            self._rows.move_to_end((key, d))
        while len(self._rows) > self.max_rows:
            self._rows.popitem(last=False)
        return np.stack(found).astype(np.float32, copy=False)
