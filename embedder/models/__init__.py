"""Encoders: the registry, the preprocessing layers inside them, and the encoder file format.

- :mod:`~embedder.models.encoders`: :func:`build_encoder`, :func:`register_encoder`,
  :func:`available_encoders`, the built-in ``seed_cnn``, ``small_cnn``, ``mobilenet_v2``,
  ``resnet50``, :func:`load_encoder` (Keras safe mode);
- :mod:`~embedder.models.preprocessing`: the Keras layers that convert channels, resize and
  rescale inside an encoder (so a saved encoder is self-contained);
- :mod:`~embedder.models.encoder_files`: ``.keras`` + ``fingerprints.json`` on disk and in
  pickles;
- :mod:`~embedder.models.export`: :func:`export_encoder` to SavedModel, TFLite or ONNX,
  checked against the Keras encoder.

May import :mod:`embedder.files` and :mod:`embedder.checks`; nothing else of the package.
"""

from embedder.models.encoder_files import (
    check_encoder_channels,
    load_encoder_file,
    model_from_bytes,
    model_to_bytes,
    save_encoder,
)
from embedder.models.encoders import (
    HEAD_LAYER_NAMES,
    SafeUnitNormalization,
    available_encoders,
    build_encoder,
    embedding_head,
    load_encoder,
    register_encoder,
)
from embedder.models.export import export_encoder
from embedder.models.preprocessing import ChannelAdapter, convert_channels, preprocess

__all__ = [
    "HEAD_LAYER_NAMES", "ChannelAdapter", "SafeUnitNormalization", "available_encoders",
    "build_encoder", "check_encoder_channels", "convert_channels", "embedding_head",
    "export_encoder", "load_encoder", "load_encoder_file", "model_from_bytes",
    "model_to_bytes", "preprocess", "register_encoder", "save_encoder",
]
