"""Every error path the CLI and the public API reach ends in one short line naming its file.

Each CLI case runs ``main([...])`` in this process and checks: exit code 1, exactly one
line on stderr, starting ``triplet: error:``, at most 300 characters, not cut by the
summariser (our own messages fit whole), and naming the argument or file (its basename).
Each API case checks the same of the exception's text. Nothing here trains a model: the
encoders are built with ``build_encoder`` and saved, the pipelines hold scikit-learn steps.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import re
import zipfile
from pathlib import Path

import joblib
import numpy as np
import pytest

from pipelines.cli import use as _cli_use
from pipelines.cli.main import main
from tests._images import make_shapes, write_image_folder

LIMIT = 300
#: What the summariser appends when it had to cut a text.
CUT = "more characters"
SIGNING_KEY_ENV = "TRIPLET_SIGNING_KEY"


def _save_head(path, *, bare=False):
    """A fitted scikit-learn pipeline (or bare head) saved with its sidecar."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    from pipelines import save_pipeline

    X, y = np.arange(12.0).reshape(6, 2), np.array([0, 1] * 3)
    head = LogisticRegression().fit(X, y)
    model = head if bare else Pipeline([("embed", StandardScaler()), ("head", head)]).fit(X, y)
    return save_pipeline(model, path)


def _rewrite_keras(source, target, edit):
    """A copy of the ``.keras`` archive ``source`` whose config.json went through ``edit``."""
    with zipfile.ZipFile(source) as archive:
        items = {name: archive.read(name) for name in archive.namelist()}
    items["config.json"] = edit(items["config.json"].decode()).encode()
    with zipfile.ZipFile(target, "w") as archive:
        for name, data in items.items():
            archive.writestr(name, data)


def _bogus_dense_kwarg(text):
    config = json.loads(text)

    def walk(node):
        if isinstance(node, dict):
            if node.get("class_name") == "Dense":
                node["config"]["bogus_kwarg"] = 1
                return True
            return any(walk(v) for v in node.values())
        return isinstance(node, list) and any(walk(v) for v in node)

    assert walk(config)
    return json.dumps(config)


def build_files(root) -> dict:
    """Every file the cases need, under ``root``; returns name -> path."""
    import keras

    from embedder.models.encoder_files import save_encoder
    from embedder.models.encoders import build_encoder
    from pipelines.persistence.sidecar import sidecar_path

    root = Path(root)
    X, y = make_shapes(4, size=16)
    write_image_folder(root / "images", X, y)
    write_image_folder(root / "single", X[:4], np.zeros(4, int))
    (root / "empty").mkdir()
    (root / "noimages").mkdir()
    (root / "noimages" / "notes.txt").write_text("no images here")
    write_image_folder(root / "badimage", X[:8], y[:8])  # two classes
    (root / "badimage" / "class_0" / "broken.png").write_bytes(b"\x89PNG not really")
    (root / "afile").write_text("a file, not a folder")
    (root / "folder.npy").mkdir()
    files = {name: root / name for name in ("images", "single", "empty", "noimages",
                                             "badimage", "afile")}

    encoder = build_encoder("tiny_cnn", (16, 16, 3), 8)
    files["enc"] = save_encoder(encoder, root / "enc.keras", [])
    data = files["enc"].read_bytes()
    (root / "trunc.keras").write_bytes(data[: len(data) // 2])
    (root / "garbage.keras").write_bytes(b"hello, not a zip archive")
    _rewrite_keras(files["enc"], root / "rebuild.keras", _bogus_dense_kwarg)
    _rewrite_keras(files["enc"], root / "unknown.keras",
                   lambda t: t.replace('"class_name": "Conv2D"', '"class_name": "NoSuchLayer"', 1))
    inputs = keras.Input((16, 16, 3))
    scaled = keras.layers.Lambda(lambda t: t * 2.0)(inputs)
    keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(scaled)).save(root / "lambda.keras")
    encoder.save_weights(root / "enc.weights.h5")
    weights = (root / "enc.weights.h5").read_bytes()
    (root / "trunc.weights.h5").write_bytes(weights[: len(weights) // 3])
    for name in ("trunc", "garbage", "rebuild", "unknown", "lambda", "trunc.weights"):
        files[name] = root / (f"{name}.h5" if name.endswith("weights") else f"{name}.keras")

    files["head"] = _save_head(root / "head.joblib")
    files["bare"] = _save_head(root / "bare.joblib", bare=True)
    model = joblib.load(files["head"])
    joblib.dump(model, root / "nosidecar.joblib")
    files["nosidecar"] = root / "nosidecar.joblib"
    for name, edit in {
        "tampered": lambda p: p.write_bytes(p.read_bytes() + b"x"),
        "notjson": lambda p: sidecar_path(p).write_text("{not json"),
        "listjson": lambda p: sidecar_path(p).write_text("[1, 2]"),
        "newformat": lambda p: _edit_sidecar(p, format_version=99),
        "oldsklearn": lambda p: _edit_sidecar(p, sklearn="0.1.0"),
        "truncated": lambda p: p.write_bytes(p.read_bytes()[:40]),
        "zipped": lambda p: p.write_bytes(b"PK\x03\x04" + b"\0" * 40),
    }.items():
        files[name] = _save_head(root / f"{name}.joblib")
        edit(files[name])
    with _signing_key("another key"):
        files["signed"] = _save_head(root / "signed.joblib")
    (root / "text.joblib").write_bytes(b"not a pickle at all")
    (root / "nomodule.joblib").write_bytes(b"\x80\x04cno_such_module_xyz\nthing\n.")
    files["text"], files["nomodule"] = root / "text.joblib", root / "nomodule.joblib"
    return files


@contextlib.contextmanager
def _signing_key(key):
    import os

    saved = os.environ.get(SIGNING_KEY_ENV)
    os.environ[SIGNING_KEY_ENV] = key
    try:
        yield
    finally:
        if saved is None:
            del os.environ[SIGNING_KEY_ENV]
        else:
            os.environ[SIGNING_KEY_ENV] = saved


def _edit_sidecar(path, format_version=None, sklearn=None):
    from pipelines.persistence.sidecar import sidecar_path

    metadata = json.loads(sidecar_path(path).read_text())
    if format_version is not None:
        metadata["format_version"] = format_version
    if sklearn is not None:
        metadata["versions"]["scikit-learn"] = sklearn
    sidecar_path(path).write_text(json.dumps(metadata))


def _raiser(exc):
    def command(args):
        raise exc
    return command


def _oom():
    import tensorflow as tf

    return tf.errors.ResourceExhaustedError(
        None, None, "OOM when allocating tensor with shape[256,112,112,32] and type float "
        "on /job:localhost/replica:0/task:0/device:GPU:0 by allocator GPU_0_bfc [Op:Conv2D]")


# id -> (argv from the files f, what the line must name, environment changes, command
# replaced by one raising this exception or None)
CLI_CASES = {
    "train-missing-data": lambda f: (["train", f["images"].parent / "missing", "--out",
                                      "e.keras"], "missing"),
    "train-out-not-keras": lambda f: (["train", f["images"], "--out", "enc.h5"], "--out"),
    "train-unknown-encoder": lambda f: (["train", f["images"], "--out", "e.keras",
                                         "--encoder", "vgg"], "encoder must be one of"),
    "train-missing-weights": lambda f: (["train", f["images"], "--out", "e.keras", "--encoder",
                                         "tiny_cnn", "--image-size", "16", "--weights",
                                         f["images"].parent / "none.weights.h5"],
                                        "none.weights.h5"),
    "train-truncated-weights": lambda f: (["train", f["images"], "--out", "e.keras",
                                           "--encoder", "tiny_cnn", "--image-size", "16",
                                           "--embedding-dim", "8", "--weights",
                                           f["trunc.weights"]], "trunc.weights.h5"),
    "train-workers-without-strategy": lambda f: (["train", f["images"], "--out", "e.keras",
                                                  "--workers", "a:1,b:2"], "--workers"),
    "train-multi-worker-without-cluster": lambda f: (["train", f["images"], "--out", "e.keras",
                                                      "--strategy", "multi_worker"],
                                                     "multi_worker"),
    "train-one-class": lambda f: (["train", f["single"], "--out", "e.keras", "--image-size",
                                   "16"], "class"),
    "train-epochs-zero": lambda f: (["train", f["images"], "--out", "e.keras", "--epochs",
                                     "0"], "epochs"),
    "evaluate-cv-1": lambda f: (["evaluate", f["images"], "--out", "o", "--cv", "1"], "--cv"),
    "evaluate-unknown-head": lambda f: (["evaluate", f["images"], "--out", "o", "--heads",
                                         "forest"], "--heads"),
    "evaluate-n-jobs-0": lambda f: (["evaluate", f["images"], "--out", "o", "--n-jobs", "0"],
                                    "--n-jobs"),
    "evaluate-open-set-0": lambda f: (["evaluate", f["images"], "--out", "o", "--open-set",
                                       "0"], "--open-set"),
    "evaluate-scheduler-refuses": lambda f: (["evaluate", f["images"], "--out", "o",
                                              "--scheduler", "127.0.0.1:1",
                                              "--scheduler-timeout", "2"], "127.0.0.1:1"),
    "evaluate-scheduler-bad-address": lambda f: (["evaluate", f["images"], "--out", "o",
                                                  "--scheduler", "http://x:80/path"],
                                                 "--scheduler"),
    "embed-image-size-huge": lambda f: (["embed", f["enc"], f["images"], "--out", "e.npy",
                                         "--image-size", "100000"], "--image-size"),
    "embed-image-size-tiny": lambda f: (["embed", f["enc"], f["images"], "--out", "e.npy",
                                         "--image-size", "4"], "--image-size"),
    "embed-out-suffix": lambda f: (["embed", f["enc"], f["images"], "--out", "e.txt"],
                                   "--out"),
    "embed-batch-size-0": lambda f: (["embed", f["enc"], f["images"], "--out", "e.npy",
                                      "--batch-size", "0"], "--batch-size"),
    "embed-max-pixels-0": lambda f: (["embed", f["enc"], f["images"], "--out", "e.npy",
                                      "--max-pixels", "0"], "--max-pixels"),
    "embed-max-pixels-exceeded": lambda f: (["embed", f["enc"], f["images"], "--out", "e.npy",
                                             "--max-pixels", "10", "--image-size", "16"],
                                            ".png"),
    "embed-missing-encoder": lambda f: (["embed", f["images"].parent / "none.keras",
                                         f["images"], "--out", "e.npy"], "none.keras"),
    "embed-garbage-encoder": lambda f: (["embed", f["garbage"], f["images"], "--out", "e.npy"],
                                        "garbage.keras"),
    "embed-truncated-encoder": lambda f: (["embed", f["trunc"], f["images"], "--out",
                                           "e.npy"], "trunc.keras"),
    "embed-unrebuildable-encoder": lambda f: (["embed", f["rebuild"], f["images"], "--out",
                                               "e.npy"], "rebuild.keras"),
    "embed-unknown-layer": lambda f: (["embed", f["unknown"], f["images"], "--out", "e.npy"],
                                      "unknown.keras"),
    "embed-lambda-safe-mode": lambda f: (["embed", f["lambda"], f["images"], "--out",
                                          "e.npy"], "lambda.keras"),
    "embed-empty-folder": lambda f: (["embed", f["enc"], f["empty"], "--out", "e.npy"],
                                     "empty"),
    "embed-folder-without-images": lambda f: (["embed", f["enc"], f["noimages"], "--out",
                                               "e.npy"], "noimages"),
    "embed-corrupt-image": lambda f: (["embed", f["enc"], f["badimage"], "--out", "e.npy",
                                       "--image-size", "16"], "broken.png"),
    "embed-out-inside-a-file": lambda f: (["embed", f["enc"], f["images"], "--out",
                                           f["afile"] / "e.npy", "--image-size", "16"],
                                          "afile"),
    "embed-out-is-a-folder": lambda f: (["embed", f["enc"], f["images"], "--out",
                                         f["images"].parent / "folder.npy", "--image-size",
                                         "16"], "folder.npy"),
    "embed-scheduler-refuses": lambda f: (["embed", f["enc"], f["images"], "--out", "e.npy",
                                           "--scheduler", "tcp://127.0.0.1:1",
                                           "--scheduler-timeout", "2"], "127.0.0.1:1"),
    "embed-scheduler-timeout-0": lambda f: (["embed", f["enc"], f["images"], "--out",
                                             "e.npy", "--scheduler", "127.0.0.1:1",
                                             "--scheduler-timeout", "0"],
                                            "--scheduler-timeout"),
    "predict-missing-model": lambda f: (["predict", f["images"].parent / "none.joblib",
                                         f["images"]], "none.joblib"),
    "predict-no-sidecar": lambda f: (["predict", f["nosidecar"], f["images"]],
                                     "nosidecar.joblib"),
    "predict-tampered": lambda f: (["predict", f["tampered"], f["images"]],
                                   "tampered.joblib"),
    "predict-sidecar-not-json": lambda f: (["predict", f["notjson"], f["images"]],
                                           "notjson.joblib"),
    "predict-sidecar-a-list": lambda f: (["predict", f["listjson"], f["images"]],
                                         "listjson.joblib"),
    "predict-newer-format": lambda f: (["predict", f["newformat"], f["images"]],
                                       "newformat.joblib"),
    "predict-other-sklearn": lambda f: (["predict", f["oldsklearn"], f["images"]],
                                        "oldsklearn.joblib"),
    "predict-truncated-trusted": lambda f: (["predict", f["truncated"], f["images"],
                                             "--trust"], "truncated.joblib"),
    "predict-corrupt-zip": lambda f: (["predict", f["zipped"], f["images"]], "zipped.joblib"),
    "predict-not-a-pickle-trusted": lambda f: (["predict", f["text"], f["images"], "--trust"],
                                               "text.joblib"),
    "predict-missing-module": lambda f: (["predict", f["nomodule"], f["images"], "--trust"],
                                         "nomodule.joblib"),
    "predict-an-encoder": lambda f: (["predict", f["enc"], f["images"]], "enc.keras"),
    "predict-a-bare-head": lambda f: (["predict", f["bare"], f["images"]], "bare.joblib"),
    "predict-reject-without-calibration": lambda f: (["predict", f["head"], f["images"],
                                                      "--reject-unknown"], "--reject-unknown"),
    "predict-tpr-without-reject": lambda f: (["predict", f["head"], f["images"],
                                              "--target-tpr", "0.9"], "--target-tpr"),
    "predict-tpr-out-of-range": lambda f: (["predict", f["head"], f["images"],
                                            "--reject-unknown", "--target-tpr", "2"],
                                           "--target-tpr"),
    "predict-missing-image": lambda f: (["predict", f["head"], f["images"].parent / "q.png"],
                                        "q.png"),
    "predict-unsigned-with-key": lambda f: (["predict", f["head"], f["images"]],
                                            SIGNING_KEY_ENV, {SIGNING_KEY_ENV: "k"}),
    "predict-wrong-signature": lambda f: (["predict", f["signed"], f["images"]],
                                          SIGNING_KEY_ENV, {SIGNING_KEY_ENV: "k"}),
    "predict-empty-key": lambda f: (["predict", f["head"], f["images"]], SIGNING_KEY_ENV,
                                    {SIGNING_KEY_ENV: " "}),
    "search-top-0": lambda f: (["search", f["head"], f["images"], f["images"], "--top", "0"],
                               "--top"),
    "search-missing-model": lambda f: (["search", f["images"].parent / "none.joblib",
                                        f["images"], f["images"]], "none.joblib"),
    "export-missing-encoder": lambda f: (["export", f["images"].parent / "none.keras", "--out",
                                          "o"], "none.keras"),
    "export-lambda-safe-mode": lambda f: (["export", f["lambda"], "--out", "o"],
                                          "lambda.keras"),
    "embed-out-of-memory": lambda f: (["embed", f["enc"], f["images"], "--out", "e.npy"],
                                      "--batch-size", {}, _oom()),
    "embed-memory-error": lambda f: (["embed", f["enc"], f["images"], "--out", "e.npy"],
                                     "--batch-size", {}, MemoryError()),
    "train-out-of-memory": lambda f: (["train", f["images"], "--out", "e.keras"],
                                      "--image-size", {}, _oom()),
    "embed-eof": lambda f: (["embed", f["enc"], f["images"], "--out", "e.npy"], "EOFError",
                            {}, EOFError("Ran out of input")),
}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return build_files(tmp_path_factory.mktemp("messages"))


def run_cli(case, files, monkeypatch):
    """``(exit code, stderr, the name the line must hold)`` of the CLI case ``case``."""
    argv, named, env, raised = (*CLI_CASES[case](files), {}, None)[:4]
    monkeypatch.delenv(SIGNING_KEY_ENV, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    if raised is not None:
        monkeypatch.setattr(_cli_use, "embed", _raiser(raised))
        from pipelines.cli import train as _cli_train

        monkeypatch.setattr(_cli_train, "train", _raiser(raised))
    monkeypatch.chdir(files["images"].parent)
    return (*_main(argv), named)


def _main(argv):
    """``main(argv)``'s exit code and stderr."""
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, err.getvalue()


@pytest.mark.parametrize("case", list(CLI_CASES))
def test_cli_error_is_one_short_line_naming_its_argument(case, files, monkeypatch):
    code, err, named = run_cli(case, files, monkeypatch)
    lines = [line for line in err.splitlines()
             if not line.startswith(("triplet: warning: ", "DATA "))]
    assert code == 1, err
    assert len(lines) == 1, err
    line = lines[0]
    assert line.startswith("triplet: error: "), err
    assert len(line) <= LIMIT, f"{len(line)}: {line}"
    assert CUT not in line, line
    assert named in line, line


def test_foreign_errors_are_summarised_and_say_what_to_do(files, monkeypatch):
    code, err, _ = run_cli("embed-out-of-memory", files, monkeypatch)
    assert err == (
        "triplet: error: memory ran out (ResourceExhaustedError: OOM when allocating tensor "
        "with shape[256,112,112,32] and type float on /job:localhost/replica:0/task:0/device:"
        "GPU:0 by allocator GPU_0_bfc [Op:Conv2D]): try a smaller --batch-size or "
        "--image-size\n")
    code, err, _ = run_cli("train-out-of-memory", files, monkeypatch)
    assert err.rstrip().endswith(
        "): try a smaller --image-size, --classes-per-batch or --samples-per-class")
    code, err, _ = run_cli("embed-eof", files, monkeypatch)
    assert err == "triplet: error: EOFError: Ran out of input\n"


def test_verbose_shows_the_foreign_error(files, monkeypatch):
    monkeypatch.setattr(_cli_use, "embed", _raiser(EOFError("Ran out of input")))
    with pytest.raises(EOFError):
        main(["embed", str(files["enc"]), str(files["images"]), "--out", "e.npy",
              "--verbose"])


def test_programming_errors_keep_their_traceback(files, monkeypatch):
    monkeypatch.setattr(_cli_use, "embed", _raiser(AttributeError("'NoneType' has no 'x'")))
    with pytest.raises(AttributeError):
        main(["embed", str(files["enc"]), str(files["images"]), "--out", "e.npy"])


def test_a_long_message_is_cut_with_a_count(files, monkeypatch):
    monkeypatch.setattr(_cli_use, "embed", _raiser(ValueError("x.keras: " + "word " * 100)))
    code, err = _main(["embed", files["enc"], files["images"], "--out", "e.npy"])
    line = err.rstrip("\n")
    assert code == 1 and "\n" not in line and len(line) == LIMIT
    assert line.startswith("triplet: error: x.keras: word word ")
    assert line.endswith("word... (270 more characters; --verbose shows all)")


def test_summary():
    from embedder.checks import summary

    assert summary("a\n\t b  c") == "a b c"
    assert summary("\x1b[31mred\x1b[0m") == "red"
    assert summary(EOFError()) == "EOFError"
    assert summary("x" * 300) == "x" * 300
    assert summary("x" * 301) == "x" * 276 + "... (25 more characters)"
    assert summary("ab " * 20, limit=40, hint="; more") == (
        "ab ab ab a... (49 more characters; more)")
    assert summary("abcdef", limit=4) == "abcd"  # no room for the count


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_os_errors_without_a_file_name_name_the_file(tmp_path):
    from embedder.files import atomic_path, os_errors_named

    target = tmp_path / "out.bin"
    with pytest.raises(OSError) as info, atomic_path(target):
        _disk_full()  # as write() fails on a full disk: no file name
    assert str(info.value) == f"[Errno 28] cannot write {target}: No space left on device"
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    with pytest.raises(FileNotFoundError) as info, os_errors_named(target):
        open(tmp_path / "none")  # noqa: SIM115 - already names its file: unchanged
    assert info.value.filename == str(tmp_path / "none")


def test_a_full_temporary_folder_names_the_encoder(files, monkeypatch):
    # Keras reads .keras archives from files: the encoder's bytes are copied to a
    # temporary folder first, which may be full
    monkeypatch.setattr(Path, "write_bytes", _disk_full)
    code, err = _main(["embed", files["enc"], files["images"], "--out", "e.npy"])
    line = err.splitlines()[-1]
    assert code == 1 and re.fullmatch(
        rf"triplet: error: \[Errno 28\] cannot copy {re.escape(str(files['enc']))} to "
        r"\S+/encoder\.keras: No space left on device", line), err


def _checkpoint_model():
    import keras

    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    model.compile(optimizer="adam", loss="mse")
    return model


def _backup(folder, metadata=None, weights=None):
    """A checkpoint folder whose backup has this metadata text / these weight bytes."""
    from embedder.training.checkpoints import BACKUP_METADATA, CheckedBackupAndRestore

    folder.mkdir(parents=True, exist_ok=True)
    model = _checkpoint_model()
    model.save_weights(folder / "latest.weights.h5")
    if weights is not None:
        data = (folder / "latest.weights.h5").read_bytes()
        (folder / "latest.weights.h5").write_bytes(weights(data))
    (folder / BACKUP_METADATA).write_text(metadata or json.dumps({"epoch": 1, "batch": 0}))
    backup = CheckedBackupAndRestore(str(folder))
    backup.set_model(model)
    return backup


def _claim(folder):
    from embedder.training.checkpoints import MANIFEST, claim_checkpoint_dir
    from embedder.training.config import TrainingConfig

    folder.mkdir(parents=True, exist_ok=True)
    (folder / MANIFEST).write_text("{garbage")
    model = _checkpoint_model()
    config = TrainingConfig(checkpoint_dir=str(folder))
    X = np.zeros((2, 4, 4, 3), np.uint8)
    return lambda: claim_checkpoint_dir(config, model, X, np.array([0, 1]), (4, 4, 3))


def _frozen_fit(path, channels):
    from embedder import FrozenEmbedder

    return lambda: FrozenEmbedder(path).fit(np.zeros((2, 16, 16, channels), np.float32))


def _load_pipeline(path, **kw):
    from pipelines import load_pipeline

    return lambda: load_pipeline(path, **kw)


def _load_encoder(path):
    from embedder.models.encoder_files import load_encoder_file

    return lambda: load_encoder_file(path)


def _streamed_into(path):
    from pipelines.streaming import write_embeddings

    return lambda: write_embeddings(iter([np.ones((2, 3), np.float32)]), 2, 3, path)


# id -> (the call from the files f and a scratch folder t, the name its message holds)
API_CASES = {
    "load-pipeline-tampered": lambda f, t: (_load_pipeline(f["tampered"]), "tampered.joblib"),
    "load-pipeline-no-sidecar": lambda f, t: (_load_pipeline(f["nosidecar"]),
                                              "nosidecar.joblib"),
    "load-pipeline-sidecar-not-json": lambda f, t: (_load_pipeline(f["notjson"]),
                                                    "notjson.joblib.json"),
    "load-pipeline-other-sklearn": lambda f, t: (_load_pipeline(f["oldsklearn"]),
                                                 "oldsklearn.joblib"),
    "load-encoder-unrebuildable": lambda f, t: (_load_encoder(f["rebuild"]), "rebuild.keras"),
    "load-encoder-lambda": lambda f, t: (_load_encoder(f["lambda"]), "lambda.keras"),
    "load-encoder-garbage": lambda f, t: (_load_encoder(f["garbage"]), "garbage.keras"),
    "frozen-fit-2-channels": lambda f, t: (_frozen_fit(f["enc"], 2), "input_shape"),
    "frozen-fit-5-channels": lambda f, t: (_frozen_fit(f["enc"], 5), "input_shape"),
    "frozen-fit-unrebuildable": lambda f, t: (_frozen_fit(f["rebuild"], 3), "rebuild.keras"),
    "checkpoint-metadata-not-json": lambda f, t: (
        _backup(t / "ck", "{not json").on_train_begin, "training_metadata.json"),
    "checkpoint-metadata-a-list": lambda f, t: (
        _backup(t / "ck", "[3]").on_train_begin, "training_metadata.json"),
    "checkpoint-metadata-bad-epoch": lambda f, t: (
        _backup(t / "ck", '{"epoch": -1}').on_train_begin, "training_metadata.json"),
    "checkpoint-weights-truncated": lambda f, t: (
        _backup(t / "ck", weights=lambda d: d[: len(d) // 2]).on_train_begin,
        "latest.weights.h5"),
    "checkpoint-manifest-garbage": lambda f, t: (_claim(t / "ck"), "run.json"),
    "stream-into-a-file": lambda f, t: (_streamed_into(f["afile"] / "e.npy"), "afile"),
    "probe-refused": lambda f, t: (lambda: __import__("pipelines.cluster").cluster
                                   .probe_scheduler("127.0.0.1:1", 2), "127.0.0.1:1"),
}


@pytest.mark.parametrize("case", list(API_CASES))
def test_api_error_is_one_short_line_naming_its_file(case, files, tmp_path, monkeypatch):
    monkeypatch.delenv(SIGNING_KEY_ENV, raising=False)
    call, named = API_CASES[case](files, tmp_path)
    with pytest.raises((ValueError, TypeError, OSError)) as info:
        call()
    message = str(info.value)
    assert "\n" not in message and len(message) <= LIMIT, f"{len(message)}: {message}"
    assert named in message, message
