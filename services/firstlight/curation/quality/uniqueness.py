"""Every input's uniqueness, ranked, and the most representative inputs per concept.

The scores of :mod:`outliers` over one app's inputs at once: app-wide (kNN distance among all
inputs) and within the input's concept (among the inputs labeled with it; inputs with no or
several concepts have none). A listing sorts by one of them, most unusual or most typical
first, optionally restricted to the inputs of one concept; the scores themselves are always
computed against the whole app (or the whole concept), never against the filtered subset.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from firstlight.curation.quality import outliers

SCOPES = ("app", "concept")
ORDERS = ("unusual", "typical")


@dataclass(frozen=True)
class Scored:
    """Scores of one app's inputs, row-aligned with ``ids``."""

    ids: list[str]
    concepts: list[list[str]]
    app: np.ndarray  # [N] app-wide kNN distance
    concept: np.ndarray  # [N] within the input's only concept; NaN without one
    labels: list[str]  # the concept scored within ("" = none)
    representatives: dict[str, list[int]]  # concept → rows, most typical first


def single_labels(concepts: Sequence[Sequence[str]]) -> list[str]:
    """The concept an input is scored within: its only one ("" for none or several)."""
    return [str(c[0]) if len(c) == 1 else "" for c in concepts]


def score(ids: Sequence[str], concepts: Sequence[Sequence[str]], X: np.ndarray, per_concept: int = 5, k: int = outliers.DEFAULT_K) -> Scored:
    """Both scores of every row and ``per_concept`` representatives of each concept."""
    labels = single_labels(concepts)
    k = max(1, min(k, len(ids) - 1))
    return Scored(
        ids=list(ids),
        concepts=[list(c) for c in concepts],
        app=outliers.outlier_scores(X, k=k),
        concept=outliers.concept_outlier_scores(X, labels),
        labels=labels,
        representatives=outliers.representatives(X, labels, per_concept=per_concept) if per_concept else {},
    )


def ranking(s: Scored, scope: str, order: str, concept: str = "") -> np.ndarray:
    """Rows in listing order: by the scope's score, most unusual (or most typical) first, ties by
    id; ``scope="concept"`` lists only inputs that have a concept score; ``concept`` keeps the
    inputs labeled with it."""
    if scope not in SCOPES or order not in ORDERS:
        raise ValueError(f"scope {scope!r} / order {order!r}")
    values = s.app if scope == "app" else s.concept
    rows = np.flatnonzero(~np.isnan(values)) if scope == "concept" else np.arange(len(s.ids))
    if concept:
        rows = np.array([r for r in rows if concept in s.concepts[int(r)]], dtype=np.int64)
    if not len(rows):
        return np.zeros(0, np.int64)
    key = values[rows] if order == "typical" else -values[rows]
    ids = np.array([s.ids[int(r)] for r in rows])
    return rows[np.lexsort((ids, key))]
