"""Evaluation metrics (cross-checked against sklearn.metrics), reports, comparison, promotion."""

import base64
import json

import numpy as np
import pytest
from sklearn import metrics as skm

from firstlight.domain.errors import EvaluationError
from firstlight.domain.evaluation import (
    EvaluationReport,
    compare,
    evaluate,
    headline,
    render_comparison_markdown,
    render_confusion_matrix_png,
    render_report_html,
    render_report_markdown,
)
from firstlight.domain.promotion import should_promote
from firstlight.errors import InvalidArgument

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def random_softmax(n, k, seed, signal=1.5):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), y] += signal  # better than chance, far from perfect
    P = np.exp(logits)
    return y, P / P.sum(1, keepdims=True)


def reference_ece(conf, correct, bins=15):
    total = 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        sel = (conf > lo) & (conf <= hi) if b else (conf >= lo) & (conf <= hi)
        if sel.any():
            total += sel.sum() / conf.size * abs(correct[sel].mean() - conf[sel].mean())
    return total


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_single_label_metrics_match_sklearn(seed):
    K = 6
    concepts = [f"k{i}" for i in range(K)]
    y, P = random_softmax(500, K, seed)
    r = evaluate([concepts[i] for i in y], P, concepts)
    pred = P.argmax(1)
    assert r.n == 500 and not r.multilabel and r.threshold is None
    assert r.accuracy == pytest.approx(skm.accuracy_score(y, pred))
    assert r.micro_f1 == pytest.approx(skm.f1_score(y, pred, average="micro"))
    assert r.macro_f1 == pytest.approx(skm.f1_score(y, pred, average="macro"))
    p, rc, f, s = skm.precision_recall_fscore_support(y, pred, labels=range(K), zero_division=0)
    np.testing.assert_allclose([m.precision for m in r.per_concept], p)
    np.testing.assert_allclose([m.recall for m in r.per_concept], rc)
    np.testing.assert_allclose([m.f1 for m in r.per_concept], f)
    assert [m.support for m in r.per_concept] == s.tolist()
    assert r.confusion == skm.confusion_matrix(y, pred, labels=range(K)).tolist()
    assert r.macro_auc == pytest.approx(skm.roc_auc_score(y, P, multi_class="ovr", average="macro"))
    for k, m in enumerate(r.per_concept):
        assert m.auc == pytest.approx(skm.roc_auc_score(y == k, P[:, k]))
    assert r.log_loss == pytest.approx(skm.log_loss(y, P, labels=range(K)))
    conf = P.max(1)
    assert r.ece == pytest.approx(reference_ece(conf, (pred == y).astype(float)))
    assert len(r.reliability) == 15 and sum(b.count for b in r.reliability) == 500
    assert r.auc_skipped == [] and r.notes == []
    h = headline(r)
    assert h["accuracy"] == r.accuracy and h["n"] == 500.0 and all(isinstance(v, float) for v in h.values())


def test_perfect_and_confident_predictions():
    concepts = ["a", "b", "c"]
    y = np.array([0, 1, 2, 2, 1, 0])
    P = np.eye(3)[y]
    r = evaluate([concepts[i] for i in y], P, concepts)
    assert r.accuracy == 1.0 and r.macro_f1 == 1.0 and r.macro_auc == 1.0
    assert r.ece == pytest.approx(0.0) and r.log_loss == pytest.approx(0.0, abs=1e-12)
    assert r.confusion == [[2, 0, 0], [0, 2, 0], [0, 0, 2]]


def test_concept_absent_from_y_true_is_skipped_without_nan():
    concepts = ["cat", "dog", "emu"]
    y, P = random_softmax(120, 3, seed=4)
    y[y == 2] = 0  # nobody is an emu
    r = evaluate([concepts[i] for i in y], P, concepts)
    assert r.auc_skipped == ["emu"]
    assert r.concept("emu").auc is None and r.concept("emu").support == 0
    assert r.macro_auc == pytest.approx(np.mean([skm.roc_auc_score(y == k, P[:, k]) for k in (0, 1)]))
    pred = P.argmax(1)
    assert r.macro_f1 == pytest.approx(skm.f1_score(y, pred, labels=[0, 1], average="macro", zero_division=0))
    assert any("emu" in n and "macro" in n for n in r.notes)
    assert any("ROC-AUC undefined" in n for n in r.notes)
    one = evaluate(["cat"] * 5, np.tile([0.6, 0.3, 0.1], (5, 1)), concepts)  # a single class: no AUC at all
    assert one.macro_auc is None and "macro_auc" not in headline(one)
    json.dumps(one.to_dict(), allow_nan=False)
    d = r.to_dict()
    text = json.dumps(d, allow_nan=False)  # raises on NaN/inf
    assert EvaluationReport.from_dict(json.loads(text)) == r


def test_multilabel_metrics_match_sklearn():
    rng = np.random.default_rng(7)
    n, K = 400, 4
    concepts = ["red", "round", "shiny", "soft"]
    T = rng.random((n, K)) < np.array([0.5, 0.3, 0.2, 0.1])
    P = np.clip(0.35 * T + rng.random((n, K)) * 0.65, 0, 1)
    y_true = [[concepts[k] for k in range(K) if T[i, k]] for i in range(n)]
    r = evaluate(y_true, P, concepts, multilabel=True, threshold=0.5)
    pred = P >= 0.5
    assert r.multilabel and r.threshold == 0.5
    assert r.accuracy == pytest.approx(skm.accuracy_score(T, pred))  # subset accuracy
    assert r.micro_f1 == pytest.approx(skm.f1_score(T, pred, average="micro"))
    assert r.macro_f1 == pytest.approx(skm.f1_score(T, pred, average="macro"))
    p, rc, _f, s = skm.precision_recall_fscore_support(T, pred, zero_division=0)
    np.testing.assert_allclose([m.precision for m in r.per_concept], p)
    np.testing.assert_allclose([m.recall for m in r.per_concept], rc)
    assert [m.support for m in r.per_concept] == s.tolist()
    assert r.macro_auc == pytest.approx(skm.roc_auc_score(T, P, average="macro"))
    assert r.log_loss == pytest.approx(np.mean([skm.log_loss(T[:, k], P[:, k], labels=[0, 1]) for k in range(K)]))
    assert r.ece == pytest.approx(reference_ece(P.ravel(), T.ravel().astype(float)))
    assert [r.confusion[k][k] for k in range(K)] == [int((T[:, k] & pred[:, k]).sum()) for k in range(K)]


def test_evaluation_input_errors():
    with pytest.raises(EvaluationError, match="shape \\[2, 2\\]") as info:
        evaluate(["a", "b"], np.ones((2, 3)) / 3, ["a", "b"])
    assert isinstance(info.value, InvalidArgument)
    with pytest.raises(EvaluationError, match="input 1 is labeled 'z'"):
        evaluate(["a", "z"], np.full((2, 2), 0.5), ["a", "b"])
    with pytest.raises(EvaluationError, match="input 0 has 2 concepts"):
        evaluate([["a", "b"], ["a"]], np.full((2, 2), 0.5), ["a", "b"])
    with pytest.raises(EvaluationError, match="probabilities"):
        evaluate(["a", "b"], np.array([[0.5, np.nan], [0.5, 0.5]]), ["a", "b"])


@pytest.fixture
def report():
    concepts = ["tabby cat", "tiger|cat", "Egyptian cat", "lynx"]
    y, P = random_softmax(200, 4, seed=9)
    return evaluate([concepts[i] for i in y], P, concepts)


def test_confusion_matrix_png(tmp_path, report):
    path = render_confusion_matrix_png(report, tmp_path / "cm.png", "Validation — v3")
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and len(data) > 2000
    from PIL import Image

    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] > 300 and im.size[1] > 300


def test_markdown_report(report):
    md = render_report_markdown(report, "Validation report", {"model_version": "v3", "dataset_version": "ds-abc"}, confusion_png="cm.png")
    assert md.startswith("# Validation report\n")
    assert "| concept | precision | recall | F1 | support | predicted | ROC-AUC |" in md
    for m in report.per_concept:
        row = next(line for line in md.splitlines() if line.startswith(f"| {m.concept.replace('|', chr(92) + '|')} |"))
        assert f"{m.f1:.4f}" in row and f"| {m.support} |" in row
    assert "tiger\\|cat" in md  # pipes escaped so the table stays a table
    assert "| model_version | v3 |" in md and "![confusion matrix](cm.png)" in md
    assert f"| accuracy (top-1) | {report.accuracy:.4f} |" in md
    first_row = "| **tabby cat** | " + " | ".join(map(str, report.confusion[0])) + " |"
    assert first_row in md


def test_html_report_is_self_contained(report):
    page = render_report_html(report, "Report <v3>", {"seed": 0})
    assert page.startswith("<!DOCTYPE html>") and "Report &lt;v3&gt;" in page
    start = page.index("data:image/png;base64,") + len("data:image/png;base64,")
    png = base64.b64decode(page[start : page.index('"', start)])
    assert png[:8] == PNG_SIGNATURE
    assert "tiger|cat" in page and "<td>lynx</td>" in page
    assert "http://" not in page and "https://" not in page


def make_report(accuracy, ece=0.05, n=100):
    """A report with chosen headline numbers (other fields from a real evaluation)."""
    y, P = random_softmax(n, 3, seed=0)
    r = evaluate([["a", "b", "c"][i] for i in y], P, ["a", "b", "c"])
    r.accuracy, r.ece = accuracy, ece
    return r


def test_compare_versions():
    reports = {"v1": make_report(0.80, ece=0.02), "v2": make_report(0.86, ece=0.07), "v3": make_report(0.86, ece=0.05)}
    cmp = compare(reports)
    assert [row.version for row in cmp.rows] == ["v1", "v2", "v3"]
    assert cmp.best == "v2" and cmp.metric == "accuracy"  # tie with v3: the first listed
    assert cmp.best_by("ece") == "v1"  # lower is better
    assert compare(reports, metric="ece").best == "v1"
    md = render_comparison_markdown(cmp, "pets")
    assert "| v2 | 100 | **0.8600** |" in md and "| v1 | 100 | 0.8000 |" in md
    assert "Best version by accuracy: **v2**" in md
    assert cmp.notes == []
    assert compare({"a": make_report(0.8, n=100), "b": make_report(0.8, n=90)}).notes
    json.dumps(cmp.to_dict(), allow_nan=False)


def test_promotion_rule():
    serving = make_report(0.80, ece=0.05)
    assert should_promote(make_report(0.70), None)[0] is True
    ok, reason = should_promote(make_report(0.81), serving)
    assert ok and "promoted" in reason and "0.8100" in reason and "0.8000" in reason
    ok, reason = should_promote(make_report(0.80), serving)
    assert not ok and "tie keeps the serving version" in reason
    ok, reason = should_promote(make_report(0.79), serving)
    assert not ok and "worse" in reason
    ok, reason = should_promote(make_report(0.805), serving, min_gain=0.01)
    assert not ok and "min_gain" in reason
    assert should_promote(make_report(0.82), serving, min_gain=0.01)[0]
    assert should_promote(make_report(0.5, ece=0.01), serving, metric="ece")[0]  # lower ECE is better
    assert not should_promote(make_report(0.9, ece=0.08), serving, metric="ece")[0]
    with pytest.raises(EvaluationError, match="unknown promotion metric"):
        should_promote(serving, serving, metric="vibes")
    with pytest.raises(EvaluationError, match="min_gain"):
        should_promote(serving, serving, min_gain=-0.1)


def test_end_to_end_train_evaluate_report(tmp_path):
    """Digits: train a head on train, evaluate on validation, decide promotion, render."""
    from sklearn.datasets import load_digits

    from firstlight.training import stratified_split, train_transfer

    digits = load_digits()
    X = digits.data.astype(np.float32) / 16.0
    labels = [f"digit {d}" for d in digits.target]
    concepts = sorted(set(labels))
    split = stratified_split(labels, counts=(600, 300, 0), seed=0)
    tr, va = split["train"], split["validation"]
    weak = train_transfer(X[tr[:60]], [labels[i] for i in tr[:60]], concepts)
    strong = train_transfer(X[tr], [labels[i] for i in tr], concepts)
    truth = [labels[i] for i in va]
    r_weak = evaluate(truth, weak.predict_proba(X[va]), concepts)
    r_strong = evaluate(truth, strong.predict_proba(X[va]), concepts)
    assert r_strong.accuracy > 0.9 and r_strong.macro_auc > 0.99
    assert should_promote(r_strong, r_weak)[0] and not should_promote(r_weak, r_strong)[0]
    png = render_confusion_matrix_png(r_strong, tmp_path / "cm.png", "digits")
    assert png.read_bytes()[:8] == PNG_SIGNATURE
    assert "digit 7" in render_report_markdown(r_strong, "digits", confusion_png=png.name)
