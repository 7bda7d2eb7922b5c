"""Issue 12.1/12.2/12.5: the safe ``.skops`` format, paired files, and save mistakes."""

import json
import os
import time

import numpy as np
import pytest
from sklearn.datasets import make_blobs
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

import pipelines.persistence.pipeline_files as persistence
import pipelines.persistence.skops_format as skops_format
from classifiers import make_head
from pipelines import load_pipeline, save_pipeline
from pipelines.persistence import SIGNING_KEY_ENV, sidecar_path
from tests._helpers import TINY_SHAPE, tiny_embedder
from tests._images import make_shapes


@pytest.fixture(autouse=True)
def _no_signing_key(monkeypatch):
    monkeypatch.delenv(SIGNING_KEY_ENV, raising=False)


@pytest.fixture(scope="module")
def blobs():
    X, y = make_blobs(n_samples=30, centers=2, n_features=3, random_state=0)
    return X, y


class Opaque:
    """A type outside the allow-list."""

    def __init__(self, value=1):
        self.value = value

    def __call__(self, X):
        return X


@pytest.fixture(scope="module")
def fitted_triplet_pipeline():
    X, y = make_shapes(6, size=TINY_SHAPE[0], random_state=0)
    pipe = Pipeline([("embed", tiny_embedder(epochs=1)), ("head", make_head("knn"))])
    return pipe.fit(X, y), X


def test_skops_round_trip_of_a_fitted_triplet_pipeline(fitted_triplet_pipeline, tmp_path):
    pipe, X = fitted_triplet_pipeline
    path = save_pipeline(pipe, tmp_path / "model.skops")
    loaded = load_pipeline(path)
    assert type(loaded.named_steps["embed"]) is type(pipe.named_steps["embed"])
    Z, Z_loaded = pipe[:-1].transform(X), loaded[:-1].transform(X)
    np.testing.assert_allclose(Z_loaded, Z, atol=1e-6)
    np.testing.assert_array_equal(loaded[-1].predict(Z_loaded), pipe[-1].predict(Z))


def test_skops_refuses_types_outside_the_allow_list(blobs, tmp_path):
    X, y = blobs
    pipe = Pipeline([("embed", FunctionTransformer(Opaque())), ("head", LogisticRegression())])
    path = save_pipeline(pipe.fit(X, y), tmp_path / "model.skops")
    with pytest.raises(ValueError, match=r"refusing to load .*model\.skops: it needs types "
                       r"outside the allow-list of sklearn\., embedder\., classifiers\., "
                       r"numpy\., scipy\.sparse\. "
                       r"classes: 'tests\.reliability\.test_pipeline_files\.Opaque'$"):
        load_pipeline(path)
    # trusted=True concerns pickles; a .skops file never loads a refused type
    with pytest.raises(ValueError, match="outside the allow-list"):
        load_pipeline(path, trusted=True)


@pytest.mark.parametrize(
    ("name", "allowed"),
    [
        ("sklearn.linear_model._logistic.LogisticRegression", True),
        ("numpy.float64", True),
        ("embedder.models.encoders.SafeUnitNormalization", True),
        ("numpy.load", False),  # a function: skops could call it with the file's arguments
        ("numpy.memmap", False),  # a class, but not a scalar/dtype: it opens files
        ("embedder.files.Path", False),  # reached through an import: pathlib's class
        ("sklearn.base.os.system", False),
        ("builtins.eval", False),
        ("os.system", False),
        ("sklearn.no_such_module.X", False),
    ],
)
def test_allow_list_accepts_only_classes_defined_in_allowed_modules(name, allowed):
    assert skops_format._resolve_allowed(name) is allowed


def test_skops_encoder_is_loaded_in_keras_safe_mode(fitted_triplet_pipeline, tmp_path):
    import keras

    pipe, _ = fitted_triplet_pipeline
    embedder = pipe.named_steps["embed"]
    original = embedder.encoder_
    inputs = keras.Input(original.input_shape[1:])
    lam = keras.layers.Lambda(lambda t: t * 1.0)  # arbitrary code inside a .keras archive
    embedder.encoder_ = keras.Model(inputs, lam(original(inputs)))
    try:
        path = save_pipeline(pipe, tmp_path / "lambda.skops")
    finally:
        embedder.encoder_ = original
    with pytest.raises(ValueError, match=r"^cannot read pipeline file .*lambda\.skops: encoder "
                       r"file 'encoder bytes' is refused by Keras's safe mode \(a `Lambda` "
                       r"layer whose `function` is a Python lambda: its code would run\)"):
        load_pipeline(path)


def test_interrupted_save_never_pairs_a_model_with_the_old_sidecar(blobs, tmp_path,
                                                                   monkeypatch):
    X, y = blobs
    path = save_pipeline(LogisticRegression().fit(X, y), tmp_path / "m.joblib")

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # as if killed between the model and the sidecar rename

    monkeypatch.setattr(persistence, "atomic_write_text", killed)
    with pytest.raises(KeyboardInterrupt):
        save_pipeline(LogisticRegression(C=0.01).fit(X, y), path)
    monkeypatch.undo()
    with pytest.raises(ValueError, match=r"m\.joblib: it does not match its sidecar "
                       r"m\.joblib\.json .*or an interrupted save"):
        load_pipeline(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.joblib", "m.joblib.json"]


def test_stale_temporaries_of_killed_saves_are_cleaned(blobs, tmp_path):
    X, y = blobs
    stale = [tmp_path / f".m.joblib.999999999.{'a' * 32}.tmp",  # earlier versions' names
             tmp_path / f".m.joblib.999999999-{'b' * 32}.tmp",
             tmp_path / f".m.joblib.json.999999999-{'c' * 32}.tmp"]
    for path in stale:
        path.write_bytes(b"partial")
        os.utime(path, (time.time() - 7200,) * 2)  # without a lock, age tells stale
    # a killed writer's temporary: its lock file is there, and nobody holds it
    (tmp_path / f".m.joblib.1-{'d' * 32}.tmp").write_bytes(b"partial")
    (tmp_path / f".m.joblib.1-{'d' * 32}.lock").write_bytes(b"")
    save_pipeline(LogisticRegression().fit(X, y), tmp_path / "m.joblib")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.joblib", "m.joblib.json"]


def test_save_mistakes_are_value_errors(blobs, tmp_path):
    X, y = blobs
    (tmp_path / "plain").write_text("a file")
    with pytest.raises(ValueError, match=r"cannot write .*plain/m\.joblib: a part of its folder"):
        save_pipeline(LogisticRegression().fit(X, y), tmp_path / "plain" / "m.joblib")
    with pytest.raises(ValueError, match="pipeline LogisticRegression is not fitted"):
        save_pipeline(LogisticRegression(), tmp_path / "m.joblib")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain"]


def test_sidecar_versions_not_an_object(blobs, tmp_path):
    X, y = blobs
    path = save_pipeline(LogisticRegression().fit(X, y), tmp_path / "m.joblib")
    metadata = json.loads(sidecar_path(path).read_text())
    metadata["versions"] = "1.9"
    sidecar_path(path).write_text(json.dumps(metadata))
    with pytest.raises(ValueError, match="has 'versions' of type str, expected an object"):
        load_pipeline(path)
    assert os.path.isfile(path)
