"""End-to-end tests of the ``triplet`` command line on a tiny image folder (16 px, 1 epoch)."""

import contextlib
import io
import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from pipelines.cli import train as _cli_train
from pipelines.cli.main import main
from tests._images import make_shapes, write_image_folder

TINY = ["--encoder", "small_cnn", "--epochs", "1", "--image-size", "16",
        "--embedding-dim", "8", "--samples-per-class", "4"]


def _run(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def _assert_user_error(result, pattern):
    """Exit code 1, no traceback, and one error line (after any one-line warnings)."""
    code, _, err = result
    assert code == 1
    lines = err.strip().splitlines()
    assert "Traceback" not in err, err
    assert lines[-1].startswith("triplet: error: ")
    assert all(line.startswith("triplet: warning: ") for line in lines[:-1]), err
    assert re.search(pattern, lines[-1]), lines[-1]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    X, y = make_shapes(8, size=16)
    write_image_folder(root / "images", X, y, class_names=["sq", "disc", "cross", "bar", "tri"])
    return root


@pytest.fixture(scope="module")
def trained(workdir):
    result = _run(["train", workdir / "images", "--out", workdir / "enc.keras", *TINY])
    return workdir / "enc.keras", result


@pytest.fixture(scope="module")
def evaluated(workdir):
    out = workdir / "eval"
    result = _run(["evaluate", workdir / "images", "--out", out, "--cv", "2",
                   "--heads", "knn,logreg", *TINY])
    return out, result


def test_train_saves_encoder_and_prints_summary(trained):
    path, (code, out, err) = trained
    assert code == 0, err
    assert path.is_file() and path.with_name("enc.keras.fingerprints.json").is_file()
    for row in ("encoder", "final val P@1", "final val MAP@R", "collapse detected", "saved"):
        assert row in out
    assert "40 (5 classes)" in out
    # no validation split on 40 images: the run ends at its last epoch and says so
    assert re.search(r"stopped +reached epochs=\d+; kept epoch (\d+) of \1", out)


def test_train_fine_tunes_from_a_weights_file(workdir, tmp_path):
    import keras

    from embedder.models.encoders import build_encoder

    keras.utils.set_random_seed(0)
    weights = tmp_path / "start.weights.h5"
    build_encoder("small_cnn", (16, 16, 3), 8).save_weights(weights)
    argv = ["train", workdir / "images", "--out", tmp_path / "tuned.keras", *TINY,
            "--weights", weights]
    code, out, err = _run([*argv, "--epochs", "2", "--fine-tune-learning-rate-factor",
                           "0.5"])
    assert code == 0, err
    assert "backbone frozen for 1 epoch (head only), then all but its BatchNorm at 0.5 x " \
           "the learning rate" in out
    assert (tmp_path / "tuned.keras").is_file()
    code, out, err = _run([*argv, "--freeze-backbone-epochs", "0"])
    assert code == 0, err
    assert "none: all layers trained from the first epoch" in out
    _assert_user_error(_run([*argv, "--freeze-backbone-epochs", "2"]),
                       r"freeze_backbone_epochs must be at most epochs \(1\), got 2")


def test_evaluate_per_fold_writes_report_and_model(evaluated):
    out, (code, stdout, err) = evaluated
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    assert report["refit_encoder"] == "per_fold" and list(report["heads"]) == ["knn", "logreg"]
    assert report["cv"]["n_splits"] == 2 and len(report["folds"]) == 2
    assert report["classes"] == ["bar", "cross", "disc", "sq", "tri"]
    for name in ("report.md", "confusion_matrix.png", "embeddings_2d.png",
                 "training_curves.png", "model.joblib"):
        assert (out / name).stat().st_size > 0
    assert "best head:" in stdout and "[fold 2/2]" in stdout
    # the files are decoded once for all folds, not once per fold
    assert "decoded 40 images to 16 x 16 x 3 once for every fold" in stdout
    # the refit reads the files: the saved model records their fingerprints (which a later
    # leakage check on the folder compares with) and takes one path column
    from embedder.data.fingerprints import image_fingerprints
    from pipelines import load_pipeline

    embed = load_pipeline(out / "model.joblib", trusted=True).named_steps["embed"]
    files = sorted(str(p) for p in (out.parent / "images").rglob("*.png"))
    assert sorted(embed.training_fingerprints_) == sorted(image_fingerprints(files))
    assert embed.n_features_in_ == 1
    assert "warning" not in err
    # the refit trains for the epochs the folds kept, on all images, and the report says so
    kept = sorted(f["validation"]["epoch_kept"] for f in report["folds"])
    epochs = int(np.ceil(np.median(kept)))
    assert (f"on all 40 images for {epochs} epochs (the folds' choice, no validation split)"
            in stdout)
    assert any(note.startswith(f"Refit: the saved model's encoder was trained on all 40 "
                               f"images for {epochs} epochs") for note in report["notes"])
    assert any(note.startswith("Training stopped - fold 1: ") for note in report["notes"])


def test_evaluate_frozen_encoder_warns_about_seen_images(workdir, trained):
    out = workdir / "eval_frozen"
    code, stdout, err = _run(["evaluate", workdir / "images", "--encoder", trained[0],
                              "--image-size", "16", "--cv", "2", "--out", out])
    assert code == 0, err
    assert "triplet: warning: 40 of the 40 evaluated images were in the encoder's" in err
    report = json.loads((out / "report.json").read_text())
    assert report["refit_encoder"] == "never" and list(report["heads"]) == ["knn", "logreg",
                                                                              "svm"]
    assert (out / "model.joblib").is_file() and "WARNING: 40 of the 40" in stdout


def test_predict_saved_model(workdir, evaluated):
    model = evaluated[0] / "model.joblib"
    code, out, err = _run(["predict", model, workdir / "images"])
    assert code == 0, err
    table = pd.read_csv(io.StringIO(out))
    assert list(table.columns) == ["path", "class", "probability"] and len(table) == 40
    assert set(table["class"]) <= {"bar", "cross", "disc", "sq", "tri"}
    assert ((table["probability"] > 0) & (table["probability"] <= 1)).all()
    one = sorted((workdir / "images" / "disc").iterdir())[0]
    code, out, _ = _run(["predict", model, one, "--out", workdir / "pred.csv"])
    assert code == 0 and "1 predictions written" in out
    assert pd.read_csv(workdir / "pred.csv")["path"].tolist() == [str(one)]


def test_embed_formats(workdir, trained):
    enc = trained[0]
    code, out, err = _run(["embed", enc, workdir / "images", "--image-size", "16",
                           "--out", workdir / "emb.npy"])
    assert code == 0, err
    Z = np.load(workdir / "emb.npy")
    assert Z.shape == (40, 8) and Z.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(Z, axis=1), 1.0, rtol=1e-5)
    code, _, err = _run(["embed", enc, workdir / "images", "--image-size", "16",
                         "--out", workdir / "emb.csv"])
    table = pd.read_csv(workdir / "emb.csv")
    assert code == 0 and list(table.columns[:3]) == ["path", "label", "e0"]
    np.testing.assert_allclose(table[[f"e{i}" for i in range(8)]].to_numpy(), Z, atol=1e-6)
    _assert_user_error(_run(["embed", enc, workdir / "images", "--out", "e.txt"]),
                       r"--out must end with one of \.npy, \.csv, \.parquet, got 'e\.txt'")


def test_embed_parquet_needs_pyarrow(workdir, trained):
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        _assert_user_error(_run(["embed", trained[0], workdir / "images", "--out", "e.parquet"]),
                           r"--out \.parquet needs the pyarrow package")
    else:
        code, _, err = _run(["embed", trained[0], workdir / "images", "--image-size", "16",
                             "--out", workdir / "e.parquet"])
        assert code == 0 and len(pd.read_parquet(workdir / "e.parquet")) == 40, err


def test_user_errors_are_one_line(workdir, tmp_path):
    _assert_user_error(_run(["train", tmp_path / "missing", "--out", tmp_path / "e.keras"]),
                       "missing")
    X, y = make_shapes(4, size=16, n_classes=1)
    write_image_folder(tmp_path / "single", X, y)
    _assert_user_error(_run(["evaluate", tmp_path / "single", "--out", tmp_path / "o"]),
                       "class")
    bad = tmp_path / "model.joblib"
    bad.write_bytes(b"not a joblib file at all")
    _assert_user_error(_run(["predict", bad, workdir / "images"]), "model.joblib")
    _assert_user_error(_run(["predict", tmp_path / "none.joblib", workdir / "images"]),
                       "model file '.*none.joblib' does not exist")
    _assert_user_error(_run(["train", workdir / "images", "--out", tmp_path / "enc.h5"]),
                       r"--out must be a \.keras file, got '.*enc\.h5'")
    _assert_user_error(_run(["evaluate", workdir / "images", "--cv", "1", "--out", "o"]),
                       "--cv must be at least 2, got 1")


def test_verbose_shows_the_exception(tmp_path):
    with pytest.raises((ValueError, FileNotFoundError)):
        _run(["train", tmp_path / "missing", "--out", tmp_path / "e.keras", "--verbose"])


def test_truncated_model_file(workdir, evaluated, tmp_path):
    model = evaluated[0] / "model.joblib"
    cut = tmp_path / "model.joblib"
    cut.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    shutil.copy(str(model) + ".json", str(cut) + ".json")
    _assert_user_error(_run(["predict", cut, workdir / "images"]), "model.joblib")


def test_demo_recipe(monkeypatch, tmp_path):
    # The real demo trains 4 encoders on all of digits (minutes): check its wiring only;
    # `evaluate` above runs the same _report_and_model end to end.
    calls = []
    monkeypatch.setattr(_cli_train, "_report_and_model", lambda *args: calls.append(args))
    code, out, err = _run(["demo", "--out", tmp_path / "demo"])
    assert code == 0, err
    embedder, X, y, refit, plan = calls[0]
    assert X.shape == (1797, 8, 8, 1) and len(np.unique(y)) == 10
    assert (embedder.encoder, embedder.input_shape, embedder.random_state) == (
        "small_cnn", (8, 8, 1), 0)
    assert plan.heads == ["knn", "logreg", "svm"] and refit == "per_fold"
    assert plan.cv == _cli_train.DEMO_RECIPE["cv"] and plan.out == str(tmp_path / "demo")
    assert "DATA digits: 1797 images, 10 classes" in out


def test_python_m_pipelines_help():
    done = subprocess.run([sys.executable, "-m", "pipelines", "--help"], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0
    for command in ("train", "evaluate", "predict", "embed", "demo"):
        assert command in done.stdout


def test_train_reports_skipped_validation(trained):
    _, (code, out, _) = trained
    assert code == 0
    # 40 images, 5 classes: 10% gives 4 validation images, retrieval needs 10
    assert re.search(r"validation +skipped: validation_fraction=0.1 of 40 images gives 4 "
                     r"validation images, .*; no early stopping, the last epoch was kept", out)


def test_predict_refuses_unverified_models_unless_trusted(workdir, evaluated, tmp_path):
    import joblib

    model = joblib.load(evaluated[0] / "model.joblib")  # a model we made ourselves
    bare = tmp_path / "bare.joblib"
    joblib.dump(model, bare)  # no sidecar
    _assert_user_error(_run(["predict", bare, workdir / "images"]),
                       r"refusing to load .*bare.joblib.*pass trusted=True \(CLI: --trust\)")
    code, out, err = _run(["predict", bare, workdir / "images", "--trust"])
    assert code == 0, err
    assert len(pd.read_csv(io.StringIO(out))) == 40


def test_predict_needs_a_pipeline_not_a_bare_head(workdir, evaluated, tmp_path):
    import joblib

    from pipelines import save_pipeline

    head = joblib.load(evaluated[0] / "model.joblib")[-1]
    save_pipeline(head, tmp_path / "head.joblib")
    _assert_user_error(_run(["predict", tmp_path / "head.joblib", workdir / "images"]),
                       r"model file '.*head.joblib' must hold a pipeline with an embedding "
                       r"step and a head .*got a KNeighborsClassifier|LogisticRegression")


def test_evaluate_option_errors(workdir):
    _assert_user_error(_run(["evaluate", workdir / "images", "--out", workdir / "x",
                             "--n-jobs", "0"]), r"--n-jobs must be a positive number")
    _assert_user_error(_run(["evaluate", workdir / "images", "--out", workdir / "x",
                             "--encoder", "vgg"]),
                       r"--encoder must be one of \[.*\] or an existing .keras encoder file, "
                       r"got 'vgg'")


def test_training_options_come_from_the_config():
    import dataclasses

    from embedder.training.config import TrainingConfig

    done = subprocess.run([sys.executable, "-m", "pipelines", "train", "--help"],
                          capture_output=True, text=True, timeout=60, check=False)
    for field in dataclasses.fields(TrainingConfig):
        if field.name not in ("random_state", "verbose", "soft"):
            assert "--" + field.name.replace("_", "-") in done.stdout, field.name


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert re.fullmatch(r"triplet \d+\.\d+\.\d+.*\n", capsys.readouterr().out)


def _sub_parsers():
    import argparse

    from pipelines.cli.main import _parser

    action = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


def test_every_command_has_an_example_and_help_for_every_argument():
    commands = _sub_parsers()
    assert {"train", "evaluate", "predict", "search", "embed", "demo"} <= set(commands)
    for name, parser in commands.items():
        assert parser.epilog.startswith(f"example:\n  triplet {name} "), name
        assert f"example:\n  triplet {name} " in parser.format_help()  # not re-wrapped
        for action in parser._actions:
            assert action.help, f"{name}: {action.dest} has no help"


def test_options_are_checked_before_data_or_model_is_read(tmp_path):
    missing = tmp_path / "missing"
    _assert_user_error(_run(["evaluate", missing, "--out", tmp_path / "o", "--heads", "forest"]),
                       r"--heads must be comma-separated names from .*got 'forest'")
    _assert_user_error(_run(["predict", missing / "m.joblib", missing, "--out", "p.xlsx"]),
                       r"--out must end with one of \.csv, \.json, \.parquet, got 'p\.xlsx'")
    _assert_user_error(_run(["search", missing / "m.joblib", missing, missing, "--top", "0"]),
                       "--top must be at least 1, got 0")


def test_predict_writes_json_and_parquet_with_all_probabilities(workdir, evaluated, tmp_path):
    model = evaluated[0] / "model.joblib"
    code, _, err = _run(["predict", model, workdir / "images", "--out", tmp_path / "p.json",
                         "--all-probabilities"])
    assert code == 0, err
    assert re.search(r"^40/40 images embedded in [\d.]+ s$", err, flags=re.M), err
    rows = json.loads((tmp_path / "p.json").read_text())
    classes = ["bar", "cross", "disc", "sq", "tri"]
    assert len(rows) == 40
    assert list(rows[0]) == ["path", "class", "probability",
                             *(f"probability_{c}" for c in classes)]
    for row in rows:
        spread = [row[f"probability_{c}"] for c in classes]
        assert sum(spread) == pytest.approx(1.0, abs=1e-3)
        assert row["probability"] == max(spread)
    code, _, err = _run(["predict", model, workdir / "images", "--out", tmp_path / "p.parquet"])
    assert code == 0, err
    table = pd.read_parquet(tmp_path / "p.parquet")
    assert list(table.columns) == ["path", "class", "probability"]
    assert table["class"].tolist() == [row["class"] for row in rows]


def test_predict_tells_an_encoder_from_a_pipeline(workdir, trained, tmp_path):
    _assert_user_error(_run(["predict", trained[0], workdir / "images"]),
                       r"'.*enc\.keras' is an encoder, not a pipeline with a head: use it "
                       r"with `triplet embed` or `triplet search`")
    renamed = tmp_path / "encoder.joblib"  # a .keras file under another name
    shutil.copy(trained[0], renamed)
    _assert_user_error(_run(["predict", renamed, workdir / "images"]),
                       r"'.*encoder\.joblib' is an encoder, not a pipeline with a head: use it "
                       r"with `triplet embed` or `triplet search`")


def test_embed_and_search_show_progress(workdir, trained, evaluated, tmp_path):
    code, _, err = _run(["embed", trained[0], workdir / "images", "--image-size", "16",
                         "--out", tmp_path / "e.npy"])
    assert code == 0 and re.search(r"^40/40 images embedded in ", err, flags=re.M), err
    query = sorted((workdir / "images" / "disc").iterdir())[0]
    code, out, err = _run(["search", evaluated[0] / "model.joblib", workdir / "images", query,
                           "--top", "2"])
    assert code == 0, err
    # the gallery, then the query
    assert re.findall(r"^(\d+/\d+) images embedded in ", err, flags=re.M) == ["40/40", "1/1"]
    assert str(query) in out
def test_train_multi_worker_option_errors(workdir, tmp_path):
    out = tmp_path / "e.keras"
    _assert_user_error(_run(["train", workdir / "images", "--out", out, "--workers", "a:1,b:2"]),
                       "--workers needs --strategy multi_worker, got --strategy None")
    _assert_user_error(_run(["train", workdir / "images", "--out", out, "--strategy",
                             "multi_worker", "--workers", "a:1"]),
                       r"workers must be at least two 'host:port' addresses, got \['a:1'\]")
    assert not out.exists()


@pytest.mark.parametrize("given, expected", [
    (["--augment", "photo"], "photo"), (["--augment", "digits"], "digits"),
    (["--augment"], True), (["--augment", "false"], False), ([], None),
])
def test_augment_option_takes_a_preset_or_acts_as_a_flag(given, expected):
    parser = _sub_parsers()["train"]
    args = parser.parse_args(["data", "--out", "e.keras", *given])
    assert args.augment is expected or args.augment == expected
    assert type(args.augment) is type(expected)


def test_strategy_choices_are_listed_once():
    # a leftover of the time multi_worker was refused with a reason listed it twice
    help_text = _sub_parsers()["train"].format_help()
    assert "--strategy {mirrored,multi_worker}" in help_text


def test_augment_option_rejects_an_unknown_preset(capsys):
    with pytest.raises(SystemExit) as info:
        _sub_parsers()["evaluate"].parse_args(["data", "--out", "r", "--augment", "flowers"])
    assert info.value.code == 2
    assert ("argument --augment: expected one of ['photo', 'digits', 'true', 'false'], "
            "got 'flowers'") in capsys.readouterr().err
