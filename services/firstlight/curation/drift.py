"""Has what the deployed model sees drifted away from what it was trained on?

``drift_report(reference_emb, recent_emb, reference_pred=None, recent_pred=None, seed=0)``
compares recent embeddings (and, when given, predicted classes) with the training set's:

- ``centroid_distance``: cosine distance between the two mean (L2-normalised) embeddings.
- ``p_value``: two-sample test on the embeddings — unbiased MMD² with a Gaussian kernel
  (bandwidth: median pairwise distance of the pooled sample) and a permutation p-value
  (``PERMUTATIONS`` shuffles; each side subsampled to ``MAX_SAMPLES`` for cost). Exact under the
  null whatever the dimension, so its false-alarm rate is the significance level.
- ``psi``: the largest Population Stability Index over ``PROJECTIONS`` random 1-D projections of
  the embeddings, each binned at the reference's deciles — an effect size that a significance
  test lacks.
- ``details["psi_pred"]``: PSI of the predicted-class mix, when both prediction arrays are given.

Alert rule (thresholds are module constants):

    alert = (p_value < ALPHA and psi >= PSI_EMBEDDING_MIN) or psi_pred >= PSI_PREDICTION_MIN

``ALPHA = 0.01``; PSI ≥ 0.1 is the usual "moderate shift" mark and ≥ 0.25 "major shift". PSI
alone is biased upward on small samples (≈ (bins-1)·(1/n_recent + 1/n_ref) under no drift), so
for embeddings it must come with a significant test; it is what stops a statistically
significant but negligible shift on a large sample from paging anyone. The class-mix PSI alerts on
its own at the "major" level (with ``PSI_MIN_SAMPLES`` recent predictions at least).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

ALPHA = 0.01
PSI_EMBEDDING_MIN = 0.1
PSI_PREDICTION_MIN = 0.25
PSI_MIN_SAMPLES = 50
PROJECTIONS = 8
BINS = 10
PERMUTATIONS = 200
MAX_SAMPLES = 500
_EPS = 1e-4


@dataclass(frozen=True)
class DriftReport:
    alert: bool
    p_value: float
    psi: float
    centroid_distance: float
    details: dict[str, Any] = field(default_factory=dict)


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def centroid_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine distance between the means of two sets of (normalised) embeddings."""
    ca, cb = _normalise(a).mean(axis=0), _normalise(b).mean(axis=0)
    denom = np.linalg.norm(ca) * np.linalg.norm(cb)
    return float(1.0 - ca @ cb / denom) if denom > 0 else 0.0


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """Σ (a - e) ln(a / e) over bins of two histograms (counts or fractions)."""
    e = np.asarray(expected, dtype=np.float64)
    a = np.asarray(actual, dtype=np.float64)
    e = e / e.sum() if e.sum() > 0 else e
    a = a / a.sum() if a.sum() > 0 else a
    e, a = np.maximum(e, _EPS), np.maximum(a, _EPS)
    return float(((a - e) * np.log(a / e)).sum())


def projection_psi(ref: np.ndarray, rec: np.ndarray, rng: np.random.Generator, k: int = PROJECTIONS) -> list[float]:
    """PSI of each of k random unit-direction projections, bins at the reference's quantiles."""
    dirs = rng.standard_normal((ref.shape[1], k))
    dirs /= np.linalg.norm(dirs, axis=0, keepdims=True)
    pr, pc = ref @ dirs, rec @ dirs
    out = []
    for j in range(k):
        edges = np.quantile(pr[:, j], np.linspace(0, 1, BINS + 1)[1:-1])
        e = np.bincount(np.searchsorted(edges, pr[:, j], side="right"), minlength=BINS)
        a = np.bincount(np.searchsorted(edges, pc[:, j], side="right"), minlength=BINS)
        out.append(psi(e, a))
    return out


def mmd_permutation_test(a: np.ndarray, b: np.ndarray, rng: np.random.Generator, permutations: int = PERMUTATIONS) -> tuple[float, float, float]:
    """(unbiased MMD², permutation p-value, bandwidth) for a Gaussian kernel."""
    z = np.vstack([a, b]).astype(np.float64)
    n, m = len(a), len(b)
    sq = (z * z).sum(axis=1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * z @ z.T, 0.0)
    off = d2[np.triu_indices(len(z), 1)]
    med = float(np.median(off)) if off.size else 1.0
    bw2 = med if med > 0 else 1.0
    kmat = np.exp(-d2 / bw2)
    np.fill_diagonal(kmat, 0.0)

    def stat(idx: np.ndarray) -> float:
        ia, ib = idx[:n], idx[n:]
        kxx = kmat[np.ix_(ia, ia)].sum() / (n * (n - 1))
        kyy = kmat[np.ix_(ib, ib)].sum() / (m * (m - 1))
        kxy = kmat[np.ix_(ia, ib)].sum() / (n * m)
        return kxx + kyy - 2.0 * kxy

    base = np.arange(n + m)
    observed = stat(base)
    exceed = sum(stat(rng.permutation(n + m)) >= observed for _ in range(permutations))
    return float(observed), float((1 + exceed) / (1 + permutations)), float(np.sqrt(bw2))


def drift_report(
    reference_emb: np.ndarray,
    recent_emb: np.ndarray,
    reference_pred: np.ndarray | None = None,
    recent_pred: np.ndarray | None = None,
    seed: int = 0,
) -> DriftReport:
    """Compare recent traffic with the training set (see module doc for the statistics and rule)."""
    ref = np.asarray(reference_emb, dtype=np.float64)
    rec = np.asarray(recent_emb, dtype=np.float64)
    if ref.ndim != 2 or rec.ndim != 2 or ref.shape[1] != rec.shape[1]:
        raise ValueError(f"embeddings must be [N,D] with the same D, got {ref.shape} and {rec.shape}")
    if len(ref) < 2 or len(rec) < 2:
        raise ValueError("need at least 2 reference and 2 recent embeddings")
    if not (np.isfinite(ref).all() and np.isfinite(rec).all()):
        raise ValueError("embeddings must be finite")
    if (reference_pred is None) != (recent_pred is None):
        raise ValueError("give both reference_pred and recent_pred, or neither")
    ref, rec = _normalise(ref), _normalise(rec)
    rng = np.random.default_rng(seed)

    cdist = centroid_distance(ref, rec)
    psis = projection_psi(ref, rec, rng)
    sub_a = ref[rng.choice(len(ref), MAX_SAMPLES, replace=False)] if len(ref) > MAX_SAMPLES else ref
    sub_b = rec[rng.choice(len(rec), MAX_SAMPLES, replace=False)] if len(rec) > MAX_SAMPLES else rec
    mmd2, p_value, bandwidth = mmd_permutation_test(sub_a, sub_b, rng)
    psi_emb = max(psis)

    details: dict[str, Any] = {
        "mmd2": mmd2,
        "bandwidth": bandwidth,
        "psi_projections": psis,
        "n_reference": len(ref),
        "n_recent": len(rec),
        "thresholds": {
            "alpha": ALPHA,
            "psi_embedding_min": PSI_EMBEDDING_MIN,
            "psi_prediction_min": PSI_PREDICTION_MIN,
        },
    }
    alert = p_value < ALPHA and psi_emb >= PSI_EMBEDDING_MIN
    reasons = ["embeddings"] if alert else []
    if reference_pred is not None:
        rp, cp = np.asarray(reference_pred), np.asarray(recent_pred)
        if rp.ndim != 1 or cp.ndim != 1 or len(rp) != len(reference_emb) or len(cp) != len(recent_emb):
            raise ValueError("predictions must be 1-D, one per embedding")
        classes = np.union1d(rp, cp)
        e = np.array([(rp == c).sum() for c in classes])
        a = np.array([(cp == c).sum() for c in classes])
        psi_pred = psi(e, a)
        details["psi_pred"] = psi_pred
        details["class_mix"] = {
            "classes": classes.tolist(),
            "reference": (e / e.sum()).tolist(),
            "recent": (a / a.sum()).tolist(),
        }
        if psi_pred >= PSI_PREDICTION_MIN and len(cp) >= PSI_MIN_SAMPLES:
            alert = True
            reasons.append("predicted-class mix")
    details["reasons"] = reasons
    return DriftReport(alert=bool(alert), p_value=p_value, psi=psi_emb, centroid_distance=cdist, details=details)
