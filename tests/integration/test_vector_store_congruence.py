"""One VectorStore contract, two twins: qdrant_client's local mode and the embedded qdrant-edge engine.

Every contract test runs against both twins; ``test_twins_agree_on_random_data`` then checks they
return the same top-k (ids and scores) on the same random data.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from firstlight.search.factory import open_vector_store
from firstlight.search.qdrant_client_store import QdrantClientStore
from firstlight.search.qdrant_edge_store import QdrantEdgeStore
from firstlight.search.vector_store import (
    CollectionNotFound,
    Point,
    SearchFilter,
    VectorStore,
    VectorStoreUnavailable,
    point_id,
)

pytestmark = pytest.mark.integration

C = "inputs"
DIM = 4
E1, E2 = [1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]


def make_store(kind: str, tmp_path: Path) -> VectorStore:
    if kind == "client-memory":
        return QdrantClientStore(":memory:")
    return QdrantEdgeStore(str(tmp_path / "vectors"))


@pytest.fixture(params=["client-memory", "edge"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VectorStore]:
    s = make_store(request.param, tmp_path)
    s.ensure_collection(C, DIM)
    yield s
    s.close()


def pid(n: int | str) -> str:
    return point_id("app", str(n))


def payload(app: str = "app", concepts: tuple[str, ...] = (), split: int = 1, labeled: bool | None = None, **extra: object) -> dict:
    labeled = bool(concepts) if labeled is None else labeled
    return {"app_id": app, "concepts": list(concepts), "split": split, "labeled": labeled, **extra}


def ids(hits: list) -> list[str]:
    return [h.id for h in hits]


# -- contract ---------------------------------------------------------------------------------------


def test_point_id_is_deterministic_uuid5() -> None:
    a = point_id("app", "img-1")
    assert a == point_id("app", "img-1") and uuid.UUID(a).version == 5
    assert a != point_id("app", "img-2") and a != point_id("app2", "img-1")


def test_ensure_collection_is_idempotent(store: VectorStore) -> None:
    store.ensure_collection(C, DIM)
    store.upsert(C, [Point(pid(1), E1, payload())])
    store.ensure_collection(C, DIM)  # must not wipe or fail
    assert store.count(C) == 1
    with pytest.raises(ValueError):
        store.ensure_collection(C, DIM + 1)
    assert store.count(C) == 1


def test_missing_collection_raises_collection_not_found(store: VectorStore) -> None:
    with pytest.raises(CollectionNotFound):
        store.search("nope", E1, filter=None, limit=3)
    with pytest.raises(CollectionNotFound):
        store.count("nope")
    with pytest.raises(CollectionNotFound):
        store.retrieve("nope", [pid(1)])


def test_search_ranks_by_cosine_best_first(store: VectorStore) -> None:
    # Scale must not matter (cosine), and each vector has a distinct similarity to the query.
    vectors = {
        "same": [2.0, 0.0, 0.0, 0.0],  # 1.0
        "near": [3.0, 1.0, 0.0, 0.0],  # 0.9487
        "diag": [5.0, 5.0, 0.0, 0.0],  # 0.7071
        "far": [1.0, 3.0, 0.0, 0.0],  # 0.3162
        "orth": [0.0, 0.0, 7.0, 0.0],  # 0.0
        "opposite": [-1.0, -0.5, 0.0, 0.0],  # -0.8944
    }
    store.upsert(C, [Point(pid(k), np.asarray(v, dtype=np.float32), payload(name=k)) for k, v in vectors.items()])
    hits = store.search(C, [1.0, 0.0, 0.0, 0.0], filter=None, limit=10)
    assert [h.payload["name"] for h in hits] == list(vectors)
    assert [h.id for h in hits] == [pid(k) for k in vectors]
    np.testing.assert_allclose([h.score for h in hits], [1.0, 0.948683, 0.707107, 0.316228, 0.0, -0.894427], atol=1e-5)
    assert len(store.search(C, E1, filter=None, limit=2)) == 2


def test_upserting_the_same_id_twice_keeps_one_point(store: VectorStore) -> None:
    store.upsert(C, [Point(pid(1), E1, payload(split=1))])
    store.upsert(C, [Point(pid(1), E2, payload(split=2))])
    assert store.count(C) == 1
    (rec,) = store.retrieve(C, [pid(1)])
    assert rec.payload["split"] == 2 and rec.vector == pytest.approx(E2)


@pytest.fixture
def labeled_points(store: VectorStore) -> VectorStore:
    store.upsert(
        C,
        [
            Point(pid("a-cat"), [1, 0.1, 0, 0], payload("a", ("cat",), split=1)),
            Point(pid("a-dog"), [1, 0.2, 0, 0], payload("a", ("dog",), split=2)),
            Point(pid("a-catdog"), [1, 0.3, 0, 0], payload("a", ("cat", "dog"), split=1)),
            Point(pid("a-none"), [1, 0.4, 0, 0], payload("a", (), split=3)),
            Point(pid("b-cat"), [1, 0.0, 0, 0], payload("b", ("cat",), split=1)),
            Point(pid("b-none"), [1, 0.5, 0, 0], payload("b", (), split=1)),
        ],
    )
    return store


def matching(store: VectorStore, flt: SearchFilter) -> set[str]:
    found = set(ids(store.search(C, E1, filter=flt, limit=100)))
    assert store.count(C, flt) == len(found)
    return found


def test_filter_isolates_apps(labeled_points: VectorStore) -> None:
    assert matching(labeled_points, SearchFilter("a")) == {pid("a-cat"), pid("a-dog"), pid("a-catdog"), pid("a-none")}
    assert matching(labeled_points, SearchFilter("b")) == {pid("b-cat"), pid("b-none")}
    assert matching(labeled_points, SearchFilter("c")) == set()
    assert labeled_points.count(C) == 6


def test_filter_concepts_any(labeled_points: VectorStore) -> None:
    assert matching(labeled_points, SearchFilter("a", concepts_any=("cat",))) == {pid("a-cat"), pid("a-catdog")}
    assert matching(labeled_points, SearchFilter("a", concepts_any=("cat", "dog"))) == {
        pid("a-cat"),
        pid("a-dog"),
        pid("a-catdog"),
    }
    assert matching(labeled_points, SearchFilter("a", concepts_any=("bird",))) == set()


def test_filter_split(labeled_points: VectorStore) -> None:
    assert matching(labeled_points, SearchFilter("a", split=1)) == {pid("a-cat"), pid("a-catdog")}
    assert matching(labeled_points, SearchFilter("a", split=3)) == {pid("a-none")}
    assert matching(labeled_points, SearchFilter("a", concepts_any=("dog",), split=1)) == {pid("a-catdog")}


def test_filter_labeled(labeled_points: VectorStore) -> None:
    # Both values: qdrant-edge's MatchValue(bool) is broken, the edge twin must still get these right.
    assert matching(labeled_points, SearchFilter("a", labeled=True)) == {pid("a-cat"), pid("a-dog"), pid("a-catdog")}
    assert matching(labeled_points, SearchFilter("a", labeled=False)) == {pid("a-none")}
    assert matching(labeled_points, SearchFilter("b", labeled=False, split=1)) == {pid("b-none")}


def test_offset_pages_are_disjoint_and_match_one_big_query(store: VectorStore) -> None:
    rng = np.random.default_rng(7)
    store.upsert(C, [Point(pid(i), rng.standard_normal(DIM), payload(split=1 + i % 2)) for i in range(60)])
    for flt in (None, SearchFilter("app", split=1)):
        q = rng.standard_normal(DIM)
        whole = store.search(C, q, filter=flt, limit=50)
        pages = [store.search(C, q, filter=flt, limit=7, offset=o) for o in range(0, 49, 7)]
        flat = [h.id for page in pages for h in page]
        assert len(flat) == len(set(flat))  # disjoint
        assert flat == ids(whole)[: len(flat)] and len(flat) == min(49, len(whole))


def test_retrieve_returns_normalised_vectors_in_request_order(store: VectorStore) -> None:
    store.upsert(C, [Point(pid(1), [3.0, 4.0, 0.0, 0.0], payload(n=1)), Point(pid(2), [0.0, 0.0, 0.0, 2.0], payload(n=2))])
    recs = store.retrieve(C, [pid(2), str(uuid.uuid4()), pid(1), pid(2)])
    assert [r.id for r in recs] == [pid(2), pid(1)]  # request order, missing absent, duplicates once
    # Cosine engines store the L2-normalised vector; retrieve returns that, at float32 precision.
    assert recs[1].vector == pytest.approx([0.6, 0.8, 0.0, 0.0], abs=1e-6)
    assert recs[0].vector == pytest.approx([0.0, 0.0, 0.0, 1.0], abs=1e-6)
    assert recs[1].payload == payload(n=1)
    (bare,) = store.retrieve(C, [pid(1)], with_vectors=False)
    assert bare.vector is None and bare.payload == payload(n=1)
    assert store.retrieve(C, []) == []


def test_set_payload_merges_and_refuses_missing_points(store: VectorStore) -> None:
    store.upsert(C, [Point(pid(1), E1, payload(extra="kept"))])
    assert store.set_payload(C, pid(1), {"concepts": ["cat"], "labeled": True, "split": 2})
    (rec,) = store.retrieve(C, [pid(1)], with_vectors=False)
    assert rec.payload == payload(concepts=("cat",), split=2, extra="kept")
    # Filters see the new values (the edge twin mirrors `labeled` into a hidden field).
    assert store.count(C, SearchFilter("app", labeled=True, split=2, concepts_any=("cat",))) == 1
    assert store.set_payload(C, pid(1), {"labeled": False})
    assert store.count(C, SearchFilter("app", labeled=True)) == 0
    assert store.count(C, SearchFilter("app", labeled=False)) == 1

    assert store.set_payload(C, pid(404), {"labeled": True}) is False
    assert store.count(C) == 1 and store.retrieve(C, [pid(404)]) == []


def test_delete_is_idempotent(store: VectorStore) -> None:
    store.upsert(C, [Point(pid(i), [1.0, float(i), 0.0, 0.0], payload()) for i in range(3)])
    store.delete(C, [pid(0), pid(404)])
    store.delete(C, [pid(0)])
    store.delete(C, [])
    assert store.count(C) == 2
    assert pid(0) not in ids(store.search(C, E1, filter=None, limit=10))


def test_bad_input_is_a_value_error(store: VectorStore) -> None:
    for vector in ([float("nan"), 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [[1.0, 0.0, 0.0, 0.0]]):
        with pytest.raises(ValueError):
            store.upsert(C, [Point(pid(1), vector, payload())])
    with pytest.raises(ValueError):
        store.upsert(C, [Point("not-a-uuid", E1, payload())])
    with pytest.raises(ValueError):  # wrong dimension: rejected by the engine
        store.upsert(C, [Point(pid(1), [1.0, 0.0], payload())])
    with pytest.raises(ValueError):
        store.search(C, E1, filter=None, limit=0)
    assert store.count(C) == 0
    assert issubclass(VectorStoreUnavailable, Exception)


def test_concurrent_writers_and_readers(store: VectorStore) -> None:
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            rng = np.random.default_rng(t)
            for i in range(10):
                store.upsert(C, [Point(pid(f"{t}-{i}-{j}"), rng.standard_normal(DIM), payload(split=t)) for j in range(5)])
                store.search(C, rng.standard_normal(DIM), filter=SearchFilter("app", split=t), limit=5)
        except BaseException as e:  # noqa: BLE001 - surfaced below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(1, 5)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    assert store.count(C) == 4 * 10 * 5 and store.count(C, SearchFilter("app", split=3)) == 50


# -- congruence -------------------------------------------------------------------------------------


def test_twins_agree_on_random_data(tmp_path: Path) -> None:
    rng = np.random.default_rng(1234)
    dim, n = 64, 2000
    apps, concepts = ["a1", "a2", "a3"], ["cat", "dog", "car", "tree", "sky"]
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    points = [
        Point(
            point_id(apps[i % 3], f"img-{i}"),
            vectors[i],
            {
                "app_id": apps[i % 3],
                "input_id": f"img-{i}",
                "concepts": [c for c in concepts if rng.random() < 0.3],
                "split": int(rng.integers(1, 4)),
                "labeled": bool(rng.random() < 0.5),
            },
        )
        for i in range(n)
    ]
    twins = [make_store("client-memory", tmp_path), make_store("edge", tmp_path)]
    try:
        for s in twins:
            s.ensure_collection(C, dim)
            for start in range(0, n, 500):
                s.upsert(C, points[start : start + 500])
        nonempty = 0
        for q in range(20):
            query = rng.standard_normal(dim)
            pick = rng.choice(len(concepts), size=int(rng.integers(0, 3)), replace=False)
            flt = SearchFilter(
                app_id=apps[q % 3],
                concepts_any=tuple(concepts[k] for k in pick),
                split=int(rng.integers(1, 4)) if rng.random() < 0.5 else None,
                labeled=bool(rng.random() < 0.5) if rng.random() < 0.5 else None,
            )
            for f in (None, flt):
                a, b = (s.search(C, query, filter=f, limit=10) for s in twins)
                assert ids(a) == ids(b), (q, f)
                np.testing.assert_allclose([h.score for h in a], [h.score for h in b], atol=1e-4)
                assert [h.payload for h in a] == [h.payload for h in b]
                assert twins[0].count(C, f) == twins[1].count(C, f)
                nonempty += bool(a)
        assert nonempty >= 30  # the filters were not all vacuous
    finally:
        for s in twins:
            s.close()


# -- edge only --------------------------------------------------------------------------------------


def test_edge_data_survives_close_and_reopen(tmp_path: Path) -> None:
    path = str(tmp_path / "vectors")
    s = QdrantEdgeStore(path)
    s.ensure_collection(C, DIM)
    s.ensure_collection("pending_labels", 1)
    s.upsert(C, [Point(pid(i), [1.0, 0.1 * i, 0.0, 0.0], payload(concepts=("cat",) if i % 2 else (), split=1, i=i)) for i in range(6)])
    s.upsert("pending_labels", [Point(pid(9), [1.0], payload())])
    s.set_payload(C, pid(0), {"labeled": True, "concepts": ["dog"]})
    s.delete(C, [pid(5)])
    before = s.search(C, E1, filter=SearchFilter("app", labeled=True), limit=10)
    s.close()
    s.close()  # idempotent
    with pytest.raises(RuntimeError):
        s.count(C)

    s = QdrantEdgeStore(path)
    try:
        # Reads work before ensure_collection (what a restarted service may do first).
        assert s.count(C) == 5 and s.count("pending_labels") == 1
        assert s.search(C, E1, filter=SearchFilter("app", labeled=True), limit=10) == before
        assert ids(before) == [pid(0), pid(1), pid(3)]
        (rec,) = s.retrieve(C, [pid(0)])
        assert rec.payload == payload(concepts=("dog",), split=1, i=0, labeled=True)
        s.ensure_collection(C, DIM)
        with pytest.raises(ValueError):
            s.ensure_collection(C, DIM + 1)
        assert s.count(C) == 5  # a refused ensure leaves the collection serving
        s.optimize(C)
        assert s.search(C, E1, filter=SearchFilter("app", labeled=True), limit=10) == before
    finally:
        s.close()


def test_factory_picks_twin_by_scheme(tmp_path: Path) -> None:
    for url, kind in [
        (f"edge://{tmp_path / 'e'}", QdrantEdgeStore),
        ("memory://", QdrantClientStore),
        (f"qdrant-local://{tmp_path / 'l'}", QdrantClientStore),
    ]:
        s = open_vector_store(url)
        try:
            assert isinstance(s, kind) and isinstance(s, VectorStore)
            s.ensure_collection(C, DIM)
            s.upsert(C, [Point(pid(1), E1, payload())])
            assert s.count(C) == 1
        finally:
            s.close()
    assert (tmp_path / "e" / C).is_dir()
    for bad in ("s3://bucket", "/just/a/path", "edge://"):
        with pytest.raises(ValueError):
            open_vector_store(bad)


def test_scroll_pages_through_every_point_once(store: VectorStore) -> None:
    """``scroll`` (the reconcile after a broker loss reads the whole index with it): payloads, no
    vectors, every point once across pages, a filter by app, None after the last page."""
    store.upsert(C, [Point(pid(n), [1.0, float(n), 0.0, 0.0], payload(input_id=str(n))) for n in range(7)])
    store.upsert(C, [Point(point_id("other", "x"), E1, payload(app="other", input_id="x"))])
    seen: list[str] = []
    offset: str | None = None
    pages = 0
    while True:
        records, offset = store.scroll(C, filter=SearchFilter("app"), limit=3, offset=offset)
        pages += 1
        assert all(r.vector is None and r.payload["app_id"] == "app" for r in records)
        seen += [r.payload["input_id"] for r in records]
        if offset is None:
            break
    assert sorted(seen) == [str(n) for n in range(7)] and pages == 3
    everything, after = store.scroll(C, filter=None, limit=100)
    assert len(everything) == 8 and after is None
    with pytest.raises(ValueError):
        store.scroll(C, filter=None, limit=0)
