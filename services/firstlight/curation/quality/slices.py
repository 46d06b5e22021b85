"""Worst slices of a model version: where it does worse than overall, with confidence intervals.

A slice is a (field, value): the true concept, a metadata value, a quality-metric bucket, an
embedding cluster. Per slice: its size and, each with a 95 % interval,

- ``accuracy``: share predicted correctly (Wilson interval);
- ``f1``: for a concept slice the concept's F1 on the whole split (its false positives come from
  other slices), for any other slice the F1 of the concepts true in it weighted by their inputs
  there (a macro mean would let 2 inputs of a rare concept halve a cluster's figure); bootstrap
  percentile interval, a fixed generator so a reply is reproducible. Overall: macro F1;
- ``brier``: mean Brier score, Σ_c (p_c − [c = true])², of the head's probabilities (0 best,
  2 worst; Student-t interval of the mean);
- ``log_loss`` (−log p_true) and ``true_probability`` (mean p_true), measured in the bench only.

Slices smaller than ``min_size`` are left out, and the ranking is by the *pessimistic* gap to the
overall figure — overall minus the slice's upper bound for a figure where higher is better, the
slice's lower bound minus overall for a loss — so a 3-input slice with one miss does not top a
200-input slice that is clearly worse.

Why Brier is the default ranking (docs/results/data_quality.md, "Worst slice"): accuracy per true
concept is recall, which only moves when noise flips an argmax; a strictly proper score also sees
the head being *unsure* on inputs it still gets right, the signature of noisy training labels.
Brier is strictly proper and bounded, so its mean has a usable normal interval and one
confidently wrong input (a mislabelled test image) cannot dominate a slice as it can under the
unbounded log-loss. Mean p_true is not proper (it rewards over-confidence).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

# rank_by values the product offers (the default first); the bench compares all of ALL_FIGURES
RANK_BY = ("brier", "accuracy", "f1")
ALL_FIGURES = ("accuracy", "f1", "brier", "log_loss", "true_probability")
DEFAULT_RANK_BY = "brier"
LOSSES = frozenset({"brier", "log_loss"})  # lower is better
_LOG_FLOOR = 1e-12


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a proportion k/n (95% by default)."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return float(max(0.0, min(p, centre - half))), float(min(1.0, max(p, centre + half)))


def mean_interval(x: np.ndarray, z: float = 1.96, lo: float = -math.inf, hi: float = math.inf) -> tuple[float, float, float]:
    """(mean, low, high): Student-t interval of the mean at the two-sided level of ``z``, clipped
    to the figure's range. (min_size, not this interval, is what keeps a handful of inputs that
    agree with each other off the top: their sample spread can be near zero.)"""
    from scipy.stats import t as student

    m = float(np.mean(x))
    if len(x) < 2:
        return m, lo, hi
    q = 0.5 * (1 + math.erf(z / math.sqrt(2)))
    half = float(student.ppf(q, len(x) - 1)) * float(np.std(x, ddof=1)) / math.sqrt(len(x))
    return m, max(lo, m - half), min(hi, m + half)


@dataclass(frozen=True)
class Figure:
    value: float
    low: float
    high: float


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
    f1: float | None = None  # for concept slices: the concept's F1; others: macro F1 in the slice
    figures: Mapping[str, Figure] = field(default_factory=dict)  # name → value with its interval
    rank_gap: float = 0.0  # the pessimistic gap of the ranking figure (> 0: worse with 95% confidence)


@dataclass(frozen=True)
class SliceReport:
    overall: Mapping[str, float]  # figure → its value on the whole split (f1: macro F1)
    slices: list[Slice]  # worst first
    rank_by: str


def f1_per_concept(y_true: Sequence[str], y_pred: Sequence[str]) -> dict[str, float]:
    out = {}
    t, p = np.asarray(y_true, object), np.asarray(y_pred, object)
    for c in sorted(set(map(str, y_true))):
        tp = int(((t == c) & (p == c)).sum())
        fp = int(((t != c) & (p == c)).sum())
        fn = int(((t == c) & (p != c)).sum())
        out[c] = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0
    return out


def _f1_resampled(t: np.ndarray, p: np.ndarray, k: int, draws: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """F1 per concept (0..k-1; code k = a prediction of no true concept; NaN where a concept is
    neither true nor predicted) of the rows ``t``/``p``, and of ``draws`` bootstrap resamples of
    them (draws × k). Resampling rows is drawing the confusion matrix's cells from a multinomial of
    their shares: memory is draws × distinct cells, not draws × rows."""
    cells, counts = np.unique(t * (k + 1) + p, return_counts=True)
    both = np.vstack([counts[None], rng.multinomial(len(t), counts / len(t), size=draws)]).astype(np.float64)
    ti, pi = cells // (k + 1), cells % (k + 1)
    tp, true, pred = (np.zeros((len(both), k + 1)) for _ in range(3))
    np.add.at(true, (slice(None), ti), both)
    np.add.at(pred, (slice(None), pi), both)
    np.add.at(tp, (slice(None), ti[ti == pi]), both[:, ti == pi])
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = 2 * tp / (true + pred)
    return f1[0, :k], f1[1:, :k]


def _quantiles(z: float) -> tuple[float, float]:
    q = 0.5 * (1 + math.erf(-z / math.sqrt(2)))
    return 100 * q, 100 * (1 - q)


def row_losses(proba: np.ndarray, true_idx: np.ndarray) -> dict[str, np.ndarray]:
    """Per input: Brier score, log-loss and the probability of its true concept (index -1:
    a concept the head lacks, probability 0)."""
    proba = np.asarray(proba, np.float64)
    onehot = np.zeros_like(proba)
    known = true_idx >= 0
    onehot[np.flatnonzero(known), true_idx[known]] = 1.0
    p_true = np.where(known, proba[np.arange(len(proba)), np.maximum(true_idx, 0)], 0.0)
    return {
        "brier": ((proba - onehot) ** 2).sum(1),
        "log_loss": -np.log(np.maximum(p_true, _LOG_FLOOR)),
        "true_probability": p_true,
    }


def _bounds(name: str) -> tuple[float, float]:
    return {"brier": (0.0, 2.0), "true_probability": (0.0, 1.0), "log_loss": (0.0, -math.log(_LOG_FLOOR))}[name]


def rank_slices(
    y_true: Sequence[str],
    y_pred: Sequence[str],
    fields: Mapping[str, Sequence[str]] | None = None,
    *,
    proba: np.ndarray | None = None,
    concepts: Sequence[str] | None = None,
    rank_by: str = "accuracy",
    min_size: int = 20,
    z: float = 1.96,
    limit: int = 20,
    bootstrap: int = 400,
) -> SliceReport:
    """Slices ranked worst first by ``rank_by``. ``fields``: name → one value per row (e.g.
    ``{"cluster": kmeans_clusters(...), "q_blur": buckets(...)}``); the true concept is always a
    field (``concept``). ``proba`` (rows × ``concepts``) adds the probability figures."""
    if rank_by not in ALL_FIGURES:
        raise ValueError(f"rank_by must be one of {', '.join(ALL_FIGURES)} (got {rank_by!r})")
    t = [str(x) for x in y_true]
    p = [str(x) for x in y_pred]
    n = len(t)
    if len(p) != n:
        raise ValueError(f"{len(p)} predictions for {n} rows")
    if n == 0:
        return SliceReport({"accuracy": float("nan")}, [], rank_by)
    names = sorted(set(t))
    codes = {c: i for i, c in enumerate(names)}
    tc = np.array([codes[x] for x in t])
    pc = np.array([codes.get(x, len(names)) for x in p])  # a predicted concept never true: "other"
    correct = tc == pc
    rng = np.random.default_rng(0)
    lo_q, hi_q = _quantiles(z)
    # the concepts' F1 on the whole split, resampled once for all concept slices
    point, whole = _f1_resampled(tc, pc, len(names), bootstrap, rng)
    overall: dict[str, float] = {"accuracy": float(correct.mean()), "f1": float(np.nanmean(point))}
    losses: dict[str, np.ndarray] = {}
    if proba is not None:
        if concepts is None or np.shape(proba) != (n, len(concepts)):
            raise ValueError("proba needs one row per input and one column per concept in `concepts`")
        col = {str(c): i for i, c in enumerate(concepts)}
        losses = row_losses(np.asarray(proba), np.array([col.get(x, -1) for x in t]))
        overall.update({k: float(v.mean()) for k, v in losses.items()})
    elif rank_by not in ("accuracy", "f1"):
        raise ValueError(f"rank_by {rank_by!r} needs the head's probabilities")
    all_fields: dict[str, Sequence[str]] = {"concept": t, **dict(fields or {})}
    out = []
    for name, values in all_fields.items():
        if len(values) != n:
            raise ValueError(f"field {name!r} has {len(values)} values for {n} rows")
        rows: dict[str, list[int]] = defaultdict(list)
        for i, v in enumerate(values):
            if v is not None and v != "":
                rows[str(v)].append(i)
        for value, members in rows.items():
            m = len(members)
            if m < min_size or m == n:
                continue
            ix = np.asarray(members)
            k = int(correct[ix].sum())
            lo, hi = wilson(k, m, z)
            figs = {"accuracy": Figure(k / m, lo, hi)}
            if name == "concept":
                c = codes[value]
                f1, samples = float(point[c]), np.nan_to_num(whole[:, c], nan=1.0)
            else:  # weighted by the concepts' inputs in the slice: each input counts once
                weight = np.bincount(tc[ix], minlength=len(names)) / m
                own, resampled = _f1_resampled(tc[ix], pc[ix], len(names), bootstrap, rng)
                f1 = float(np.nansum(own * weight))
                samples = np.nansum(resampled * weight, axis=1)
            f_lo, f_hi = np.percentile(samples, [lo_q, hi_q])
            figs["f1"] = Figure(f1, float(min(f_lo, f1)), float(max(f_hi, f1)))
            for key, x in losses.items():
                figs[key] = Figure(*mean_interval(x[ix], z, *_bounds(key)))
            r = figs[rank_by]
            rank_gap = r.low - overall[rank_by] if rank_by in LOSSES else overall[rank_by] - r.high
            out.append(Slice(name, value, m, k, k / m, lo, hi, overall["accuracy"] - k / m, overall["accuracy"] - hi, f1, figs, rank_gap))
    sign = 1.0 if rank_by in LOSSES else -1.0
    out.sort(key=lambda s: (-s.rank_gap, -sign * s.figures[rank_by].value, s.field, s.value))
    return SliceReport(overall, out[:limit], rank_by)


def worst_slices(
    y_true: Sequence[str],
    y_pred: Sequence[str],
    fields: Mapping[str, Sequence[str]] | None = None,
    *,
    min_size: int = 20,
    z: float = 1.96,
    limit: int = 20,
) -> tuple[float, list[Slice]]:
    """(overall accuracy, slices ranked worst first by the pessimistic accuracy gap)."""
    r = rank_slices(y_true, y_pred, fields, min_size=min_size, z=z, limit=limit)
    return r.overall["accuracy"], r.slices


def kmeans_clusters(embeddings: np.ndarray, k: int | None = None, seed: int = 0) -> list[str]:
    """Cluster name per row (``c0``..), k-means on the embeddings (k ≈ √(n/2), 2..20 by default)."""
    from sklearn.cluster import KMeans

    n = len(embeddings)
    k = k or int(np.clip(round(np.sqrt(n / 2)), 2, 20))
    k = max(1, min(k, n))
    labels = KMeans(n_clusters=k, n_init=3, random_state=seed).fit_predict(np.asarray(embeddings, np.float32))
    return [f"c{int(c)}" for c in labels]
