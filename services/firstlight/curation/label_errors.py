"""Suspected label errors by confident learning (Northcutt, Jiang & Chuang, JAIR 2021).

1. ``out_of_fold_proba``: every example's class probabilities from a model that never saw it
   (stratified k-fold; the model is any ``fit_predict(X_train, y_train, X_test) -> proba``).
2. Per-class thresholds ``t_j`` = mean predicted probability of class j over the examples
   *labeled* j (the class's average self-confidence).
3. Confident joint: an example labeled i counts as confidently belonging to j when
   ``p_j ≥ t_j`` (the most probable such j if several). Off-diagonal entries (i ≠ j) are the
   suspects; ``j`` is the suggested label.
4. Pruning (``method``): ``"confident_joint"`` keeps every off-diagonal example;
   ``"prune_by_noise_rate"`` (cleanlab's default) keeps, for each off-diagonal cell (i, j), only
   the calibrated count of examples labeled i with the largest margin ``p_j - p_i``.
5. Ranking (``rank_by``): ``"normalized_margin"`` — suspicion ``(max_{j≠i} p_j - p_i + 1) / 2``,
   or ``"self_confidence"`` — suspicion ``1 - p_i``; both in [0, 1], highest first.

Labels may be any sortable values (ints, strings); they are encoded to 0..K-1 internally and the
probability columns always follow ``np.unique(labels)`` order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

FitPredict = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
METHODS = ("prune_by_noise_rate", "confident_joint")
RANKINGS = ("normalized_margin", "self_confidence")


@dataclass(frozen=True)
class LabelIssue:
    """A suspected label error: pool row, label it has, label the model is confident of, suspicion."""

    index: int
    given_label: Any
    suggested_label: Any
    score: float


def out_of_fold_proba(X: np.ndarray, y: np.ndarray, fit_predict: FitPredict, folds: int = 5, seed: int = 0) -> np.ndarray:
    """[N,K] probabilities, each row predicted by a model trained on the other folds.

    Columns follow ``np.unique(y)``; ``fit_predict`` receives labels encoded 0..K-1 and must
    return [n_test, K] probabilities (every class is in every training fold: stratified split,
    so each class needs at least ``folds`` examples).
    """
    from sklearn.model_selection import StratifiedKFold

    X = np.asarray(X)
    classes, enc = np.unique(np.asarray(y), return_inverse=True)
    n, k = len(enc), len(classes)
    if len(X) != n:
        raise ValueError(f"X has {len(X)} rows, y has {n}")
    if k < 2:
        raise ValueError("need at least two classes")
    if folds < 2:
        raise ValueError(f"folds must be >= 2, got {folds}")
    counts = np.bincount(enc, minlength=k)
    if counts.min() < folds:
        raise ValueError(f"class {classes[counts.argmin()]!r} has {counts.min()} examples, fewer than folds={folds}")
    out = np.zeros((n, k))
    for train, test in StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(X, enc):
        p = np.asarray(fit_predict(X[train], enc[train], X[test]), dtype=np.float64)
        if p.shape != (len(test), k):
            raise ValueError(f"fit_predict returned shape {p.shape}, expected {(len(test), k)}")
        out[test] = p
    return out


def transfer_fit_predict(X_train: np.ndarray, y_train: np.ndarray, X_test: np.ndarray) -> np.ndarray:
    """The fit the ``transfer_classifier`` template makes with its default settings (softmax
    logistic regression, lbfgs, C=100, tol 1e-6, balanced class weights, features centred on
    the training mean): the same optimum, hence the same probabilities, as TrainModel's head.
    Kept here so the curation service needs no training module (every class is in every
    training fold: ``out_of_fold_proba`` splits stratified)."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    mu = X_train.mean(axis=0, dtype=np.float64).astype(np.float32)
    clf = LogisticRegression(C=100.0, tol=1e-6, max_iter=1000, class_weight="balanced", solver="lbfgs", random_state=0)
    # one BLAS thread, as the template fits (faster on a shared CPU; see training.transfer)
    with threadpool_limits(limits=1), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit((X_train - mu).astype(np.float32), y_train)
    return clf.predict_proba((X_test - mu).astype(np.float32))


def per_class_thresholds(proba: np.ndarray, labels_enc: np.ndarray) -> np.ndarray:
    """t_j = mean p_j over examples labeled j."""
    k = proba.shape[1]
    return np.array([proba[labels_enc == j, j].mean() if (labels_enc == j).any() else 1.0 for j in range(k)])


def confident_labels(proba: np.ndarray, labels_enc: np.ndarray) -> np.ndarray:
    """Per example, the class it confidently belongs to (-1: above no threshold)."""
    t = per_class_thresholds(proba, labels_enc)
    above = proba >= t[None, :] - 1e-12
    masked = np.where(above, proba, -np.inf)
    best = masked.argmax(axis=1)
    return np.where(above.any(axis=1), best, -1)


def confident_joint(proba: np.ndarray, labels_enc: np.ndarray) -> np.ndarray:
    """KxK counts C[given, confident] (examples above no threshold are not counted)."""
    k = proba.shape[1]
    conf = confident_labels(proba, labels_enc)
    keep = conf >= 0
    cj = np.zeros((k, k), dtype=np.int64)
    np.add.at(cj, (labels_enc[keep], conf[keep]), 1)
    return cj


def _calibrated_joint(cj: np.ndarray, labels_enc: np.ndarray) -> np.ndarray:
    """Rows rescaled to the true count of each given label (cleanlab's calibration)."""
    counts = np.bincount(labels_enc, minlength=cj.shape[0]).astype(float)
    row = cj.sum(axis=1).astype(float)
    scale = np.divide(counts, row, out=np.zeros_like(counts), where=row > 0)
    return cj * scale[:, None]


def find_label_issues(
    proba: np.ndarray,
    labels: np.ndarray,
    *,
    method: str = "prune_by_noise_rate",
    rank_by: str = "normalized_margin",
) -> list[LabelIssue]:
    """Suspected label errors, most suspicious first (see module doc).

    ``proba``: [N,K] out-of-fold probabilities, columns in ``np.unique(labels)`` order.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; valid: {', '.join(METHODS)}")
    if rank_by not in RANKINGS:
        raise ValueError(f"unknown rank_by {rank_by!r}; valid: {', '.join(RANKINGS)}")
    proba = np.asarray(proba, dtype=np.float64)
    classes, enc = np.unique(np.asarray(labels), return_inverse=True)
    n, k = len(enc), len(classes)
    if proba.ndim != 2 or proba.shape != (n, k):
        raise ValueError(f"proba must be [N={n},K={k}] (K = distinct labels), got {proba.shape}")
    if not np.isfinite(proba).all():
        raise ValueError("proba must be finite")

    conf = confident_labels(proba, enc)
    suspect = (conf >= 0) & (conf != enc)
    rows = np.arange(n)
    self_conf = proba[rows, enc]
    others = proba.copy()
    others[rows, enc] = -np.inf
    best_other = others.max(axis=1)

    if method == "prune_by_noise_rate":
        cal = _calibrated_joint(confident_joint(proba, enc), enc)
        keep = np.zeros(n, dtype=bool)
        for i in range(k):
            labeled_i = np.flatnonzero(enc == i)
            for j in range(k):
                if i == j:
                    continue
                m = round(cal[i, j])
                if m <= 0:
                    continue
                # the m examples labeled i with the largest margin p_j - p_i
                margin = proba[labeled_i, j] - proba[labeled_i, i]
                top = labeled_i[np.argsort(-margin, kind="stable")[:m]]
                keep[top] = True
        # keep only those the confident joint also flags, so every issue has a suggested label
        suspect &= keep

    if rank_by == "normalized_margin":
        score = (best_other - self_conf + 1.0) / 2.0
    else:
        score = 1.0 - self_conf
    idx = np.flatnonzero(suspect)
    idx = idx[np.lexsort((idx, -score[idx]))]
    return [
        LabelIssue(index=int(i), given_label=classes[enc[i]].item() if hasattr(classes[enc[i]], "item") else classes[enc[i]],
                   suggested_label=classes[conf[i]].item() if hasattr(classes[conf[i]], "item") else classes[conf[i]],
                   score=float(score[i]))
        for i in idx
    ]  # fmt: skip
