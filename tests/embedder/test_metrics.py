from collections import Counter

import numpy as np
import pytest

from embedder.metrics import retrieval_scores
from tests._helpers import run_without_tensorflow

KEYS = ("precision_at_1", "r_precision", "map_at_r", "knn_accuracy")


def _reference(emb, labels, k=5, metric="euclidean"):
    """Brute force in pure Python: every query sorts all others by (distance, index)."""
    emb = [list(map(float, row)) for row in emb]
    labels = list(labels)
    n = len(emb)
    k = min(k, n - 1)
    p1, rp, map_r, knn = [], [], [], 0
    for i in range(n):
        ranked = []
        for j in range(n):
            if j == i:
                continue
            if metric == "euclidean":
                d = sum((a - b) ** 2 for a, b in zip(emb[i], emb[j], strict=True))
            else:
                dot = sum(a * b for a, b in zip(emb[i], emb[j], strict=True))
                norms = (sum(a * a for a in emb[i]) * sum(b * b for b in emb[j])) ** 0.5
                d = 1.0 - dot / norms
            ranked.append((d, j))
        ranked.sort()
        neighbours = [labels[j] for _, j in ranked]
        votes = Counter(neighbours[:k])
        best = max(votes.values())
        knn += next(lab for lab in neighbours[:k] if votes[lab] == best) == labels[i]
        r = labels.count(labels[i]) - 1
        if r == 0:
            continue
        rel = [lab == labels[i] for lab in neighbours]
        p1.append(float(rel[0]))
        rp.append(sum(rel[:r]) / r)
        hits, total = 0, 0.0
        for pos in range(r):
            if rel[pos]:
                hits += 1
                total += hits / (pos + 1)
        map_r.append(total / r)
    mean = (lambda v: sum(v) / len(v)) if p1 else (lambda v: float("nan"))
    return {
        "precision_at_1": mean(p1),
        "r_precision": mean(rp),
        "map_at_r": mean(map_r),
        "knn_accuracy": knn / n,
        "n_queries": len(p1),
    }


def _assert_same(got, expected, tol=1e-9):
    assert got["n_queries"] == expected["n_queries"]
    for key in KEYS:
        assert got[key] == pytest.approx(expected[key], abs=tol, nan_ok=True), key


@pytest.mark.parametrize(
    "n, n_classes, dim, integer, metric",
    [
        (2, 1, 3, False, "euclidean"),
        (9, 3, 2, False, "euclidean"),
        (40, 4, 5, False, "euclidean"),
        (40, 25, 3, False, "euclidean"),  # many singleton classes
        (120, 6, 8, False, "euclidean"),
        (60, 5, 2, True, "euclidean"),  # small integer grid: many exact ties
        (30, 10, 1, True, "euclidean"),  # 1-D integers: ties straddle the cut-off
        (50, 4, 6, False, "cosine"),
        (30, 20, 4, False, "cosine"),
    ],
)
def test_matches_brute_force_reference(n, n_classes, dim, integer, metric):
    rng = np.random.default_rng(n * 100 + n_classes)
    labels = rng.integers(0, n_classes, size=n)
    emb = rng.integers(-2, 3, size=(n, dim)) if integer else rng.normal(size=(n, dim))
    for k in (1, 3, 5):
        expected = _reference(emb, labels, k=k, metric=metric)
        got = retrieval_scores(emb, labels, k=k, chunk_size=7, metric=metric)
        _assert_same(got, expected)


def test_literal_values_on_a_line():
    # Items 0..4 at x = 0, 2, 3, 4, 7 with labels A, B, A, A, B; neighbours by distance,
    # ties by index; R = 2 for A, 1 for B.
    # q0 (x=0, A): 1B(2) 2A(3) 3A(4) 4B(7)  rel 0110  P@1 0  RP 1/2  MAP (0+1/2)/2 = 1/4
    # q1 (x=2, B): 2A(1) 0A(2) 3A(2) 4B(5)  rel 0001  P@1 0  RP 0    MAP 0
    # q2 (x=3, A): 1B(1) 3A(1) 0A(3) 4B(4)  rel 0110  P@1 0  RP 1/2  MAP 1/4  (tie: 1 < 3)
    # q3 (x=4, A): 2A(1) 1B(2) 4B(3) 0A(4)  rel 1001  P@1 1  RP 1/2  MAP (1+0)/2 = 1/2
    # q4 (x=7, B): 3A(3) 2A(4) 1B(5) 0A(7)  rel 0010  P@1 0  RP 0    MAP 0
    # P@1 = 1/5, RP = 1.5/5, MAP@R = 1/5.
    # 3-NN votes: q0 BAA->A ok, q1 AAA->A, q2 BAA->A ok, q3 ABB->B, q4 AAB->A: 2/5.
    x = np.array([[0.0], [2.0], [3.0], [4.0], [7.0]])
    labels = ["A", "B", "A", "A", "B"]
    scores = retrieval_scores(x, labels, k=3)
    assert scores == {
        "precision_at_1": 0.2,
        "r_precision": 0.3,
        "map_at_r": 0.2,
        "knn_accuracy": 0.4,
        "n_queries": 5,
    }
    # 2-NN, ties go to the nearest: q0 BA->B, q1 AA->A, q2 BA->B, q3 AB->A ok, q4 AA->A.
    assert retrieval_scores(x, labels, k=2)["knn_accuracy"] == 0.2
    # k beyond n - 1 uses all 4 others: q0 BAAB->B (tie, nearest), q3 ABBA->A ok: 1/5.
    assert retrieval_scores(x, labels, k=10)["knn_accuracy"] == 0.2

    # A singleton class far away (x=100) is no query and changes no ranking above; its
    # 3-NN vote (4B 3A 2A -> A) is wrong, so kNN accuracy is 2/6.
    scores = retrieval_scores(np.vstack([x, [[100.0]]]), [*labels, "C"], k=3)
    assert scores["n_queries"] == 5
    assert scores["map_at_r"] == pytest.approx(0.2)
    assert scores["knn_accuracy"] == pytest.approx(2 / 6)


def test_identical_points_rank_by_index():
    # All distances are 0, so every query ranks the others by index.
    # labels 0 1 0 1, R = 1 each:
    # q0: 1 2 3 -> rel 010: 0   q1: 0 2 3 -> 001: 0   q2: 0 1 3 -> 100: 1   q3: 0 1 2 -> 010: 0
    # 3-NN: q0 {1,0,1}->1, q1 {0,0,1}->0, q2 {0,1,1}->1, q3 {0,1,0}->0: all wrong.
    scores = retrieval_scores(np.zeros((4, 3)), [0, 1, 0, 1], k=3)
    assert scores == {
        "precision_at_1": 0.25,
        "r_precision": 0.25,
        "map_at_r": 0.25,
        "knn_accuracy": 0.0,
        "n_queries": 4,
    }


def test_cosine_ignores_norms():
    # Two classes by angle (0 and 10 degrees vs 90 and 95 degrees) with very different
    # norms: cosine separates them perfectly, Euclidean does not (a's nearest is c).
    angles = np.deg2rad([0.0, 10.0, 90.0, 95.0])
    norms = np.array([1.0, 5.0, 0.1, 3.0])
    emb = norms[:, None] * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    labels = [0, 0, 1, 1]
    cosine = retrieval_scores(emb, labels, k=1, metric="cosine")
    assert [cosine[key] for key in KEYS] == [1.0, 1.0, 1.0, 1.0]
    assert retrieval_scores(emb, labels, k=1)["precision_at_1"] < 1.0


def test_perfectly_separated_set_scores_one():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(6), [2, 5, 9, 3, 12, 4])
    centres = 100.0 * rng.normal(size=(6, 16))
    emb = centres[labels] + rng.normal(size=(len(labels), 16))
    for metric in ("euclidean", "cosine"):
        # k=1: with k=5 the 2-item class would be outvoted by its 4 other neighbours.
        scores = retrieval_scores(emb, labels, k=1, metric=metric)
        assert [scores[key] for key in KEYS] == [1.0, 1.0, 1.0, 1.0]
        assert scores["n_queries"] == len(labels)


def test_chunk_size_does_not_change_scores():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 7, size=101)
    emb = rng.normal(size=(101, 4)).astype(np.float32)
    results = [retrieval_scores(emb, labels, chunk_size=c) for c in (1, 3, 50, 101, 500, None)]
    for other in results[1:]:
        _assert_same(other, results[0], tol=1e-12)


def test_labels_may_be_a_column_or_strings():
    rng = np.random.default_rng(2)
    emb = rng.normal(size=(30, 3))
    labels = rng.integers(0, 3, size=30)
    base = retrieval_scores(emb, labels)
    assert retrieval_scores(emb, labels[:, None]) == base
    assert retrieval_scores(emb, np.array(["abc"[i] for i in labels])) == base


def test_no_class_with_two_items_gives_nan_and_warns():
    with pytest.warns(UserWarning, match="no class has 2 or more items"):
        scores = retrieval_scores(np.eye(3), [0, 1, 2])
    assert np.isnan(scores["precision_at_1"]) and np.isnan(scores["map_at_r"])
    assert scores["n_queries"] == 0
    assert scores["knn_accuracy"] == 0.0


@pytest.mark.parametrize(
    "embeddings, labels, kwargs, match",
    [
        (np.zeros(4), [0, 0, 1, 1], {}, r"embeddings must be a 2-D array \(n, dim\), got shape"),
        ([[0.0, np.nan], [1.0, 1.0]], [0, 0], {}, "embeddings must be finite"),
        ([["a"], ["b"]], [0, 0], {}, "embeddings must be a numeric 2-D array"),
        (np.zeros((3, 2)), [0, 1], {}, r"labels must have one entry per row .*\(3\), got 2"),
        (np.zeros((2, 2)), np.zeros((2, 2)), {}, r"labels must have shape \(n,\) or \(n, 1\)"),
        (np.zeros((1, 2)), [0], {}, "embeddings must have at least 2 rows, got 1"),
        (np.zeros((2, 2)), [0, 0], {"k": 0}, "k must be a positive integer, got 0"),
        (np.zeros((2, 2)), [0, 0], {"chunk_size": 0}, "chunk_size must be a positive integer"),
        (
            np.zeros((2, 2)),
            [0, 0],
            {"metric": "manhattan"},
            r"metric must be one of \['cosine', 'euclidean'\], got 'manhattan'",
        ),
    ],
)
def test_bad_input_is_named(embeddings, labels, kwargs, match):
    with pytest.raises(ValueError, match=match):
        retrieval_scores(embeddings, labels, **kwargs)


def test_imports_no_tensorflow():
    code = (
        "import numpy as np\n"
        "from embedder.metrics import retrieval_scores\n"
        "print(retrieval_scores(np.eye(4), [0, 0, 1, 1])['n_queries'])\n"
    )
    assert run_without_tensorflow(code) == "4"
