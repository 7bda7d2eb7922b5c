"""Report figures that stay readable from 2 to 1,000 classes (Matplotlib, Agg, atomic PNGs).

- :mod:`~pipelines.plots.figures`: :func:`save_report_figures` (a report's three PNGs);
- :mod:`~pipelines.plots.confusion`: :func:`plot_confusion_matrix`;
- :mod:`~pipelines.plots.embeddings`: :func:`project_2d`, :func:`plot_embeddings_2d`;
- :mod:`~pipelines.plots.curves`: :func:`plot_training_curves`;
- :mod:`~pipelines.plots.common`: figure primitives and the atomic :func:`save_png`.

May import :mod:`pipelines.text` and :mod:`embedder.files`; never TensorFlow.
"""

from pipelines.plots.common import save_png
from pipelines.plots.confusion import plot_confusion_matrix
from pipelines.plots.curves import plot_training_curves
from pipelines.plots.embeddings import plot_embeddings_2d, project_2d
from pipelines.plots.figures import save_report_figures

__all__ = ["plot_confusion_matrix", "plot_embeddings_2d", "plot_training_curves",
           "project_2d", "save_png", "save_report_figures"]
