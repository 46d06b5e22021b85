"""How unlike the rest an input is, and which inputs best represent a concept.

- ``outlier_scores``: mean cosine distance to the k nearest other inputs of the app (high =
  unusual); the FiftyOne "uniqueness" idea on the app's own embeddings.
- ``concept_outlier_scores``: the same within the input's concept (an input labeled cat that
  looks like no other cat).
- ``representatives``: per concept, the inputs of highest typicality (lowest kNN distance
  within the concept), skipping near-copies of one already picked.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from firstlight.curation.quality.neighbors import Neighbors, knn, normalize

#: Neighbours averaged in the app-wide score. Out-of-distribution inputs often come as a group
#: (a class nobody labeled): a k smaller than the group scores them by their distance to each
#: other. bench/data_quality.py, 68 held-out-class images among 3,404: AUROC 0.73 at k=10,
#: 0.82 at 30, 0.85 at 50, 0.88 at 100.
DEFAULT_K = 50


def outlier_scores(embeddings: np.ndarray | None = None, k: int = DEFAULT_K, neighbors: Neighbors | None = None, skip: int = 0) -> np.ndarray:
    """[N] mean cosine distance to the k nearest neighbours. ``skip`` ignores the nearest
    ``skip`` neighbours (so an outlier with a few copies of itself still stands out)."""
    if neighbors is None:
        if embeddings is None:
            raise ValueError("pass embeddings or neighbors")
        neighbors = knn(embeddings, k + skip)
    sims = neighbors.sim[:, skip : skip + k]
    if sims.shape[1] == 0:
        return np.zeros(len(neighbors.sim), np.float32)
    return (1.0 - sims.mean(1)).astype(np.float32)


def concept_outlier_scores(embeddings: np.ndarray, labels: Sequence[str], k: int = 10) -> np.ndarray:
    """[N] the kNN distance of each labeled input among the inputs of its concept (NaN for
    unlabeled rows, "" labels, and concepts with a single input)."""
    out = np.full(len(labels), np.nan, np.float32)
    by: dict[str, list[int]] = defaultdict(list)
    for i, c in enumerate(labels):
        if c:
            by[str(c)].append(i)
    X = normalize(embeddings)
    for rows in by.values():
        if len(rows) < 2:
            continue
        out[rows] = outlier_scores(X[rows], k=min(k, len(rows) - 1))
    return out


def representatives(embeddings: np.ndarray, labels: Sequence[str], per_concept: int = 5, k: int = 10, min_distance: float = 0.02) -> dict[str, list[int]]:
    """Concept → rows of its most typical inputs, most typical first; a row closer than
    ``min_distance`` (cosine distance) to one already picked is skipped."""
    X = normalize(embeddings)
    by: dict[str, list[int]] = defaultdict(list)
    for i, c in enumerate(labels):
        if c:
            by[str(c)].append(i)
    out: dict[str, list[int]] = {}
    for c, rows in sorted(by.items()):
        if len(rows) == 1:
            out[c] = list(rows)
            continue
        score = outlier_scores(X[rows], k=min(k, len(rows) - 1))
        picked: list[int] = []
        for j in np.argsort(score, kind="stable"):
            r = rows[int(j)]
            if all(1.0 - float(X[r] @ X[p]) >= min_distance for p in picked):
                picked.append(r)
            if len(picked) == per_concept:
                break
        out[c] = picked
    return out


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for boolean ``positive`` (rank statistic, ties averaged)."""
    from scipy.stats import rankdata

    positive = np.asarray(positive, bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if not n_pos or not n_neg:
        return float("nan")
    r = rankdata(scores)
    return float((r[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
