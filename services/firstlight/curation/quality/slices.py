"""Worst slices of a model version: where it does worse than overall, with confidence intervals.

A slice is a (field, value): the true concept, a metadata value, a quality-metric bucket, an
embedding cluster. Per slice: its size, accuracy (share correct) with a Wilson interval, and
the gap to the overall accuracy. Slices smaller than ``min_size`` are left out, and the ranking
is by the *pessimistic* gap — overall accuracy minus the slice's upper Wilson bound — so a
3-input slice with one miss does not top a 200-input slice that is clearly worse.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a proportion k/n (95% by default)."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


@dataclass(frozen=True)
class Slice:
    field: str
    value: str
    n: int
    correct: int
    accuracy: float
    low: float
    high: float
    gap: float  # overall accuracy - slice accuracy
    confident_gap: float  # overall accuracy - upper bound (> 0: worse than overall with 95% confidence)
    f1: float | None = None  # for concept slices: the concept's F1


def f1_per_concept(y_true: Sequence[str], y_pred: Sequence[str]) -> dict[str, float]:
    out = {}
    t, p = np.asarray(y_true, object), np.asarray(y_pred, object)
    for c in sorted(set(map(str, y_true))):
        tp = int(((t == c) & (p == c)).sum())
        fp = int(((t != c) & (p == c)).sum())
        fn = int(((t == c) & (p != c)).sum())
        out[c] = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0
    return out


def kmeans_clusters(embeddings: np.ndarray, k: int | None = None, seed: int = 0) -> list[str]:
    """Cluster name per row (``c0``..), k-means on the embeddings (k ≈ √(n/2), 2..20 by default)."""
    from sklearn.cluster import KMeans

    n = len(embeddings)
    k = k or int(np.clip(round(np.sqrt(n / 2)), 2, 20))
    k = max(1, min(k, n))
    labels = KMeans(n_clusters=k, n_init=3, random_state=seed).fit_predict(np.asarray(embeddings, np.float32))
    return [f"c{int(c)}" for c in labels]


def worst_slices(
    y_true: Sequence[str],
    y_pred: Sequence[str],
    fields: Mapping[str, Sequence[str]] | None = None,
    *,
    min_size: int = 20,
    z: float = 1.96,
    limit: int = 20,
) -> tuple[float, list[Slice]]:
    """(overall accuracy, slices ranked worst first). ``fields``: name → one value per row
    (e.g. ``{"split_source": [...], "brightness": buckets(...), "cluster": kmeans_clusters(...)}``);
    the true concept is always a field (``concept``)."""
    t = [str(x) for x in y_true]
    p = [str(x) for x in y_pred]
    n = len(t)
    if n == 0:
        return float("nan"), []
    correct = np.array([a == b for a, b in zip(t, p)])
    overall = float(correct.mean())
    f1 = f1_per_concept(t, p)
    all_fields: dict[str, Sequence[str]] = {"concept": t, **dict(fields or {})}
    out = []
    for name, values in all_fields.items():
        if len(values) != n:
            raise ValueError(f"field {name!r} has {len(values)} values for {n} rows")
        rows: dict[str, list[int]] = defaultdict(list)
        for i, v in enumerate(values):
            if v is not None and v != "":
                rows[str(v)].append(i)
        for value, idx in rows.items():
            m = len(idx)
            if m < min_size or m == n:
                continue
            k = int(correct[idx].sum())
            lo, hi = wilson(k, m, z)
            out.append(Slice(name, value, m, k, k / m, lo, hi, overall - k / m, overall - hi, f1.get(value) if name == "concept" else None))
    out.sort(key=lambda s: (-s.confident_gap, -s.gap, s.field, s.value))
    return overall, out[:limit]
