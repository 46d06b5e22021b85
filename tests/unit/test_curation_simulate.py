"""Active-learning simulation on sklearn's digits: margin must beat random; outputs are sane."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from firstlight.curation import simulate
from firstlight.curation.simulate import BenchmarkResult, run_benchmark


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return train_test_split(X / 16.0, y, test_size=497, stratify=y, random_state=0)


# Five seeds: one seed's margin over random at the end ranged from -0.002 to +0.040 (seeds 0-7 on
# one CPU; the same seed gave +0.012 on another), so claims are about the mean over seeds.
SEEDS = [0, 1, 2, 3, 4]


@pytest.fixture(scope="module")
def result(digits):
    Xp, Xt, yp, yt = digits
    return run_benchmark(Xp, yp, Xt, yt, strategies=["margin", "typiclust_margin"], seeds=SEEDS, seed_per_class=2, rounds=6, batch=20)


def test_margin_beats_random_at_the_end(result):
    # Measured at 140 labels, margin minus random per seed: seeds 0-4 +0.012 +0.040 +0.032 +0.036
    # -0.002 (mean +0.024, sd 0.016); seeds 0-7 mean +0.023, sd 0.013. The bound is ~3 standard
    # errors of the 5-seed mean below the measured mean. ratio("margin"): 0.59 over seeds 0-7.
    assert result.labels == [20, 40, 60, 80, 100, 120, 140]
    gains = [result.accuracy["margin"][s][-1] - result.accuracy["random"][s][-1] for s in result.seeds]
    assert np.mean(gains) > 0.005, gains
    assert result.ratio("margin") < 0.85
    assert result.ratio("random") <= 1.0


def test_cold_start_switch_helps_the_first_round(result):
    # TypiClust's first batch covers the digit styles. Measured after round 1, typiclust_margin minus
    # random per seed: seeds 0-4 +0.052 +0.066 +0.022 +0.078 +0.046 (mean +0.053); seeds 0-7 mean
    # +0.058, min +0.022. ratio("typiclust_margin"): 0.57 over seeds 0-7.
    assert result.curve("typiclust_margin")[0][1] > result.curve("random")[0][1] + 0.02
    assert result.ratio("typiclust_margin") < 0.8


def test_every_strategy_starts_from_the_same_seed_set(result):
    first = {name: [result.accuracy[name][s][0] for s in result.seeds] for name in result.strategies}
    assert len({tuple(v) for v in first.values()}) == 1


def test_outputs(result, tmp_path):
    data = json.loads(result.to_json())
    assert data["labels"] == result.labels
    assert set(data["curves"]) == {"random", "margin", "typiclust_margin"}
    assert data["settings"]["batch"] == 20 and data["settings"]["pool"] == 1300
    row = {r["strategy"]: r for r in data["summary"]}["margin"]
    assert row["ratio_vs_control"] == pytest.approx(result.ratio("margin"))
    md = result.to_markdown()
    assert md.count("\n| ") == 4 and "| margin |" in md
    png = tmp_path / "curves.png"
    result.plot(png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_labels_needed_is_interpolated_on_the_mean_curve():
    res = BenchmarkResult(
        strategies=["random", "fast", "slow"],
        seeds=[0, 1],
        labels=[10, 20, 30],
        accuracy={
            "random": {0: [0.5, 0.6, 0.70], 1: [0.5, 0.6, 0.70]},
            "fast": {0: [0.5, 0.65, 0.80], 1: [0.5, 0.55, 0.80]},  # mean 0.60 at 20, 0.80 at 30
            "slow": {0: [0.5, 0.55, 0.60], 1: [0.5, 0.55, 0.60]},
        },
    )
    assert res.target() == pytest.approx(0.70)
    assert res.labels_needed("fast") == pytest.approx(25.0)
    assert res.ratio("fast") == pytest.approx(25 / 30)
    assert res.labels_needed("slow") is None and res.ratio("slow") is None
    assert "never" in res.to_markdown()


class _NearestCentroid:
    """A model without classes_, returning softmax(-distance) over 0..K-1."""

    def __init__(self, X, y):
        self.centroids = np.stack([X[y == c].mean(axis=0) for c in range(10)])

    def predict_proba(self, X):
        d = ((X[:, None, :] - self.centroids[None]) ** 2).sum(-1)
        e = np.exp(-(d - d.min(axis=1, keepdims=True)))
        return e / e.sum(axis=1, keepdims=True)


def test_classifier_is_injectable_and_mc_dropout_runs(digits):
    Xp, Xt, yp, yt = digits
    calls = []

    def fit(X, y):
        calls.append(len(y))
        return _NearestCentroid(X, y)

    res = run_benchmark(Xp, yp, Xt, yt, strategies=["mc_dropout"], seeds=[0], rounds=2, batch=10, fit=fit)
    assert calls == [20, 30, 40] * 2
    assert res.curve("mc_dropout")[0][-1] > 0.6  # nearest centroid on digits is a decent classifier


def test_bad_arguments(digits):
    Xp, Xt, yp, yt = digits
    with pytest.raises(ValueError, match="valid strategies"):
        run_benchmark(Xp, yp, Xt, yt, strategies=["oracle"], seeds=[0])
    with pytest.raises(ValueError, match="seed_per_class"):
        simulate.seed_set(np.array([0, 0, 1]), 2, np.random.default_rng(0))
    with pytest.raises(ValueError, match="width"):
        run_benchmark(Xp, yp, Xt[:, :10], yt, strategies=["margin"], seeds=[0])


@pytest.mark.slow
def test_margin_and_cold_start_gains_hold_over_eight_seeds(digits):
    """The seed sweep behind the bounds above (`make test-slow`)."""
    Xp, Xt, yp, yt = digits
    seeds = list(range(8))
    res = run_benchmark(Xp, yp, Xt, yt, strategies=["margin", "typiclust_margin"], seeds=seeds, seed_per_class=2, rounds=6, batch=20)
    gains = [res.accuracy["margin"][s][-1] - res.accuracy["random"][s][-1] for s in seeds]
    assert np.mean(gains) > 0.01, gains
    cold = [res.accuracy["typiclust_margin"][s][1] - res.accuracy["random"][s][1] for s in seeds]
    assert np.mean(cold) > 0.03 and sum(g > 0 for g in cold) >= 7, cold
