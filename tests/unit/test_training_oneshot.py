"""One-shot / k-shot prototype classifier and the kNN variant."""

import numpy as np
import pytest

from firstlight.domain.errors import InsufficientData, InvalidSetting, TrainingError
from firstlight.domain.heads.linear import LinearHead, load_head
from firstlight.domain.heads.oneshot import (
    KNNClassifier,
    PrototypeClassifier,
    PrototypeSettings,
    build_prototypes,
    train_oneshot,
)
from firstlight.errors import FailedPrecondition
from firstlight.training.hyper import parse_prototype_settings, parse_settings


def unit(X):
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def episode(k_shot, n_query=40, n_way=5, d=256, seed=0, noise=0.8):
    rng = np.random.default_rng(seed)
    centers = unit(rng.normal(size=(n_way, d)))
    concepts = [f"concept-{i}" for i in range(n_way)]

    def draw(per_class):
        y = np.repeat(np.arange(n_way), per_class)
        X = unit(centers[y] + rng.normal(size=(len(y), d)) * noise / np.sqrt(d))
        return X.astype(np.float32), y

    Xs, ys = draw(k_shot)
    Xq, yq = draw(n_query)
    return concepts, Xs, [concepts[i] for i in ys], Xq, yq


def test_one_shot_classifies_by_similarity():
    concepts, Xs, labels, Xq, yq = episode(k_shot=1)
    model = build_prototypes(Xs, labels, concepts)
    assert model.kind == "softmax" and model.normalize and model.shots == dict.fromkeys(concepts, 1)
    assert (model.predict_proba(Xq).argmax(1) == yq).mean() >= 0.95
    # one example per concept: the prototype is that example
    np.testing.assert_allclose(model.prototypes, Xs, atol=1e-5)


def test_more_shots_help_and_prototype_is_normalised_mean():
    accs = []
    for k in (1, 10):
        concepts, Xs, labels, Xq, yq = episode(k_shot=k, noise=4.0, seed=3)
        model = build_prototypes(Xs, labels, concepts)
        accs.append((model.predict_proba(Xq).argmax(1) == yq).mean())
    assert accs[1] > accs[0] + 0.2, accs
    idx = [i for i, lab in enumerate(labels) if lab == "concept-2"]
    expected = Xs[idx].mean(0)
    np.testing.assert_allclose(model.prototypes[2], expected / np.linalg.norm(expected), atol=1e-5)


def test_probabilities_are_softmax_of_cosine_over_tau():
    concepts, Xs, labels, Xq, _ = episode(k_shot=3, seed=1)
    for tau in (0.05, 0.5):
        model = build_prototypes(Xs, labels, concepts, tau=tau)
        cos = unit(Xq.astype(np.float64)) @ model.prototypes.T
        np.testing.assert_allclose(model.cosine(Xq), cos, atol=1e-5)
        z = cos / tau
        expected = np.exp(z - z.max(1, keepdims=True))
        expected /= expected.sum(1, keepdims=True)
        np.testing.assert_allclose(model.predict_proba(Xq), expected, atol=1e-4)
    sharp = build_prototypes(Xs, labels, concepts, tau=0.02).predict_proba(Xq).max(1).mean()
    soft = build_prototypes(Xs, labels, concepts, tau=1.0).predict_proba(Xq).max(1).mean()
    assert sharp > soft


def test_unnormalised_inputs_give_the_same_answer():
    concepts, Xs, labels, Xq, _ = episode(k_shot=2, seed=2)
    model = build_prototypes(Xs * 7.0, labels, concepts)
    np.testing.assert_allclose(model.predict_proba(Xq * 3.0), model.predict_proba(Xq), atol=1e-5)


def test_same_interface_and_npz_as_a_linear_head(tmp_path):
    concepts, Xs, labels, Xq, _ = episode(k_shot=2, seed=4)
    model = build_prototypes(Xs, labels, concepts, tau=0.1)
    assert isinstance(model, LinearHead)
    np.testing.assert_array_equal(model.b, np.zeros(len(concepts), dtype=np.float32))
    path = model.to_npz(tmp_path / "proto.npz")
    loaded = load_head(path)
    assert isinstance(loaded, PrototypeClassifier) and loaded.tau == 0.1 and loaded.shots == model.shots
    np.testing.assert_array_equal(loaded.predict_proba(Xq), model.predict_proba(Xq))
    # generic serving: normalise, then softmax(X @ W.T + b)
    z = np.load(path, allow_pickle=False)
    assert bool(z["normalize"]) and str(z["kind"]) == "softmax"
    Xn = Xq / np.linalg.norm(Xq, axis=1, keepdims=True)
    logits = Xn @ z["W"].T + z["b"]
    e = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(e / e.sum(1, keepdims=True), model.predict_proba(Xq), atol=1e-5)


def test_knn_variant(tmp_path):
    concepts, Xs, labels, Xq, yq = episode(k_shot=5, seed=5)
    knn = KNNClassifier.fit(Xs, labels, concepts, k=3)
    p = knn.predict_proba(Xq)
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-9)
    assert (p.argmax(1) == yq).mean() >= 0.95
    # k=1: all mass on the nearest example's concept
    one = KNNClassifier.fit(Xs, labels, concepts, k=1).predict_proba(Xq)
    nearest = (unit(Xq) @ Xs.T).argmax(1)
    assert one.max(1).min() == 1.0
    assert [concepts[i] for i in one.argmax(1)] == [labels[i] for i in nearest]
    loaded = KNNClassifier.from_npz(knn.to_npz(tmp_path / "knn.npz"))
    np.testing.assert_array_equal(loaded.predict_proba(Xq), p)
    assert isinstance(load_head(tmp_path / "knn.npz"), KNNClassifier)


def test_errors_and_settings():
    X = unit(np.random.default_rng(0).normal(size=(4, 8))).astype(np.float32)
    with pytest.raises(InsufficientData, match="'c' has no example") as info:
        build_prototypes(X, ["a", "b", "a", "b"], ["a", "b", "c"])
    assert isinstance(info.value, FailedPrecondition)
    with pytest.raises(InsufficientData, match="at least two concepts"):
        build_prototypes(X, ["a"] * 4)
    with pytest.raises(TrainingError, match="example 1 has 2 concepts"):
        KNNClassifier.fit(X, [["a"], ["a", "b"], ["b"], ["a"]])
    with pytest.raises(TrainingError, match="example 1 has 0 concepts"):
        build_prototypes(X, [["a"], [], ["b"], ["a"]])
    with pytest.raises(TrainingError, match="not one of the concepts"):
        build_prototypes(X, ["a", "b", "z", "a"], ["a", "b"])
    with pytest.raises(InvalidSetting, match="'tau'"):
        build_prototypes(X, ["a", "b", "a", "b"], tau=0.0)
    assert parse_prototype_settings({"tau": "0.1", "knn_k": "7"}) == PrototypeSettings(tau=0.1, knn_k=7)
    assert parse_settings("oneshot_classifier", {"tau": "0.2"}) == PrototypeSettings(tau=0.2)
    with pytest.raises(InvalidSetting, match="unknown template 'svm'"):
        parse_settings("svm", {})
    with pytest.raises(InvalidSetting, match="'temperature': unknown setting"):
        parse_prototype_settings({"temperature": 1})


def test_multilabel_rows_count_for_each_of_their_concepts():
    rng = np.random.default_rng(6)
    X = unit(rng.normal(size=(5, 16))).astype(np.float32)
    Y = [["a"], ["a", "b"], ["b"], ["c"], ["c", "a"]]
    model = train_oneshot(X, Y, ["a", "b", "c"], PrototypeSettings(tau=0.1))
    assert model.shots == {"a": 3, "b": 2, "c": 2} and model.tau == 0.1
    for k, rows in enumerate(([0, 1, 4], [1, 2], [3, 4])):
        m = X[rows].mean(0)
        np.testing.assert_allclose(model.prototypes[k], m / np.linalg.norm(m), atol=1e-5)
    assert model.report()["template"] == "oneshot_classifier" and model.report()["normalize"] is True


def test_load_head_reads_a_triton_export(tmp_path):
    """The export's weights.npz (W, b, activation, normalize; concepts kept beside it)."""
    concepts, Xs, labels, Xq, _ = episode(k_shot=2, seed=8)
    model = build_prototypes(Xs, labels, concepts)
    path = tmp_path / "weights.npz"
    np.savez(path, W=model.W, b=model.b, activation=np.array(model.activation), normalize=np.array(model.normalize))
    head = load_head(path, concepts)
    assert type(head) is LinearHead and head.activation == "softmax" and head.normalize
    np.testing.assert_array_equal(head.predict_proba(Xq), model.predict_proba(Xq))
    with pytest.raises(TrainingError, match="pass them"):
        load_head(path)
    own = model.to_npz(tmp_path / "own.npz")
    with pytest.raises(TrainingError, match="expected"):
        load_head(own, list(reversed(concepts)))
