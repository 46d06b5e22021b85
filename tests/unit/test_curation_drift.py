"""Drift report: quiet on a held-out sample of the same distribution, alerts on a different one."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_digits

from firstlight.curation import drift
from firstlight.curation.drift import drift_report


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return X.astype(float), y


def _split(n, seed, n_ref=1000, n_recent=300):
    p = np.random.default_rng(seed).permutation(n)
    return p[:n_ref], p[n_ref : n_ref + n_recent]


@pytest.mark.parametrize("seed", range(5))
def test_no_alert_on_a_held_out_sample_of_the_same_distribution(digits, seed):
    X, y = digits
    ref, rec = _split(len(X), seed)
    report = drift_report(X[ref], X[rec], y[ref], y[rec], seed=seed)
    assert not report.alert, report
    assert report.p_value > drift.ALPHA
    assert report.psi < drift.PSI_EMBEDDING_MIN
    assert report.details["psi_pred"] < drift.PSI_PREDICTION_MIN
    assert report.centroid_distance < 0.003


@pytest.mark.parametrize("seed", range(3))
def test_alert_when_traffic_switches_to_part_of_the_classes(digits, seed):
    X, y = digits
    ref, rec = _split(len(X), seed)
    rec = rec[y[rec] < 5]  # only digits 0-4 arrive now
    report = drift_report(X[ref], X[rec], seed=seed)  # embeddings alone
    assert report.alert and report.details["reasons"] == ["embeddings"]
    assert report.p_value < drift.ALPHA
    assert report.psi >= drift.PSI_EMBEDDING_MIN
    with_pred = drift_report(X[ref], X[rec], y[ref], y[rec], seed=seed)
    assert with_pred.alert and "predicted-class mix" in with_pred.details["reasons"]


def test_alert_on_a_different_input_distribution(digits):
    X, _ = digits
    rng = np.random.default_rng(0)
    ref, rec = _split(len(X), 0)
    noisy = np.clip(X[rec] + rng.normal(0, 3, X[rec].shape), 0, 16)  # a noisier camera
    report = drift_report(X[ref], noisy, seed=0)
    assert report.alert
    assert report.centroid_distance > drift_report(X[ref], X[rec], seed=0).centroid_distance


def test_class_mix_alone_can_alert():
    rng = np.random.default_rng(1)
    emb = rng.normal(size=(600, 8))
    ref_pred = rng.integers(0, 4, 400)
    rec_pred = np.where(rng.random(200) < 0.8, 0, rng.integers(0, 4, 200))  # mostly class 0 now
    report = drift_report(emb[:400], emb[400:], ref_pred, rec_pred, seed=0)
    assert report.alert and report.details["reasons"] == ["predicted-class mix"]
    assert report.details["psi_pred"] >= drift.PSI_PREDICTION_MIN


def test_psi_values():
    assert drift.psi([10, 10, 10], [10, 10, 10]) == pytest.approx(0.0)
    assert drift.psi([50, 50], [90, 10]) == pytest.approx(0.4 * np.log(1.8) - 0.4 * np.log(0.2))


def test_bad_inputs():
    a = np.ones((10, 4))
    with pytest.raises(ValueError, match="same D"):
        drift_report(a, np.ones((10, 5)))
    with pytest.raises(ValueError, match="both"):
        drift_report(a, a, reference_pred=np.zeros(10))
    with pytest.raises(ValueError, match="at least 2"):
        drift_report(a, a[:1])
