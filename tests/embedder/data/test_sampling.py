import math
import warnings

import numpy as np
import pytest

from embedder.data.sampling import PKSampler, check_class_sizes, random_triplets


def _labels(sizes):
    return np.repeat(np.arange(len(sizes)), sizes)


def _check_batch(batch, labels, p, k):
    assert batch.shape == (p * k,) and batch.dtype == np.int64
    groups = labels[batch].reshape(p, k)
    assert (groups == groups[:, :1]).all()  # K images of one class per group
    assert len(np.unique(groups[:, 0])) >= 2  # negatives in every batch
    first = groups[:, 0]
    changes = np.count_nonzero(first[1:] != first[:-1])
    assert changes == len(np.unique(first)) - 1  # a class's chunks next to each other
    assert np.unique(first, return_counts=True)[1].max() <= p - 1  # room for another class


def _expected_batches(sizes, p, k):
    chunks = [math.ceil(n / k) for n in sizes]
    return max(math.ceil(sum(chunks) / p), math.ceil(max(chunks) / (p - 1)))


@pytest.mark.parametrize(
    ("sizes", "p", "k"),
    [([8, 8, 8, 8], 2, 4), ([10, 7, 5, 13, 2, 9], 3, 2), ([200, 10, 9, 5, 3], 2, 4)],
)
def test_epoch_visits_every_image_with_pk_structure(sizes, p, k):
    labels = _labels(sizes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        sampler = PKSampler(labels, p, k, random_state=0)
    expected = _expected_batches(sizes, p, k)
    assert sampler.batch_size == p * k
    assert sampler.batches_per_epoch == len(sampler) == expected
    for _ in range(3):  # every epoch, not just the first
        batches = sampler.epoch()
        assert len(batches) == expected
        for batch in batches:
            _check_batch(batch, labels, p, k)
        assert set(np.concatenate(batches)) == set(range(len(labels)))


def test_imbalanced_classes_are_all_covered_and_small_class_warns():
    labels = _labels([200, 10, 9, 5, 3])
    with pytest.warns(UserWarning, match=r"classes \[4\] have fewer than samples_per_class=4"):
        sampler = PKSampler(labels, 5, 4, random_state=1)
    # 59 chunks of 4 fill 12 batches of 5, but the 200-image class's 50 chunks need 13
    # (at most 4 of its chunks per batch): not 50, one batch per majority chunk
    assert sampler.batches_per_epoch == 13
    batches = sampler.epoch()
    counts = np.bincount(labels[np.concatenate(batches)], minlength=5)
    # every majority image once; minorities are not repeated to keep pace with it
    # (before, each was drawn 200 times): their completed chunks (12, 12, 8, 4 images)
    # plus the 65 - 59 = 6 filler chunks of the last batches, 24 images in all
    assert counts[0] == 200
    assert (counts[1:] >= [12, 12, 8, 4]).all() and counts[1:].sum() == 36 + 24
    # the 3-image class is drawn with replacement but every one of its images appears
    small = np.flatnonzero(labels == 4)
    assert set(small) <= set(np.concatenate(batches))


def test_random_class_sizes_always_covered():
    rng = np.random.default_rng(0)
    for seed in range(20):
        sizes = rng.integers(2, 30, size=rng.integers(2, 9))
        labels = rng.permutation(_labels(sizes))
        p = int(rng.integers(2, len(sizes) + 1))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            sampler = PKSampler(labels, p, 3, random_state=seed)
        batches = sampler.epoch()
        for batch in batches:
            _check_batch(batch, labels, p, 3)
        assert set(np.concatenate(batches)) == set(range(len(labels)))


def test_string_and_column_labels():
    labels = np.array(["cat", "dog", "eel"] * 4).reshape(-1, 1)
    sampler = PKSampler(labels, 3, 2, random_state=0)
    np.testing.assert_array_equal(sampler.classes_, ["cat", "dog", "eel"])
    for batch in sampler.epoch():
        _check_batch(batch, labels[:, 0], 3, 2)


def test_iter_is_endless_and_deterministic():
    labels = _labels([5, 6, 7])
    a = PKSampler(labels, 2, 2, random_state=3)
    b = PKSampler(labels, 2, 2, random_state=3)
    n = 3 * len(a) + 1
    first = [x for _, x in zip(range(n), a, strict=False)]
    second = [x for _, x in zip(range(n), b, strict=False)]
    assert len(first) == n
    np.testing.assert_array_equal(np.stack(first), np.stack(second))
    c = PKSampler(labels, 2, 2, random_state=4)
    assert not np.array_equal(np.concatenate(c.epoch()), np.concatenate(first[: len(a)]))


def test_epochs_by_index_and_set_epoch():
    labels = _labels([5, 6, 7])
    a = PKSampler(labels, 2, 2, random_state=3)
    drawn = [np.stack(a.epoch()) for _ in range(3)]
    assert a.next_epoch == 3
    b = PKSampler(labels, 2, 2, random_state=3)
    np.testing.assert_array_equal(np.stack(b.epoch(2)), drawn[2])  # any epoch, directly
    assert b.next_epoch == 0  # an explicit index leaves the counter alone
    b.set_epoch(1)
    np.testing.assert_array_equal(np.stack(b.epoch()), drawn[1])
    assert b.next_epoch == 2
    assert not np.array_equal(drawn[0], drawn[1])  # each epoch is shuffled anew
    with pytest.raises(ValueError, match=r"epoch must be a non-negative integer, got -1"):
        b.set_epoch(-1)
    with pytest.raises(ValueError, match=r"index must be a non-negative integer, got 1.5"):
        b.epoch(1.5)
    with pytest.raises(ValueError, match=r"random_state must be an int, a numpy Generator "
                       r"or None, got 'x'"):
        PKSampler(labels, 2, 2, random_state="x")


def test_default_classes_per_batch():
    sampler = PKSampler(_labels([4] * 20), None, 4)
    assert sampler.classes_per_batch == 16 and sampler.batch_size == 64
    assert PKSampler(_labels([4, 4, 4]), None, 4).classes_per_batch == 3


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"classes_per_batch": 4}, r"classes_per_batch must be an integer in \[2, 3\].*got 4"),
        ({"classes_per_batch": 1}, r"classes_per_batch must be .* got 1"),
        ({"classes_per_batch": 2.5}, r"classes_per_batch must be .* got 2.5"),
        ({"classes_per_batch": 2, "samples_per_class": 1}, "samples_per_class must be an "
         r"integer >= 2, got 1"),
    ],
)
def test_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PKSampler(_labels([4, 4, 4]), **kwargs)


def test_bad_class_sizes():
    with pytest.raises(ValueError, match=r"at least 2 classes.*got 1 \(\[7\]\)"):
        check_class_sizes([7, 7, 7])
    with pytest.raises(ValueError, match=r"at least 2 images.*\{'b': 1\}"):
        PKSampler(["a", "a", "b", "c", "c"], 2)
    with pytest.raises(ValueError, match=r"labels must be a non-empty 1-D array.*\(2, 2\)"):
        check_class_sizes(np.zeros((2, 2)))
    classes, counts = check_class_sizes([2, 1, 2, 1])
    assert classes.tolist() == [1, 2] and counts.tolist() == [2, 2]


def test_random_triplets_are_valid_and_uniform():
    labels = np.array([0, 1, 0, 2, 1, 0, 2, 2, 0])
    triplets = random_triplets(labels, 20000, random_state=0)
    assert triplets.shape == (20000, 3) and triplets.dtype == np.int64
    a, p, n = triplets.T
    assert (labels[a] == labels[p]).all() and (a != p).all()
    assert (labels[a] != labels[n]).all()
    # anchors uniform over the 9 images; positives uniform over the other class members
    np.testing.assert_allclose(np.bincount(a) / 20000, 1 / 9, atol=0.02)
    pos_of_0 = p[a == 0]
    np.testing.assert_allclose(np.bincount(pos_of_0, minlength=9)[[2, 5, 8]] / len(pos_of_0),
                               1 / 3, atol=0.04)
    neg_of_0 = n[a == 0]
    np.testing.assert_allclose(
        np.bincount(neg_of_0, minlength=9)[[1, 3, 4, 6, 7]] / len(neg_of_0), 0.2, atol=0.04
    )
    np.testing.assert_array_equal(triplets, random_triplets(labels, 20000, random_state=0))


def test_random_triplets_bad_input():
    with pytest.raises(ValueError, match="n_triplets must be a positive integer, got 0"):
        random_triplets([0, 0, 1, 1], 0)
    with pytest.raises(ValueError, match=r"at least 2 images.*\{1: 1\}"):
        random_triplets([0, 0, 1], 5)
