"""scikit-learn's own estimator checks on a tiny TripletEmbedder."""

from sklearn.utils.estimator_checks import parametrize_with_checks

from embedder import TripletEmbedder

# Checks that cannot apply to an image embedder trained with a metric-learning loss.
EXPECTED_FAILED_CHECKS = {
    "check_methods_sample_order_invariance": (
        "float32 convolutions (oneDNN) can differ in the last bit (~1e-7) with an image's "
        "position in the batch; the check demands rtol=1e-7"
    ),
}


def _tiny():
    # input_shape=None: sklearn's checks pass 2-D arrays of any width, read as 1-pixel strips
    return TripletEmbedder(encoder="tiny_cnn", input_shape=None, embedding_dim=4, epochs=1,
                           samples_per_class=2, validation_fraction=0, random_state=0)


@parametrize_with_checks([_tiny()], expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS)
def test_sklearn_compatible(estimator, check):
    check(estimator)
