"""The ``triplet export`` command: a ``.keras`` encoder to SavedModel, TFLite or ONNX."""

from __future__ import annotations

import os
from pathlib import Path

from pipelines.cli.common import table

#: The formats, as :data:`embedder.models.export.FORMATS` (kept here: ``--help`` must not
#: import TensorFlow).
FORMATS = ("savedmodel", "tflite", "onnx")
#: ``--out`` endings each format writes (a SavedModel is a folder: any name).
SUFFIXES = {"tflite": ".tflite", "onnx": ".onnx"}


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def export(args):
    """Load ``args.encoder`` (Keras safe mode), export it, print the check's result."""
    from embedder.models.encoder_files import load_encoder_file
    from embedder.models.export import export_encoder

    suffix = SUFFIXES.get(args.format)
    if suffix is not None and Path(args.out).suffix != suffix:
        raise ValueError(f"--out must end with {suffix} for --format {args.format}, got "
                         f"{args.out!r}")
    if not os.fspath(args.encoder).endswith(".keras"):
        raise ValueError(f"ENCODER must be a .keras encoder file, got {args.encoder!r}")
    if not args.atol >= 0:
        raise ValueError(f"--atol must be a non-negative number, got {args.atol}")
    encoder = load_encoder_file(args.encoder)[0]
    try:
        path, difference = export_encoder(encoder, args.out, args.format, atol=args.atol)
    except ImportError as err:  # the [export] extra is missing: a user error here
        raise ValueError(str(err)) from err
    print(table([
        ("encoder", f"{args.encoder} ({encoder.output_shape[-1]}-d embeddings)"),
        ("format", args.format),
        ("checked", f"max abs difference {difference:.2g} from the Keras encoder on sample "
         f"images (atol {args.atol:g})"),
        ("size", f"{_size(path):,} bytes"),
        ("saved", str(path)),
    ]))
