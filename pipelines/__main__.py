"""``python -m pipelines`` runs the ``triplet`` command line."""

from pipelines.cli import main

raise SystemExit(main())
