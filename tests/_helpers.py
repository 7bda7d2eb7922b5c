"""Helpers shared by test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import subprocess
import sys

TINY_SHAPE = (16, 16, 3)

_NO_TENSORFLOW = "import sys; sys.modules['tensorflow'] = None; sys.modules['keras'] = None\n"


def tiny_embedder(**params):
    """A TripletEmbedder on the test-only ``tiny_cnn`` that trains in about a second."""
    from embedder import TripletEmbedder

    defaults = dict(encoder="tiny_cnn", input_shape=TINY_SHAPE, embedding_dim=8, epochs=3,
                    learning_rate=3e-3, random_state=0)
    return TripletEmbedder(**{**defaults, **params})


def run_without_tensorflow(code: str) -> str:
    """Run ``code`` in a fresh interpreter where tensorflow and keras cannot be imported.

    Returns its stripped stdout; fails the test with its stderr when it exits non-zero.
    """
    done = subprocess.run([sys.executable, "-c", _NO_TENSORFLOW + code],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()
