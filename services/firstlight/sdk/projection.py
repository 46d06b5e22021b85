"""A PNG of a 2-D map of an app's embeddings, coloured by any per-point label (concept, split,
prediction). The map comes from the curation service (``Firstlight.embedding_map``: computed
in a job there, cached); :func:`project_2d` (PCA or t-SNE, from ``firstlight.domain``) stays
here for projecting vectors client-side."""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np

# The projection itself is shared with the curation service's map jobs (firstlight.domain).
from firstlight.domain.projection import METHODS, normalize, project_2d

__all__ = ["METHODS", "map_png", "normalize", "project_2d"]


def map_png(coords: np.ndarray, labels: Sequence[str], title: str = "", size: float = 6.0) -> bytes:
    """Scatter plot of ``coords`` coloured by ``labels`` ("" = unlabeled, gray), as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted({str(x) for x in labels if x})
    cmap = plt.get_cmap("tab20" if len(names) > 10 else "tab10")
    fig, ax = plt.subplots(figsize=(size, size), dpi=100)
    lab = np.asarray([str(x) for x in labels])
    if (lab == "").any():
        m = lab == ""
        ax.scatter(coords[m, 0], coords[m, 1], s=4, c="#bbbbbb", label="unlabeled", linewidths=0)
    for k, name in enumerate(names):
        m = lab == name
        ax.scatter(coords[m, 0], coords[m, 1], s=5, color=cmap(k % cmap.N), label=name, linewidths=0)
    if names and len(names) <= 20:
        ax.legend(markerscale=3, fontsize=7, loc="best")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()
