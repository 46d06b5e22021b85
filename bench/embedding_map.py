"""Timing of the embedding map's projection (issue 19): the curation service's streamed PCA
(``firstlight.domain.projection``, unit rows kept as float16, as the map job keeps them) on
10,000 and 100,000 clustered 1280-d embeddings (bench.common.clustered, shaped like real CNN
embeddings), against scikit-learn's PCA on float32 in the same run, and t-SNE on 10,000.

    python -m bench.embedding_map [--quick]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from firstlight.domain import projection


def _timed(fn):  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def _members(n: int, dim: int, clusters: int, seed: int) -> np.ndarray:
    """The cluster of each row of ``clustered(n, dim, clusters, seed)``: its draws replayed."""
    rng = np.random.default_rng(seed)
    rng.standard_normal((dim, dim))
    rng.standard_normal(dim)
    rng.standard_normal((clusters, dim))
    return rng.integers(0, clusters, n)


def _separation(Y: np.ndarray, member: np.ndarray) -> float:
    """Silhouette of the planted clusters on the 2-D map (a 5,000-point sample)."""
    from sklearn.metrics import silhouette_score

    idx = np.random.default_rng(0).choice(len(Y), min(5000, len(Y)), replace=False)
    return float(silhouette_score(Y[idx], member[idx]))


def run(quick: bool = False, log=print) -> dict:  # type: ignore[no-untyped-def]
    from sklearn.decomposition import PCA

    from bench.common import Row, clustered

    res: dict = {"sizes": {}}
    rows = []
    for n in (10_000,) if quick else (10_000, 100_000):
        X = clustered(n, 1280, 20, seed=0)
        member = _members(n, 1280, 20, 0)
        X16 = projection.normalize(X).astype(np.float16)
        Y, ours = _timed(lambda X16=X16: projection.project_2d(X16, "pca", normalized=True))
        _, theirs = _timed(lambda X=X: PCA(n_components=2, random_state=0).fit_transform(X))
        sil = _separation(Y, member)
        res["sizes"][n] = {"pca_s": ours, "sklearn_pca_s": theirs, "float16_mb": X16.nbytes / 2**20, "silhouette_pca": sil}
        log(f"map PCA {n:,} x 1280: {ours:.2f} s (scikit-learn PCA {theirs:.2f} s), vectors {X16.nbytes / 2**20:.0f} MB, silhouette {sil:.2f}")
        rows.append(
            Row(
                f"embedding map: PCA of {n:,} × 1280 (float16 rows)",
                f"{ours:.1f} s",
                f"scikit-learn PCA on float32: {theirs:.1f} s",
                f"{ours / theirs:.2f}×",
            )
        )
    X = clustered(10_000, 1280, 20, seed=0)
    member = _members(10_000, 1280, 20, 0)
    Y, tsne = _timed(lambda: projection.project_2d(X, "tsne"))
    sil = _separation(Y, member)
    res["tsne_10k_s"], res["silhouette_tsne_10k"] = tsne, sil
    log(f"map t-SNE 10,000 x 1280: {tsne:.1f} s, silhouette {sil:.2f}")
    pca10 = res["sizes"][10_000]["pca_s"]
    rows.append(Row("embedding map: t-SNE of 10,000 × 1280", f"{tsne:.0f} s", f"PCA of the same: {pca10:.1f} s", f"{tsne / pca10:.0f}×"))
    res["rows"] = [r.as_dict() for r in rows]
    return res


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    print(run(quick=p.parse_args().quick))
