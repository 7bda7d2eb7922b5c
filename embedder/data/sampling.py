"""Class-balanced P x K batch sampling and the seed's offline random triplets.

In-batch triplet mining needs several images of each class in a batch. :class:`PKSampler`
draws P chunks of K same-class images per batch and, over one epoch, visits every image
of every class once (majority and minority classes alike), so an epoch is about one pass
over the data however unequal the classes are.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from embedder.checks import few


def _as_labels(labels, name="labels"):
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1 or labels.shape[0] == 0:
        raise ValueError(
            f"{name} must be a non-empty 1-D array (or a column vector), "
            f"got shape {labels.shape}"
        )
    return labels


def check_class_sizes(labels, min_size=2):
    """Check that triplets can be formed; return ``(classes, counts)``.

    Raises
    ------
    ValueError
        If there are fewer than 2 classes (no negative exists) or a class has fewer than
        ``min_size`` images (with 1 image a class cannot form a positive pair).
    """
    classes, counts = np.unique(_as_labels(labels), return_counts=True)
    if len(classes) < 2:
        raise ValueError(
            f"labels must contain at least 2 classes to form triplets, got {len(classes)} "
            f"([{few(classes)}])"
        )
    small = counts < min_size
    if small.any():
        pairs = zip(classes[small].tolist(), counts[small].tolist(), strict=True)
        listed = few(pairs, formatter=lambda pair: f"{pair[0]!r}: {pair[1]}")
        raise ValueError(
            f"every class needs at least {min_size} images to form a positive pair; "
            f"too few in class(es) {{{listed}}}"
        )
    return classes, counts


def _base_seed(random_state) -> int:
    """The integer seed of a ``random_state`` (int, numpy Generator or None)."""
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(2**63))
    if random_state is None:
        return int(np.random.SeedSequence().entropy)
    if isinstance(random_state, bool) or not isinstance(random_state, int | np.integer):
        raise ValueError("random_state must be an int, a numpy Generator or None, got "
                         f"{random_state!r}")
    if random_state < 0:
        raise ValueError(f"random_state must be a non-negative int, got {random_state!r}")
    return int(random_state)


def _epoch_index(value, name) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


#: Chunks by which a class already in a batch must lag the others to take another slot.
REPEAT_PENALTY = 0.5


class PKSampler:
    """Batches of P chunks of K same-class images that cover every image once per epoch.

    Each class keeps a shuffled queue of its images, cut into ``m_c = ceil(n_c / K)``
    chunks of K (the last chunk of a class is completed with other images of that class).
    An epoch is ``max(ceil(sum_c m_c / P), ceil(max_c m_c / (P - 1)))`` batches of P
    chunks: about one pass over the images, however unequal the classes (a class takes at
    most P - 1 slots of a batch). Every class's chunks are spread evenly over the
    epoch (batch ``b`` has taken about ``(b + 1) * m_c / B`` chunks of class ``c``), so a
    class with more chunks than there are batches fills several slots of a batch, while a
    small class is neither over-repeated nor bunched at the start; a class takes a second
    slot of a batch only when it lags the others by more than one and a half chunks
    (:data:`REPEAT_PENALTY`), so classes of equal size give P distinct classes a batch.
    Chunks of one class sit next to each other; every batch holds at least two classes
    (a chunk of random re-used images of a class not yet in the batch fills a slot once
    the epoch's chunks are used up).

    Parameters
    ----------
    labels : array-like of shape (n,) or (n, 1)
        Class label of each image (any hashable values).
    classes_per_batch : int or None
        P, 2 <= P <= number of classes. ``None``: ``min(n_classes, max(2, 64 // K))``.
    samples_per_class : int, default=4
        K >= 2. Classes with fewer than K images are sampled with replacement within a
        chunk (a ``UserWarning`` names them).
    random_state : int, numpy Generator or None
        Seed; the sequence of batches is deterministic given it. Epoch ``e`` is drawn
        from its own generator, seeded by ``(seed, e)``, so :meth:`epoch` can start at
        any epoch (a resumed run continues with the batches an uninterrupted run would
        have drawn, as ``torch``'s ``DistributedSampler.set_epoch`` does). A Generator
        gives one seed, drawn from it here; None draws a fresh one.

    Attributes
    ----------
    classes_ : ndarray
        Sorted class labels.
    batch_size : int
        P * K.
    batches_per_epoch : int
        Batches in one :meth:`epoch` (also ``len(sampler)``).
    """

    def __init__(self, labels, classes_per_batch, samples_per_class=4, random_state=None):
        labels = _as_labels(labels)
        self.classes_, counts = check_class_sizes(labels)
        n_classes = len(self.classes_)
        k = samples_per_class
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 2:
            raise ValueError(f"samples_per_class must be an integer >= 2, got {k!r}")
        p = classes_per_batch
        if p is None:
            p = min(n_classes, max(2, 64 // int(k)))
        if isinstance(p, bool) or not isinstance(p, int | np.integer) or not 2 <= p <= n_classes:
            raise ValueError(
                f"classes_per_batch must be an integer in [2, {n_classes}] (the number of "
                f"classes), got {classes_per_batch!r}"
            )
        self.classes_per_batch, self.samples_per_class = int(p), int(k)
        self.random_state = random_state
        self._seed = _base_seed(random_state)
        self._next_epoch = 0
        codes = np.searchsorted(self.classes_, labels)
        self._members = [np.flatnonzero(codes == c) for c in range(n_classes)]
        small = self.classes_[counts < k]
        if len(small):
            warnings.warn(
                f"classes [{few(small)}] have fewer than samples_per_class={k} images; "
                "they are sampled with replacement within a batch",
                UserWarning,
                stacklevel=2,
            )
        self._chunks = np.array([math.ceil(n / k) for n in counts])
        self.batch_size = self.classes_per_batch * self.samples_per_class
        # one pass over the chunks, unless one class needs more batches (at most P - 1
        # of its chunks fit in a batch beside another class)
        self.batches_per_epoch = max(math.ceil(self._chunks.sum() / self.classes_per_batch),
                                     math.ceil(self._chunks.max() / (self.classes_per_batch - 1)))

    def __len__(self):
        return self.batches_per_epoch

    def __iter__(self):
        """Endless batches, epoch after epoch (each epoch freshly shuffled)."""
        while True:
            yield from self.epoch()

    def _chunks_of(self, members, rng):
        """Shuffle one class and cut it into chunks of K, completing the last chunk."""
        k = self.samples_per_class
        queue = rng.permutation(members)
        if len(queue) < k:  # too few images: all of them, plus repeats
            return [np.concatenate([queue, rng.choice(queue, k - len(queue))])]
        chunks = [queue[i : i + k] for i in range(0, len(queue), k)]
        missing = k - len(chunks[-1])
        if missing:  # complete with other images of the class, no repeat in the chunk
            others = queue[: len(queue) - len(chunks[-1])]
            chunks[-1] = np.concatenate([chunks[-1], rng.choice(others, missing, replace=False)])
        return chunks

    def _filler(self, members, rng):
        k = self.samples_per_class
        return rng.choice(members, k, replace=len(members) < k)

    @property
    def next_epoch(self) -> int:
        """The epoch that :meth:`epoch` without an index draws next."""
        return self._next_epoch

    def set_epoch(self, epoch) -> None:
        """Make ``epoch`` (0-based) the next one drawn, e.g. the epoch a resumed run is at."""
        self._next_epoch = _epoch_index(epoch, "epoch")

    def epoch(self, index=None) -> list[np.ndarray]:
        """One epoch: ``batches_per_epoch`` int64 arrays of exactly P * K indices each.

        Each batch is P chunks of K indices of one class each, a class's chunks next to
        each other, at least two classes per batch.

        Parameters
        ----------
        index : int or None, default=None
            Which epoch (0-based); the same index always gives the same batches and
            leaves :attr:`next_epoch` as it is. None: epoch :attr:`next_epoch`, which then
            moves on by one.
        """
        if index is None:
            index = self._next_epoch
            self._next_epoch += 1
        index = _epoch_index(index, "index")
        rng = np.random.default_rng(np.random.SeedSequence(self._seed, spawn_key=(index,)))
        queues = [self._chunks_of(m, rng) for m in self._members]
        taken = np.zeros(len(queues), dtype=np.int64)
        batches = []
        for b in range(self.batches_per_epoch):
            # each class's share of the epoch so far: its chunks spread evenly
            due = (b + 1) * self._chunks / self.batches_per_epoch
            picks = self._batch_classes(due, taken, rng)
            parts = []
            for c in picks:
                if taken[c] < len(queues[c]):
                    parts.append(queues[c][taken[c]])
                    taken[c] += 1
                else:
                    parts.append(self._filler(self._members[c], rng))
            batches.append(np.concatenate(parts).astype(np.int64))
        return batches

    def _batch_classes(self, due, taken, rng) -> list:
        """The P classes (with repeats) of the next batch, sorted, at least two distinct."""
        left = self._chunks - taken
        picked = np.zeros(len(left), dtype=np.int64)
        jitter = 0.5 * rng.random(len(left))  # random tie-break, smaller than one chunk
        most = self.classes_per_batch - 1  # leaves a slot for a second class
        for _ in range(self.classes_per_batch):
            # A class already in the batch comes back only when it lags the others by
            # more than one and a half chunks: equal shares then give P distinct classes
            # (more negatives per anchor; whole classes per replica when a batch is split
            # between replicas), while a much larger class still fills several slots.
            behind = due - taken - picked * (1 + REPEAT_PENALTY) + jitter
            open_ = (left - picked > 0) & (picked < most)
            if open_.any():  # the class furthest behind its share
                c = int(np.argmax(np.where(open_, behind, -np.inf)))
            else:  # epoch's chunks used up: re-use images of a class not yet in the batch
                absent = np.flatnonzero(picked == 0)
                c = int(rng.choice(absent if len(absent) else np.arange(len(left))))
            picked[c] += 1
        return np.repeat(np.arange(len(left)), picked).tolist()


def random_triplets(labels, n_triplets, random_state=None) -> np.ndarray:
    """The seed's offline triplets: ``(anchor, positive, negative)`` index rows.

    The anchor is a uniformly random image, the positive a uniformly random *other* image
    of its class and the negative a uniformly random image of another class.

    Parameters
    ----------
    labels : array-like of shape (n,) or (n, 1)
        Class labels; every class needs at least 2 images (:func:`check_class_sizes`).
    n_triplets : int
        Number of rows.
    random_state : int, numpy Generator or None
        Seed.

    Returns
    -------
    ndarray of shape (n_triplets, 3), int64
    """
    labels = _as_labels(labels)
    classes, counts = check_class_sizes(labels)
    if isinstance(n_triplets, bool) or not isinstance(n_triplets, int | np.integer):
        raise ValueError(f"n_triplets must be a positive integer, got {n_triplets!r}")
    if n_triplets < 1:
        raise ValueError(f"n_triplets must be a positive integer, got {n_triplets!r}")
    rng = np.random.default_rng(random_state)
    codes = np.searchsorted(classes, labels)
    order = np.argsort(codes, kind="stable")  # images grouped by class
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.empty(len(labels), dtype=np.int64)
    rank[order] = np.arange(len(labels)) - starts[codes[order]]

    anchor = rng.integers(0, len(labels), n_triplets)
    c, r = codes[anchor], rank[anchor]
    n_c, s_c = counts[c], starts[c]
    u = rng.integers(0, n_c - 1)  # another image of the class: skip the anchor's rank
    positive = order[s_c + u + (u >= r)]
    v = rng.integers(0, len(labels) - n_c)  # an image outside the class block
    negative = order[v + n_c * (v >= s_c)]
    return np.stack([anchor, positive, negative], axis=1).astype(np.int64)
