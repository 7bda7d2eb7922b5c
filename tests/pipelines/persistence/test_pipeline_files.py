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
from pipelines.persistence import FORMAT_VERSION, SIGNING_KEY_ENV, sidecar_path


@pytest.fixture(scope="module")
def data():
    X, y = make_blobs(n_samples=60, centers=3, n_features=5, random_state=0)
    return X, np.array(["cat", "dog", "owl"])[y]


@pytest.fixture(scope="module")
def fitted(data):
    X, y = data
    return Pipeline([("embed", StandardScaler()), ("head", make_head("logreg"))]).fit(X, y)


@pytest.fixture
def saved(fitted, tmp_path, monkeypatch):
    monkeypatch.delenv(SIGNING_KEY_ENV, raising=False)
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
    assert set(metadata["versions"]) == {
        "tensorflow", "keras", "scikit-learn", "numpy", "joblib", "skops"
    }
    assert "hmac" not in metadata
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
    with pytest.raises(ValueError, match=r"pipeline CalibratedClassifierCV is not fitted: call "
                       r"fit before save_pipeline \(nothing was written to .*unfitted\.joblib\)"):
        save_pipeline(make_head("svm"), tmp_path / "unfitted.joblib")
    unfitted_pipe = Pipeline([("embed", StandardScaler()), ("head", make_head("knn"))])
    with pytest.raises(ValueError, match="pipeline Pipeline is not fitted"):
        save_pipeline(unfitted_pipe, tmp_path / "unfitted.joblib")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["head.joblib", "head.joblib.json", "sub"]


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
    with pytest.raises(ValueError, match=r"refusing to load .*model\.joblib: it does not "
                       r"match its sidecar model\.joblib\.json \(sha256\): "
                       r"altered, truncated, or an interrupted save\. Unpickling runs its "
                       r"code: pass trusted=True \(CLI: --trust\) only for a source you "
                       r"trust$"):
        load_pipeline(saved)
    # trusted: a warning, then the unpickling itself fails; the error names the file
    with pytest.warns(UserWarning, match=r"loading .*model\.joblib unverified \(trusted=True\)"):
        with pytest.raises(ValueError, match=r"cannot read pipeline file .*model\.joblib") as info:
            load_pipeline(saved, trusted=True)
    assert info.value.__cause__ is not None


def test_altered_file(saved):
    raw = bytearray(saved.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    saved.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"model\.joblib: it does not match its sidecar"):
        load_pipeline(saved)


def test_not_a_joblib_file(tmp_path):
    path = tmp_path / "notes.joblib"
    path.write_text("hello")
    with pytest.raises(ValueError, match=r"refusing to load .*notes\.joblib: it has no sidecar"):
        load_pipeline(path)
    with pytest.warns(UserWarning, match="has no sidecar"):
        with pytest.raises(ValueError, match=r"cannot read pipeline file .*notes\.joblib"):
            load_pipeline(path, trusted=True)


def test_missing_sidecar_is_refused_unless_trusted(data, fitted, tmp_path):
    X, _ = data
    path = tmp_path / "plain.joblib"
    joblib.dump(fitted, path)
    with pytest.raises(ValueError, match=r"refusing to load .*plain\.joblib: it has no sidecar "
                       r"plain\.joblib\.json\. Unpickling runs its code: "
                       r"pass trusted=True \(CLI: --trust\)"):
        load_pipeline(path)
    with pytest.warns(UserWarning, match=r"unverified \(trusted=True\): it has no sidecar"):
        loaded = load_pipeline(path, trusted=True)
    np.testing.assert_array_equal(loaded.predict(X), fitted.predict(X))


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("{not json", r"its sidecar model\.joblib\.json is not JSON \(Expecting property "
                      r"name enclosed in double quotes\)\."),
        ("[1, 2]", "must hold a JSON object, got a list"),
        ('{"versions": [1], "sha256": "x"}', "has 'versions' of type list, expected an object"),
        ('{"versions": {}}', "has no sha256 string of the model file"),
    ],
)
def test_unreadable_or_malformed_sidecar_is_refused(saved, content, match):
    sidecar_path(saved).write_text(content)
    with pytest.raises(ValueError, match=r"refusing to load .*model\.joblib: .*" + match):
        load_pipeline(saved)


def test_sidecar_folder_is_refused(saved):
    sidecar_path(saved).unlink()
    sidecar_path(saved).mkdir()
    with pytest.raises(ValueError, match=r"its sidecar .*model\.joblib\.json is not a regular"):
        load_pipeline(saved)


def test_signed_files(data, fitted, tmp_path, monkeypatch):
    X, _ = data
    monkeypatch.setenv(SIGNING_KEY_ENV, "secret")
    path = save_pipeline(fitted, tmp_path / "signed.joblib")
    import hashlib
    import hmac

    expected = hmac.new(b"secret", path.read_bytes(), hashlib.sha256).hexdigest()
    assert json.loads(sidecar_path(path).read_text())["hmac"] == expected
    np.testing.assert_array_equal(load_pipeline(path).predict(X), fitted.predict(X))
    monkeypatch.setenv(SIGNING_KEY_ENV, "another key")
    with pytest.raises(ValueError, match=r"its signature does not match the key in "
                       r"TRIPLET_SIGNING_KEY"):
        load_pipeline(path)
    monkeypatch.delenv(SIGNING_KEY_ENV)
    unsigned = save_pipeline(fitted, tmp_path / "unsigned.joblib")
    assert load_pipeline(path).predict(X).shape == (60,)  # no key: sha256 only
    monkeypatch.setenv(SIGNING_KEY_ENV, "secret")
    with pytest.raises(ValueError, match="TRIPLET_SIGNING_KEY is set, but the sidecar "
                       r"unsigned\.joblib\.json holds no signature"):
        load_pipeline(unsigned)


@pytest.mark.parametrize("name", ["model.skops", "model.joblib"])
def test_formats_by_suffix(data, fitted, tmp_path, monkeypatch, name):
    X, _ = data
    monkeypatch.delenv(SIGNING_KEY_ENV, raising=False)
    path = save_pipeline(fitted, tmp_path / name)
    is_zip = path.read_bytes()[:2] == b"PK"  # .skops is a zip archive, joblib a pickle
    assert is_zip == (path.suffix == ".skops")
    np.testing.assert_array_equal(load_pipeline(path).predict_proba(X), fitted.predict_proba(X))


def test_skops_loads_without_sidecar_but_not_with_a_wrong_one(data, fitted, tmp_path):
    X, _ = data
    path = save_pipeline(fitted, tmp_path / "model.skops")
    sidecar_path(path).unlink()  # safe format: nothing to verify, loads all the same
    np.testing.assert_array_equal(load_pipeline(path).predict(X), fitted.predict(X))
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(ValueError, match=r"cannot read pipeline file .*model\.skops \(truncated"):
        load_pipeline(path)
    save_pipeline(fitted, path)
    _edit_sidecar(path, sha256="0" * 64)
    with pytest.raises(ValueError, match=r"refusing to load .*model\.skops: .*does not match"):
        load_pipeline(path)


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

    def broken_dump(obj, target, *args, **kwargs):
        target.write(b"partial")  # a partial write, then a failure
        raise OSError("disk full")

    monkeypatch.setattr(joblib, "dump", broken_dump)
    with pytest.raises(OSError, match="disk full"):
        save_pipeline(fitted, saved)
    with pytest.raises(OSError, match="disk full"):
        save_pipeline(fitted, saved.parent / "new.joblib")
    assert {p.name: p.read_bytes() for p in saved.parent.iterdir()} == before


def test_failed_rename_leaves_old_files_and_no_temporary(fitted, saved, monkeypatch):
    import os

    before = {p.name: p.read_bytes() for p in saved.parent.iterdir()}

    def broken_replace(src, dst):
        raise OSError("rename failed")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="rename failed"):
        save_pipeline(fitted, saved)
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
        (None, ".", ValueError, r"cannot write \.: it is a folder, expected a file name"),
        (None, "file.txt/m.joblib", ValueError, r"cannot write file\.txt/m\.joblib: a part of "
         r"its folder file\.txt is a regular file, expected a folder"),
    ],
)
def test_bad_save_arguments(fitted, tmp_path, monkeypatch, pipeline, path, error, match):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "file.txt").write_text("a file, not a folder")
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
        from pipelines import load_pipeline
        from pipelines import save_pipeline
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
            load_pipeline(path, trusted=True)
        except ImportError as exc:
            print(exc.name, "|", exc)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    name, message = done.stdout.strip().split(" | ")
    assert name == "tensorflow"
    assert message.startswith(f"loading {tmp_path / 'tf.joblib'} needs the module 'tensorflow'")
