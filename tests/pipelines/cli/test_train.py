"""``--tensorboard`` and ``--csv-log`` of ``triplet train`` and ``triplet evaluate``."""

import contextlib
import csv
import io

import pytest

from pipelines.cli.main import main
from tests._images import make_shapes, write_image_folder

TINY = ["--encoder", "small_cnn", "--epochs", "2", "--image-size", "16",
        "--embedding-dim", "8", "--samples-per-class", "4"]


def _run(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def _epochs(path):
    with open(path, newline="") as handle:
        return [int(row["epoch"]) for row in csv.DictReader(handle)]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_logs")
    X, y = make_shapes(8, size=16)
    write_image_folder(root / "images", X, y)
    return root / "images"


def test_train_writes_tensorboard_and_csv_logs(images, tmp_path):
    code, _, err = _run(["train", images, "--out", tmp_path / "enc.keras", *TINY,
                         "--tensorboard", tmp_path / "tb", "--csv-log",
                         tmp_path / "logs" / "train.csv"])
    assert code == 0, err
    assert _epochs(tmp_path / "logs" / "train.csv") == [0, 1]
    with open(tmp_path / "logs" / "train.csv", newline="") as handle:
        header = next(csv.reader(handle))
    assert {"loss", "active_fraction", "learning_rate"} <= set(header)
    events = list((tmp_path / "tb").rglob("events.out.tfevents.*"))
    assert events and all(e.stat().st_size > 0 for e in events)


def test_evaluate_logs_each_training_run_apart(images, tmp_path):
    code, _, err = _run(["evaluate", images, "--out", tmp_path / "eval", "--cv", "2",
                         "--heads", "knn", *TINY, "--csv-log", tmp_path / "log.csv",
                         "--tensorboard", tmp_path / "tb"])
    assert code == 0, err
    runs = ["log-run-1.csv", "log-run-2.csv", "log-run-3.csv"]  # two folds, the refit
    assert sorted(p.name for p in tmp_path.glob("log*.csv")) == runs
    assert [_epochs(tmp_path / r) for r in runs] == [[0, 1]] * 3
    assert sorted(p.name for p in (tmp_path / "tb").iterdir()) == ["run-1", "run-2", "run-3"]


def test_logs_need_training(images, tmp_path):
    from embedder.models import build_encoder

    build_encoder("small_cnn", (16, 16, 3), 8).save(tmp_path / "enc.keras")
    code, _, err = _run(["evaluate", images, "--out", tmp_path / "eval", "--encoder",
                         tmp_path / "enc.keras", "--csv-log", tmp_path / "log.csv"])
    assert code == 1
    assert err.strip() == (f"triplet: error: --tensorboard and --csv-log log training, but "
                           f"--encoder '{tmp_path / 'enc.keras'}' is a saved encoder used "
                           "frozen (nothing trains)")
    code, _, err = _run(["train", images, "--out", tmp_path / "e.keras", "--csv-log",
                         tmp_path])
    assert code == 1
    assert err.strip() == f"triplet: error: --csv-log must be a file, got the folder " \
                          f"'{tmp_path}'"
