"""A 2-D map of embeddings, shared by the curation service's map jobs and the SDK's client-side
map: PCA (exact, streamed in blocks so 100,000 x 1280 vectors never need a float32 copy; global
layout) or t-SNE (local neighbourhoods: PCA to 50 dims first, then scikit-learn's Barnes-Hut
t-SNE; quadratic-ish, so bounded by :data:`MAX_TSNE`). Plus the map's cache key and paging.
Pure: no I/O."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np

METHODS = ("pca", "tsne")
#: t-SNE takes about a minute for 10,000 points on 2 cores and grows faster than linearly.
MAX_TSNE = 20_000
BLOCK = 8192  # rows per block of the streamed PCA


def method_of(value: str) -> str:
    """ "" means pca; anything but :data:`METHODS` is a ValueError."""
    method = value or "pca"
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {value!r}")
    return method


def normalize(X: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (cosine geometry, as the index searches), float32."""
    X = np.asarray(X, dtype=np.float32)
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


def pca(X: np.ndarray, k: int = 2) -> np.ndarray:
    """[N, k] float64 scores on the top ``k`` principal axes of the rows of ``X`` (any float
    dtype: float16 storage halves the memory of a big map). The covariance is summed block by
    block in float64 and each axis's sign is fixed (largest loading positive), so the result
    does not depend on BLAS threads or block order beyond rounding."""
    n, d = X.shape
    k = min(k, d, max(n - 1, 1))
    mean = np.zeros(d)
    for s in range(0, n, BLOCK):
        mean += X[s : s + BLOCK].astype(np.float64).sum(0)
    mean /= max(n, 1)
    cov = np.zeros((d, d))
    for s in range(0, n, BLOCK):
        B = X[s : s + BLOCK].astype(np.float32) - mean.astype(np.float32)
        cov += (B.T @ B).astype(np.float64)
    _, vecs = np.linalg.eigh(cov)
    axes = vecs[:, ::-1][:, :k]
    axes *= np.sign(axes[np.abs(axes).argmax(0), np.arange(k)])
    out = np.empty((n, k))
    A = axes.astype(np.float32)
    for s in range(0, n, BLOCK):
        out[s : s + BLOCK] = (X[s : s + BLOCK].astype(np.float32) - mean.astype(np.float32)) @ A
    return out


def scale(Y: np.ndarray) -> np.ndarray:
    """Centred on the median, each axis scaled so that 99.5 % of the points lie within
    [-0.95, 0.95] and clipped to [-1, 1], float32: one far outlier (a blank image) pins to the
    edge instead of squeezing the rest of the map into a corner."""
    Y = Y - np.median(Y, 0)
    lim = np.maximum(np.quantile(np.abs(Y), 0.995, axis=0) / 0.95, 1e-12)
    return np.clip(Y / lim, -1.0, 1.0).astype(np.float32)


def project_2d(embeddings: np.ndarray, method: str = "pca", seed: int = 0, *, normalized: bool = False) -> np.ndarray:
    """[N, 2] float32 coordinates, each axis in [-1, 1]. ``normalized``: the rows are already
    unit length (kept as they are, e.g. float16)."""
    method = method_of(method)
    X = embeddings if normalized else normalize(embeddings)
    n = len(X)
    if n < 3:
        return np.zeros((n, 2), np.float32)
    if method == "pca":
        return scale(pca(X, 2))
    if n > MAX_TSNE:
        raise ValueError(f"t-SNE maps at most {MAX_TSNE} inputs (got {n}); use pca")
    from sklearn.manifold import TSNE  # imported on use: most callers never run t-SNE

    Z = pca(X, min(50, n - 1, X.shape[1]))
    Y = TSNE(n_components=2, perplexity=float(min(30, max(5, (n - 1) // 3))), init="pca", random_state=seed).fit_transform(Z)
    return scale(np.asarray(Y))


def map_key(method: str, model: str, indexed_count: int, inputs: Iterable[tuple[str, int]]) -> str:
    """The cache key of an app's map: the method, the index's embedding model and count, and
    every input's (id, generation) in id order. Adding, deleting or re-uploading an input, an
    input's embedding arriving (the count) or a new embedding model changes it; labels do not
    (points read their labels when paged)."""
    h = hashlib.sha256(f"{method}\0{model}\0{indexed_count}\0".encode())
    for input_id, generation in sorted(inputs):
        h.update(f"{input_id}\0{generation}\n".encode())
    return h.hexdigest()[:32]


def even_sample(n: int, at_most: int) -> np.ndarray:
    """Indices of an evenly spaced sample of ``at_most`` of ``n`` rows (all when n <= at_most)."""
    if n <= at_most:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, at_most).round().astype(np.int64))


def page_bounds(total: int, offset: int, size: int) -> tuple[int, int, int]:
    """(start, end, next offset or 0 at the end) of a page of ``size`` rows from ``offset``."""
    start = min(max(offset, 0), total)
    end = min(start + size, total)
    return start, end, end if end < total else 0


__all__ = ["MAX_TSNE", "METHODS", "even_sample", "map_key", "method_of", "normalize", "page_bounds", "pca", "project_2d", "scale"]
