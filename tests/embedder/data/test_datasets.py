import gzip
import os
import warnings

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from embedder.checks import check_images
from embedder.data import datasets as data
from embedder.data.datasets import load_dataset
from embedder.data.decoding import decode_errors, read_image
from embedder.data.image_pipeline import (
    decode_all,
    decoded_in_memory,
    image_batches,
    iterate_batches,
    offline_triplet_dataset,
    training_dataset,
)
from embedder.data.sampling import PKSampler
from tests._images import make_shapes, write_image_folder

FASHION_FILES = os.path.join(data.FASHION_MNIST_SYSTEM_DIR, "t10k-images-idx3-ubyte.gz")


@pytest.fixture
def shapes_folder(tmp_path):
    X, y = make_shapes(4, size=12, random_state=1)  # 5 classes x 4 images
    paths = write_image_folder(tmp_path / "imgs", X, y)
    return tmp_path / "imgs", X, y, paths


def _all(dataset):
    return np.concatenate(list(iterate_batches(dataset)))


# ------------------------------------------------------------------------ sources
def test_folder_gives_sorted_paths_and_class_names(shapes_folder):
    root, X, y, paths = shapes_folder
    (root / "class_0" / "notes.txt").write_text("not an image, ignored")
    P, labels = load_dataset(root)
    assert P.dtype == object and P.ndim == 1
    assert P.tolist() == sorted(paths)
    assert labels.tolist() == [f"class_{c}" for c in y]
    pixels, labels2 = load_dataset(str(root), input_shape=(12, 12, 3))
    assert pixels.dtype == np.float32 and pixels.shape == (20, 12, 12, 3)
    np.testing.assert_array_equal(pixels, X)  # PNG is lossless
    np.testing.assert_array_equal(labels2, labels)


def test_csv_with_relative_and_absolute_paths(shapes_folder, tmp_path):
    root, X, y, paths = shapes_folder
    rel = [os.path.relpath(p, tmp_path) for p in paths[:10]]
    table = pd.DataFrame({"path": rel + paths[10:], "label": y, "extra": 0})
    table.to_csv(tmp_path / "list.csv", index=False)
    P, labels = load_dataset(tmp_path / "list.csv")
    assert P.tolist() == paths
    np.testing.assert_array_equal(labels, y)


def test_csv_errors(shapes_folder, tmp_path):
    _, _, y, paths = shapes_folder
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"file": paths, "label": y}).to_csv(bad, index=False)
    with pytest.raises(ValueError, match=r"CSV file '.*bad\.csv' must have columns \['path', "
                       r"'label'\], got 2: 'file', 'label'$"):
        load_dataset(bad)
    pd.DataFrame({"path": paths + ["gone.png"], "label": list(y) + [0]}).to_csv(bad, index=False)
    with pytest.raises(ValueError, match=r"bad\.csv' lists 1 missing image file\(s\).*gone\.png"):
        load_dataset(bad)
    pd.DataFrame({"path": paths, "label": 3}).to_csv(bad, index=False)
    with pytest.raises(ValueError, match=r"bad\.csv' must hold at least 2 classes, got 1"):
        load_dataset(bad)


def test_folder_errors(tmp_path, shapes_folder):
    root, X, y, _ = shapes_folder
    (root / "class_9").mkdir()
    (root / "class_9" / "readme.txt").write_text("x")
    with pytest.raises(ValueError, match=r"class folder '.*class_9' contains no images"):
        load_dataset(root)
    single = tmp_path / "single"
    write_image_folder(single, X[:3], y[:3])
    with pytest.raises(ValueError, match=r"folder '.*single' must hold at least 2 classes, "
                       r"got 1 \('class_0'\)"):
        load_dataset(single)
    (tmp_path / "flat").mkdir()
    with pytest.raises(ValueError, match=r"folder '.*flat' must contain one sub-folder per"):
        load_dataset(tmp_path / "flat")
    with pytest.raises(ValueError, match=r"got '.*missing' \(which does not exist\)"):
        load_dataset(tmp_path / "missing")
    with pytest.raises(ValueError, match=r"one of \['digits', 'fashion-mnist'\], got 'mnist'"):
        load_dataset("mnist")


def test_digits_builtin():
    X, y = load_dataset("digits")
    assert X.shape == (1797, 8, 8, 1) and X.dtype == np.float32
    assert X.min() == 0 and X.max() == 255 and y.dtype.kind == "i"
    assert sorted(set(y.tolist())) == list(range(10))
    with pytest.raises(ValueError, match="'digits' .*no test split.*got 'test'"):
        load_dataset("digits", split="test")
    with pytest.raises(ValueError, match=r"split must be one of \['test', 'train'\], got 'x'"):
        load_dataset("fashion_mnist", split="x")


@pytest.mark.skipif(not os.path.exists(FASHION_FILES), reason="dataset-fashion-mnist absent")
def test_fashion_mnist_builtin_from_debian_files():
    X, y = load_dataset("fashion-mnist", split="test")
    assert X.shape == (10000, 28, 28, 1) and X.dtype == np.uint8
    assert np.bincount(y).tolist() == [1000] * 10
    assert len(data.FASHION_MNIST_CLASSES) == 10


def _write_idx(path, array, magic):
    header = np.array([magic, *array.shape], ">i4").tobytes()
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_fashion_mnist_from_env_folder(tmp_path, monkeypatch):
    images = np.arange(3 * 28 * 28).reshape(3, 28, 28) % 256
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images, 2051)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.array([4, 0, 9]), 2049)
    monkeypatch.setattr(data, "FASHION_MNIST_SYSTEM_DIR", str(tmp_path / "absent"))
    monkeypatch.setenv("FASHION_MNIST_DIR", str(tmp_path))
    X, y = data.load_fashion_mnist("test")
    np.testing.assert_array_equal(X[..., 0], images)
    assert y.tolist() == [4, 0, 9]
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.array([4, 0, 9]), 2051)
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte\.gz' is not a valid IDX"):
        data.load_fashion_mnist("test")


# ------------------------------------------------------------------------ decoding
def test_pgm_and_tiff_via_pillow(tmp_path):
    grey = np.arange(6 * 8, dtype=np.uint8).reshape(6, 8) * 5
    Image.fromarray(grey).save(tmp_path / "a.pgm")
    Image.fromarray(np.stack([grey] * 3, -1)).save(tmp_path / "b.tiff")
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "c.pgm")  # 16-bit
    for name in ("a.pgm", "b.tiff", "c.pgm"):
        image = read_image(tmp_path / name, (6, 8, 1))
        assert image.dtype == np.float32 and image.shape == (6, 8, 1)
        np.testing.assert_allclose(image[..., 0], grey, atol=0.6)
    rgb = read_image(tmp_path / "a.pgm", (3, 4, 3))  # resized and tiled to RGB
    assert rgb.shape == (3, 4, 3) and (rgb[..., 0] == rgb[..., 2]).all()
    # the tf.data path mixes TensorFlow (PNG, GIF, JPEG) and Pillow (PGM, TIFF, BMP) decoders
    for name in ("d.png", "e.gif", "f.bmp", "g.jpg"):
        Image.fromarray(grey).save(tmp_path / name)
    names = ["a.pgm", "d.png", "b.tiff", "c.pgm", "e.gif", "f.bmp", "g.jpg"]
    paths = [str(tmp_path / n) for n in names]
    for channels in (1, 3):
        dataset = image_batches(paths, (6, 8, channels), batch_size=3)
        assert len(dataset) == 3
        batches = list(iterate_batches(dataset))
        assert [b.shape for b in batches] == [(3, 6, 8, channels)] * 2 + [(1, 6, 8, channels)]
        images = np.concatenate(batches)
        expected = np.broadcast_to(grey[None, :, :, None], images.shape)
        np.testing.assert_allclose(images[:6], expected[:6], atol=0.6)
        np.testing.assert_allclose(images[6], expected[6], atol=8)  # lossy JPEG


def test_rgb_to_grey_and_grey_to_rgb_conversion(tmp_path):
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[..., 0] = 200
    Image.fromarray(rgb).save(tmp_path / "red.png")
    grey = _all(image_batches([str(tmp_path / "red.png")], (4, 4, 1)))
    np.testing.assert_allclose(grey, 0.299 * 200, atol=1.0)
    arr = _all(image_batches(rgb[None], (2, 2, 1)))
    np.testing.assert_allclose(arr, 0.299 * 200, atol=1e-3)
    assert _all(image_batches(grey, (4, 4, 3))).shape == (1, 4, 4, 3)


@pytest.mark.parametrize("position", [0, 5, 19])  # first, middle and last file
@pytest.mark.parametrize("ext", ["png", "pgm"])
def test_corrupt_file_is_named(shapes_folder, position, ext, tmp_path):
    _, _, _, paths = shapes_folder
    paths = list(paths)
    bad = tmp_path / f"broken.{ext}"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage" if ext == "png" else b"P5 garbage")
    paths[position] = str(bad)
    with pytest.raises(ValueError, match=rf"cannot read image file '.*broken\.{ext}'"):
        read_image(bad, (12, 12, 3))
    with pytest.raises(ValueError, match=rf"cannot read image file '.*broken\.{ext}'"):
        _all(image_batches(paths, (12, 12, 3), batch_size=8))
    with pytest.raises(ValueError, match=rf"cannot read image file '.*broken\.{ext}'"):
        with decode_errors():
            for _ in image_batches(paths, (12, 12, 3), batch_size=8):
                pass


def test_missing_paths_and_bad_input_shape(tmp_path):
    with pytest.raises(ValueError, match=r"X lists 1 missing image file\(s\).*nope\.png"):
        image_batches([str(tmp_path / "nope.png")], (8, 8, 3))
    with pytest.raises(ValueError, match=r"input_shape must be 3 positive integers \(height, "
                       r"width, channels\) with channels in \[1, 3, 4\], got \(8, 8\)"):
        image_batches(np.zeros((1, 8, 8, 3)), (8, 8))
    with pytest.raises(ValueError, match=r"input_shape must .* got \(8, 8, 2\)"):
        read_image(tmp_path / "x.png", (8, 8, 2))
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        image_batches(np.zeros((1, 8, 8, 3)), (8, 8, 3), batch_size=0)


def test_many_missing_files_are_listed_with_a_count(tmp_path):
    missing = [str(tmp_path / f"gone_{i}.png") for i in range(40)]
    with pytest.raises(ValueError, match=r"X lists 40 missing image file\(s\): '.*gone_0\.png', "
                       r"('[^']*', ){3}'.*gone_4\.png' and 35 more \(40 in all\)$"):
        image_batches(missing, (8, 8, 3))


def test_paths_as_pandas_series(shapes_folder):
    _, X, _, paths = shapes_folder
    got = _all(image_batches(pd.Series(paths), (12, 12, 3), batch_size=8))
    np.testing.assert_array_equal(got, X)


def test_decompression_bomb_is_our_error(tmp_path, monkeypatch):
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(tmp_path / "big.bmp")
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 1600 > 2 x 100: an error in Pillow
    message = (r"cannot read image file '.*big\.bmp': its header declares 1,600 pixels, "
               r"more than the limit of 100 ")
    with pytest.raises(ValueError, match=message):
        read_image(tmp_path / "big.bmp", (8, 8, 1))
    with pytest.raises(ValueError, match=message):  # Pillow inside the tf.data pipeline
        _all(image_batches([str(tmp_path / "big.bmp")], (8, 8, 1)))
    with pytest.raises(ValueError, match=message.replace("bmp", "png")):
        read_image(tmp_path / "big.png", (8, 8, 1))


def test_empty_image_file_is_our_error(tmp_path):
    path = tmp_path / "empty.pgm"
    path.write_bytes(b"P5\n4 0\n255\n")  # 4 wide, 0 high
    with pytest.raises(ValueError, match=r"cannot read image file '.*empty\.pgm'"):
        read_image(path, (8, 8, 1))
    with pytest.raises(ValueError, match=r"cannot read image file '.*empty\.pgm'"):
        _all(image_batches([str(path)], (8, 8, 1)))


def test_decoded_in_memory_decodes_paths_once_when_they_fit(shapes_folder):
    _, X, _, paths = shapes_folder
    decoded = decoded_in_memory(paths, (12, 12, 3))
    assert isinstance(decoded, np.ndarray) and decoded.shape == (20, 12, 12, 3)
    np.testing.assert_array_equal(decoded, decode_all([str(p) for p in paths], (12, 12, 3)))
    np.testing.assert_array_equal(decoded, _all(image_batches(paths, (12, 12, 3))))
    assert decoded_in_memory(X, (12, 12, 3)) is X  # arrays: as they are
    # 20 images of 12 x 12 x 3 float32 take 34,560 bytes: one byte less keeps the paths
    kept = decoded_in_memory(paths, (12, 12, 3), max_bytes=20 * 12 * 12 * 3 * 4 - 1)
    assert kept == [str(p) for p in paths]
    assert isinstance(decoded_in_memory(paths, (12, 12, 3), max_bytes=34_560), np.ndarray)
    with pytest.raises(ValueError, match="missing.png"):
        decoded_in_memory([str(paths[0]), "missing.png"], (12, 12, 3))


def test_check_images():
    with pytest.raises(ValueError, match=r"X must hold images of at least 1 x 1 pixels and 1 "
                       r"channel, got shape \(2, 0, 4, 3\)"):
        check_images(np.zeros((2, 0, 4, 3)))
    X = np.zeros((3, 4, 4, 1), np.float32)
    assert check_images(X) is X
    X[0, 0, 0, 0], X[2, 1, 1, 0] = np.nan, np.inf
    with pytest.raises(ValueError, match=r"X must be finite, got 2 NaN or infinite value\(s\)"):
        check_images(X)
    with pytest.raises(ValueError, match=r"images must be a 4-D array .*got shape \(4, 4\)"):
        check_images(np.zeros((4, 4)), name="images")
    with pytest.raises(TypeError, match="X must hold numeric pixel values, got dtype <U1"):
        check_images(np.full((1, 2, 2, 1), "a"))


def test_image_batches_array_in_order():
    X = np.arange(5 * 4 * 4 * 3, dtype=np.uint8).reshape(5, 4, 4, 3)
    batches = list(iterate_batches(image_batches(X, (4, 4, 3), batch_size=2)))
    assert [b.shape for b in batches] == [(2, 4, 4, 3), (2, 4, 4, 3), (1, 4, 4, 3)]
    assert len(image_batches(X, (4, 4, 3), batch_size=2)) == 3  # known length for predict()
    assert all(b.dtype == np.float32 for b in batches)
    np.testing.assert_array_equal(np.concatenate(batches), X)
    assert _all(image_batches(X, (8, 6, 4))).shape == (5, 8, 6, 4)


# ------------------------------------------------------------------------ training
def _index_images(n, size=4):
    """Image i is filled with the value i, so a batch's indices can be read back."""
    return np.broadcast_to(np.arange(n, dtype=np.float32)[:, None, None, None],
                           (n, size, size, 1)).copy()


def test_training_dataset_from_arrays():
    y = np.repeat([3, 5, 7], [4, 6, 5])
    X = _index_images(len(y))
    sampler = PKSampler(y, 2, 3, random_state=0)
    batches = list(training_dataset(X, y, sampler, (4, 4, 1)).take(2 * len(sampler)))
    seen = set()
    for images, labels in batches:
        assert images.dtype == "float32" and images.shape == (6, 4, 4, 1)
        assert labels.dtype == "int32" and labels.shape == (6,)
        idx = images.numpy()[:, 0, 0, 0].astype(int)
        np.testing.assert_array_equal(labels.numpy(), y[idx])  # labels match the images
        seen.update(idx.tolist())
    assert seen == set(range(len(y)))


def test_training_dataset_iterators_start_at_the_samplers_epoch():
    y = np.repeat([3, 5, 7], [4, 6, 5])
    X = _index_images(len(y))
    sampler = PKSampler(y, 2, 3, random_state=0)
    ds = training_dataset(X, y, sampler, (4, 4, 1))
    n = len(sampler)

    def read(k):
        return np.stack([b[0].numpy()[:, 0, 0, 0] for b in ds.take(k)]).astype(int)

    np.testing.assert_array_equal(read(2 * n), np.concatenate([sampler.epoch(0),
                                                               sampler.epoch(1)]))
    np.testing.assert_array_equal(read(n), sampler.epoch(0))  # a new iterator: same start
    sampler.set_epoch(1)
    np.testing.assert_array_equal(read(n), sampler.epoch(1))
    assert sampler.next_epoch == 1  # iterating never moves the sampler on


def test_training_dataset_from_paths_with_string_labels(shapes_folder):
    root, X, y, _ = shapes_folder
    P, names = load_dataset(root)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 4 images per class, K=4: no warning
        sampler = PKSampler(names, 3, 4, random_state=0)
    for images, labels in training_dataset(P, names, sampler, (12, 12, 3)).take(3):
        assert images.shape == (12, 12, 12, 3) and labels.dtype == "int32"
        lab = labels.numpy().reshape(3, 4)
        assert (lab == lab[:, :1]).all() and set(lab[:, 0]) <= set(range(5))
    with open(P[7], "wb") as f:
        f.write(b"corrupt")
    with pytest.raises(ValueError, match=rf"cannot read image file '{P[7]}'"):
        with decode_errors():
            for _ in training_dataset(P, names, sampler, (12, 12, 3)).take(2 * len(sampler)):
                pass


def test_training_dataset_augment_changes_images():
    X, y = make_shapes(4, size=16)
    sampler = PKSampler(y, 5, 4, random_state=0)
    plain = next(iter(training_dataset(X, y, PKSampler(y, 5, 4, random_state=0), (16, 16, 3))))
    images, labels = next(iter(training_dataset(X, y, sampler, (16, 16, 3), augment=True)))
    assert images.shape == (20, 16, 16, 3) and images.dtype == "float32"
    np.testing.assert_array_equal(labels, plain[1])
    assert not np.allclose(images, plain[0])
    assert float(np.min(images)) >= 0 and float(np.max(images)) <= 255


def test_offline_triplet_dataset():
    y = np.repeat([0, 1, 2], [3, 4, 5])
    X = _index_images(len(y))
    ds = offline_triplet_dataset(X, y, (4, 4, 1), batch_size=4, n_triplets=10, random_state=0)
    batches = list(ds.take(6))  # two epochs of ceil(10 / 4) = 3 batches
    assert [len(b[1]) for b in batches] == [4, 4, 2, 4, 4, 2]
    for (anchor, positive, negative), dummy in batches:
        assert anchor.shape == positive.shape == negative.shape
        a, p, n = (t.numpy()[:, 0, 0, 0].astype(int) for t in (anchor, positive, negative))
        assert (y[a] == y[p]).all() and (a != p).all() and (y[a] != y[n]).all()
        assert (dummy.numpy() == 0).all()
    first = np.concatenate([b[0][0] for b in batches[:3]])
    second = np.concatenate([b[0][0] for b in batches[3:]])
    assert not np.array_equal(first, second)  # new triplets every epoch
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        offline_triplet_dataset(X, y, (4, 4, 1), 0, 10)


def test_decode_errors_around_keras_predict(shapes_folder, tmp_path):
    import keras

    _, _, _, paths = shapes_folder
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff not really a jpeg")
    model = keras.Sequential([keras.Input((12, 12, 3)), keras.layers.GlobalAveragePooling2D()])
    assert model.predict(image_batches(paths, (12, 12, 3), 8), verbose=0).shape == (20, 3)
    with pytest.raises(ValueError, match=r"cannot read image file '.*broken\.jpg'"):
        with decode_errors():
            model.predict(image_batches([*paths, str(bad)], (12, 12, 3), 8), verbose=0)


def test_pipelines_switch_off_the_autotuning_thread(shapes_folder):
    # Its timer kept ``fit`` from returning for 33-37 s after training (see
    # benchmarks/fit_teardown.py); every pipeline the library builds must carry the option.
    y = np.repeat([0, 1], 4)
    X = _index_images(len(y))
    paths = shapes_folder[3]
    pipelines = {
        "training": training_dataset(X, y, PKSampler(y, 2, 2, random_state=0), (4, 4, 1)),
        "augmented": training_dataset(X, y, PKSampler(y, 2, 2, random_state=0), (4, 4, 1),
                                      augment=True),
        "offline": offline_triplet_dataset(X, y, (4, 4, 1), 4, 4, random_state=0),
        "array batches": image_batches(X, (4, 4, 1)),
        "file batches": image_batches(paths, (12, 12, 3)),
    }
    enabled = {name: ds.options().autotune.enabled for name, ds in pipelines.items()}
    assert enabled == dict.fromkeys(pipelines, False)
    # the option does not change what comes out
    np.testing.assert_array_equal(_all(pipelines["array batches"]), X.astype("float32"))
