"""Speed and quality benchmarks (DESIGN section 6); run them with ``python -m benchmarks.run``.

Each benchmark module has ``run(mode, options) -> dict`` and ``SETTINGS`` per mode
(``smoke``: seconds, checks the code paths; ``quick``: a reduced run under 5 minutes;
``full``: the evaluation protocol). :mod:`benchmarks.run` writes one
``benchmarks/results/<name>.json`` per benchmark and :mod:`benchmarks.report` renders
``benchmarks/BENCHMARKS.md`` from them.
"""
