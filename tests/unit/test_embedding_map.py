"""The embedding map: the pure projection, cache key and paging (domain.projection), and the
curation service's map jobs over fakes of its ports (cache reuse and invalidation, paging,
labels read fresh, dataset splits, predictions stored or scored, precise errors)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from firstlight.curation.embedding_map import EmbeddingMaps
from firstlight.curation.ports import LabelState, Row, Scores
from firstlight.curation.store import CurationStore
from firstlight.domain import projection
from firstlight.errors import InvalidArgument, NotFound


def _clusters(n: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(2, dim))
    lab = np.arange(n) % 2
    return centres[lab] + 0.8 * rng.normal(size=(n, dim)), lab


# -- pure ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_pca_matches_svd_and_separates_two_clusters(seed):
    X, lab = _clusters(300, 32, seed)
    Xn = projection.normalize(X)
    Y = projection.pca(Xn, 2)
    # the same axes as an SVD of the centred rows, up to sign
    _, _, vt = np.linalg.svd(Xn - Xn.mean(0), full_matrices=False)
    ref = (Xn - Xn.mean(0)) @ vt[:2].T
    for k in range(2):
        assert abs(np.corrcoef(Y[:, k], ref[:, k])[0, 1]) > 0.999
    # float16 storage (what the service keeps) gives the same map
    Y16 = projection.project_2d(Xn.astype(np.float16), normalized=True)
    assert np.abs(Y16 - projection.project_2d(X)).max() < 0.02
    # the two clusters lie apart along the first axis
    a, b = Y16[lab == 0, 0], Y16[lab == 1, 0]
    assert abs(a.mean() - b.mean()) > 0.5


def test_project_2d_bounds_methods_and_tiny_inputs():
    X, _ = _clusters(50, 8, 0)
    Y = projection.project_2d(X)
    assert Y.shape == (50, 2) and Y.dtype == np.float32 and np.abs(Y).max() <= 1.0 + 1e-6
    assert projection.project_2d(X[:2]).tolist() == [[0.0, 0.0], [0.0, 0.0]]
    with pytest.raises(ValueError, match="method"):
        projection.project_2d(X, "umap")
    assert projection.method_of("") == "pca"


def test_map_key_changes_with_inputs_count_and_model_not_with_order():
    inputs = [("a", 1), ("b", 2)]
    k = projection.map_key("pca", "m1", 2, inputs)
    assert k == projection.map_key("pca", "m1", 2, list(reversed(inputs)))
    others = [
        projection.map_key("pca", "m1", 2, [*inputs, ("c", 3)]),  # an input added
        projection.map_key("pca", "m1", 2, [("a", 1), ("b", 9)]),  # b deleted and uploaded again
        projection.map_key("pca", "m1", 1, inputs),  # an embedding not indexed yet
        projection.map_key("pca", "m2", 2, inputs),  # a new embedding model
        projection.map_key("tsne", "m1", 2, inputs),
    ]
    assert k not in others and len(set(others)) == len(others)


def test_paging_bounds_and_even_sample():
    seen = []
    offset = 0
    while True:
        s, e, offset = projection.page_bounds(10, offset, 3)
        seen += list(range(s, e))
        if not offset:
            break
    assert seen == list(range(10))
    assert projection.page_bounds(0, 0, 5) == (0, 0, 0)
    assert projection.even_sample(5, 10).tolist() == [0, 1, 2, 3, 4]
    sample = projection.even_sample(1000, 100)
    assert len(sample) == 100 and sample[0] == 0 and sample[-1] == 999


# -- the service side over fakes ----------------------------------------------------------------


class FakePlatform:
    def __init__(self, n: int = 40) -> None:
        X, lab = _clusters(n, 16, 0)
        self.vec = {f"i{k:03d}": X[k].astype(np.float32) for k in range(n)}
        self.labels = {f"i{k:03d}": ([f"c{lab[k]}"], 1) for k in range(n)}
        self.model = "backbone.v1"
        self.vector_calls = 0

    def label_states(self, app_id):  # type: ignore[no-untyped-def]
        return [LabelState(i, tuple(c), s, 1, generation=7) for i, (c, s) in self.labels.items()]

    def index_state(self, app_id):  # type: ignore[no-untyped-def]
        return len(self.vec), self.model

    def vectors(self, app_id, input_ids):  # type: ignore[no-untyped-def]
        self.vector_calls += 1
        return {i: self.vec[i] for i in input_ids if i in self.vec}

    def current_labels(self, app_id, input_ids):  # type: ignore[no-untyped-def]
        return {i: self.labels[i] for i in input_ids if i in self.labels}


class FakeTraining:
    def latest_dataset_version(self, app_id, dataset_id):  # type: ignore[no-untyped-def]
        return "3" if dataset_id == "ds" else None

    def dataset_rows(self, app_id, dataset_id, version):  # type: ignore[no-untyped-def]
        return [Row(f"i{k:03d}", ["c0"], 2 if k < 5 else 1) for k in range(10)] if version == "3" else []

    def scores(self, app_id, model_id, version, input_ids):  # type: ignore[no-untyped-def]
        if model_id != "m":
            raise NotFound(f"model {model_id!r} does not exist")
        proba = np.tile([[0.9, 0.1]], (len(input_ids), 1)).astype(np.float32)
        return Scores("2", ["c0", "c1"], list(input_ids), proba)


def _wait(maps: EmbeddingMaps, app: str, job: dict) -> dict:
    deadline = time.monotonic() + 60
    while job["state"] == "running" and time.monotonic() < deadline:
        time.sleep(0.02)
        job = maps.job(app, job["id"])
    return job


@pytest.fixture
def maps(tmp_path):
    platform = FakePlatform()
    return EmbeddingMaps(platform, FakeTraining(), CurationStore(f"sqlite:///{tmp_path / 'c.db'}"), tmp_path / "maps")  # type: ignore[arg-type]


def _all_points(maps: EmbeddingMaps, app: str, size: int, **kw: str) -> list[dict]:
    out, token = [], ""
    while True:
        page = maps.points(app, "", size, token, **kw)
        out += page["points"]
        token = page["next_page_token"]
        if not token:
            return out


def test_job_computes_then_reuses_the_cache_until_an_input_is_added(maps, tmp_path):
    job = _wait(maps, "app", maps.start("app", ""))
    assert job["state"] == "succeeded" and not job["cached"] and job["points"] == 40 and job["progress"] == 1.0
    calls = maps.platform.vector_calls
    again = _wait(maps, "app", maps.start("app", "pca"))
    assert again["cached"] and again["map_key"] == job["map_key"] and maps.platform.vector_calls == calls
    # a fresh process (the cache file on disk) reuses it too
    fresh = EmbeddingMaps(maps.platform, maps.training, maps.store, tmp_path / "maps")
    assert _wait(fresh, "app", fresh.start("app", ""))["cached"]
    # relabeling changes no key; an input added does
    maps.platform.labels["i000"] = (["c1"], 2)
    assert _wait(maps, "app", maps.start("app", ""))["cached"]
    maps.platform.vec["new"] = maps.platform.vec["i000"]
    maps.platform.labels["new"] = ([], 0)
    grown = _wait(maps, "app", maps.start("app", ""))
    assert not grown["cached"] and grown["points"] == 41 and grown["map_key"] != job["map_key"]
    assert _wait(maps, "app", maps.start("app", "", force=True))["cached"] is False


def test_pages_cover_every_point_once_with_labels_now(maps):
    _wait(maps, "app", maps.start("app", ""))
    maps.platform.labels["i001"] = (["renamed"], 3)  # after the map: a page reads it fresh
    pts = _all_points(maps, "app", 7)
    ids = [p["input_id"] for p in pts]
    assert sorted(ids) == ids and len(set(ids)) == 40 == len(ids)
    by = {p["input_id"]: p for p in pts}
    assert by["i001"]["concepts"] == ["renamed"] and by["i001"]["split"] == 3
    assert all(-1 <= p["x"] <= 1 and -1 <= p["y"] <= 1 for p in pts)
    # the two concepts' clusters are apart on the map: their centroids, in axis units
    c = {k: np.mean([(p["x"], p["y"]) for p in pts if p["input_id"] != "i001" and p["concepts"] == [k]], 0) for k in ("c0", "c1")}
    assert np.linalg.norm(c["c0"] - c["c1"]) > 0.5


def test_points_with_a_dataset_version_and_a_model(maps):
    _wait(maps, "app", maps.start("app", ""))
    pts = _all_points(maps, "app", 1000, dataset_id="ds")
    by = {p["input_id"]: p for p in pts}
    assert by["i002"]["split"] == 2 and by["i002"]["in_dataset"] and by["i020"]["split"] == 0 and not by["i020"]["in_dataset"]
    page = maps.points("app", "", 10, "", model_id="m")
    assert page["predictions_source"] == "scored" and page["model_version"] == "2"
    assert {(p["predicted"], round(p["score"], 3)) for p in page["points"]} == {("c0", 0.9)}


def test_precise_errors(maps):
    with pytest.raises(NotFound, match="no pca map yet"):
        maps.points("app", "", 10, "")
    with pytest.raises(InvalidArgument, match="method"):
        maps.start("app", "umap")
    with pytest.raises(InvalidArgument):
        maps.start("App!", "")
    job = _wait(maps, "app", maps.start("app", ""))
    with pytest.raises(NotFound):  # another app's job is unknown to it
        maps.job("other", job["id"])
    with pytest.raises(InvalidArgument, match="page_size"):
        maps.points("app", "", 5001, "")
    token = maps.points("app", "", 10, "")["next_page_token"]
    with pytest.raises(InvalidArgument):  # a token of another listing
        maps.points("app", "", 10, token, dataset_id="ds")
    with pytest.raises(NotFound, match="dataset"):
        maps.points("app", "", 10, "", dataset_id="nope")
    with pytest.raises(NotFound, match="model"):
        maps.points("app", "", 10, "", model_id="nope")
    with pytest.raises(InvalidArgument, match="needs model_id"):
        maps.points("app", "", 10, "", model_version="3")
    with pytest.raises(InvalidArgument):
        maps.points("app", "", 10, "", model_id="bad id")


def test_points_use_the_pool_predictions_scorepool_stored(maps):
    from datetime import UTC, datetime

    from sqlalchemy import insert

    from firstlight.curation.store import pool_scores

    _wait(maps, "app", maps.start("app", ""))
    row = {"app_id": "app", "model_id": "m", "version": "5", "predicted": "c1", "uncertainty": 0.5, "scored_at": datetime.now(UTC)}
    with maps.store.engine.begin() as conn:
        conn.execute(insert(pool_scores), [dict(row, input_id=f"i{k:03d}", score=0.5 + k / 100) for k in range(3)])
    page = maps.points("app", "", 5, "", model_id="m")  # the latest scored version: stored, not scored again
    assert (page["model_version"], page["predictions_source"]) == ("5", "stored")
    assert [(p["predicted"], round(p["score"], 2)) for p in page["points"]] == [("c1", 0.5), ("c1", 0.51), ("c1", 0.52), ("", 0.0), ("", 0.0)]
    # another version than the stored one is scored for the page
    assert maps.points("app", "", 5, "", model_id="m", model_version="2")["predictions_source"] == "scored"


def test_a_second_start_joins_the_running_job(maps):
    import threading

    gate = threading.Event()
    slow = maps.platform.vectors

    def held(app_id, input_ids):  # type: ignore[no-untyped-def]
        gate.wait(30)
        return slow(app_id, input_ids)

    maps.platform.vectors = held
    first = maps.start("app", "")
    assert maps.start("app", "pca")["id"] == first["id"]  # joined, not a second projection
    gate.set()
    assert _wait(maps, "app", first)["state"] == "succeeded"
