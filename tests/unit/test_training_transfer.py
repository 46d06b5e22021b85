"""The transfer classifier head: separable clusters, real digits, class weighting, multi-label,
npz round trip, augmentation, settings parsing and input errors. Timings are printed (run with
-s to see them), not asserted."""

import time

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from firstlight.domain.errors import InsufficientData, InvalidSetting, TrainingError
from firstlight.domain.heads.linear import load_head
from firstlight.domain.heads.transfer import TransferModel, TransferSettings, train_transfer
from firstlight.errors import FailedPrecondition, InvalidArgument
from firstlight.training.hyper import TRANSFER_SETTINGS, parse_settings, parse_transfer_settings


def clusters(n, k=10, d=1280, seed=0, spread=1.0, mean_seed=0):
    """L2-normalised embeddings around k class means (non-negative like pooled CNN features)."""
    means = np.random.default_rng(mean_seed).normal(size=(k, d)) * 0.5
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    X = np.maximum(means[y] + rng.normal(size=(n, d)) * spread, 0)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X.astype(np.float32), y


CONCEPTS = [f"c{i}" for i in range(10)]


def names(y, concepts=CONCEPTS):
    return [concepts[i] for i in y]


def test_separable_clusters_are_learned():
    X, y = clusters(600, d=128, spread=0.2)
    Xt, yt = clusters(300, d=128, seed=1, spread=0.2)
    model = train_transfer(X, names(y), CONCEPTS, TransferSettings())
    assert model.kind == "softmax" and model.W.shape == (10, 128) and model.b.shape == (10,)
    assert (model.predict_proba(Xt).argmax(1) == yt).mean() >= 0.99
    p = model.predict_proba(Xt)
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-9)
    assert model.n_train == 600 and sum(model.class_counts.values()) == 600
    assert model.class_weighting == "balanced" and model.converged and model.seconds > 0
    assert model.predict(Xt[:3]) == names(yt[:3])


def test_real_digits_reach_high_accuracy():
    from sklearn.datasets import load_digits

    digits = load_digits()
    X = digits.data.astype(np.float32) / 16.0
    concepts = [str(d) for d in range(10)]
    labels = [concepts[t] for t in digits.target]
    rng = np.random.default_rng(0)
    order = rng.permutation(len(X))
    tr, te = order[:1200], order[1200:]
    model = train_transfer(X[tr], [labels[i] for i in tr], concepts, TransferSettings(C=1.0))
    acc = (model.predict_proba(X[te]).argmax(1) == digits.target[te]).mean()
    assert acc >= 0.95, acc


def test_matches_sklearn_multinomial_logistic_regression():
    """Centring + folding the mean into b must not change the optimum."""
    from sklearn.linear_model import LogisticRegression

    X, y = clusters(400, k=3, d=32, spread=3.0)
    model = train_transfer(X, names(y, ["a", "b", "c"]), ["a", "b", "c"], TransferSettings(C=1.0, class_weight="none", tol=1e-8))
    ref = LogisticRegression(C=1.0, tol=1e-10, max_iter=5000).fit(X.astype(np.float64), y)
    np.testing.assert_allclose(model.predict_proba(X), ref.predict_proba(X), atol=2e-4)


def test_binary_softmax_has_two_rows():
    X, y = clusters(200, k=2, d=16, spread=0.2)
    model = train_transfer(X, names(y, ["no", "yes"]), ["no", "yes"])
    assert model.W.shape == (2, 16)
    np.testing.assert_allclose(model.W[0], -model.W[1], rtol=1e-6)  # sklearn's single logit, split in half
    assert (model.predict_proba(X).argmax(1) == y).mean() >= 0.98


def test_class_weighting_changes_the_fit_on_imbalanced_data():
    # Overlapping classes, 95% / 5%: unweighted favours the majority, balanced recovers minority recall.
    rng = np.random.default_rng(4)
    n_major, n_minor, d = 950, 50, 8
    X = np.vstack([rng.normal(0.0, 1.0, (n_major, d)), rng.normal(0.8, 1.0, (n_minor, d))]).astype(np.float32)
    Y = ["major"] * n_major + ["minor"] * n_minor
    concepts = ["major", "minor"]
    plain = train_transfer(X, Y, concepts, TransferSettings(class_weight="none"))
    balanced = train_transfer(X, Y, concepts, TransferSettings(class_weight="balanced"))
    minority = np.arange(n_major, n_major + n_minor)
    recall_plain = (plain.predict_proba(X[minority]).argmax(1) == 1).mean()
    recall_bal = (balanced.predict_proba(X[minority]).argmax(1) == 1).mean()
    assert recall_bal > recall_plain + 0.3, (recall_plain, recall_bal)
    assert balanced.class_weights["minor"] == pytest.approx(1000 / (2 * 50))
    assert plain.class_weights == {"major": 1.0, "minor": 1.0}
    assert plain.report()["class_weighting"] == "none"


def multilabel_data(n=600, d=64, seed=0):
    """Three concepts, each tied to its own feature block; an input may have 0-3 concepts."""
    rng = np.random.default_rng(seed)
    Z = rng.random((n, 3)) < np.array([0.5, 0.3, 0.15])
    X = rng.normal(0, 0.3, (n, d))
    for k in range(3):
        X[:, k * 8 : (k + 1) * 8] += Z[:, [k]] * 1.5
    concepts = ["red", "round", "shiny"]
    Y = [[concepts[k] for k in range(3) if Z[i, k]] for i in range(n)]
    return X.astype(np.float32), Y, Z, concepts


def test_multilabel_sigmoids_predict_sets_including_empty():
    X, Y, _Z, concepts = multilabel_data()
    Xt, _, Zt, _ = multilabel_data(seed=1)
    assert any(len(r) == 0 for r in Y) and any(len(r) >= 2 for r in Y)
    model = train_transfer(X, Y, concepts, TransferSettings(mutually_exclusive=False))
    assert model.kind == "sigmoid" and model.converged
    p = model.predict_proba(Xt)
    assert not np.allclose(p.sum(1), 1.0)  # independent probabilities
    assert ((p >= 0.5) == Zt).all(axis=1).mean() >= 0.9


@pytest.mark.parametrize("class_weight", ["balanced", "none"])
def test_joint_sigmoid_fit_equals_separate_sklearn_fits(class_weight):
    from sklearn.linear_model import LogisticRegression

    X, Y, Z, concepts = multilabel_data(n=300, d=24, seed=2)
    X += np.random.default_rng(3).normal(0, 1.0, X.shape).astype(np.float32)  # not separable
    s = TransferSettings(C=1.0, mutually_exclusive=False, class_weight=class_weight, tol=1e-8)
    model = train_transfer(X, Y, concepts, s)
    for k in range(3):
        ref = LogisticRegression(C=1.0, tol=1e-10, max_iter=5000, class_weight="balanced" if class_weight == "balanced" else None)
        ref.fit(X.astype(np.float64), Z[:, k])
        np.testing.assert_allclose(model.predict_proba(X)[:, k], ref.predict_proba(X)[:, 1], atol=2e-4)


def test_npz_round_trip_gives_identical_probabilities(tmp_path):
    X, y = clusters(300, k=4, d=64, spread=2.0)
    model = train_transfer(X, names(y, list("abcd")), list("abcd"), TransferSettings(C=0.5, seed=7))
    path = model.to_npz(tmp_path / "head.npz")
    loaded = TransferModel.from_npz(path)
    generic = load_head(path)
    assert type(generic) is TransferModel
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))
    np.testing.assert_array_equal(generic.W, model.W)
    assert loaded.concepts == list("abcd") and loaded.kind == "softmax"
    assert loaded.report() == model.report()
    assert loaded.settings["C"] == 0.5 and loaded.settings["seed"] == 7
    # plain numpy is enough to serve it (what the Triton python backend does)
    z = np.load(path, allow_pickle=False)
    logits = X @ z["W"].T + z["b"]
    e = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(e / e.sum(1, keepdims=True), model.predict_proba(X), atol=1e-5)


def test_flip_augmentation_adds_train_rows():
    X, y = clusters(100, k=2, d=16)
    Xf = X[:, ::-1].copy()
    labels = names(y, ["a", "b"])
    model = train_transfer(X, labels, ["a", "b"], TransferSettings(augment_flip=True), X_flip=Xf)
    assert model.n_train == 100 and model.n_augmented == 100
    assert model.class_counts == {"a": int((y == 0).sum()), "b": int((y == 1).sum())}
    plain = train_transfer(X, labels, ["a", "b"], TransferSettings(), X_flip=Xf)
    assert plain.n_augmented == 0 and not np.allclose(plain.W, model.W)
    with pytest.raises(TrainingError, match="no flipped-image embeddings"):
        train_transfer(X, labels, ["a", "b"], TransferSettings(augment_flip=True))
    with pytest.raises(TrainingError, match="one flipped embedding per row"):
        train_transfer(X, labels, ["a", "b"], TransferSettings(augment_flip=True), X_flip=Xf[:10])


def test_training_data_errors():
    X = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)
    with pytest.raises(TrainingError, match="row 2 has 2 concepts \\('a', 'b'\\) but concepts are mutually exclusive"):
        train_transfer(X, [["a"], ["b"], ["a", "b"], ["a"], ["b"], ["a"]], ["a", "b"])
    with pytest.raises(TrainingError, match="row 1 has 0 concepts"):
        train_transfer(X, [["a"], [], ["b"], ["a"], ["b"], ["a"]], ["a", "b"])
    with pytest.raises(TrainingError, match="row 0 is labeled 'zebra'"):
        train_transfer(X, ["zebra"] + ["a"] * 5, ["a", "b"])
    with pytest.raises(InsufficientData, match="at least two concepts") as one:
        train_transfer(X, ["a"] * 6, ["a"])
    assert isinstance(one.value, FailedPrecondition)
    with pytest.raises(InsufficientData, match="concept 'c' has no labeled training input") as none:
        train_transfer(X, ["a", "b"] * 3, ["a", "b", "c"])
    assert isinstance(none.value, FailedPrecondition)
    with pytest.raises(InsufficientData, match="'a' is on every training input"):
        train_transfer(X, [["a"], ["a", "b"]] * 3, ["a", "b"], TransferSettings(mutually_exclusive=False))
    with pytest.raises(TrainingError, match="X has 6 rows but there are 5 label lists"):
        train_transfer(X, ["a", "b"] * 2 + ["a"], ["a", "b"])
    bad = X.copy()
    bad[3, 1] = np.nan
    with pytest.raises(TrainingError, match="row 3 contains NaN"):
        train_transfer(bad, ["a", "b"] * 3, ["a", "b"])


def test_settings_validation_and_parsing():
    s = parse_transfer_settings({"mutually_exclusive": "false", "C": "0.25", "class_weight": "None", "max_iter": 200.0, "tol": "1e-7"})
    assert s == TransferSettings(mutually_exclusive=False, logreg=True, C=0.25, class_weight="none", max_iter=200, tol=1e-7)
    assert s.kind == "sigmoid"
    assert parse_transfer_settings({}) == TransferSettings()
    assert TransferSettings().tol == 1e-6 and TransferSettings().logreg is False
    assert parse_transfer_settings({"logreg": "auto"}).logreg is False
    assert set(TRANSFER_SETTINGS) == set(TransferSettings().to_dict())
    cases = [
        ({"learning_rate": 0.1}, "learning_rate", "unknown setting"),
        ({"C": 0}, "C", r"must be in \[1e-06, 1e\+06\]"),
        ({"C": "lots"}, "C", "must be a number"),
        ({"C": float("nan")}, "C", "must be finite"),
        ({"tol": 1.0}, "tol", "must be in"),
        ({"max_iter": 10.5}, "max_iter", "must be an integer"),
        ({"max_iter": True}, "max_iter", "must be a number"),
        ({"class_weight": "auto"}, "class_weight", "must be one of balanced, none"),
        ({"augment_flip": "maybe"}, "augment_flip", "must be true or false"),
        ({"mutually_exclusive": False, "logreg": False}, "logreg", "must be true when concepts are not mutually exclusive"),
        ({"seed": -1}, "seed", "must be in"),
    ]
    for d, key, message in cases:
        with pytest.raises(InvalidSetting, match=message) as info:
            parse_transfer_settings(d)
        assert info.value.key == key and key in str(info.value)
        assert isinstance(info.value, InvalidArgument)
    with pytest.raises(InvalidSetting, match="'C'"):
        TransferSettings(C=-1.0)
    assert parse_settings("transfer_classifier", {"C": "2"}) == TransferSettings(C=2.0)


def test_train_time_1k_and_10k_by_1280(capsys):
    """Measured, printed, not asserted (shared CPU). 10 classes, normalised 1280-d embeddings."""
    lines = []
    for n in (1000, 10000):
        X, y = clusters(n, spread=4.0, seed=n)
        with threadpool_limits(1):
            t = time.perf_counter()
            model = train_transfer(X, names(y), CONCEPTS)
            wall = time.perf_counter() - t
        lines.append(f"transfer_classifier {n:>6} x 1280, 10 classes: {wall:.2f} s (lbfgs {model.n_iter} iterations, converged={model.converged})")
        assert model.converged
    with capsys.disabled():
        print("\n" + "\n".join(lines))
