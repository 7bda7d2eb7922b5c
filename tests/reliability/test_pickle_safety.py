"""Issue 12.1: ``load_pipeline`` never unpickles bytes it has not verified.

The payload of the malicious pickle creates a marker file when unpickled; every refusal
below checks that the marker does not exist, so a regression runs the payload and fails.
"""

import json
import pickle

import joblib
import numpy as np
import pytest
import sklearn
from sklearn.datasets import make_blobs
from sklearn.linear_model import LogisticRegression

import pipelines.persistence.sidecar as sidecar_module
from pipelines import load_pipeline, save_pipeline
from pipelines.persistence import SIGNING_KEY_ENV, sidecar_path


class _Payload:
    """Unpickling this calls ``open(marker, "w")``: a visible side effect."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


@pytest.fixture(autouse=True)
def _no_signing_key(monkeypatch):
    monkeypatch.delenv(SIGNING_KEY_ENV, raising=False)


@pytest.fixture
def head():
    X, y = make_blobs(n_samples=30, centers=2, n_features=3, random_state=0)
    return LogisticRegression().fit(X, y), X


@pytest.fixture
def evil(tmp_path):
    """A malicious ``model.joblib`` and the marker its payload would create."""
    marker = tmp_path / "pwned"
    path = tmp_path / "model.joblib"
    path.write_bytes(pickle.dumps(_Payload(marker)))
    return path, marker


def _refused(path, marker, match):
    with pytest.raises(ValueError, match=match):
        load_pipeline(path)
    assert not marker.exists(), "the payload ran"


def test_payload_runs_when_trusted(evil):
    # the harness itself: the payload really runs when the file is unpickled
    path, marker = evil
    with pytest.warns(UserWarning, match="unverified"):
        load_pipeline(path, trusted=True)
    assert marker.exists()


def test_no_sidecar_is_refused(evil):
    _refused(*evil, r"refusing to load .*model\.joblib: it has no sidecar model\.joblib\.json")


def test_sidecar_folder_is_refused(evil):
    path, marker = evil
    sidecar_path(path).mkdir()
    _refused(path, marker, r"its sidecar .*model\.joblib\.json is not a regular file")


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("{broken", r"is not JSON \(Expecting property name enclosed in double quotes\)"),
        ('"a string"', "must hold a JSON object, got a str"),
        ('{"versions": "1.9", "sha256": "0"}', "has 'versions' of type str, expected an object"),
        ('{"versions": {}, "sha256": null}', "has no sha256 string of the model file"),
    ],
)
def test_malformed_sidecar_is_refused(evil, content, match):
    path, marker = evil
    sidecar_path(path).write_text(content)
    _refused(path, marker, match)


def test_mismatched_sidecar_is_refused(evil, head, tmp_path):
    path, marker = evil
    genuine = save_pipeline(head[0], tmp_path / "genuine.joblib")
    sidecar_path(path).write_text(sidecar_path(genuine).read_text())
    _refused(path, marker, r"model\.joblib: it does not match its sidecar model\.joblib\.json")


def test_forged_sidecar_without_signature_is_refused(evil, monkeypatch):
    # whoever writes the pickle can write a matching sha256; only the key authenticates
    path, marker = evil
    import hashlib

    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    sidecar_path(path).write_text(json.dumps({"format_version": 1, "sha256": digest,
                                              "versions": {"scikit-learn": sklearn.__version__}}))
    monkeypatch.setenv(SIGNING_KEY_ENV, "the owner's key")
    _refused(path, marker, r"TRIPLET_SIGNING_KEY is set, but the sidecar model\.joblib\.json "
             "holds no signature")


@pytest.mark.parametrize("key", ["", "  "])
def test_set_but_empty_signing_key_fails_closed(evil, head, tmp_path, monkeypatch, key):
    # an empty key is a broken deployment, not "no key": the forged sidecar is refused
    path, marker = evil
    import hashlib

    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    sidecar_path(path).write_text(json.dumps({"format_version": 1, "sha256": digest,
                                              "versions": {"scikit-learn": sklearn.__version__}}))
    monkeypatch.setenv(SIGNING_KEY_ENV, key)
    message = (r"^TRIPLET_SIGNING_KEY is set but empty: set it to the signing key, or unset "
               r"it to save and load without a signature$")
    _refused(path, marker, message)
    with pytest.raises(ValueError, match=message):
        load_pipeline(path, trusted=True)
    assert not marker.exists()
    with pytest.raises(ValueError, match=message):
        save_pipeline(head[0], tmp_path / "m.joblib")
    assert not (tmp_path / "m.joblib").exists()


def test_file_swapped_after_the_check_is_not_the_one_loaded(evil, head, tmp_path,
                                                             monkeypatch):
    """The race: the file is replaced between verification and unpickling."""
    evil_path, marker = evil
    genuine = save_pipeline(head[0], tmp_path / "genuine.joblib")
    check = sidecar_module._check_digests

    def check_then_swap(path, sidecar, metadata, data):
        problem = check(path, sidecar, metadata, data)
        path.write_bytes(evil_path.read_bytes())  # an attacker wins the race here
        return problem

    monkeypatch.setattr(sidecar_module, "_check_digests", check_then_swap)
    loaded = load_pipeline(genuine)
    assert not marker.exists(), "the swapped-in payload ran"
    np.testing.assert_array_equal(loaded.predict(head[1]), head[0].predict(head[1]))
    # the swap happened: the file on disk is now the payload, and is refused on its own
    monkeypatch.undo()
    _refused(genuine, marker, "does not match its sidecar")


def test_plain_joblib_load_of_a_saved_file_still_works(head, tmp_path):
    path = save_pipeline(head[0], tmp_path / "m.joblib")
    np.testing.assert_array_equal(joblib.load(path).predict(head[1]), head[0].predict(head[1]))
