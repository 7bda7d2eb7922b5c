"""EmbedderBase in scikit-learn's column tools: paths by column name, list or DataFrame."""

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from embedder import FrozenEmbedder
from tests._helpers import TINY_SHAPE, tiny_embedder
from tests._images import write_image_folder


@pytest.fixture(scope="module")
def table(shapes16, tmp_path_factory):
    X, y = shapes16
    paths = write_image_folder(tmp_path_factory.mktemp("base") / "images", X, y)
    rng = np.random.default_rng(0)
    return pd.DataFrame({"path": paths, "size": rng.uniform(0, 1, len(y))}), y


@pytest.fixture(scope="module")
def frozen(tmp_path_factory, shapes16):
    X, y = shapes16
    path = tmp_path_factory.mktemp("enc") / "enc.keras"
    tiny_embedder(epochs=1).fit(X, y).save_encoder(path)
    return FrozenEmbedder(str(path), input_shape=TINY_SHAPE)


@pytest.mark.parametrize("columns", ["path", ["path"]])
def test_column_transformer_with_paths(table, frozen, columns):
    df, y = table
    ct = ColumnTransformer([("img", frozen, columns), ("num", StandardScaler(), ["size"])])
    out = ct.fit_transform(df, y)
    assert out.shape == (len(df), 9)
    names = list(ct.get_feature_names_out())
    assert names == [f"img__frozenembedder{i}" for i in range(8)] + ["num__size"]
    embedder = ct.named_transformers_["img"]
    assert embedder.n_features_in_ == 1
    if columns == ["path"]:
        assert list(embedder.feature_names_in_) == ["path"]
    else:
        assert not hasattr(embedder, "feature_names_in_")
    frame = ct.set_output(transform="pandas").fit_transform(df, y)
    assert list(frame.columns) == names and frame.index.equals(df.index)
    np.testing.assert_allclose(frame.to_numpy()[:, :8], out[:, :8], atol=1e-6)


def test_one_column_dataframe_of_paths(table, frozen):
    df, y = table
    embedder = frozen.set_output(transform="pandas")
    frame = embedder.fit(df[["path"]]).transform(df[["path"]])
    assert list(frame.columns) == [f"frozenembedder{i}" for i in range(8)]
    assert embedder.n_features_in_ == 1 and list(embedder.feature_names_in_) == ["path"]
    assert list(embedder.get_feature_names_out(["path"])) == list(frame.columns)
    np.testing.assert_allclose(frame.to_numpy(),
                               frozen.set_output(transform="default").transform(
                                   df["path"].to_numpy()), atol=1e-6)
    with pytest.raises(ValueError, match="input_features is not equal to feature_names_in_"):
        embedder.get_feature_names_out(["other"])
    # a 2-D array of one path column is paths too, without names
    embedder.set_output(transform="default").fit(df[["path"]].to_numpy())
    assert embedder.n_features_in_ == 1 and not hasattr(embedder, "feature_names_in_")


def test_pixels_keep_their_feature_count(shapes16, frozen, table):
    X, _ = shapes16
    rows = X.reshape(len(X), -1).astype("float32")
    frame = pd.DataFrame(rows, columns=[f"p{i}" for i in range(rows.shape[1])])
    embedder = frozen.set_output(transform="default").fit(frame)
    assert embedder.n_features_in_ == 16 * 16 * 3 and embedder.feature_names_in_[0] == "p0"
    embedder.fit(X)
    assert embedder.n_features_in_ == 16 * 16 * 3 and not hasattr(embedder,
                                                                   "feature_names_in_")
    # fitted on paths, flattened rows of the decoded size still embed
    embedder.fit(table[0]["path"])
    np.testing.assert_allclose(embedder.transform(rows[:3]), embedder.transform(X[:3]),
                               atol=1e-6)


def test_tags_accept_strings(frozen):
    assert frozen.__sklearn_tags__().input_tags.string
    assert tiny_embedder().__sklearn_tags__().input_tags.string


def test_triplet_embedder_in_a_pipeline_of_paths(table):
    df, y = table
    pipe = make_pipeline(ColumnTransformer([("img", tiny_embedder(epochs=1), ["path"])]))
    out = pipe.fit_transform(df, y)
    assert out.shape == (len(df), 8)
    assert list(pipe.get_feature_names_out())[:2] == ["img__tripletembedder0",
                                                      "img__tripletembedder1"]


def test_rows_of_another_size_after_paths(table, frozen):
    embedder = frozen.set_output(transform="default").fit(table[0]["path"])
    with pytest.raises(ValueError, match=r"^X has 5 features per row, but FrozenEmbedder "
                       r"was fitted on image paths decoded to \(16, 16, 3\): rows need "
                       r"768 \(h \* w \* c\)$"):
        embedder.transform(np.zeros((2, 5), "float32"))
