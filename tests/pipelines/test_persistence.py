import json
import subprocess
import sys
import textwrap
from importlib.metadata import version

import joblib
import numpy as np
import pytest
import sklearn
from sklearn.datasets import make_blobs
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler, normalize

from classifiers import make_head
from pipelines import load_pipeline, save_pipeline
from pipelines.persistence import FORMAT_VERSION, sidecar_path


@pytest.fixture(scope="module")
def data():
    X, y = make_blobs(n_samples=60, centers=3, n_features=5, random_state=0)
    return X, np.array(["cat", "dog", "owl"])[y]


@pytest.fixture(scope="module")
def fitted(data):
    X, y = data
    return Pipeline([("embed", StandardScaler()), ("head", make_head("logreg"))]).fit(X, y)


@pytest.fixture
def saved(fitted, tmp_path):
    return save_pipeline(fitted, tmp_path / "model.joblib")


def _scaled(Z, scale=1.0, axes=None):
    return scale * normalize(Z)


def _edit_sidecar(path, **changes):
    sidecar = sidecar_path(path)
    metadata = json.loads(sidecar.read_text())
    for key, value in changes.items():
        if key in metadata["versions"]:
            metadata["versions"][key] = value
        else:
            metadata[key] = value
    sidecar.write_text(json.dumps(metadata))


@pytest.mark.parametrize("head", ["knn", "logreg", "svm"])
def test_round_trip_predicts_exactly(data, tmp_path, head):
    X, y = data
    pipe = Pipeline([("embed", StandardScaler()), ("head", make_head(head))]).fit(X, y)
    path = save_pipeline(pipe, str(tmp_path / "model.joblib"))
    assert path == tmp_path / "model.joblib"
    for loaded in (load_pipeline(path), joblib.load(path)):  # plain joblib works too
        np.testing.assert_array_equal(loaded.predict(X), pipe.predict(X))
        np.testing.assert_array_equal(loaded.predict_proba(X), pipe.predict_proba(X))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.joblib", "model.joblib.json"]


def test_sidecar_contents(fitted, saved):
    metadata = json.loads((saved.parent / "model.joblib.json").read_text())
    assert metadata["format_version"] == FORMAT_VERSION == 1
    assert metadata["triplet-embeddings"] == version("triplet-embeddings")
    assert metadata["versions"]["scikit-learn"] == sklearn.__version__
    assert metadata["versions"]["numpy"] == np.__version__
    assert metadata["versions"]["joblib"] == joblib.__version__
    assert set(metadata["versions"]) == {"tensorflow", "keras", "scikit-learn", "numpy", "joblib"}
    assert metadata["python"] == "{}.{}.{}".format(*sys.version_info[:3])
    assert metadata["classes"] == ["cat", "dog", "owl"]
    assert metadata["estimator"] == "sklearn.pipeline.Pipeline"
    assert metadata["steps"] == [
        {"name": "embed", "class": "sklearn.preprocessing._data.StandardScaler"},
        {"name": "head", "class": "sklearn.linear_model._logistic.LogisticRegression"},
    ]
    assert metadata["embed_params"] == {"copy": True, "with_mean": True, "with_std": True}
    assert metadata["created_at"].endswith("+00:00")


def test_sidecar_sha256_is_of_the_joblib_file(saved):
    import hashlib

    metadata = json.loads(sidecar_path(saved).read_text())
    assert metadata["sha256"] == hashlib.sha256(saved.read_bytes()).hexdigest()


def test_non_json_embed_params_become_repr(data, tmp_path):
    X, y = data
    embed = FunctionTransformer(_scaled, kw_args={"scale": np.float32(2), "axes": (0, None)})
    pipe = Pipeline([("embed", embed), ("head", make_head("knn"))]).fit(X, y)
    metadata = json.loads(sidecar_path(save_pipeline(pipe, tmp_path / "m.joblib")).read_text())
    params = metadata["embed_params"]
    assert params["func"].startswith("<function _scaled")
    assert params["kw_args"] == {"scale": 2.0, "axes": [0, None]}
    assert params["validate"] is False


def test_head_alone_and_unfitted_estimators(data, tmp_path):
    X, y = data
    head = make_head("knn").fit(normalize(X), y)
    path = save_pipeline(head, tmp_path / "sub" / "head.joblib")  # folder created
    metadata = json.loads(sidecar_path(path).read_text())
    assert metadata["steps"] == [] and metadata["embed_params"] is None
    assert metadata["classes"] == ["cat", "dog", "owl"]
    np.testing.assert_array_equal(load_pipeline(path).predict(normalize(X)), y)
    unfitted = save_pipeline(make_head("svm"), tmp_path / "unfitted.joblib")
    assert json.loads(sidecar_path(unfitted).read_text())["classes"] is None


def test_overwrite_replaces_both_files(data, fitted, saved):
    X, y = data
    other = Pipeline([("embed", StandardScaler()), ("head", make_head("knn"))]).fit(X[:30], y[:30])
    save_pipeline(other, saved)
    assert type(load_pipeline(saved).named_steps["head"]).__name__ == "KNeighborsClassifier"
    assert sorted(p.name for p in saved.parent.iterdir()) == ["model.joblib", "model.joblib.json"]


def test_missing_file(tmp_path):
    with pytest.raises(ValueError, match=r"pipeline file .*nope\.joblib does not exist"):
        load_pipeline(tmp_path / "nope.joblib")
    with pytest.raises(ValueError, match="is not a file"):
        load_pipeline(tmp_path)


def test_truncated_file(saved):
    saved.write_bytes(saved.read_bytes()[:200])
    with pytest.raises(ValueError, match="was altered or truncated after saving: sha256 mismatch"):
        load_pipeline(saved)
    # without the sidecar the unpickling itself fails; the error names the file
    sidecar_path(saved).unlink()
    with pytest.warns(UserWarning, match="has no sidecar model.joblib.json"):
        with pytest.raises(ValueError, match=r"cannot read pipeline file .*model\.joblib") as info:
            load_pipeline(saved)
    assert info.value.__cause__ is not None


def test_altered_file(saved):
    raw = bytearray(saved.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    saved.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"model\.joblib was altered or truncated after saving"):
        load_pipeline(saved)


def test_not_a_joblib_file(tmp_path):
    path = tmp_path / "notes.joblib"
    path.write_text("hello")
    with pytest.warns(UserWarning, match="has no sidecar"):
        with pytest.raises(ValueError, match=r"cannot read pipeline file .*notes\.joblib"):
            load_pipeline(path)


def test_missing_sidecar_loads_with_a_warning(data, fitted, tmp_path):
    X, _ = data
    path = tmp_path / "plain.joblib"
    joblib.dump(fitted, path)
    with pytest.warns(UserWarning, match="loading it without checking its integrity"):
        loaded = load_pipeline(path)
    np.testing.assert_array_equal(loaded.predict(X), fitted.predict(X))


def test_unreadable_sidecar(saved):
    sidecar_path(saved).write_text("{not json")
    with pytest.raises(ValueError, match=r"cannot read the sidecar .*model\.joblib\.json"):
        load_pipeline(saved)
    sidecar_path(saved).write_text("[1, 2]")
    with pytest.raises(ValueError, match="must hold a JSON object, got list"):
        load_pipeline(saved)


def test_newer_format_version(saved):
    _edit_sidecar(saved, format_version=FORMAT_VERSION + 1)
    with pytest.raises(
        ValueError,
        match="incompatible version: .* has format_version 2, .* reads format_version <= 1",
    ):
        load_pipeline(saved)


def test_other_sklearn_version(data, saved):
    X, _ = data
    _edit_sidecar(saved, **{"scikit-learn": "0.24.2"})
    message = (
        rf"incompatible version: .*model\.joblib was saved with scikit-learn 0\.24\.2, the "
        rf"installed scikit-learn is {sklearn.__version__} \(major\.minor must match\)"
    )
    with pytest.raises(ValueError, match=message):
        load_pipeline(saved)
    with pytest.warns(UserWarning, match=message):
        assert load_pipeline(saved, check_versions=False).predict(X).shape == (60,)
    # a different patch release is compatible
    major, minor = sklearn.__version__.split(".")[:2]
    _edit_sidecar(saved, **{"scikit-learn": f"{major}.{minor}.99"})
    assert load_pipeline(saved).predict(X).shape == (60,)


def test_failed_save_leaves_old_files_untouched(fitted, saved, monkeypatch):
    before = {p.name: p.read_bytes() for p in saved.parent.iterdir()}

    def broken_dump(*args, **kwargs):
        with open(args[1], "wb") as f:  # a partial temporary file, then a failure
            f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(joblib, "dump", broken_dump)
    with pytest.raises(OSError, match="disk full"):
        save_pipeline(fitted, saved)
    with pytest.raises(OSError, match="disk full"):
        save_pipeline(fitted, saved.parent / "new.joblib")
    assert {p.name: p.read_bytes() for p in saved.parent.iterdir()} == before


def test_unpicklable_pipeline_leaves_nothing(data, tmp_path):
    X, y = data
    pipe = Pipeline([("embed", FunctionTransformer(lambda Z: Z)), ("head", make_head("knn"))])
    with pytest.raises(Exception, match="lambda"):
        save_pipeline(pipe.fit(X, y), tmp_path / "m.joblib")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "pipeline, path, error, match",
    [
        ("pipe", "m.joblib", TypeError, "pipeline must be a fitted scikit-learn estimator"),
        (Pipeline, "m.joblib", TypeError, "pipeline must be a fitted scikit-learn estimator"),
        (None, 3, TypeError, "path must be a str or os.PathLike, got int"),
        (None, ".", ValueError, "path must be a file name, got the folder"),
    ],
)
def test_bad_save_arguments(fitted, tmp_path, monkeypatch, pipeline, path, error, match):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(error, match=match):
        save_pipeline(fitted if pipeline is None else pipeline, path)


def test_head_loads_without_tensorflow(data, tmp_path):
    X, y = data
    Z = normalize(X)
    head = make_head("svm").fit(Z, y)
    path = save_pipeline(head, tmp_path / "head.joblib")
    np.save(tmp_path / "Z.npy", Z)
    np.save(tmp_path / "expected.npy", head.predict_proba(Z))
    code = textwrap.dedent(
        f"""
        import sys
        sys.modules["tensorflow"] = None
        sys.modules["keras"] = None
        import numpy as np
        from pipelines import load_pipeline, save_pipeline
        folder = {str(tmp_path)!r}
        head = load_pipeline(folder + "/head.joblib")
        Z = np.load(folder + "/Z.npy")
        np.testing.assert_array_equal(head.predict_proba(Z), np.load(folder + "/expected.npy"))
        save_pipeline(head, folder + "/again.joblib")
        assert "tensorflow" not in [m for m in sys.modules if sys.modules[m] is not None]
        print("ok")
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
    assert (tmp_path / "again.joblib.json").is_file()
    assert path.is_file()


def test_missing_module_is_an_import_error_naming_the_file(tmp_path):
    # A pickle that refers to a module the loading process cannot import.
    code = textwrap.dedent(
        f"""
        import sys, warnings
        sys.modules["tensorflow"] = None
        import pickle
        from pipelines import load_pipeline
        path = {str(tmp_path / "tf.joblib")!r}
        with open(path, "wb") as f:
            f.write(b"\\x80\\x04ctensorflow\\nconstant\\n.")
        warnings.simplefilter("ignore")
        try:
            load_pipeline(path)
        except ImportError as exc:
            print(exc.name, "|", exc)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    name, message = done.stdout.strip().split(" | ")
    assert name == "tensorflow"
    assert message.startswith(f"loading {tmp_path / 'tf.joblib'} needs the module 'tensorflow'")
