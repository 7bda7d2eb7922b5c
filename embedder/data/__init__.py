"""Images in: decoding files, data sets, input forms, the P x K sampler and ``tf.data``.

- :mod:`~embedder.data.decoding`: one image file to pixels (naming the file on failure);
- :mod:`~embedder.data.datasets`: :func:`load_dataset` (class folders, CSV, built-ins);
- :mod:`~embedder.data.inputs`: the embedders' input forms (arrays, 2-D rows, paths);
- :mod:`~embedder.data.sampling`: :class:`PKSampler` and the seed's random triplets;
- :mod:`~embedder.data.image_pipeline`: the ``tf.data`` builders for training and
  inference;
- :mod:`~embedder.data.augmentation`: the ``augment`` presets (:data:`AUGMENTATIONS`) and
  :func:`build_augmenter` (presets or the user's Keras layers, seeded);
- :mod:`~embedder.data.fingerprints`: content digests of images (leakage checks).

May import :mod:`embedder.checks`, :mod:`embedder.files` and :mod:`embedder.models`
(the channel conversion shared with the encoders); never training or losses.
"""

from embedder.data.augmentation import AUGMENTATIONS, build_augmenter
from embedder.data.datasets import BUILTINS, FASHION_MNIST_CLASSES, load_dataset, load_fashion_mnist
from embedder.data.decoding import (
    IMAGE_EXTENSIONS,
    check_pixels,
    decode_errors,
    decode_file,
    get_max_pixels,
    read_image,
    set_max_pixels,
)
from embedder.data.fingerprints import image_fingerprints, overlap
from embedder.data.image_pipeline import (
    decoded_in_memory,
    image_batches,
    iterate_batches,
    offline_triplet_dataset,
    training_dataset,
)
from embedder.data.inputs import (
    as_paths,
    path_column,
    resolve_input_shape,
    shape_for_features,
)
from embedder.data.sampling import PKSampler, check_class_sizes, random_triplets

__all__ = [
    "AUGMENTATIONS", "BUILTINS", "FASHION_MNIST_CLASSES", "IMAGE_EXTENSIONS", "PKSampler",
    "as_paths", "build_augmenter", "check_class_sizes", "check_pixels", "decode_errors",
    "decode_file", "decoded_in_memory", "get_max_pixels", "image_batches",
    "image_fingerprints",
    "iterate_batches", "load_dataset", "load_fashion_mnist", "offline_triplet_dataset",
    "overlap", "path_column", "random_triplets", "read_image", "resolve_input_shape",
    "set_max_pixels", "shape_for_features", "training_dataset",
]
