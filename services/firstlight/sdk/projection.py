"""A 2-D map of an app's embeddings: PCA (instant, global layout) or t-SNE (local
neighbourhoods; PCA to 50 dims first, then scikit-learn's Barnes-Hut t-SNE), and a PNG of it
coloured by any per-point label (concept, split, prediction). Client-side: the SDK's
``embedding_map`` and ``firstlight map`` use it; no service does."""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np

METHODS = ("pca", "tsne")


def normalize(X: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (cosine geometry, as the index searches)."""
    X = np.asarray(X, dtype=np.float32)
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


def project_2d(embeddings: np.ndarray, method: str = "pca", seed: int = 0) -> np.ndarray:
    """[N, 2] float32 coordinates, each axis scaled to [-1, 1]."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    X = normalize(embeddings)
    n = len(X)
    if n < 3:
        return np.zeros((n, 2), np.float32)
    # scikit-learn and matplotlib are imported on use: most SDK users never draw a map.
    from sklearn.decomposition import PCA

    if method == "pca":
        Y = PCA(n_components=2, random_state=seed).fit_transform(X)
    else:
        from sklearn.manifold import TSNE

        Z = PCA(n_components=min(50, n - 1, X.shape[1]), random_state=seed).fit_transform(X)
        Y = TSNE(n_components=2, perplexity=float(min(30, max(5, (n - 1) // 3))), init="pca", random_state=seed).fit_transform(Z)
    Y = Y - Y.mean(0)
    return (Y / np.maximum(np.abs(Y).max(0), 1e-12)).astype(np.float32)


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
