"""Export an encoder to SavedModel, TFLite or ONNX, verified against the Keras model.

:func:`export_encoder` traces the encoder once as a ``tf.function`` that calls it with
``training=False``, writes the chosen format next to the target under a temporary name,
runs the written artifact on sample images, compares it with the Keras encoder and only
then moves it into place. A failed export or check leaves an existing target as it was.

Why not ``model.export(...)``: Keras 3.15's ``model.export(format="tf_saved_model")``
and ``model.export(format="onnx")`` (TensorFlow backend) trace ``model.__call__`` with
``training=None``, which runs the BatchNormalization of encoders saved before the
``Resizing(training=False)`` fix in :mod:`embedder.models.preprocessing` in training mode
(about 0.25 per element off ``encoder.predict`` for the seed CNN). An explicit
``training=False`` trace is right for old and new encoders alike. ONNX goes through
tf2onnx (1.17+, the first release that installs next to TensorFlow 2.21's protobuf):
Keras's own ONNX export also needs a model that has been called and traces with
``training=None``.

Needs the ``[export]`` extra for ONNX: ``tf2onnx``, ``onnx`` and ``onnxruntime`` (the
check runs the file in ONNX Runtime). SavedModel and TFLite need only TensorFlow.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import warnings
from pathlib import Path

import numpy as np

from embedder.files import atomic_path, temporary_name

FORMATS = ("savedmodel", "tflite", "onnx")
#: ONNX opset written (tf2onnx 1.17 supports 14..18; ONNX Runtime 1.20 and 1.32 run it).
ONNX_OPSET = 17
#: Name of the ONNX output; the input keeps the encoder's input name.
ONNX_OUTPUT = "embeddings"
#: Images per batch of the default sample.
SAMPLE_BATCH = 2
_SUFFIX = {"tflite": ".tflite", "onnx": ".onnx"}


def _input_spec(encoder):
    import tensorflow as tf

    if len(encoder.inputs) != 1:
        raise ValueError(f"encoder must have one input, got {len(encoder.inputs)}")
    shape = tuple(encoder.inputs[0].shape)
    if len(shape) != 4 or shape[-1] is None:
        raise ValueError(f"encoder input must be (batch, height, width, channels), got "
                         f"{shape}")
    name = encoder.inputs[0].name.split(":")[0] or "images"
    return tf.TensorSpec((None, *shape[1:]), tf.float32, name=name)


def _resize_size(encoder):
    import keras

    stack = list(encoder.layers)
    while stack:
        layer = stack.pop(0)
        if isinstance(layer, keras.layers.Resizing):
            return layer.height, layer.width
        stack.extend(getattr(layer, "layers", ()))
    return 32, 32


def default_sample(encoder):
    """Random 0..255 images to check an export on: one batch per image size.

    Three sizes (the encoder's resolution, smaller and larger, not square) when the
    encoder takes any height and width, else its fixed size.

    Parameters
    ----------
    encoder : keras.Model
        The encoder, input ``(batch, h, w, channels)``.

    Returns
    -------
    list of ndarray of float32
    """
    _, height, width, channels = tuple(encoder.inputs[0].shape)
    if height is not None and width is not None:
        sizes = [(height, width)]
    else:
        base_h, base_w = _resize_size(encoder)
        sizes = [(base_h, base_w), (max(1, base_h // 2 + 3), base_w + 5),
                 (base_h + 7, max(1, base_w * 3 // 4))]
        sizes = [(height or h, width or w) for h, w in sizes]
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (SAMPLE_BATCH, h, w, channels)).astype("float32")
            for h, w in dict.fromkeys(sizes)]


def _check_sample(sample, channels):
    batches = [sample] if isinstance(sample, np.ndarray) else list(sample)
    if not batches:
        raise ValueError("sample must hold at least one batch of images, got none")
    checked = []
    for batch in batches:
        batch = np.asarray(batch, dtype="float32")
        if batch.ndim != 4 or batch.shape[0] < 1 or batch.shape[-1] != channels:
            raise ValueError(f"sample batches must be (n, h, w, {channels}) arrays with n "
                             f">= 1, got shape {batch.shape}")
        checked.append(batch)
    return checked


def _serving_function(encoder, spec):
    import tensorflow as tf

    @tf.function(input_signature=[spec])
    def serve(images):
        return encoder(images, training=False)  # see the module docstring

    return serve


def _write_savedmodel(encoder, serve, path):
    # A plain tf.Module holding the variables: Keras's ExportArchive stores each one
    # twice (3.6 MB instead of 1.9 MB for the seed CNN). Loading needs no Keras.
    import tensorflow as tf

    module = tf.Module()
    module.encoder_variables = [variable.value for variable in encoder.variables]
    module.serve = serve
    tf.saved_model.save(module, str(path),
                        signatures={"serving_default": serve.get_concrete_function()})


def _write_tflite(encoder, serve, path):
    # Through a SavedModel, as Keras's own "litert" export: from_concrete_functions
    # drops the Keras 3 variables (a 30 KB model whose outputs are NaN).
    import tensorflow as tf

    saved = path.with_name(temporary_name(path.name, ".savedmodel"))
    try:
        _write_savedmodel(encoder, serve, saved)
        path.write_bytes(tf.lite.TFLiteConverter.from_saved_model(str(saved)).convert())
    finally:
        shutil.rmtree(saved, ignore_errors=True)


def _write_onnx(serve, spec, path):
    try:
        import tf2onnx
    except ImportError as err:
        raise ImportError("format='onnx' needs tf2onnx, onnx and onnxruntime: pip install "
                          "'triplet-embeddings[export]'") from err
    proto, _ = tf2onnx.convert.from_function(serve, input_signature=[spec],
                                             opset=ONNX_OPSET)
    old_name = proto.graph.output[0].name  # the graph tensor's, e.g. "Identity:0"
    for node in proto.graph.node:
        node.output[:] = [ONNX_OUTPUT if name == old_name else name for name in node.output]
    proto.graph.output[0].name = ONNX_OUTPUT
    path.write_bytes(proto.SerializeToString())


def _tflite_runner(path):
    import tensorflow as tf

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice
        interpreter = tf.lite.Interpreter(model_path=str(path))

    def run(x):
        index = interpreter.get_input_details()[0]["index"]
        interpreter.resize_tensor_input(index, x.shape)
        interpreter.allocate_tensors()
        interpreter.set_tensor(index, x)
        interpreter.invoke()
        return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])

    return run


def _runner(fmt, path):
    """A function ``images -> embeddings`` that runs the exported artifact."""
    if fmt == "savedmodel":
        import tensorflow as tf

        loaded = tf.saved_model.load(str(path))
        return lambda x: loaded.serve(tf.constant(x)).numpy()
    if fmt == "tflite":
        return _tflite_runner(path)
    try:
        import onnxruntime
    except ImportError as err:
        raise ImportError("format='onnx' checks the file in ONNX Runtime: pip install "
                          "'triplet-embeddings[export]'") from err
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


def _verify(fmt, path, encoder, sample, atol):
    """The largest absolute difference of the artifact from the encoder on ``sample``."""
    import keras

    run = _runner(fmt, path)
    worst = 0.0
    for batch in sample:
        expected = keras.ops.convert_to_numpy(encoder(batch, training=False))
        got = np.asarray(run(batch))
        if got.shape != expected.shape:
            raise ValueError(f"the {fmt} export gives shape {got.shape} for input "
                             f"{batch.shape}, the Keras encoder {expected.shape}")
        diff = float(np.max(np.abs(got.astype("float64") - expected)))
        if not diff <= atol:  # NaN fails too
            raise ValueError(
                f"the {fmt} export does not match the Keras encoder: max abs difference "
                f"{diff:.3g} > atol={atol:g} on input shape {batch.shape}")
        worst = max(worst, diff)
    return worst


def _install_folder(tmp, target):
    """Move the finished SavedModel folder ``tmp`` to ``target`` (replacing an old one).

    POSIX cannot rename over a non-empty folder: an old export is renamed aside first,
    and put back if the second rename fails.
    """
    if not target.exists():
        os.rename(tmp, target)
        return
    old = target.with_name(temporary_name(target.name, ".old"))
    os.rename(target, old)
    try:
        os.rename(tmp, target)
    except BaseException:
        os.rename(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _check_target(target, fmt):
    if fmt == "savedmodel":
        if target.is_file() or (target.is_dir() and any(target.iterdir())
                                and not (target / "saved_model.pb").is_file()):
            raise ValueError(f"path {str(target)!r} exists and is not a SavedModel folder; "
                             "refusing to replace it")
    elif target.is_dir():
        raise ValueError(f"path {str(target)!r} is a folder; format={fmt!r} writes a file")


def _export_savedmodel(encoder, serve, target, sample, atol):
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(temporary_name(target.name))
    try:
        _write_savedmodel(encoder, serve, tmp)
        worst = _verify("savedmodel", tmp, encoder, sample, atol)
        _install_folder(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(tmp)
    return worst


def export_encoder(encoder, path, format="savedmodel", *, sample=None, atol=1e-4):
    """Export ``encoder`` to ``path`` and check that the result gives its embeddings.

    Parameters
    ----------
    encoder : keras.Model
        An image encoder with float32 input ``(batch, h, w, channels)`` (``h, w`` may be
        ``None``), e.g. ``TripletEmbedder.encoder_`` or a loaded ``.keras`` encoder.
    path : str or path-like
        A folder for ``"savedmodel"``, a file (``.tflite``, ``.onnx``) otherwise.
        Missing parent folders are created; an existing export is replaced only once
        the new one has passed the check.
    format : {"savedmodel", "tflite", "onnx"}, default="savedmodel"
        ``"savedmodel"``: a TensorFlow SavedModel (``tf.saved_model.load``, TF Serving)
        with a ``serve`` function and a ``serving_default`` signature (``images`` ->
        ``output_0``), loadable without Keras or this package. ``"tflite"``: a
        TensorFlow Lite flatbuffer. ``"onnx"``: ONNX opset :data:`ONNX_OPSET`, input
        named as the encoder's (``images``), output :data:`ONNX_OUTPUT`. All three take
        any batch size, and any image size when the encoder does.
    sample : ndarray or sequence of ndarray, optional
        Batches ``(n, h, w, channels)`` of images (pixels on the 0..255 scale) to check
        on; their ``h, w`` may differ. Default: :func:`default_sample`.
    atol : float, default=1e-4
        Largest accepted absolute difference between the artifact's output and
        ``encoder(images, training=False)``.

    Returns
    -------
    path : pathlib.Path
        The written export.
    max_difference : float
        The largest absolute difference measured on ``sample``.

    Raises
    ------
    ValueError
        For an invalid ``format``, ``atol``, ``sample`` or ``path``, or when the
        artifact's output differs from the encoder's by more than ``atol``.
    ImportError
        For ``format="onnx"`` without tf2onnx or onnxruntime (the ``[export]`` extra).

    Examples
    --------
    >>> from embedder import build_encoder, export_encoder
    >>> encoder = build_encoder("small_cnn", (16, 16, 3), 8)
    >>> path, diff = export_encoder(encoder, "encoder.tflite", "tflite")  # doctest: +SKIP
    >>> diff <= 1e-4  # doctest: +SKIP
    True
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {list(FORMATS)}, got {format!r}")
    if isinstance(atol, bool) or not isinstance(atol, int | float) or not atol >= 0:
        raise ValueError(f"atol must be a non-negative number, got {atol!r}")
    target = Path(os.fspath(path))
    _check_target(target, format)
    spec = _input_spec(encoder)
    sample = (default_sample(encoder) if sample is None
              else _check_sample(sample, spec.shape[-1]))
    serve = _serving_function(encoder, spec)
    if format == "savedmodel":
        return target, _export_savedmodel(encoder, serve, target, sample, atol)
    with atomic_path(target, suffix=_SUFFIX[format]) as tmp:
        if format == "tflite":
            _write_tflite(encoder, serve, tmp)
        else:
            _write_onnx(serve, spec, tmp)
        worst = _verify(format, tmp, encoder, sample, atol)
    return target, worst
