"""``python -m pipelines`` runs the ``triplet`` command line."""

from pipelines.cli.main import main

raise SystemExit(main())
