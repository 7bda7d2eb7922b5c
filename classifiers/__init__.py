"""Stage two heads on 2-D embeddings. This package never imports TensorFlow, so a head
saved on embeddings loads without it."""

from classifiers.heads import HEADS, make_head
from classifiers.open_set import OpenSetClassifier

__all__ = ["HEADS", "OpenSetClassifier", "make_head"]
