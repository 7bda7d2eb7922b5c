"""The ``triplet`` command line (console script ``triplet = pipelines.cli:main``).

- :mod:`~pipelines.cli.main`: the parser (training options generated from
  :class:`embedder.training.TrainingConfig`) and error handling;
- :mod:`~pipelines.cli.train`: ``train``, ``evaluate``, ``demo``;
- :mod:`~pipelines.cli.use`: ``predict``, ``search``, ``embed``;
- :mod:`~pipelines.cli.common`: loading DATA, progress, tables.
"""

from pipelines.cli.main import main

__all__ = ["main"]
