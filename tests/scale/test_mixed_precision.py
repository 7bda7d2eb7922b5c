"""``precision="mixed_bfloat16"`` trains on CPU: the encoder computes in bfloat16, the loss
and the L2 normalisation in float32, and the output is float32 with unit-norm rows."""

import keras
import numpy as np
import pytest

from tests._helpers import tiny_embedder


@pytest.fixture(scope="module")
def fitted(shapes16):
    X, y = shapes16
    return tiny_embedder(precision="mixed_bfloat16", epochs=2,
                         validation_fraction=0.0).fit(X, y), X


def test_trains_without_nan(fitted):
    est, _ = fitted
    assert len(est.history_["loss"]) == 2
    assert np.all(np.isfinite(est.history_["loss"]))
    assert est.config_.precision == "mixed_bfloat16"


def test_encoder_computes_in_bfloat16_and_outputs_unit_norm_float32(fitted):
    est, X = fitted
    compute = {layer.dtype_policy.compute_dtype for layer in est.encoder_.layers
               if layer.weights}
    assert "bfloat16" in compute  # the convolutions
    assert est.encoder_.layers[-1].dtype_policy.compute_dtype == "float32"  # L2 norm
    Z = est.transform(X)
    assert Z.dtype == np.float32 and Z.shape == (len(X), 8)
    assert np.all(np.isfinite(Z))
    np.testing.assert_allclose(np.linalg.norm(Z, axis=1), 1.0, atol=1e-3)


def test_global_policy_is_restored(fitted):
    assert keras.mixed_precision.global_policy().name == "float32"
