"""Process-wide caches for frozen encoders.

A frozen encoder gives every image the same embedding forever, so a head sweep
(``GridSearchCV`` over head parameters, ``cross_validate_report`` with several heads)
should embed each image once, not once per head and fold. Estimators are cloned for every
fold, so the cache lives at module level, keyed by the encoder file (path, size, mtime)
and each image's content digest.
"""

from __future__ import annotations

import os
from collections import OrderedDict

import numpy as np

from embedder.fingerprints import image_fingerprints

#: Upper bound on cached embedding rows (128-d float32: 200k rows ~ 100 MB).
MAX_ROWS = 200_000


def file_key(path) -> tuple:
    """Identity of a saved encoder file: changes when the file is rewritten."""
    stat = os.stat(path)
    return (os.path.realpath(path), stat.st_size, stat.st_mtime_ns)


class EmbeddingCache:
    """LRU map ``(encoder key, image digest) -> embedding row``."""

    def __init__(self, max_rows=MAX_ROWS):
        self.max_rows = max_rows
        self._rows: OrderedDict = OrderedDict()
        self.hits = 0
        self.misses = 0

    def clear(self):
        self._rows.clear()
        self.hits = self.misses = 0

    def embed(self, key, X, compute):
        """Embeddings of ``X`` under the encoder ``key``; ``compute(X_subset)`` fills gaps."""
        digests = image_fingerprints(X)
        found = [self._rows.get((key, d)) for d in digests]
        missing = np.flatnonzero([row is None for row in found])
        self.hits += len(digests) - len(missing)
        self.misses += len(missing)
        if len(missing):
            subset = X[missing] if isinstance(X, np.ndarray) else np.asarray(X)[missing]
            new = compute(subset)
            for i, row in zip(missing, new, strict=True):
                found[i] = row
                self._rows[(key, digests[i])] = row
        for d in digests:
            if (key, d) in self._rows:
                self._rows.move_to_end((key, d))
        while len(self._rows) > self.max_rows:
            self._rows.popitem(last=False)
        if not found:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack(found).astype(np.float32, copy=False)


#: Shared by every TripletEmbedder of the process.
CACHE = EmbeddingCache()
#: Loaded frozen encoders: file key -> (keras model, training fingerprints).
ENCODERS: dict = {}
