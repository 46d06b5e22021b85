"""Active-learning selection strategies (pure numpy, synthetic data)."""

from __future__ import annotations

import numpy as np
import pytest

from firstlight.curation import strategies as st
from firstlight.curation.strategies import DEFAULT_STRATEGY, STRATEGIES, Suggestion, select


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.fixture(scope="module")
def pool():
    rng = np.random.default_rng(0)
    n, k, d = 300, 4, 16
    proba = _softmax(rng.normal(scale=2.0, size=(n, k)))
    emb = _unit(rng.normal(size=(n, d)))
    mc = np.stack([_softmax(np.log(proba) + rng.normal(scale=0.5, size=(n, k))) for _ in range(5)])
    return proba, emb, mc


def test_default_is_a_listed_strategy():
    assert DEFAULT_STRATEGY in STRATEGIES
    assert "random" in STRATEGIES and "mc_dropout" in STRATEGIES


@pytest.mark.parametrize("name", STRATEGIES)
def test_every_strategy_returns_distinct_valid_indices_deterministically(pool, name):
    proba, emb, mc = pool
    labeled = emb[:5] * 0.9 + 0.1
    kw = dict(proba=proba, embeddings=emb, batch_size=25, seed=7, labeled_embeddings=labeled, mc_proba=mc)
    a = select(name, **kw)
    b = select(name, **kw)
    assert a == b
    assert len(a) == 25
    idx = [s.index for s in a]
    assert len(set(idx)) == 25
    assert all(0 <= i < len(proba) for i in idx)
    assert all(isinstance(s, Suggestion) and s.difficulty in ("easy", "medium", "hard") for s in a)
    assert all(np.isfinite(s.score) for s in a)


def test_batch_equal_to_pool_takes_everything(pool):
    proba, emb, mc = pool
    for name in STRATEGIES:
        got = select(name, proba=proba[:12], embeddings=emb[:12], batch_size=12, seed=0, mc_proba=mc[:, :12])
        assert sorted(s.index for s in got) == list(range(12)), name


def test_margin_picks_the_known_ambiguous_points():
    rng = np.random.default_rng(1)
    n, k = 200, 5
    z = rng.normal(size=(n, k))
    z[np.arange(n), rng.integers(0, k, n)] += 6.0  # confident everywhere ...
    proba = _softmax(z)
    ambiguous = [3, 17, 42, 99, 150]
    for i in ambiguous:  # ... except near-ties between two classes
        proba[i] = [0.46, 0.44, 0.04, 0.03, 0.03]
    emb = _unit(rng.normal(size=(n, 8)))
    got = select("margin", proba=proba, embeddings=emb, batch_size=5, seed=0)
    assert sorted(s.index for s in got) == ambiguous
    assert all(s.difficulty == "hard" for s in got)  # max p 0.46 < 0.5


def test_uncertainty_scores_disagree_where_they_should():
    # row 0: a clean tie between two classes; row 1: spread over three classes, no tie
    proba = np.array([[0.5, 0.5, 0.0, 0.0], [0.4, 0.3, 0.3, 0.0], [0.97, 0.01, 0.01, 0.01]])
    emb = np.eye(3, 4)
    first = {n: select(n, proba=proba, embeddings=emb, batch_size=1, seed=0)[0].index
             for n in ("margin", "least_confidence", "entropy")}  # fmt: skip
    assert first == {"margin": 0, "least_confidence": 1, "entropy": 1}


def test_bald_prefers_disagreement_over_aleatoric_uncertainty():
    # point 0: every pass says 50/50 (aleatoric); point 1: passes confidently disagree (epistemic)
    t = 6
    mc = np.zeros((t, 3, 2))
    mc[:, 0] = [0.5, 0.5]
    mc[:, 1] = [[0.95, 0.05] if i % 2 else [0.05, 0.95] for i in range(t)]
    mc[:, 2] = [0.9, 0.1]
    proba = mc.mean(axis=0)
    got = select("mc_dropout", proba=proba, embeddings=np.eye(3), batch_size=1, seed=0, mc_proba=mc)
    assert got[0].index == 1
    # while plain margin cannot tell points 0 and 1 apart (both average to 50/50)
    assert st.margin_uncertainty(proba)[0] == pytest.approx(st.margin_uncertainty(proba)[1])


def _mean_pairwise(x):
    d = np.sqrt(np.maximum(2 - 2 * x @ x.T, 0))
    return d[np.triu_indices(len(x), 1)].mean()


def test_hybrid_batch_is_more_diverse_than_plain_margin():
    rng = np.random.default_rng(3)
    d, _k = 32, 3
    centre = _unit(rng.normal(size=(1, d)))
    dupes = _unit(centre + 0.01 * rng.normal(size=(60, d)))  # 60 near-duplicates ...
    spread = _unit(rng.normal(size=(440, d)))
    emb = np.vstack([dupes, spread])
    proba = np.tile([0.9, 0.05, 0.05], (500, 1))
    proba[:60] = [0.40, 0.39, 0.21]  # ... that are the most uncertain inputs
    proba[60:200] = [0.45, 0.35, 0.20]  # other uncertain inputs, spread out
    margin = select("margin", proba=proba, embeddings=emb, batch_size=20, seed=0)
    hybrid = select("margin_kmeanspp", proba=proba, embeddings=emb, batch_size=20, seed=0)
    m_idx = [s.index for s in margin]
    h_idx = [s.index for s in hybrid]
    assert all(i < 60 for i in m_idx)  # plain margin: 20 near-duplicates
    assert sum(i < 60 for i in h_idx) <= 3
    assert _mean_pairwise(emb[h_idx]) > 5 * _mean_pairwise(emb[m_idx])
    assert all(i < 200 for i in h_idx)  # and still only uncertain inputs


def test_diversity_covers_what_the_labeled_set_does_not():
    rng = np.random.default_rng(4)
    d = 16
    a, b = _unit(rng.normal(size=(2, d)))
    region_a = _unit(a + 0.05 * rng.normal(size=(100, d)))
    region_b = _unit(b + 0.05 * rng.normal(size=(10, d)))
    emb = np.vstack([region_a, region_b])
    proba = np.full((110, 2), 0.5)
    labeled = region_a[:5]
    for name in ("diversity", "kmeanspp"):
        got = select(name, proba=proba, embeddings=emb, batch_size=1, seed=0, labeled_embeddings=labeled)
        assert got[0].index >= 100, name
    got = select("diversity", proba=proba, embeddings=emb, batch_size=2, seed=0, labeled_embeddings=labeled)
    assert sum(s.index >= 100 for s in got) == 1  # the second pick goes back to region a


def test_difficulty_thresholds():
    assert st.difficulty_of(0.95) == "easy"
    assert st.difficulty_of(0.8) == "easy"
    assert st.difficulty_of(0.7) == "medium"
    assert st.difficulty_of(0.5) == "medium"
    assert st.difficulty_of(0.49) == "hard"


def test_unknown_strategy_lists_the_valid_ones(pool):
    proba, emb, _ = pool
    with pytest.raises(ValueError) as err:
        select("smartest", proba=proba, embeddings=emb, batch_size=3, seed=0)
    assert "smartest" in str(err.value)
    for name in STRATEGIES:
        assert name in str(err.value)


def test_mc_dropout_without_passes_says_so(pool):
    proba, emb, _ = pool
    with pytest.raises(ValueError, match="mc_dropout"):
        select("mc_dropout", proba=proba, embeddings=emb, batch_size=3, seed=0)


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(batch_size=0), "batch_size"),
        (dict(batch_size=301), "batch_size"),
        (dict(batch_size=True), "batch_size"),
        (dict(batch_size=2.0), "batch_size"),
        (dict(proba=np.full((300,), 0.5)), "proba"),
        (dict(proba=np.full((300, 4), 0.5)), "sum to 1"),
        (dict(proba=np.full((300, 1), 1.0)), "proba"),
        (dict(embeddings=np.ones((299, 16))), "embeddings"),
        (dict(embeddings=np.full((300, 16), np.nan)), "finite"),
        (dict(labeled_embeddings=np.ones((3, 15))), "labeled_embeddings"),
        (dict(mc_proba=np.full((5, 300, 3), 1 / 3)), "mc_proba"),
    ],
)
def test_malformed_inputs_are_rejected(pool, change, match):
    proba, emb, _ = pool
    kw = dict(proba=proba, embeddings=emb, batch_size=5, seed=0)
    kw.update(change)
    with pytest.raises(ValueError, match=match):
        select("margin", **kw)


def test_the_core_imports_no_service_or_model_dependencies():
    import subprocess
    import sys

    code = (
        "import sys, firstlight.curation, firstlight.curation.simulate;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in"
        " ('grpc', 'kafka', 'qdrant_client', 'qdrant_edge', 'tritonclient', 'torch')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_typiclust_cold_start_covers_every_cluster_then_switches_to_margin():
    rng = np.random.default_rng(5)
    d, sizes = 16, [80, 60, 40, 30, 20]
    centres = _unit(rng.normal(size=(5, d)))
    emb = np.vstack([_unit(c + 0.05 * rng.normal(size=(n, d))) for c, n in zip(centres, sizes)])
    cluster = np.repeat(np.arange(5), sizes)
    proba = np.full((len(emb), 5), 0.2)  # no model yet: uniform
    got = select("typiclust_margin", proba=proba, embeddings=emb, batch_size=5, seed=0)
    assert sorted(cluster[[s.index for s in got]]) == [0, 1, 2, 3, 4]
    # with cluster 0 already labeled, the next pick comes from the largest uncovered cluster
    labeled = emb[:3]
    got = select("typiclust", proba=proba, embeddings=emb, batch_size=1, seed=0, labeled_embeddings=labeled)
    assert cluster[got[0].index] == 1
    # the picked member is typical: close to its cluster's centre
    members = emb[cluster == 1]
    mean_dir = _unit(members.mean(axis=0, keepdims=True))[0]
    assert emb[got[0].index] @ mean_dir > np.median(members @ mean_dir)
    # with >= COLD_START_LABELS_PER_CLASS * K labels it is margin_kmeanspp
    z = rng.normal(scale=2.0, size=(len(emb), 5))
    proba = _softmax(z)
    many = emb[: st.COLD_START_LABELS_PER_CLASS * 5]
    kw = dict(proba=proba, embeddings=emb, batch_size=10, seed=3, labeled_embeddings=many)
    assert select("typiclust_margin", **kw) == select("margin_kmeanspp", **kw)
