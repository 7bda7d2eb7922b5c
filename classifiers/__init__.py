"""Stage two heads on 2-D embeddings. This package never imports TensorFlow, so a head
saved on embeddings loads without it."""

from classifiers.ann import ANNKNeighborsClassifier
from classifiers.heads import HEADS, SmallestClassFolds, make_head
from classifiers.open_set import OpenSetClassifier

__all__ = ["ANNKNeighborsClassifier", "HEADS", "OpenSetClassifier", "SmallestClassFolds",
           "make_head"]
